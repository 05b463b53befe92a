//! Harness for the root integration tests: a machine-wide test lock, staged
//! plugin directories, the real daemon as a child process with its log, and
//! network namespaces with veth links that are removed even when a test
//! fails. Tests change sysctls inside their own namespaces, or through
//! [`SysctlGuard`], which restores the value on drop.

pub mod delay;
pub use delay::DelayLink;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Root of all test scratch state (root-owned, so plugins staged below it
/// pass the daemon's trust checks).
pub const TEST_RUN_DIR: &str = "/run/bpftune-tests";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{tag}-{}-{n}", std::process::id())
}

/// True when running as root (the integration tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Backstop for harness pieces that act on the host (the test lock,
/// scratch directories): a test that reaches them without
/// [`require_root!`] first fails loudly rather than half-running.
pub fn assert_root() {
    assert!(is_root(), "integration tests need root (run `make test` as root); start the test with require_root!()");
}

/// The running test's name: libtest names each test's thread after it.
pub fn current_test_name() -> String {
    std::thread::current().name().unwrap_or("unknown test").to_string()
}

/// For a test that needs root: true when running as root; otherwise the
/// skip is printed and recorded (see [`skip`], counted by `make test`) and
/// the test returns. Use it through [`require_root!`].
pub fn root_or_skip(test: &str) -> bool {
    let root = is_root();
    if !root {
        skip(test, "needs root (BPF, network namespaces, host sysctls): run the integration tests as root");
    }
    root
}

/// First statement of every test that needs root: as another user the
/// test is skipped, with the reason printed and recorded, instead of
/// failing. As root (CI, `make test`) it does nothing.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::root_or_skip(&$crate::current_test_name()) {
            return;
        }
    };
}

/// The daemon's rollback journal: host state every daemon run writes.
pub const JOURNAL: &str = "/var/lib/bpftune/journal";

/// Saves the rollback journal and removes it, so a test starts without
/// entries from earlier runs; puts it back (or removes the test's) on drop,
/// leaving the host's journal as it was.
pub struct JournalGuard {
    saved: Option<Vec<u8>>,
}

impl JournalGuard {
    pub fn clear() -> Self {
        let saved = fs::read(JOURNAL).ok();
        let _ = fs::remove_file(JOURNAL);
        Self { saved }
    }
}

impl Drop for JournalGuard {
    fn drop(&mut self) {
        match &self.saved {
            Some(b) => {
                let _ = fs::write(JOURNAL, b);
            }
            None => {
                let _ = fs::remove_file(JOURNAL);
            }
        }
    }
}

/// The daemon's run directory (lock file, query socket, default cgroup).
pub const RUN_DIR: &str = "/var/run/bpftune";
/// The daemon's state directory (rollback journal).
pub const STATE_DIR: &str = "/var/lib/bpftune";

/// Removes the daemon's run and state directories after a test if they did
/// not exist before it, unmounting a cgroup2 mount a killed daemon left.
pub struct DirsGuard {
    run_existed: bool,
    state_existed: bool,
}

impl DirsGuard {
    pub fn new() -> Self {
        Self { run_existed: Path::new(RUN_DIR).exists(), state_existed: Path::new(STATE_DIR).exists() }
    }
}

impl Default for DirsGuard {
    fn default() -> Self {
        Self::new()
    }
}

fn is_mount_point(path: &str) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else { return false };
    let real = fs::canonicalize(path).map(|p| p.display().to_string()).unwrap_or_else(|_| path.to_string());
    mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(real.as_str()))
}

impl Drop for DirsGuard {
    fn drop(&mut self) {
        if !self.run_existed {
            let cgroup = format!("{RUN_DIR}/cgroupv2");
            if is_mount_point(&cgroup) {
                let _ = Command::new("umount").args(["-l", &cgroup]).output();
            }
            // Never recurse into a cgroup file system that is still mounted.
            if !is_mount_point(&cgroup) {
                let _ = fs::remove_dir_all(RUN_DIR);
            }
        }
        if !self.state_existed {
            let _ = fs::remove_dir_all(STATE_DIR);
        }
    }
}

/// Held for the whole test: serialises every test that starts a daemon or
/// touches global state, across test binaries and processes, and keeps the
/// host's rollback journal out of the test (restored on drop) and the
/// daemon's directories as they were.
pub struct TestLock {
    // Dropped first, while the lock is still held.
    _journal: JournalGuard,
    _dirs: DirsGuard,
    _file: File,
}

