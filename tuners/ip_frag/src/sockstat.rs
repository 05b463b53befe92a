//! What one look at a namespace's reassembly state finds: fragment memory
//! in use from `/proc/net/sockstat` (`FRAG:`) and `/proc/net/sockstat6`
//! (`FRAG6:`), and, only where that memory is not zero, the thresholds from
//! `/proc/sys` and the reassembly counters from `snmp`/`snmp6`. Reads go
//! through directories given by the caller, so the same code serves the
//! daemon's own namespace (`/proc/net`) and one entered by a helper thread
//! (`/proc/thread-self/net`); parsers take text and are tested on samples.

use std::fs;
use std::path::Path;

use bpftune_sdk::LearningRate;

use crate::snmp::{Reasm, parse_snmp, parse_snmp6};

/// One `FRAG:`/`FRAG6:` line: queues being reassembled and the bytes they
/// hold (the kernel's `fqdir->mem`, which it compares with high_thresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragMem {
    pub inuse: u64,
    pub memory: i64,
}

/// `FRAG: inuse N memory M` (or `FRAG6:`) from sockstat text.
pub fn parse_frag(text: &str, label: &str) -> Option<FragMem> {
    let line = text.lines().find(|l| l.strip_prefix(label).is_some_and(|rest| rest.starts_with(':')))?;
    let mut f = line.split_whitespace().skip(1);
    let (mut inuse, mut memory) = (None, None);
    while let (Some(k), Some(v)) = (f.next(), f.next()) {
        match k {
            "inuse" => inuse = v.parse().ok(),
            "memory" => memory = v.parse().ok(),
            _ => {}
        }
    }
    Some(FragMem { inuse: inuse?, memory: memory? })
}

/// One address family's reassembly state in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub mem: FragMem,
    /// high_thresh and low_thresh, read only when memory is in use.
    pub thresh: Option<(i64, i64)>,
    /// ReasmReqds/ReasmFails, read only when memory is nearly full.
    pub counters: Option<Reasm>,
}

impl Family {
    /// Memory is within one learning-rate step of high_thresh.
    pub fn nearly_full(&self, lr: LearningRate) -> bool {
        match self.thresh {
            Some((high, _)) => self.mem.memory > 0 && high > 0 && lr.nearly_full(self.mem.memory, high),
            None => false,
        }
    }
}

/// A namespace's state: `None` for a family the kernel does not have there
/// (IPv6 disabled or not built).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reading {
    pub v4: Option<Family>,
    pub v6: Option<Family>,
}

impl Reading {
    /// Fragments are being reassembled (some memory is held): look again
    /// at the next tick.
    pub fn busy(&self) -> bool {
        [self.v4, self.v6].iter().flatten().any(|f| f.mem.inuse > 0 || f.mem.memory > 0)
    }
}

/// Where one family's files are.
struct Files {
    sockstat: &'static str,
    label: &'static str,
    high: &'static str,
    low: &'static str,
    snmp: &'static str,
    parse_snmp: fn(&str) -> Option<Reasm>,
}

const V4: Files = Files {
    sockstat: "sockstat",
    label: "FRAG",
    high: "net/ipv4/ipfrag_high_thresh",
    low: "net/ipv4/ipfrag_low_thresh",
    snmp: "snmp",
    parse_snmp,
};

const V6: Files = Files {
    sockstat: "sockstat6",
    label: "FRAG6",
    high: "net/ipv6/ip6frag_high_thresh",
    low: "net/ipv6/ip6frag_low_thresh",
    snmp: "snmp6",
    parse_snmp: parse_snmp6,
};

fn read_int(path: &Path) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Read one family: one small file when idle; the two thresholds when
/// memory is in use; the counters when it is nearly full.
fn read_family(net: &Path, sys: &Path, files: &Files, lr: LearningRate) -> Option<Family> {
    let mem = parse_frag(&fs::read_to_string(net.join(files.sockstat)).ok()?, files.label)?;
    let mut fam = Family { mem, thresh: None, counters: None };
    if mem.memory > 0 {
        fam.thresh = read_int(&sys.join(files.high)).zip(read_int(&sys.join(files.low)));
        if fam.nearly_full(lr) {
            fam.counters = fs::read_to_string(net.join(files.snmp)).ok().and_then(|t| (files.parse_snmp)(&t));
        }
    }
    Some(fam)
}

