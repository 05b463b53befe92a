//! Reassembly counters (`ReasmReqds`, `ReasmFails`) from `/proc/net/snmp`
//! (IPv4) and `/proc/net/snmp6` (IPv6), for the correlation guard; read in
//! the namespace under pressure by [`crate::sockstat::read`].

use std::collections::HashMap;

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
    fn parses_the_daemons_own_counters() {
        let text = std::fs::read_to_string("/proc/net/snmp").expect("snmp");
        assert!(parse_snmp(&text).is_some());
    }
}