pub fn test_lock() -> TestLock {
    assert_root();
    let _ = fs::DirBuilder::new().recursive(true).mode(0o755).create(TEST_RUN_DIR);
    let file = File::create(Path::new(TEST_RUN_DIR).join("lock")).expect("create test lock");
    // SAFETY: blocking flock on an fd we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock test lock");
    let dirs = DirsGuard::new();
    TestLock { _journal: JournalGuard::clear(), _dirs: dirs, _file: file }
}

/// `target/<profile>`, where the daemon and tuner libraries were built.
pub fn build_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BPFTUNE_BUILD_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary>
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).expect("build dir")
}

/// The daemon binary under test.
pub fn daemon_binary() -> PathBuf {
    let bin = build_dir().join("bpftune");
    assert!(
        bin.exists(),
        "{} missing: build the workspace first (`make stage` or `cargo build --workspace`)",
        bin.display()
    );
    bin
}

/// Path of a built tuner library (`lib<name>_tuner.so`).
pub fn built_tuner(name: &str) -> PathBuf {
    let lib = build_dir().join(format!("lib{name}_tuner.so"));
    assert!(lib.exists(), "{} missing: build the workspace first", lib.display());
    lib
}

/// A root-owned directory (0755) of plugins under their installed names,
/// removed on drop.
pub struct PluginDir {
    pub path: PathBuf,
}

impl PluginDir {
    /// Empty directory.
    pub fn empty() -> Self {
        assert_root();
        let _ = fs::DirBuilder::new().recursive(true).mode(0o755).create(TEST_RUN_DIR);
        let path = Path::new(TEST_RUN_DIR).join(unique("plugins"));
        fs::DirBuilder::new().mode(0o755).create(&path).expect("create plugin dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod plugin dir");
        Self { path }
    }

    /// Directory with these tuners (by crate short name, e.g. "sysctl").
    pub fn with(tuners: &[&str]) -> Self {
        let dir = Self::empty();
        for t in tuners {
            dir.add(t);
        }
        dir
    }

    /// Copy tuner `name` in as `<name>_tuner.so` (mode 0644).
    pub fn add(&self, name: &str) -> PathBuf {
        self.add_as(name, &format!("{name}_tuner.so"))
    }

    /// Copy tuner `name` in under another file name.
    pub fn add_as(&self, name: &str, file_name: &str) -> PathBuf {
        let dst = self.path.join(file_name);
        fs::copy(built_tuner(name), &dst).expect("copy tuner");
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).expect("chmod tuner");
        dst
    }

    /// Write arbitrary bytes as a plugin file (for bad-plugin tests).
    pub fn add_bytes(&self, file_name: &str, bytes: &[u8]) -> PathBuf {
        let dst = self.path.join(file_name);
        fs::write(&dst, bytes).expect("write plugin");
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).expect("chmod plugin");
        dst
    }
}

impl Drop for PluginDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The real daemon, logging to a file; killed on drop if still running.
pub struct Daemon {
    child: Option<Child>,
    log_path: PathBuf,
}

impl Daemon {
    /// `bpftune -s -d --system-libdir DIR -l DIR <extra>`; waits until it has
    /// loaded its tuners (or exited).
    pub fn start(plugins: &PluginDir, extra: &[&str]) -> Self {
        Self::start_with_env(plugins, extra, &[])
    }

    /// [`Self::start`], then check that tuner `name` initialised. A daemon
    /// started outside the test lock (by hand) holds the run lock: wait for
    /// it to go (up to two minutes) rather than fail.
    pub fn start_tuner(plugins: &PluginDir, extra: &[&str], name: &str) -> Self {
        Self::start_tuner_with_env(plugins, extra, &[], name)
    }

    pub fn start_with_env(plugins: &PluginDir, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let log_path = Path::new(TEST_RUN_DIR).join(format!("{}.log", unique("daemon")));
        let log = File::create(&log_path).expect("daemon log");
        let log2 = log.try_clone().expect("dup log");
        let dir = plugins.path.to_str().expect("utf8 path");
        let mut cmd = Command::new(daemon_binary());
        cmd.args(["-s", "-d", "--system-libdir", dir, "-l", dir]).args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdin(Stdio::null()).stdout(log).stderr(log2).spawn().expect("spawn bpftune");
        let mut d = Self { child: Some(child), log_path };
        // Ready once it reports namespaces found (after loading tuners), or exits.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if d.log().contains("network namespaces besides the global one") || d.has_exited() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Count of lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Send a signal.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// SIGINT, then wait (up to 60 s); returns the exit status and the log.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.signal(libc::SIGINT);
        self.wait_exit(Duration::from_secs(60))
    }

