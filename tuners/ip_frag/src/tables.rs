//! The ip_frag tuner's tunable and scenario tables and its reason line
//! (interface facts kept exactly as the original's).
//!
//! Ids are the enum discriminants (the order of the original's tables,
//! checked by a unit test below). Unlike the
//! original, every threshold is per network namespace (they are on current
//! kernels), and the low thresholds are declared so they can be kept below
//! the high ones.

bpftune_sdk::tunables! {
    pub enum Tunable {
        IpfragHighThresh = ("net.ipv4.ipfrag_high_thresh", Sysctl, NAMESPACED, 1),
        Ip6fragHighThresh = ("net.ipv6.ip6frag_high_thresh", Sysctl, NAMESPACED | OPTIONAL, 1),
        IpfragLowThresh = ("net.ipv4.ipfrag_low_thresh", Sysctl, NAMESPACED, 1),
        Ip6fragLowThresh = ("net.ipv6.ip6frag_low_thresh", Sysctl, NAMESPACED | OPTIONAL, 1),
    }
}

bpftune_sdk::scenarios! {
    pub enum Scenario {
        Increase = (
            "need to increase IP fragmentation high threshold",
            "this allows additional memory to be used to accommodate more defragmentation."
        ),
        Decrease = (
            "need to decrease IP fragmentation high threshold",
            "as we increased fragmentation high threshold we saw a correlation in reassembly failures; this indicates that we received more invalid fragments as we added memory to process them.  As such, further increases are likely to be ineffective so reduce high threshold."
        ),
    }
}

impl Tunable {
    /// The low threshold paired with a high one (and itself for a low one).
    pub fn low(self) -> Self {
        match self {
            Self::IpfragHighThresh | Self::IpfragLowThresh => Self::IpfragLowThresh,
            Self::Ip6fragHighThresh | Self::Ip6fragLowThresh => Self::Ip6fragLowThresh,
        }
    }

    /// True for the IPv6 thresholds.
    pub fn is_ipv6(self) -> bool {
        matches!(self, Self::Ip6fragHighThresh | Self::Ip6fragLowThresh)
    }
}

/// Reason logged for every threshold change (the same for a decrease, as
/// in the original).
pub fn reason(name: &str, old: i64, new: i64) -> String {
    format!("Due to approaching fragmentation maximum threshold change {name} from ({old}) -> ({new})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_sdk::abi::{TunableFlags, TunableKind};

    #[test]
    fn ids_match_the_reference() {
        assert_eq!(Tunable::IpfragHighThresh as u32, 0);
        assert_eq!(Tunable::Ip6fragHighThresh as u32, 1);
        assert_eq!(Scenario::Increase as u32, 0);
        assert_eq!(Scenario::Decrease as u32, 1);
        assert_eq!(Tunable::ALL.len(), 4);
    }

    #[test]
    fn every_threshold_is_per_namespace_and_ipv6_is_optional() {
        for t in Tunable::ALL {
            let d = Tunable::TABLE[*t as usize];
            assert_eq!(d.kind, TunableKind::Sysctl);
            assert_eq!(d.num_values, 1);
            assert!(d.flags.contains(TunableFlags::NAMESPACED), "{}", t.name());
            assert_eq!(d.flags.contains(TunableFlags::OPTIONAL), t.is_ipv6(), "{}", t.name());
        }
        assert_eq!(Tunable::IpfragHighThresh.low(), Tunable::IpfragLowThresh);
        assert_eq!(Tunable::Ip6fragHighThresh.low(), Tunable::Ip6fragLowThresh);
    }

    #[test]
    fn reason_format() {
        assert_eq!(
            reason("net.ipv4.ipfrag_high_thresh", 8192, 10240),
            "Due to approaching fragmentation maximum threshold change net.ipv4.ipfrag_high_thresh from (8192) -> (10240)"
        );
        assert_eq!(Scenario::Increase.name(), "need to increase IP fragmentation high threshold");
    }
}
