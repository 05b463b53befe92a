//! Unit tests of the sysctl writer and admin-override logic against an
//! in-memory sysctl table (no root needed).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;

use abi_stable::std_types::{RSlice, RStr};

use super::*;
use crate::netns::NsTarget;
use crate::registry::TunerRecord;

#[derive(Default)]
struct FakeSysctl {
    values: RefCell<HashMap<String, String>>,
    writes: RefCell<u32>,
}

impl SysctlIo for Rc<FakeSysctl> {
    fn read(&self, target: &NsTarget, name: &str) -> io::Result<String> {
        assert_eq!(*target, NsTarget::Global);
        self.values.borrow().get(name).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn write(&self, _target: &NsTarget, name: &str, text: &str) -> io::Result<()> {
        *self.writes.borrow_mut() += 1;
        self.values.borrow_mut().insert(name.to_string(), text.to_string());
        Ok(())
    }
}

bpftune_sdk::tunables! {
    enum T {
        Rmem = ("net.ipv4.tcp_rmem", Sysctl, NAMESPACED, 3),
        Mem = ("net.ipv4.tcp_mem", Sysctl, NONE, 3),
    }
}
bpftune_sdk::scenarios! {
    enum S {
        Grow = ("need to increase TCP buffer size(s)", "Need to increase buffer size(s) to maximize throughput"),
    }
}

fn setup(advise: bool) -> (HostState, Rc<FakeSysctl>, Rc<RefCell<Vec<String>>>) {
    let fake = Rc::new(FakeSysctl::default());
    fake.values.borrow_mut().insert("net.ipv4.tcp_rmem".into(), "4096\t131072\t6291456".into());
    fake.values.borrow_mut().insert("net.ipv4.tcp_mem".into(), "1 2 3".into());
    let lines = Rc::new(RefCell::new(Vec::new()));
    let sink = lines.clone();
    let log: LogSink = Rc::new(move |_lvl, msg| sink.borrow_mut().push(msg.to_string()));
    let config = HostConfig {
        debug: true,
        advise,
        learning_rate: LearningRate::default(),
        support: SupportLevel::Normal,
        daemon_pid: 1,
        netns_cookie_supported: true,
    };
    let mut host = HostState::new(config, NetnsRegistry::new(1, "/proc"), Box::new(fake.clone()), log);
    let desc = crate::abi::TunerDescriptor {
        abi_version: crate::abi::BPFTUNE_ABI_VERSION,
        name: RStr::from_str("tcp_buffer"),
        tunables: RSlice::from_slice(T::TABLE),
        scenarios: RSlice::from_slice(S::TABLE),
        strategies: RSlice::from_slice(&[]),
        tick_ms: 0,
    };
    let mut rec = TunerRecord::from_descriptor(0, "/x/tcp_buffer_tuner.so", &desc);
    rec.state = TunerState::Active;
    host.registry.insert(rec);
    (host, fake, lines)
}

fn req<'a>(tunable: T, cookie: u64, values: &'a [i64], reason: &'a str) -> WriteRequest<'a> {
    WriteRequest {
        tunable: tunable.into(),
        scenario: S::Grow.into(),
        netns_cookie: cookie,
        values: RSlice::from_slice(values),
        text: RStr::from_str(""),
        reason: RStr::from_str(reason),
    }
}

#[test]
fn write_logs_two_lines_and_counts() {
    let (mut host, fake, lines) = setup(false);
    let reason = change_reason(
        "need to increase max buffer size to maximize throughput",
        "net.ipv4.tcp_rmem",
        "min default max",
        &[4096, 131072, 6291456],
        &[4096, 131072, 7864320],
    );
    let out = host.write(0, &req(T::Rmem, 0, &[4096, 131072, 7864320], &reason)).expect("write");
    assert_eq!(out, WriteOutcome::Written);
    assert_eq!(fake.values.borrow()["net.ipv4.tcp_rmem"], "4096 131072 7864320");
    let lines = lines.borrow();
    assert_eq!(
        lines[0],
        "Scenario 'need to increase TCP buffer size(s)' occurred for tunable 'net.ipv4.tcp_rmem' in global ns. Need to increase buffer size(s) to maximize throughput"
    );
    assert_eq!(
        lines[1],
        "Due to need to increase max buffer size to maximize throughput change net.ipv4.tcp_rmem(min default max) from (4096 131072 6291456) -> (4096 131072 7864320)"
    );
    let rec = &host.registry.get(0).expect("tuner").records[0];
    assert_eq!(rec.counts[&(0, 1)], 1);
    assert_eq!(rec.initial[&1], "4096 131072 6291456");
}

#[test]
fn no_op_write_is_silent() {
    let (mut host, fake, lines) = setup(false);
    let out = host.write(0, &req(T::Rmem, 0, &[4096, 131072, 6291456], "r")).expect("write");
    assert_eq!(out, WriteOutcome::Unchanged);
    assert!(lines.borrow().is_empty());
    assert_eq!(*fake.writes.borrow(), 0);
    assert!(host.registry.get(0).expect("tuner").records[0].counts.is_empty());
}

#[test]
fn manual_namespace_is_skipped() {
    let (mut host, fake, _lines) = setup(false);
    let disabled = host.admin_override(1234, 1, "net/ipv4/tcp_rmem");
    assert_eq!(disabled, vec!["tcp_buffer".to_string()]);
    let out = host.write(0, &req(T::Rmem, 0, &[1, 2, 3], "r")).expect("write");
    assert_eq!(out, WriteOutcome::SkippedManual);
    assert_eq!(*fake.writes.borrow(), 0);
}

#[test]
fn override_matches_exact_names_only() {
    let (mut host, _fake, lines) = setup(false);
    assert!(host.admin_override(1, 1, "net/ipv4/tcp_rme").is_empty());
    assert!(host.admin_override(1, 1, "ipv4/tcp_rmem").is_empty());
    assert!(lines.borrow().is_empty());
    let disabled = host.admin_override(1, 1, "net/ipv4/tcp_mem");
    assert_eq!(disabled.len(), 1);
    assert!(lines.borrow()[0].starts_with("pid 1, cmd '"));
    assert!(lines.borrow()[0].ends_with(
        "modified sysctl 'net.ipv4.tcp_mem' that tuner 'tcp_buffer' uses; disabling 'tcp_buffer' for namespace cookie 1"
    ));
}

#[test]
fn override_in_other_namespace_leaves_global_active() {
    let (mut host, _fake, _lines) = setup(false);
    host.admin_override(1, 77, "net/ipv4/tcp_rmem");
    let t = host.registry.get(0).expect("tuner");
    assert!(t.active_in(1));
    assert!(!t.active_in(77));
}

#[test]
fn global_tunable_written_from_netns_event_goes_global() {
    let (mut host, fake, lines) = setup(false);
    let out = host.write(0, &req(T::Mem, 55, &[1, 2, 4], "r")).expect("write");
    assert_eq!(out, WriteOutcome::Written);
    assert_eq!(fake.values.borrow()["net.ipv4.tcp_mem"], "1 2 4");
    assert!(lines.borrow()[0].contains("in global ns."));
}

#[test]
fn advise_mode_writes_nothing() {
    let (mut host, fake, lines) = setup(true);
    let out = host.write(0, &req(T::Rmem, 0, &[4096, 131072, 7864320], "r")).expect("write");
    assert_eq!(out, WriteOutcome::Advised);
    assert_eq!(*fake.writes.borrow(), 0);
    assert!(lines.borrow()[0].starts_with("Advice "));
    assert!(!host.advice.is_empty());
    // Same advice again: not logged twice.
    host.write(0, &req(T::Rmem, 0, &[4096, 131072, 7864320], "r")).expect("write");
    assert_eq!(lines.borrow().len(), 1);
}

#[test]
fn unknown_tunable_is_an_error() {
    let (mut host, _fake, _lines) = setup(false);
    let mut r = req(T::Rmem, 0, &[1], "r");
    r.tunable = 9;
    assert!(host.write(0, &r).is_err());
    assert!(host.write(5, &req(T::Rmem, 0, &[1], "r")).is_err());
}

#[test]
fn destroyed_namespace_releases_state_everywhere() {
    let (mut host, fake, lines) = setup(false);
    let h = crate::netns::NetnsHandle { cookie: 42, inum: 4026599999, path: "/nonexistent/ns".into() };
    host.netns.insert(h, NetnsChangeKind::Created);
    // The netns tuner subscribes and sees the creation.
    let changes = host.netns_changes(0, 0, 0, NetnsScan::None);
    assert_eq!(changes, vec![NetnsChange { cookie: 42, kind: NetnsChangeKind::Created }]);
    // An administrator takes over in 42, then 42 dies.
    host.admin_override(1, 42, "net/ipv4/tcp_rmem");
    assert_eq!(host.tuner_netns_state(0, 42), Some(TunerState::Manual));
    host.registry.get_mut(0).expect("tuner").records[0].counts.insert((0, 42), 3);
    assert!(host.netns.forget(42));
    host.sync_netns();
    assert_eq!(host.tuner_netns_state(0, 42), Some(TunerState::Gone));
    let t = host.registry.get(0).expect("tuner");
    assert!(!t.active_in(42), "late events for a dead namespace are skipped");
    assert_eq!(t.records[0].counts.get(&(0, crate::registry::RETIRED_NETNS_COOKIE)), Some(&3));
    assert!(lines.borrow().iter().any(|l| l == "netns destroyed (cookie 42)"));
    assert_eq!(
        host.netns_changes(0, 0, 0, NetnsScan::None),
        vec![NetnsChange { cookie: 42, kind: NetnsChangeKind::Destroyed }]
    );
    // A write for it is dropped quietly; the global namespace is untouched.
    let out = host.write(0, &req(T::Rmem, 42, &[1, 2, 3], "r")).expect("no error");
    assert_eq!(out, WriteOutcome::NetnsGone);
    assert_eq!(*fake.writes.borrow(), 0);
    assert_eq!(host.tuner_netns_state(0, 1), Some(TunerState::Active));
}

#[test]
fn write_into_unknown_namespace_is_one_debug_line() {
    let (mut host, fake, lines) = setup(false);
    for _ in 0..5 {
        let out = host.write(0, &req(T::Rmem, 4242, &[1, 2, 3], "r")).expect("no error");
        assert_eq!(out, WriteOutcome::NetnsGone);
    }
    assert_eq!(*fake.writes.borrow(), 0);
    let gone = lines.borrow().iter().filter(|l| l.contains("is gone; not changing")).count();
    assert_eq!(gone, 1, "{:?}", lines.borrow());
}

#[test]
fn operator_release_and_hold() {
    let (mut host, fake, lines) = setup(false);
    host.admin_override(1, 1, "net/ipv4/tcp_rmem");
    assert_eq!(host.manual_by(0, 1), Some(ManualBy::Administrator));
    let r = host.operator(OperatorAction::Release, "net.ipv4.tcp_rmem", 1).expect("release");
    assert_eq!(r, vec!["tuner 'tcp_buffer' in global ns: manual -> active".to_string()]);
    assert!(lines.borrow().iter().any(
        |l| l == "operator released sysctl 'net.ipv4.tcp_rmem': tuner 'tcp_buffer' in global ns: manual -> active"
    ));
    assert_eq!(host.write(0, &req(T::Rmem, 0, &[1, 2, 3], "r")).expect("write"), WriteOutcome::Written);
    assert_eq!(host.take_handed_back(), vec![(0, 1)]);
    assert!(host.take_handed_back().is_empty());
    // Released again: nothing to do, said so.
    let r = host.operator(OperatorAction::Release, "net/ipv4/tcp_rmem", 1).expect("release");
    assert!(r[0].ends_with("already active; nothing changed"), "{r:?}");
    // Hold: manual without a write, marked as the operator's.
    let writes = *fake.writes.borrow();
    let r = host.operator(OperatorAction::Hold, "net.ipv4.tcp_rmem", 1).expect("hold");
    assert_eq!(r, vec!["tuner 'tcp_buffer' in global ns: active -> manual".to_string()]);
    assert_eq!(*fake.writes.borrow(), writes);
    assert_eq!(host.manual_by(0, 1), Some(ManualBy::Operator));
    assert_eq!(host.write(0, &req(T::Rmem, 0, &[4, 5, 6], "r")).expect("write"), WriteOutcome::SkippedManual);
    // A global tunable is held in the global namespace whatever is named.
    let r = host.operator(OperatorAction::Hold, "net.ipv4.tcp_mem", 1).expect("hold");
    assert!(r[0].contains("global ns: already manual"), "{r:?}");
    let e = host.operator(OperatorAction::Hold, "net.ipv4.tcp_wmem", 1).expect_err("unknown");
    assert!(e.starts_with("unknown tunable 'net.ipv4.tcp_wmem'"), "{e}");
    assert_eq!(host.resolve_netns(None), Ok(1));
    assert_eq!(host.resolve_netns(Some("global")), Ok(1));
    assert_eq!(host.resolve_netns(Some("1")), Ok(1));
    assert!(host.resolve_netns(Some("999999999")).expect_err("unknown").starts_with("unknown namespace"));
}

#[test]
fn limits_clamp_writes_and_skip_no_ops() {
    let (mut host, fake, lines) = setup(false);
    let limits =
        crate::limits::parse("net.ipv4.tcp_rmem max - - 7000000\n", "/etc/bpftune/limits.conf").expect("parse");
    host.set_limits(crate::limits::Limits::from_rules(limits));
    let out = host.write(0, &req(T::Rmem, 0, &[4096, 131072, 8000000], "r")).expect("write");
    assert_eq!(out, WriteOutcome::Written);
    assert_eq!(fake.values.borrow()["net.ipv4.tcp_rmem"], "4096 131072 7000000");
    assert_eq!(
        lines.borrow()[0],
        "tuner 'tcp_buffer' wanted net.ipv4.tcp_rmem (4096 131072 8000000) in global ns; using (4096 131072 7000000), limited by /etc/bpftune/limits.conf"
    );
    // Wanting more again: the clamped value is the current one, so no write.
    let writes = *fake.writes.borrow();
    let out = host.write(0, &req(T::Rmem, 0, &[4096, 131072, 9000000], "r")).expect("write");
    assert_eq!(out, WriteOutcome::Unchanged);
    assert_eq!(*fake.writes.borrow(), writes);
    // Other tunables are not limited.
    host.write(0, &req(T::Mem, 0, &[1, 2, 99999999], "r")).expect("write");
    assert_eq!(fake.values.borrow()["net.ipv4.tcp_mem"], "1 2 99999999");
}
