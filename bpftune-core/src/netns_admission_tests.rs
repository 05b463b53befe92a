//! Unit tests of the SDK's per-namespace admission against the daemon's real
//! host state (they need both sides, so they live with the host).

use std::rc::Rc;

use crate::abi::SupportLevel;
use crate::host::{HostBinding, HostConfig, HostState, LogSink, SharedFds, make_context};
use crate::learning::LearningRate;
use crate::netns::NetnsRegistry;
use crate::sysctl::ProcSysctl;
use bpftune_sdk::{Event, Host, NETNS_UNKNOWN, NetnsAdmission, UnknownNetns};

const GLOBAL: u64 = 4096;

/// Admit (cookie, inum) and return the result and what was reported.
fn admit(a: &mut NetnsAdmission, cookie: u64, inum: u32) -> (Option<u64>, Vec<(u64, u32)>) {
    let mut reported = Vec::new();
    let got = a.admit_with(cookie, inum, |c, i| reported.push((c, i)));
    (got, reported)
}

#[test]
fn a_forgotten_namespace_keeps_nothing_and_is_reported_again_if_seen() {
    let mut a = NetnsAdmission::new(GLOBAL, UnknownNetns::Skip);
    admit(&mut a, 77, 4026531999);
    admit(&mut a, 78, 4026532001);
    a.disable(78);
    a.disable(79);
    assert_eq!(a.tracked(), 3);
    assert!(a.forget(77));
    assert!(a.forget(78));
    assert!(a.forget(79));
    assert!(!a.forget(79), "twice is a no-op");
    assert_eq!(a.tracked(), 0);
    assert_eq!(a.inum(77), None);
    assert!(!a.is_disabled(78));
    // Forgetting the global namespace (never tracked) changes nothing.
    assert!(!a.forget(GLOBAL));
    assert_eq!(admit(&mut a, 77, 4026531999), (Some(77), vec![(77, 4026531999)]));
}

#[test]
fn zero_cookie_is_the_global_namespace_and_is_never_reported() {
    let mut a = NetnsAdmission::new(GLOBAL, UnknownNetns::Skip);
    assert_eq!(admit(&mut a, 0, 1), (Some(GLOBAL), vec![]));
    assert_eq!(admit(&mut a, GLOBAL, 1), (Some(GLOBAL), vec![]));
    assert!(a.is_global(a.normalize(0)));
    assert_eq!(a.inum(GLOBAL), None);
}

#[test]
fn a_namespace_is_reported_once_and_its_latest_inode_kept() {
    let mut a = NetnsAdmission::new(GLOBAL, UnknownNetns::Skip);
    assert_eq!(admit(&mut a, 77, 4026531999), (Some(77), vec![(77, 4026531999)]));
    assert_eq!(admit(&mut a, 77, 4026531999), (Some(77), vec![]));
    assert_eq!(admit(&mut a, 77, 4026532000), (Some(77), vec![]));
    assert_eq!(a.inum(77), Some(4026532000));
    assert_eq!(a.inum(78), None);
    assert_eq!(admit(&mut a, 78, 5), (Some(78), vec![(78, 5)]));
}

#[test]
fn unknown_namespace_is_skipped_or_global_as_configured() {
    let mut skip = NetnsAdmission::new(GLOBAL, UnknownNetns::Skip);
    assert_eq!(admit(&mut skip, NETNS_UNKNOWN, 9), (None, vec![]));
    let mut global = NetnsAdmission::new(GLOBAL, UnknownNetns::Global);
    assert_eq!(admit(&mut global, NETNS_UNKNOWN, 9), (Some(GLOBAL), vec![]));
    assert_eq!(global.inum(GLOBAL), None);
}

#[test]
fn disabled_namespaces_are_dropped_before_being_reported() {
    let mut a = NetnsAdmission::new(GLOBAL, UnknownNetns::Skip);
    assert!(a.disable(77));
    assert!(!a.disable(77));
    assert!(a.is_disabled(77));
    assert_eq!(admit(&mut a, 77, 3), (None, vec![]));
    assert_eq!(a.inum(77), None);
    // Disabling the global namespace covers events with cookie 0 too.
    assert!(a.disable(GLOBAL));
    assert_eq!(admit(&mut a, 0, 1), (None, vec![]));
    assert_eq!(admit(&mut a, 78, 4), (Some(78), vec![(78, 4)]));
}

#[test]
fn admit_goes_through_a_real_host() {
    let config = HostConfig {
        debug: false,
        advise: false,
        learning_rate: LearningRate::default(),
        support: SupportLevel::Normal,
        daemon_pid: 1,
        netns_cookie_supported: true,
    };
    let log: LogSink = Rc::new(|_, _| {});
    let dir = std::env::temp_dir().join("bpftune-netns-admission-test-none");
    let state = HostState::new(config, NetnsRegistry::new(GLOBAL, &dir), Box::new(ProcSysctl::with_root(&dir)), log);
    let binding = HostBinding::new(0, Rc::new(std::cell::RefCell::new(state)));
    let fds = SharedFds { ringbuf_fd: -1, stats_map_fd: -1, cgroup_fd: -1 };
    let host = Host::new(make_context(&binding, fds, 0));
    let mut a = NetnsAdmission::new(host.global_netns_cookie(), UnknownNetns::Skip);
    assert_eq!(a.global_cookie(), GLOBAL);
    let mut event = Event::new(0, 0, 77, 0);
    assert_eq!(a.admit(&host, &event), Some(77));
    event = Event::new(0, 0, 0, 0);
    assert_eq!(a.admit(&host, &event), Some(GLOBAL));
    event = Event::new(0, 0, NETNS_UNKNOWN, 0);
    assert_eq!(a.admit(&host, &event), None);
}
