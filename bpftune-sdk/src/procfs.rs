//! What tuners read from `/proc`, in one place: free buffer pages (the
//! bound every protocol-memory tuner uses), protocol memory in use from
//! `sockstat`, counters from `netstat`/`snmp`/`snmp6`. A `/proc/net` file of
//! another namespace is read by the daemon (`Host::read_net_file`). Parsers
//! take text so they are tested on captured samples.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Why a `/proc` read failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("no '{field}' in {path}")]
    Missing { path: PathBuf, field: &'static str },
    /// The daemon could not read it in that namespace (gone, say).
    #[error("{0}")]
    Host(String),
}

/// Read a whole file.
pub fn read(path: &Path) -> Result<String, ProcError> {
    fs::read_to_string(path).map_err(|source| ProcError::Io { path: path.to_path_buf(), source })
}

/// Sum of (managed - high) pages over the `Normal` zones, or over the
/// `DMA32` zones if that is 0 (machines under 4 GiB): memory the kernel can
/// give to buffers without dipping below its watermarks (the original's
/// `nr_free_buffer_pages`).
pub fn free_buffer_pages(zoneinfo: &str) -> i64 {
    let sum_zone = |wanted: &str| -> i64 {
        let (mut total, mut in_zone) = (0i64, false);
        let (mut managed, mut high): (Option<i64>, Option<i64>) = (None, None);
        let mut flush = |m: &mut Option<i64>, h: &mut Option<i64>| {
            if let (Some(m), Some(h)) = (m.take(), h.take()) {
                total += (m - h).max(0);
            }
        };
        for line in zoneinfo.lines() {
            let t = line.trim();
            if t.starts_with("Node ") {
                flush(&mut managed, &mut high);
                in_zone = t.split_whitespace().last() == Some(wanted);
                continue;
            }
            let mut f = t.split_whitespace();
            match (in_zone, f.next(), f.next(), f.next()) {
                (true, Some("high"), Some(v), None) => high = v.parse().ok(),
                (true, Some("managed"), Some(v), None) => managed = v.parse().ok(),
                _ => {}
            }
        }
        flush(&mut managed, &mut high);
        total
    };
    let normal = sum_zone("Normal");
    if normal > 0 { normal } else { sum_zone("DMA32") }
}

/// Read `<proc_root>/zoneinfo`; an error if no zone gives a positive count.
pub fn read_free_buffer_pages(proc_root: &Path) -> Result<i64, ProcError> {
    let path = proc_root.join("zoneinfo");
    let pages = free_buffer_pages(&read(&path)?);
    if pages <= 0 {
        return Err(ProcError::Missing { path, field: "managed/high" });
    }
    Ok(pages)
}

/// Memory in use, in pages, of protocol `proto` (`TCP`, `UDP`): the `mem`
/// field of its line in `/proc/net/sockstat`.
pub fn sockstat_mem(sockstat: &str, proto: &str) -> Option<i64> {
    let line = sockstat.lines().find(|l| l.strip_prefix(proto).is_some_and(|rest| rest.starts_with(':')))?;
    let mut f = line.split_whitespace();
    while let Some(k) = f.next() {
        if k == "mem" {
            return f.next()?.parse().ok();
        }
    }
    None
}

/// Read the daemon namespace's `<proc_root>/net/sockstat` for `proto`.
pub fn read_sockstat_mem(proc_root: &Path, proto: &'static str) -> Result<i64, ProcError> {
    let path = proc_root.join("net/sockstat");
    sockstat_mem(&read(&path)?, proto).ok_or(ProcError::Missing { path, field: proto })
}

/// A counter from the header/value line pairs of `/proc/net/netstat` or
/// `/proc/net/snmp` (e.g. prefix `TcpExt:`, name `SyncookiesFailed`).
pub fn counter(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines();
    while let Some(header) = lines.next() {
        let values = lines.next()?;
        if !header.starts_with(prefix) || !values.starts_with(prefix) {
            continue;
        }
        let idx = header.split_whitespace().position(|h| h == name)?;
        return values.split_whitespace().nth(idx)?.parse().ok();
    }
    None
}

/// A counter from the `name value` lines of `/proc/net/snmp6`.
pub fn snmp6_counter(snmp6: &str, name: &str) -> Option<u64> {
    snmp6.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == name).then(|| f.next()?.parse().ok())?
    })
}

