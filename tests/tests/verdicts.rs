//! Root integration tests of judging changes by their effect (issue #13):
//! the real daemon and tcp_buffer, a TCP flow over a path with real delay
//! (a TUN forwarder, `DelayLink`: there is no netem on these kernels), and
//! the receive-buffer change judged from the receiver namespace's bytes
//! received per second before and after it.
//!
//! A change needs a window of samples before it. The daemon samples a
//! namespace only while its events arrive, and tcp_buffer raises
//! `tcp_rmem` at its first event, so each test first holds the tuner at
//! the current value with the operator's limits file (events arrive and
//! are sampled, every write is clamped to "no change"), then loosens the
//! limits (`SIGHUP`): the next event's raise has a before-window.
//!
//! "Helped": the path's rate cap is above what the old buffer allows, so
//! the flow speeds up. "Hurt": the test slows the sender down when the
//! raise is logged, so the flow slows down after the change; the daemon
//! sees a change followed by a drop in the signal it aims to raise (it
//! judges by correlation, as any observer of a live system must), reverts
//! it and backs off, and `-R` at exit still restores the original.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bpftune_tests::{
    Daemon, DelayLink, JOURNAL, Netns, PluginDir, TEST_RUN_DIR, current_netns_cookie, daemon_binary,
    per_netns_policy_or_skip, test_lock,
};

const RMEM: &str = "net.ipv4.tcp_rmem";
const SMALL_RMEM: &str = "4096 131072 131072";
/// One-way delay: a 40 ms round trip.
const DELAY: Duration = Duration::from_millis(20);
/// The path's rate: well above what a 128 KiB buffer moves in 40 ms.
const RATE: u64 = 8_000_000;
const TIMEOUT: Duration = Duration::from_secs(45);

/// A limits file in a scratch directory, removed on drop.
struct Limits {
    dir: PathBuf,
}

