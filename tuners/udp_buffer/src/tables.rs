//! The udp_buffer tuner's tunable and scenario tables and the reason-line
//! texts it logs (interface facts kept exactly as the original's).
//!
//! Ids are the enum discriminants; `udp_buffer.bpf.c` names the same
//! numbers in enums anchored in its BTF, checked against these tables when
//! the tuner is compiled (`same_ids!` below).

bpftune_sdk::tunables! {
    pub enum Tunable {
        UdpMem = ("net.ipv4.udp_mem", Sysctl, NONE, 3),
        // Global on this kernel: readable in every namespace but writable
        // only in the initial one (the child copies are read-only).
        RmemMax = ("net.core.rmem_max", Sysctl, NONE, 1),
        RmemDefault = ("net.core.rmem_default", Sysctl, NONE, 1),
    }
}

bpftune_sdk::scenarios! {
    pub enum Scenario {
        Increase = (
            "need to increase UDP buffer size(s)",
            "Need to increase buffer size(s) to maximize throughput and reduce loss"
        ),
        Decrease = (
            "need to decrease UDP buffer size(s)",
            "Need to decrease buffer size(s) to reduce memory utilization"
        ),
        MemPressure = (
            "approaching UDP memory pressure",
            "Since memory pressure/exhaustion are unstable system states, adjust UDP memory-related tunables"
        ),
        MemExhaustion = (
            "approaching UDP memory exhaustion",
            "Since memory exhaustion is a highly unstable state, adjust UDP memory-related tunables to avoid exhaustion"
        ),
    }
}

// The ids the BPF side sends are its C enums' (anchored in the object's
// BTF): the build fails if the two ever differ.
bpftune_sdk::same_ids!(crate::skel::types::udp_buffer_tunable => Tunable {
    UDP_BUFFER_UDP_MEM = UdpMem,
    UDP_BUFFER_RMEM_MAX = RmemMax,
    UDP_BUFFER_RMEM_DEFAULT = RmemDefault,
});
bpftune_sdk::same_ids!(crate::skel::types::udp_buffer_scenario => Scenario {
    UDP_BUFFER_INCREASE = Increase,
    UDP_BUFFER_DECREASE = Decrease,
    UDP_MEM_PRESSURE = MemPressure,
    UDP_MEM_EXHAUSTION = MemExhaustion,
});

/// Labels of the three values of udp_mem.
pub const MEM_LABELS: &str = "min pressure max";
/// Why rmem_max / rmem_default grow.
pub const WHY_INCREASE: &str = "need to increase receive buffer size to maximize throughput";

/// `Due to <why> change <name> from <old> -> <new>` (single-value form).
pub fn reason_single(why: &str, name: &str, old: i64, new: i64) -> String {
    format!("Due to {why} change {name} from {old} -> {new}")
}

/// The NOTICE logged before an rmem change: the namespace's UDP receive
/// counters and the drop rate in per mille.
pub fn drops_notice(cookie: u64, datagrams: u64, drops: u64, rate_per_mille: u64) -> String {
    format!("netns: {cookie} UDP in {datagrams}, drops {drops} drop rate {rate_per_mille}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_sdk::abi::TunableFlags;

    #[test]
    fn names_and_flags_match_the_reference() {
        // The C ids are checked at compile time (same_ids! above).
        assert_eq!(Tunable::RmemMax.name(), "net.core.rmem_max");
        for t in Tunable::ALL {
            assert!(!Tunable::TABLE[*t as usize].flags.contains(TunableFlags::NAMESPACED));
        }
    }

    #[test]
    fn reason_formats() {
        assert_eq!(
            reason_single(WHY_INCREASE, "net.core.rmem_max", 16384, 20480),
            "Due to need to increase receive buffer size to maximize throughput change net.core.rmem_max from 16384 -> 20480"
        );
        assert_eq!(drops_notice(1, 1000, 25, 25), "netns: 1 UDP in 1000, drops 25 drop rate 25");
    }
}
