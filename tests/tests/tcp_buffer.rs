//! Root integration tests of the tcp_buffer tuner: the real daemon with the
//! real BPF programs, real TCP traffic over veth links between namespaces
//! made here. Receive- and send-buffer growth per namespace (and in the
//! global one), SO_RCVBUF-locked sockets left alone, an administrator's
//! override in one namespace, TCP memory pressure/exhaustion with the
//! low-memory toggles, and a bounded SYN flood growing then shrinking the
//! SYN backlog. Every global sysctl changed is restored by a guard.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bpftune_tests::{Daemon, Netns, PluginDir, SysctlGuard, Veth, bulk_transfer, sysctl_read, test_lock, values};

const RMEM: &str = "net.ipv4.tcp_rmem";
const WMEM: &str = "net.ipv4.tcp_wmem";
const SMALL_RMEM: &str = "4096 131072 131072";
const INCREASE: &str = "Scenario 'need to increase TCP buffer size(s)' occurred for tunable";

fn start_daemon() -> (PluginDir, Daemon) {
    let plugins = PluginDir::with(&["sysctl", "tcp_buffer"]);
    let daemon = Daemon::start(&plugins, &[]);
    assert!(daemon.log().contains("sucessfully initialized tuner tcp_buffer"), "{}", daemon.log());
    (plugins, daemon)
}

/// Bulk transfers from `tx` to `addr` until `done()` or `limit` passes.
fn transfer_until(
    tx: Option<&Netns>,
    rx: Option<&Netns>,
    addr: Ipv4Addr,
    rcvbuf: Option<usize>,
    limit: Duration,
    done: impl Fn() -> bool,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !done() {
        let got = bulk_transfer(tx, rx, addr, 2 << 30, rcvbuf, Duration::from_secs(3));
        assert!(got > 0, "no data transferred");
    }
}

fn max_of(text: &str) -> i64 {
    values(text)[2]
}

#[test]
fn rmem_grows_in_the_receiver_namespace_only() {
    let _l = test_lock();
    let tx = Netns::new("rmtx");
    let rx = Netns::new("rmrx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    rx.set_sysctl(RMEM, SMALL_RMEM);
    let global_before = sysctl_read(None, RMEM);
    let (_p, daemon) = start_daemon();

    let from = format!("change {RMEM}(min default max) from ({SMALL_RMEM})");
    transfer_until(Some(&tx), Some(&rx), veth.b_addr, None, Duration::from_secs(20), || daemon.log().contains(&from));
    let after = rx.sysctl(RMEM);
    let v = values(&after);
    assert_eq!(&v[..2], &[4096, 131072], "min/default must not change: {after}");
    assert!(v[2] > 131072, "rmem max did not grow: {after}\n{}", daemon.log());
    assert!(v[2] <= i64::from(i32::MAX));
    assert_eq!(sysctl_read(None, RMEM), global_before, "global tcp_rmem must be untouched");
    assert!(daemon.log().contains(&format!("{INCREASE} '{RMEM}' in non-global ns")), "{}", daemon.log());
    assert!(!daemon.log().contains(&format!("{INCREASE} '{RMEM}' in global ns")), "{}", daemon.log());
    // Receive auto-tuning stays on in that namespace.
    assert_eq!(rx.sysctl("net.ipv4.tcp_moderate_rcvbuf"), "1");

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("# Summary: scenario 'need to increase TCP buffer size(s)' occurred")
            && log.contains(&format!("for tunable '{RMEM}' in non-global ns")),
        "{log}"
    );
    assert!(log.contains(&format!("# sysctl '{RMEM}' changed from")), "{log}");
}

