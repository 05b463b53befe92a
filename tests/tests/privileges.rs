//! Root integration test of least privilege: once the daemon has loaded its
//! tuners it keeps only the documented capabilities permitted (CAP_BPF,
//! CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE, of those this
//! kernel knows), none effective while idle, and the same bounding set; a
//! tuner hot-plugged after the drop (BPF tracepoints, a cgroup sockops
//! program) still loads. The other integration tests show every tuner
//! working under these sets.

use std::time::Duration;

use bpftune_tests::{Daemon, PluginDir, test_lock};

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// A `Cap*:` mask from /proc/<pid>/status.
fn cap_mask(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    u64::from_str_radix(line.split_whitespace().nth(1).expect("mask"), 16).expect("hex")
}

/// The highest capability this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").expect("cap_last_cap").trim().parse().expect("int")
}

#[test]
fn after_start_only_the_runtime_capabilities_remain_and_none_is_effective() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let plugins = PluginDir::with(&["sysctl", "tcp_buffer"]);
    let daemon = Daemon::start_tuner(&plugins, &[], "tcp_buffer");
    let pid = daemon.pid();

    let want = [CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF]
        .into_iter()
        .filter(|c| *c <= last_cap())
        .fold(0u64, |m, c| m | (1 << c));
    // Idle: nothing effective (a step raises what it needs, then drops it).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cap_mask(pid, "CapEff:"), 0, "{}", daemon.log());
    assert_eq!(cap_mask(pid, "CapPrm:"), want, "{}", daemon.log());
    assert_eq!(cap_mask(pid, "CapBnd:"), want, "{}", daemon.log());
    assert_eq!(cap_mask(pid, "CapInh:") | cap_mask(pid, "CapAmb:"), 0);
    assert!(daemon.log().contains("dropped capabilities: permitted "), "{}", daemon.log());

    // Hot-plug after the drop: tracepoints and a cgroup sockops program.
    for name in ["neigh_table", "tcp_conn"] {
        let so = plugins.add(name);
        assert!(
            daemon.wait_for_log(&format!("added lib {}, init succeeded", so.display()), Duration::from_secs(20)),
            "{name}\n{}",
            daemon.log()
        );
    }
    assert_eq!(cap_mask(pid, "CapEff:"), 0, "{}", daemon.log());
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    // Teardown still had what it needed: the private cgroup2 mount is gone.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.lines().any(|l| l.contains("/bpftune/cgroupv2 ")), "cgroup2 mount left behind\n{log}");
    assert!(!log.contains("could not unmount"), "{log}");
}

/// Under a bounding set that is already the runtime set (the systemd unit's
/// CapabilityBoundingSet, which lacks CAP_SETPCAP) the drop still happens.
#[test]
fn the_drop_works_under_the_units_bounding_set() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let plugins = PluginDir::with(&["sysctl"]);
    let dir = plugins.path.to_str().expect("utf8").to_string();
    let log_path = plugins.path.join("setpriv.log");
    let log = std::fs::File::create(&log_path).expect("log");
    // As the unit's LimitMEMLOCK=infinity: without CAP_SYS_RESOURCE the
    // daemon cannot raise it, and kernels before 5.11 charge BPF to it.
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid struct; inherited by the child only
    // as the unit's limit would be.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    let mut child = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-all,+bpf,+perfmon,+net_admin,+sys_admin,+sys_ptrace", "--"])
        .arg(bpftune_tests::daemon_binary())
        .args(["-s", "-d", "--system-libdir", &dir, "-l", &dir])
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("setpriv (util-linux)");
    let ready = "network namespaces besides the global one";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    while !read().contains(ready) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let eff = cap_mask(child.id(), "CapEff:");
    let prm = cap_mask(child.id(), "CapPrm:");
    // SAFETY: kill(2) on the pid of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    let text = read();
    assert!(text.contains("dropped capabilities: permitted "), "{text}");
    assert!(!text.contains("could not drop capabilities"), "{text}");
    assert_eq!(eff, 0, "{text}");
    assert_ne!(prm, 0, "{text}");
    assert!(status.success(), "{text}");
}
