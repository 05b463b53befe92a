//! Root integration tests of tcp_conn's time-wait part: the real daemon,
//! its sockops program on this kernel, and bounded connection storms from
//! one network namespace to a listener in another over veth (not
//! loopback: tcp_tw_reuse's default, 2, already reuses TIME_WAIT sockets
//! for loopback). The client namespace's local port range is narrowed to
//! 400 ports so a storm exhausts it in a fraction of a second; every
//! sysctl changed lives in a test namespace and dies with it.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bpftune_tests::{Daemon, Netns, PluginDir, Veth, current_netns_cookie, per_netns_policy_or_skip, test_lock};

const TW_REUSE: &str = "net.ipv4.tcp_tw_reuse";
const PORT_RANGE: &str = "net.ipv4.ip_local_port_range";
/// The client namespace's narrowed range: 400 ports. The tuner acts at
/// half of it in TIME_WAIT; on a busy machine TIME_WAIT lags the
/// connections opened by tens of sockets, and 200 ports of room keeps
/// that lag from deciding the test.
const RANGE: (u32, u32) = (40000, 40399);
const SPAN: usize = (RANGE.1 - RANGE.0 + 1) as usize;
const SCENARIO_REUSE: &str = "Scenario 'need to reuse TIME_WAIT sockets as local ports run out' occurred for tunable \
                              'net.ipv4.tcp_tw_reuse' in non-global ns.";
const SCENARIO_RANGE: &str = "Scenario 'need to widen local port range as TIME_WAIT reuse cannot keep up' occurred \
                              for tunable 'net.ipv4.ip_local_port_range' in non-global ns.";
const TIMEOUT: Duration = Duration::from_secs(20);
/// The TIME_WAIT reuse delay set where the kernel has
/// `net.ipv4.tcp_tw_reuse_delay` (6.13+; fixed at 1 s before): the second
/// storm must open 3/4 of the range within one delay to show that reuse
/// cannot keep up, and 4 s leaves room for a busy machine.
const REUSE_DELAY_MS: u64 = 4000;
const REUSE_DELAY: &str = "net.ipv4.tcp_tw_reuse_delay";
/// What waiting for the first storm's TIME_WAIT sockets to become reusable
/// (and the tuner to judge reuse) adds to the reuse delay: the tuner's
/// settling second and some.
const SETTLE_EXTRA: Duration = Duration::from_millis(1500);

/// How a storm went.
#[derive(Debug, Default)]
struct Storm {
    connected: usize,
    addr_not_avail: bool,
    other_errors: usize,
}

/// A listener at `addr` in `server`: every storm of a test goes to it, so
/// all of them compete for the same 4-tuples (a local port can be shared
/// by connections to different destination ports).
fn listen(server: &Netns, addr: Ipv4Addr) -> TcpListener {
    let listener = server.run(|| TcpListener::bind(SocketAddr::from((addr, 0))).expect("bind"));
    // A backlog the storm cannot overflow: a dropped SYN would stall a
    // connection for a second, long enough for TIME_WAIT reuse to start
    // working in the middle of the first storm.
    // SAFETY: listen(2) again on a listening socket we own only resizes
    // its backlog.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    assert_eq!(rc, 0, "listen backlog");
    listener.set_nonblocking(true).expect("nonblocking listener");
    listener
}

/// Up to `max` connections from `client` to `listener`, one at a time,
/// each closed by the client first (so the client's side goes to
/// TIME_WAIT; the server closes once it reads the end of stream). Stops at
/// the first EADDRNOTAVAIL, after 20 other errors, or after `TIMEOUT`.
fn storm(client: &Netns, listener: &TcpListener, max: usize) -> Storm {
    let dst = listener.local_addr().expect("local addr");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 64];
                        while let Ok(n) = conn.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_micros(50)),
                }
            }
        });
        let result = client.run(|| {
            let mut r = Storm::default();
            let deadline = Instant::now() + TIMEOUT;
            for _ in 0..max {
                if Instant::now() > deadline || r.other_errors >= 20 {
                    break;
                }
                match TcpStream::connect_timeout(&dst, Duration::from_secs(3)) {
                    Ok(c) => {
                        r.connected += 1;
                        drop(c);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                        r.addr_not_avail = true;
                        break;
                    }
                    Err(_) => r.other_errors += 1,
                }
            }
            r
        });
        // Let the last connections close before the listener goes.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// A client namespace with the narrowed range and tcp_tw_reuse=0, linked
