//! A network path with real delay between two test namespaces, for tests
//! whose tuners react to round-trip time or window limits: these kernels
//! have no netem (sch_netem), so the delay is made in user space by
//! forwarding packets between two TUN devices through a delay queue.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Netns;

/// Prefix of the forwarder threads' names (seen in `/proc/self/task/*/comm`).
pub const THREAD_PREFIX: &str = "delaylink";

/// How long a forwarder thread waits before looking at the stop flag again:
/// bounds how long [`DelayLink`]'s drop takes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Packets queued in one direction beyond this many bytes are dropped, as a
/// real link's queue would drop them (only reached with a rate cap or a
/// stalled writer).
pub const DEFAULT_QUEUE_BYTES: usize = 32 << 20;

/// Transmit queue length of each TUN device: the stack's bursts wait there
/// for the reader thread rather than being dropped.
const TXQUEUELEN: &str = "10000";

/// Largest packet read from a TUN device.
const READ_BUF: usize = 64 << 10;

static LINKS: AtomicU32 = AtomicU32::new(0);

/// A point-to-point IPv4 link between two namespaces with a fixed one-way
/// `delay` (and optionally a rate cap), made of one TUN device in each
/// namespace and forwarder threads between them. `a_addr` (side a) and
/// `b_addr` (side b) are `/32` addresses with each other as peer, in
/// `10.251.N.0/24` (no clash with [`crate::Veth`]'s `10.250.N.0/24`).
///
/// Dropping it stops the threads and closes the TUN devices, which deletes
/// them; it also happens when the test panics.
///
/// ```no_run
/// use std::time::Duration;
/// use bpftune_tests::{DelayLink, Netns};
///
/// let (a, b) = (Netns::new("snd"), Netns::new("rcv"));
/// let link = DelayLink::new(&a, &b, Duration::from_millis(20));
/// // A round trip from a to link.b_addr now takes at least 40 ms.
/// let got = bpftune_tests::bulk_transfer(Some(&a), Some(&b), link.b_addr, 1 << 20, None, Duration::from_secs(10));
/// assert_eq!(got, 1 << 20);
/// ```
pub struct DelayLink {
    pub a_addr: Ipv4Addr,
    pub b_addr: Ipv4Addr,
    /// TUN device names in namespace a and b.
    pub a_if: String,
    pub b_if: String,
    /// One-way delay, each direction.
    pub delay: Duration,
    /// Rate cap per direction in bytes per second (None: as fast as the
    /// forwarder goes), as built; [`DelayLink::set_rate`] changes it.
    pub rate: Option<u64>,
    /// The cap in force (0: none), shared with the writers.
    cap: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    threads: Vec<JoinHandle<()>>,
}

/// Packet counters of both directions together.
#[derive(Default)]
struct Stats {
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// A packet on its way, with the time it may leave.
struct Packet {
    due: Instant,
    data: Vec<u8>,
}

impl DelayLink {
    /// Link `a` and `b` with `delay` each way and no rate cap.
    pub fn new(a: &Netns, b: &Netns, delay: Duration) -> Self {
        Self::build(a, b, delay, None)
    }

    /// Link `a` and `b` with `delay` each way and at most `bytes_per_sec`
    /// each way (a token bucket with a 64 KiB burst).
    pub fn with_rate(a: &Netns, b: &Netns, delay: Duration, bytes_per_sec: u64) -> Self {
        assert!(bytes_per_sec > 0, "rate cap must be positive");
        Self::build(a, b, delay, Some(bytes_per_sec))
    }

