//! Root integration tests of the neigh_table tuner: the real daemon with the
//! real BPF programs and real (permanent) neighbours added on a veth inside
//! namespaces made here. The neighbour tables are shared by every
//! namespace, so their table-wide thresholds are global: each test saves
//! them first and a guard puts them back, even on failure.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use bpftune_tests::{Daemon, Netns, PluginDir, Veth, test_lock};

/// Where the device's namespace cannot be found (no netns cookies).
const UNBOUNDED: &str = "the device's network namespace is unknown; using the fixed maximum of 65536";
const ARP: &str = "arp_cache";
const NDISC: &str = "ndisc_cache";
const GROWN: &str = "updated thresholds for arp_cache table";
const REDUCED: &str = "reduced thresholds for arp_cache table";
const FULL: &str =
    "Scenario 'neighbour table nearly full' occurred for tunable 'net.ipv4.neigh.default.gc_thresh3' in global ns.";
const EMPTY: &str =
    "Scenario 'neighbour table nearly empty' occurred for tunable 'net.ipv4.neigh.default.gc_thresh3' in global ns.";
const EXCESSIVE: &str = "Scenario 'neighbour table grown excessively' occurred for tunable 'net.ipv4.neigh.default.gc_thresh3' in global ns.";
const WAIT: Duration = Duration::from_secs(20);

