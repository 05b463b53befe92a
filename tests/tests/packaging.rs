//! Packaging and documentation: the man pages cover every option and render
//! cleanly; `make install`/`uninstall` honour DESTDIR, prefix and libdir; the
//! systemd unit verifies and the OpenRC and SysV scripts parse; the RPM and
//! the .deb contain the daemon, every tuner, the unit and the man pages (the
//! .deb also the SysV init script, registered by its maintainer scripts),
//! and the daemon extracted from them works and loads its tuners.
//!
//! These run `make` targets that reuse the release build in the target
//! directory (`make stage` has built it), so they add no cargo build of
//! their own except the .deb's libdir=lib daemon, built in its own target
//! directory.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bpftune_tests::{Daemon, PluginDir, TEST_RUN_DIR, assert_root, build_dir, test_lock};

/// Every option of the daemon, short and long, as documented in bpftune(8);
/// `--help` adds any this list misses.
const CLI_FLAGS: &[&str] = &[
    "-a",
    "--allow",
    "-c",
    "--cgroup",
    "-d",
    "--debug",
    "-D",
    "--daemon",
    "-h",
    "--help",
    "-l",
    "--libdir",
    "-L",
    "--legacy",
    "-p",
    "--port",
    "-P",
    "--print-libdir",
    "-q",
    "--query",
    "-r",
    "--learning_rate",
    "-R",
    "--rollback",
    "-s",
    "--stderr",
    "-S",
    "--support",
    "-V",
    "--version",
    "--system-libdir",
    "--advise",
];

const QUERY_VERBS: &[&str] = &["help", "tuners", "tunables", "jtunables", "status", "jstatus", "summary", "rollback"];

static SCRATCH: AtomicU32 = AtomicU32::new(0);
static DEPS: Once = Once::new();

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// The cargo target directory the release build is in (`target/`).
fn target_dir() -> PathBuf {
    build_dir().parent().expect("target dir").to_path_buf()
}

/// Tuner crate directories: `tuners/<name>/`.
fn tuners() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo_root().join("tuners"))
        .expect("read tuners/")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no tuners under tuners/");
    names
}

/// Man page names: one per `docs/*.rst`.
fn man_pages() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo_root().join("docs"))
        .expect("read docs/")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".rst").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.iter().any(|n| n == "bpftune"), "docs/bpftune.rst missing");
    names
}

