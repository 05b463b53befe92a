//! When to look at each namespace, and looking at many at once.
//!
//! [`Schedule`] keeps the per-tick cost bounded on hosts with many
//! namespaces: one that holds fragment memory is read every tick, an idle
//! one less and less often (every 1, 2, 4 ticks, at most every
//! [`IDLE_EVERY_MAX`]). [`read_namespace`] asks the daemon to read a
//! namespace inside it (its namespace worker enters, checks the inode and
//! cookie, reads, and returns; see [`crate::sockstat::read`]).

use std::collections::HashMap;
use std::path::Path;

use bpftune_sdk::{Host, LearningRate};

use crate::sockstat::{self, Reading};

/// An idle namespace is read at least once every this many ticks.
pub const IDLE_EVERY_MAX: u32 = 4;

#[derive(Debug, Clone, Copy)]
struct Slot {
    next: u64,
    every: u32,
}

/// Which namespaces are due at a tick.
#[derive(Debug, Default)]
pub struct Schedule {
    slots: HashMap<u64, Slot>,
}

impl Schedule {
    /// Whether `cookie` is to be read at `tick` (a namespace not seen
    /// before is due at once).
    pub fn due(&self, cookie: u64, tick: u64) -> bool {
        self.slots.get(&cookie).is_none_or(|s| tick >= s.next)
    }

    /// Record a read at `tick`: busy means next tick, idle backs off.
    pub fn observed(&mut self, cookie: u64, tick: u64, busy: bool) {
        let every = match self.slots.get(&cookie) {
            _ if busy => 1,
            Some(s) => (s.every * 2).min(IDLE_EVERY_MAX),
            None => 1,
        };
        self.slots.insert(cookie, Slot { next: tick + u64::from(every), every });
    }

    pub fn forget(&mut self, cookie: u64) {
        self.slots.remove(&cookie);
    }

    /// Keep only the namespaces `keep` says yes to.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.slots.retain(|c, _| keep(*c));
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Read one namespace's fragment memory, thresholds and counters, inside
/// it: the daemon runs the read on its namespace worker (no thread of ours,
/// no `setns` here), where `/proc/thread-self/net` and `/proc/sys/net` are
/// that namespace's.
pub fn read_namespace(host: &Host, cookie: u64, inum: u64, lr: LearningRate) -> Result<Reading, String> {
    let inum = u32::try_from(inum).unwrap_or(0);
    host.in_netns(cookie, inum, move || sockstat::read(Path::new("/proc/thread-self/net"), Path::new("/proc/sys"), lr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_namespaces_back_off_and_busy_ones_are_read_every_tick() {
        let mut s = Schedule::default();
        assert!(s.due(7, 0), "new namespaces are due at once");
        let mut reads = Vec::new();
        for tick in 0..20 {
            if s.due(7, tick) {
                reads.push(tick);
                s.observed(7, tick, false);
            }
        }
        assert_eq!(reads, vec![0, 1, 3, 7, 11, 15, 19]);
        // Busy: read at the next tick, every tick.
        s.observed(7, 20, true);
        assert!(s.due(7, 21));
        s.observed(7, 21, true);
        assert!(s.due(7, 22));
        // Idle again: back off from 2.
        s.observed(7, 22, false);
        assert!(!s.due(7, 23));
        assert!(s.due(7, 24));
    }

    #[test]
    fn forgotten_namespaces_keep_nothing() {
        let mut s = Schedule::default();
        s.observed(1, 0, false);
        s.observed(2, 0, true);
        s.observed(3, 0, false);
        s.forget(1);
        s.retain(|c| c != 3);
        assert_eq!(s.len(), 1);
        assert!(s.due(1, 0));
    }
}
