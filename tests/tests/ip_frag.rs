//! Root integration tests of the ip_frag tuner: the real daemon, real
//! fragmented UDP traffic over a veth link between two namespaces made here
//! (offloads off). The tuner loads no BPF; it reads each namespace's
//! reassembly memory (`/proc/net/sockstat`, `sockstat6`) every second. The
//! receiving namespace's reassembly high threshold must grow there only,
//! with low_thresh kept below it, for IPv4 and IPv6, also in a namespace
//! made after the daemon started and in one held only by a process (as a
//! container's is). Thresholds are only changed inside the test's own
//! namespaces, which die with the test.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use bpftune_tests::{Daemon, Netns, PluginDir, Veth, sysctl_read, test_lock};

const HIGH4: &str = "net.ipv4.ipfrag_high_thresh";
const LOW4: &str = "net.ipv4.ipfrag_low_thresh";
const HIGH6: &str = "net.ipv6.ip6frag_high_thresh";
const LOW6: &str = "net.ipv6.ip6frag_low_thresh";
const INCREASE: &str = "Scenario 'need to increase IP fragmentation high threshold' occurred for tunable";
/// The tuner's growth cap (policy::HIGH_THRESH_MAX).
const CAP: i64 = 64 << 20;

fn start_daemon() -> (PluginDir, Daemon) {
    let plugins = PluginDir::with(&["sysctl", "ip_frag"]);
    let daemon = Daemon::start(&plugins, &[]);
    assert!(daemon.log().contains("sucessfully initialized tuner ip_frag"), "{}", daemon.log());
    (plugins, daemon)
}

/// Offloads off on both ends, so that fragments cross the veth as they are.
fn offloads_off(tx: &Netns, rx: &Netns, veth: &Veth) {
    for (ns, ifname) in [(tx, &veth.a_if), (rx, &veth.b_if)] {
        ns.exec(&["ethtool", "-K", ifname, "gro", "off", "tso", "off", "gso", "off"]);
    }
}

/// Small thresholds in the receiver (low first: the kernel keeps low <= high).
fn small_thresholds(rx: &Netns, high: &str, low: &str) {
    rx.set_sysctl(low, "4096");
    rx.set_sysctl(high, "8192");
    assert_eq!(rx.sysctl(high), "8192");
}

