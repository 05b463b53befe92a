//! Root integration tests of the udp_buffer tuner: the real daemon with the
//! real BPF programs and real UDP floods over loopback inside namespaces
//! made here, with receivers that never read. A dropping socket grows
//! net.core.rmem_max and then rmem_default; an SO_RCVBUF-locked receiver
//! does not grow rmem_default; UDP memory exhaustion grows udp_mem within
//! its bounds. rmem_max/rmem_default/udp_mem are global on this kernel
//! (read-only in other namespaces), so they are saved and restored with
//! guards; traffic is bounded in count and time.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bpftune_tests::{Daemon, Netns, PluginDir, SysctlGuard, set_rcvbuf, sysctl_read, test_lock, values};

const RMEM_MAX: &str = "net.core.rmem_max";
const RMEM_DEFAULT: &str = "net.core.rmem_default";
const UDP_MEM: &str = "net.ipv4.udp_mem";
const INCREASE: &str = "Scenario 'need to increase UDP buffer size(s)' occurred for tunable";
const WHY: &str = "Due to need to increase receive buffer size to maximize throughput change";
/// Upper bound on datagrams one flood sends.
const MAX_DATAGRAMS: u64 = 2_000_000;

fn start_daemon() -> (PluginDir, Daemon) {
    let plugins = PluginDir::with(&["sysctl", "udp_buffer"]);
    let daemon = Daemon::start_tuner(&plugins, &[], "udp_buffer");
    (plugins, daemon)
}

fn int(name: &str) -> i64 {
    sysctl_read(None, name).parse().expect("integer sysctl")
}