/// A fresh scratch directory (root-owned, under the test run directory, so
/// extracted plugins pass the daemon's trust checks); removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        assert_root();
        let n = SCRATCH.fetch_add(1, Ordering::SeqCst);
        let path = Path::new(TEST_RUN_DIR).join(format!("pkg-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::DirBuilder::new().recursive(true).mode(0o755).create(&path).expect("create scratch dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod scratch dir");
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(mut cmd: Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    out
}

fn stdout(mut cmd: Command) -> String {
    cmd.stderr(Stdio::inherit());
    String::from_utf8(run(cmd).stdout).expect("utf8 output")
}

/// `make -C <repo> TARGET_DIR=<target> <args>`, isolated from any outer
/// make's variables.
fn make(args: &[&str]) -> Output {
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(repo_root()).arg(format!("TARGET_DIR={}", target_dir().display())).args(args);
    for var in ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DESTDIR", "prefix", "libdir"] {
        cmd.env_remove(var);
    }
    run(cmd)
}

/// The packages these tests use (rpm, cpio, man-db, ...): installed once.
fn pkg_deps() {
    DEPS.call_once(|| {
        make(&["pkg-deps"]);
    });
}

fn built_man_page(name: &str) -> PathBuf {
    target_dir().join("man").join(format!("{name}.8"))
}

/// Flags the daemon's `--help` lists.
fn help_flags() -> BTreeSet<String> {
    let bin = build_dir().join("bpftune");
    let mut flags = BTreeSet::new();
    if !bin.exists() {
        return flags;
    }
    let out = Command::new(&bin).arg("--help").output().expect("run bpftune --help");
    assert!(out.status.success(), "bpftune --help: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for line in text.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        // "-a, --allow <TUNER.so>   text" or "--advise   text"
        let spec = line.split("  ").next().unwrap_or("");
        for word in spec.split([',', ' ']) {
            if word.starts_with('-') && word.len() > 1 {
                flags.insert(word.to_string());
            }
        }
    }
    flags
}

/// The man page's text with roff escapes for dashes and fonts removed.
fn man_text(page: &Path) -> String {
    let src = fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    let mut text = src.replace("\\-", "-").replace("\\(em", "--");
    for esc in ["\\fB", "\\fI", "\\fR", "\\fP", "\\e", "\\&"] {
        text = text.replace(esc, "");
    }
    text
}

/// `flag` appears as a whole word: not inside a longer option or word.
fn mentions(text: &str, flag: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(flag).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + flag.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

#[test]
fn man_page_documents_every_option_and_query_verb() {
    bpftune_tests::require_root!();
    pkg_deps();
    make(&["man"]);
    let text = man_text(&built_man_page("bpftune"));
    let mut flags: BTreeSet<String> = CLI_FLAGS.iter().map(|f| f.to_string()).collect();
    flags.extend(help_flags());
    let missing: Vec<_> = flags.iter().filter(|f| !mentions(&text, f)).collect();
    assert!(missing.is_empty(), "bpftune.8 does not document {missing:?}");
    // Each verb is a bold term of its own in QUERIES.
    let roff = fs::read_to_string(built_man_page("bpftune")).expect("bpftune.8");
    for verb in QUERY_VERBS {
        assert!(roff.contains(&format!("\\fB{verb}\\fP")), "bpftune.8 does not document query verb '{verb}'");
    }
    for section in ["FILES", "EXIT STATUS", "DIFFERENCES FROM THE C BPFTUNE", "/var/lib/bpftune", "/var/run/bpftune"] {
        assert!(text.contains(section), "bpftune.8 lacks '{section}'");
    }
}

#[test]
fn man_pages_render_without_warnings() {
    bpftune_tests::require_root!();
    pkg_deps();
    make(&["man"]);
    for name in man_pages() {
        let page = built_man_page(&name);
        assert!(page.exists(), "{} not built", page.display());
        let out = Command::new("man")
            .args(["-l", "-Tutf8"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_STDERR", "1")
            .output()
            .expect("run man");
        assert!(out.status.success(), "man -l {}: {}", page.display(), out.status);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "man -l {} warns:\n{warnings}", page.display());
        // Undo overstriking (bold is "N\bN"): drop each character before a backspace.
        let mut rendered = String::new();
        for c in String::from_utf8_lossy(&out.stdout).chars() {
            if c == '\u{8}' {
                rendered.pop();
            } else {
                rendered.push(c);
            }
        }
        assert!(rendered.contains("NAME"), "{name}: no NAME section rendered");
        assert!(!rendered.contains("System Message"), "{name}: rst errors in the page");
        let out = Command::new("groff").args(["-k", "-ww", "-z", "-man"]).arg(&page).output().expect("run groff");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && warnings.trim().is_empty(), "groff -ww {}:\n{warnings}", page.display());
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o7777
}

fn regular_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir").filter_map(Result::ok) {
            let ty = entry.file_type().expect("file type");
            if ty.is_dir() {
                stack.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

#[test]
fn install_and_uninstall_honour_destdir_prefix_and_libdir() {
    bpftune_tests::require_root!();
    pkg_deps();
    let scratch = Scratch::new("install");
    let dest = scratch.0.join("root");
    let destdir = format!("DESTDIR={}", dest.display());
    // As a user would: builds (a no-op after `make stage`) and man pages.
    make(&["install", &destdir, "prefix=/usr", "libdir=lib64"]);

    let bin = dest.join("usr/sbin/bpftune");
    assert_eq!(mode(&bin), 0o755, "{}", bin.display());
    let plugin_dir = dest.join("usr/lib64/bpftune");
    assert_eq!(mode(&plugin_dir), 0o755);
    for t in tuners() {
        let so = plugin_dir.join(format!("{t}_tuner.so"));
        assert_eq!(mode(&so), 0o644, "{}", so.display());
    }
    for page in man_pages() {
        let man = dest.join(format!("usr/share/man/man8/{page}.8"));
        assert_eq!(mode(&man), 0o644, "{}", man.display());
    }
    let unit = dest.join("usr/lib/systemd/system/bpftune.service");
    assert_eq!(mode(&unit), 0o644);
    assert!(fs::read_to_string(&unit).expect("unit").contains("ExecStart=/usr/sbin/bpftune "));
    // One init script: OpenRC's (and its conf.d file) where openrc-run
    // exists, else the SysV one (tests/tests/service.rs has the details).
    assert_eq!(mode(&dest.join("etc/init.d/bpftune")), 0o755);
    let openrc = dest.join("etc/conf.d/bpftune").exists();
    let initd = fs::read_to_string(dest.join("etc/init.d/bpftune")).expect("init script");
    assert_eq!(openrc, initd.starts_with("#!/sbin/openrc-run"), "conf.d file without OpenRC, or OpenRC without it");
    let installed = regular_files(&dest);
    let expected = 1 + tuners().len() + man_pages().len() + 2 + usize::from(openrc);
    assert_eq!(installed.len(), expected, "unexpected files installed: {installed:#?}");
    // A lean install: stripped binaries, well under 15 MB in all (the
    // release build keeps debug info, about 126 MB of it).
    let binaries: Vec<PathBuf> =
        std::iter::once(bin.clone()).chain(tuners().iter().map(|t| plugin_dir.join(format!("{t}_tuner.so")))).collect();
    for b in &binaries {
        let sections = stdout({
            let mut c = Command::new("readelf");
            c.args(["-S", "-W"]).arg(b);
            c
        });
        let names: Vec<&str> = sections.split_whitespace().filter(|w| w.starts_with('.')).collect();
        assert!(names.contains(&".dynsym"), "{}: no dynamic symbols left", b.display());
        let unstripped = [".symtab", ".debug_info", ".debug_line"];
        assert!(!names.iter().any(|n| unstripped.contains(n)), "{} is not stripped: {names:?}", b.display());
    }
    let total: u64 = installed.iter().map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    eprintln!("make install: {} files, {total} bytes", installed.len());
    assert!(total < 15_000_000, "make install put {total} bytes on disk: {installed:#?}");
    // Stripped, the daemon still runs.
    let version = stdout({
        let mut c = Command::new(&bin);
        c.arg("-V");
        c
    });
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    make(&["uninstall", &destdir, "prefix=/usr", "libdir=lib64"]);
    let left = regular_files(&dest);
    assert!(left.is_empty(), "uninstall left {left:#?}");
    assert!(!plugin_dir.exists(), "uninstall left the plugin directory");

    // Another prefix and libdir (NOBUILD: the compiled-in libdir of the
    // shared release build must stay lib64). etc is derived from the prefix.
    let dest2 = scratch.0.join("root2");
    let destdir2 = format!("DESTDIR={}", dest2.display());
    for openrc in ["WITH_OPENRC=1", "WITH_OPENRC=0"] {
        let vars = [destdir2.as_str(), "prefix=/opt/bt/usr", "libdir=lib", "NOBUILD=1", openrc];
        make(&[&["install"], &vars[..]].concat());
        for t in tuners() {
            let so = dest2.join(format!("opt/bt/usr/lib/bpftune/{t}_tuner.so"));
            assert!(so.exists(), "{t} not in <prefix>/lib/bpftune");
        }
        let unit = fs::read_to_string(dest2.join("opt/bt/usr/lib/systemd/system/bpftune.service")).expect("unit");
        assert!(unit.contains("ExecStart=/opt/bt/usr/sbin/bpftune "), "ExecStart not adjusted to the prefix");
        let initd = fs::read_to_string(dest2.join("opt/bt/etc/init.d/bpftune")).expect("init script under <root>/etc");
        let daemon = if openrc.ends_with('1') {
            "command=\"/opt/bt/usr/sbin/bpftune\""
        } else {
            "DAEMON=/opt/bt/usr/sbin/bpftune\n"
        };
        assert!(initd.contains(daemon), "{openrc}: init script lacks '{daemon}'");
        make(&[&["uninstall"], &vars[..]].concat());
        let left = regular_files(&dest2);
        assert!(left.is_empty(), "{openrc}: uninstall left {left:#?}");
    }
}

#[test]
fn install_devel_ships_the_sdk() {
    bpftune_tests::require_root!();
    pkg_deps();
    let scratch = Scratch::new("devel");
    let destdir = format!("DESTDIR={}", scratch.0.display());
    make(&["install-devel", &destdir, "prefix=/usr"]);
    let sdk = scratch.0.join("usr/share/bpftune/sdk");
    for f in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "bpftune-abi/Cargo.toml",
        "bpftune-abi/src/lib.rs",
        "bpftune-sdk/Cargo.toml",
        "bpftune-sdk/src/tuner.rs",
        "bpf-common/Cargo.toml",
        "bpf-common/src/lib.rs",
        "bpf-common/include/bpftune_common.h",
        "bpf-common/include/bpftune.bpf.h",
        "bpf-common/include/x86_64/vmlinux.h",
    ] {
        assert!(sdk.join(f).is_file(), "SDK lacks {f}");
    }
    let ws = fs::read_to_string(sdk.join("Cargo.toml")).expect("SDK Cargo.toml");
    assert!(ws.contains("[workspace.package]") && ws.contains("\"bpftune-sdk\""), "SDK workspace:\n{ws}");
    assert!(!sdk.join("bpftune-core").exists(), "the SDK ships the daemon's host library");
    assert!(!ws.contains("tuners/"), "SDK workspace still lists tuners:\n{ws}");
    make(&["uninstall-devel", &destdir, "prefix=/usr"]);
    let left = regular_files(&scratch.0);
    assert!(left.is_empty(), "uninstall-devel left {left:#?}");
}

/// The SDK `make install-devel` ships is enough to build `sample_tuner`
/// outside the tree, and the daemon loads the result.
#[test]
fn devel_sdk_builds_sample_tuner_that_loads() {
    bpftune_tests::require_root!();
    pkg_deps();
    assert!(repo_root().join("sample_tuner/Cargo.toml").exists(), "sample_tuner/ is part of the tree");
    let scratch = Scratch::new("sdk");
    make(&["install-devel", &format!("DESTDIR={}", scratch.0.display()), "prefix=/usr"]);
    let manifest = scratch.0.join("usr/share/bpftune/sdk/sample_tuner/Cargo.toml");
    assert!(manifest.exists(), "SDK lacks sample_tuner");
    // The shared target dir: crates the workspace build already compiled
    // (libbpf-sys, ...) are reused; --offline: no network needed.
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()));
    cmd.args(["build", "--release", "--offline", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir());
    for var in ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CARGO_MAKEFLAGS"] {
        cmd.env_remove(var);
    }
    run(cmd);
    let built = build_dir().join("libsample_tuner.so");
    let plugins = PluginDir::empty();
    plugins.add_bytes("sample_tuner.so", &fs::read(&built).expect("read built sample tuner"));
    let _lock = test_lock();
    let daemon = Daemon::start(&plugins, &[]);
    let (status, log) = daemon.stop();
    assert!(status.success(), "daemon failed:\n{log}");
    assert!(log.contains("sucessfully initialized tuner sample["), "sample tuner from the SDK did not load:\n{log}");
}

#[test]
fn systemd_unit_verifies_and_openrc_and_sysv_scripts_parse() {
    bpftune_tests::require_root!();
    pkg_deps();
    let scratch = Scratch::new("units");
    let dest = scratch.0.join("root");
    let destdir = format!("DESTDIR={}", dest.display());
    make(&["install", "NOBUILD=1", &destdir, "prefix=/usr", "libdir=lib64", "WITH_OPENRC=1"]);

    // verify checks that ExecStart exists and that man:bpftune(8) resolves:
    // point both into the scratch install.
    let unit = fs::read_to_string(dest.join("usr/lib/systemd/system/bpftune.service")).expect("unit");
    for needed in [
        "After=network.target systemd-sysctl.service",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/proc/sys/net",
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_SYS_ADMIN",
        "AmbientCapabilities=",
    ] {
        assert!(unit.contains(needed), "unit lacks '{needed}'");
    }
    let bin = dest.join("usr/sbin/bpftune");
    let copy = scratch.0.join("bpftune.service");
    fs::write(&copy, unit.replace("/usr/sbin/bpftune", bin.to_str().expect("utf8"))).expect("write unit copy");
    let out = Command::new("systemd-analyze")
        .args(["verify"])
        .arg(&copy)
        .env("MANPATH", dest.join("usr/share/man"))
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("bpftune")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{stderr}");

    let initd = dest.join("etc/init.d/bpftune");
    let confd = dest.join("etc/conf.d/bpftune");
    for shell in ["sh", "dash"] {
        if Command::new("sh").args(["-c", &format!("command -v {shell}")]).output().is_ok_and(|o| o.status.success()) {
            for f in [&initd, &confd] {
                let mut cmd = Command::new(shell);
                cmd.arg("-n").arg(f);
                run(cmd);
            }
        }
    }
    let script = fs::read_to_string(&initd).expect("init script");
    assert!(script.starts_with("#!/sbin/openrc-run\n"));
    for needed in ["command=\"/usr/sbin/bpftune\"", "supervisor=\"supervise-daemon\"", "need net", "-S"] {
        assert!(script.contains(needed), "init script lacks '{needed}'");
    }

    // The SysV script: POSIX sh (dash is Debian's /bin/sh), and the same
    // options file and modules as the unit.
    make(&["uninstall", &destdir, "prefix=/usr", "libdir=lib64", "WITH_OPENRC=1"]);
    make(&["install", "NOBUILD=1", &destdir, "prefix=/usr", "libdir=lib64", "WITH_OPENRC=0"]);
    let mut cmd = Command::new("sh");
    cmd.arg("-n").arg(&initd);
    run(cmd);
    if Command::new("sh").args(["-c", "command -v dash"]).output().is_ok_and(|o| o.status.success()) {
        let mut cmd = Command::new("dash");
        cmd.arg("-n").arg(&initd);
        run(cmd);
    }
    let script = fs::read_to_string(&initd).expect("SysV script");
    assert!(script.starts_with("#!/bin/sh\n### BEGIN INIT INFO\n"));
    for needed in ["EnvironmentFile=-/etc/default/bpftune", "ExecStartPre=-+/sbin/modprobe -q -a tcp_bbr tcp_htcp"] {
        assert!(unit.contains(needed), "unit lacks '{needed}'");
    }
    for needed in ["/etc/default/bpftune", "modprobe -q -a tcp_bbr tcp_htcp", "$BPFTUNE_OPTS", "ulimit -l unlimited"] {
        assert!(script.contains(needed), "SysV script lacks '{needed}' (the unit has it)");
    }
}

/// Start an extracted daemon with its own plugin directory, wait until it
/// has loaded its tuners, stop it; returns (success, log).
fn run_extracted_daemon(bin: &Path, plugin_dir: &Path, log_path: &Path) -> (bool, String) {
    let log = fs::File::create(log_path).expect("daemon log");
    let log2 = log.try_clone().expect("dup log");
    let dir = plugin_dir.to_str().expect("utf8 path");
    let mut child = Command::new(bin)
        .args(["-s", "-d", "--system-libdir", dir, "-l", dir])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .expect("spawn extracted bpftune");
    let read_log = || fs::read_to_string(log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if read_log().contains("network namespaces besides the global one") || !matches!(child.try_wait(), Ok(None)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.is_some_and(|s| s.success()), read_log())
}

/// The extracted tree works: `-P` names `expected_dir`, `-S` reports
/// support, and the daemon loads every tuner from the extracted plugin dir.
fn check_extracted(root: &Path, libdir: &str) {
    let bin = root.join("usr/sbin/bpftune");
    let plugin_dir = root.join(format!("usr/{libdir}/bpftune"));
    let mut cmd = Command::new(&bin);
    cmd.arg("-P");
    assert_eq!(stdout(cmd).trim(), format!("/usr/{libdir}/bpftune/"), "compiled-in plugin dir");

    let _lock = test_lock();
    let mut cmd = Command::new(&bin);
    cmd.arg("-S");
    let out = run(cmd);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("bpftune works"), "-S: {text}");

    let (ok, log) = run_extracted_daemon(&bin, &plugin_dir, &root.join("daemon.log"));
    assert!(ok, "extracted daemon did not exit cleanly:\n{log}");
    for t in tuners() {
        assert!(log.contains(&format!("sucessfully initialized tuner {t}[")), "tuner {t} did not load:\n{log}");
    }
}

fn find_one(dir: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            n.starts_with(prefix) && n.ends_with(suffix)
        })
        .collect();
    assert_eq!(found.len(), 1, "expected one {prefix}*{suffix} in {}: {found:?}", dir.display());
    found.into_iter().next().expect("one package")
}