    /// Wait for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("daemon running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return (status, self.log());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let status = child.wait().expect("wait");
                panic!("daemon did not exit in time ({status}); log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_file(&self.log_path);
    }
}

fn run(cmd: &[&str]) -> Output {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A network namespace made by a test (with `lo` up), deleted on drop along
/// with the processes started in it.
pub struct Netns {
    pub name: String,
    children: Vec<Child>,
}

static SUBNET: AtomicU32 = AtomicU32::new(0);

impl Netns {
    pub fn new(tag: &str) -> Self {
        assert_root();
        let name = format!("bpftt-{}", unique(tag));
        run(&["ip", "netns", "add", &name]);
        let ns = Self { name, children: Vec::new() };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec <ns> <cmd…>`, which must succeed.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        run(&full)
    }

    /// Like [`exec`] but the result is returned, not asserted.
    pub fn try_exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.name]).args(cmd).output().expect("ip netns exec")
    }

    /// Start a background process in the namespace; killed on drop.
    pub fn spawn(&mut self, cmd: &[&str]) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in netns");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Run `f` on a thread inside this namespace (sockets it creates stay
    /// in the namespace).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).expect("open netns");
                // SAFETY: setns on a valid nsfs fd; only this thread moves.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}");
                f()
            })
            .join()
            .expect("netns thread")
        })
    }

    /// Read a sysctl inside the namespace.
    pub fn sysctl(&self, name: &str) -> String {
        sysctl_read(Some(self), name)
    }

    /// Write a sysctl inside the namespace (it dies with the namespace).
    pub fn set_sysctl(&self, name: &str, value: &str) {
        sysctl_write(Some(self), name, value);
    }

    /// Inode of the namespace.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(format!("/run/netns/{}", self.name)).map(|m| m.ino()).expect("netns inode")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A veth link between two namespaces (`None` = the global namespace) with
/// addresses `10.250.N.1/24` (side a) and `10.250.N.2/24` (side b). Removed
/// with either namespace, or on drop.
pub struct Veth {
    pub a_addr: Ipv4Addr,
    pub b_addr: Ipv4Addr,
    pub a_if: String,
    pub b_if: String,
    a_ns: Option<String>,
    b_ns: Option<String>,
    subnet: u8,
}

impl Veth {
    pub fn connect(a: Option<&Netns>, b: Option<&Netns>) -> Self {
        let n = (std::process::id() % 100) * 2 + SUBNET.fetch_add(1, Ordering::SeqCst) % 50 + 1;
        let n = n % 250;
        let tag = format!("{}{}", std::process::id() % 10000, SUBNET.load(Ordering::SeqCst));
        let a_if = format!("bta{tag}");
        let b_if = format!("btb{tag}");
        run(&["ip", "link", "add", &a_if, "type", "veth", "peer", "name", &b_if]);
        let a_addr = Ipv4Addr::new(10, 250, n as u8, 1);
        let b_addr = Ipv4Addr::new(10, 250, n as u8, 2);
        for (ifname, ns, addr) in [(&a_if, a, a_addr), (&b_if, b, b_addr)] {
            let cidr = format!("{addr}/24");
            match ns {
                Some(ns) => {
                    run(&["ip", "link", "set", ifname, "netns", &ns.name]);
                    ns.exec(&["ip", "addr", "add", &cidr, "dev", ifname]);
                    ns.exec(&["ip", "link", "set", ifname, "up"]);
                }
                None => {
                    run(&["ip", "addr", "add", &cidr, "dev", ifname]);
                    run(&["ip", "link", "set", ifname, "up"]);
                }
            }
        }
        Self {
            a_addr,
            b_addr,
            a_if,
            b_if,
            a_ns: a.map(|n| n.name.clone()),
            b_ns: b.map(|n| n.name.clone()),
            subnet: n as u8,
        }
    }

    /// Also give the link IPv6 addresses: `fd00:bf7e:0:N::1/64` (side a)
    /// and `fd00:bf7e:0:N::2/64` (side b), unique local addresses with no
    /// duplicate address detection (usable at once). Returns (a, b).
    pub fn add_ipv6(&self) -> (Ipv6Addr, Ipv6Addr) {
        let n = u16::from(self.subnet);
        let a = Ipv6Addr::new(0xfd00, 0xbf7e, 0, n, 0, 0, 0, 1);
        let b = Ipv6Addr::new(0xfd00, 0xbf7e, 0, n, 0, 0, 0, 2);
        for (ifname, ns, addr) in [(&self.a_if, &self.a_ns, a), (&self.b_if, &self.b_ns, b)] {
            let cidr = format!("{addr}/64");
            let mut cmd: Vec<&str> = Vec::new();
            if let Some(ns) = ns {
                cmd.extend(["ip", "-n", ns.as_str()]);
            } else {
                cmd.push("ip");
            }
            cmd.extend(["addr", "add", &cidr, "dev", ifname.as_str(), "nodad"]);
            run(&cmd);
        }
        (a, b)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = match &self.a_ns {
            Some(ns) => Command::new("ip").args(["-n", ns, "link", "del", &self.a_if]).output(),
            None => Command::new("ip").args(["link", "del", &self.a_if]).output(),
        };
    }
}

/// Read a sysctl (global namespace if `ns` is None).
pub fn sysctl_read(ns: Option<&Netns>, name: &str) -> String {
    let out = match ns {
        Some(ns) => ns.exec(&["sysctl", "-n", name]),
        None => run(&["sysctl", "-n", name]),
    };
    String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Write a sysctl (global namespace if `ns` is None).
pub fn sysctl_write(ns: Option<&Netns>, name: &str, value: &str) {
    let arg = format!("{name}={value}");
    match ns {
        Some(ns) => ns.exec(&["sysctl", "-q", "-w", &arg]),
        None => run(&["sysctl", "-q", "-w", &arg]),
    };
}

/// Integers of a sysctl value.
pub fn values(text: &str) -> Vec<i64> {
    text.split_whitespace().filter_map(|t| t.parse().ok()).collect()
}

/// Saves a global sysctl and restores it on drop.
pub struct SysctlGuard {
    name: String,
    saved: String,
}

impl SysctlGuard {
    pub fn global(name: &str) -> Self {
        Self { name: name.to_string(), saved: sysctl_read(None, name) }
    }
    /// Save, then set a new value.
    pub fn set(name: &str, value: &str) -> Self {
        let g = Self::global(name);
        sysctl_write(None, name, value);
        g
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        let _ = Command::new("sysctl").args(["-q", "-w", &format!("{}={}", self.name, self.saved)]).output();
    }
}

/// Bulk TCP transfer of `bytes` from `sender` to a listener in `receiver`
/// (None = global namespace) at `addr`, bounded by `timeout`. `rcvbuf`
/// locks the receiver's buffer with SO_RCVBUF. Returns bytes received.
pub fn bulk_transfer(
    sender: Option<&Netns>,
    receiver: Option<&Netns>,
    addr: impl Into<IpAddr>,
    bytes: u64,
    rcvbuf: Option<usize>,
    timeout: Duration,
) -> u64 {
    let addr: IpAddr = addr.into();
    let listener = in_ns(receiver, || {
        let l = TcpListener::bind(SocketAddr::from((addr, 0))).expect("bind");
        if let Some(size) = rcvbuf {
            set_rcvbuf(l.as_raw_fd(), size);
        }
        l
    });
    let port = listener.local_addr().expect("local addr").port();
    std::thread::scope(|s| {
        let rx = s.spawn(move || -> u64 {
            let (mut conn, _) = match listener.accept() {
                Ok(c) => c,
                Err(_) => return 0,
            };
            let _ = conn.set_read_timeout(Some(timeout));
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n as u64,
                }
            }
            total
        });
        let sent = in_ns(sender, || TcpStream::connect_timeout(&SocketAddr::from((addr, port)), timeout));
        if let Ok(mut conn) = sent {
            let _ = conn.set_write_timeout(Some(timeout));
            let chunk = vec![0x5au8; 1 << 16];
            let mut left = bytes;
            let deadline = Instant::now() + timeout;
            while left > 0 && Instant::now() < deadline {
                let n = chunk.len().min(left as usize);
                match conn.write(&chunk[..n]) {
                    Ok(0) | Err(_) => break,
                    Ok(w) => left -= w as u64,
                }
            }
            let _ = conn.shutdown(std::net::Shutdown::Write);
        }
        rx.join().unwrap_or(0)
    })
}

/// Open `n` short TCP connections over loopback in `ns` (None: the global
/// namespace), 40 ms apart: BPF rate-limits events per namespace and
/// tunable to one per 25 ms.
pub fn loopback_connections(ns: Option<&Netns>, n: usize) {
    in_ns(ns, || {
        let l = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
        let addr = l.local_addr().expect("addr");
        for _ in 0..n {
            let c = TcpStream::connect(addr).expect("connect");
            let (s, _) = l.accept().expect("accept");
            drop(c);
            drop(s);
            std::thread::sleep(Duration::from_millis(40));
        }
    });
}

/// SO_RCVBUF on a socket fd (locks the receive buffer size).
pub fn set_rcvbuf(fd: i32, size: usize) {
    let v = size as libc::c_int;
    // SAFETY: setsockopt with a valid int option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Run `f` in `ns`, or right here for the global namespace.
pub fn in_ns<R: Send>(ns: Option<&Netns>, f: impl FnOnce() -> R + Send) -> R {
    match ns {
        Some(ns) => ns.run(f),
        None => f(),
    }
}

/// Count of open fds of a process.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Resident set size of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Read a whole file as a string (empty if missing).
pub fn read_to_string(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Errors carry context in panics; keep io::Error in scope for users.
pub type IoResult<T> = io::Result<T>;

/// Whether sysctl `name` (dotted) exists on this kernel.
pub fn sysctl_exists(name: &str) -> bool {
    Path::new("/proc/sys").join(name.replace('.', "/")).exists()
}

impl SysctlGuard {
    /// Save `name` if this kernel has it.
    pub fn try_global(name: &str) -> Option<Self> {
        sysctl_exists(name).then(|| Self::global(name))
    }
}

/// Where skipped tests are listed for `make test`'s closing count.
pub fn skip_log() -> PathBuf {
    build_dir().join("test-skips.log")
}

/// This test cannot run here because of `feature` (a kernel feature it
/// lacks, or root): say so on one line (and in [`skip_log`], which `make
/// test` counts and prints), and let the caller return.
pub fn skip(test: &str, feature: &str) {
    let line = format!("SKIP {test}: {feature}");
    // Straight to fd 2, past libtest's capture of eprintln!: the reason is
    // printed even for a test that then passes.
    let _ = writeln!(io::stderr(), "{line}");
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(skip_log()) {
        let _ = writeln!(f, "{line}");
    }
}

impl Daemon {
    /// [`Self::start_tuner`] with extra environment variables.
    pub fn start_tuner_with_env(plugins: &PluginDir, extra: &[&str], env: &[(&str, &str)], name: &str) -> Self {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut daemon = Self::start_with_env(plugins, extra, env);
        while daemon.log().contains("another bpftune is already running") && Instant::now() < deadline {
            drop(daemon);
            std::thread::sleep(Duration::from_secs(1));
            daemon = Self::start_with_env(plugins, extra, env);
        }
        assert!(daemon.log().contains(&format!("sucessfully initialized tuner {name}")), "{}", daemon.log());
        daemon
    }
}

/// Whether this kernel has network namespace cookies (`SO_NETNS_COOKIE`,
/// Linux 5.14): without them bpftune's policy is global-only, and a test of
/// per-namespace behaviour cannot run.
pub fn netns_cookies() -> bool {
    current_netns_cookie().is_ok()
}

/// The cookie of the network namespace the calling thread is in
/// (`SO_NETNS_COOKIE` on a fresh socket).
pub fn current_netns_cookie() -> io::Result<u64> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt into a u64 of the size given, on a socket we own.
    let rc =
        unsafe { libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, 71, (&mut cookie as *mut u64).cast(), &mut len) };
    if rc == 0 { Ok(cookie) } else { Err(io::Error::last_os_error()) }
}

/// For a test of per-namespace behaviour: true if the kernel can do it;
/// otherwise the skip is recorded (see [`skip`]) and the test returns.
pub fn per_netns_policy_or_skip(test: &str) -> bool {
    let ok = netns_cookies();
    if !ok {
        skip(test, "no network namespace cookies (SO_NETNS_COOKIE, Linux 5.14): bpftune's policy is global-only");
    }
    ok
}

/// `bpftune -S` with the tuners in `plugins` (and extra environment):
/// (exit code, what it printed on stderr).
pub fn support_report(plugins: &PluginDir, env: &[(&str, &str)]) -> (i32, String) {
    let dir = plugins.path.to_str().expect("utf8 path");
    let out = Command::new(daemon_binary())
        .args(["-S", "--system-libdir", dir, "-l", dir])
        .envs(env.iter().copied())
        .output()
        .expect("run bpftune -S");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The running kernel's (major, minor), from `kernel.osrelease`; (0, 0) if
/// it cannot be read.
pub fn kernel_version() -> (u32, u32) {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Poll `f` every 100 ms until it holds or `timeout` passes; a last look
/// after the deadline decides.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}
