//! What the udp_buffer tuner reads from `/proc`: free buffer pages
//! (`/proc/zoneinfo`, the bound for `udp_mem`), UDP memory in use
//! (`/proc/net/sockstat`, on the 1 s tick) and the UDP receive counters of
//! a namespace (`/proc/net/snmp` and `snmp6`, read inside that namespace).
//! Parsers take text so they are tested on captured samples; every read
//! that fails yields "unknown", never uninitialised numbers.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bpftune_core::netns::{NetnsHandle, candidate_paths, in_netns};

/// Why a `/proc` read failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("no '{field}' in {path}")]
    Missing { path: PathBuf, field: &'static str },
    #[error("no handle for netns inode {inum}")]
    NoNetns { inum: u32 },
}

fn read(path: &Path) -> Result<String, ProcError> {
    fs::read_to_string(path).map_err(|source| ProcError::Io { path: path.to_path_buf(), source })
}

/// Sum of (managed - high) pages over the `Normal` zones, or the `DMA32`
/// zones if that is 0. Copied from tcp_buffer's `meminfo` (same rule as
/// the original's `nr_free_buffer_pages`); a candidate for bpftune-core.
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

/// Read `/proc/zoneinfo` under `proc_root`.
pub fn read_free_buffer_pages(proc_root: &Path) -> Result<i64, ProcError> {
    let path = proc_root.join("zoneinfo");
    let pages = free_buffer_pages(&read(&path)?);
    if pages <= 0 {
        return Err(ProcError::Missing { path, field: "managed/high" });
    }
    Ok(pages)
}

/// UDP memory in use, in pages: `mem` of the `UDP:` line of sockstat.
pub fn sockstat_udp_mem(sockstat: &str) -> Option<i64> {
    let line = sockstat.lines().find(|l| l.starts_with("UDP:"))?;
    let mut f = line.split_whitespace();
    while let Some(k) = f.next() {
        if k == "mem" {
            return f.next()?.parse().ok();
        }
    }
    None
}

/// Read the daemon namespace's `/proc/net/sockstat` (`udp_mem` is global
/// and so is the UDP memory count).
pub fn read_sockstat_udp_mem(proc_root: &Path) -> Result<i64, ProcError> {
    let path = proc_root.join("net/sockstat");
    sockstat_udp_mem(&read(&path)?).ok_or(ProcError::Missing { path, field: "UDP mem" })
}

/// A counter from the header/value line pairs of `/proc/net/snmp`.
pub fn snmp_value(snmp: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = snmp.lines();
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
pub fn snmp6_value(snmp6: &str, name: &str) -> Option<u64> {
    snmp6.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == name).then(|| f.next()?.parse().ok())?
    })
}

/// UDP receive counters of a namespace, IPv4 plus IPv6; a counter that
/// cannot be read counts as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpCounters {
    pub datagrams: u64,
    pub rcvbuf_errors: u64,
}

pub fn udp_counters(snmp: &str, snmp6: &str) -> UdpCounters {
    let get4 = |n| snmp_value(snmp, "Udp:", n).unwrap_or(0);
    let get6 = |n| snmp6_value(snmp6, n).unwrap_or(0);
    UdpCounters {
        datagrams: get4("InDatagrams").saturating_add(get6("Udp6InDatagrams")),
        rcvbuf_errors: get4("RcvbufErrors").saturating_add(get6("Udp6RcvbufErrors")),
    }
}

/// The counters of the namespace with that cookie and inode; `None` for
/// the inode means the daemon's own namespace. Other namespaces are
/// entered on a helper thread, hence `/proc/thread-self`.
pub fn read_udp_counters(cookie: u64, inum: Option<u32>) -> Result<UdpCounters, ProcError> {
    let both = |base: &Path| -> Result<UdpCounters, ProcError> {
        let snmp = read(&base.join("snmp"))?;
        // No IPv6 in the namespace (or the kernel) is not an error.
        let snmp6 = read(&base.join("snmp6")).unwrap_or_default();
        Ok(udp_counters(&snmp, &snmp6))
    };
    let Some(inum) = inum else {
        return both(Path::new("/proc/net"));
    };
    let path = candidate_paths(Path::new("/proc")).remove(&u64::from(inum)).ok_or(ProcError::NoNetns { inum })?;
    let handle = NetnsHandle { cookie, inum: u64::from(inum), path };
    in_netns(&handle, || both(Path::new("/proc/thread-self/net")))
        .map_err(|source| ProcError::Io { path: handle.path.clone(), source })?
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONEINFO: &str = "Node 0, zone      DMA
        high     18
        managed  3840
Node 0, zone    DMA32
        high     1400
        managed  700000
Node 0, zone   Normal
        high     14000
        managed  5400000
Node 0, zone  Movable
        high     0
        managed  0
";

    #[test]
    fn zoneinfo() {
        assert_eq!(free_buffer_pages(ZONEINFO), 5_400_000 - 14_000);
        let no_normal = ZONEINFO.replace("zone   Normal", "zone   Other");
        assert_eq!(free_buffer_pages(&no_normal), 700_000 - 1400);
        assert_eq!(free_buffer_pages(""), 0);
    }

    #[test]
    fn sockstat() {
        let s = "sockets: used 12\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 358\nUDP: inuse 3 mem 42\n";
        assert_eq!(sockstat_udp_mem(s), Some(42));
        assert_eq!(sockstat_udp_mem("TCP: inuse 1 mem 3\n"), None);
    }

    #[test]
    fn snmp_counters() {
        let snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 1000 0 30 5 30 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    UdpLite: 7 0 0 0 7 0\n";
        let snmp6 = "Udp6InDatagrams                 \t500\nUdp6RcvbufErrors                \t20\n";
        assert_eq!(udp_counters(snmp, snmp6), UdpCounters { datagrams: 1500, rcvbuf_errors: 50 });
        assert_eq!(udp_counters(snmp, ""), UdpCounters { datagrams: 1000, rcvbuf_errors: 30 });
        assert_eq!(udp_counters("", ""), UdpCounters::default());
        assert_eq!(snmp_value(snmp, "UdpLite:", "RcvbufErrors"), Some(7));
    }

    #[test]
    fn this_machine() {
        assert!(read_free_buffer_pages(Path::new("/proc")).expect("zoneinfo") > 0);
        assert!(read_sockstat_udp_mem(Path::new("/proc")).is_ok());
        assert!(read_udp_counters(0, None).is_ok());
    }
}
