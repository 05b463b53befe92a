//! `service bpftune start|status|restart|stop` on this machine, for real:
//! `make install` picks the init script that fits the machine (the LSB SysV
//! script where there is neither systemd as PID 1 nor OpenRC), and after a
//! real install into / the SysV script starts a daemon that answers queries,
//! reports its status with the LSB exit codes, rolls back on stop when
//! /etc/default/bpftune asks for -R, and recovers from a stale pid file after
//! `kill -9`. Everything the install and the test write (files, directories,
//! rc.d links, the log, the pid file) is put back as it was on drop, even
//! when the test fails.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bpftune_tests::{SysctlGuard, TEST_RUN_DIR, build_dir, built_tuner, loopback_connections, sysctl_read, test_lock};

const FIN: &str = "net.ipv4.tcp_fin_timeout";
const DAEMON: &str = "/usr/sbin/bpftune";
const INIT_SCRIPT: &str = "/etc/init.d/bpftune";
const PIDFILE: &str = "/run/bpftune/bpftune.pid";
/// Where the SysV script sends the daemon's output when there is no syslog.
const SERVICE_LOG: &str = "/var/log/bpftune.log";
/// Read by the unit and the SysV script: BPFTUNE_OPTS.
const DEFAULTS: &str = "/etc/default/bpftune";
/// The test fixture tuner (raises tcp_fin_timeout on connections), added to
/// the installed plugin directory so a stop has something to roll back.
const TEST_TUNER: &str = "/usr/lib64/bpftune/test_tuner.so";
const RUNLEVELS: &str = "0123456S";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

