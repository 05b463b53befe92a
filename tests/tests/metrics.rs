//! Root integration tests of what the daemon exports: `-q metrics`,
//! `GET /metrics` over TCP on 127.0.0.1 and over a Unix socket, the
//! node_exporter textfile (written atomically), non-loopback addresses
//! refused, the Grafana dashboard naming only exported metrics, and the
//! `-q report` HTML page rendered in headless Chromium. A real daemon with
//! the test tuner (and the sysctl tuner) changes `tcp_fin_timeout` in a
//! namespace of the test's own; the exposition text is checked by
//! Python's `prometheus_client` parsers (OpenMetrics and 0.0.4) and by
//! `promtool check metrics` (scripts/promtool.sh finds or unpacks it).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bpftune_tests::{
    Daemon, Netns, PluginDir, SysctlGuard, TEST_RUN_DIR, daemon_binary, loopback_connections, test_lock, wait_until,
};

const FIN: &str = "net.ipv4.tcp_fin_timeout";
const SCENARIO: &str = "test connection seen";
/// Debian's python3 with python3-prometheus-client (not a pyenv shim).
const PYTHON: &str = "/usr/bin/python3";

/// One sample: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of exposition text (either format), by a small parser of
/// our own: `name{k="v",...} value`.
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels {line:?}"))),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        let mut chars = labels.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some(c) => v.push(c),
                        None => break,
                    },
                    '"' => break,
                    c => v.push(c),
                }
            }
            map.insert(key, v);
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        out.push(Sample { name: name.to_string(), labels: map, value });
    }
    out
}

/// Samples named `name` whose labels include all of `want`.
fn find<'a>(all: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    all.iter()
        .filter(|s| s.name == name && want.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect()
}

fn one(all: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found = find(all, name, want);
    assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
    found[0].value
}

/// Check `text` with Python's prometheus_client parser for `format`
/// (`openmetrics` or `prometheus`); returns the family names it read.
fn python_parse(text: &str, format: &str) -> Vec<String> {
    let module = match format {
        "openmetrics" => "prometheus_client.openmetrics.parser",
        _ => "prometheus_client.parser",
    };
    let script = format!(
        "import sys\nfrom {module} import text_string_to_metric_families as p\n\
         for f in p(sys.stdin.read()):\n    print(f.name, f.type, len(f.samples))\n"
    );
    let mut child = Command::new(PYTHON)
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (Debian packages python3 and python3-prometheus-client)");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "{format} parser rejected the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split(' ').next().map(str::to_string)).collect()
}

