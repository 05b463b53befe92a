//! The tcp_buffer tuner's tunable and scenario tables, and the reason-line
//! formats it logs (interface facts kept exactly as the original's).
//!
//! Ids are the enum discriminants; the BPF side (`tcp_buffer.bpf.c`) names
//! the few it sends in enums anchored in its BTF, checked against these
//! tables when the tuner is compiled (`same_ids!` below).

bpftune_sdk::tunables! {
    pub enum Tunable {
        TcpWmem = ("net.ipv4.tcp_wmem", Sysctl, NAMESPACED, 3),
        TcpRmem = ("net.ipv4.tcp_rmem", Sysctl, NAMESPACED, 3),
        TcpMem = ("net.ipv4.tcp_mem", Sysctl, NONE, 3),
        TcpModerateRcvbuf = ("net.ipv4.tcp_moderate_rcvbuf", Sysctl, NAMESPACED, 1),
        TcpNoMetricsSave = ("net.ipv4.tcp_no_metrics_save", Sysctl, NAMESPACED, 1),
        TcpNoSsthreshMetricsSave = ("net.ipv4.tcp_no_ssthresh_metrics_save", Sysctl, NAMESPACED | OPTIONAL, 1),
        // Global only (absent inside other namespaces on current kernels),
        // although the original declared it namespaced.
        HighOrderAllocDisable = ("net.core.high_order_alloc_disable", Sysctl, OPTIONAL, 1),
        // The original OR-ed OPTIONAL into the kind field (so it was never
        // read); here kind and flags are distinct types.
        TcpSyncookies = ("net.ipv4.tcp_syncookies", Sysctl, NAMESPACED | OPTIONAL, 1),
        TcpMaxSynBacklog = ("net.ipv4.tcp_max_syn_backlog", Sysctl, NAMESPACED, 1),
        TcpMaxOrphans = ("net.ipv4.tcp_max_orphans", Sysctl, NONE, 1),
    }
}

bpftune_sdk::scenarios! {
    pub enum Scenario {
        Increase = (
            "need to increase TCP buffer size(s)",
            "Need to increase buffer size(s) to maximize throughput"
        ),
        Decrease = (
            "need to decrease TCP buffer size(s)",
            "Need to decrease buffer size(s) to reduce memory utilization"
        ),
        DecreaseLatency = (
            "need to decrease TCP buffer size due to latency",
            "Latency is starting to correlate with buffer size increases, so decrease buffer size to avoid this effect"
        ),
        MemPressure = (
            "approaching TCP memory pressure",
            "Since memory pressure/exhaustion are unstable system states, adjust tcp memory-related tunables"
        ),
        MemExhaustion = (
            "approaching TCP memory exhaustion",
            "Since memory exhaustion is a highly unstable state, adjust TCP memory-related tunables to avoid exhaustion"
        ),
        MatchRcvbuf = (
            "match receive buffer size with throughput needs",
            "Since we are tuning rcvbuf max size, ensure auto-tuning of rcvbuf size for the connection is enabled to pick optimal rcvbuf size"
        ),
        LowmemSet = (
            "set tunable on entering low-memory state",
            "In low-memory situations, avoid activities like skb high order allocations, per-path TCP metric collection which can lead to overheads"
        ),
        LowmemUnset = (
            "unset tunable set earlier in low-memory state",
            "Due to easing of memory strain, unset tunables to allow skb high order allocations, (re)-enable TCP metrics collection etc"
        ),
        SynBacklogIncrease = (
            "increase maximum syn backlog under load since syncookies are disabled",
            "Due to the fact that syncookies are disabled and we are seeing a large number of legitimate-seeming TCP connections, increase TCP maximum SYN backlog queue length"
        ),
        SynBacklogDecrease = (
            "decrease maximum syn backlog due to large numbers of uncompleted connections",
            "A large number of connection requests (SYNs) uncorrelated with connection establishment suggest a more cautious approach to handling pending connections to avoid Denial of Service attacks"
        ),
        SyncookiesEnable = (
            "enable syncookies as furthern SYN backlog increases do not help",
            "SYN flood conditions have been detected, but further increases to SYN backlog are not advisable; try using syncookies instead"
        ),
        SyncookiesDisable = (
            "disable syncookies as they are ineffective",
            "TCP syncookies are not effective; none have been validated successfully"
        ),
        OrphansIncrease = ("increase max number of orphaned sockets", ""),
    }
}

