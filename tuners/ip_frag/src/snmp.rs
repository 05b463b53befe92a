//! Reassembly counters (`ReasmReqds`, `ReasmFails`) from `/proc/net/snmp`
//! (IPv4) and `/proc/net/snmp6` (IPv6), read inside the namespace an event
//! came from, for the correlation guard.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bpftune_sdk::netns::{NetnsHandle, candidate_paths, in_netns};

/// Reading the counters failed.
#[derive(Debug, thiserror::Error)]
pub enum SnmpError {
    #[error("no path names network namespace inode {inum}")]
    NoNetns { inum: u32 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("no reassembly counters in {0}")]
    Missing(&'static str),
}

/// Reassembly requests and failures since boot (or namespace creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reasm {
    pub reqds: u64,
    pub fails: u64,
}

/// From `/proc/net/snmp`: the first pair of `Ip:` lines (header, values).
pub fn parse_snmp(text: &str) -> Option<Reasm> {
    let mut lines = text.lines().filter(|l| l.starts_with("Ip:"));
    let header = lines.next()?;
    let values = lines.next()?;
    let map: HashMap<&str, &str> = header.split_whitespace().zip(values.split_whitespace()).skip(1).collect();
    Some(Reasm { reqds: map.get("ReasmReqds")?.parse().ok()?, fails: map.get("ReasmFails")?.parse().ok()? })
}

/// From `/proc/net/snmp6`: `Ip6ReasmReqds <n>` / `Ip6ReasmFails <n>` lines.
pub fn parse_snmp6(text: &str) -> Option<Reasm> {
    let get = |key: &str| {
        text.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(key)).then(|| it.next().and_then(|v| v.parse::<u64>().ok())).flatten()
        })
    };
    Some(Reasm { reqds: get("Ip6ReasmReqds")?, fails: get("Ip6ReasmFails")? })
}

fn read(path: &Path) -> Result<String, SnmpError> {
    fs::read_to_string(path).map_err(|source| SnmpError::Io { path: path.to_path_buf(), source })
}

/// Finds (and caches) a path for each namespace seen, to read its counters.
#[derive(Debug, Default)]
pub struct SnmpReader {
    handles: HashMap<u64, NetnsHandle>,
}

impl SnmpReader {
    /// Counters of the namespace `cookie` (`inum` None = the daemon's own).
    pub fn read(&mut self, cookie: u64, inum: Option<u32>, ipv6: bool) -> Result<Reasm, SnmpError> {
        let (file, parse): (&'static str, fn(&str) -> Option<Reasm>) =
            if ipv6 { ("snmp6", parse_snmp6) } else { ("snmp", parse_snmp) };
        let path = PathBuf::from(format!("/proc/thread-self/net/{file}"));
        let text = match inum {
            None => read(&path)?,
            Some(inum) => {
                let handle = match self.handles.get(&cookie) {
                    Some(h) if h.inum == u64::from(inum) => h.clone(),
                    _ => {
                        let p = candidate_paths(Path::new("/proc"))
                            .remove(&u64::from(inum))
                            .ok_or(SnmpError::NoNetns { inum })?;
                        let h = NetnsHandle { cookie, inum: u64::from(inum), path: p };
                        self.handles.insert(cookie, h.clone());
                        h
                    }
                };
                match in_netns(&handle, || read(&path)) {
                    Ok(r) => r?,
                    Err(source) => {
                        self.handles.remove(&cookie);
                        return Err(SnmpError::Io { path: handle.path, source });
                    }
                }
            }
        };
        parse(&text).ok_or(SnmpError::Missing(file))
    }

    /// Forget a namespace (gone, or no longer tuned).
    pub fn forget(&mut self, cookie: u64) {
        self.handles.remove(&cookie);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 1 64 2000 0 0 0 0 0 1900 1800 0 0 0 120 20 7 3 0 18 1800
Icmp: InMsgs InErrors
Icmp: 5 0
";

    #[test]
    fn parses_ipv4_counters() {
        assert_eq!(parse_snmp(SNMP), Some(Reasm { reqds: 120, fails: 7 }));
        assert_eq!(parse_snmp("Icmp: InMsgs\nIcmp: 1\n"), None);
    }

    #[test]
    fn parses_ipv6_counters() {
        let text = "Ip6InReceives                   \t10\nIp6ReasmReqds                   \t42\nIp6ReasmOKs \t40\nIp6ReasmFails                   \t2\n";
        assert_eq!(parse_snmp6(text), Some(Reasm { reqds: 42, fails: 2 }));
        assert_eq!(parse_snmp6("Ip6InReceives 1\n"), None);
    }

    #[test]
    fn reads_the_daemons_own_counters() {
        let mut r = SnmpReader::default();
        assert!(r.read(0, None, false).is_ok());
    }
}