#[test]
fn rpm_contains_everything_and_its_daemon_works() {
    bpftune_tests::require_root!();
    pkg_deps();
    make(&["pkg"]);
    let rpms = target_dir().join("rpmbuild/RPMS");
    let rpm = find_one(&rpms.join("x86_64"), "bpftune-0", ".x86_64.rpm");
    let devel = find_one(&rpms.join("noarch"), "bpftune-devel-", ".noarch.rpm");

    let mut cmd = Command::new("rpm");
    cmd.arg("-qlp").arg(&rpm);
    let files = stdout(cmd);
    let has = |path: &str| files.lines().any(|l| l == path || l.starts_with(&format!("{path}.")));
    let mut expected = vec!["/usr/sbin/bpftune".to_string(), "/usr/lib/systemd/system/bpftune.service".to_string()];
    expected.extend(tuners().iter().map(|t| format!("/usr/lib64/bpftune/{t}_tuner.so")));
    expected.extend(man_pages().iter().map(|m| format!("/usr/share/man/man8/{m}.8")));
    for path in &expected {
        assert!(has(path), "{} lacks {path}:\n{files}", rpm.display());
    }
    assert!(files.lines().any(|l| l.contains("/licenses/")), "no licence files:\n{files}");
    // The unit only: no SysV (or OpenRC) script on RPM distributions.
    assert!(!files.lines().any(|l| l.starts_with("/etc/init.d") || l.starts_with("/etc/conf.d")), "{files}");

    let mut cmd = Command::new("rpm");
    cmd.args(["-qp", "--scripts"]).arg(&rpm);
    let scripts = stdout(cmd);
    for needed in ["preset bpftune.service", "disable --now bpftune.service", "try-restart bpftune.service"] {
        assert!(scripts.contains(needed), "scriptlets lack '{needed}':\n{scripts}");
    }
    let mut cmd = Command::new("rpm");
    cmd.args(["-qpR"]).arg(&rpm);
    let requires = stdout(cmd);
    assert!(requires.contains("libelf") && requires.contains("zlib"), "requires:\n{requires}");

    let mut cmd = Command::new("rpm");
    cmd.arg("-qlp").arg(&devel);
    let devel_files = stdout(cmd);
    for f in [
        "sdk/bpftune-sdk/Cargo.toml",
        "sdk/bpftune-abi/Cargo.toml",
        "sdk/bpf-common/include/bpftune_common.h",
        "sdk/Cargo.toml",
    ] {
        assert!(devel_files.contains(f), "devel lacks {f}:\n{devel_files}");
    }

    let scratch = Scratch::new("rpm");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "rpm2cpio \"$1\" | cpio -idm --quiet", "sh"]).arg(&rpm).current_dir(&scratch.0);
    run(cmd);
    let so = scratch.0.join(format!("usr/lib64/bpftune/{}_tuner.so", tuners()[0]));
    assert_eq!(mode(&so), 0o644, "{}", so.display());
    assert_eq!(mode(&scratch.0.join("usr/lib64/bpftune")), 0o755);
    check_extracted(&scratch.0, "lib64");
}

