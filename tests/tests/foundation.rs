//! Root integration tests of the foundation: the real daemon with real
//! tuners on this kernel. Support probe, CLI edges, per-netns admin
//! override through the sysctl tuner, bad plugins refused while good ones
//! keep working, panics caught at the plugin boundary, SIGINT summary, and
//! the single-instance lock.

use std::process::Command;
use std::time::Duration;

use bpftune_tests::{Daemon, Netns, PluginDir, daemon_binary, loopback_connections, test_lock};

fn bpftune(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(daemon_binary()).args(args).output().expect("run bpftune");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn support_probe_reports_full_support() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let (code, _out, err) = bpftune(&["-S"]);
    assert_eq!(code, 0, "{err}");
    // No tuners here (support.rs tests the report with tuners): the hooks
    // and helpers alone decide the level. Kernels before 6.12 may lack a
    // helper (legacy mode) or netns cookies (5.14); ours have everything.
    if bpftune_tests::kernel_version() >= (6, 12) {
        assert!(err.contains("bpftune: bpftune works fully"), "{err}");
        assert!(err.contains("bpftune: bpftune supports per-netns policy (via netns cookie)"), "{err}");
    } else {
        assert!(err.contains("bpftune: bpftune works"), "{err}");
        assert!(err.contains("per-netns policy (via netns cookie)"), "{err}");
    }
}

#[test]
fn cli_edges() {
    let (code, out, _) = bpftune(&["-V"]);
    assert_eq!(code, 0);
    assert!(out.contains("bpftune v"), "{out}");
    let (code, out, _) = bpftune(&["-P"]);
    assert_eq!(code, 0);
    assert!(out.trim_end().ends_with("/bpftune/"), "{out}");
    let (code, _, err) = bpftune(&["-r", "5"]);
    assert_eq!(code, 1);
    assert!(err.contains("values 0-4 are supported"), "{err}");
    let (code, _, err) = bpftune(&["--no-such-flag"]);
    assert_eq!(code, 1, "{err}");
    let (code, out, _) = bpftune(&["-h"]);
    assert_eq!(code, 0);
    for flag in ["--allow", "--cgroup", "--debug", "--daemon", "--libdir", "--legacy", "--port", "--query"] {
        assert!(out.contains(flag), "help lacks {flag}: {out}");
    }
}

#[test]
fn admin_override_disables_tuner_in_that_namespace_only() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    if !bpftune_tests::per_netns_policy_or_skip("admin_override_disables_tuner_in_that_namespace_only") {
        return;
    }
    let plugins = PluginDir::with(&["sysctl", "test"]);
    let a = Netns::new("ovra");
    let b = Netns::new("ovrb");
    a.set_sysctl("net.ipv4.tcp_fin_timeout", "30");
    b.set_sysctl("net.ipv4.tcp_fin_timeout", "30");
    let daemon = Daemon::start(&plugins, &[]);
    assert!(daemon.log().contains("sucessfully initialized tuner test"), "{}", daemon.log());

    // The administrator takes over the tunable in namespace a.
    a.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_fin_timeout=45"]);
    assert!(
        daemon.wait_for_log(
            "modified sysctl 'net.ipv4.tcp_fin_timeout' that tuner 'test' uses; disabling 'test' for namespace cookie",
            Duration::from_secs(10)
        ),
        "{}",
        daemon.log()
    );
    loopback_connections(Some(&a), 3);
    loopback_connections(Some(&b), 3);
    assert!(daemon.wait_for_log("in non-global ns", Duration::from_secs(10)), "{}", daemon.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.sysctl("net.ipv4.tcp_fin_timeout"), "45", "admin's value must stay");
    let bv: i64 = b.sysctl("net.ipv4.tcp_fin_timeout").parse().expect("int");
    assert!(bv > 30, "namespace b is still tuned: {bv}");
    // Only one disabling line: the override is per namespace.
    assert_eq!(daemon.count("disabling 'test'"), 1, "{}", daemon.log());
    // The writer's name is taken in BPF at the write (sysctl has exited by
    // now), and the original's line names the same namespace.
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("disabling 'test' for namespace cookie")).expect("override line");
    assert!(line.contains("cmd 'sysctl' modified sysctl"), "{line}");
    let cookie = line.rsplit(' ').next().expect("cookie");
    assert!(log.contains(&format!("setting state of netns (cookie {cookie}) to manual for 'test'")), "{log}");

    let (status, log) = daemon.stop();
    assert!(status.success(), "{status} {log}");
    assert!(log.contains("# Summary: scenario 'test connection seen' occurred"), "summary missing: {log}");
    assert!(log.contains("for tunable 'net.ipv4.tcp_fin_timeout' in non-global ns."), "{log}");
}

