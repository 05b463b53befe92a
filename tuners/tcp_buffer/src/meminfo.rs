//! What the tcp_buffer tuner reads from `/proc`: free buffer pages
//! (`/proc/zoneinfo`, the bound for `tcp_mem`), TCP memory in use
//! (`/proc/net/sockstat`, read on the tuner's 1 s tick) and the syncookie
//! counters of a namespace (`/proc/net/netstat`, read inside that
//! namespace). Parsers take text so they are tested on captured fixtures.

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

/// Sum of (managed − high) pages over the `Normal` zones, or over the
/// `DMA32` zones if that is 0 (machines under 4 GiB): memory the kernel can
/// give to buffers without dipping below its watermarks.
pub fn free_buffer_pages(zoneinfo: &str) -> i64 {
    let sum_zone = |wanted: &str| -> i64 {
        let mut total = 0i64;
        let mut in_zone = false;
        let (mut managed, mut high) = (None, None);
        let mut flush = |managed: &mut Option<i64>, high: &mut Option<i64>| {
            if let (Some(m), Some(h)) = (managed.take(), high.take()) {
                if m > h {
                    total += m - h;
                }
            }
        };
        for line in zoneinfo.lines() {
            let t = line.trim();
            if t.starts_with("Node ") {
                if in_zone {
                    flush(&mut managed, &mut high);
                }
                in_zone = t.split_whitespace().last() == Some(wanted);
                managed = None;
                high = None;
                continue;
            }
            if !in_zone {
                continue;
            }
            let mut f = t.split_whitespace();
            match (f.next(), f.next(), f.next()) {
                (Some("high"), Some(v), None) => high = v.parse().ok(),
                (Some("managed"), Some(v), None) => managed = v.parse().ok(),
                _ => {}
            }
        }
        if in_zone {
            flush(&mut managed, &mut high);
        }
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

/// TCP memory in use, in pages: the `mem` field of the `TCP:` line of
/// `/proc/net/sockstat`.
pub fn sockstat_tcp_mem(sockstat: &str) -> Option<i64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut f = line.split_whitespace();
    while let Some(k) = f.next() {
        if k == "mem" {
            return f.next()?.parse().ok();
        }
    }
    None
}

/// Read the daemon namespace's `/proc/net/sockstat` (`tcp_mem` is global).
pub fn read_sockstat_tcp_mem(proc_root: &Path) -> Result<i64, ProcError> {
    let path = proc_root.join("net/sockstat");
    sockstat_tcp_mem(&read(&path)?).ok_or(ProcError::Missing { path, field: "TCP mem" })
}

/// A counter from the header/value line pairs of `/proc/net/netstat`
/// (e.g. `TcpExt:` `SyncookiesFailed`).
pub fn netstat_value(netstat: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = netstat.lines();
    while let Some(header) = lines.next() {
        let values = lines.next()?;
        if !header.starts_with(prefix) {
            continue;
        }
        let idx = header.split_whitespace().position(|h| h == name)?;
        return values.split_whitespace().nth(idx)?.parse().ok();
    }
    None
}

/// Syncookie counters of one namespace: (SyncookiesRecv, SyncookiesFailed).
pub fn syncookie_counters(netstat: &str) -> Option<(u64, u64)> {
    Some((netstat_value(netstat, "TcpExt:", "SyncookiesRecv")?, netstat_value(netstat, "TcpExt:", "SyncookiesFailed")?))
}

/// `/proc/net/netstat` of the namespace with that cookie and inode; `None`
/// for the inode means the daemon's own namespace. Other namespaces are
/// entered on a helper thread, which is why the path is `thread-self`.
pub fn read_netstat(cookie: u64, inum: Option<u32>) -> Result<String, ProcError> {
    let Some(inum) = inum else {
        return read(Path::new("/proc/net/netstat"));
    };
    let path = candidate_paths(Path::new("/proc")).remove(&u64::from(inum)).ok_or(ProcError::NoNetns { inum })?;
    let handle = NetnsHandle { cookie, inum: u64::from(inum), path };
    let netstat = PathBuf::from("/proc/thread-self/net/netstat");
    in_netns(&handle, || read(&netstat)).map_err(|source| ProcError::Io { path: handle.path.clone(), source })?
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn zoneinfo_normal_zones() {
        assert_eq!(free_buffer_pages(ZONEINFO), 5_400_000 - 14_000);
        let no_normal = ZONEINFO.replace("zone   Normal", "zone   Other");
        assert_eq!(free_buffer_pages(&no_normal), 700_000 - 1400);
        assert_eq!(free_buffer_pages(""), 0);
    }

    #[test]
    fn zoneinfo_two_nodes() {
        let two = format!("{ZONEINFO}{}", ZONEINFO.replace("Node 0", "Node 1"));
        assert_eq!(free_buffer_pages(&two), 2 * (5_400_000 - 14_000));
    }

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
        // Unprivileged reads of the real files parse.
        assert!(read_free_buffer_pages(Path::new("/proc")).expect("zoneinfo") > 0);
        assert!(read_sockstat_tcp_mem(Path::new("/proc")).is_ok());
        assert!(syncookie_counters(&read_netstat(0, None).expect("netstat")).is_some());
    }
}