    fn build(a: &Netns, b: &Netns, delay: Duration, rate: Option<u64>) -> Self {
        assert_ne!(a.name, b.name, "a DelayLink joins two different namespaces");
        let k = LINKS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let n = ((pid % 125) * 2 + k) % 250 + 1;
        let a_addr = Ipv4Addr::new(10, 251, n as u8, 1);
        let b_addr = Ipv4Addr::new(10, 251, n as u8, 2);
        let tag = format!("{}{k}", pid % 10000);
        let a_if = format!("btda{tag}");
        let b_if = format!("btdb{tag}");

        let a_fd = Arc::new(a.run(|| open_tun(&a_if)).unwrap_or_else(|e| panic!("TUN {a_if} in {}: {e}", a.name)));
        let b_fd = Arc::new(b.run(|| open_tun(&b_if)).unwrap_or_else(|e| panic!("TUN {b_if} in {}: {e}", b.name)));
        // From here on an early panic drops the fds, which deletes the devices.
        configure(a, &a_if, a_addr, b_addr);
        configure(b, &b_if, b_addr, a_addr);

        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let cap = Arc::new(AtomicU64::new(rate.unwrap_or(0)));
        let mut link =
            Self { a_addr, b_addr, a_if, b_if, delay, rate, cap: Arc::clone(&cap), stop, stats, threads: Vec::new() };
        // a -> b, then b -> a. Should spawning fail, the link's drop stops
        // the threads already running.
        for (dir, from, to) in [("ab", &a_fd, &b_fd), ("ba", &b_fd, &a_fd)] {
            let queued = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = mpsc::channel();
            let reader = Reader {
                fd: Arc::clone(from),
                tx,
                delay,
                queued: Arc::clone(&queued),
                stop: Arc::clone(&link.stop),
                stats: Arc::clone(&link.stats),
            };
            let writer = Writer {
                fd: Arc::clone(to),
                rx,
                rate: Arc::clone(&cap),
                queued,
                stop: Arc::clone(&link.stop),
                stats: Arc::clone(&link.stats),
            };
            link.threads.push(spawn(format!("{THREAD_PREFIX}-{dir}r"), move || reader.run()));
            link.threads.push(spawn(format!("{THREAD_PREFIX}-{dir}w"), move || writer.run()));
        }
        // The threads hold the only fds left: the devices go with them.
        link
    }

    /// Change the rate cap of both directions from now on (None: no cap).
    pub fn set_rate(&self, bytes_per_sec: Option<u64>) {
        self.cap.store(bytes_per_sec.unwrap_or(0), Ordering::Relaxed);
    }

    /// Packets delivered so far, both directions.
    pub fn forwarded(&self) -> u64 {
        self.stats.forwarded.load(Ordering::Relaxed)
    }

    /// Packets dropped so far (queue full or write error), both directions.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            // A forwarder that panicked has nothing left to clean up.
            let _ = t.join();
        }
        // The last Arc of each fd went with its threads: closing a
        // non-persistent TUN device's fd unregisters the device.
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name).spawn(f).unwrap_or_else(|e| panic!("spawn forwarder thread: {e}"))
}

/// Open `/dev/net/tun` and attach a new TUN device `name` (no packet-info
/// header) in the calling thread's network namespace. Nonblocking and
/// close-on-exec, so `ip` children never keep the device alive.
/// Whether TUN devices can be made here: `/dev/net/tun`, after loading the
/// tun module (CONFIG_TUN=m on Debian) and making the device node (a guest
/// without devtmpfs or udev) if needed. `Err` names what is missing.
pub fn tun_available() -> Result<(), String> {
    let node = std::path::Path::new("/dev/net/tun");
    if node.exists() {
        return Ok(());
    }
    let _ = std::process::Command::new("modprobe").arg("tun").output();
    if !node.exists() && fs::read_to_string("/proc/misc").is_ok_and(|m| m.lines().any(|l| l.ends_with(" tun"))) {
        let _ = fs::create_dir_all("/dev/net");
        let _ = std::process::Command::new("mknod").args(["/dev/net/tun", "c", "10", "200"]).output();
    }
    if node.exists() { Ok(()) } else { Err("no TUN device (/dev/net/tun; CONFIG_TUN)".to_string()) }
}

/// For a test that needs a [`DelayLink`]: true if TUN devices can be made,
/// else the skip is printed (naming the feature) and the test should return.
pub fn tun_or_skip(test: &str) -> bool {
    match tun_available() {
        Ok(()) => true,
        Err(why) => {
            crate::skip(test, &why);
            false
        }
    }
}

fn open_tun(name: &str) -> io::Result<OwnedFd> {
    // SAFETY: open(2) with a NUL-terminated constant path.
    let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly opened fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("interface name {name} too long")));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut libc::ifreq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Address, queue length and link state of one side.
fn configure(ns: &Netns, ifname: &str, local: Ipv4Addr, peer: Ipv4Addr) {
    let local = format!("{local}/32");
    let peer = peer.to_string();
    // No IPv6 link-local address: its router solicitations and MLD reports
    // would only add noise to the link (fails harmlessly without IPv6).
    let _ = ns.try_exec(&["ip", "link", "set", ifname, "addrgenmode", "none"]);
    ns.exec(&["ip", "addr", "add", &local, "peer", &peer, "dev", ifname]);
    ns.exec(&["ip", "link", "set", ifname, "txqueuelen", TXQUEUELEN, "up"]);
}

