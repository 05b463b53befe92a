//! Reassembly counters (`ReasmReqds`, `ReasmFails`) from `/proc/net/snmp`
//! (IPv4) and `/proc/net/snmp6` (IPv6), read inside the namespace an event
//! came from, for the correlation guard.

use std::collections::HashMap;

use bpftune_sdk::Host;

/// Reading the counters failed.
#[derive(Debug, thiserror::Error)]
pub enum SnmpError {
    #[error("{0}")]
    Host(String),
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

/// Reads the counters of a namespace.
#[derive(Debug, Default)]
pub struct SnmpReader;

impl SnmpReader {
    /// Counters of the namespace `cookie` (`inum` None = the daemon's own),
    /// read by the daemon inside it.
    pub fn read(&mut self, host: &Host, cookie: u64, inum: Option<u32>, ipv6: bool) -> Result<Reasm, SnmpError> {
        let (file, parse): (&'static str, fn(&str) -> Option<Reasm>) =
            if ipv6 { ("snmp6", parse_snmp6) } else { ("snmp", parse_snmp) };
        let text = host.read_net_file(cookie, inum.unwrap_or(0), file).map_err(SnmpError::Host)?;
        parse(&text).ok_or(SnmpError::Missing(file))
    }

    /// Forget a namespace (gone, or no longer tuned).
    pub fn forget(&mut self, _cookie: u64) {}
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
}
