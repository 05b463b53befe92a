//! Reading and writing sysctls through `/proc/sys`, in the daemon's own
//! namespace or (via [`crate::netns`]) in another one, plus the value
//! parsing and formatting every log line uses.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::netns::{self, NsTarget};

/// `net.ipv4.tcp_rmem` → `<root>/net/ipv4/tcp_rmem`.
pub fn name_to_path(root: &Path, name: &str) -> PathBuf {
    root.join(name.replace('.', "/"))
}

/// The `net/ipv4/tcp_rmem` form the BPF sysctl hook reports → dotted form.
pub fn path_name_to_dotted(name: &str) -> String {
    name.trim_start_matches('/').replace('/', ".")
}

/// Parse up to three whitespace-separated integers.
pub fn parse_ints(text: &str) -> Result<Vec<i64>, String> {
    text.split_whitespace().map(|t| t.parse::<i64>().map_err(|e| format!("'{t}': {e}"))).collect()
}

pub use crate::messages::format_values;

/// Access to sysctls; a trait so policy code can be tested on fixtures.
pub trait SysctlIo {
    fn read(&self, target: &NsTarget, name: &str) -> io::Result<String>;
    fn write(&self, target: &NsTarget, name: &str, text: &str) -> io::Result<()>;
}

/// The real thing: `/proc/sys`, entering other namespaces on a helper thread.
#[derive(Debug, Clone)]
pub struct ProcSysctl {
    root: PathBuf,
}

impl Default for ProcSysctl {
    fn default() -> Self {
        Self { root: PathBuf::from("/proc/sys") }
    }
}

impl ProcSysctl {
    /// Use another root (tests).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

fn read_file(path: &Path) -> io::Result<String> {
    fs::read_to_string(path).map(|s| s.trim_end_matches('\n').to_string())
}

fn write_file(path: &Path, text: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).truncate(true).open(path)?;
    // One write(2): the kernel parses the whole value at once and reports a
    // rejected value as an error here (the original ignored it).
    f.write_all(format!("{text}\n").as_bytes())?;
    f.flush()
}

impl SysctlIo for ProcSysctl {
    fn read(&self, target: &NsTarget, name: &str) -> io::Result<String> {
        let path = name_to_path(&self.root, name);
        match target {
            NsTarget::Global => read_file(&path),
            NsTarget::Netns(ns) => netns::in_netns(ns, move || read_file(&path))?,
        }
    }

    fn write(&self, target: &NsTarget, name: &str, text: &str) -> io::Result<()> {
        let path = name_to_path(&self.root, name);
        let text = text.to_string();
        match target {
            NsTarget::Global => write_file(&path, &text),
            NsTarget::Netns(ns) => netns::in_netns(ns, move || write_file(&path, &text))?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names() {
        assert_eq!(
            name_to_path(Path::new("/proc/sys"), "net.ipv4.tcp_rmem"),
            PathBuf::from("/proc/sys/net/ipv4/tcp_rmem")
        );
        assert_eq!(path_name_to_dotted("net/ipv4/tcp_rmem"), "net.ipv4.tcp_rmem");
        assert_eq!(path_name_to_dotted("/kernel/core_pattern"), "kernel.core_pattern");
    }

    #[test]
    fn parse_and_format() {
        assert_eq!(parse_ints("4096\t131072\t6291456\n"), Ok(vec![4096, 131072, 6291456]));
        assert_eq!(parse_ints("1"), Ok(vec![1]));
        assert!(parse_ints("abc").is_err());
        assert_eq!(format_values(&[4096, 131072, 6291456]), "4096 131072 6291456");
    }

    #[test]
    fn fixture_root_round_trip() {
        let dir = std::env::temp_dir().join(format!("bpftune-sysctl-test-{}", std::process::id()));
        let file = dir.join("net/ipv4/tcp_rmem");
        fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        fs::write(&file, "4096 131072 6291456\n").expect("write");
        let io = ProcSysctl::with_root(&dir);
        assert_eq!(io.read(&NsTarget::Global, "net.ipv4.tcp_rmem").expect("read"), "4096 131072 6291456");
        io.write(&NsTarget::Global, "net.ipv4.tcp_rmem", "1 2 3").expect("write");
        assert_eq!(io.read(&NsTarget::Global, "net.ipv4.tcp_rmem").expect("read"), "1 2 3");
        let _ = fs::remove_dir_all(&dir);
    }
}
