//! Root integration tests of the tcp_conn tuner: the real daemon, its
//! sockops program on this kernel, and real TCP traffic between two network
//! namespaces over veth, with random loss injected by nftables (there is no
//! netem here). A lossy destination must get bbr, a clean one keep the
//! namespace default, the namespace default itself must not change, and the
//! summary must count the bbr choices; over IPv4 and over IPv6. Loss-free
//! connections, which the learner cannot tell apart by algorithm, must
//! hardly ever be switched (each switch costs a bpf_setsockopt), but the
//! bounded exploration must run (the 4th connection, then 1 in 64 where
//! connections carry data to learn from). A
//! destination that stops losing returns to the default once its decaying
//! loss rate drops (not after one short clean connection); loopback peers
//! are never tuned, however lossy; and an algorithm whose connections are
//! distinctly cheaper (the default's connections are shaped with tbf, the
//! explored ones are not) is learned and chosen on cost.
//!
//! These drive the BPF program itself: there is no userspace copy of its
//! policy to test instead.

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
    // destination and as many to the rx side's. Each carries a little data
    // from tx to rx, so the sending end gets a rate sample from every one;
    // the receiving end sends none, gets none, and stops exploring once its
    // last 8 learned connections (QUIET_MAX) closed without one.
    for _ in 0..CONNECTIONS {
        assert!(bulk_transfer(Some(&tx), Some(&rx), veth.b_addr, 16 << 10, None, TIMEOUT) > 0);
    }
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    // The summary counts switches only. Expected: the 1-in-64 explorations
    // (connections 4, 68, 132, 196 and 260 on the sending end, the 4th only
    // on the receiving end: 6) and the rare noise-driven cost switch; the
    // earlier learner switched about two connections in three when the
    // costs tied.
    let switched: u64 = ["cubic", "bbr", "reno", "htcp"].iter().filter_map(|a| summary_count(&log, a)).sum();
    assert!(switched <= 2 * CONNECTIONS as u64 / 10, "{switched} of {} connections switched:\n{log}", 2 * CONNECTIONS);
    // Exploration runs, at the bounded rate: the first switch to each
    // destination is its 4th connection trying an untried candidate, and
    // every later exploring connection on the sending end is switched too,
    // unless a cost switch coincides with it (then the exploration may keep
    // the default).
    // The receiving end explores once only (at its 4th connection); without
    // netns cookies (before 5.15) that one event may lose the shared rate
    // limit to the sending end's event for the same connection, and no
    // later exploration logs it.
    let ends = if bpftune_tests::netns_cookies() { vec![veth.b_addr, veth.a_addr] } else { vec![veth.b_addr] };
    for dst in ends {
        assert!(first_exploration_logged(&log, dst.into()), "no exploration at the 4th connection to {dst}:\n{log}");
    }
    assert!(switched >= explorations(CONNECTIONS), "{switched} switched, too few explorations:\n{log}");
    assert!(!log.contains("Because loss rate has exceeded"), "{log}");
    assert_eq!(tx.sysctl(DEFAULT_CC), "cubic");
}

/// Connections in the test above.
const CONNECTIONS: usize = 300;

/// Does the `n`-th connection to a destination explore (1 in 64 from the
/// 4th: REMOTE_HOST_MIN_INSTANCES and EXPLORE_EVERY in tcp_conn.bpf.c)?
fn explores(n: usize) -> bool {
    n >= 4 && (n - 4) % 64 == 0
}

/// Was the first switch to `dst` logged as its 4th connection trying an
/// untried candidate? Without netns cookies in sockops (before 5.15) every
/// namespace shares one event rate limit, and the other end's event for the
/// same connection may take it: the destination's first switch is then
/// logged on a later exploration.
fn first_exploration_logged(log: &str, dst: IpAddr) -> bool {
    if bpftune_tests::netns_cookies() {
        log.contains(&format!("suits connections to {dst} best (4 connections so far), try"))
    } else {
        log.contains(&format!("suits connections to {dst} best ("))
    }
}

/// Exploring connections among the first `n`.
fn explorations(n: usize) -> u64 {
    (1..=n).filter(|i| explores(*i)).count() as u64
}

