//! What the tcp_buffer tuner reads from `/proc`: free buffer pages
//! (`/proc/zoneinfo`, the bound for `tcp_mem`), TCP memory in use
//! (`/proc/net/sockstat`, read on the tuner's 1 s tick) and the syncookie
//! counters of a namespace (`/proc/net/netstat`, read inside that
//! namespace), on top of `bpftune_sdk::procfs`.

use std::path::Path;

use bpftune_sdk::Host;
use bpftune_sdk::procfs;
pub use bpftune_sdk::procfs::{ProcError, read_free_buffer_pages};

/// TCP memory in use, in pages (the `TCP:` line of `/proc/net/sockstat`).
pub fn sockstat_tcp_mem(sockstat: &str) -> Option<i64> {
    procfs::sockstat_mem(sockstat, "TCP")
}

/// Read the daemon namespace's `/proc/net/sockstat` (`tcp_mem` is global).
pub fn read_sockstat_tcp_mem(proc_root: &Path) -> Result<i64, ProcError> {
    procfs::read_sockstat_mem(proc_root, "TCP")
}

/// A counter from the header/value line pairs of `/proc/net/netstat`.
pub fn netstat_value(netstat: &str, prefix: &str, name: &str) -> Option<u64> {
    procfs::counter(netstat, prefix, name)
}

/// Syncookie counters of one namespace: (SyncookiesRecv, SyncookiesFailed).
pub fn syncookie_counters(netstat: &str) -> Option<(u64, u64)> {
    Some((netstat_value(netstat, "TcpExt:", "SyncookiesRecv")?, netstat_value(netstat, "TcpExt:", "SyncookiesFailed")?))
}

/// `/proc/net/netstat` of the namespace with that cookie (and inode, if
/// known), read by the daemon inside it.
pub fn read_netstat(host: &Host, cookie: u64, inum: Option<u32>) -> Result<String, ProcError> {
    host.read_net_file(cookie, inum.unwrap_or(0), "netstat").map_err(ProcError::Host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat() {
        let s = "sockets: used 12\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 358\nUDP: inuse 0 mem 0\n";
        assert_eq!(sockstat_tcp_mem(s), Some(358));
        assert_eq!(sockstat_tcp_mem("sockets: used 1\n"), None);
    }

    #[test]
    fn netstat_counters() {
        let n = "TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts\n\
                 TcpExt: 10 0 2048 3\n\
                 IpExt: InNoRoutes InTruncatedPkts\n\
                 IpExt: 0 0\n";
        assert_eq!(syncookie_counters(n), Some((0, 2048)));
        assert_eq!(netstat_value(n, "IpExt:", "InTruncatedPkts"), Some(0));
        assert_eq!(netstat_value(n, "TcpExt:", "Nope"), None);
    }

    #[test]
    fn this_machine() {
        // Unprivileged reads of the real files parse (zoneinfo is tested in
        // bpftune_sdk::procfs).
        assert!(read_sockstat_tcp_mem(Path::new("/proc")).is_ok());
        let netstat = std::fs::read_to_string("/proc/net/netstat").expect("netstat");
        assert!(syncookie_counters(&netstat).is_some());
    }
}