/// Kernels before 5.x-6.x hide the writer's pid, namespace and name from
/// cgroup/sysctl programs (run here by telling the tuner the helpers are
/// missing): the daemon's own writes are still told apart (by name and
/// value), and an administrator's write is taken as one in every namespace.
#[test]
fn admin_override_where_the_kernel_hides_the_writer() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    if !bpftune_tests::per_netns_policy_or_skip("admin_override_where_the_kernel_hides_the_writer") {
        return;
    }
    let plugins = PluginDir::with(&["sysctl", "test"]);
    let a = Netns::new("ovha");
    let b = Netns::new("ovhb");
    a.set_sysctl("net.ipv4.tcp_fin_timeout", "30");
    b.set_sysctl("net.ipv4.tcp_fin_timeout", "30");
    let hidden = "bpf_get_current_pid_tgid,bpf_get_current_task_btf,bpf_get_current_comm";
    let daemon = Daemon::start_tuner_with_env(&plugins, &[], &[("BPFTUNE_PRETEND_MISSING", hidden)], "test");
    assert!(daemon.log().contains("sysctl: writer's pid fallback"), "{}", daemon.log());

    // The daemon's own writes in b are not an administrator's.
    loopback_connections(Some(&b), 3);
    assert!(daemon.wait_for_log("in non-global ns", Duration::from_secs(10)), "{}", daemon.log());
    std::thread::sleep(Duration::from_millis(500));
    let bv: i64 = b.sysctl("net.ipv4.tcp_fin_timeout").parse().expect("int");
    assert!(bv > 30, "namespace b was not tuned: {bv}\n{}", daemon.log());
    assert!(!daemon.log().contains("modified sysctl"), "{}", daemon.log());

    // An administrator's write, namespace unknown: backed off everywhere.
    a.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_fin_timeout=45"]);
    assert!(
        daemon.wait_for_log("pid 0, cmd '?' modified sysctl 'net.ipv4.tcp_fin_timeout'", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let changes = daemon.count("in non-global ns");
    loopback_connections(Some(&b), 3);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(daemon.count("in non-global ns"), changes, "b still tuned after the override\n{}", daemon.log());
    assert_eq!(a.sysctl("net.ipv4.tcp_fin_timeout"), "45", "admin's value must stay");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status} {log}");
}

#[test]
fn bad_plugins_are_refused_and_good_ones_work() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let plugins = PluginDir::with(&["sysctl", "test"]);
    plugins.add_bytes("notelf_tuner.so", b"this is not an ELF file\n");
    let good = std::fs::read(bpftune_tests::built_tuner("test")).expect("read tuner");
    plugins.add_bytes("truncated_tuner.so", &good[..4096]);
    plugins.add_bytes("nosym_tuner.so", &std::fs::read(libz_path()).expect("read libz"));
    plugins.add_as("wrongabi", "wrongabi_tuner.so");
    let writable = plugins.add_as("sysctl", "groupwritable_tuner.so");
    std::fs::set_permissions(&writable, std::os::unix::fs::PermissionsExt::from_mode(0o664)).expect("chmod");
    std::os::unix::fs::symlink(plugins.path.join("test_tuner.so"), plugins.path.join("link_tuner.so"))
        .expect("symlink");
    plugins.add_bytes("tcp_buffer_tuner.so.dpkg-new", b"ignored");

    let daemon = Daemon::start(&plugins, &[]);
    let log = daemon.log();
    // Every file name also appears in debug lines: each bad plugin is
    // checked against its own refusal line, which names its full path.
    let refusal = |file: &str, text: &str| {
        let path = format!("'{}'", plugins.path.join(file).display());
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&path) && l.contains(text)).collect();
        assert_eq!(lines.len(), 1, "one line names {path} with '{text}':\n{log}");
        lines[0].to_string()
    };
    let notelf = refusal("notelf_tuner.so", "could not load");
    assert!(notelf.contains(": not an ELF file"), "{notelf}");
    let truncated = refusal("truncated_tuner.so", "could not load");
    assert!(truncated.ends_with(": truncated ELF file (4096 bytes)"), "{truncated}");
    let nosym = refusal("nosym_tuner.so", "could not load");
    assert!(nosym.contains("symbol"), "libz has no tuner root module: {nosym}");
    refusal("wrongabi_tuner.so", "has an incompatible bpftune plugin ABI");
    let writable = refusal("groupwritable_tuner.so", "(mode 100664, uid 0); refusing untrusted plugin");
    assert!(writable.contains("untrusted plugin '"), "{writable}");
    refusal("link_tuner.so", "is a symbolic link; refusing untrusted plugin");
    assert!(!log.contains("dpkg-new"), "{log}");
    assert!(log.contains("sucessfully initialized tuner sysctl"), "{log}");
    assert!(log.contains("sucessfully initialized tuner test"), "{log}");

    // The good tuners still work (the test tuner acts per namespace).
    if bpftune_tests::netns_cookies() {
        let ns = Netns::new("badp");
        loopback_connections(Some(&ns), 2);
        assert!(
            daemon.wait_for_log("occurred for tunable 'net.ipv4.tcp_fin_timeout'", Duration::from_secs(10)),
            "{}",
            daemon.log()
        );
    }
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

fn libz_path() -> std::path::PathBuf {
    for p in [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib64/libz.so.1",
        "/lib64/libz.so.1",
    ] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("libz.so.1 not found");
}

