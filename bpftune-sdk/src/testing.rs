//! Checks shared by tuner crates' unit tests, so each tuner's test is a few
//! lines of set-up: that a namespace the daemon releases leaves nothing
//! behind in the tuner's per-namespace state.
//!
//! Compiled in always (a tuner's unit tests build the SDK without
//! `cfg(test)`); nothing here runs unless a test calls it, and a tuner's
//! `.so` carries none of it.
//!
//! A tuner lists its holders in one function that both
//! [`crate::Tuner::netns_state`] and its test call (a tuner cannot be made
//! without BPF in a unit test):
//!
//! ```
//! use bpftune_sdk::testing::{self, ALIVE, GLOBAL, GONE};
//! use bpftune_sdk::{NetnsAdmission, NetnsState, PerNetns, UnknownNetns};
//!
//! fn netns_states<'a>(netns: &'a mut NetnsAdmission, seen: &'a mut PerNetns<u32>) -> Vec<&'a mut dyn NetnsState> {
//!     vec![netns, seen]
//! }
//!
//! let mut seen: PerNetns<u32> = PerNetns::new();
//! for cookie in [GLOBAL, GONE, ALIVE] {
//!     *seen.entry(cookie) = 3;
//! }
//! let mut held = (testing::admission(UnknownNetns::Skip), seen);
//! testing::assert_released_namespace_leaves_nothing(&mut held, |(netns, seen)| netns_states(netns, seen));
//! assert_eq!(held.1.get(ALIVE), Some(&3));
//! ```

use crate::per_netns::{NetnsState, release_all};
use crate::{NetnsAdmission, PerNetns, UnknownNetns};

/// The daemon's namespace in these checks.
pub const GLOBAL: u64 = 1;
/// The namespace the daemon releases.
pub const GONE: u64 = 7;
/// Another namespace, still alive.
pub const ALIVE: u64 = 8;

/// An inode for the namespaces seen in events (any will do).
const INUM: u32 = 4026532000;

/// A tuner's [`NetnsAdmission`] in the daemon's namespace [`GLOBAL`] after
/// events from [`GONE`] and [`ALIVE`], with [`GONE`] disabled (an
/// administrator took over there): it holds something for both.
#[track_caller]
pub fn admission(unknown: UnknownNetns) -> NetnsAdmission {
    let mut netns = NetnsAdmission::new(GLOBAL, unknown);
    for cookie in [GONE, ALIVE] {
        assert_eq!(netns.admit_with(cookie, INUM, |_, _| {}), Some(cookie), "namespace {cookie} admitted");
    }
    netns.disable(GONE);
    netns
}

/// The per-namespace holders a test filled: one, or a tuple of them. The
/// check reads them itself, so a holder the tuner forgot to list in
/// [`crate::Tuner::netns_state`] is caught.
pub trait Holders {
    /// Each holder, in order.
    fn holders(&self) -> Vec<&dyn NetnsState>;
}

impl Holders for NetnsAdmission {
    fn holders(&self) -> Vec<&dyn NetnsState> {
        vec![self]
    }
}

impl<T> Holders for PerNetns<T> {
    fn holders(&self) -> Vec<&dyn NetnsState> {
        vec![self]
    }
}

impl<A: NetnsState> Holders for (A,) {
    fn holders(&self) -> Vec<&dyn NetnsState> {
        vec![&self.0]
    }
}

impl<A: NetnsState, B: NetnsState> Holders for (A, B) {
    fn holders(&self) -> Vec<&dyn NetnsState> {
        vec![&self.0, &self.1]
    }
}

impl<A: NetnsState, B: NetnsState, C: NetnsState> Holders for (A, B, C) {
    fn holders(&self) -> Vec<&dyn NetnsState> {
        vec![&self.0, &self.1, &self.2]
    }
}