/// One connection from `tx` to a listener at `addr` in `rx`: send `bytes`,
/// wait for the receiver's one-byte answer (so every byte was delivered and
/// acknowledged, and the sender's last rate sample covers them), close.
fn exchange(tx: &Netns, rx: &Netns, addr: impl Into<IpAddr>, bytes: usize) {
    let addr: IpAddr = addr.into();
    let listener = in_ns(Some(rx), || TcpListener::bind(SocketAddr::from((addr, 0))).expect("bind"));
    let port = listener.local_addr().expect("local addr").port();
    std::thread::scope(|s| {
        let server = s.spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else { return };
            let _ = conn.set_read_timeout(Some(TIMEOUT));
            let mut buf = vec![0u8; bytes];
            if conn.read_exact(&mut buf).is_ok() {
                let _ = conn.write_all(&[1]);
            }
            // Until the sender closes.
            let _ = conn.read(&mut buf);
        });
        let mut conn =
            in_ns(Some(tx), || TcpStream::connect_timeout(&SocketAddr::from((addr, port)), TIMEOUT)).expect("connect");
        let _ = conn.set_read_timeout(Some(TIMEOUT));
        let _ = conn.set_write_timeout(Some(TIMEOUT));
        conn.write_all(&vec![0x5a; bytes]).expect("send");
        let mut answer = [0u8; 1];
        conn.read_exact(&mut answer).expect("answer");
        drop(conn);
        let _ = server.join();
    });
}

