//! The net_buffer tuner's tunable and scenario tables, its bounds, and the
//! reason-line texts it logs (interface facts kept exactly as the
//! original's, except where the original's text was wrong).
//!
//! Ids are the enum discriminants; `net_buffer.bpf.c` names the same
//! numbers in enums anchored in its BTF, checked against these tables when
//! the tuner is compiled (`same_ids!` below).

bpftune_sdk::tunables! {
    pub enum Tunable {
        // All five are system-wide: written in the initial namespace only.
        NetdevMaxBacklog = ("net.core.netdev_max_backlog", Sysctl, NONE, 1),
        // A hex cpumask (comma-separated 32-bit groups), so it is handled
        // as text; absent without CONFIG_NET_FLOW_LIMIT.
        FlowLimitCpuBitmap = ("net.core.flow_limit_cpu_bitmap", Sysctl, STRING | OPTIONAL, 1),
        NetdevBudget = ("net.core.netdev_budget", Sysctl, NONE, 1),
        NetdevBudgetUsecs = ("net.core.netdev_budget_usecs", Sysctl, NONE, 1),
        // Also declared by tcp_buffer.
        HighOrderAllocDisable = ("net.core.high_order_alloc_disable", Sysctl, OPTIONAL, 1),
    }
}

bpftune_sdk::scenarios! {
    pub enum Scenario {
        MaxBacklogIncrease = (
            "need to increase max backlog size",
            "Need to increase backlog size to prevent drops for faster connection"
        ),
        FlowLimitSet = (
            "need to set per-cpu bitmap value",
            "Need to set flow limit per-cpu to prioritize small flows"
        ),
        BudgetIncrease = (
            "need to increase # of packets processed per NAPI poll",
            "Need to increase number of packets processed across network devices during NAPI poll to use all of net.core.netdev_budget_usecs"
        ),
        BudgetDecrease = (
            "need to decrease # of packets processed per NAPI poll",
            "Need to decrease netdev_budget[_usecs] since the ratio of time spent waiting to run versus time spent running for tasks has increased as we have increased netdev budget.  This indicates either our budget increases directly let to increased wait times for other tasks, or that general load has increased; either way spending too much time in NAPI processing will hurt system performance."
        ),
        HighOrderAllocEnable = (
            "need to enable high-order allocation for skb page frags",
            "On pre-5.14 kernels setting net.core.high_order_alloc_disable=1 reduced contention, but disabling high-order allocations lowers performance with little benefit now that frags are allocated on a pre-cpu basis and contention is minimized."
        ),
    }
}

// The ids the BPF side uses are its C enums' (anchored in the object's
// BTF): the build fails if the two ever differ.
bpftune_sdk::same_ids!(crate::skel::types::net_buffer_tunable => Tunable {
    NETDEV_MAX_BACKLOG = NetdevMaxBacklog,
    FLOW_LIMIT_CPU_BITMAP = FlowLimitCpuBitmap,
    NETDEV_BUDGET = NetdevBudget,
    NETDEV_BUDGET_USECS = NetdevBudgetUsecs,
    HIGH_ORDER_ALLOC_DISABLE = HighOrderAllocDisable,
});
bpftune_sdk::same_ids!(crate::skel::types::net_buffer_scenario => Scenario {
    NETDEV_MAX_BACKLOG_INCREASE = MaxBacklogIncrease,
    FLOW_LIMIT_CPU_SET = FlowLimitSet,
});

/// Ceiling for `netdev_max_backlog` (packets per CPU). The original had
/// none. The backlog is a per-CPU queue of whole skbs: at 65536 packets of
/// ~2 KiB truesize one CPU can hold ~128 MiB, and at 1-2 Mpps of backlog
/// processing per CPU the queue alone adds 30-60 ms of latency. Drops
/// beyond that mean the CPU cannot keep up (spread the load with RPS/RFS),
/// not that the queue is too short.
pub const NETDEV_MAX_BACKLOG_MAX: i64 = 65536;

/// `netdev_budget_usecs` is never raised beyond this (the original's
/// `NETDEV_BUDGET_USECS_MAX`): 50 ms of softirq at a time is excessive.
pub const NETDEV_BUDGET_USECS_MAX: i64 = 50000;

/// Ceiling for `netdev_budget` (packets per NET_RX softirq run); the
/// original only stopped at INT_MAX. The usecs limit normally stops
/// growth long before this: from the defaults (300 packets, 8000 us) nine
/// 25 % steps reach 50000 us at about 2200 packets.
pub const NETDEV_BUDGET_MAX: i64 = 16384;

/// The kernel version from which high-order allocations are re-enabled.
pub const HIGH_ORDER_ALLOC_MIN_KERNEL: (u32, u32, u32) = (5, 14, 0);

/// `Due to excessive drops, change <name> from (<old>) -> (<new>)`.
pub fn reason_backlog(name: &str, old: i64, new: i64) -> String {
    format!("Due to excessive drops, change {name} from ({old}) -> ({new})")
}