// The ids the BPF side sends are its C enums' (anchored in the object's
// BTF): the build fails if the two ever differ.
bpftune_sdk::same_ids!(crate::skel::types::tcp_buffer_tunable => Tunable {
    TCP_BUFFER_WMEM = TcpWmem,
    TCP_BUFFER_RMEM = TcpRmem,
    TCP_BUFFER_MEM = TcpMem,
    TCP_BUFFER_MAX_SYN_BACKLOG = TcpMaxSynBacklog,
});
bpftune_sdk::same_ids!(crate::skel::types::tcp_buffer_scenario => Scenario {
    TCP_BUFFER_INCREASE = Increase,
    TCP_MEM_PRESSURE = MemPressure,
    TCP_MEM_EXHAUSTION = MemExhaustion,
    TCP_MAX_SYN_BACKLOG_INCREASE = SynBacklogIncrease,
});

/// Labels of the three values of tcp_rmem / tcp_wmem.
pub const BUFFER_LABELS: &str = "min default max";
/// Labels of the three values of tcp_mem.
pub const MEM_LABELS: &str = "min pressure max";
/// Why a buffer maximum grows.
pub const WHY_INCREASE: &str = "need to increase max buffer size to maximize throughput";
/// Why a buffer maximum shrinks when latency follows it.
pub const WHY_LATENCY: &str = "correlation between buffer size increase and latency";

/// Reason logged when `tcp_moderate_rcvbuf` is switched on.
pub fn reason_moderate_rcvbuf(name: &str) -> String {
    format!(
        "Because we are changing rcvbuf parameters, set '{name}' to auto-tune receive buffer size to match the size required by the path for full throughput."
    )
}

/// Reason logged when a low-memory toggle is set.
pub fn reason_lowmem_set(name: &str) -> String {
    format!("Due to low memory conditions, set '{name}'")
}

/// Reason logged when a low-memory toggle is undone.
pub fn reason_lowmem_unset(name: &str) -> String {
    format!("Due to leaving low memory conditions, set '{name}'")
}

/// Reason logged when the SYN backlog grows.
pub fn reason_syn_increase(name: &str) -> String {
    format!(
        "Due to SYN flood events on a system with TCP syncookies disabled and no low memory issues, increase '{name}'"
    )
}

/// Reason logged when the SYN backlog shrinks.
pub fn reason_syn_decrease(name: &str, old: i64, new: i64) -> String {
    format!(
        "Due to SYN flood not correlated with TCP connection acceptance - suggesting an attack - reduce '{name}' from {old} -> {new}"
    )
}

/// Reason logged when syncookies are enabled.
pub fn reason_syncookies_enable(name: &str) -> String {
    format!("Due to low memory conditions under SYN flood, enable '{name}' rather than increasing max SYN backlog")
}

/// Reason logged when syncookies are disabled.
pub fn reason_syncookies_disable(failed: u64, name: &str) -> String {
    format!(
        "Due to receiving {failed} invalid syncookies and no valid ones, disable '{name}' as they are ineffective under current network conditions"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_sdk::abi::{TunableFlags, TunableKind};

    #[test]
    fn table_sizes_match_the_reference() {
        // The ids BPF sends are checked at compile time (same_ids! above).
        assert_eq!(Scenario::ALL.len(), 13);
        assert_eq!(Tunable::ALL.len(), 10);
    }

    #[test]
    fn syncookies_is_an_optional_namespaced_sysctl() {
        let d = Tunable::TABLE[Tunable::TcpSyncookies as usize];
        assert_eq!(d.kind, TunableKind::Sysctl);
        assert!(d.flags.contains(TunableFlags::NAMESPACED));
        assert!(d.flags.contains(TunableFlags::OPTIONAL));
        assert!(!Tunable::TABLE[Tunable::TcpMem as usize].flags.contains(TunableFlags::NAMESPACED));
    }

    #[test]
    fn reason_formats() {
        assert_eq!(
            reason_syn_decrease("net.ipv4.tcp_max_syn_backlog", 512, 384),
            "Due to SYN flood not correlated with TCP connection acceptance - suggesting an attack - reduce 'net.ipv4.tcp_max_syn_backlog' from 512 -> 384"
        );
        assert_eq!(reason_lowmem_set("x"), "Due to low memory conditions, set 'x'");
    }
}
