//! The neigh_table tuner's tunable and scenario tables and the reason lines
//! it logs (interface facts kept exactly as the original's).
//!
//! Ids are the enum discriminants. Every tunable is global (the neighbour
//! tables are shared by all namespaces) and holds one value; they are
//! declared so that an administrator writing one of them is noticed, and
//! gc_thresh1/2/3 are what the tuner writes (through the daemon, in the
//! initial namespace) to change a table's thresholds.

bpftune_sdk::tunables! {
    pub enum Tunable {
        Ipv4GcInterval = ("net.ipv4.neigh.default.gc_interval", Sysctl, NONE, 1),
        Ipv4GcStaleTime = ("net.ipv4.neigh.default.gc_stale_time", Sysctl, NONE, 1),
        Ipv4GcThresh1 = ("net.ipv4.neigh.default.gc_thresh1", Sysctl, NONE, 1),
        Ipv4GcThresh2 = ("net.ipv4.neigh.default.gc_thresh2", Sysctl, NONE, 1),
        Ipv4GcThresh3 = ("net.ipv4.neigh.default.gc_thresh3", Sysctl, NONE, 1),
        Ipv6GcInterval = ("net.ipv6.neigh.default.gc_interval", Sysctl, OPTIONAL, 1),
        Ipv6GcStaleTime = ("net.ipv6.neigh.default.gc_stale_time", Sysctl, OPTIONAL, 1),
        Ipv6GcThresh1 = ("net.ipv6.neigh.default.gc_thresh1", Sysctl, OPTIONAL, 1),
        Ipv6GcThresh2 = ("net.ipv6.neigh.default.gc_thresh2", Sysctl, OPTIONAL, 1),
        Ipv6GcThresh3 = ("net.ipv6.neigh.default.gc_thresh3", Sysctl, OPTIONAL, 1),
    }
}

bpftune_sdk::scenarios! {
    pub enum Scenario {
        NearlyFull = (
            "neighbour table nearly full",
            "neighbour table is nearly full, preventing new entries from being added."
        ),
        GrownExcessively = (
            "neighbour table grown excessively",
            "neighbour table increases are beyond what would be expected for the device given the number of IP addresses/prefixlens associated with it."
        ),
        NearlyEmpty = (
            "neighbour table nearly empty",
            "neighbour table is nearly empty, consuming unnecessary memory."
        ),
    }
}

// The ids the BPF side sends are its C enum's (anchored in the object's
// BTF): the build fails if the two ever differ.
bpftune_sdk::same_ids!(crate::skel::types::neigh_table_scenario => Scenario {
    NEIGH_TABLE_FULL = NearlyFull,
    NEIGH_TABLE_EMPTY = NearlyEmpty,
});

/// `AF_INET`.
pub const FAMILY_INET: u32 = libc::AF_INET as u32;
/// `AF_INET6`.
pub const FAMILY_INET6: u32 = libc::AF_INET6 as u32;

/// One of the two neighbour tables this tuner manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// IPv4 ARP: `arp_cache`.
    Arp,
    /// IPv6 neighbour discovery: `ndisc_cache`.
    Ndisc,
}

impl Table {
    /// The table of an address family, if it is one we manage.
    pub fn from_family(family: u32) -> Option<Self> {
        match family {
            FAMILY_INET => Some(Self::Arp),
            FAMILY_INET6 => Some(Self::Ndisc),
            _ => None,
        }
    }

    /// The kernel's name of the table (`NDTA_NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Arp => "arp_cache",
            Self::Ndisc => "ndisc_cache",
        }
    }

    /// Its address family.
    pub fn family(self) -> u32 {
        match self {
            Self::Arp => FAMILY_INET,
            Self::Ndisc => FAMILY_INET6,
        }
    }

    /// Address length in bits (host bits = this minus the prefix length).
    pub fn addr_bits(self) -> u32 {
        match self {
            Self::Arp => 32,
            Self::Ndisc => 128,
        }
    }

    /// gc_thresh1..3 of the family, in order.
    pub fn thresh_tunables(self) -> [Tunable; 3] {
        match self {
            Self::Arp => [Tunable::Ipv4GcThresh1, Tunable::Ipv4GcThresh2, Tunable::Ipv4GcThresh3],
            Self::Ndisc => [Tunable::Ipv6GcThresh1, Tunable::Ipv6GcThresh2, Tunable::Ipv6GcThresh3],
        }
    }

    /// The tunable changes are logged and counted under (gc_thresh3).
    pub fn tunable(self) -> Tunable {
        self.thresh_tunables()[2]
    }
}

