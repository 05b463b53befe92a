//! Unit tests of the namespace registry that need no root: cookie
//! normalisation, global-only mode without cookie support, tombstones and
//! the bounded change queue.

use super::*;

#[test]
fn global_cookie_normalisation() {
    let r = NetnsRegistry::new(5, "/proc");
    assert!(r.is_global(0));
    assert!(r.is_global(u64::MAX));
    assert!(r.is_global(5));
    assert!(!r.is_global(6));
    assert_eq!(r.normalize(0), 5);
    assert_eq!(r.normalize(9), 9);
}

#[test]
fn without_cookie_support_everything_is_global() {
    let mut r = NetnsRegistry::new(0, "/proc");
    assert!(!r.cookies_supported());
    for c in [0, 1, 7, 12345, u64::MAX] {
        assert!(r.is_global(c), "{c}");
        assert_eq!(r.normalize(c), 0);
        assert_eq!(r.target(c).expect("global"), NsTarget::Global);
    }
    assert!(!r.note(7, 4026531999, 1));
    assert!(r.discover().is_empty());
    assert!(!r.forget(7));
    assert!(r.take_changes().is_empty());
}

#[test]
fn own_namespace_is_a_candidate() {
    let own = fs::metadata("/proc/self/ns/net").map(|m| m.ino()).expect("own ns");
    assert!(candidate_paths(Path::new("/proc")).contains_key(&own));
}

#[test]
fn unknown_cookie_has_no_target_and_is_remembered() {
    let mut r = NetnsRegistry::new(1, "/nonexistent-proc");
    let e = r.target(12345).expect_err("unknown");
    assert!(is_gone_error(&e), "{e}");
    assert!(r.is_gone(12345));
    // Never known: no "destroyed" change for it.
    assert!(r.take_changes().is_empty());
    assert_eq!(r.target(1).expect("global"), NsTarget::Global);
}

#[test]
fn forgetting_a_known_namespace_queues_destroyed_once() {
    let mut r = NetnsRegistry::new(1, "/nonexistent-proc");
    r.insert(NetnsHandle { cookie: 42, inum: 99, path: "/x".into() }, NetnsChangeKind::Created);
    assert_eq!(r.take_changes(), vec![NetnsChange { cookie: 42, kind: NetnsChangeKind::Created }]);
    assert!(r.forget(42));
    assert!(!r.forget(42));
    assert_eq!(r.take_changes(), vec![NetnsChange { cookie: 42, kind: NetnsChangeKind::Destroyed }]);
    assert_eq!(r.known_count(), 0);
    assert!(r.by_inum.is_empty());
}

#[test]
fn tombstones_are_bounded_and_evictions_reported() {
    let mut r = NetnsRegistry::new(1, "/nonexistent-proc");
    for c in 10..(10 + TOMBSTONES_MAX as u64 + 5) {
        r.forget(c);
    }
    assert_eq!(r.gone_count(), TOMBSTONES_MAX);
    assert_eq!(r.take_evicted(), vec![10, 11, 12, 13, 14]);
    assert!(!r.is_gone(10));
    assert!(r.is_gone(15));
}

#[test]
fn change_queue_is_bounded() {
    let mut r = NetnsRegistry::new(1, "/nonexistent-proc");
    for c in 0..(CHANGES_MAX as u64 + 3) {
        r.push_change(c + 2, NetnsChangeKind::Created);
    }
    assert_eq!(r.changes.len(), CHANGES_MAX);
    assert_eq!(r.changes_dropped, 3);
}

#[test]
fn mount_paths_are_unescaped() {
    assert_eq!(unescape_mount_path("/run/netns/a\\040b"), "/run/netns/a b");
    assert_eq!(unescape_mount_path("/plain"), "/plain");
    assert_eq!(unescape_mount_path("/trail\\04"), "/trail\\04");
}

#[test]
fn gone_errors_are_recognised() {
    assert!(is_gone_error(&gone("x".into())));
    assert!(!is_gone_error(&io::Error::from(io::ErrorKind::NotFound)));
}

#[test]
fn the_namespace_worker_is_one_thread_for_many_jobs() {
    for i in 0..50u32 {
        assert_eq!(run_in(Where::Own, move || i * 2).expect("job in own namespace"), i * 2);
    }
    assert_eq!(threads_started(), 1, "one long-lived worker, not a thread per job");
    let own = current_netns_cookie().ok();
    assert_eq!(run_in(Where::Own, current_netns_cookie).expect("job").ok(), own, "jobs run in the daemon's namespace");
    assert!(run_in(Where::Own, || panic!("boom")).is_err(), "a panicking job is an error, not a dead worker");
    assert_eq!(run_in(Where::Own, || 7).expect("worker still serves"), 7);
}

#[test]
fn a_vanished_namespace_path_is_a_gone_error() {
    let handle = NetnsHandle { cookie: 1, inum: 1, path: "/nonexistent/netns".into() };
    let e = run_in(Where::Netns(&handle), || ()).expect_err("no such path");
    assert!(is_gone_error(&e), "{e}");
}
