//! Proves the harness's [`DelayLink`] (a TUN forwarder standing in for
//! netem, which these kernels lack): round trips take twice the one-way
//! delay, a small receive window limits a bulk transfer the way it would on
//! a long path, the rate cap holds, and dropping the link (even while a
//! test panics) leaves no device, fd or thread behind.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bpftune_tests::delay::{forwarder_threads, open_tun_fds};
use bpftune_tests::{DelayLink, Netns, bulk_transfer};

const MIB: u64 = 1 << 20;

/// Shortest of `n` TCP connects from `a` to a listener at `link.b_addr` in
/// `b`: one connect is one round trip (SYN, SYN-ACK).
fn connect_rtt(a: &Netns, b: &Netns, link: &DelayLink, n: usize) -> Duration {
    let listener = b.run(|| TcpListener::bind(SocketAddr::from((link.b_addr, 0))).expect("bind"));
    let addr = listener.local_addr().expect("local addr");
    a.run(|| {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                let c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect across the link");
                let rtt = start.elapsed();
                drop(c);
                rtt
            })
            .min()
            .unwrap_or_default()
    })
}

/// Bulk transfer of `bytes` from `a` to `b` across the link: (bytes
/// received, MB/s).
fn transfer(a: &Netns, b: &Netns, link: &DelayLink, bytes: u64) -> (u64, f64) {
    let start = Instant::now();
    let got = bulk_transfer(Some(a), Some(b), link.b_addr, bytes, None, Duration::from_secs(30));
    let secs = start.elapsed().as_secs_f64();
    (got, got as f64 / secs / 1e6)
}

fn device_exists(ns: &Netns, ifname: &str) -> bool {
    ns.try_exec(&["ip", "link", "show", "dev", ifname]).status.success()
}

#[test]
fn round_trip_is_twice_the_one_way_delay() {
    bpftune_tests::require_root!();
    let _l = bpftune_tests::test_lock();
    if !bpftune_tests::delay::tun_or_skip("delay_link::round_trip_is_twice_the_one_way_delay") {
        return;
    }
    let (a, b) = (Netns::new("dla"), Netns::new("dlb"));
    let link = DelayLink::new(&a, &b, Duration::from_millis(20));
    let rtt = connect_rtt(&a, &b, &link, 5);
    println!("TCP connect round trip across a 20 ms link: {rtt:?} (shortest of 5)");
    assert!(rtt >= Duration::from_millis(40), "round trip {rtt:?} shorter than 2 x 20 ms");
    assert!(rtt < Duration::from_millis(200), "round trip {rtt:?}: the forwarder adds far too much");
    // And the other way round.
    let listener = a.run(|| TcpListener::bind(SocketAddr::from((link.a_addr, 0))).expect("bind"));
    let addr = listener.local_addr().expect("local addr");
    let back = b.run(|| {
        let start = Instant::now();
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect b -> a");
        start.elapsed()
    });
    assert!(back >= Duration::from_millis(40), "round trip b -> a {back:?} shorter than 2 x 20 ms");
}

#[test]
fn small_receive_window_limits_throughput() {
    bpftune_tests::require_root!();
    let _l = bpftune_tests::test_lock();
    if !bpftune_tests::delay::tun_or_skip("delay_link::small_receive_window_limits_throughput") {
        return;
    }
    let (a, b) = (Netns::new("dla"), Netns::new("dlb"));
    let link = DelayLink::new(&a, &b, Duration::from_millis(20));
    let bytes = 4 * MIB;
    // Interleaved, twice: the machine is shared, so both settings see the
    // same load.
    let mut small = Vec::new();
    let mut large = Vec::new();
    for _ in 0..2 {
        for (rmem, rates) in [("4096 65536 65536", &mut small), ("4096 131072 4194304", &mut large)] {
            b.set_sysctl("net.ipv4.tcp_rmem", rmem);
            let (got, rate) = transfer(&a, &b, &link, bytes);
            assert_eq!(got, bytes, "transfer with tcp_rmem {rmem} incomplete");
            println!("tcp_rmem \"{rmem}\", 40 ms round trip: {rate:.2} MB/s");
            rates.push(rate);
        }
    }
    let best_small = small.iter().copied().fold(0.0, f64::max);
    let worst_large = large.iter().copied().fold(f64::INFINITY, f64::min);
    // Window-limited: at most about rmem / RTT = 64 KiB / 40 ms = 1.6 MB/s.
    assert!(best_small < 1.7, "64 KiB window over 40 ms should stay under ~1.6 MB/s, got {best_small:.2} MB/s");
    assert!(
        worst_large > 2.0 * best_small,
        "a 4 MiB window ({worst_large:.2} MB/s) should beat a 64 KiB one ({best_small:.2} MB/s) clearly"
    );
    println!("forwarded {} packets, dropped {}", link.forwarded(), link.dropped());
}

