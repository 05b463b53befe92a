//! Root integration tests of the operator controls: `-q release` and `-q
//! hold` per namespace (by cookie, by /run/netns name, global), `-q
//! loglevel`, and the limits file (a ceiling bounds the test tuner, the
//! clamp is logged, a reload moves it, a bad file refuses the start, and
//! without the file the tuner goes on as before).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bpftune_tests::{
    Daemon, Netns, PluginDir, SysctlGuard, TEST_RUN_DIR, daemon_binary, loopback_connections, test_lock, wait_until,
};

const FIN: &str = "net.ipv4.tcp_fin_timeout";

/// `bpftune -q ARGS...`: exit status and reply.
fn query(args: &[&str]) -> (i32, String) {
    let out = Command::new(daemon_binary()).arg("-q").args(args).output().expect("run bpftune -q");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn query_ok(args: &[&str]) -> String {
    let (code, out) = query(args);
    assert_eq!(code, 0, "query {args:?} failed: {out}");
    out
}

fn jstatus() -> serde_json::Value {
    let out = query_ok(&["jstatus"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("jstatus is not JSON ({e}): {out}"))
}

fn int(s: &str) -> i64 {
    s.trim().parse().unwrap_or_else(|_| panic!("not an integer: {s:?}"))
}

/// Connections in `ns` until its FIN value satisfies `f` (or time is up).
fn tune_until(ns: &Netns, f: impl Fn(i64) -> bool) -> bool {
    wait_until(Duration::from_secs(20), || {
        loopback_connections(Some(ns), 2);
        f(int(&ns.sysctl(FIN)))
    })
}

/// The cookie in the daemon's override line for the `nth` override (0-based).
fn override_cookie(daemon: &Daemon, nth: usize) -> String {
    let log = daemon.log();
    let line = log
        .lines()
        .filter(|l| l.contains("disabling 'test' for namespace cookie"))
        .nth(nth)
        .unwrap_or_else(|| panic!("override line {nth} missing:\n{log}"));
    line.rsplit(' ').next().expect("cookie").to_string()
}

/// A scratch directory for a limits file (and its limits.d), removed on drop.
struct LimitsDir {
    path: PathBuf,
}

impl LimitsDir {
    fn new(tag: &str) -> Self {
        let path = Path::new(TEST_RUN_DIR).join(format!("limits-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("limits dir");
        Self { path }
    }

    fn file(&self) -> PathBuf {
        self.path.join("limits.conf")
    }

    fn write(&self, text: &str) {
        std::fs::write(self.file(), text).expect("write limits");
    }
}

impl Drop for LimitsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[test]
fn release_and_hold_per_namespace() {
    bpftune_tests::require_root!();
    if !bpftune_tests::per_netns_policy_or_skip("release_and_hold_per_namespace") {
        return;
    }
    let _l = test_lock();
    let _g = SysctlGuard::global(FIN);
    let plugins = PluginDir::with(&["sysctl", "test"]);
    let a = Netns::new("opra");
    let b = Netns::new("oprb");
    a.set_sysctl(FIN, "30");
    b.set_sysctl(FIN, "30");
    let daemon = Daemon::start_tuner(&plugins, &[], "test");

    // An administrator takes the tunable over in a: the tuner is manual there.
    a.exec(&["sysctl", "-q", "-w", &format!("{FIN}=45")]);
    assert!(daemon.wait_for_log("disabling 'test' for namespace cookie", Duration::from_secs(10)), "{}", daemon.log());
    let ca = override_cookie(&daemon, 0);
    loopback_connections(Some(&a), 3);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.sysctl(FIN), "45", "the administrator's value stays");
    let manual = &jstatus()["test"]["manual"];
    assert_eq!(manual, &serde_json::json!([{"netns": int(&ca), "by": "administrator"}]), "{manual}");

    // Released by cookie: active again, and it tunes again on the next event.
    let reply = query_ok(&["release", FIN, &ca]);
    assert_eq!(reply, format!("tuner 'test' in netns (cookie {ca}): manual -> active\n"));
    assert!(
        daemon.log().contains(&format!(
            "operator released sysctl '{FIN}': tuner 'test' in netns (cookie {ca}): manual -> active"
        )),
        "{}",
        daemon.log()
    );
    assert!(jstatus()["test"].get("manual").is_none(), "no manual namespace left");
    assert!(tune_until(&a, |v| v > 45), "tuned again after release: {}\n{}", a.sysctl(FIN), daemon.log());
    // Releasing again changes nothing, and says so.
    assert!(query_ok(&["release", FIN, &ca]).ends_with("already active; nothing changed\n"));

    // A later administrator write takes it away again, as before.
    a.exec(&["sysctl", "-q", "-w", &format!("{FIN}=60")]);
    assert!(
        wait_until(Duration::from_secs(10), || daemon.count("disabling 'test' for namespace cookie") == 2),
        "{}",
        daemon.log()
    );
    assert_eq!(override_cookie(&daemon, 1), ca);
    loopback_connections(Some(&a), 3);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.sysctl(FIN), "60");

    // Hold in b, named by its /run/netns name: manual without a write.
    assert!(tune_until(&b, |v| v > 30), "b is tuned: {}", b.sysctl(FIN));
    let before = b.sysctl(FIN);
    let reply = query_ok(&["hold", FIN, &b.name]);
    assert!(reply.starts_with("tuner 'test' in netns (cookie ") && reply.ends_with("): active -> manual\n"), "{reply}");
    let cb: u64 =
        reply.split("cookie ").nth(1).and_then(|r| r.split(')').next()).expect("cookie").parse().expect("int");
    assert_eq!(b.sysctl(FIN), before, "a hold writes nothing");
    assert!(daemon.log().contains(&format!("operator held (sysctl not written) sysctl '{FIN}'")), "{}", daemon.log());
    loopback_connections(Some(&b), 5);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(b.sysctl(FIN), before, "a held tunable is left alone");
    let manual = jstatus()["test"]["manual"].clone();
    let manual = manual.as_array().expect("manual list");
    assert!(manual.contains(&serde_json::json!({"netns": int(&ca), "by": "administrator"})), "{manual:?}");
    assert!(manual.contains(&serde_json::json!({"netns": cb, "by": "operator"})), "{manual:?}");
    // Only b was held: the daemon still answers for a as manual, not held.
    assert_eq!(daemon.count("disabling 'test'"), 2, "a hold is not an administrator's write");
    // Released (by name again): tuned again.
    assert_eq!(
        query_ok(&["release", FIN, &b.name]),
        format!("tuner 'test' in netns (cookie {cb}): manual -> active\n")
    );
    let held_at = int(&before);
    assert!(tune_until(&b, |v| v > held_at), "b tuned after release: {}", b.sysctl(FIN));

    // The global namespace: by default and by name.
    assert_eq!(query_ok(&["hold", FIN]), "tuner 'test' in global ns: active -> manual\n");
    assert_eq!(query_ok(&["release", FIN, "global"]), "tuner 'test' in global ns: manual -> active\n");

    // Clear errors, exit status 1.
    let (code, out) = query(&["release", "net.ipv4.no_such_tunable"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("error: unknown tunable 'net.ipv4.no_such_tunable'"), "{out}");
    let (code, out) = query(&["hold", FIN, "987654321987"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("error: unknown namespace: no network namespace with cookie 987654321987"), "{out}");
    let (code, out) = query(&["hold", FIN, "bpftt-no-such-ns"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("error: unknown namespace 'bpftt-no-such-ns'"), "{out}");
    let (code, out) = query(&["hold"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("error: usage: hold TUNABLE [NETNS]"), "{out}");

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn loglevel_changes_at_run_time() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let plugins = PluginDir::with(&["sysctl"]);
    // The harness starts the daemon with -d: debug.
    let daemon = Daemon::start_tuner(&plugins, &[], "sysctl");
    assert_eq!(query_ok(&["loglevel"]), "log level debug\n");
    assert_eq!(query_ok(&["loglevel", "info"]), "log level debug -> info\n");
    assert!(daemon.wait_for_log("log level debug -> info", Duration::from_secs(5)), "{}", daemon.log());
    // Debug lines stop: a new namespace is logged at debug only.
    let ns = Netns::new("oplvl");
    loopback_connections(Some(&ns), 2);
    std::thread::sleep(Duration::from_millis(500));
    let (code, out) = query(&["loglevel", "loud"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown log level 'loud'; levels are err, warning, notice, info, debug"), "{out}");
    assert_eq!(query_ok(&["loglevel", "debug"]), "log level info -> debug\n");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    let after = log.split("log level debug -> info").nth(1).expect("change logged");
    let quiet = after.split("log level info -> debug").next().expect("both changes");
    assert!(!quiet.contains("query connection") && !quiet.contains("netns created"), "debug lines at info:\n{quiet}");
}

#[test]
fn limits_file_bounds_a_tuner() {
    bpftune_tests::require_root!();
    if !bpftune_tests::per_netns_policy_or_skip("limits_file_bounds_a_tuner") {
        return;
    }
    let _l = test_lock();
    let plugins = PluginDir::with(&["test"]);
    let dir = LimitsDir::new("bound");
    let file = dir.file();
    let file_s = file.to_str().expect("utf8");
    dir.write(&format!("# test ceiling\n{FIN} max 34\n"));
    let a = Netns::new("oplim");
    a.set_sysctl(FIN, "30");
    let daemon = Daemon::start_tuner(&plugins, &["--limits", file_s], "test");
    assert!(daemon.log().contains(&format!("limits: 1 rule(s) from {file_s}")), "{}", daemon.log());

    assert!(tune_until(&a, |v| v >= 34), "tuned up to the ceiling: {}\n{}", a.sysctl(FIN), daemon.log());
    loopback_connections(Some(&a), 5);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(a.sysctl(FIN), "34", "the value stops at the max\n{}", daemon.log());
    let clamp = format!("tuner 'test' wanted {FIN} (35) in netns (cookie ");
    assert!(daemon.log().contains(&clamp), "{}", daemon.log());
    assert!(daemon.log().contains(&format!("using (34), limited by {file_s}")), "{}", daemon.log());
    // Logged once, however often the tuner asks.
    assert_eq!(daemon.count("limited by"), 1, "{}", daemon.log());

    // A drop-in lowers nothing here but is read; the ceiling moves on reload.
    std::fs::create_dir_all(dir.path.join("limits.d")).expect("limits.d");
    std::fs::write(dir.path.join("limits.d/10-floor.conf"), format!("{FIN} min 20\n")).expect("drop-in");
    dir.write(&format!("{FIN} max 36\n"));
    let reply = query_ok(&["reload-limits"]);
    assert!(reply.starts_with("limits reloaded: 2 rule(s) from "), "{reply}");
    assert!(tune_until(&a, |v| v >= 36), "the new ceiling: {}", a.sysctl(FIN));
    loopback_connections(Some(&a), 3);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.sysctl(FIN), "36");

    // SIGHUP reloads too; a bad file keeps the limits in force.
    dir.write(&format!("{FIN} max 38\n{FIN} most 40\n"));
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon.wait_for_log(&format!("cannot reload limits: {file_s}:2: 'most' is neither"), Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
    let (code, out) = query(&["reload-limits"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with(&format!("error: cannot reload limits: {file_s}:2:")), "{out}");
    loopback_connections(Some(&a), 3);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.sysctl(FIN), "36", "the old limits stay in force");
    dir.write(&format!("{FIN} max 38\n"));
    daemon.signal(libc::SIGHUP);
    assert!(daemon.wait_for_log("limits reloaded: 2 rule(s)", Duration::from_secs(5)), "{}", daemon.log());
    assert!(tune_until(&a, |v| v >= 38), "after SIGHUP: {}", a.sysctl(FIN));
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");

    // A bad file at start: a clear error naming file and line, no start.
    dir.write(&format!("{FIN} max 34\n\n{FIN} max thirty\n"));
    let mut bad = Daemon::start(&plugins, &["--limits", file_s]);
    let (status, log) = bad.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("cannot use limits: {file_s}:3: 'thirty' is not an integer")), "{log}");
    assert!(!log.contains("sucessfully initialized tuner"), "{log}");
}

#[test]
fn without_limits_file_nothing_changes() {
    bpftune_tests::require_root!();
    if !bpftune_tests::per_netns_policy_or_skip("without_limits_file_nothing_changes") {
        return;
    }
    let _l = test_lock();
    let plugins = PluginDir::with(&["test"]);
    let dir = LimitsDir::new("none");
    let file = dir.file();
    let a = Netns::new("opnol");
    a.set_sysctl(FIN, "30");
    let daemon = Daemon::start_tuner(&plugins, &["--limits", file.to_str().expect("utf8")], "test");
    assert!(tune_until(&a, |v| v >= 40), "tuned past any ceiling: {}\n{}", a.sysctl(FIN), daemon.log());
    let reply = query_ok(&["reload-limits"]);
    assert!(reply.starts_with("limits reloaded: none"), "{reply}");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("limited by") && !log.contains("limits:"), "{log}");
}