/// `To prioritize small flows, change <name> from (<old>) -> (<new>)`,
/// with the masks as the kernel shows them (hex).
pub fn reason_flow_limit(name: &str, old: &str, new: &str) -> String {
    format!("To prioritize small flows, change {name} from ({old}) -> ({new})")
}

/// The reason for a budget increase (as the original's).
pub fn reason_budget_increase(name: &str, old: i64, new: i64) -> String {
    format!("To maximize # packets processed per NAPI cycle, change {name} from ({old}) -> ({new})")
}

/// The reason for the usecs change that follows a budget increase (the
/// original names the tunable without its `net.core.` prefix here).
pub fn reason_budget_usecs_increase(old: i64, new: i64) -> String {
    format!("To maximize # packets processed per NAPI cycle, change netdev_budget_usecs from ({old}) -> ({new})")
}

/// The reason for a budget decrease (the original logged the increase's
/// "To maximize ..." text here too).
pub fn reason_budget_decrease(name: &str, old: i64, new: i64) -> String {
    format!(
        "To reduce time spent in NAPI processing as tasks wait longer to run, change {name} from ({old}) -> ({new})"
    )
}

/// The reason for the usecs change that follows a budget decrease.
pub fn reason_budget_usecs_decrease(old: i64, new: i64) -> String {
    format!(
        "To reduce time spent in NAPI processing as tasks wait longer to run, change netdev_budget_usecs from ({old}) -> ({new})"
    )
}

/// The reason for re-enabling high-order allocations (as the original's).
pub const REASON_HIGH_ORDER: &str = "To maximize performance, set net.core.high_order_alloc_disable=0 on more recent kernel since it is not needed as contention in high-order allocs is not present";

/// NOTICE when the usecs limit stops budget growth (as the original's).
pub fn notice_usecs_limit(usecs: i64) -> String {
    format!(
        "netdev_budget_usecs approached {usecs} usec, increasing beyond {NETDEV_BUDGET_USECS_MAX} usec is excessive, so ignoring."
    )
}

/// NOTICE when the budget ceiling stops budget growth.
pub fn notice_budget_limit(budget: i64) -> String {
    format!(
        "netdev_budget approached {budget} packets, increasing beyond {NETDEV_BUDGET_MAX} packets is excessive, so ignoring."
    )
}

/// NOTICE when the backlog ceiling stops backlog growth.
pub fn notice_backlog_limit(backlog: i64) -> String {
    format!(
        "netdev_max_backlog reached {backlog} packets, increasing beyond {NETDEV_MAX_BACKLOG_MAX} packets is excessive, so ignoring; consider spreading receive processing over more CPUs (RPS/RFS)."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_sdk::abi::TunableFlags;

    #[test]
    fn ids_flags_and_names_match_the_reference() {
        // The ids BPF uses are checked at compile time (same_ids! above);
        // these the BPF side never sends.
        assert_eq!(Scenario::BudgetIncrease as u32, 2);
        assert_eq!(Scenario::BudgetDecrease as u32, 3);
        assert_eq!(Scenario::HighOrderAllocEnable as u32, 4);
        for t in Tunable::ALL {
            let d = &Tunable::TABLE[*t as usize];
            assert!(!d.flags.contains(TunableFlags::NAMESPACED), "{} is global", t.name());
            assert_eq!(d.num_values, 1);
        }
        assert!(Tunable::TABLE[1].flags.contains(TunableFlags::STRING));
        assert_eq!(Tunable::NetdevBudgetUsecs.name(), "net.core.netdev_budget_usecs");
    }

    #[test]
    fn scenario_texts_are_the_originals() {
        assert_eq!(Scenario::BudgetIncrease.name(), "need to increase # of packets processed per NAPI poll");
        let d = Scenario::TABLE[Scenario::BudgetDecrease as usize].description.as_str();
        assert!(d.contains("netdev budget.  This indicates"), "two spaces after 'budget.'");
    }

    #[test]
    fn reason_formats() {
        assert_eq!(
            reason_backlog("net.core.netdev_max_backlog", 8, 10),
            "Due to excessive drops, change net.core.netdev_max_backlog from (8) -> (10)"
        );
        assert_eq!(
            reason_flow_limit("net.core.flow_limit_cpu_bitmap", "0", "2"),
            "To prioritize small flows, change net.core.flow_limit_cpu_bitmap from (0) -> (2)"
        );
        assert_eq!(
            reason_budget_increase("net.core.netdev_budget", 5, 6),
            "To maximize # packets processed per NAPI cycle, change net.core.netdev_budget from (5) -> (6)"
        );
        assert_eq!(
            reason_budget_usecs_increase(2000, 2500),
            "To maximize # packets processed per NAPI cycle, change netdev_budget_usecs from (2000) -> (2500)"
        );
        let dec = reason_budget_decrease("net.core.netdev_budget", 6, 5);
        assert!(!dec.contains("maximize") && dec.ends_with("change net.core.netdev_budget from (6) -> (5)"));
        assert!(!reason_budget_usecs_decrease(2500, 2000).contains("maximize"));
        assert_eq!(
            notice_usecs_limit(62500),
            "netdev_budget_usecs approached 62500 usec, increasing beyond 50000 usec is excessive, so ignoring."
        );
    }
}