/// `promtool check metrics` (Prometheus's own parser and linter, 0.0.4
/// text) on `text`: it must pass without a remark.
fn promtool_check(text: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/promtool.sh");
    let out = Command::new(&script).output().expect("scripts/promtool.sh");
    assert!(out.status.success(), "no promtool: {}", String::from_utf8_lossy(&out.stderr));
    let tool = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut child = Command::new(&tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}

fn query(verb: &str) -> String {
    let out = Command::new(daemon_binary()).args(["-q", verb]).output().expect("bpftune -q");
    assert!(out.status.success(), "-q {verb}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One HTTP request over `stream`; (head, body).
fn http(mut stream: impl Read + Write, request: &str) -> (String, String) {
    stream.write_all(request.as_bytes()).expect("send");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head end: {out}"));
    (head.to_string(), body.to_string())
}

const GET_OM: &str = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\
    Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n";
const GET_PLAIN: &str = "GET /metrics HTTP/1.0\r\n\r\n";

fn tcp(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics port");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s
}

/// The port the daemon logged it serves metrics on.
fn metrics_port(daemon: &Daemon) -> u16 {
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("serving metrics: GET /metrics on 127.0.0.1:"))
        .unwrap_or_else(|| panic!("no metrics line: {log}"));
    line.rsplit(':').next().and_then(|p| p.trim().parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

/// A scratch directory under the test run dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = Path::new(TEST_RUN_DIR).join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The change count of the test tuner in its namespace, and that
/// namespace's label.
fn test_changes(all: &[Sample]) -> (String, f64) {
    // Scrapes over TCP are connections in the global namespace, which the
    // test tuner counts too.
    let found: Vec<_> =
        find(all, "bpftune_changes_total", &[("tuner", "test"), ("tunable", FIN), ("scenario", SCENARIO)])
            .into_iter()
            .filter(|s| s.labels["netns"] != "global")
            .collect();
    assert_eq!(found.len(), 1, "one namespace changed: {found:?}");
    (found[0].labels["netns"].clone(), found[0].value)
}

#[test]
fn metrics_by_query_http_and_textfile_follow_changes() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let _g = SysctlGuard::global(FIN);
    // BPF run statistics on for the test (restored after).
    let _stats = SysctlGuard::set("kernel.bpf_stats_enabled", "1");
    let plugins = PluginDir::with(&["sysctl", "test"]);
    let mut ns = Netns::new("mtr");
    ns.set_sysctl(FIN, "30");
    // A process in it, so the namespace has a workload (bpftune_netns_info).
    let pid = spawn_in(&mut ns);
    let scratch = Scratch::new("metrics-textfile");
    let textfile = scratch.0.join("bpftune.prom");
    let tf = textfile.to_str().expect("utf8");
    let daemon = Daemon::start_tuner(&plugins, &["--metrics-listen", "127.0.0.1:0", "--metrics-textfile", tf], "test");
    let port = metrics_port(&daemon);

    // Before any change: states, features, build info; no change counted.
    let before = query("metrics");
    assert!(before.ends_with("# EOF\n"), "{before}");
    python_parse(&before, "openmetrics");
    let all = samples(&before);
    assert_eq!(one(&all, "bpftune_tuner_state", &[("tuner", "test"), ("state", "active")]), 1.0);
    assert_eq!(one(&all, "bpftune_tuner_state", &[("tuner", "test"), ("state", "failed")]), 0.0);
    assert_eq!(one(&all, "bpftune_tuner_state", &[("tuner", "sysctl"), ("state", "active")]), 1.0);
    let absent = [("tuner", "test"), ("part", "net.core.bpftune_test_absent")];
    assert_eq!(one(&all, "bpftune_tuner_feature", &[absent[0], absent[1], ("state", "off")]), 1.0);
    assert_eq!(one(&all, "bpftune_tuner_feature", &[absent[0], absent[1], ("state", "active")]), 0.0);
    assert!(find(&all, "bpftune_changes_total", &[("tuner", "test")]).is_empty(), "{before}");
    assert_eq!(one(&all, "bpftune_build_info", &[]), 1.0);
    assert!(one(&all, "bpftune_resident_memory_bytes", &[]) > 1e6, "{before}");
    assert!(one(&all, "bpftune_cpu_seconds_total", &[]) >= 0.0);
    assert_eq!(one(&all, "bpftune_bpf_stats_enabled", &[]), 1.0);

    // A change in the namespace, then the counter, the values and events.
    loopback_connections(Some(&ns), 3);
    assert!(daemon.wait_for_log("in non-global ns", Duration::from_secs(10)), "{}", daemon.log());
    let after = query("metrics");
    python_parse(&after, "openmetrics");
    let all = samples(&after);
    let (netns, n1) = test_changes(&all);
    assert_ne!(netns, "global", "{after}");
    assert!(netns.parse::<u64>().is_ok(), "netns is the cookie: {netns}");
    assert!(n1 >= 1.0, "{after}");
    let now = ns.sysctl(FIN);
    let labels = [("tuner", "test"), ("tunable", FIN), ("netns", netns.as_str()), ("index", "0")];
    assert_eq!(one(&all, "bpftune_tunable_original_value", &labels), 30.0, "{after}");
    assert_eq!(one(&all, "bpftune_tunable_value", &labels), now.trim().parse::<f64>().expect("int"), "{after}");
    assert!(one(&all, "bpftune_events_received_total", &[]) >= n1, "{after}");
    let info = find(&all, "bpftune_netns_info", &[("netns", netns.as_str())]);
    assert_eq!(info.len(), 1, "{after}");
    // Its scenario is not judged by effect: no verdict series.
    assert!(find(&all, "bpftune_verdicts_total", &[("tuner", "test")]).is_empty(), "{after}");
    assert!(daemon.log().contains(&format!("netns (cookie {netns}) is that of pid {pid}: ")), "{}", daemon.log());
    assert_eq!(one(&all, "bpftune_ringbuf_events_dropped_total", &[]), 0.0);
    // The test tuner's BPF program ran for the connections.
    let runs: f64 = find(&all, "bpftune_bpf_program_runs_total", &[]).iter().map(|s| s.value).sum();
    assert!(runs >= 3.0, "BPF programs ran: {after}");
    assert!(find(&all, "bpftune_bpf_program_run_time_seconds_total", &[]).iter().any(|s| s.value > 0.0), "{after}");

    // GET /metrics over TCP: OpenMetrics if asked for, else 0.0.4 text.
    let (head, body) = http(tcp(port), GET_OM);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let om_names = python_parse(&body, "openmetrics");
    assert_eq!(test_changes(&samples(&body)).0, netns);
    let (head, plain) = http(tcp(port), GET_PLAIN);
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    assert!(!plain.contains("# EOF"), "{plain}");
    python_parse(&plain, "prometheus");
    promtool_check(&plain);
    let (head, _) = http(tcp(port), "GET / HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // A client that sends nothing holds nobody up.
    let _silent = tcp(port);
    let (head, _) = http(tcp(port), GET_PLAIN);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");

    // More connections: the counter moves, in every view.
    loopback_connections(Some(&ns), 3);
    assert!(
        wait_until(Duration::from_secs(10), || test_changes(&samples(&query("metrics"))).1 > n1),
        "counter did not move: {}",
        query("metrics")
    );
    let (_, body) = http(tcp(port), GET_OM);
    assert!(test_changes(&samples(&body)).1 > n1, "{body}");

    // The Grafana dashboard names only metrics the daemon exports.
    let exported: Vec<String> = samples(&body).into_iter().map(|s| s.name).collect();
    check_dashboard(&exported, &om_names, &body);

    // The textfile: Prometheus text, replaced whole (new inode each time,
    // never a partial file), and it follows the changes too.
    assert!(wait_until(Duration::from_secs(10), || textfile.exists()), "no textfile");
    let first_ino = std::fs::metadata(&textfile).expect("textfile").ino();
    let mut seen_new_inode = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !seen_new_inode {
        let text = std::fs::read_to_string(&textfile).expect("read textfile");
        assert!(text.starts_with("# HELP ") && text.ends_with('\n'), "whole file: {text}");
        seen_new_inode = std::fs::metadata(&textfile).expect("textfile").ino() != first_ino;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen_new_inode, "the textfile was not rewritten within 15 s");
    let text = std::fs::read_to_string(&textfile).expect("read textfile");
    python_parse(&text, "prometheus");
    promtool_check(&text);
    assert!(text.contains("# TYPE bpftune_changes_total counter"), "{text}");
    assert!(test_changes(&samples(&text)).1 > n1, "{text}");
    let mode = std::fs::metadata(&textfile).expect("textfile").permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    let names: Vec<String> = std::fs::read_dir(&scratch.0)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n == "bpftune.prom" || n.ends_with(".tmp")), "{names:?}");

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    // After exit the textfile says the tuners stopped.
    let text = std::fs::read_to_string(&textfile).expect("read textfile");
    let all = samples(&text);
    assert_eq!(one(&all, "bpftune_tuner_state", &[("tuner", "test"), ("state", "inactive")]), 1.0, "{text}");
    assert_eq!(one(&all, "bpftune_tuner_state", &[("tuner", "test"), ("state", "active")]), 0.0, "{text}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "listener closed at exit");
}

/// Every `bpftune_*` name in the dashboard's queries is exported (as a
/// sample name, or a family name the OpenMetrics parser reported).
fn check_dashboard(exported: &[String], families: &[String], exported_text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/bpftune.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("dashboard is valid JSON");
    assert!(v["title"].as_str().is_some_and(|t| t.contains("bpftune")), "title");
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if (k == "expr" || k == "query") && x.is_string() {
                        out.push(x.as_str().unwrap_or_default().to_string());
                    } else {
                        walk(x, out);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&v, &mut exprs);
    assert!(exprs.len() >= 6, "dashboard queries: {exprs:?}");
    let mut used = Vec::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("bpftune_") {
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            used.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    assert!(!used.is_empty());
    for name in &used {
        // A family with no sample yet (bpftune_netns_info before any
        // namespace with a process in it changed) still has its TYPE line.
        let typed = families.iter().any(|n| n == name || format!("{n}_total") == *name)
            || exported_text.contains(&format!("# TYPE {name} "));
        assert!(exported.iter().any(|n| n == name) || typed, "dashboard uses {name}, which the daemon does not export");
    }
    for needed in [
        "bpftune_changes_total",
        "bpftune_tuner_state",
        "bpftune_ringbuf_events_dropped_total",
        "bpftune_tunable_value",
    ] {
        assert!(used.iter().any(|n| n == needed), "dashboard lacks {needed}");
    }
}

#[test]
fn metrics_on_a_unix_socket_and_remote_addresses_refused() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let _g = SysctlGuard::global(FIN);
    let plugins = PluginDir::with(&["test"]);
    let scratch = Scratch::new("metrics-sock");
    let sock = scratch.0.join("metrics.sock");
    let daemon = Daemon::start_tuner(&plugins, &["--metrics-listen", sock.to_str().expect("utf8")], "test");
    assert!(
        daemon.log().contains(&format!("serving metrics: GET /metrics on unix:{}", sock.display())),
        "{}",
        daemon.log()
    );
    assert_eq!(std::fs::metadata(&sock).expect("socket").permissions().mode() & 0o777, 0o660);
    let connect = || {
        let s = UnixStream::connect(&sock).expect("connect metrics socket");
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        s
    };
    let (head, body) = http(connect(), GET_OM);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    python_parse(&body, "openmetrics");
    assert_eq!(one(&samples(&body), "bpftune_tuner_state", &[("tuner", "test"), ("state", "active")]), 1.0);
    let (head, _) = http(connect(), "DELETE /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 405") && head.contains("Allow: GET, HEAD"), "{head}");
    // An oversized request head is refused, not buffered.
    let (head, _) = http(connect(), &format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(20_000)));
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(!sock.exists(), "socket removed at exit");

    // Never all interfaces (or any non-loopback address) by default.
    for addr in ["0.0.0.0:9559", "[::]:9559"] {
        let mut d = Daemon::start(&plugins, &["--metrics-listen", addr]);
        let (status, log) = d.wait_exit(Duration::from_secs(30));
        assert_eq!(status.code(), Some(1), "{log}");
        assert!(log.contains(&format!("refusing to serve metrics on {addr}")), "{log}");
        assert!(log.contains("--metrics-allow-remote"), "{log}");
        assert!(!log.contains("sucessfully initialized tuner"), "refused before loading tuners: {log}");
    }
}

#[test]
fn report_renders_in_headless_chromium() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let _g = SysctlGuard::global(FIN);
    let plugins = PluginDir::with(&["test"]);
    let ns = Netns::new("mrep");
    ns.set_sysctl(FIN, "30");
    let daemon = Daemon::start_tuner(&plugins, &[], "test");
    loopback_connections(Some(&ns), 3);
    assert!(daemon.wait_for_log("in non-global ns", Duration::from_secs(10)), "{}", daemon.log());
    let now = ns.sysctl(FIN).trim().to_string();
    let count = test_changes(&samples(&query("metrics"))).1 as u64;

    let scratch = Scratch::new("report");
    let page = scratch.0.join("report.html");
    let html = query("report");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    std::fs::write(&page, &html).expect("write report");
    let url = format!("file://{}", page.display());
    let chromium = |extra: &[&str]| {
        let profile = scratch.0.join(format!("profile-{}", extra.len()));
        let out = Command::new("timeout")
            .arg("120")
            .arg("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium (Debian package chromium)");
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The DOM Chromium built: the change with its numbers, the tuner.
    let dom = chromium(&["--dump-dom"]);
    assert!(dom.contains("<title>bpftune report</title>"), "{dom}");
    let changes = dom.split("<table class=\"changes\">").nth(1).unwrap_or_else(|| panic!("no changes table: {dom}"));
    let row = changes
        .split("<tr>")
        .find(|r| r.contains(FIN) && r.contains("<td>test</td>"))
        .unwrap_or_else(|| panic!("no row for {FIN}: {dom}"));
    assert!(row.contains("<span class=\"from\">30</span>"), "{row}");
    assert!(row.contains(&format!("<span class=\"to\">{now}</span>")), "{row}");
    assert!(row.contains(&format!("<td class=\"num\">{count}</td>")), "{row}");
    assert!(dom.contains(SCENARIO), "{dom}");
    assert!(dom.contains("net.core.bpftune_test_absent"), "features that are off: {dom}");
    // And it paints: a PNG with more than a blank page in it.
    let shot = scratch.0.join("report.png");
    chromium(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG");
    assert!(png.len() > 20_000, "screenshot of a page with tables, {} bytes", png.len());
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

/// A `sleep` in `ns` (killed with it), once it is in there.
fn spawn_in(ns: &mut Netns) -> u32 {
    let pid = ns.spawn(&["sleep", "120"]);
    let ino = ns.inode();
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|m| m.ino() == ino)),
        "sleep did not enter the namespace"
    );
    pid
}