#[test]
fn panic_in_init_is_caught_and_others_keep_running() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let plugins = PluginDir::with(&["sysctl", "test"]);
    let daemon = Daemon::start_with_env(&plugins, &[], &[("BPFTUNE_TEST_TUNER", "panic_init")]);
    let log = daemon.log();
    assert!(log.contains("error initializing") && log.contains("panicked: test tuner asked to panic in init"), "{log}");
    assert!(log.contains("sucessfully initialized tuner sysctl"), "{log}");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn failing_init_is_reported() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let plugins = PluginDir::with(&["sysctl", "test"]);
    let daemon = Daemon::start_with_env(&plugins, &[], &[("BPFTUNE_TEST_TUNER", "fail_init")]);
    assert!(daemon.log().contains("test tuner asked to fail"), "{}", daemon.log());
    let (status, _) = daemon.stop();
    assert!(status.success());
}

#[test]
fn panic_in_event_handler_disables_only_that_tuner() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let plugins = PluginDir::with(&["sysctl", "test"]);
    let mut daemon = Daemon::start_with_env(&plugins, &[], &[("BPFTUNE_TEST_TUNER", "panic_event")]);
    let ns = Netns::new("pev");
    loopback_connections(Some(&ns), 2);
    assert!(daemon.wait_for_log("in its event handler; disabling it", Duration::from_secs(10)), "{}", daemon.log());
    assert!(!daemon.has_exited(), "daemon must survive a tuner panic");
    // The sysctl tuner still sees writes.
    ns.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_fin_timeout=33"]);
    assert!(
        daemon.wait_for_log("sysctl write for 'net/ipv4/tcp_fin_timeout'", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    // A tuner that panicked is never called again, not even at exit: its
    // summary comes from the daemon's records.
    assert!(!log.contains("test tuner: fini called"), "the daemon called into a panicked tuner:\n{log}");
}

/// A tuner that did not panic is finalised normally at exit (the other half
/// of the check above: the fixture does log its fini).
#[test]
fn a_healthy_tuner_is_finalised_at_exit() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let plugins = PluginDir::with(&["test"]);
    let daemon = Daemon::start(&plugins, &[]);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("test tuner: fini called"), "{log}");
}

/// A plugin built before the optional entry points existed (it exports
/// only abi_stable's root module) loads, runs, and is skipped when the
/// daemon tells tuners a namespace is gone.
#[test]
fn a_plugin_without_the_optional_entry_points_still_loads() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    if !bpftune_tests::per_netns_policy_or_skip("a_plugin_without_the_optional_entry_points_still_loads") {
        return;
    }
    let plugins = PluginDir::with(&["netns", "test"]);
    let legacy = plugins.add("legacy");
    let nm = Command::new("nm").args(["-D", "--defined-only"]).arg(&legacy).output().expect("nm");
    let symbols = String::from_utf8_lossy(&nm.stdout);
    assert!(symbols.contains("root_bmodule_bloader"), "{symbols}");
    assert!(!symbols.contains("bpftune_netns_released"), "the fixture must look old: {symbols}");

    let mut daemon = Daemon::start(&plugins, &[]);
    assert!(daemon.log().contains("sucessfully initialized tuner legacy"), "{}", daemon.log());
    let n = Netns::new("leg");
    loopback_connections(Some(&n), 2);
    assert!(daemon.wait_for_log("test connection seen", Duration::from_secs(10)), "{}", daemon.log());
    drop(n);
    assert!(daemon.wait_for_log("test: released netns", Duration::from_secs(20)), "{}", daemon.log());
    assert!(daemon.wait_for_log("released in every tuner", Duration::from_secs(5)), "{}", daemon.log());
    assert!(!daemon.has_exited(), "{}", daemon.log());
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status} {log}");
    assert!(!log.contains("namespace release"), "no tuner failed its release: {log}");
}

#[test]
fn untrusted_directory_is_refused() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let dir = std::env::temp_dir().join(format!("bpftune-untrusted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(bpftune_tests::built_tuner("sysctl"), dir.join("sysctl_tuner.so")).expect("copy");
    let d = dir.to_str().expect("utf8");
    let empty = PluginDir::empty();
    let out = Command::new(daemon_binary())
        .args(["-s", "--system-libdir", empty.path.to_str().expect("utf8"), "-l", d])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.contains("refusing untrusted plugin"), "{err}");
    assert_eq!(out.status.code(), Some(1), "no tuner loaded: exit 1; {err}");
}

#[test]
fn second_instance_is_refused() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let plugins = PluginDir::with(&["sysctl"]);
    let mut first = Daemon::start(&plugins, &[]);
    assert!(!first.has_exited());
    let (code, _, err) = bpftune(&["-s", "--system-libdir", plugins.path.to_str().expect("utf8")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another bpftune is already running"), "{err}");
    assert!(!first.has_exited(), "the first instance is unaffected");
    let (status, _) = first.stop();
    assert!(status.success());
}