/// The machine-wide count of one softirq (e.g. `NET_RX:`) from
/// `/proc/softirqs`, summed over CPUs: a cheap sign of packets moving in
/// any namespace (loopback and veth included).
pub fn softirq_total(softirqs: &str, name: &str) -> Option<u64> {
    let line = softirqs.lines().find(|l| l.trim_start().starts_with(name))?;
    let mut total = 0u64;
    for n in line.split_whitespace().skip(1) {
        total = total.saturating_add(n.parse().ok()?);
    }
    Some(total)
}

/// [`softirq_total`] of `/proc/softirqs`.
pub fn read_softirq_total(proc_root: &Path, name: &'static str) -> Result<u64, ProcError> {
    let path = proc_root.join("softirqs");
    softirq_total(&read(&path)?, name).ok_or(ProcError::Missing { path, field: name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softirq_totals_sum_the_cpus() {
        let text = "                    CPU0       CPU1\n          HI:          1          0\n      NET_TX:          5          7\n      NET_RX:     102400        999\n";
        assert_eq!(softirq_total(text, "NET_RX:"), Some(103_399));
        assert_eq!(softirq_total(text, "NET_TX:"), Some(12));
        assert_eq!(softirq_total(text, "BLOCK:"), None);
        assert_eq!(softirq_total("      NET_RX:     1x\n", "NET_RX:"), None);
        assert!(read_softirq_total(Path::new("/proc"), "NET_RX:").is_ok());
    }

    /// The only zoneinfo sample in the workspace (tcp_buffer and udp_buffer
    /// use these functions through re-exports and do not test them again).
    const ZONEINFO: &str = "Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 1
  pages free     3840
        boost    0
        min      12
        low      15
        high     18
        spanned  4095
        present  3998
        managed  3840
Node 0, zone    DMA32
  pages free     300000
        min      1000
        low      1200
        high     1400
        spanned  1044480
        present  782288
        managed  700000
Node 0, zone   Normal
  pages free     4000000
        min      10000
        low      12000
        high     14000
        spanned  5505024
        present  5505024
        managed  5400000
Node 0, zone  Movable
  pages free     0
        high     0
        managed  0
";

    #[test]
    fn free_pages_sum_normal_zones_else_dma32() {
        assert_eq!(free_buffer_pages(ZONEINFO), 5_400_000 - 14_000);
        let no_normal = ZONEINFO.replace("zone   Normal", "zone   Other");
        assert_eq!(free_buffer_pages(&no_normal), 700_000 - 1_400);
        let small = "Node 0, zone    DMA32\n high 1400\n managed 700000\n";
        assert_eq!(free_buffer_pages(small), 700_000 - 1_400);
        assert_eq!(free_buffer_pages(""), 0);
        assert!(read_free_buffer_pages(Path::new("/proc")).expect("zoneinfo") > 0);
    }

    #[test]
    fn free_pages_sum_over_nodes_and_never_go_negative() {
        let two = format!("{ZONEINFO}{}", ZONEINFO.replace("Node 0", "Node 1"));
        assert_eq!(free_buffer_pages(&two), 2 * (5_400_000 - 14_000));
        let starved = format!("{ZONEINFO}Node 1, zone   Normal\n        high     100\n        managed  50\n");
        assert_eq!(free_buffer_pages(&starved), 5_400_000 - 14_000);
    }

    #[test]
    fn sockstat_and_counters() {
        let sockstat =
            "sockets: used 5\nTCP: inuse 3 orphan 0 tw 0 alloc 4 mem 17\nUDP: inuse 1 mem 2\nUDPLITE: inuse 0\n";
        assert_eq!(sockstat_mem(sockstat, "TCP"), Some(17));
        assert_eq!(sockstat_mem(sockstat, "UDP"), Some(2));
        assert_eq!(sockstat_mem(sockstat, "RAW"), None);
        let netstat = "TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed\nTcpExt: 1 2 3\n";
        assert_eq!(counter(netstat, "TcpExt:", "SyncookiesFailed"), Some(3));
        assert_eq!(counter(netstat, "TcpExt:", "Nope"), None);
        assert_eq!(snmp6_counter("Udp6InDatagrams 12\nUdp6RcvbufErrors 4\n", "Udp6RcvbufErrors"), Some(4));
        assert!(read_sockstat_mem(Path::new("/proc"), "TCP").is_ok());
    }
}