/// Reason logged when the thresholds grew.
pub fn grow_reason(table: Table, dev: &str, ifindex: i32, old: [i64; 3], new: [i64; 3]) -> String {
    format!(
        "updated thresholds for {} table, dev '{dev}' (ifindex {ifindex}) thresh1: {} to {}, thresh2: {} to {}, thresh3: {} to {}",
        table.name(),
        old[0],
        new[0],
        old[1],
        new[1],
        old[2],
        new[2]
    )
}

/// Reason logged when the thresholds shrank.
pub fn shrink_reason(table: Table, old: [i64; 3], new: [i64; 3]) -> String {
    format!(
        "reduced thresholds for {} table, thresh1: {} to {}, thresh2: {} to {}, thresh3: {} to {}",
        table.name(),
        old[0],
        new[0],
        old[1],
        new[1],
        old[2],
        new[2]
    )
}

/// Reason logged when growth stops at the bound computed for the device.
pub fn bound_reason(table: Table, dev: &str, ifindex: i32, max: i64, naddrs: usize, cur: [i64; 3]) -> String {
    format!(
        "can no longer update thresholds for gc_thresh[1-3] for table '{}' for device '{dev}' (ifindex {ifindex}) due to excessive size of table (we computed a reasonable max of {max} based on the prefixlens of the {naddrs} configured addresses). Current thresh1: {} , thresh2: {} , thresh3: {}.",
        table.name(),
        cur[0],
        cur[1],
        cur[2]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_sdk::abi::{TunableFlags, TunableKind};

    #[test]
    fn ids_and_flags_match_the_reference() {
        assert_eq!(Tunable::ALL.len(), 10);
        assert_eq!(Tunable::Ipv4GcThresh3 as u32, 4);
        assert_eq!(Tunable::Ipv6GcThresh3 as u32, 9);
        for t in Tunable::ALL {
            let d = Tunable::TABLE[*t as usize];
            assert_eq!(d.kind, TunableKind::Sysctl);
            assert_eq!(d.num_values, 1);
            assert!(!d.flags.contains(TunableFlags::NAMESPACED), "{}", t.name());
            assert_eq!(d.flags.contains(TunableFlags::OPTIONAL), t.name().starts_with("net.ipv6"), "{}", t.name());
        }
        // The scenarios BPF sends are checked at compile time (same_ids!
        // above); this one only userspace decides on.
        assert_eq!(Scenario::GrownExcessively as u32, 1);
        assert_eq!(Scenario::NearlyFull.name(), "neighbour table nearly full");
    }

    #[test]
    fn tables() {
        assert_eq!(Table::from_family(2), Some(Table::Arp));
        assert_eq!(Table::from_family(10), Some(Table::Ndisc));
        assert_eq!(Table::from_family(7), None);
        assert_eq!(Table::Arp.name(), "arp_cache");
        assert_eq!(Table::Ndisc.name(), "ndisc_cache");
        assert_eq!(Table::Arp.tunable().name(), "net.ipv4.neigh.default.gc_thresh3");
        assert_eq!(Table::Ndisc.tunable().name(), "net.ipv6.neigh.default.gc_thresh3");
    }

    #[test]
    fn reason_formats() {
        assert_eq!(
            grow_reason(Table::Arp, "veth0", 3, [32, 64, 128], [40, 80, 160]),
            "updated thresholds for arp_cache table, dev 'veth0' (ifindex 3) thresh1: 32 to 40, thresh2: 64 to 80, thresh3: 128 to 160"
        );
        assert_eq!(
            shrink_reason(Table::Ndisc, [512, 2048, 4096], [384, 1536, 3072]),
            "reduced thresholds for ndisc_cache table, thresh1: 512 to 384, thresh2: 2048 to 1536, thresh3: 4096 to 3072"
        );
        assert!(bound_reason(Table::Arp, "eth0", 2, 1024, 1, [128, 512, 1024]).starts_with(
            "can no longer update thresholds for gc_thresh[1-3] for table 'arp_cache' for device 'eth0' (ifindex 2) due to excessive size of table (we computed a reasonable max of 1024 based on the prefixlens of the 1 configured addresses). Current thresh1: 128 , thresh2: 512 , thresh3: 1024."
        ));
    }
}