/// to `server` over veth; returns it, the link and the server's address.
fn client_of(server: &Netns, tag: &str) -> (Netns, Veth) {
    let client = Netns::new(tag);
    let veth = Veth::connect(Some(&client), Some(server));
    client.set_sysctl(TW_REUSE, "0");
    client.set_sysctl(PORT_RANGE, &format!("{} {}", RANGE.0, RANGE.1));
    if client.try_exec(&["sysctl", "-n", REUSE_DELAY]).status.success() {
        client.set_sysctl(REUSE_DELAY, &REUSE_DELAY_MS.to_string());
    }
    (client, veth)
}

/// The namespace's TIME_WAIT reuse delay (1 s where it is not a sysctl).
fn reuse_delay(ns: &Netns) -> Duration {
    let out = ns.try_exec(&["sysctl", "-n", REUSE_DELAY]);
    let ms = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(1000);
    Duration::from_millis(if out.status.success() { ms } else { 1000 })
}

/// How many of the namespace's TCP sockets are in each state (`ss -tan`),
/// for failure messages.
fn socket_states(ns: &Netns) -> String {
    let out = ns.try_exec(&["ss", "-tanH"]);
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(state) = line.split_whitespace().next() {
            *counts.entry(state.to_string()).or_default() += 1;
        }
    }
    format!("client sockets by state: {counts:?}")
}

fn range_of(ns: &Netns) -> (u32, u32) {
    let v: Vec<u32> = ns.sysctl(PORT_RANGE).split_whitespace().filter_map(|t| t.parse().ok()).collect();
    assert_eq!(v.len(), 2, "ip_local_port_range: {v:?}");
    (v[0], v[1])
}

fn start_daemon(tuners: &[&str]) -> (PluginDir, Daemon) {
    let plugins = PluginDir::with(tuners);
    let daemon = Daemon::start_tuner(&plugins, &[], "tcp_conn");
    assert!(
        daemon.wait_for_log("tcp_conn: time-wait reuse active", TIMEOUT),
        "the time-wait part is not active:\n{}",
        daemon.log()
    );
    (plugins, daemon)
}