#[test]
fn rmem_grows_in_the_global_namespace() {
    let _l = test_lock();
    let _rmem = SysctlGuard::set(RMEM, SMALL_RMEM);
    let _moderate = SysctlGuard::global("net.ipv4.tcp_moderate_rcvbuf");
    let tx = Netns::new("grtx");
    let veth = Veth::connect(Some(&tx), None);
    let tx_before = tx.sysctl(RMEM);
    let (_p, daemon) = start_daemon();

    let from = format!("change {RMEM}(min default max) from ({SMALL_RMEM})");
    transfer_until(Some(&tx), None, veth.b_addr, None, Duration::from_secs(20), || daemon.log().contains(&from));
    let after = sysctl_read(None, RMEM);
    assert!(max_of(&after) > 131072, "global rmem max did not grow: {after}\n{}", daemon.log());
    assert_eq!(&values(&after)[..2], &[4096, 131072]);
    assert!(daemon.log().contains(&format!("{INCREASE} '{RMEM}' in global ns")), "{}", daemon.log());
    assert_eq!(tx.sysctl(RMEM), tx_before, "the sender's namespace is not the one limited");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn wmem_grows_for_a_send_limited_sender() {
    let _l = test_lock();
    let tx = Netns::new("wmtx");
    let rx = Netns::new("wmrx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    let small = "4096 65536 65536";
    tx.set_sysctl(WMEM, small);
    let rx_before = rx.sysctl(WMEM);
    let global_before = sysctl_read(None, WMEM);
    let (_p, daemon) = start_daemon();

    let from = format!("change {WMEM}(min default max) from ({small})");
    transfer_until(Some(&tx), Some(&rx), veth.b_addr, None, Duration::from_secs(20), || daemon.log().contains(&from));
    let after = tx.sysctl(WMEM);
    assert!(max_of(&after) > 65536, "wmem max did not grow: {after}\n{}", daemon.log());
    assert_eq!(&values(&after)[..2], &[4096, 65536]);
    assert!(daemon.log().contains(&format!("{INCREASE} '{WMEM}' in non-global ns")), "{}", daemon.log());
    assert_eq!(rx.sysctl(WMEM), rx_before);
    assert_eq!(sysctl_read(None, WMEM), global_before);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn locked_rcvbuf_is_left_alone() {
    let _l = test_lock();
    let tx = Netns::new("lktx");
    let rx = Netns::new("lkrx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    rx.set_sysctl(RMEM, SMALL_RMEM);
    let (_p, daemon) = start_daemon();

    // SO_RCVBUF 65536 gives sk_rcvbuf 131072: at the namespace max, but the
    // application fixed it, so it is not ours to grow.
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        bulk_transfer(Some(&tx), Some(&rx), veth.b_addr, 2 << 30, Some(65536), Duration::from_secs(3));
    }
    assert_eq!(rx.sysctl(RMEM), SMALL_RMEM, "{}", daemon.log());
    assert!(!daemon.log().contains(&format!("'{RMEM}' in non-global ns")), "{}", daemon.log());

    // Control: the same transfer without the lock does grow it.
    let from = format!("change {RMEM}(min default max) from ({SMALL_RMEM})");
    transfer_until(Some(&tx), Some(&rx), veth.b_addr, None, Duration::from_secs(20), || daemon.log().contains(&from));
    assert!(max_of(&rx.sysctl(RMEM)) > 131072, "{}", daemon.log());
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn admin_override_keeps_that_namespace_while_another_is_tuned() {
    let _l = test_lock();
    let tx = Netns::new("adtx");
    let a = Netns::new("adra");
    let b = Netns::new("adrb");
    let va = Veth::connect(Some(&tx), Some(&a));
    let vb = Veth::connect(Some(&tx), Some(&b));
    a.set_sysctl(RMEM, SMALL_RMEM);
    b.set_sysctl(RMEM, SMALL_RMEM);
    let (_p, daemon) = start_daemon();

    let admin = "4096 131072 140000";
    a.exec(&["sysctl", "-q", "-w", &format!("{RMEM}={admin}")]);
    assert!(
        daemon.wait_for_log(&format!("modified sysctl '{RMEM}' that tuner 'tcp_buffer' uses"), Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    let from_b = format!("change {RMEM}(min default max) from ({SMALL_RMEM})");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !daemon.log().contains(&from_b) {
        bulk_transfer(Some(&tx), Some(&a), va.b_addr, 1 << 30, None, Duration::from_secs(2));
        bulk_transfer(Some(&tx), Some(&b), vb.b_addr, 1 << 30, None, Duration::from_secs(2));
    }
    // A bit more load on the overridden namespace.
    bulk_transfer(Some(&tx), Some(&a), va.b_addr, 2 << 30, None, Duration::from_secs(3));
    assert_eq!(a.sysctl(RMEM), admin, "the administrator's value must stay\n{}", daemon.log());
    assert!(max_of(&b.sysctl(RMEM)) > 131072, "the other namespace is still tuned\n{}", daemon.log());
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

/// `n` connections from `tx` to a listener in `rx` that never reads, each
/// sender filling its socket, for `dur`: TCP memory fills up.
fn hold_unread_connections(tx: &Netns, rx: &Netns, addr: Ipv4Addr, n: usize, dur: Duration) {
    let listener = rx.run(|| TcpListener::bind(SocketAddr::from((addr, 0))).expect("bind"));
    let port = listener.local_addr().expect("addr").port();
    let senders: Vec<TcpStream> = tx.run(|| {
        (0..n)
            .filter_map(|_| TcpStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_secs(2)).ok())
            .collect()
    });
    let mut accepted = Vec::new();
    listener.set_nonblocking(true).expect("nonblocking");
    let chunk = vec![0x33u8; 1 << 16];
    for s in &senders {
        s.set_nonblocking(true).expect("nonblocking");
    }
    let deadline = Instant::now() + dur;
    while Instant::now() < deadline {
        while let Ok((c, _)) = listener.accept() {
            accepted.push(c);
        }
        for mut s in &senders {
            use std::io::Write;
            for _ in 0..64 {
                if s.write(&chunk).is_err() {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tcp_mem_pressure_and_exhaustion_then_recovery() {
    let _l = test_lock();
    let toggles = ["net.ipv4.tcp_no_metrics_save", "net.ipv4.tcp_no_ssthresh_metrics_save"];
    let _g1 = SysctlGuard::global(toggles[0]);
    let _g2 = SysctlGuard::global(toggles[1]);
    let _g3 = SysctlGuard::global("net.core.high_order_alloc_disable");
    sysctl_write_global(toggles[0], "0");
    sysctl_write_global(toggles[1], "0");
    let tx = Netns::new("memtx");
    let rx = Netns::new("memrx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    // Low limits, set before the daemon starts (a write while it runs would
    // be an administrator override). Restored on drop, after the daemon.
    let _mem = SysctlGuard::set("net.ipv4.tcp_mem", "600 900 1200");
    let (_p, daemon) = start_daemon();
    let bounds = bounds_from_log(&daemon.log());

    hold_unread_connections(&tx, &rx, veth.b_addr, 40, Duration::from_secs(6));
    let log = daemon.log();
    assert!(
        log.contains("Scenario 'approaching TCP memory pressure' occurred for tunable 'net.ipv4.tcp_mem' in global ns")
            || log.contains(
                "Scenario 'approaching TCP memory exhaustion' occurred for tunable 'net.ipv4.tcp_mem' in global ns"
            ),
        "{log}"
    );
    assert!(log.contains("Due to near memory"), "{log}");
    let mem = values(&sysctl_read(None, "net.ipv4.tcp_mem"));
    assert!(mem[2] > 1200, "tcp_mem max not raised: {mem:?}");
    assert!(
        mem[2] <= bounds[2] && mem[1] <= bounds[1].max(900) && mem[0] <= bounds[0].max(600),
        "{mem:?} vs {bounds:?}"
    );
    assert!(
        log.contains(&format!(
            "Scenario 'set tunable on entering low-memory state' occurred for tunable '{}' in global ns",
            toggles[0]
        )),
        "{log}"
    );
    // Sockets closed (hold_unread_connections returned): memory recovers and
    // the toggles are undone.
    assert!(
        daemon.wait_for_log(
            &format!("Scenario 'unset tunable set earlier in low-memory state' occurred for tunable '{}'", toggles[0]),
            Duration::from_secs(20)
        ),
        "{}",
        daemon.log()
    );
    assert_eq!(sysctl_read(None, toggles[0]), "0");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

fn sysctl_write_global(name: &str, value: &str) {
    bpftune_tests::sysctl_write(None, name, value);
}

/// `tcp_mem bounds (min pressure max)` from the tuner's start-up debug line.
fn bounds_from_log(log: &str) -> Vec<i64> {
    let line = log.lines().find(|l| l.contains("tcp_buffer: free buffer pages")).expect("bounds line");
    let inside = line.split("tcp_mem bounds (").nth(1).and_then(|s| s.split(')').next()).expect("bounds");
    values(inside)
}

/// Half-open connections: non-blocking connects from `tx` at `per_sec`
/// until `stop` is set or `limit` passes. Their SYN-ACKs are dropped in
/// `tx` (nftables) and each client socket is closed right after its SYN
/// left, so the requests sit in the listener's queue until they expire.
fn syn_flood(tx: &Netns, addr: Ipv4Addr, port: u16, per_sec: u32, limit: Duration, stop: &AtomicBool) -> usize {
    tx.run(|| {
        let deadline = Instant::now() + limit;
        let gap = Duration::from_secs(1) / per_sec;
        let mut sent = 0;
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            // SAFETY: plain socket(2); owned right away.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
            assert!(fd >= 0, "socket");
            // SAFETY: fd is a fresh descriptor we own.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: connect with a valid sockaddr_in of the given size;
            // non-blocking, so it sends the SYN and returns EINPROGRESS.
            unsafe {
                libc::connect(
                    owned.as_raw_fd(),
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            drop(owned);
            sent += 1;
            std::thread::sleep(gap);
        }
        sent
    })
}

#[test]
fn syn_flood_grows_then_shrinks_the_syn_backlog() {
    let _l = test_lock();
    let tx = Netns::new("syntx");
    let rx = Netns::new("synrx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    rx.set_sysctl("net.ipv4.tcp_syncookies", "0");
    rx.set_sysctl("net.ipv4.tcp_max_syn_backlog", "256");
    rx.set_sysctl("net.core.somaxconn", "4096");
    // The flooding side never answers SYN-ACKs: requests stay half-open.
    tx.exec(&["nft", "add", "table", "inet", "bpftt"]);
    tx.exec(&["nft", "add", "chain", "inet", "bpftt", "in", "{ type filter hook input priority 0 ; }"]);
    tx.exec(&["nft", "add", "rule", "inet", "bpftt", "in", "tcp", "flags", "&", "(syn|ack)", "==", "syn|ack", "drop"]);
    let listener = rx.run(|| {
        let l = TcpListener::bind(SocketAddr::from((veth.b_addr, 0))).expect("bind");
        // SAFETY: listen(2) again on our listening socket raises its backlog.
        unsafe { libc::listen(l.as_raw_fd(), 4096) };
        l
    });
    let port = listener.local_addr().expect("addr").port();
    let (_p, daemon) = start_daemon();

    let name = "net.ipv4.tcp_max_syn_backlog";
    let stop = AtomicBool::new(false);
    let shrunk = std::thread::scope(|s| {
        let flood = s.spawn(|| syn_flood(&tx, veth.b_addr, port, 200, Duration::from_secs(40), &stop));
        let seen = daemon.wait_for_log(
            &format!(
                "Scenario 'decrease maximum syn backlog due to large numbers of uncompleted connections' occurred for tunable '{name}' in non-global ns"
            ),
            Duration::from_secs(40),
        );
        stop.store(true, Ordering::Relaxed);
        let sent = flood.join().expect("flood thread");
        assert!(sent > 0);
        seen
    });
    assert!(shrunk, "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "Scenario 'increase maximum syn backlog under load since syncookies are disabled' occurred for tunable '{name}' in non-global ns"
        )),
        "{log}"
    );
    assert!(log.contains("suggesting an attack - reduce 'net.ipv4.tcp_max_syn_backlog' from"), "{log}");
    let backlog: i64 = rx.sysctl(name).parse().expect("backlog");
    assert!(backlog >= 128, "{backlog}");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}
