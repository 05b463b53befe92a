//! State a tuner keeps per network namespace, released by the SDK when the
//! daemon reports the namespace gone, so no tuner clears its maps by hand
//! (and none forgets one).
//!
//! A tuner puts everything it keeps for a namespace in one struct, holds a
//! [`PerNetns`] of it, and lists it (with its [`crate::NetnsAdmission`]) in
//! [`crate::Tuner::netns_state`]; the SDK's entry point then releases the
//! namespace in each before calling [`crate::Tuner::netns_released`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// Something that keeps state per namespace and can drop a namespace's.
pub trait NetnsState {
    /// Drop whatever is kept for the namespace with this cookie.
    fn release_netns(&mut self, netns_cookie: u64);
    /// Whether anything is kept for the namespace with this cookie (what
    /// [`crate::testing::assert_released_namespace_leaves_nothing`] checks).
    fn holds_netns(&self, netns_cookie: u64) -> bool;
}

/// Release a namespace in each of a tuner's holders: what the SDK's entry
/// point does when the daemon reports the namespace gone, before
/// [`crate::Tuner::netns_released`].
pub(crate) fn release_all(states: &mut [&mut dyn NetnsState], netns_cookie: u64) {
    for state in states {
        state.release_netns(netns_cookie);
    }
}

/// One `T` per namespace cookie: made on first use, dropped when the
/// namespace is released. Bounded by the namespaces the tuner saw that are
/// still alive.
#[derive(Debug, Clone)]
pub struct PerNetns<T> {
    map: HashMap<u64, T>,
}

impl<T> Default for PerNetns<T> {
    fn default() -> Self {
        Self { map: HashMap::new() }
    }
}

impl<T> PerNetns<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of that namespace, made with `T::default()` if none yet.
    pub fn entry(&mut self, netns_cookie: u64) -> &mut T
    where
        T: Default,
    {
        self.map.entry(netns_cookie).or_default()
    }

    /// The state of that namespace, made with `make` if none yet.
    pub fn entry_with(&mut self, netns_cookie: u64, make: impl FnOnce() -> T) -> &mut T {
        match self.map.entry(netns_cookie) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(make()),
        }
    }

    pub fn get(&self, netns_cookie: u64) -> Option<&T> {
        self.map.get(&netns_cookie)
    }

    pub fn get_mut(&mut self, netns_cookie: u64) -> Option<&mut T> {
        self.map.get_mut(&netns_cookie)
    }

    /// Drop one namespace's state now (the SDK does this when the daemon
    /// releases the namespace).
    pub fn remove(&mut self, netns_cookie: u64) -> Option<T> {
        self.map.remove(&netns_cookie)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.map.iter().map(|(c, t)| (*c, t))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut T)> {
        self.map.iter_mut().map(|(c, t)| (*c, t))
    }

    /// Namespaces with state.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl<T> NetnsState for PerNetns<T> {
    fn release_netns(&mut self, netns_cookie: u64) {
        self.map.remove(&netns_cookie);
    }

    fn holds_netns(&self, netns_cookie: u64) -> bool {
        self.map.contains_key(&netns_cookie)
    }
}

impl NetnsState for crate::NetnsAdmission {
    fn release_netns(&mut self, netns_cookie: u64) {
        self.forget(netns_cookie);
    }

    fn holds_netns(&self, netns_cookie: u64) -> bool {
        // Seen in events (the daemon's namespace never is) or disabled.
        self.inum(netns_cookie).is_some() || self.is_disabled(netns_cookie)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug, PartialEq)]
    struct S {
        hits: u32,
    }

    #[test]
    fn made_on_first_use_and_dropped_on_release() {
        let mut p: PerNetns<S> = PerNetns::new();
        p.entry(7).hits += 1;
        p.entry(7).hits += 1;
        p.entry_with(8, || S { hits: 10 }).hits += 1;
        assert_eq!(p.get(7), Some(&S { hits: 2 }));
        assert_eq!(p.get(8), Some(&S { hits: 11 }));
        assert_eq!(p.len(), 2);
        assert!(p.holds_netns(7) && !p.holds_netns(9));
        p.release_netns(7);
        assert_eq!(p.get(7), None);
        assert!(!p.holds_netns(7));
        assert_eq!(p.len(), 1);
        p.release_netns(99);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn an_admission_holds_what_it_saw_or_disabled() {
        let mut a = crate::NetnsAdmission::new(1, crate::UnknownNetns::Skip);
        assert_eq!(a.admit_with(7, 4026532000, |_, _| {}), Some(7));
        assert_eq!(a.admit_with(0, 4026531840, |_, _| {}), Some(1));
        a.disable(8);
        assert!(a.holds_netns(7) && a.holds_netns(8) && !a.holds_netns(1));
        a.disable(1);
        assert!(a.holds_netns(1));
        release_all(&mut [&mut a], 7);
        assert!(!a.holds_netns(7) && a.holds_netns(8));
    }
}
