//! What the daemon costs, read from `/proc/self` without any tool: resident
//! memory and CPU time (`stat`, `statm`), and per BPF program it holds (the
//! tuners' programs live in this process) the kernel's run count and run
//! time from `fdinfo`, which the kernel accumulates only while
//! `kernel.bpf_stats_enabled` is 1. The proc root is a parameter so the
//! parsers are tested on captured files.

use std::collections::BTreeMap;
use std::path::Path;

/// Resident memory and CPU time of the daemon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub threads: u64,
}

/// One BPF program the daemon holds a descriptor of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgStats {
    pub id: u32,
    pub name: String,
    /// libbpf's name of the program type (`sockops`, `tracing`, …), or
    /// the number.
    pub kind: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// `utime + stime` (in clock ticks) and the thread count from the text of
/// `/proc/PID/stat`: fields after the last `)` (the command name may hold
/// spaces and parentheses).
pub fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15, threads 20.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let threads: u64 = f.get(17)?.parse().ok()?;
    Some((utime + stime, threads))
}

/// Resident pages from the text of `/proc/PID/statm` (second field).
pub fn parse_statm(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

fn sysconf(name: libc::c_int, fallback: u64) -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 { v as u64 } else { fallback }
}

/// The daemon's memory and CPU time from `<proc_self>/stat` and `statm`.
pub fn process_stats(proc_self: &Path) -> Option<ProcessStats> {
    let stat = std::fs::read_to_string(proc_self.join("stat")).ok()?;
    let statm = std::fs::read_to_string(proc_self.join("statm")).ok()?;
    let (ticks, threads) = parse_stat(&stat)?;
    let pages = parse_statm(&statm)?;
    let tck = sysconf(libc::_SC_CLK_TCK, 100);
    let page = sysconf(libc::_SC_PAGESIZE, 4096);
    Some(ProcessStats { resident_bytes: pages * page, cpu_seconds: ticks as f64 / tck as f64, threads })
}

/// `kernel.bpf_stats_enabled` under `proc_root` (`/proc`): None if the
/// kernel has no such sysctl.
pub fn bpf_stats_enabled(proc_root: &Path) -> Option<bool> {
    let v = std::fs::read_to_string(proc_root.join("sys/kernel/bpf_stats_enabled")).ok()?;
    Some(v.trim() != "0")
}

/// What `fdinfo` says of a BPF program descriptor: (id, type number, run
/// time in ns, run count). None for other descriptors.
pub fn parse_prog_fdinfo(text: &str) -> Option<(u32, u32, u64, u64)> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim(), v.trim());
        }
    }
    let id = fields.get("prog_id")?.parse().ok()?;
    let kind = fields.get("prog_type").and_then(|v| v.parse().ok()).unwrap_or(0);
    let run_time = fields.get("run_time_ns").and_then(|v| v.parse().ok()).unwrap_or(0);
    let run_cnt = fields.get("run_cnt").and_then(|v| v.parse().ok()).unwrap_or(0);
    Some((id, kind, run_time, run_cnt))
}

/// libbpf's name of a program type number.
pub fn prog_type_name(kind: u32) -> String {
    // SAFETY: libbpf returns a static NUL-terminated string or NULL for an
    // unknown type; nothing is freed.
    let p = unsafe { libbpf_rs::libbpf_sys::libbpf_bpf_prog_type_str(kind) };
    if p.is_null() {
        return kind.to_string();
    }
    // SAFETY: non-null, NUL-terminated and static (see above).
    unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The program's name, asked of the kernel through descriptor `fd`, if it
/// still names program `id` (a descriptor may be closed and reused between
/// the directory listing and this call).
pub fn prog_name(fd: i32, id: u32) -> Option<String> {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: the kernel writes at most `len` bytes into `info`, a zeroed
    // bpf_prog_info; no pointers in it are set, so it follows none. An
    // fd that is not a BPF program only makes the call fail.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    if rc != 0 || info.id != id {
        return None;
    }
    let bytes: Vec<u8> = info.name.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Every BPF program behind a descriptor in `<proc_self>/fd`, once each,
/// by id; `name_of(fd, id)` names them.
pub fn bpf_programs(proc_self: &Path, name_of: impl Fn(i32, u32) -> Option<String>) -> Vec<ProgStats> {
    let Ok(dir) = std::fs::read_dir(proc_self.join("fd")) else { return Vec::new() };
    let mut out: BTreeMap<u32, ProgStats> = BTreeMap::new();
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        if target.as_os_str() != "anon_inode:bpf-prog" {
            continue;
        }
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(info) = std::fs::read_to_string(proc_self.join("fdinfo").join(fd.to_string())) else { continue };
        let Some((id, kind, run_time_ns, run_cnt)) = parse_prog_fdinfo(&info) else { continue };
        if out.contains_key(&id) {
            continue;
        }
        let name = name_of(fd, id).unwrap_or_default();
        out.insert(id, ProgStats { id, name, kind: prog_type_name(kind), run_time_ns, run_cnt });
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (bpftune (x) y) S 1 4242 4242 0 -1 4194560 2000 0 3 0 157 42 0 0 20 0 3 0 1234 \
        123456789 2345 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_after_the_command_name() {
        assert_eq!(parse_stat(STAT), Some((157 + 42, 3)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn statm_resident_pages() {
        assert_eq!(parse_statm("5000 2345 300 100 0 900 0\n"), Some(2345));
        assert_eq!(parse_statm(""), None);
    }

    #[test]
    fn prog_fdinfo_fields() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t13\nprog_jited:\t1\n\
                    prog_tag:\t8a8b3d4a2f4b5c6d\nmemlock:\t4096\nprog_id:\t77\nrun_time_ns:\t123456\nrun_cnt:\t89\n\
                    recursion_misses:\t0\nverified_insns:\t40\n";
        assert_eq!(parse_prog_fdinfo(text), Some((77, 13, 123456, 89)));
        // Kernels before 5.1 have no run statistics: counted as zero.
        assert_eq!(parse_prog_fdinfo("prog_type:\t2\nprog_id:\t5\n"), Some((5, 2, 0, 0)));
        // A map's fdinfo is not a program's.
        assert_eq!(parse_prog_fdinfo("map_type:\t27\nmap_id:\t9\n"), None);
    }

    #[test]
    fn prog_types_have_libbpf_names() {
        assert_eq!(prog_type_name(13), "sock_ops");
        assert_eq!(prog_type_name(100_000), "100000");
    }

    #[test]
    fn own_process_is_measured() {
        let p = process_stats(Path::new("/proc/self")).expect("own stats");
        assert!(p.resident_bytes > 0 && p.threads >= 1, "{p:?}");
    }
}