/// Read a namespace's state through its `/proc/.../net` directory `net`
/// and `/proc/sys` directory `sys` (as seen by the calling thread).
pub fn read(net: &Path, sys: &Path, lr: LearningRate) -> Reading {
    Reading { v4: read_family(net, sys, &V4, lr), v6: read_family(net, sys, &V6, lr) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKSTAT: &str = "sockets: used 180
TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1
UDP: inuse 3 mem 4
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 2 memory 11520
";

    const SOCKSTAT6: &str = "TCP6: inuse 1
UDP6: inuse 2
UDPLITE6: inuse 0
RAW6: inuse 0
FRAG6: inuse 0 memory 0
";

    #[test]
    fn parses_frag_lines() {
        assert_eq!(parse_frag(SOCKSTAT, "FRAG"), Some(FragMem { inuse: 2, memory: 11520 }));
        assert_eq!(parse_frag(SOCKSTAT6, "FRAG6"), Some(FragMem { inuse: 0, memory: 0 }));
        // FRAG is not FRAG6, and a missing field is no reading.
        assert_eq!(parse_frag(SOCKSTAT6, "FRAG"), None);
        assert_eq!(parse_frag("FRAG: inuse 1\n", "FRAG"), None);
        assert_eq!(parse_frag("FRAGX: inuse 1 memory 2\n", "FRAG"), None);
    }

    fn fam(memory: i64, thresh: Option<(i64, i64)>) -> Family {
        Family { mem: FragMem { inuse: 1, memory }, thresh, counters: None }
    }

    #[test]
    fn nearly_full_needs_memory_and_a_threshold() {
        let lr = LearningRate::default();
        assert!(fam(8192, Some((8192, 4096))).nearly_full(lr));
        assert!(fam(11520, Some((8192, 4096))).nearly_full(lr));
        assert!(fam(6200, Some((8192, 4096))).nearly_full(lr));
        assert!(!fam(6000, Some((8192, 4096))).nearly_full(lr));
        assert!(!fam(0, Some((8192, 4096))).nearly_full(lr));
        assert!(!fam(8192, None).nearly_full(lr));
        assert!(!fam(8192, Some((0, 0))).nearly_full(lr));
    }

    #[test]
    fn busy_when_any_family_holds_memory() {
        let idle = Family { mem: FragMem::default(), thresh: None, counters: None };
        assert!(!Reading::default().busy());
        assert!(!Reading { v4: Some(idle), v6: Some(idle) }.busy());
        assert!(Reading { v4: Some(idle), v6: Some(fam(100, None)) }.busy());
    }

    #[test]
    fn reads_the_daemons_own_namespace() {
        let r = read(Path::new("/proc/net"), Path::new("/proc/sys"), LearningRate::default());
        assert!(r.v4.is_some(), "no FRAG line in /proc/net/sockstat");
    }

    #[test]
    fn reads_thresholds_and_counters_only_under_pressure() {
        let dir = std::env::temp_dir().join(format!("ip-frag-sockstat-{}", std::process::id()));
        let (net, sys) = (dir.join("net"), dir.join("sys"));
        fs::create_dir_all(&net).expect("mkdir");
        fs::create_dir_all(sys.join("net/ipv4")).expect("mkdir");
        fs::write(net.join("sockstat"), SOCKSTAT).expect("write");
        fs::write(net.join("snmp"), "Ip: ReasmReqds ReasmFails\nIp: 12 3\n").expect("write");
        fs::write(sys.join("net/ipv4/ipfrag_high_thresh"), "8192\n").expect("write");
        fs::write(sys.join("net/ipv4/ipfrag_low_thresh"), "4096\n").expect("write");
        let lr = LearningRate::default();
        let r = read(&net, &sys, lr);
        assert_eq!(r.v6, None, "no sockstat6: no IPv6");
        let v4 = r.v4.expect("v4");
        assert_eq!(v4.thresh, Some((8192, 4096)));
        assert_eq!(v4.counters, Some(Reasm { reqds: 12, fails: 3 }));
        assert!(r.busy());
        // Far from the threshold: no counters read.
        fs::write(sys.join("net/ipv4/ipfrag_high_thresh"), "4194304\n").expect("write");
        assert_eq!(read(&net, &sys, lr).v4.expect("v4").counters, None);
        // Idle: neither thresholds nor counters.
        fs::write(net.join("sockstat"), "FRAG: inuse 0 memory 0\n").expect("write");
        assert_eq!(read(&net, &sys, lr).v4.expect("v4").thresh, None);
        fs::remove_dir_all(&dir).expect("rm");
    }
}
