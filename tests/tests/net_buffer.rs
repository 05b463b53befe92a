//! Root integration tests of the net_buffer tuner: the real daemon with the
//! real BPF program and real TCP traffic over a veth link between two
//! namespaces made here, with GSO/TSO/GRO off on both ends (with GSO a veth
//! passes 64 KB skbs and the per-CPU backlog never overflows; with GRO off
//! veth delivers through that backlog). A tiny netdev_max_backlog must be
//! raised and flow limits enabled for the dropping CPU; a tiny
//! netdev_budget must be raised with netdev_budget_usecs after time
//! squeezes; high_order_alloc_disable=1 must be set back to 0 on this
//! (>= 5.14) kernel. These sysctls are system-wide: each test saves every
//! one the tuner may touch with a guard, restored on drop even on failure
//! (after the daemon, declared later, has stopped). Traffic is bounded in
//! time and size.
//!
//! Kernels differ: without CONFIG_NET_FLOW_LIMIT there is no
//! flow_limit_cpu_bitmap, and the tuner must still grow the backlog and say
//! once that flow limits are off; without the CPU_BACKLOG drop reason it
//! counts drops from softnet_stat. Both degraded paths are also run on a
//! kernel that has the features, by telling the tuner to treat them as
//! missing (BPFTUNE_PRETEND_MISSING).

use std::time::{Duration, Instant};

use bpftune_tests::{
    Daemon, Netns, PluginDir, SysctlGuard, Veth, bulk_transfer, sysctl_exists, sysctl_read, test_lock,
};

const MAX_BACKLOG: &str = "net.core.netdev_max_backlog";
const FLOW_LIMIT: &str = "net.core.flow_limit_cpu_bitmap";
const BUDGET: &str = "net.core.netdev_budget";
const BUDGET_USECS: &str = "net.core.netdev_budget_usecs";
const HIGH_ORDER: &str = "net.core.high_order_alloc_disable";
/// The tuner's ceilings (tables::NETDEV_MAX_BACKLOG_MAX, NETDEV_BUDGET_MAX,
/// NETDEV_BUDGET_USECS_MAX).
const BACKLOG_CAP: i64 = 65536;
const BUDGET_CAP: i64 = 16384;
const USECS_CAP: i64 = 50000;

/// The line logged once when the kernel has no flow limits.
const FLOW_LIMIT_OFF: &str = "net_buffer: flow_limit_cpu_bitmap off: not in this kernel (CONFIG_NET_FLOW_LIMIT); backlog and budget tuning active";
/// The line logged once when backlog drops are counted on the timer.
const DROPS_BY_TIMER: &str = "net_buffer: backlog drops fallback: no CPU_BACKLOG drop reason";

/// Every global sysctl the tuner may change (and this kernel has), saved
/// for the whole test.
fn guard_all() -> Vec<SysctlGuard> {
    [MAX_BACKLOG, FLOW_LIMIT, BUDGET, BUDGET_USECS, HIGH_ORDER]
        .into_iter()
        .filter_map(SysctlGuard::try_global)
        .collect()
}

fn start_daemon() -> (PluginDir, Daemon) {
    start_daemon_with_env(&[])
}

fn start_daemon_with_env(env: &[(&str, &str)]) -> (PluginDir, Daemon) {
    let plugins = PluginDir::with(&["sysctl", "net_buffer"]);
    let daemon = Daemon::start_tuner_with_env(&plugins, &[], env, "net_buffer");
    (plugins, daemon)
}