fn target_dir() -> PathBuf {
    build_dir().parent().expect("target dir").to_path_buf()
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `make -C <repo> TARGET_DIR=<target> <args>`, isolated from any outer
/// make's variables; the output, whatever the exit status.
fn make_output(args: &[&str]) -> (Output, String) {
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(repo_root()).arg(format!("TARGET_DIR={}", target_dir().display())).args(args);
    for var in ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DESTDIR", "prefix", "libdir", "WITH_OPENRC", "WITH_SYSV"] {
        cmd.env_remove(var);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = describe(&cmd, &out);
    (out, text)
}

fn make(args: &[&str]) {
    let (out, text) = make_output(args);
    assert!(out.status.success(), "{text}");
}

/// `make install NOBUILD=1` installs the man pages `make man` built; the
/// release binaries come from `make stage` (no cargo build here, so a
/// half-edited crate elsewhere in the tree cannot break this test).
fn build_man_pages() {
    make(&["man"]);
}

/// openrc-run is what `make install` looks for to choose OpenRC.
fn has_openrc() -> bool {
    ["/sbin/openrc-run", "/usr/sbin/openrc-run", "/bin/openrc-run", "/usr/bin/openrc-run"]
        .iter()
        .any(|p| Path::new(p).exists())
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o7777
}

/// Regular files and symlinks under `root`, and directories (parents first).
fn tree(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir").filter_map(Result::ok) {
            if entry.file_type().expect("file type").is_dir() {
                dirs.push(entry.path());
                stack.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

/// A root-owned scratch directory under the test run directory; removed on
/// drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        bpftune_tests::assert_root();
        let path = Path::new(TEST_RUN_DIR).join(format!("service-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::DirBuilder::new().recursive(true).mode(0o755).create(&path).expect("create scratch dir");
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn install_puts_the_init_script_that_fits_the_machine() {
    bpftune_tests::require_root!();
    build_man_pages();
    let scratch = Scratch::new("destdir");
    let dest = scratch.0.join("root");
    let destdir = format!("DESTDIR={}", dest.display());
    let vars = ["NOBUILD=1", destdir.as_str(), "prefix=/usr", "libdir=lib64"];
    let with = |extra: &[&'static str]| -> Vec<&str> { vars.iter().chain(extra).copied().collect() };
    let initd = dest.join("etc/init.d/bpftune");
    let confd = dest.join("etc/conf.d/bpftune");
    let unit = dest.join("usr/lib/systemd/system/bpftune.service");

    // Defaults: the unit always; OpenRC only where openrc-run exists, else SysV.
    make(&with(&["install"]));
    assert_eq!(mode(&unit), 0o644);
    assert_eq!(mode(&initd), 0o755);
    let script = fs::read_to_string(&initd).expect("init script");
    if has_openrc() {
        assert!(script.starts_with("#!/sbin/openrc-run\n"), "openrc-run exists, so OpenRC:\n{script}");
        assert!(confd.exists());
    } else {
        assert!(script.starts_with("#!/bin/sh\n### BEGIN INIT INFO\n"), "no openrc-run, so SysV:\n{script}");
        assert!(!confd.exists(), "the SysV script has no /etc/conf.d file");
    }
    make(&with(&["uninstall"]));
    let (left, _) = tree(&dest);
    assert!(left.is_empty(), "uninstall left {left:#?}");

    // The SysV script, asked for: an LSB header update-rc.d can read, the
    // daemon under its installed path, start-stop-daemon and a pid file.
    make(&with(&["install", "WITH_OPENRC=0"]));
    let script = fs::read_to_string(&initd).expect("SysV script");
    for needed in [
        "# Provides:          bpftune\n",
        "# Required-Start:    $network $remote_fs $syslog\n",
        "# Default-Start:     2 3 4 5\n",
        "# Default-Stop:      0 1 6\n",
        "### END INIT INFO\n",
        "DAEMON=/usr/sbin/bpftune\n",
        "PIDFILE=$RUNDIR/bpftune.pid\n",
        "start-stop-daemon --start",
        "start-stop-daemon --stop",
        "/etc/default/bpftune",
        "start)",
        "stop)",
        "status)",
        "restart | force-reload)",
    ] {
        assert!(script.contains(needed), "SysV script lacks '{needed}'");
    }
    for shell in ["sh", "dash", "bash"] {
        if let Ok(out) = Command::new(shell).arg("-n").arg(&initd).output() {
            assert!(out.status.success(), "{shell} -n: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    assert!(!confd.exists());
    make(&with(&["uninstall", "WITH_OPENRC=0"]));
    assert!(tree(&dest).0.is_empty(), "uninstall left the SysV script");

    // OpenRC, asked for: its script and conf.d file instead.
    make(&with(&["install", "WITH_OPENRC=1"]));
    let script = fs::read_to_string(&initd).expect("OpenRC script");
    assert!(script.starts_with("#!/sbin/openrc-run\n"));
    assert_eq!(mode(&confd), 0o644);
    make(&with(&["uninstall", "WITH_OPENRC=1"]));
    assert!(tree(&dest).0.is_empty(), "uninstall left the OpenRC files");

    // Both would be /etc/init.d/bpftune: refused before anything is written.
    let (out, text) = make_output(&with(&["install", "WITH_OPENRC=1", "WITH_SYSV=1"]));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("choose one"), "{text}");
    assert!(tree(&dest).0.is_empty(), "a refused install wrote files");
}

/// What a path held before the test: contents and mode, or nothing.
struct Saved {
    path: PathBuf,
    before: Option<(Vec<u8>, u32)>,
}

impl Saved {
    fn take(path: &Path) -> Self {
        let before = fs::symlink_metadata(path).ok().map(|m| {
            assert!(m.is_file(), "{} is not a regular file: not touching it", path.display());
            (fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())), m.mode() & 0o7777)
        });
        Self { path: path.to_path_buf(), before }
    }

    fn restore(&self) -> Result<(), String> {
        let what = |e: std::io::Error| format!("{}: {e}", self.path.display());
        match &self.before {
            Some((bytes, mode)) => {
                fs::write(&self.path, bytes).map_err(what)?;
                fs::set_permissions(&self.path, fs::Permissions::from_mode(*mode)).map_err(what)
            }
            None => match fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(what(e)),
                _ => Ok(()),
            },
        }
    }
}

fn rc_links() -> BTreeSet<PathBuf> {
    let mut links = BTreeSet::new();
    for level in RUNLEVELS.chars() {
        let Ok(dir) = fs::read_dir(format!("/etc/rc{level}.d")) else { continue };
        for entry in dir.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == 3 + "bpftune".len() && name.ends_with("bpftune") {
                links.insert(entry.path());
            }
        }
    }
    links
}

/// The real install (`make install prefix=/usr libdir=lib64` into /) and
/// every file the test writes next to it. On drop, even after a failed
/// assertion: stop the service, remove rc.d links the test made, `make
/// uninstall`, restore every file that was there before, remove the rest
/// and the directories the install created. Teardown carries on past
/// failures and reports them all.
struct RealInstall {
    saved: Vec<Saved>,
    new_dirs: Vec<PathBuf>,
    links_before: BTreeSet<PathBuf>,
}

impl RealInstall {
    /// `plan` is a scratch `make install DESTDIR=` of the same variables:
    /// the files and directories the real install will write.
    fn new(plan: &Path) -> Self {
        let (files, dirs) = tree(plan);
        let real = |p: &Path| Path::new("/").join(p.strip_prefix(plan).expect("under plan"));
        let mut saved: Vec<Saved> = files.iter().map(|f| Saved::take(&real(f))).collect();
        for extra in [DEFAULTS, SERVICE_LOG, TEST_TUNER] {
            saved.push(Saved::take(Path::new(extra)));
        }
        let mut new_dirs: Vec<PathBuf> = dirs.iter().map(|d| real(d)).filter(|d| !d.exists()).collect();
        new_dirs.reverse(); // children before parents
        let guard = Self { saved, new_dirs, links_before: rc_links() };
        make(&["install", "NOBUILD=1", "prefix=/usr", "libdir=lib64"]);
        guard
    }
}

impl Drop for RealInstall {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        if Path::new(INIT_SCRIPT).exists() {
            let _ = Command::new(INIT_SCRIPT).arg("stop").stdin(Stdio::null()).output();
        }
        if let Some(pid) = pidfile_pid().filter(|&p| alive(p)) {
            // SAFETY: kill(2) on the daemon the test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            if !wait_gone(pid, Duration::from_secs(10)) {
                problems.push(format!("daemon {pid} survived SIGKILL"));
            }
        }
        reap_orphans();
        for link in rc_links().difference(&self.links_before) {
            if let Err(e) = fs::remove_file(link) {
                problems.push(format!("{}: {e}", link.display()));
            }
        }
        let (out, text) = make_output(&["uninstall", "prefix=/usr", "libdir=lib64"]);
        if !out.status.success() {
            problems.push(text);
        }
        for s in &self.saved {
            if let Err(e) = s.restore() {
                problems.push(e);
            }
        }
        for dir in &self.new_dirs {
            if dir.exists() {
                if let Err(e) = fs::remove_dir(dir) {
                    problems.push(format!("{}: {e}", dir.display()));
                }
            }
        }
        let _ = fs::remove_file(PIDFILE);
        if !problems.is_empty() {
            eprintln!("service test teardown could not restore everything:\n{}", problems.join("\n"));
        }
    }
}

/// `service bpftune <action>`: exit status and everything printed.
fn service(action: &str) -> (i32, String) {
    let out = Command::new("service")
        .args(["bpftune", action])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("service (init-system-helpers; `make test-deps`): {e}"));
    reap_orphans();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// The installed `bpftune -q <verb>`: exit status and reply.
fn query(verb: &str) -> (i32, String) {
    let out = Command::new(DAEMON).args(["-q", verb]).stdin(Stdio::null()).output().expect("run bpftune -q");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn pidfile_pid() -> Option<i32> {
    fs::read_to_string(PIDFILE).ok().and_then(|s| s.trim().parse().ok())
}

/// Running and not a zombie.
fn alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    state.is_some_and(|s| s != "Z")
}

/// Wait for `pid` to exit, reaping it (the test is its subreaper).
fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a pid; WNOHANG never blocks.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if !alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reap exited orphans reparented to this process. Only called between
/// commands: no child the standard library still waits for is running.
fn reap_orphans() {
    let mut status = 0;
    // SAFETY: waitpid(-1, WNOHANG) reaps only children that have exited.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

fn log_len() -> usize {
    fs::read(SERVICE_LOG).map(|b| b.len()).unwrap_or(0)
}

fn log_since(offset: usize) -> String {
    let bytes = fs::read(SERVICE_LOG).unwrap_or_default();
    String::from_utf8_lossy(bytes.get(offset..).unwrap_or_default()).into_owned()
}

/// The daemon logs to /var/log/bpftune.log only without a syslog daemon.
fn logs_to_file() -> bool {
    fs::metadata("/dev/log").map(|m| !m.file_type().is_socket()).unwrap_or(true)
}

fn int(s: &str) -> i64 {
    s.trim().parse().unwrap_or_else(|_| panic!("not an integer: {s:?}"))
}

/// Start, then [`check_running`].
fn start_and_check(what: &str) -> i32 {
    let (code, out) = service("start");
    assert_eq!(code, 0, "{what}: service bpftune start:\n{out}\n{}", log_since(0));
    check_running(what)
}

/// The daemon answers `bpftune -q status` (start returns once it does: no
/// waiting here), `service bpftune status` says running, and the pid file
/// names it; its pid.
fn check_running(what: &str) -> i32 {
    let (code, reply) = query("status");
    assert!(code == 0 && !reply.trim().is_empty(), "{what}: bpftune -q status ({code}):\n{reply}");
    let (code, out) = service("status");
    assert_eq!(code, 0, "{what}: service bpftune status:\n{out}");
    assert!(out.contains("bpftune is running"), "{what}: {out}");
    let pid = pidfile_pid().unwrap_or_else(|| panic!("{what}: no pid in {PIDFILE}"));
    assert!(alive(pid), "{what}: pid {pid} from {PIDFILE} is not running");
    let exe = fs::read_link(format!("/proc/{pid}/exe")).expect("daemon exe");
    assert_eq!(exe, Path::new(DAEMON), "{what}: the pid file names another program");
    pid
}

/// Stop: exit 0, the daemon gone, no pid file, and status says "not running"
/// with LSB exit status 3.
fn stop_and_check(what: &str, pid: i32) {
    let (code, out) = service("stop");
    assert_eq!(code, 0, "{what}: service bpftune stop:\n{out}");
    assert!(wait_gone(pid, Duration::from_secs(10)), "{what}: daemon {pid} still running after stop");
    assert!(!Path::new(PIDFILE).exists(), "{what}: stop left {PIDFILE}");
    let (code, out) = service("status");
    assert_eq!(code, 3, "{what}: status after stop:\n{out}");
    assert!(out.contains("bpftune is not running"), "{what}: {out}");
}

#[test]
fn service_starts_stops_rolls_back_and_recovers_from_kill() {
    bpftune_tests::require_root!();
    if Path::new("/run/systemd/system").is_dir() {
        // `service` hands every action to systemctl there; this test is
        // about machines without systemd as PID 1 (the unit is checked by
        // systemd-analyze verify in the packaging tests).
        eprintln!("SKIPPED: systemd is PID 1 here, `service` would run the unit, not the SysV script");
        return;
    }
    assert!(!has_openrc(), "openrc-run exists: `make install` picks OpenRC, which this test does not drive");
    let _lock = test_lock();
    // The daemon the script starts is reparented to the nearest subreaper:
    // this process, which reaps it (an init that does not reap would leave
    // a zombie behind every stop).
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes how orphans of
    // this process's descendants are reparented.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    build_man_pages();
    let plan = Scratch::new("plan");
    make(&["install", "NOBUILD=1", &format!("DESTDIR={}", plan.0.display()), "prefix=/usr", "libdir=lib64"]);
    let real = |f: &Path| Path::new("/").join(f.strip_prefix(&plan.0).expect("under plan"));
    let planned: Vec<PathBuf> = tree(&plan.0).0.iter().map(|f| real(f)).collect();
    let extras = [DEFAULTS, SERVICE_LOG, TEST_TUNER, PIDFILE].map(PathBuf::from);
    let existed: Vec<(PathBuf, bool)> = planned.iter().chain(&extras).map(|p| (p.clone(), p.exists())).collect();
    let links_before = rc_links();
    let _fin = SysctlGuard::set(FIN, "50");
    {
        let install = RealInstall::new(&plan.0);
        let script = fs::read_to_string(INIT_SCRIPT).expect("installed init script");
        assert!(script.contains("### BEGIN INIT INFO"), "not the SysV script:\n{script}");

        // Roll back on stop, and a tuner that changes something to roll back.
        fs::write(DEFAULTS, "BPFTUNE_OPTS=\"-R\"\n").expect("write /etc/default/bpftune");
        fs::copy(built_tuner("test"), TEST_TUNER).expect("install the test tuner");
        fs::set_permissions(TEST_TUNER, fs::Permissions::from_mode(0o644)).expect("chmod test tuner");

        let (code, out) = service("status");
        assert_eq!(code, 3, "status before start:\n{out}");

        let offset = log_len();
        let pid = start_and_check("first start");
        let deadline = Instant::now() + Duration::from_secs(20);
        while int(&sysctl_read(None, FIN)) <= 50 && Instant::now() < deadline {
            loopback_connections(None, 5);
        }
        let tuned = sysctl_read(None, FIN);
        assert!(int(&tuned) > 50, "the test tuner did not raise {FIN}:\n{}", log_since(offset));
        stop_and_check("stop with -R", pid);
        assert_eq!(sysctl_read(None, FIN), "50", "stop did not roll back {FIN} (was {tuned}):\n{}", log_since(offset));
        if logs_to_file() {
            let log = log_since(offset);
            let line = format!("Rolling back sysctl values for '{FIN}' from ({tuned}) to original values (50)");
            assert!(log.contains(&line), "no '{line}' in {SERVICE_LOG}:\n{log}");
        }

        // A restart gives a new daemon.
        let pid = start_and_check("second start");
        let (code, out) = service("restart");
        assert_eq!(code, 0, "restart:\n{out}");
        assert!(wait_gone(pid, Duration::from_secs(10)), "restart left the old daemon {pid}");
        let restarted = check_running("after restart");
        assert_ne!(restarted, pid, "restart kept the same daemon");

        // kill -9 leaves a stale pid file (and the run lock file): status
        // says so (LSB 1), and start recovers.
        // SAFETY: kill(2) on the daemon the service started.
        unsafe { libc::kill(restarted, libc::SIGKILL) };
        assert!(wait_gone(restarted, Duration::from_secs(10)), "SIGKILL did not end {restarted}");
        assert_eq!(pidfile_pid(), Some(restarted), "the killed daemon's pid file is left");
        let (code, out) = service("status");
        assert_eq!(code, 1, "status with a stale pid file:\n{out}");
        assert!(out.contains("stale pid file"), "{out}");
        let recovered = start_and_check("start after kill -9");
        assert_ne!(recovered, restarted);
        stop_and_check("final stop", recovered);

        // The LSB header is one update-rc.d reads: links for every runlevel.
        let out = Command::new("update-rc.d").args(["bpftune", "defaults"]).output().expect("update-rc.d");
        assert!(out.status.success(), "update-rc.d defaults: {}", String::from_utf8_lossy(&out.stderr));
        let made: Vec<PathBuf> = rc_links().difference(&links_before).cloned().collect();
        let has = |level: char, kind: &str| {
            made.iter().any(|l| {
                l.starts_with(format!("/etc/rc{level}.d"))
                    && l.file_name().is_some_and(|n| n.to_string_lossy().starts_with(kind))
            })
        };
        for (levels, kind) in [("2345", "S"), ("016", "K")] {
            for level in levels.chars() {
                assert!(has(level, kind), "no {kind} link in rc{level}.d: {made:?}");
            }
        }
        let out = Command::new("update-rc.d").args(["bpftune", "remove"]).output().expect("update-rc.d");
        assert!(out.status.success(), "update-rc.d remove: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(rc_links(), links_before, "update-rc.d remove left links");
        drop(install);
    }

    // The machine as it was: every file the install or the test wrote is
    // back to there or not there, no rc.d links, no daemon.
    let changed: Vec<String> = existed
        .iter()
        .filter(|(p, was)| p.exists() != *was)
        .map(|(p, was)| format!("{} {}", p.display(), if *was { "removed" } else { "left behind" }))
        .collect();
    assert!(changed.is_empty(), "not restored: {changed:#?}");
    assert_eq!(rc_links(), links_before, "rc.d links left behind");
    let running: Vec<String> = fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|&pid| alive(pid) && fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == Path::new(DAEMON)))
        .map(|pid| pid.to_string())
        .collect();
    assert!(running.is_empty(), "bpftune still running: {running:?}");
}

/// A Debian root of the host's release with systemd, made once with
/// debootstrap and kept in the target directory (`<target>/nspawn-root/`);
/// containers boot it with a throw-away overlay, so it stays pristine.
fn container_root() -> PathBuf {
    let release = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(|v| v.trim_matches('"').to_string()))
        .filter(|v| !v.is_empty())
        .expect("VERSION_CODENAME in /etc/os-release (a Debian host)");
    let root = target_dir().join("nspawn-root").join(&release);
    if root.join(".bpftune-root-complete").exists() {
        return root;
    }
    let partial = root.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).expect("create container root");
    let mirror = std::env::var("BPFTUNE_TEST_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".to_string());
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "--include=systemd,systemd-sysv,dbus,libelf1,procps", &release])
        .arg(&partial)
        .arg(&mirror)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("debootstrap (`make test-deps` installs it): {e}"));
    assert!(
        out.status.success(),
        "debootstrap {release} from {mirror} failed:\n{}",
        String::from_utf8_lossy(&out.stdout).lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    fs::write(partial.join(".bpftune-root-complete"), b"").expect("mark container root");
    let _ = fs::remove_dir_all(&root);
    fs::rename(&partial, &root).expect("move container root in place");
    root
}

