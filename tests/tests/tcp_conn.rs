//! Root integration tests of the tcp_conn tuner: the real daemon, its
//! sockops program on this kernel, and real TCP traffic between two network
//! namespaces over veth, with random loss injected by nftables (there is no
//! netem here). A lossy destination must get bbr, a clean one keep the
//! namespace default, the namespace default itself must not change, and the
//! summary must count the bbr choices; over IPv4 and over IPv6. Loss-free
//! connections, which the learner cannot tell apart by algorithm, must
//! hardly ever be switched (each switch costs a bpf_setsockopt).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bpftune_tests::{
    Daemon, Netns, PluginDir, SysctlGuard, Veth, bulk_transfer, in_ns, sysctl_read, sysctl_write, test_lock,
};

const ALLOWED: &str = "net.ipv4.tcp_allowed_congestion_control";
const DEFAULT_CC: &str = "net.ipv4.tcp_congestion_control";
/// The scenario line, up to where the namespace is named: the namespace
/// of the connections here, or (without netns cookies, global-only policy)
/// the global one.
const SCENARIO: &str = "Scenario 'specify TCP congestion control algorithm' occurred for tunable \
                        'net.persock.tcp.congestion_control' in ";
/// Transfers to the lossy destination before the check (the tuner needs
/// one lossy connection to remember it; a few make the test robust).
const WARMUP_CONNECTIONS: usize = 5;
const WARMUP_BYTES: u64 = 2 << 20;
const TIMEOUT: Duration = Duration::from_secs(20);

/// A namespace may only default to an allowed algorithm, and the global
/// allowed list here is `reno bbr`: allow cubic for the test (restored on
/// drop). The tuner itself does not need it: bpf_setsockopt is not bound by
/// the allowed list.
fn allow_cubic() -> SysctlGuard {
    let guard = SysctlGuard::global(ALLOWED);
    let allowed = sysctl_read(None, ALLOWED);
    if !allowed.split_whitespace().any(|a| a == "cubic") {
        sysctl_write(None, ALLOWED, &format!("{allowed} cubic"));
    }
    guard
}

/// Drop `percent` % of the packets arriving for `addr` in `ns` (nftables
/// in the namespace, gone with it).
fn drop_randomly(ns: &Netns, addr: impl Into<IpAddr>, percent: u32) {
    ns.exec(&["nft", "add", "table", "inet", "bpftune_test"]);
    ns.exec(&["nft", "add", "chain", "inet", "bpftune_test", "c", "{ type filter hook input priority 0; }"]);
    let family = match addr.into() {
        IpAddr::V4(a) => format!("ip daddr {a}"),
        IpAddr::V6(a) => format!("ip6 daddr {a}"),
    };
    let rule = format!("{family} numgen random mod 100 < {percent} drop");
    let mut cmd = vec!["nft", "add", "rule", "inet", "bpftune_test", "c"];
    cmd.extend(rule.split(' '));
    ns.exec(&cmd);
}

/// Open a connection from `tx` to a listener at `addr` in `rx`, send a
/// little data, and return what `ss -ti` in `tx` says about it while it is
/// still open.
fn ss_of_open_connection(tx: &Netns, rx: &Netns, addr: impl Into<IpAddr>) -> String {
    let addr: IpAddr = addr.into();
    let listener = in_ns(Some(rx), || TcpListener::bind(SocketAddr::from((addr, 0))).expect("bind"));
    let port = listener.local_addr().expect("local addr").port();
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let _ = conn.set_read_timeout(Some(TIMEOUT));
                let mut buf = [0u8; 1 << 16];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
            }
        });
        let mut conn =
            in_ns(Some(tx), || TcpStream::connect_timeout(&SocketAddr::from((addr, port)), TIMEOUT)).expect("connect");
        let _ = conn.set_write_timeout(Some(TIMEOUT));
        let _ = conn.write_all(&[0x5a; 64 << 10]);
        // `10.0.0.2:80` or `[fd00::2]:80`, as ss takes them.
        let dst = SocketAddr::from((addr, port)).to_string();
        let out = tx.exec(&["ss", "-tin", "state", "established", "dst", &dst]);
        let _ = conn.shutdown(std::net::Shutdown::Both);
        drop(conn);
        let _ = reader.join();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