#[test]
fn port_exhaustion_enables_tw_reuse_then_widens_the_range() {
    bpftune_tests::require_root!();
    let _lock = test_lock();
    if !per_netns_policy_or_skip("tcp_conn_tw::port_exhaustion_enables_tw_reuse_then_widens_the_range") {
        return;
    }
    let server = Netns::new("twsrv");
    let (client, veth) = client_of(&server, "twcli");
    let cookie = client.run(current_netns_cookie).expect("netns cookie");
    let (_plugins, daemon) = start_daemon(&["tcp_conn"]);

    // 1: with tcp_tw_reuse=0 the storm runs out of ports.
    let listener = listen(&server, veth.b_addr);
    let first = storm(&client, &listener, 4 * SPAN);
    assert!(first.addr_not_avail, "no EADDRNOTAVAIL in the first storm: {first:?}\n{}", daemon.log());
    let states = socket_states(&client);
    assert!(
        daemon.wait_for_log(SCENARIO_REUSE, TIMEOUT),
        "no tw_reuse scenario logged ({states}; {first:?}):\n{}",
        daemon.log()
    );
    let log = daemon.log();
    let reason = log
        .lines()
        .find(|l| l.contains("change net.ipv4.tcp_tw_reuse from (0) -> (1)"))
        .unwrap_or_else(|| panic!("no tw_reuse change line:\n{log}"));
    assert!(reason.contains("Due to TIME_WAIT sockets ("), "{reason}");
    assert!(reason.contains(&format!("of the local port range ({}-{})", RANGE.0, RANGE.1)), "{reason}");
    assert!(reason.contains(&format!("(netns cookie {cookie})")), "another namespace: {reason}");
    assert_eq!(client.sysctl(TW_REUSE), "1");

    // 2: once those TIME_WAIT sockets are older than the reuse delay, a
    // storm as large as the range no longer fails, and connections opened
    // faster than reuse frees ports widen the range (bounded).
    std::thread::sleep(reuse_delay(&client) + SETTLE_EXTRA);
    let second = storm(&client, &listener, SPAN);
    assert!(!second.addr_not_avail, "EADDRNOTAVAIL with reuse on: {second:?}\n{}", daemon.log());
    assert_eq!(second.connected, SPAN, "{second:?}");
    assert!(daemon.wait_for_log(SCENARIO_RANGE, TIMEOUT), "no port range scenario logged:\n{}", daemon.log());
    let (low, high) = range_of(&client);
    assert!(low <= RANGE.0 && high > RANGE.1 && low >= 32768 && high <= 65535, "range now {low}-{high}");
    let log = daemon.log();
    let widened = format!("change net.ipv4.ip_local_port_range from ({} {}) -> (", RANGE.0, RANGE.1);
    assert!(log.contains(&widened), "no port range change line:\n{log}");

    // Changes stay in the namespace, and are summarised at exit.
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("# Summary: scenario 'need to reuse TIME_WAIT sockets as local ports run out' occurred 1 times"),
        "{log}"
    );
}

#[test]
fn administrator_owned_tw_reuse_is_left_alone() {
    bpftune_tests::require_root!();
    let _lock = test_lock();
    if !per_netns_policy_or_skip("tcp_conn_tw::administrator_owned_tw_reuse_is_left_alone") {
        return;
    }
    let server = Netns::new("twsrv");
    let (owned, owned_veth) = client_of(&server, "twadm");
    let (free, free_veth) = client_of(&server, "twfree");
    let owned_cookie = owned.run(current_netns_cookie).expect("netns cookie");
    let free_cookie = free.run(current_netns_cookie).expect("netns cookie");
    let (_plugins, daemon) = start_daemon(&["sysctl", "tcp_conn"]);

    // An administrator sets tcp_tw_reuse in one namespace while the daemon runs.
    owned.set_sysctl(TW_REUSE, "0");
    let disabled = format!("disabling 'tcp_conn' for namespace cookie {owned_cookie}");
    assert!(daemon.wait_for_log(&disabled, TIMEOUT), "administrator's write not noticed:\n{}", daemon.log());

    let run = storm(&owned, &listen(&server, owned_veth.b_addr), 4 * SPAN);
    assert!(run.addr_not_avail, "{run:?}");
    // Positive control: the same storm in a namespace nobody owns is tuned.
    let control = storm(&free, &listen(&server, free_veth.b_addr), 4 * SPAN);
    assert!(control.addr_not_avail, "{control:?}");
    let tuned = format!("change net.ipv4.tcp_tw_reuse from (0) -> (1) (netns cookie {free_cookie})");
    assert!(daemon.wait_for_log(&tuned, TIMEOUT), "control namespace not tuned:\n{}", daemon.log());
    assert_eq!(free.sysctl(TW_REUSE), "1");

    assert_eq!(owned.sysctl(TW_REUSE), "0", "administrator's value changed:\n{}", daemon.log());
    assert_eq!(range_of(&owned), RANGE);
    let log = daemon.log();
    assert!(!log.contains(&format!("(netns cookie {owned_cookie})")), "owned namespace changed:\n{log}");
}
