//! What the udp_buffer tuner reads from `/proc`: free buffer pages
//! (`/proc/zoneinfo`, the bound for `udp_mem`), UDP memory in use
//! (`/proc/net/sockstat`, on the 1 s tick) and the UDP receive counters of
//! a namespace (`/proc/net/snmp` and `snmp6`, read inside that namespace),
//! on top of `bpftune_sdk::procfs`. Every read that fails yields
//! "unknown", never uninitialised numbers.

use std::path::Path;

pub use bpftune_sdk::procfs::{ProcError, read_free_buffer_pages};
use bpftune_sdk::{Host, procfs};

/// UDP memory in use, in pages (the `UDP:` line of sockstat).
pub fn sockstat_udp_mem(sockstat: &str) -> Option<i64> {
    procfs::sockstat_mem(sockstat, "UDP")
}

/// Read the daemon namespace's `/proc/net/sockstat` (`udp_mem` is global
/// and so is the UDP memory count).
pub fn read_sockstat_udp_mem(proc_root: &Path) -> Result<i64, ProcError> {
    procfs::read_sockstat_mem(proc_root, "UDP")
}

/// A counter from the header/value line pairs of `/proc/net/snmp`.
pub fn snmp_value(snmp: &str, prefix: &str, name: &str) -> Option<u64> {
    procfs::counter(snmp, prefix, name)
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
    let get6 = |n| procfs::snmp6_counter(snmp6, n).unwrap_or(0);
    UdpCounters {
        datagrams: get4("InDatagrams").saturating_add(get6("Udp6InDatagrams")),
        rcvbuf_errors: get4("RcvbufErrors").saturating_add(get6("Udp6RcvbufErrors")),
    }
}

/// The counters of the namespace with that cookie (and inode, if known),
/// read by the daemon inside it in one visit.
pub fn read_udp_counters(host: &Host, cookie: u64, inum: Option<u32>) -> Result<UdpCounters, ProcError> {
    host.in_netns(cookie, inum.unwrap_or(0), || -> Result<UdpCounters, ProcError> {
        let dir = Path::new("/proc/thread-self/net");
        let snmp = procfs::read(&dir.join("snmp"))?;
        // No IPv6 in the namespace (or the kernel) is not an error.
        let snmp6 = procfs::read(&dir.join("snmp6")).unwrap_or_default();
        Ok(udp_counters(&snmp, &snmp6))
    })
    .map_err(ProcError::Host)?
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // zoneinfo is tested in bpftune_sdk::procfs.
        assert!(read_sockstat_udp_mem(Path::new("/proc")).is_ok());
    }
}