/// The daemon with only tcp_conn, once its sockops program is attached.
fn start_daemon() -> (PluginDir, Daemon) {
    let plugins = PluginDir::with(&["tcp_conn"]);
    let daemon = Daemon::start(&plugins, &[]);
    assert!(
        daemon.wait_for_log("tcp_conn: sockops program 'bpftune_conn_tuner' attached", TIMEOUT),
        "tcp_conn did not attach:\n{}",
        daemon.log()
    );
    (plugins, daemon)
}

/// A few bounded transfers from `tx` to `lossy` in `rx`; the tuner must
/// log a loss-driven switch to bbr for that destination.
fn warm_up_lossy_path(tx: &Netns, rx: &Netns, lossy: impl Into<IpAddr>, daemon: &Daemon) {
    let lossy: IpAddr = lossy.into();
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..WARMUP_CONNECTIONS {
        let got = bulk_transfer(Some(tx), Some(rx), lossy, WARMUP_BYTES, None, TIMEOUT);
        assert!(got > 0, "no data over the lossy path");
        if Instant::now() > deadline {
            break;
        }
    }
    assert!(
        daemon.wait_for_log("Because loss rate has exceeded 1.56 percent", TIMEOUT),
        "no loss-driven switch logged:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    let ns = if bpftune_tests::netns_cookies() { "non-global ns." } else { "global ns." };
    assert!(log.contains(&format!("{SCENARIO}{ns}")), "{log}");
    assert!(log.contains(&format!("for a connection to {lossy}, use bbr congestion control algorithm")), "{log}");
}

/// The congestion-control name `ss -ti` shows for the connection.
fn algorithm_in(ss: &str) -> Option<&'static str> {
    ["bbr", "cubic", "reno", "htcp"].into_iter().find(|alg| ss.split_whitespace().any(|w| w == *alg))
}

/// The count in the summary line for `alg`.
fn summary_count(log: &str, alg: &str) -> Option<u64> {
    log.lines().filter_map(|l| l.split("# Summary: tcp_conn_tuner:").nth(1)).find_map(|rest| {
        let mut words = rest.split_whitespace();
        (words.next() == Some(alg)).then(|| words.next().and_then(|n| n.parse().ok())).flatten()
    })
}

#[test]
fn lossy_destination_gets_bbr_clean_destination_keeps_cubic() {
    bpftune_tests::require_root!();
    let _lock = test_lock();
    let _allowed = allow_cubic();
    let tx = Netns::new("tcctx");
    let rx = Netns::new("tccrx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    let clean = veth.b_addr;
    let o = clean.octets();
    let lossy = Ipv4Addr::new(o[0], o[1], o[2], 3);
    rx.exec(&["ip", "addr", "add", &format!("{lossy}/24"), "dev", &veth.b_if]);
    drop_randomly(&rx, lossy, 3);
    // Send real 1448-byte segments: with GSO, veth carries 64 KB packets and
    // a 3 % packet drop becomes a few bursts of lost segments, or none.
    tx.exec(&["ethtool", "-K", &veth.a_if, "tso", "off", "gso", "off"]);
    // Before the daemon starts: an administrator's write while it runs
    // would (rightly) disable the tuner in that namespace.
    tx.set_sysctl(DEFAULT_CC, "cubic");
    assert_eq!(tx.sysctl(DEFAULT_CC), "cubic");

    let (_plugins, daemon) = start_daemon();
    warm_up_lossy_path(&tx, &rx, lossy, &daemon);

    // A new connection to the lossy destination starts on bbr...
    let ss = ss_of_open_connection(&tx, &rx, lossy);
    assert_eq!(algorithm_in(&ss), Some("bbr"), "ss -ti to {lossy}:\n{ss}\nlog:\n{}", daemon.log());
    // ...while one to the clean destination (too few connections for the
    // learner to start exploring) keeps the namespace default.
    let ss = ss_of_open_connection(&tx, &rx, clean);
    assert_eq!(algorithm_in(&ss), Some("cubic"), "ss -ti to {clean}:\n{ss}");
    // The choice is per connection: the namespace default is untouched.
    assert_eq!(tx.sysctl(DEFAULT_CC), "cubic");

    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("# Summary: tcp_conn_tuner:              CongAlg                Count"), "{log}");
    let bbr = summary_count(&log, "bbr").unwrap_or(0);
    assert!(bbr > 0, "summary has no bbr choices:\n{log}");
    // The namespace default survives the daemon too.
    assert_eq!(tx.sysctl(DEFAULT_CC), "cubic");
}