/// Wait up to [`POLL_INTERVAL`] for `fd` to be readable; false on timeout
/// or interruption.
fn wait_readable(fd: RawFd) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: poll(2) on one pollfd that lives across the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, POLL_INTERVAL.as_millis() as libc::c_int) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    if rc > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
        return Err(io::Error::new(io::ErrorKind::BrokenPipe, "TUN device gone"));
    }
    Ok(rc > 0)
}

/// One direction's reader: stamps each packet read with its due time and
/// queues it for the writer.
struct Reader {
    fd: Arc<OwnedFd>,
    tx: Sender<Packet>,
    delay: Duration,
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

impl Reader {
    fn run(self) {
        let fd = self.fd.as_raw_fd();
        let mut buf = vec![0u8; READ_BUF];
        while !self.stop.load(Ordering::Relaxed) {
            match wait_readable(fd) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => return,
            }
            // Everything queued now, then back to poll.
            loop {
                // SAFETY: read(2) into a buffer of the length given, on an fd we hold.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => break,
                        io::ErrorKind::Interrupted => continue,
                        _ => return,
                    }
                }
                if n == 0 {
                    break;
                }
                let n = n as usize;
                let due = Instant::now() + self.delay;
                if self.queued.load(Ordering::Relaxed) + n > DEFAULT_QUEUE_BYTES {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                self.queued.fetch_add(n, Ordering::Relaxed);
                if self.tx.send(Packet { due, data: buf[..n].to_vec() }).is_err() {
                    return;
                }
            }
        }
    }
}

/// One direction's writer: writes each packet once it is due, in order,
/// within the rate cap.
struct Writer {
    fd: Arc<OwnedFd>,
    rx: Receiver<Packet>,
    /// Bytes per second; 0: no cap.
    rate: Arc<AtomicU64>,
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

/// Burst size of the rate cap's token bucket.
const BUCKET_BYTES: f64 = 65536.0;

impl Writer {
    fn run(self) {
        let fd = self.fd.as_raw_fd();
        let mut tokens = BUCKET_BYTES;
        let mut refilled = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let pkt = match self.rx.recv_timeout(POLL_INTERVAL) {
                Ok(p) => p,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            self.queued.fetch_sub(pkt.data.len(), Ordering::Relaxed);
            if !self.sleep_until(pkt.due) {
                return;
            }
            let rate = self.rate.load(Ordering::Relaxed);
            if rate > 0 {
                let len = pkt.data.len() as f64;
                loop {
                    let now = Instant::now();
                    tokens = (tokens + now.duration_since(refilled).as_secs_f64() * rate as f64).min(BUCKET_BYTES);
                    refilled = now;
                    if tokens >= len {
                        tokens -= len;
                        break;
                    }
                    let wait = Duration::from_secs_f64((len - tokens) / rate as f64);
                    if !self.sleep_until(now + wait) {
                        return;
                    }
                }
            }
            // SAFETY: write(2) of the packet's bytes to an fd we hold.
            let n = unsafe { libc::write(fd, pkt.data.as_ptr().cast(), pkt.data.len()) };
            let counter = if n == pkt.data.len() as isize { &self.stats.forwarded } else { &self.stats.dropped };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sleep until `when` in slices short enough to notice the stop flag;
    /// false if asked to stop.
    fn sleep_until(&self, when: Instant) -> bool {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= when {
                return true;
            }
            std::thread::sleep((when - now).min(POLL_INTERVAL));
        }
    }
}

/// Names of this process's threads that belong to a [`DelayLink`].
pub fn forwarder_threads() -> Vec<String> {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else { return Vec::new() };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with(THREAD_PREFIX))
        .collect()
}

/// How many of this process's fds are open on `/dev/net/tun`.
pub fn open_tun_fds() -> usize {
    let Ok(fds) = fs::read_dir("/proc/self/fd") else { return 0 };
    fds.filter_map(|f| f.ok())
        .filter(|f| fs::read_link(f.path()).is_ok_and(|p| p.as_os_str() == "/dev/net/tun"))
        .count()
}