fn int(text: &str) -> i64 {
    text.trim().parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// Send 8 KB UDP datagrams (fragmented by the sender: path MTU discovery
/// off) from `tx` to `dst` in bursts, until `done()` or `limit` passes.
fn send_fragments(tx: &Netns, dst: SocketAddr, limit: Duration, done: impl Fn() -> bool + Sync) -> usize {
    tx.run(|| {
        let bind: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("addr");
        let sock = UdpSocket::bind(bind).expect("bind");
        let (level, opt) = if dst.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER)
        };
        let dont: libc::c_int = 0; // IP_PMTUDISC_DONT / IPV6_PMTUDISC_DONT
        // SAFETY: setsockopt on our socket with a c_int of the right size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                level,
                opt,
                (&dont as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt MTU_DISCOVER");
        let payload = vec![0x5au8; 8192];
        let deadline = Instant::now() + limit;
        let mut sent = 0;
        while Instant::now() < deadline && !done() {
            for _ in 0..20 {
                if sock.send_to(&payload, dst).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        sent
    })
}

fn grows_in_receiver_only(high: &str, low: &str, ipv6: bool) {
    let _l = test_lock();
    let tx = Netns::new(if ipv6 { "f6tx" } else { "f4tx" });
    let rx = Netns::new(if ipv6 { "f6rx" } else { "f4rx" });
    let veth = Veth::connect(Some(&tx), Some(&rx));
    offloads_off(&tx, &rx, &veth);
    let dst = if ipv6 {
        let n = veth.a_addr.octets()[2];
        let (a, b) = (format!("fd00:bf:{n}::1"), format!("fd00:bf:{n}::2"));
        tx.exec(&["ip", "-6", "addr", "add", &format!("{a}/64"), "dev", &veth.a_if, "nodad"]);
        rx.exec(&["ip", "-6", "addr", "add", &format!("{b}/64"), "dev", &veth.b_if, "nodad"]);
        SocketAddr::new(IpAddr::V6(b.parse::<Ipv6Addr>().expect("v6")), 9)
    } else {
        SocketAddr::new(IpAddr::V4(veth.b_addr), 9)
    };
    small_thresholds(&rx, high, low);
    let global_high = sysctl_read(None, high);
    let global_low = sysctl_read(None, low);
    let tx_high = tx.sysctl(high);
    let (_p, daemon) = start_daemon();

    let from = format!("change {high} from (8192) -> (");
    let sent = send_fragments(&tx, dst, Duration::from_secs(20), || daemon.log().contains(&from));
    assert!(sent > 0, "nothing sent");
    let log = daemon.log();
    assert!(log.contains(&from), "no change logged after {sent} datagrams\n{log}");
    assert!(log.contains("approaching fragmentation maximum threshold"), "{log}");
    assert!(log.contains(&format!("{INCREASE} '{high}' in non-global ns")), "{log}");
    assert!(!log.contains(&format!("{INCREASE} '{high}' in global ns")), "{log}");

    let new_high = int(&rx.sysctl(high));
    let new_low = int(&rx.sysctl(low));
    assert!(new_high > 8192 && new_high <= CAP, "high_thresh did not grow (or overshot): {new_high}\n{log}");
    assert!(new_low < new_high, "low {new_low} must stay below high {new_high}");
    assert_eq!(sysctl_read(None, high), global_high, "global high_thresh must be untouched");
    assert_eq!(sysctl_read(None, low), global_low, "global low_thresh must be untouched");
    assert_eq!(tx.sysctl(high), tx_high, "the sender's namespace is not the one reassembling");
    eprintln!("{high}: 8192 -> {new_high} (low {new_low}) after {sent} datagrams");

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("# Summary: scenario 'need to increase IP fragmentation high threshold' occurred")
            && log.contains(&format!("for tunable '{high}' in non-global ns")),
        "{log}"
    );
}

#[test]
fn ipv4_high_thresh_grows_in_the_receiver_namespace_only() {
    bpftune_tests::require_root!();
    if !bpftune_tests::per_netns_policy_or_skip("ipv4_high_thresh_grows_in_the_receiver_namespace_only") {
        return;
    }
    grows_in_receiver_only(HIGH4, LOW4, false);
}

#[test]
fn ipv6_high_thresh_grows_in_the_receiver_namespace_only() {
    bpftune_tests::require_root!();
    if !bpftune_tests::per_netns_policy_or_skip("ipv6_high_thresh_grows_in_the_receiver_namespace_only") {
        return;
    }
    grows_in_receiver_only(HIGH6, LOW6, true);
}

#[test]
fn unfragmented_traffic_changes_nothing() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let tx = Netns::new("f0tx");
    let rx = Netns::new("f0rx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    offloads_off(&tx, &rx, &veth);
    small_thresholds(&rx, HIGH4, LOW4);
    let (_p, daemon) = start_daemon();
    let dst = SocketAddr::new(IpAddr::V4(veth.b_addr), 9);
    tx.run(|| {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for _ in 0..400 {
            let _ = sock.send_to(&[0x11u8; 1000], dst);
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(rx.sysctl(HIGH4), "8192", "{}", daemon.log());
    assert!(!daemon.log().contains("approaching fragmentation maximum threshold"), "{}", daemon.log());
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

/// Fragments into `rx` (IPv4, thresholds 8192/4096 already set there) until
/// the daemon logs the change; returns the log.
fn expect_growth_logged(tx: &Netns, veth: &Veth, daemon: &Daemon) -> String {
    let from = format!("change {HIGH4} from (8192) -> (");
    let dst = SocketAddr::new(IpAddr::V4(veth.b_addr), 9);
    let sent = send_fragments(tx, dst, Duration::from_secs(20), || daemon.log().contains(&from));
    let log = daemon.log();
    assert!(log.contains(&from), "no change logged after {sent} datagrams\n{log}");
    assert!(log.contains(&format!("{INCREASE} '{HIGH4}' in non-global ns")), "{log}");
    eprintln!("{HIGH4}: changed after {sent} datagrams");
    log
}

#[test]
fn a_namespace_made_after_start_is_watched() {
    bpftune_tests::require_root!();
    if !bpftune_tests::per_netns_policy_or_skip("a_namespace_made_after_start_is_watched") {
        return;
    }
    let _l = test_lock();
    // Without the sysctl tuner, the test's own threshold writes after the
    // start are not an administrator taking the namespace over.
    let plugins = PluginDir::with(&["ip_frag"]);
    let daemon = Daemon::start(&plugins, &[]);
    assert!(daemon.log().contains("sucessfully initialized tuner ip_frag"), "{}", daemon.log());
    // Past the first tick (and its full scan): these are found later.
    std::thread::sleep(Duration::from_millis(1500));
    let tx = Netns::new("f4ltx");
    let rx = Netns::new("f4lrx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    offloads_off(&tx, &rx, &veth);
    small_thresholds(&rx, HIGH4, LOW4);
    expect_growth_logged(&tx, &veth, &daemon);
    let high = int(&rx.sysctl(HIGH4));
    assert!(high > 8192 && high <= CAP, "{high}");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn a_namespace_held_only_by_a_process_is_watched() {
    bpftune_tests::require_root!();
    if !bpftune_tests::per_netns_policy_or_skip("a_namespace_held_only_by_a_process_is_watched") {
        return;
    }
    let _l = test_lock();
    let tx = Netns::new("f4ptx");
    let mut rx = Netns::new("f4prx");
    let veth = Veth::connect(Some(&tx), Some(&rx));
    offloads_off(&tx, &rx, &veth);
    small_thresholds(&rx, HIGH4, LOW4);
    let inode = rx.inode();
    let pid = rx.spawn(&["sleep", "300"]);
    let ns_path = format!("/proc/{pid}/ns/net");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(&ns_path).map(|m| m.ino()).ok() != Some(inode) {
        assert!(Instant::now() < deadline, "sleep did not enter the namespace");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Unpin it: from now on only the process holds the namespace, as a
    // container's is held (nothing in /run/netns names it).
    let out = Command::new("ip").args(["netns", "del", &rx.name]).output().expect("ip netns del");
    assert!(out.status.success(), "{out:?}");
    let read_high = || {
        let out = Command::new("nsenter")
            .args([&format!("--net={ns_path}"), "sysctl", "-n", HIGH4])
            .output()
            .expect("nsenter");
        int(&String::from_utf8_lossy(&out.stdout))
    };
    assert_eq!(read_high(), 8192);
    let global_high = sysctl_read(None, HIGH4);
    let (_p, daemon) = start_daemon();
    expect_growth_logged(&tx, &veth, &daemon);
    let high = read_high();
    assert!(high > 8192 && high <= CAP, "{high}");
    assert_eq!(sysctl_read(None, HIGH4), global_high, "global high_thresh must be untouched");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}
