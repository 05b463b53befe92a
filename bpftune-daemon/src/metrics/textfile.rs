//! `--metrics-textfile PATH`: the metrics in Prometheus text 0.0.4 (what
//! node_exporter's textfile collector parses), rewritten every
//! [`INTERVAL`] on the daemon's tick grid. Each write goes to a temporary
//! file in the same directory (a name the collector ignores: it reads only
//! `*.prom`) and is renamed over PATH, so a reader sees the old file or the
//! new one, never half of one.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the file is rewritten.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// The file and when it is next due.
#[derive(Debug)]
pub struct Textfile {
    path: PathBuf,
    tmp: PathBuf,
    pub next: Option<Instant>,
    /// The last error logged (the same one is not logged every 5 s).
    last_error: Option<String>,
}

impl Textfile {
    /// Check that PATH's directory exists and takes a file (one test write
    /// of the temporary file, removed again), so a wrong path is an error
    /// at start, not a line every five seconds.
    pub fn new(path: &Path) -> Result<Self, String> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("metrics textfile '{}' has no file name", path.display()))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let t = Self { path: path.to_path_buf(), tmp, next: None, last_error: None };
        t.write_tmp(b"").map_err(|e| format!("cannot write the metrics textfile in '{}': {e}", dir.display()))?;
        let _ = std::fs::remove_file(&t.tmp);
        Ok(t)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_tmp(&self, text: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.tmp)?;
        f.write_all(text)
    }

    /// Write `text` atomically (temporary file, then rename).
    pub fn write(&mut self, text: &str) -> io::Result<()> {
        let r = self.write_tmp(text.as_bytes()).and_then(|()| std::fs::rename(&self.tmp, &self.path));
        if r.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        r
    }

    /// Write, logging a failure once until it changes or writes succeed
    /// again.
    pub fn write_logged(&mut self, text: &str) {
        match self.write(text) {
            Ok(()) => self.last_error = None,
            Err(e) => {
                let msg = format!("cannot write metrics textfile '{}': {e}", self.path.display());
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    crate::logging::err(&msg);
                    self.last_error = Some(msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_the_file_whole() {
        let dir = std::env::temp_dir().join(format!("bpftune-textfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("bpftune.prom");
        let mut t = Textfile::new(&path).expect("textfile");
        assert!(!path.exists(), "the check writes no metrics file");
        t.write("a 1\n").expect("write");
        let before = std::fs::metadata(&path).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).expect("ino");
        t.write("a 2\n").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "a 2\n");
        let after = std::fs::metadata(&path).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).expect("ino");
        assert_ne!(before, after, "renamed over, not rewritten in place");
        let left: Vec<_> = std::fs::read_dir(&dir).expect("dir").flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
        assert!(Textfile::new(&dir.join("missing/bpftune.prom")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