/// Release [`GONE`] in `held` through `list` (the function a tuner's
/// [`crate::Tuner::netns_state`] calls) the way the SDK does when the
/// daemon reports a namespace gone, and check that:
/// * every holder in `held` kept something for [`GONE`] before (so the
///   set-up exercises each of them), and none keeps anything after (so
///   `list` names them all and each releases);
/// * every holder still keeps what it kept for [`ALIVE`] and [`GLOBAL`].
///
/// Panics, naming the holder by its place in `held`, if not.
#[track_caller]
pub fn assert_released_namespace_leaves_nothing<S: Holders>(
    held: &mut S,
    list: impl FnOnce(&mut S) -> Vec<&mut dyn NetnsState>,
) {
    let kept = [ALIVE, GLOBAL];
    let before: Vec<[bool; 2]> = held.holders().iter().map(|s| kept.map(|c| s.holds_netns(c))).collect();
    assert!(!before.is_empty(), "the test fills no per-namespace state");
    for (i, s) in held.holders().iter().enumerate() {
        assert!(
            s.holds_netns(GONE),
            "holder #{i} keeps nothing for namespace {GONE} before it is released: fill it first"
        );
    }
    release_all(&mut list(held), GONE);
    for (i, (s, held)) in held.holders().iter().zip(before).enumerate() {
        assert!(
            !s.holds_netns(GONE),
            "holder #{i} still keeps state for released namespace {GONE} (not listed, or it does not release)"
        );
        for (cookie, held) in kept.into_iter().zip(held) {
            if held {
                assert!(s.holds_netns(cookie), "holder #{i} dropped namespace {cookie}'s state too");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A holder whose release forgets to drop anything.
    struct Leaky;

    impl NetnsState for Leaky {
        fn release_netns(&mut self, _netns_cookie: u64) {}

        fn holds_netns(&self, _netns_cookie: u64) -> bool {
            true
        }
    }

    /// A holder whose release drops every namespace.
    struct DropsAll(bool);

    impl NetnsState for DropsAll {
        fn release_netns(&mut self, _netns_cookie: u64) {
            self.0 = false;
        }

        fn holds_netns(&self, _netns_cookie: u64) -> bool {
            self.0
        }
    }

    fn filled() -> PerNetns<u32> {
        let mut p = PerNetns::new();
        for cookie in [GLOBAL, GONE, ALIVE] {
            *p.entry(cookie) = 1;
        }
        p
    }

    fn both<'a>(netns: &'a mut NetnsAdmission, p: &'a mut PerNetns<u32>) -> Vec<&'a mut dyn NetnsState> {
        vec![netns, p]
    }

    #[test]
    fn passes_for_the_sdks_holders() {
        let mut held = (admission(UnknownNetns::Global), filled());
        assert_released_namespace_leaves_nothing(&mut held, |(netns, p)| both(netns, p));
        let (netns, p) = &held;
        assert_eq!((p.len(), p.get(GONE)), (2, None));
        assert_eq!(netns.tracked(), 1);
        assert!(netns.inum(ALIVE).is_some() && !netns.is_disabled(GONE));
        // One holder alone, listed by a plain function.
        let mut p = filled();
        assert_released_namespace_leaves_nothing(&mut p, |p| vec![p]);
    }

    #[test]
    #[should_panic(expected = "holder #0 still keeps state")]
    fn fails_for_a_holder_the_tuner_does_not_list() {
        let mut held = (admission(UnknownNetns::Skip), filled());
        assert_released_namespace_leaves_nothing(&mut held, |(_, p)| vec![p]);
    }

    #[test]
    #[should_panic(expected = "holder #1 still keeps state")]
    fn fails_for_a_holder_that_keeps_the_namespace() {
        let mut held = (filled(), Leaky);
        assert_released_namespace_leaves_nothing(&mut held, |(p, leaky)| vec![p, leaky]);
    }

    #[test]
    #[should_panic(expected = "holder #0 dropped namespace 8")]
    fn fails_for_a_holder_that_drops_others_too() {
        assert_released_namespace_leaves_nothing(&mut (DropsAll(true),), |(d,)| vec![d]);
    }

    #[test]
    #[should_panic(expected = "holder #1 keeps nothing for namespace 7 before")]
    fn fails_for_a_set_up_that_leaves_a_holder_empty() {
        let mut held = (admission(UnknownNetns::Skip), PerNetns::<u32>::new());
        assert_released_namespace_leaves_nothing(&mut held, |(netns, p)| both(netns, p));
    }
}