impl Limits {
    fn new(tag: &str) -> Self {
        let dir = Path::new(TEST_RUN_DIR).join(format!("verdict-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("limits dir");
        Self { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("limits.conf")
    }

    fn write(&self, text: &str) {
        std::fs::write(self.file(), text).expect("write limits");
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP flow from `tx` to `rx` over the link until `stop`, the sender
/// writing at most `pace` bytes a second (0: as fast as it can), with
/// congestion control `cc` if given (else the namespace's default).
fn flow(tx: &Netns, rx: &Netns, link: &DelayLink, stop: &AtomicBool, pace: &AtomicU64, cc: Option<&str>) {
    let addr = link.b_addr;
    let listener = rx.run(|| TcpListener::bind(SocketAddr::from((addr, 0))).expect("bind"));
    let dst = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking listener");
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut conn = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(_) if !stop.load(Ordering::Relaxed) => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => return,
                }
            };
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = vec![0u8; 1 << 16];
            while !stop.load(Ordering::Relaxed) {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        });
        let conn = tx.run(|| TcpStream::connect_timeout(&dst, Duration::from_secs(5)));
        let Ok(mut conn) = conn else { return };
        if let Some(cc) = cc {
            set_congestion_control(&conn, cc);
        }
        let _ = conn.set_write_timeout(Some(Duration::from_millis(200)));
        let chunk = vec![0x5au8; 1 << 16];
        while !stop.load(Ordering::Relaxed) {
            match conn.write(&chunk) {
                Ok(n) => {
                    let pace = pace.load(Ordering::Relaxed);
                    if pace > 0 {
                        std::thread::sleep(Duration::from_secs_f64(n as f64 / pace as f64));
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = conn.shutdown(std::net::Shutdown::Both);
    });
}

/// Set a connection's congestion control (root may pick any available
/// one, also where the namespace's allowed list does not name it).
fn set_congestion_control(conn: &TcpStream, cc: &str) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket fd and a buffer of the length given.
    let rc = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            cc.as_ptr().cast(),
            cc.len() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_CONGESTION {cc}: {}", std::io::Error::last_os_error());
}

fn query(args: &[&str]) -> String {
    let out = Command::new(daemon_binary()).arg("-q").args(args).output().expect("run bpftune -q");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The verdict lines about `tunable` in the namespace with that cookie.
fn verdicts(log: &str, cookie: u64) -> Vec<String> {
    let ns = format!("(netns cookie {cookie}): ");
    log.lines()
        .filter(|l| l.contains(&format!("Verdict for change {RMEM} from (")) && l.contains(&ns))
        .map(str::to_string)
        .collect()
}

struct Setup {
    tx: Netns,
    rx: Netns,
    link: DelayLink,
    cookie: u64,
    limits: Limits,
    /// The sender's pace (bytes/s, 0: unpaced).
    pace: AtomicU64,
    /// The sender's congestion control (None: the namespace's default).
    cc: Option<&'static str>,
    _plugins: PluginDir,
    daemon: Daemon,
}

/// Namespaces, the delayed path, and the daemon with tcp_buffer held at
/// the receiver's small buffer by the limits file.
fn setup(tag: &str, extra: &[&str]) -> Setup {
    setup_path(tag, extra, DELAY, RATE)
}

fn setup_path(tag: &str, extra: &[&str], delay: Duration, rate: u64) -> Setup {
    let tx = Netns::new(&format!("{tag}tx"));
    let rx = Netns::new(&format!("{tag}rx"));
    let link = DelayLink::with_rate(&tx, &rx, delay, rate);
    rx.set_sysctl(RMEM, SMALL_RMEM);
    let cookie = rx.run(current_netns_cookie).expect("netns cookie");
    let limits = Limits::new(tag);
    limits.write(&format!("{RMEM} max - - 131072 netns {cookie}\n"));
    let plugins = PluginDir::with(&["sysctl", "tcp_buffer"]);
    let file = limits.file();
    let mut args = vec!["--limits", file.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    let daemon = Daemon::start_tuner(&plugins, &args, "tcp_buffer");
    Setup { tx, rx, link, cookie, limits, pace: AtomicU64::new(0), cc: None, _plugins: plugins, daemon }
}

/// Stops a flow when dropped, also when the code watching it panics (else
/// the scope would wait for the flow forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Run the flow while `during` watches; the flow stops when it returns.
fn with_flow<R>(s: &Setup, during: impl FnOnce() -> R + Send) -> R
where
    R: Send,
{
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| flow(&s.tx, &s.rx, &s.link, &stop, &s.pace, s.cc));
        let _stop = StopOnDrop(&stop);
        during()
    })
}

/// A flow held by the limits (the clamp is logged), then the limits are
/// loosened. The flow ends there: a flow whose buffer stays at its limit
/// stops asking for more (the kernel grows a receive buffer only while the
/// amount read per round trip grows), so the next flow, ramping up, is the
/// one that gets the raise; the held one gave the window before it.
fn hold_then_loosen(s: &Setup, limits: &str) {
    with_flow(s, || hold(s, limits));
}

fn hold(s: &Setup, limits: &str) {
    let clamp = format!("tuner 'tcp_buffer' wanted {RMEM} (");
    assert!(s.daemon.wait_for_log(&clamp, TIMEOUT), "tcp_buffer never tried to raise rmem:\n{}", s.daemon.log());
    // A window of samples at the held value.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(s.rx.sysctl(RMEM), SMALL_RMEM, "the limits file did not hold the tuner:\n{}", s.daemon.log());
    s.limits.write(limits);
    s.daemon.signal(libc::SIGHUP);
    assert!(s.daemon.wait_for_log("limits reloaded", TIMEOUT), "{}", s.daemon.log());
}

#[test]
fn a_receive_buffer_raise_on_a_delayed_path_is_judged_helped() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    if !bpftune_tests::delay::tun_or_skip("verdicts::a_receive_buffer_raise_on_a_delayed_path_is_judged_helped") {
        return;
    }
    if !per_netns_policy_or_skip("verdicts::a_receive_buffer_raise_on_a_delayed_path_is_judged_helped") {
        return;
    }
    let s = setup("vh", &[]);
    hold_then_loosen(&s, "");
    let found = with_flow(&s, || {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while std::time::Instant::now() < deadline {
            if verdicts(&s.daemon.log(), s.cookie).iter().any(|l| l.contains(": helped; ")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    });
    let log = s.daemon.log();
    assert!(found, "no 'helped' verdict:\n{log}");
    let line = verdicts(&log, s.cookie).into_iter().find(|l| l.contains(": helped; ")).unwrap_or_default();
    eprintln!("{line}");
    // The numbers: bytes received per second, before and after.
    assert!(line.contains("bytes received (IpExt InOctets) "), "{line}");
    assert!(line.contains(" before, ") && line.ends_with(" after"), "{line}");
    assert!(!log.contains("Reverting "), "nothing hurt here:\n{log}");

    // In -q summary and -q jevents, and kept in the journal.
    let summary = query(&["summary"]);
    assert!(summary.contains(&format!("# Summary: verdicts on changes of '{RMEM}': ")), "{summary}");
    assert!(!summary.contains(" 0 helped,"), "{summary}");
    let events = query(&["jevents"]);
    assert!(events.contains("Verdict for change net.ipv4.tcp_rmem"), "{events}");
    let journal = std::fs::read_to_string(JOURNAL).unwrap_or_default();
    assert!(journal.contains("\"op\":\"verdict\"") && journal.contains("\"verdict\":\"helped\""), "{journal}");
    // And in -q metrics: counted, nothing reverted.
    let metrics = query(&["metrics"]);
    let series = format!("{{tuner=\"tcp_buffer\",tunable=\"{RMEM}\"");
    let helped = metrics
        .lines()
        .find(|l| l.starts_with(&format!("bpftune_verdicts_total{series},verdict=\"helped\"}} ")))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(helped.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(metrics.contains(&format!("bpftune_reverts_total{series}}} 0\n")), "{metrics}");

    let (status, log) = s.daemon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains(&format!("# Summary: verdicts on changes of '{RMEM}': ")), "{log}");
}

#[test]
fn a_change_followed_by_a_slower_flow_is_reverted_and_backed_off() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    if !bpftune_tests::delay::tun_or_skip("verdicts::a_change_followed_by_a_slower_flow_is_reverted_and_backed_off") {
        return;
    }
    if !per_netns_policy_or_skip("verdicts::a_change_followed_by_a_slower_flow_is_reverted_and_backed_off") {
        return;
    }
    let s = setup("vr", &["-R"]);
    let raised = format!("change {RMEM}(min default max) from ({SMALL_RMEM})");
    // One step up at most (a burst of raises would cut each other's
    // after-windows short).
    hold_then_loosen(&s, &format!("{RMEM} max - - 163840 netns {}\n", s.cookie));
    let reverted = with_flow(&s, || {
        assert!(s.daemon.wait_for_log(&raised, TIMEOUT), "no raise after loosening:\n{}", s.daemon.log());
        // The work gets slower right after the change (the sender, not the
        // path: a slower path would also queue, and the tuner's own
        // latency check would then lower the buffer again, itself a change).
        s.pace.store(400_000, Ordering::Relaxed);
        s.daemon.wait_for_log(&format!("Reverting {RMEM} from ("), TIMEOUT)
    });
    let log = s.daemon.log();
    assert!(reverted, "no revert:\n{log}");
    let hurt = verdicts(&log, s.cookie).into_iter().find(|l| l.contains(": hurt; ")).unwrap_or_default();
    assert!(hurt.contains("bytes received (IpExt InOctets) "), "no 'hurt' verdict:\n{log}");
    eprintln!("{hurt}");
    // The revert puts back the value that change replaced, through the
    // writer (logged with the back-off), in that namespace only.
    let line =
        log.lines().find(|l| l.starts_with("bpftune: Reverting ") || l.contains("Reverting ")).unwrap_or_default();
    assert!(line.contains(&format!("(netns cookie {})", s.cookie)), "{line}");
    assert!(line.contains("as the change hurt; tuner 'tcp_buffer' backs off it there for 60 s"), "{line}");
    let back_to = line.split(") -> (").nth(1).and_then(|r| r.split(')').next()).unwrap_or_default().to_string();
    assert_eq!(s.rx.sysctl(RMEM), back_to, "{line}");
    let summary = query(&["summary"]);
    assert!(summary.contains("1 hurt (1 reverted)") || summary.contains(" hurt (1 reverted)"), "{summary}");
    let journal = std::fs::read_to_string(JOURNAL).unwrap_or_default();
    assert!(journal.contains("\"verdict\":\"hurt\"") && journal.contains("\"reverted\":true"), "{journal}");

    // While it backs off, the tuner's further raises there are skipped.
    s.pace.store(0, Ordering::Relaxed);
    let more = with_flow(&s, || s.daemon.wait_for_log("backs off it in netns", Duration::from_secs(20)));
    assert!(more, "no raise held back by the back-off:\n{}", s.daemon.log());

    // -R: the original comes back at exit.
    let (status, log) = s.daemon.stop();
    assert!(status.success(), "{log}");
    assert_eq!(s.rx.sysctl(RMEM), SMALL_RMEM, "{log}");
}

#[test]
fn no_revert_judges_but_keeps_the_change() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    if !bpftune_tests::delay::tun_or_skip("verdicts::no_revert_judges_but_keeps_the_change") {
        return;
    }
    if !per_netns_policy_or_skip("verdicts::no_revert_judges_but_keeps_the_change") {
        return;
    }
    let s = setup("vn", &["--no-revert"]);
    let raised = format!("change {RMEM}(min default max) from ({SMALL_RMEM}) -> (4096 131072 163840)");
    hold_then_loosen(&s, &format!("{RMEM} max - - 163840 netns {}\n", s.cookie));
    let hurt = with_flow(&s, || {
        assert!(s.daemon.wait_for_log(&raised, TIMEOUT), "no raise after loosening:\n{}", s.daemon.log());
        s.pace.store(400_000, Ordering::Relaxed);
        s.daemon.wait_for_log(": hurt; bytes received", TIMEOUT)
    });
    let log = s.daemon.log();
    assert!(hurt, "no 'hurt' verdict:\n{log}");
    assert!(!log.contains("Reverting "), "--no-revert reverted:\n{log}");
    assert_eq!(s.rx.sysctl(RMEM), "4096 131072 163840");
    let (status, log) = s.daemon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("1 hurt (0 reverted)"), "{log}");
}

