//! Root integration tests of the route_table tuner: a client namespace
//! reaches a /64 through a router namespace whose outgoing link has a
//! 1280-byte MTU, and sends 1400-byte datagrams to many addresses in it.
//! Each answer (ICMPv6 Packet Too Big) makes the client cache a PMTU
//! exception: one IPv6 dst entry per destination, counted against the
//! client's net.ipv6.route.max_size (set small). Where max_size limits
//! (kernels before 6.3 without the CVE-2023-52340 fix) the cache stops
//! growing at max_size and a lookup needing a new dst fails; the tuner must
//! raise max_size first. Where it limits nothing, `-S` must say so and the
//! tuner must change nothing. The whole BPF path also runs on any kernel
//! with the tuner told to treat max_size as a limit (BPFTUNE_PRETEND_MISSING).

use std::io;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use bpftune_tests::{Daemon, Netns, PluginDir, Veth, netns_cookies, skip, support_report, sysctl_read, test_lock};

const MAX_SIZE: &str = "net.ipv6.route.max_size";
const GC_THRESH: &str = "net.ipv6.route.gc_thresh";
/// The client's max_size for every test; gc_thresh below it, or dst_alloc
/// never asks gc (and so never fails) below gc_thresh.
const SMALL_MAX: i64 = 256;
const SMALL_GC: &str = "64";
/// Destinations filled: well past SMALL_MAX.
const FILL: usize = 640;
/// The tuner's growth cap (policy::MAX_SIZE_CEILING).
const CEILING: i64 = 1 << 18;
const PRETEND: (&str, &str) = ("BPFTUNE_PRETEND_MISSING", "ipv6_dst_unlimited");
const SCENARIO: &str = "Scenario 'destination table nearly full' occurred for tunable 'net.ipv6.route.max_size'";
const REASON: &str = "Due to dst table filling up, change net.ipv6.route.max_size from 256 -> ";
const NOT_NEEDED: &str = "route_table: max_size not needed: net.ipv6.route.max_size limits nothing";
/// The BPF program's name as the kernel keeps it (15 characters).
const PROG_NAME: &str = "bpftune_fib6_ta";

/// `/proc/net/rt6_stats` fields 5 (cached routes) and 6 (dst entries).
#[derive(Debug, Clone, Copy)]
struct Rt6 {
    cache: i64,
    dst: i64,
}

/// Client and router namespaces, the /64 behind the router and a second
/// prefix for a route added later.
struct Lab {
    client: Netns,
    router: Netns,
    _veth: Veth,
    gateway: Ipv6Addr,
    n: u8,
}

impl Lab {
    fn new() -> Self {
        let client = Netns::new("rtc");
        let router = Netns::new("rtr");
        let veth = Veth::connect(Some(&client), Some(&router));
        let (_, gateway) = veth.add_ipv6();
        let n = veth.a_addr.octets()[2];
        router.set_sysctl("net.ipv6.conf.all.forwarding", "1");
        router.set_sysctl("net.ipv6.icmp.ratelimit", "0");
        // The narrow link: a veth pair inside the router, 1280 bytes.
        router.exec(&["ip", "link", "add", "rts0", "mtu", "1280", "type", "veth", "peer", "name", "rts1"]);
        router.exec(&["ip", "link", "set", "rts0", "up"]);
        router.exec(&["ip", "link", "set", "rts1", "up"]);
        router.exec(&["ip", "-6", "route", "add", &format!("fd00:bf7f:{n:x}::/64"), "dev", "rts0"]);
        let gw = gateway.to_string();
        client.exec(&["ip", "-6", "route", "add", &format!("fd00:bf7f:{n:x}::/64"), "via", &gw]);
        client.set_sysctl(GC_THRESH, SMALL_GC);
        client.set_sysctl(MAX_SIZE, &SMALL_MAX.to_string());
        let lab = Self { client, router, _veth: veth, gateway, n };
        // Resolve the gateway (and learn it is a router) before filling.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lab.gateway_is_router() && Instant::now() < deadline {
            lab.send_to(&[SocketAddr::new(gateway.into(), 9)], Duration::ZERO);
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(lab.gateway_is_router(), "{}", lab.neighbours());
        lab
    }

    fn neighbours(&self) -> String {
        String::from_utf8_lossy(&self.client.exec(&["ip", "-6", "neigh", "show"]).stdout).into_owned()
    }

    /// PMTU exceptions via a gateway survive garbage collection only while
    /// the gateway's neighbour entry says "router".
    fn gateway_is_router(&self) -> bool {
        self.neighbours().lines().any(|l| l.starts_with(&self.gateway.to_string()) && l.contains("router"))
    }

