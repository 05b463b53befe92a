//! When to look at each namespace, and looking at many at once.
//!
//! [`Schedule`] (one per namespace, kept with the rest of its state)
//! keeps the per-tick cost bounded on hosts with many namespaces: one that
//! holds fragment memory is read every tick, an idle one less and less
//! often (every 1, 2, 4 ticks, at most every [`IDLE_EVERY_MAX`]). [`read_namespace`] asks the daemon to read a
//! namespace inside it (its namespace worker enters, checks the inode and
//! cookie, reads, and returns; see [`crate::sockstat::read`]).

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

/// When one namespace is due: nothing recorded yet means at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Schedule {
    slot: Option<Slot>,
}

impl Schedule {
    /// Whether the namespace is to be read at `tick` (one not read before
    /// is due at once).
    pub fn due(&self, tick: u64) -> bool {
        self.slot.is_none_or(|s| tick >= s.next)
    }

    /// Record a read at `tick`: busy means next tick, idle backs off.
    pub fn observed(&mut self, tick: u64, busy: bool) {
        let every = match self.slot {
            _ if busy => 1,
            Some(s) => (s.every * 2).min(IDLE_EVERY_MAX),
            None => 1,
        };
        self.slot = Some(Slot { next: tick + u64::from(every), every });
    }

    /// Forget the reads: due at once again.
    pub fn forget(&mut self) {
        self.slot = None;
    }

    /// Whether a read was recorded.
    pub fn is_set(&self) -> bool {
        self.slot.is_some()
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
        assert!(s.due(0), "new namespaces are due at once");
        let mut reads = Vec::new();
        for tick in 0..20 {
            if s.due(tick) {
                reads.push(tick);
                s.observed(tick, false);
            }
        }
        assert_eq!(reads, vec![0, 1, 3, 7, 11, 15, 19]);
        // Busy: read at the next tick, every tick.
        s.observed(20, true);
        assert!(s.due(21));
        s.observed(21, true);
        assert!(s.due(22));
        // Idle again: back off from 2.
        s.observed(22, false);
        assert!(!s.due(23));
        assert!(s.due(24));
    }

    #[test]
    fn forgotten_namespaces_are_due_at_once() {
        let mut s = Schedule::default();
        s.observed(0, false);
        assert!(s.is_set() && !s.due(0));
        s.forget();
        assert!(!s.is_set());
        assert!(s.due(0));
    }
}