/// A cgroup v2 directory made by a test (with its parents), its processes
/// moved back to the root and the directories removed on drop.
struct TestCgroup {
    root: PathBuf,
    dirs: Vec<PathBuf>,
}

impl TestCgroup {
    /// `rel` under the cgroup v2 hierarchy (not the daemon's own mount).
    fn new(rel: &str) -> Option<Self> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
        let root = mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == "cgroup2" && !f[1].contains("bpftune"))
            .map(|f| PathBuf::from(f[1]))?;
        let mut dirs = Vec::new();
        let mut p = root.clone();
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            p = p.join(comp);
            std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
            dirs.push(p.clone());
        }
        Some(Self { root, dirs })
    }

    fn add(&self, pid: u32) {
        let leaf = self.dirs.last().expect("leaf");
        std::fs::write(leaf.join("cgroup.procs"), pid.to_string()).expect("move process into cgroup");
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Some(leaf) = self.dirs.last() {
            let procs = std::fs::read_to_string(leaf.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn changes_name_the_workload_of_their_namespace() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let _g = SysctlGuard::global(FIN);
    const UID: &str = "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901";
    let container = format!("{:016x}", std::process::id()).repeat(4);
    let unit = format!("cri-containerd-{container}.scope");
    let rel = format!(
        "bpftune-test-{}.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/{unit}",
        std::process::id(),
        UID.replace('-', "_")
    );
    let Some(cgroup) = TestCgroup::new(&rel) else {
        bpftune_tests::skip("changes_name_the_workload_of_their_namespace", "no cgroup v2 hierarchy mounted");
        return;
    };
    let mut ns = Netns::new("mwl");
    ns.set_sysctl(FIN, "30");
    // A "container": a process in the namespace, in a Kubernetes-style
    // cgroup (systemd driver, containerd).
    let pid = spawn_in(&mut ns);
    cgroup.add(pid);
    let plugins = PluginDir::with(&["test"]);
    let daemon = Daemon::start_tuner(&plugins, &[], "test");
    loopback_connections(Some(&ns), 2);
    assert!(daemon.wait_for_log("in non-global ns", Duration::from_secs(10)), "{}", daemon.log());
    let all = samples(&query("metrics"));
    let (netns, _) = test_changes(&all);
    // The log says once which workload the namespace is, at its first change.
    let line = format!(
        "netns (cookie {netns}) is that of pid {pid}: container {container}, pod {UID}, unit {unit}, cgroup /{rel}"
    );
    assert!(daemon.wait_for_log(&line, Duration::from_secs(5)), "{line}\n{}", daemon.log());
    assert_eq!(daemon.count(&format!("netns (cookie {netns}) is that of")), 1, "{}", daemon.log());
    // The metric, joinable on netns.
    let info =
        [("netns", netns.as_str()), ("container_id", container.as_str()), ("pod_uid", UID), ("unit", unit.as_str())];
    assert_eq!(one(&all, "bpftune_netns_info", &info), 1.0, "{all:?}");
    // The report shows it next to the change.
    let html = query("report");
    assert!(html.contains(&format!("container {container}, pod {UID}")), "{html}");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    drop(ns);
    drop(cgroup);
}