fn int(name: &str) -> i64 {
    sysctl_read(None, name).parse().unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Two namespaces joined by a veth with all offloads off on both ends.
fn link() -> (Netns, Netns, Veth) {
    let tx = Netns::new("nbtx");
    let rx = Netns::new("nbrx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    for (ns, ifname) in [(&tx, &veth.a_if), (&rx, &veth.b_if)] {
        ns.exec(&["ethtool", "-K", ifname, "gso", "off", "tso", "off", "gro", "off"]);
    }
    (tx, rx, veth)
}

/// Bulk TCP transfers from `tx` to `rx` in 3 s rounds until `done()` or
/// `limit` passes; returns the bytes received.
fn traffic(tx: &Netns, rx: &Netns, veth: &Veth, limit: Duration, done: &dyn Fn() -> bool) -> u64 {
    let deadline = Instant::now() + limit;
    let mut total = 0;
    while Instant::now() < deadline && !done() {
        total += bulk_transfer(Some(tx), Some(rx), veth.b_addr, 1 << 30, None, Duration::from_secs(3));
    }
    total
}

#[test]
fn backlog_drops_grow_max_backlog_and_set_flow_limit() {
    bpftune_tests::require_root!();
    backlog_drops(&[]);
}

/// The same on the paths older kernels take: drops counted from
/// softnet_stat on the timer, and no flow limits.
#[test]
fn backlog_drops_without_drop_reason_or_flow_limit() {
    bpftune_tests::require_root!();
    backlog_drops(&[("BPFTUNE_PRETEND_MISSING", &format!("SKB_DROP_REASON_CPU_BACKLOG,{FLOW_LIMIT}"))]);
}

/// Whether kernel BTF names the CPU_BACKLOG drop reason (5.19+); without
/// it the tuner counts drops on its timer.
fn kernel_has_backlog_drop_reason() -> bool {
    std::fs::read("/sys/kernel/btf/vmlinux")
        .is_ok_and(|btf| btf.windows(27).any(|w| w == b"SKB_DROP_REASON_CPU_BACKLOG"))
}

fn backlog_drops(env: &[(&str, &str)]) {
    let _l = test_lock();
    let _g = guard_all();
    let pretend = env.iter().find(|(k, _)| *k == "BPFTUNE_PRETEND_MISSING").map_or("", |(_, v)| *v);
    let flow_limit = sysctl_exists(FLOW_LIMIT) && !pretend.contains(FLOW_LIMIT);
    // Set before the daemon starts (a write while it runs is an override).
    let _b = SysctlGuard::set(MAX_BACKLOG, "8");
    let _f = flow_limit.then(|| SysctlGuard::set(FLOW_LIMIT, "0"));
    let (tx, rx, veth) = link();
    let (_p, daemon) = start_daemon_with_env(env);

    let want_backlog = format!("Due to excessive drops, change {MAX_BACKLOG} from (8) -> (10)");
    let want_flow = format!("To prioritize small flows, change {FLOW_LIMIT} from (0) -> (");
    let done = || {
        let log = daemon.log();
        log.contains(&want_backlog) && (!flow_limit || log.contains(&want_flow))
    };
    let bytes = traffic(&tx, &rx, &veth, Duration::from_secs(30), &done);
    assert!(bytes > 0, "no traffic");
    let log = daemon.log();
    assert!(log.contains(&want_backlog), "{log}");
    assert!(
        log.contains(&format!(
            "Scenario 'need to increase max backlog size' occurred for tunable '{MAX_BACKLOG}' in global ns. \
             Need to increase backlog size to prevent drops for faster connection"
        )),
        "{log}"
    );
    let backlog = int(MAX_BACKLOG);
    assert!(backlog > 8 && backlog <= BACKLOG_CAP, "netdev_max_backlog {backlog}\n{log}");
    let by_timer = pretend.contains("SKB_DROP_REASON") || !kernel_has_backlog_drop_reason();
    assert_eq!(log.matches(DROPS_BY_TIMER).count(), usize::from(by_timer), "{log}");

    if flow_limit {
        // The flow-limit mask is hex, and only CPUs of this machine are in it.
        assert!(log.contains(&want_flow), "{log}");
        assert!(
            log.contains(&format!("Scenario 'need to set per-cpu bitmap value' occurred for tunable '{FLOW_LIMIT}'")),
            "{log}"
        );
        let mask_text = sysctl_read(None, FLOW_LIMIT);
        let mask = u128::from_str_radix(&mask_text.replace(',', ""), 16).unwrap_or_else(|e| panic!("{mask_text}: {e}"));
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as u32;
        assert!(mask != 0, "flow limit mask still 0\n{log}");
        assert!(mask >> cpus.min(127) == 0, "mask {mask_text} names CPUs beyond {cpus}\n{log}");
        let line = log.lines().find(|l| l.contains(&want_flow)).expect("flow line");
        assert!(line.ends_with(&format!("-> ({mask_text})")) || mask.count_ones() > 1, "{line} vs {mask_text}");
        assert!(!log.contains(FLOW_LIMIT_OFF), "{log}");
    } else {
        // Degraded: said once at load, never tried (the daemon runs with -d,
        // which would show a failed read on every tick).
        assert_eq!(log.matches(FLOW_LIMIT_OFF).count(), 1, "{log}");
        assert!(!log.contains(&format!("{FLOW_LIMIT} off")), "said twice: {log}");
        assert!(!log.contains(&format!("could not read sysctl '{FLOW_LIMIT}'")), "{log}");
        assert!(!log.contains("To prioritize small flows"), "{log}");
    }

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("# Summary: scenario 'need to increase max backlog size' occurred"), "{log}");
    assert!(log.contains(&format!("# sysctl '{MAX_BACKLOG}' changed from (8) -> (")), "{log}");
}