    fn rt6(&self) -> Rt6 {
        let out = self.client.exec(&["cat", "/proc/net/rt6_stats"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let f: Vec<i64> = text.split_whitespace().filter_map(|x| i64::from_str_radix(x, 16).ok()).collect();
        assert!(f.len() >= 6, "rt6_stats: {text:?}");
        Rt6 { cache: f[4], dst: f[5] }
    }

    fn max_size(&self) -> i64 {
        int(&self.client.sysctl(MAX_SIZE))
    }

    /// Send one 1400-byte datagram to each address, `gap` apart; the errors.
    fn send_to(&self, dsts: &[SocketAddr], gap: Duration) -> Vec<io::Error> {
        self.client.run(|| {
            let sock = UdpSocket::bind("[::]:0").expect("bind");
            let payload = [0x6du8; 1400];
            let mut errors = Vec::new();
            for dst in dsts {
                if let Err(e) = sock.send_to(&payload, dst) {
                    errors.push(e);
                }
                if !gap.is_zero() {
                    std::thread::sleep(gap);
                }
            }
            errors
        })
    }

    /// FILL distinct destinations behind the router, then time for the
    /// last Packet Too Big answers; returns the send errors.
    fn fill(&self) -> Vec<io::Error> {
        let n = self.n;
        let dsts: Vec<SocketAddr> = (1..=FILL)
            .map(|i| {
                let a: Ipv6Addr = format!("fd00:bf7f:{n:x}::{i:x}").parse().expect("addr");
                SocketAddr::new(a.into(), 9)
            })
            .collect();
        let errors = self.send_to(&dsts, Duration::from_millis(3));
        std::thread::sleep(Duration::from_millis(700));
        errors
    }

    /// A lookup that needs a new dst: a route added now, used once.
    fn fresh_route_send(&self) -> Result<(), String> {
        let n = self.n;
        let prefix = format!("fd00:bf80:{n:x}::/64");
        let _ = self.client.try_exec(&["ip", "-6", "route", "del", &prefix]);
        self.client.exec(&["ip", "-6", "route", "add", &prefix, "via", &self.gateway.to_string()]);
        let dst: Ipv6Addr = format!("fd00:bf80:{n:x}::1").parse().expect("addr");
        let errors = self.send_to(&[SocketAddr::new(dst.into(), 9)], Duration::ZERO);
        let get = self.client.try_exec(&["ip", "-6", "route", "get", &dst.to_string()]);
        match errors.first() {
            None => Ok(()),
            Some(e) => Err(format!("send: {e}; ip -6 route get: {}", String::from_utf8_lossy(&get.stderr).trim())),
        }
    }
}

fn int(text: &str) -> i64 {
    text.trim().parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// `bpftune -S` with only the route_table tuner; its line.
fn support_line(env: &[(&str, &str)]) -> String {
    let plugins = PluginDir::with(&["route_table"]);
    let (code, err) = support_report(&plugins, env);
    assert_eq!(code, 0, "{err}");
    err.lines().find(|l| l.starts_with("bpftune: route_table: ")).unwrap_or_else(|| panic!("no line\n{err}")).into()
}

/// What `-S` says: true if max_size limits here (the tuner is active).
fn tuner_says_limits() -> bool {
    let line = support_line(&[]);
    if line.contains(NOT_NEEDED) {
        false
    } else {
        assert_eq!(line, "bpftune: route_table: works fully");
        true
    }
}

/// The daemon with the sysctl and route_table tuners: in the global
/// namespace, or inside `inside` (kernels without netns cookies).
fn start_daemon(inside: Option<&Netns>, env: &[(&str, &str)]) -> (PluginDir, Daemon) {
    let plugins = PluginDir::with(&["sysctl", "route_table"]);
    let daemon = match inside {
        Some(ns) => ns.run(|| Daemon::start_tuner_with_env(&plugins, &[], env, "route_table")),
        None => Daemon::start_tuner_with_env(&plugins, &[], env, "route_table"),
    };
    (plugins, daemon)
}

fn bpf_prog_loaded() -> bool {
    Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(PROG_NAME))
        .unwrap_or(false)
}

#[test]
fn support_line_agrees_with_what_filling_the_cache_does() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let says_limits = tuner_says_limits();
    // Positive control, no daemon: fill the client's cache past max_size.
    let lab = Lab::new();
    let errors = lab.fill();
    let rt6 = lab.rt6();
    let fresh = lab.fresh_route_send();
    eprintln!(
        "kernel {}: {FILL} destinations, max_size {SMALL_MAX}: {} cached routes, {} dst entries, {} send errors, \
         new route: {fresh:?}",
        sysctl_read(None, "kernel.osrelease"),
        rt6.cache,
        rt6.dst,
        errors.len()
    );
    let capped = rt6.cache < FILL as i64;
    if says_limits {
        assert!(capped, "-S says max_size limits, yet {} routes were cached past max_size {SMALL_MAX}", rt6.cache);
        assert!(fresh.is_err(), "a new route worked with the cache full past max_size");
    } else {
        assert!(!capped, "-S says max_size limits nothing, yet only {} of {FILL} routes were cached", rt6.cache);
        assert!(rt6.dst > SMALL_MAX, "the fill did not pass max_size: {rt6:?}");
        assert!(fresh.is_ok(), "-S says max_size limits nothing, yet a new route failed: {fresh:?}");
    }
    assert_eq!(lab.max_size(), SMALL_MAX);
}

#[test]
fn max_size_grows_before_route_lookups_fail() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    if !tuner_says_limits() {
        skip(
            "route_table::max_size_grows_before_route_lookups_fail",
            "net.ipv6.route.max_size limits nothing on this kernel (6.3+ or the CVE-2023-52340 fix)",
        );
        return;
    }
    let lab = Lab::new();
    let inside = (!netns_cookies()).then_some(&lab.client);
    let global = sysctl_read(None, MAX_SIZE);
    let router = lab.router.sysctl(MAX_SIZE);
    let (_p, daemon) = start_daemon(inside, &[]);
    let errors = lab.fill();
    let rt6 = lab.rt6();
    let fresh = lab.fresh_route_send();
    let max = lab.max_size();
    let log = daemon.log();
    eprintln!("max_size {SMALL_MAX} -> {max}; {rt6:?}; {} send errors; new route {fresh:?}", errors.len());
    assert!(log.contains(REASON), "{log}");
    assert!(max > SMALL_MAX && max <= CEILING, "max_size {max}\n{log}");
    assert!(rt6.cache >= FILL as i64, "only {} of {FILL} routes cached: the tuner was late\n{log}", rt6.cache);
    assert!(errors.is_empty(), "sends failed: {errors:?}\n{log}");
    assert!(fresh.is_ok(), "a new route failed: {fresh:?}\n{log}");
    assert_eq!(lab.router.sysctl(MAX_SIZE), router, "the router's max_size must be untouched");
    if inside.is_none() {
        assert_eq!(sysctl_read(None, MAX_SIZE), global, "the global max_size must be untouched");
    }
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn where_max_size_limits_nothing_the_tuner_loads_and_changes_nothing() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    if tuner_says_limits() {
        skip(
            "route_table::where_max_size_limits_nothing_the_tuner_loads_and_changes_nothing",
            "net.ipv6.route.max_size limits on this kernel (covered by max_size_grows_before_route_lookups_fail)",
        );
        return;
    }
    let lab = Lab::new();
    let global = sysctl_read(None, MAX_SIZE);
    let (_p, daemon) = start_daemon(None, &[]);
    assert!(daemon.log().contains(NOT_NEEDED), "{}", daemon.log());
    assert!(!bpf_prog_loaded(), "{PROG_NAME} loaded although max_size limits nothing");
    let errors = lab.fill();
    let rt6 = lab.rt6();
    assert!(rt6.dst > SMALL_MAX, "the fill did not pass max_size: {rt6:?}");
    assert!(errors.is_empty(), "{errors:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.max_size(), SMALL_MAX, "{}", daemon.log());
    assert_eq!(sysctl_read(None, MAX_SIZE), global);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("destination table nearly full"), "{log}");
}