/// A container booted with systemd as PID 1 (`systemd-nspawn --boot`) on
/// [`container_root`]: a volatile overlay (nothing it writes reaches the
/// root), its own network namespace (the daemon tunes the container's
/// sysctls, not the host's), every capability and the bpf and
/// perf_event_open system calls (nspawn filters them by default), and the
/// scratch install bind-mounted read-only at /stage. Halted on drop.
struct Container {
    nspawn: std::process::Child,
    init: i32,
    log: PathBuf,
    nspawn_dir_existed: bool,
}

impl Container {
    fn boot(root: &Path, stage: &Path, log: PathBuf) -> Self {
        let nspawn_dir_existed = Path::new("/run/systemd/nspawn").exists();
        let machine = format!("bpftune-test-{}", std::process::id());
        let out = fs::File::create(&log).expect("container log");
        let err = out.try_clone().expect("dup log");
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(root)
            .arg(format!("--machine={machine}"))
            .arg(format!("--bind-ro={}:/stage", stage.display()))
            .args([
                "--volatile=overlay",
                "--private-network",
                "--register=no",
                "--keep-unit",
                "--capability=all",
                "--system-call-filter=bpf perf_event_open",
                "--console=pipe",
                "--boot",
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("systemd-nspawn (systemd-container; `make test-deps`): {e}"));
        let mut c = Self { init: 0, nspawn, log, nspawn_dir_existed };
        // The container's init is systemd-nspawn's child.
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.init == 0 && Instant::now() < deadline {
            assert!(matches!(c.nspawn.try_wait(), Ok(None)), "systemd-nspawn exited:\n{}", c.log());
            c.init = child_named(c.nspawn.id() as i32, "systemd").unwrap_or(0);
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_ne!(c.init, 0, "no systemd in the container:\n{}", c.log());
        let mut state = String::new();
        while Instant::now() < deadline + Duration::from_secs(30) {
            state = c.exec(&["systemctl", "is-system-running"]).1;
            if ["running", "degraded"].contains(&state.trim()) {
                return c;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("systemd in the container did not finish booting ({}):\n{}", state.trim(), c.log());
    }

    /// Run a command in every namespace of the container; exit status and
    /// everything printed.
    fn exec(&self, cmd: &[&str]) -> (i32, String) {
        let out = Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a", "--"])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    fn exec_ok(&self, cmd: &[&str]) -> String {
        let (code, out) = self.exec(cmd);
        assert_eq!(code, 0, "{cmd:?} in the container:\n{out}\n--- journal\n{}", self.journal());
        out
    }

    fn journal(&self) -> String {
        self.exec(&["journalctl", "-u", "bpftune", "--no-pager", "-n", "40"]).1
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM asks systemd-nspawn to halt the container cleanly.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.nspawn.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.nspawn.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                eprintln!("container did not halt in 30 s; killing it");
                let _ = self.nspawn.kill();
                let _ = self.nspawn.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        reap_orphans();
        if !self.nspawn_dir_existed {
            let _ = fs::remove_dir_all("/run/systemd/nspawn");
        }
    }
}

/// A child of `parent` whose command name is `comm`.
fn child_named(parent: i32, comm: &str) -> Option<i32> {
    fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(')')?;
        let ppid: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && name == comm).then_some(pid)
    })
}

/// The capabilities the unit's CapabilityBoundingSet names: CAP_NET_ADMIN
/// (12), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21), CAP_PERFMON (38), CAP_BPF
/// (39).
const UNIT_CAPS: u64 = (1 << 12) | (1 << 19) | (1 << 21) | (1 << 38) | (1 << 39);

/// The daemon's bounding capability set inside the container, from
/// /proc/<MainPID>/status.
fn main_pid_caps(c: &Container) -> (String, u64) {
    let pid = c.exec_ok(&["systemctl", "show", "-P", "MainPID", "bpftune"]).trim().to_string();
    assert!(pid != "0" && !pid.is_empty(), "bpftune has no main pid");
    let status = c.exec_ok(&["cat", &format!("/proc/{pid}/status")]);
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no CapBnd in:\n{status}"));
    (pid, bnd)
}

#[test]
fn hardened_unit_runs_under_systemd_in_a_container() {
    bpftune_tests::require_root!();
    let _lock = test_lock();
    build_man_pages();
    let scratch = Scratch::new("nspawn");
    let stage = scratch.0.join("stage");
    make(&["install", "NOBUILD=1", &format!("DESTDIR={}", stage.display()), "prefix=/usr", "libdir=lib64"]);
    let root = container_root();
    let c = Container::boot(&root, &stage, scratch.0.join("nspawn.log"));
    c.exec_ok(&["cp", "-a", "/stage/.", "/"]);
    c.exec_ok(&["systemctl", "daemon-reload"]);

    // systemctl enable --now: enabled, running, answering at once (the
    // unit's ExecStartPost waits for that), with the unit's capabilities.
    c.exec_ok(&["systemctl", "enable", "--now", "bpftune"]);
    assert_eq!(c.exec(&["systemctl", "is-enabled", "bpftune"]).1.trim(), "enabled");
    let reply = c.exec_ok(&["/usr/sbin/bpftune", "-q", "status"]);
    assert!(!reply.trim().is_empty(), "empty status reply");
    let (first, caps) = main_pid_caps(&c);
    assert_eq!(caps, UNIT_CAPS, "CapBnd {caps:#x} is not the unit's {UNIT_CAPS:#x}");
    let journal = c.journal();
    assert!(journal.contains("bpftune works fully"), "{journal}");

    // service hands every action to systemctl under systemd.
    let out = c.exec_ok(&["service", "bpftune", "status"]);
    assert!(out.contains("active (running)"), "{out}");
    c.exec_ok(&["service", "bpftune", "stop"]);
    let (code, state) = c.exec(&["systemctl", "is-active", "bpftune"]);
    assert!(code != 0 && state.trim() == "inactive", "after service stop: {state}");
    let (code, out) = c.exec(&["service", "bpftune", "status"]);
    assert_eq!(code, 3, "service status of a stopped unit: {out}");
    c.exec_ok(&["service", "bpftune", "start"]);
    c.exec_ok(&["/usr/sbin/bpftune", "-q", "status"]);
    let (second, _) = main_pid_caps(&c);
    assert_ne!(first, second, "service start did not start a new daemon");

    // The SysV script, run directly, hands over to the unit too.
    let out = c.exec_ok(&["/etc/init.d/bpftune", "status"]);
    assert!(out.contains("bpftune.service"), "/etc/init.d/bpftune status did not use the unit: {out}");

    // restart: a new pid (the original's service_test).
    c.exec_ok(&["service", "bpftune", "restart"]);
    c.exec_ok(&["/usr/sbin/bpftune", "-q", "status"]);
    let (third, _) = main_pid_caps(&c);
    assert_ne!(second, third, "restart kept the same daemon");

    c.exec_ok(&["systemctl", "disable", "--now", "bpftune"]);
    assert_eq!(c.exec(&["systemctl", "is-enabled", "bpftune"]).1.trim(), "disabled");
    assert_eq!(c.exec(&["systemctl", "is-active", "bpftune"]).1.trim(), "inactive");
    let (code, _) = c.exec(&["/usr/sbin/bpftune", "-q", "status"]);
    assert_ne!(code, 0, "a daemon still answers after disable --now");
    drop(c);
    assert!(root.join(".bpftune-root-complete").exists());
    assert!(!root.join("usr/sbin/bpftune").exists(), "the overlay leaked the install into the container root");
}