#[test]
fn deb_contains_everything_and_its_daemon_works() {
    bpftune_tests::require_root!();
    pkg_deps();
    make(&["deb"]);
    let deb = find_one(&target_dir().join("deb"), "bpftune_", ".deb");
    let mut cmd = Command::new("dpkg");
    cmd.arg("-c").arg(&deb);
    let listing = stdout(cmd);
    let entry = |path: &str| listing.lines().find(|l| l.ends_with(&format!(" .{path}"))).map(str::to_string);
    let mut expected = vec!["/usr/sbin/bpftune".to_string(), "/usr/lib/systemd/system/bpftune.service".to_string()];
    expected.extend(tuners().iter().map(|t| format!("/usr/lib/bpftune/{t}_tuner.so")));
    expected.extend(man_pages().iter().map(|m| format!("/usr/share/man/man8/{m}.8.gz")));
    expected.push("/usr/share/doc/bpftune/copyright".to_string());
    expected.push("/etc/init.d/bpftune".to_string());
    for path in &expected {
        let line = entry(path).unwrap_or_else(|| panic!("{} lacks {path}:\n{listing}", deb.display()));
        assert!(line.contains("root/root"), "{path} not owned by root: {line}");
        if path.ends_with("_tuner.so") {
            assert!(line.starts_with("-rw-r--r--"), "{path} not 0644: {line}");
        }
        if path == "/etc/init.d/bpftune" {
            assert!(line.starts_with("-rwxr-xr-x"), "{path} not 0755: {line}");
        }
    }
    assert!(entry("/etc/conf.d/bpftune").is_none(), "the .deb ships OpenRC files:\n{listing}");
    // The SysV script is a conffile, registered with update-rc.d and run by
    // invoke-rc.d (which leaves the unit to systemd where it is PID 1).
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-I").arg(&deb).arg("conffiles");
    assert_eq!(stdout(cmd).trim(), "/etc/init.d/bpftune");
    for (script, needed) in [
        ("postinst", "update-rc.d bpftune defaults"),
        ("postinst", "invoke-rc.d --skip-systemd-native bpftune"),
        ("prerm", "invoke-rc.d --skip-systemd-native bpftune stop"),
        ("postrm", "update-rc.d bpftune remove"),
    ] {
        let mut cmd = Command::new("dpkg-deb");
        cmd.arg("-I").arg(&deb).arg(script);
        let text = stdout(cmd);
        assert!(text.contains(needed), "{script} lacks '{needed}':\n{text}");
    }
    let mut cmd = Command::new("dpkg-deb");
    cmd.args(["-f"]).arg(&deb).args(["Package", "Version", "Depends"]);
    let fields = stdout(cmd);
    assert!(fields.contains("Package: bpftune") && fields.contains("libelf1"), "control:\n{fields}");
    let mut cmd = Command::new("dpkg-deb");
    cmd.args(["-f"]).arg(&deb).arg("Pre-Depends");
    let pre = stdout(cmd);
    assert!(pre.contains("init-system-helpers (>= 1.58)"), "--skip-systemd-native needs it: {pre}");

    let scratch = Scratch::new("deb");
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-x").arg(&deb).arg(&scratch.0);
    run(cmd);
    check_extracted(&scratch.0, "lib");
}