#[test]
fn loss_free_traffic_is_left_alone_and_summary_is_printed() {
    bpftune_tests::require_root!();
    let _lock = test_lock();
    let _allowed = allow_cubic();
    let tx = Netns::new("tcctx");
    let rx = Netns::new("tccrx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    tx.set_sysctl(DEFAULT_CC, "cubic");

    let (_plugins, daemon) = start_daemon();
    for _ in 0..2 {
        assert!(bulk_transfer(Some(&tx), Some(&rx), veth.b_addr, 1 << 20, None, TIMEOUT) > 0);
    }
    let ss = ss_of_open_connection(&tx, &rx, veth.b_addr);
    assert_eq!(algorithm_in(&ss), Some("cubic"), "{ss}");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(!log.contains(&format!("for a connection to {}, use bbr", veth.b_addr)), "{log}");
    assert!(log.contains("# Summary: tcp_conn_tuner:              CongAlg                Count"), "{log}");
    assert_eq!(tx.sysctl(DEFAULT_CC), "cubic");
}

#[test]
fn lossy_ipv6_destination_gets_bbr() {
    bpftune_tests::require_root!();
    let _lock = test_lock();
    let _allowed = allow_cubic();
    let tx = Netns::new("tc6tx");
    let rx = Netns::new("tc6rx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    let (_, lossy) = veth.add_ipv6();
    drop_randomly(&rx, lossy, 3);
    // Real segments, not 64 KB GSO packets (see the IPv4 test).
    tx.exec(&["ethtool", "-K", &veth.a_if, "tso", "off", "gso", "off"]);
    // TCP over IPv6 uses the net.ipv4.tcp_* congestion-control sysctls.
    tx.set_sysctl(DEFAULT_CC, "cubic");

    let (_plugins, daemon) = start_daemon();
    warm_up_lossy_path(&tx, &rx, lossy, &daemon);

    // A new connection to the lossy IPv6 destination starts on bbr.
    let ss = ss_of_open_connection(&tx, &rx, lossy);
    assert_eq!(algorithm_in(&ss), Some("bbr"), "ss -ti to {lossy}:\n{ss}\nlog:\n{}", daemon.log());
    assert_eq!(tx.sysctl(DEFAULT_CC), "cubic", "the namespace default is untouched");

    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(summary_count(&log, "bbr").unwrap_or(0) > 0, "summary has no bbr choices:\n{log}");
    assert_eq!(tx.sysctl(DEFAULT_CC), "cubic");
}

#[test]
fn loss_free_connections_are_rarely_switched() {
    bpftune_tests::require_root!();
    let _lock = test_lock();
    let _allowed = allow_cubic();
    let tx = Netns::new("tcrtx");
    let rx = Netns::new("tcrrx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    tx.set_sysctl(DEFAULT_CC, "cubic");
    rx.set_sysctl(DEFAULT_CC, "cubic");

    let (_plugins, daemon) = start_daemon();
    // Both ends are tracked: CONNECTIONS connections to the tx side's
    // destination and as many to the rx side's. Each carries a little data,
    // so the learner gets a rate sample from every one.
    for _ in 0..CONNECTIONS {
        assert!(bulk_transfer(Some(&tx), Some(&rx), veth.b_addr, 16 << 10, None, TIMEOUT) > 0);
    }
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    // The summary counts switches only. Expected: the 1-in-64 explorations
    // (connections 4, 68, 132, 196 and 260 on each end: 10) and the rare
    // noise-driven cost switch; the earlier learner switched about two
    // connections in three when the costs tied.
    let switched: u64 = ["cubic", "bbr", "reno", "htcp"].iter().filter_map(|a| summary_count(&log, a)).sum();
    assert!(switched <= 2 * CONNECTIONS as u64 / 10, "{switched} of {} connections switched:\n{log}", 2 * CONNECTIONS);
    assert!(!log.contains("Because loss rate has exceeded"), "{log}");
    assert_eq!(tx.sysctl(DEFAULT_CC), "cubic");
}

/// Connections in the test above.
const CONNECTIONS: usize = 300;