/// The full path (BPF event, exact count from the namespace's rt6_stats,
/// write in that namespace) on any kernel, with the tuner told that
/// max_size limits. Nothing fails here without it where max_size limits
/// nothing; the point is that the program loads on this kernel's verifier,
/// fires, and the tuner raises max_size in the filling namespace only.
#[test]
fn told_max_size_limits_the_tuner_raises_it_in_the_filling_namespace_only() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    assert_eq!(support_line(&[PRETEND]), "bpftune: route_table: works fully");
    let lab = Lab::new();
    let cookies = netns_cookies();
    let inside = (!cookies).then_some(&lab.client);
    if !cookies {
        eprintln!("no netns cookies on this kernel: the daemon runs inside the client namespace");
    }
    let global = sysctl_read(None, MAX_SIZE);
    let router = lab.router.sysctl(MAX_SIZE);
    let (_p, daemon) = start_daemon(inside, &[PRETEND]);
    assert!(bpf_prog_loaded(), "{PROG_NAME} not loaded\n{}", daemon.log());
    lab.fill();
    let rt6 = lab.rt6();
    let max = lab.max_size();
    let log = daemon.log();
    eprintln!("max_size {SMALL_MAX} -> {max}; {rt6:?}");
    assert!(log.contains(REASON), "{log}");
    let where_ = if cookies { "non-global" } else { "global" };
    assert!(log.contains(&format!("{SCENARIO} in {where_} ns")), "{log}");
    assert!(max > SMALL_MAX && max <= CEILING, "max_size {max}\n{log}");
    // Raised to keep up with the cache, not far beyond it.
    assert!(max >= rt6.dst, "max_size {max} below the {} dst entries\n{log}", rt6.dst);
    assert!(max <= 2 * rt6.dst.max(SMALL_MAX), "max_size {max} overshot {} dst entries\n{log}", rt6.dst);
    assert_eq!(lab.router.sysctl(MAX_SIZE), router, "the router's max_size must be untouched");
    if cookies {
        assert_eq!(sysctl_read(None, MAX_SIZE), global, "the global max_size must be untouched");
    }
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("# Summary: scenario 'destination table nearly full' occurred")
            && log.contains(&format!("for tunable 'net.ipv6.route.max_size' in {where_} ns")),
        "{log}"
    );
}