/// `socks` receivers on loopback in `ns` that never read (SO_RCVBUF set to
/// `rcvbuf` if given), flooded in bursts until `done()` or `limit` passes.
/// Returns the datagrams sent.
fn flood(ns: &Netns, socks: usize, rcvbuf: Option<usize>, limit: Duration, done: &(dyn Fn() -> bool + Sync)) -> u64 {
    ns.run(|| {
        let rx: Vec<UdpSocket> = (0..socks)
            .map(|_| {
                let s = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind receiver");
                if let Some(size) = rcvbuf {
                    set_rcvbuf(s.as_raw_fd(), size);
                }
                s
            })
            .collect();
        let addrs: Vec<SocketAddr> = rx.iter().map(|s| s.local_addr().expect("addr")).collect();
        let tx = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind sender");
        let payload = [0x5au8; 1400];
        let deadline = Instant::now() + limit;
        let mut sent = 0u64;
        while Instant::now() < deadline && sent < MAX_DATAGRAMS && !done() {
            for a in &addrs {
                for _ in 0..32 {
                    if tx.send_to(&payload, a).is_ok() {
                        sent += 1;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    })
}

#[test]
fn drops_grow_rmem_max_then_rmem_default() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    // Set before the daemon starts (a write while it runs is an override);
    // restored on drop, after the daemon.
    let _max = SysctlGuard::set(RMEM_MAX, "16384");
    let _def = SysctlGuard::set(RMEM_DEFAULT, "16384");
    let ns = Netns::new("udprx");
    // From 6.14 other namespaces see (a copy of) the value; before, the
    // file exists only in the initial namespace.
    if ns.try_exec(&["test", "-e", "/proc/sys/net/core/rmem_max"]).status.success() {
        assert_eq!(ns.sysctl(RMEM_MAX), "16384", "rmem_max is expected to follow the global value here");
    }
    let (_p, daemon) = start_daemon();

    let want_max = format!("{WHY} {RMEM_MAX} from 16384 -> 20480");
    let want_def = format!("{WHY} {RMEM_DEFAULT} from 16384 -> 20480");
    let done = || {
        let log = daemon.log();
        log.contains(&want_max) && log.contains(&want_def)
    };
    let sent = flood(&ns, 1, None, Duration::from_secs(20), &done);
    assert!(sent > 0);
    let log = daemon.log();
    assert!(log.contains(&want_max), "{log}");
    assert!(log.contains(&want_def), "{log}");
    assert!(log.contains(&format!("{INCREASE} '{RMEM_MAX}' in global ns")), "{log}");
    assert!(log.contains(&format!("{INCREASE} '{RMEM_DEFAULT}' in global ns")), "{log}");
    assert!(log.contains(" UDP in ") && log.contains(" drop rate "), "{log}");
    let (max, def) = (int(RMEM_MAX), int(RMEM_DEFAULT));
    assert!(max > 16384 && def > 16384 && def <= max, "rmem_max {max} rmem_default {def}");

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("# Summary: scenario 'need to increase UDP buffer size(s)' occurred")
            && log.contains(&format!("for tunable '{RMEM_MAX}' in global ns"))
            && log.contains(&format!("for tunable '{RMEM_DEFAULT}' in global ns")),
        "{log}"
    );
    assert!(log.contains(&format!("# sysctl '{RMEM_MAX}' changed from (16384) -> (")), "{log}");
    assert!(log.contains(&format!("# sysctl '{RMEM_DEFAULT}' changed from (16384) -> (")), "{log}");
}

#[test]
fn locked_receiver_does_not_grow_rmem_default() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let _max = SysctlGuard::set(RMEM_MAX, "1048576");
    let _def = SysctlGuard::set(RMEM_DEFAULT, "16384");
    let ns = Netns::new("udplk");
    let (_p, daemon) = start_daemon();

    // SO_RCVBUF 8192 gives sk_rcvbuf 16384: at rmem_default, but the
    // application chose its size.
    let sent = flood(&ns, 2, Some(8192), Duration::from_secs(5), &|| false);
    assert!(sent > 0);
    assert_eq!(int(RMEM_DEFAULT), 16384, "{}", daemon.log());
    assert_eq!(int(RMEM_MAX), 1048576, "{}", daemon.log());
    assert!(!daemon.log().contains(&format!("{INCREASE} '{RMEM_DEFAULT}'")), "{}", daemon.log());

    // Control: the same flood without the lock grows rmem_default.
    let want = format!("{WHY} {RMEM_DEFAULT} from 16384 -> 20480");
    let sent = flood(&ns, 2, None, Duration::from_secs(20), &|| daemon.log().contains(&want));
    assert!(sent > 0);
    assert!(daemon.log().contains(&want), "{}", daemon.log());
    assert_eq!(int(RMEM_MAX), 1048576, "rmem_max had room: {}", daemon.log());
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

/// `udp_mem bounds (min pressure max)` from the tuner's start-up line.
fn bounds_from_log(log: &str) -> Vec<i64> {
    let line = log.lines().find(|l| l.contains("udp_buffer: free buffer pages")).expect("bounds line");
    let inside = line.split("udp_mem bounds (").nth(1).and_then(|s| s.split(')').next()).expect("bounds");
    values(inside)
}

#[test]
fn udp_memory_exhaustion_grows_udp_mem_within_bounds() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let before = values(&sysctl_read(None, UDP_MEM));
    let _mem = SysctlGuard::set(UDP_MEM, "64 128 256");
    let _def = SysctlGuard::set(RMEM_DEFAULT, "212992");
    let ns = Netns::new("udpmem");
    let (_p, daemon) = start_daemon();
    let bounds = bounds_from_log(&daemon.log());

    let scenario =
        |s: &str| format!("Scenario 'approaching UDP memory {s}' occurred for tunable '{UDP_MEM}' in global ns");
    let done = || {
        let log = daemon.log();
        log.contains(&scenario("pressure")) || log.contains(&scenario("exhaustion"))
    };
    // 8 receivers that never read, 208 KiB each: far beyond 256 pages.
    let sent = flood(&ns, 8, None, Duration::from_secs(15), &done);
    assert!(sent > 0);
    let log = daemon.log();
    assert!(done(), "{log}");
    assert!(log.contains(&format!("change {UDP_MEM}(min pressure max) from (")), "{log}");
    let mem = values(&sysctl_read(None, UDP_MEM));
    assert!(mem[2] > 256, "udp_mem max not raised: {mem:?}\n{log}");
    assert!(mem.iter().all(|v| *v > 0), "{mem:?}");
    assert!(mem[0] <= mem[1] && mem[1] <= mem[2], "{mem:?}");
    assert!(mem[2] <= bounds[2] && mem[1] <= bounds[1] && mem[0] <= bounds[0], "{mem:?} vs {bounds:?}");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains(&format!("# sysctl '{UDP_MEM}' changed from (64 128 256) -> (")), "{log}");
    drop(_mem);
    assert_eq!(values(&sysctl_read(None, UDP_MEM)), before);
}