#[test]
fn forwarder_reaches_tens_of_mb_per_second() {
    bpftune_tests::require_root!();
    let _l = bpftune_tests::test_lock();
    if !bpftune_tests::delay::tun_or_skip("delay_link::forwarder_reaches_tens_of_mb_per_second") {
        return;
    }
    let (a, b) = (Netns::new("dla"), Netns::new("dlb"));
    let link = DelayLink::new(&a, &b, Duration::from_millis(1));
    b.set_sysctl("net.ipv4.tcp_rmem", "4096 131072 4194304");
    let (got, rate) = transfer(&a, &b, &link, 64 * MIB);
    println!(
        "64 MiB across a 1 ms link: {rate:.1} MB/s (forwarded {} packets, dropped {})",
        link.forwarded(),
        link.dropped()
    );
    assert_eq!(got, 64 * MIB);
    assert!(rate >= 10.0, "forwarder too slow: {rate:.1} MB/s");
}

#[test]
fn rate_cap_holds() {
    bpftune_tests::require_root!();
    let _l = bpftune_tests::test_lock();
    if !bpftune_tests::delay::tun_or_skip("delay_link::rate_cap_holds") {
        return;
    }
    let (a, b) = (Netns::new("dla"), Netns::new("dlb"));
    let cap = 2_000_000;
    let link = DelayLink::with_rate(&a, &b, Duration::from_millis(5), cap);
    let (got, rate) = transfer(&a, &b, &link, 4 * MIB);
    println!("4 MiB across a 5 ms link capped at 2 MB/s: {rate:.2} MB/s");
    assert_eq!(got, 4 * MIB);
    // Payload rate sits a little under the cap (headers count against it).
    assert!(rate <= 2.1, "rate cap of 2 MB/s exceeded: {rate:.2} MB/s");
    assert!(rate >= 1.0, "capped link far below its cap: {rate:.2} MB/s");
}

#[test]
fn drop_removes_devices_fds_and_threads() {
    bpftune_tests::require_root!();
    let _l = bpftune_tests::test_lock();
    if !bpftune_tests::delay::tun_or_skip("delay_link::drop_removes_devices_fds_and_threads") {
        return;
    }
    let (a, b) = (Netns::new("dla"), Netns::new("dlb"));
    assert!(forwarder_threads().is_empty(), "forwarder threads left by an earlier test: {:?}", forwarder_threads());
    let link = DelayLink::new(&a, &b, Duration::from_millis(5));
    let (a_if, b_if) = (link.a_if.clone(), link.b_if.clone());
    assert!(device_exists(&a, &a_if) && device_exists(&b, &b_if));
    assert_eq!(forwarder_threads().len(), 4, "{:?}", forwarder_threads());
    assert_eq!(open_tun_fds(), 2);
    let txq = a.exec(&["cat", &format!("/sys/class/net/{a_if}/tx_queue_len")]);
    assert_eq!(String::from_utf8_lossy(&txq.stdout).trim(), "10000");
    connect_rtt(&a, &b, &link, 1);

    let start = Instant::now();
    drop(link);
    let took = start.elapsed();
    println!("drop took {took:?}");
    // A liveness bound, not a speed target: the threads poll every 50 ms,
    // and only a thread stuck in a blocking call would take seconds.
    assert!(took < Duration::from_secs(10), "drop took {took:?}");
    assert!(forwarder_threads().is_empty(), "threads left: {:?}", forwarder_threads());
    assert_eq!(open_tun_fds(), 0);
    assert!(!device_exists(&a, &a_if), "{a_if} still in {}", a.name);
    assert!(!device_exists(&b, &b_if), "{b_if} still in {}", b.name);

    // The same when a test panics while holding the link, with a packet
    // in flight behind a long delay.
    let panicked_at = std::cell::Cell::new(Instant::now());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let link = DelayLink::new(&a, &b, Duration::from_secs(60));
        let to = SocketAddr::from((link.b_addr, 9));
        let _ = a.run(|| TcpStream::connect_timeout(&to, Duration::from_millis(200)));
        panicked_at.set(Instant::now());
        panic!("deliberate panic with {} and {} up (expected in this test's output)", link.a_if, link.b_if);
    }));
    assert!(result.is_err());
    // Unwinding does not wait for the SYN queued behind the 60 s delay.
    let took = panicked_at.get().elapsed();
    assert!(took < Duration::from_secs(30), "unwinding past a 60 s link took {took:?}");
    assert!(forwarder_threads().is_empty(), "threads left after a panic: {:?}", forwarder_threads());
    assert_eq!(open_tun_fds(), 0);
    let links = a.exec(&["ip", "-o", "link", "show"]);
    assert!(!String::from_utf8_lossy(&links.stdout).contains("btd"), "a TUN device survived the panic");
    let links = b.exec(&["ip", "-o", "link", "show"]);
    assert!(!String::from_utf8_lossy(&links.stdout).contains("btd"), "a TUN device survived the panic");
}