/// The issue's harmful change: on a path whose rate, not the receive
/// window, limits the flow, a loss-based sender (cubic) fills the path's
/// queue up to the window. Raising the receive buffer moves no more bytes
/// and only makes the data wait longer; the daemon judges it `hurt` by the
/// round-trip time guard (bytes received unchanged, RTT of the active
/// connections up), reverts it and backs off.
///
/// The flow that was held keeps running while a second one starts (whose
/// first event brings the raise), and stops once the raise is logged:
/// neither window around the change has a gap in the traffic, and after it
/// one flow runs with the larger buffer where one ran with the smaller.
#[test]
fn a_receive_buffer_raise_that_only_adds_latency_is_judged_hurt_and_reverted() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let name = "verdicts::a_receive_buffer_raise_that_only_adds_latency_is_judged_hurt_and_reverted";
    if !bpftune_tests::delay::tun_or_skip(name) || !per_netns_policy_or_skip(name) {
        return;
    }
    // 2 MB/s and a 10 ms round trip: a 20 kB path; a 128 KiB buffer's
    // window already keeps it full and queues the rest.
    let mut s = setup_path("vl", &[], Duration::from_millis(5), 2_000_000);
    s.cc = Some("cubic");
    let raised = format!("change {RMEM}(min default max) from ({SMALL_RMEM})");
    let loosen = format!("{RMEM} max - - 163840 netns {}\n", s.cookie);
    let s = &s;
    let (stop_held, stop_next) = (AtomicBool::new(false), AtomicBool::new(false));
    let (stop_held, stop_next) = (&stop_held, &stop_next);
    let reverted = std::thread::scope(|sc| {
        let _a = StopOnDrop(stop_held);
        let _b = StopOnDrop(stop_next);
        sc.spawn(move || flow(&s.tx, &s.rx, &s.link, stop_held, &s.pace, s.cc));
        hold(s, &loosen);
        sc.spawn(move || flow(&s.tx, &s.rx, &s.link, stop_next, &s.pace, s.cc));
        assert!(s.daemon.wait_for_log(&raised, TIMEOUT), "no raise after loosening:\n{}", s.daemon.log());
        stop_held.store(true, Ordering::Relaxed);
        s.daemon.wait_for_log(&format!("Reverting {RMEM} from ("), TIMEOUT)
    });
    let log = s.daemon.log();
    assert!(reverted, "no revert:\n{log}");
    let hurt = verdicts(&log, s.cookie).into_iter().find(|l| l.contains(": hurt; ")).unwrap_or_default();
    eprintln!("{hurt}");
    // Judged by the guard, with both windows' numbers.
    assert!(hurt.contains("; RTT of active TCP sockets (sock_diag) "), "no RTT guard in:\n{log}");
    let ms = |part: &str| -> Option<f64> { part.trim().split(' ').next()?.parse().ok() };
    let guard = hurt.split("(sock_diag) ").nth(1).unwrap_or_default();
    let (before, after) = guard.split_once(" before, ").unwrap_or_default();
    let (before, after) = (ms(before), ms(after));
    assert!(matches!((before, after), (Some(b), Some(a)) if a > b), "RTT before {before:?}, after {after:?}: {hurt}");
    let line = log.lines().find(|l| l.contains("Reverting ")).unwrap_or_default();
    assert!(line.contains("backs off it there for 60 s"), "{line}");
    assert_eq!(s.rx.sysctl(RMEM), SMALL_RMEM, "{line}");
    // The journal keeps the guard's numbers with the verdict.
    let journal = std::fs::read_to_string(JOURNAL).unwrap_or_default();
    assert!(journal.contains(r#""guard":"tcp_rtt","guard_before":"#), "{journal}");
    // A new flow asks for more again: held back by the back-off.
    let more = with_flow(s, || s.daemon.wait_for_log("backs off it in netns", Duration::from_secs(20)));
    assert!(more, "no raise held back by the back-off:\n{}", s.daemon.log());
}