/// Table-wide thresh1/2/3 from `ip ntable show name TABLE` (the first
/// block, which has no `dev` line).
fn thresholds(table: &str) -> [i64; 3] {
    let out = Command::new("ip").args(["ntable", "show", "name", table]).output().expect("ip ntable show");
    assert!(out.status.success(), "ip ntable show: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("thresh1")).unwrap_or_else(|| panic!("no thresholds in {text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let get = |key: &str| -> i64 {
        let i = words.iter().position(|w| *w == key).unwrap_or_else(|| panic!("no {key} in {line}"));
        words[i + 1].parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    [get("thresh1"), get("thresh2"), get("thresh3")]
}

fn try_set_thresholds(table: &str, t: [i64; 3]) -> bool {
    let (a, b, c) = (t[0].to_string(), t[1].to_string(), t[2].to_string());
    Command::new("ip")
        .args(["ntable", "change", "name", table, "thresh1", &a, "thresh2", &b, "thresh3", &c])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn set_thresholds(table: &str, t: [i64; 3]) {
    assert!(try_set_thresholds(table, t), "ip ntable change {table} {t:?} failed");
    assert_eq!(thresholds(table), t);
}

/// Puts a table's thresholds back as they were when saved.
struct ThresholdGuard {
    table: &'static str,
    saved: [i64; 3],
}

impl ThresholdGuard {
    fn save(table: &'static str) -> Self {
        Self { table, saved: thresholds(table) }
    }
}

impl Drop for ThresholdGuard {
    fn drop(&mut self) {
        if !try_set_thresholds(self.table, self.saved) {
            eprintln!("could not restore the {} thresholds to {:?}", self.table, self.saved);
        }
    }
}

/// Run `ip -n NS -batch -` with these commands.
fn ip_batch(ns: &Netns, cmds: &[String]) {
    let mut child = Command::new("ip")
        .args(["-n", &ns.name, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip -batch");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(cmds.join("\n").as_bytes()).expect("write batch");
    drop(stdin);
    let out = child.wait_with_output().expect("wait ip -batch");
    assert!(out.status.success(), "ip -batch: {}", String::from_utf8_lossy(&out.stderr));
}

/// Neighbour addresses 10.<b>.<c>.<d> for the n-th entry of block `b`.
fn neigh_addr(b: u8, i: usize) -> String {
    format!("10.{b}.{}.{}", i / 250, i % 250 + 2)
}

/// `ip neigh replace` (permanent) of entries `range` of block `b` on `dev`.
fn add_neighbours(ns: &Netns, dev: &str, b: u8, range: std::ops::Range<usize>) {
    add_neighbours_at(ns, dev, b, range, neigh_addr);
}

/// As [`add_neighbours`], with addresses from `addr`.
fn add_neighbours_at(ns: &Netns, dev: &str, b: u8, range: std::ops::Range<usize>, addr: fn(u8, usize) -> String) {
    let cmds: Vec<String> = range
        .map(|i| {
            let mac = format!("02:bf:{:02x}:{:02x}:{:02x}:{:02x}", b, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
            format!("neigh replace {} lladdr {mac} dev {dev} nud permanent", addr(b, i))
        })
        .collect();
    ip_batch(ns, &cmds);
}

fn del_neighbours(ns: &Netns, dev: &str, b: u8, range: std::ops::Range<usize>) {
    let cmds: Vec<String> = range.map(|i| format!("neigh del {} dev {dev}", neigh_addr(b, i))).collect();
    ip_batch(ns, &cmds);
}

fn start_daemon() -> (PluginDir, Daemon) {
    start_daemon_with(&[])
}

fn start_daemon_with(args: &[&str]) -> (PluginDir, Daemon) {
    let plugins = PluginDir::with(&["sysctl", "neigh_table"]);
    let daemon = Daemon::start_tuner(&plugins, args, "neigh_table");
    (plugins, daemon)
}

/// (old, new) thresh3 of every "updated thresholds" line, in order.
fn thresh3_changes(log: &str, what: &str) -> Vec<(i64, i64)> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            let rest = &l[l.find("thresh3: ")? + 9..];
            let mut it = rest.split(" to ");
            let old = it.next()?.trim().parse().ok()?;
            let new = it.next()?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
            Some((old, new))
        })
        .collect()
}

#[test]
fn arp_thresholds_grow_when_the_table_fills() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let _g = ThresholdGuard::save(ARP);
    let a = Netns::new("nga");
    let b = Netns::new("ngb");
    let veth = Veth::connect(Some(&a), Some(&b));
    set_thresholds(ARP, [32, 64, 128]);
    let (_p, daemon) = start_daemon();

    // 250 permanent neighbours, in batches more than a second apart so
    // that the rate-limited tuner can act on several of them.
    for batch in 0..5 {
        add_neighbours(&a, &veth.a_if, 251, batch * 50..(batch + 1) * 50);
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert!(daemon.wait_for_log(GROWN, WAIT), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains(FULL), "{log}");
    // The bound comes from the veth's /24, read in namespace a.
    if bpftune_tests::netns_cookies() {
        assert!(
            log.contains(&format!("arp_cache: computed max tbl size of 1024 for '{}'", veth.a_if)),
            "the bound must be computed from the device's addresses in its namespace\n{log}"
        );
        assert!(log.contains("computed max addrs of 1024 given addrlen 4, prefixlen 24"), "{log}");
    } else {
        // No namespace cookies: the device's namespace cannot be found.
        assert!(log.contains(UNBOUNDED), "{log}");
    }

    // The changes chain (each acknowledged before the next) and the table
    // has the last one.
    let changes = thresh3_changes(&log, GROWN);
    assert!(!changes.is_empty(), "{log}");
    assert_eq!(changes[0].0, 128, "{log}");
    for w in changes.windows(2) {
        assert_eq!(w[0].1, w[1].0, "changes must follow each other: {changes:?}");
    }
    let now = thresholds(ARP);
    let last = changes[changes.len() - 1].1;
    assert_eq!(now[2], last, "{log}");
    assert!(now[2] > 128 && now[2] <= 1024, "{now:?}");
    assert!(now[0] > 32 && now[0] <= now[1] && now[1] <= now[2], "{now:?}");
    eprintln!("arp_cache thresholds: [32, 64, 128] -> {now:?} in {} changes", changes.len());

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("# Summary: scenario 'neighbour table nearly full' occurred"), "{log}");
}

/// The thresholds are sysctl writes through the daemon: `-R` puts them
/// back at exit, and `--advise` only says what it would do.
#[test]
fn rollback_restores_grown_thresholds_and_advise_mode_changes_none() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let _g = ThresholdGuard::save(ARP);
    let a = Netns::new("nra");
    let b = Netns::new("nrb");
    let veth = Veth::connect(Some(&a), Some(&b));
    set_thresholds(ARP, [32, 64, 128]);

    let (_p, daemon) = start_daemon_with(&["--advise"]);
    add_neighbours(&a, &veth.a_if, 251, 0..150);
    assert!(
        daemon.wait_for_log("for tunable 'net.ipv4.neigh.default.gc_thresh3' in global ns: would change", WAIT),
        "{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(thresholds(ARP), [32, 64, 128], "advise mode changed the table: {}", daemon.log());
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("occurred for tunable"), "advice only: {log}");

    // Start over with -R (new neighbours: only creations are seen): the
    // tuner grows the table, the exit restores it.
    let (_p, daemon) = start_daemon_with(&["-R"]);
    add_neighbours(&a, &veth.a_if, 251, 150..250);
    assert!(daemon.wait_for_log(GROWN, WAIT), "{}", daemon.log());
    assert_ne!(thresholds(ARP), [32, 64, 128]);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert_eq!(thresholds(ARP), [32, 64, 128], "-R must restore the thresholds: {log}");
}

#[test]
fn arp_growth_stops_at_the_bound_the_device_addresses_justify() {
    bpftune_tests::require_root!();
    if !bpftune_tests::per_netns_policy_or_skip("arp_growth_stops_at_the_bound_the_device_addresses_justify") {
        return;
    }
    let _l = test_lock();
    let _g = ThresholdGuard::save(ARP);
    let a = Netns::new("nma");
    let b = Netns::new("nmb");
    let veth = Veth::connect(Some(&a), Some(&b));
    // One /24 on the device justifies 1024 entries: the kernel default.
    set_thresholds(ARP, [128, 512, 1024]);
    let (_p, daemon) = start_daemon();

    add_neighbours(&a, &veth.a_if, 252, 0..800);
    assert!(daemon.wait_for_log("can no longer update thresholds", WAIT), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains(EXCESSIVE), "{log}");
    assert!(
        log.contains(&format!("for table 'arp_cache' for device '{}' (ifindex ", veth.a_if))
            && log
                .contains("we computed a reasonable max of 1024 based on the prefixlens of the 1 configured addresses"),
        "{log}"
    );
    assert!(!log.contains(GROWN), "{log}");
    assert_eq!(thresholds(ARP), [128, 512, 1024]);

    // Three more /24s on the device: 4096 now, and growth resumes.
    for i in 0..3u8 {
        a.exec(&["ip", "addr", "add", &format!("10.253.{i}.1/24"), "dev", &veth.a_if]);
    }
    std::thread::sleep(Duration::from_millis(1200));
    add_neighbours(&a, &veth.a_if, 252, 800..820);
    assert!(daemon.wait_for_log(GROWN, WAIT), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("computed max tbl size of 4096"), "{log}");
    assert_eq!(thresh3_changes(&log, GROWN)[0], (1024, 1280), "{log}");
    assert_eq!(thresholds(ARP), [160, 640, 1280]);

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn arp_thresholds_shrink_when_the_table_empties() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let _g = ThresholdGuard::save(ARP);
    let a = Netns::new("nsa");
    let b = Netns::new("nsb");
    let veth = Veth::connect(Some(&a), Some(&b));
    set_thresholds(ARP, [512, 2048, 4096]);
    let (_p, daemon) = start_daemon();

    add_neighbours(&a, &veth.a_if, 253, 0..250);
    del_neighbours(&a, &veth.a_if, 253, 0..250);
    assert!(daemon.wait_for_log(REDUCED, WAIT), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains(EMPTY), "{log}");
    assert!(
        log.contains(
            "reduced thresholds for arp_cache table, thresh1: 512 to 384, thresh2: 2048 to 1536, thresh3: 4096 to 3072"
        ),
        "{log}"
    );
    assert!(!log.contains(GROWN), "{log}");
    let now = thresholds(ARP);
    assert!(now[2] < 4096 && now[2] >= 1024, "{now:?}");
    assert!(now[0] >= 128 && now[1] >= 512, "{now:?}");

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn an_administrator_write_stops_the_tuner() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let _g = ThresholdGuard::save(ARP);
    let a = Netns::new("noa");
    let b = Netns::new("nob");
    let veth = Veth::connect(Some(&a), Some(&b));
    set_thresholds(ARP, [32, 64, 128]);
    let (_p, daemon) = start_daemon();

    // The administrator writes a neighbour sysctl (with its current value).
    let out =
        Command::new("sysctl").args(["-q", "-w", "net.ipv4.neigh.default.gc_thresh1=32"]).output().expect("sysctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        daemon.wait_for_log(
            "modified sysctl 'net.ipv4.neigh.default.gc_thresh1' that tuner 'neigh_table' uses; disabling 'neigh_table'",
            WAIT
        ),
        "{}",
        daemon.log()
    );
    add_neighbours(&a, &veth.a_if, 254, 0..250);
    if bpftune_tests::netns_cookies() {
        let stopped = "not changing the thresholds of table 'arp_cache' any more";
        assert!(daemon.wait_for_log(stopped, WAIT), "{}", daemon.log());
    } else {
        // Global-only policy: the daemon drops the events before the tuner.
        std::thread::sleep(Duration::from_secs(3));
    }
    let log = daemon.log();
    assert!(!log.contains(GROWN), "{log}");
    assert_eq!(thresholds(ARP), [32, 64, 128]);

    // The operator hands the tunable back: the tuner acts again.
    let out = Command::new(bpftune_tests::daemon_binary())
        .args(["-q", "release", "net.ipv4.neigh.default.gc_thresh1"])
        .output()
        .expect("bpftune -q release");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    if bpftune_tests::netns_cookies() {
        let resumed = "neigh_table: handed back; changing neighbour table thresholds again";
        assert!(daemon.wait_for_log(resumed, WAIT), "{}", daemon.log());
    }
    // The table is at gc_thresh3 (creations beyond it failed): empty it
    // (removing the devices flushes their neighbours) and fill it again
    // from new namespaces, so neighbours are created while it nearly fills.
    drop(veth);
    drop((a, b));
    let c = Netns::new("noc");
    let d = Netns::new("nod");
    let veth = Veth::connect(Some(&c), Some(&d));
    for batch in 0..5 {
        add_neighbours(&c, &veth.a_if, 253, batch * 50..(batch + 1) * 50);
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert!(daemon.wait_for_log(GROWN, WAIT), "not grown after the hand-back:\n{}", daemon.log());

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn ndisc_thresholds_grow_when_the_table_fills() {
    bpftune_tests::require_root!();
    let _l = test_lock();
    let _g = ThresholdGuard::save(NDISC);
    let a = Netns::new("n6a");
    let b = Netns::new("n6b");
    let veth = Veth::connect(Some(&a), Some(&b));
    veth.add_ipv6();
    set_thresholds(NDISC, [32, 64, 128]);
    let (_p, daemon) = start_daemon();

    add_neighbours_at(&a, &veth.a_if, 1, 0..250, |b, i| format!("fd00:bf7f:{b:x}::{:x}", i + 2));
    assert!(daemon.wait_for_log("updated thresholds for ndisc_cache table", WAIT), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains(
            "Scenario 'neighbour table nearly full' occurred for tunable 'net.ipv6.neigh.default.gc_thresh3' in global ns."
        ),
        "{log}"
    );
    // A /64 leaves 64 host bits: no bound from the addresses.
    if bpftune_tests::netns_cookies() {
        let bound = format!("ndisc_cache: computed max tbl size of 2147483647 for '{}'", veth.a_if);
        assert!(log.contains(&bound), "{log}");
    } else {
        assert!(log.contains(UNBOUNDED), "{log}");
    }
    let now = thresholds(NDISC);
    assert!(now[2] > 128, "{now:?}");
    assert!(!log.contains(GROWN), "the ARP table was not filled\n{log}");

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}