/// The smallest netdev_budget_usecs the kernel accepts: recent kernels
/// refuse less than two jiffies. Probed under the test lock and the guard
/// the caller holds.
fn smallest_budget_usecs() -> i64 {
    let try_set = |v: i64| {
        std::process::Command::new("sysctl")
            .args(["-q", "-w", &format!("{BUDGET_USECS}={v}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // 2000 (the original's value), then 2 jiffies at HZ 1000, 300, 250, 100.
    [2000, 4000, 6667, 8000, 20000].into_iter().find(|v| try_set(*v)).unwrap_or_else(|| int(BUDGET_USECS))
}

#[test]
fn time_squeeze_grows_budget_and_usecs() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let _g = guard_all();
    let _b = SysctlGuard::set(BUDGET, "5");
    // The original's test used 2000; this kernel refuses anything below two
    // jiffies (8000 us at HZ=250), so take the smallest value it accepts.
    let min_usecs = smallest_budget_usecs();
    let _u = SysctlGuard::set(BUDGET_USECS, &min_usecs.to_string());
    let (tx, rx, veth) = link();
    let (_p, daemon) = start_daemon();

    let want_budget = format!("To maximize # packets processed per NAPI cycle, change {BUDGET} from (5) -> (6)");
    let want_usecs = format!(
        "To maximize # packets processed per NAPI cycle, change netdev_budget_usecs from ({min_usecs}) -> ({})",
        min_usecs + min_usecs / 4
    );
    let done = || {
        let log = daemon.log();
        log.contains(&want_budget) && log.contains(&want_usecs)
    };
    let bytes = traffic(&tx, &rx, &veth, Duration::from_secs(30), &done);
    assert!(bytes > 0, "no traffic");
    let log = daemon.log();
    assert!(log.contains(&want_budget), "{log}");
    assert!(log.contains(&want_usecs), "{log}");
    assert!(
        log.contains(&format!(
            "Scenario 'need to increase # of packets processed per NAPI poll' occurred for tunable '{BUDGET_USECS}' in global ns"
        )),
        "{log}"
    );
    let (budget, usecs) = (int(BUDGET), int(BUDGET_USECS));
    assert!(budget > 5 && budget <= BUDGET_CAP, "netdev_budget {budget}\n{log}");
    assert!(usecs > min_usecs && usecs <= USECS_CAP, "netdev_budget_usecs {usecs}\n{log}");
    // Far too few samples for the decrease rule in a short test.
    assert!(!log.contains("need to decrease # of packets processed per NAPI poll' occurred"), "{log}");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains(&format!("# sysctl '{BUDGET}' changed from (5) -> (")), "{log}");
}

#[test]
fn high_order_alloc_is_reenabled_on_this_kernel() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let _g = guard_all();
    let _h = SysctlGuard::set(HIGH_ORDER, "1");
    let (_p, daemon) = start_daemon();

    let want = "To maximize performance, set net.core.high_order_alloc_disable=0 on more recent kernel since it is not needed as contention in high-order allocs is not present";
    if bpftune_tests::kernel_version() < (5, 14) {
        // Before 5.14 disabling them still reduced contention: left alone.
        std::thread::sleep(Duration::from_secs(3));
        assert!(!daemon.log().contains(want), "{}", daemon.log());
        assert_eq!(int(HIGH_ORDER), 1);
        let (status, log) = daemon.stop();
        assert!(status.success(), "{log}");
        return;
    }
    assert!(daemon.wait_for_log(want, Duration::from_secs(10)), "{}", daemon.log());
    assert!(
        daemon.log().contains(&format!(
            "Scenario 'need to enable high-order allocation for skb page frags' occurred for tunable '{HIGH_ORDER}' in global ns"
        )),
        "{}",
        daemon.log()
    );
    assert_eq!(int(HIGH_ORDER), 0);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}
