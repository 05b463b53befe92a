//! Root integration tests of `bpftune -S` with every built tuner: one line
//! per tuner saying it works fully or which part is off or works another
//! way and why, a level that agrees with those lines, and the same report
//! for an older kernel's missing helpers (told to the tuners with
//! BPFTUNE_PRETEND_MISSING, so it runs on any kernel).

use std::path::Path;

use bpftune_tests::{PluginDir, support_report, sysctl_exists, test_lock};

/// Every tuner crate under tuners/.
fn all_tuners() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuners");
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).expect("tuners dir").filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    names.sort();
    names
}

#[test]
fn every_tuner_is_reported_and_the_level_agrees() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let tuners = all_tuners();
    let names: Vec<&str> = tuners.iter().map(String::as_str).collect();
    let plugins = PluginDir::with(&names);
    let (code, err) = support_report(&plugins, &[]);
    assert_eq!(code, 0, "{err}");
    for t in &tuners {
        assert!(err.lines().any(|l| l.starts_with(&format!("bpftune: {t}: "))), "no line for {t}\n{err}");
    }
    assert!(!err.contains(": cannot load:"), "a tuner failed to load\n{err}");
    let partial = err.contains(" fallback: ");
    if partial {
        assert!(err.contains("bpftune: bpftune works in legacy mode"), "{err}");
    } else {
        assert!(err.contains("bpftune: bpftune works fully"), "{err}");
    }
    // From 6.16 (tcp_rcvbuf_grow, the last hook added) the kernel has every
    // helper and hook the tuners use; before, tcp_buffer's receive side
    // falls back to a windowed tcp_rcv_space_adjust.
    if bpftune_tests::kernel_version() >= (6, 16) {
        assert!(!partial, "{err}");
    }
    let flow_off = "bpftune: net_buffer: flow_limit_cpu_bitmap off: not in this kernel (CONFIG_NET_FLOW_LIMIT); \
                    backlog and budget tuning active";
    assert_eq!(err.contains(flow_off), !sysctl_exists("net.core.flow_limit_cpu_bitmap"), "{err}");
}

#[test]
fn missing_helpers_are_named_and_lower_the_level() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let plugins = PluginDir::with(&["sysctl", "tcp_conn", "net_buffer"]);
    let missing = "bpf_get_current_pid_tgid,bpf_get_current_task_btf,bpf_get_netns_cookie,SKB_DROP_REASON_CPU_BACKLOG";
    let (code, err) = support_report(&plugins, &[("BPFTUNE_PRETEND_MISSING", missing)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("bpftune: bpftune works in legacy mode"), "{err}");
    for want in [
        "bpftune: sysctl: writer's pid fallback: cgroup/sysctl programs cannot call bpf_get_current_pid_tgid",
        "bpftune: sysctl: writer's namespace fallback: cgroup/sysctl programs cannot call bpf_get_current_task_btf",
        "bpftune: tcp_conn: per-namespace learning fallback: sockops programs cannot call bpf_get_netns_cookie",
        "bpftune: net_buffer: backlog drops fallback: no CPU_BACKLOG drop reason",
    ] {
        assert!(err.contains(want), "missing '{want}'\n{err}");
    }
    assert!(!err.contains(": cannot load:"), "{err}");
}