/// TCP segments retransmitted in `ns` so far (`Tcp: RetransSegs`).
fn retrans_segs(ns: &Netns) -> u64 {
    let out = ns.exec(&["cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else { panic!("no Tcp lines:\n{text}") };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find_map(|(n, v)| (n == "RetransSegs").then(|| v.parse().ok()).flatten())
        .unwrap_or_else(|| panic!("no RetransSegs:\n{text}"))
}

#[test]
fn destination_that_stops_losing_returns_to_the_default() {
    bpftune_tests::require_root!();
    let _lock = test_lock();
    let _allowed = allow_cubic();
    let tx = Netns::new("tcdtx");
    let rx = Netns::new("tcdrx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    drop_randomly(&rx, veth.b_addr, 3);
    tx.exec(&["ethtool", "-K", &veth.a_if, "tso", "off", "gso", "off"]);
    tx.set_sysctl(DEFAULT_CC, "cubic");

    let (_plugins, daemon) = start_daemon();
    warm_up_lossy_path(&tx, &rx, veth.b_addr, &daemon);
    let ss = ss_of_open_connection(&tx, &rx, veth.b_addr);
    assert_eq!(algorithm_in(&ss), Some("bbr"), "{ss}\n{}", daemon.log());

    // The loss stops. The destination's loss rate is a decaying,
    // segment-weighted sum over closed connections: a short clean
    // connection (the one above, a few dozen segments) does not clear it...
    rx.exec(&["nft", "delete", "table", "inet", "bpftune_test"]);
    let ss = ss_of_open_connection(&tx, &rx, veth.b_addr);
    assert_eq!(algorithm_in(&ss), Some("bbr"), "after one short clean connection:\n{ss}\n{}", daemon.log());
    // ...a few clean bulk connections do, and new connections keep the
    // namespace default again (nothing else distinguishes the candidates).
    let mut clean = 0;
    let cleared = loop {
        assert!(bulk_transfer(Some(&tx), Some(&rx), veth.b_addr, WARMUP_BYTES, None, TIMEOUT) > 0);
        clean += 1;
        let ss = ss_of_open_connection(&tx, &rx, veth.b_addr);
        if algorithm_in(&ss) == Some("cubic") {
            break true;
        }
        if clean == 10 {
            break false;
        }
    };
    assert!(cleared, "still on bbr after {clean} clean bulk connections:\n{}", daemon.log());
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(tx.sysctl(DEFAULT_CC), "cubic");
}

#[test]
fn loopback_peers_are_never_tuned() {
    bpftune_tests::require_root!();
    let _lock = test_lock();
    let _allowed = allow_cubic();
    let ns = Netns::new("tclo");
    // Real 1448-byte segments on lo, with 3 % of them dropped: a path the
    // tuner would switch to bbr at once, were it not loopback.
    ns.exec(&["ip", "link", "set", "lo", "mtu", "1500"]);
    ns.exec(&["ethtool", "-K", "lo", "tso", "off", "gso", "off"]);
    drop_randomly(&ns, Ipv4Addr::LOCALHOST, 3);
    drop_randomly(&ns, std::net::Ipv6Addr::LOCALHOST, 3);
    ns.set_sysctl(DEFAULT_CC, "cubic");

    let (_plugins, daemon) = start_daemon();
    let before = retrans_segs(&ns);
    for addr in [IpAddr::from(Ipv4Addr::LOCALHOST), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)] {
        for _ in 0..WARMUP_CONNECTIONS {
            assert!(bulk_transfer(Some(&ns), Some(&ns), addr, WARMUP_BYTES, None, TIMEOUT) > 0);
        }
        let ss = ss_of_open_connection(&ns, &ns, addr);
        assert_eq!(algorithm_in(&ss), Some("cubic"), "to {addr}:\n{ss}");
    }
    let retrans = retrans_segs(&ns) - before;
    assert!(retrans > 0, "no retransmissions: the loopback path was not lossy");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(!log.contains(SCENARIO), "a loopback connection was tuned ({retrans} segments retransmitted):\n{log}");
    let switched: u64 = ["cubic", "bbr", "reno", "htcp"].iter().filter_map(|a| summary_count(&log, a)).sum();
    assert_eq!(switched, 0, "{log}");
}

#[test]
fn distinctly_cheaper_algorithm_is_learned_and_chosen() {
    bpftune_tests::require_root!();
    let _lock = test_lock();
    let _allowed = allow_cubic();
    let tx = Netns::new("tcltx");
    let rx = Netns::new("tclrx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    tx.set_sysctl(DEFAULT_CC, "cubic");
    // Connections that keep the default (cubic) go through a 20 Mbit/s
    // token bucket with room for all their data (no loss); the exploring
    // ones and the one after each do not (that one may be the first
    // switched on cost: its sample must not spoil what was learned). The explored algorithms therefore cost about 0, cubic
    // about 0.99 (its delivery rate ~1 % of the best): once one explored
    // algorithm has MIN_SAMPLES (2) connections, the gap exceeds the
    // margin and the deviations, and connections are switched to it on
    // cost. Exploration picks the least-sampled candidate, so with two
    // other candidates one has 2 samples after the 132nd or 196th
    // connection (one more per extra candidate).
    let shape =
        ["tc", "qdisc", "replace", "dev", &veth.a_if, "root", "tbf", "rate", "20mbit", "burst", "8kb", "limit", "4mb"];
    let unshape = ["tc", "qdisc", "del", "dev", &veth.a_if, "root"];
    tx.exec(&shape);
    let mut shaped = true;

    let (_plugins, daemon) = start_daemon();
    let cost_line = format!("for connections to {}, use ", veth.b_addr);
    let max = 4 + 64 * 6;
    let mut n = 0;
    while n < max && !daemon.log().contains(&cost_line) {
        n += 1;
        let fast = explores(n) || (n > 1 && explores(n - 1));
        if fast == shaped {
            tx.exec(if shaped { &unshape[..] } else { &shape[..] });
            shaped = !shaped;
        }
        exchange(&tx, &rx, veth.b_addr, 32 << 10);
    }
    assert!(
        daemon.wait_for_log(&cost_line, Duration::from_secs(2)),
        "no cost-driven switch after {n} connections:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(first_exploration_logged(&log, veth.b_addr.into()), "{log}");
    let line = log.lines().find(|l| l.contains(&cost_line)).expect("cost line");
    assert!(line.contains("Due to lowest learned cost"), "{line}");
    let chosen = ["bbr", "reno", "htcp"]
        .into_iter()
        .find(|a| line.contains(&format!("use {a} congestion control algorithm instead of cubic")))
        .unwrap_or_else(|| panic!("{line}"));
    // Not before an explored algorithm had MIN_SAMPLES (2) connections,
    // which takes two explorations (the 4th and the 68th connection) at
    // least: a single cheap sample is not evidence.
    assert!(n > 4 + 64, "a cost switch after {n} connections, before two explorations:\n{log}");
    // New connections now start on the cheaper algorithm (the default's
    // connections stay shaped, so the learned gap stands; a connection that
    // happens to explore may run another one, so up to three are looked at).
    if !shaped {
        tx.exec(&shape);
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ss = ss_of_open_connection(&tx, &rx, veth.b_addr);
        if algorithm_in(&ss) == Some(chosen) {
            seen.clear();
            break;
        }
        seen.push(ss);
    }
    tx.exec(&unshape);
    assert!(seen.is_empty(), "none of three new connections ran {chosen}: {seen:?}\n{log}");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(tx.sysctl(DEFAULT_CC), "cubic");
}
