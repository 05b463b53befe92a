//! Pure decisions of the neigh_table tuner: how far to grow or shrink a
//! neighbour table's gc_thresh1/2/3, the most a device's addresses justify,
//! and the per-table bookkeeping (rate limit, what we last set, whether the
//! bound was already reported). No I/O; unit-tested without root.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bpftune_sdk::LearningRate;

use crate::tables::Table;

/// Kernel defaults, and the floors a shrink stops at: thresh1, thresh2,
/// thresh3.
pub const MIN_THRESH: [i64; 3] = [128, 512, 1024];
/// Entries allowed per possible neighbour of an address's subnet.
pub const ADDR_FACTOR: i64 = 4;
/// Every address justifies at least this many neighbours (before the
/// factor), however long its prefix.
pub const ADDR_MIN: i64 = 256;
/// Largest threshold ever set (the kernel's thresholds are `int`).
pub const THRESH_MAX: i64 = i32::MAX as i64;
/// Ceiling used when the bound cannot be computed from the device's
/// addresses (its namespace cannot be reached, the address dump fails, or
/// it has no address of the table's family): 64 times the kernel default.
pub const FALLBACK_MAX: i64 = 65536;
/// At most one change per table this often (the original had no limit and
/// sent one netlink message per qualifying neighbour add or remove).
pub const CHANGE_INTERVAL: Duration = Duration::from_secs(1);

/// Most neighbours one address with `prefixlen` justifies in a table whose
/// addresses have `addr_bits` bits: `max(2^host_bits, 256) * 4`, or
/// [`THRESH_MAX`] when the subnet has 64 host bits or more.
pub fn addr_max(addr_bits: u32, prefixlen: u8) -> i64 {
    let host_bits = addr_bits.saturating_sub(u32::from(prefixlen));
    if host_bits >= 64 {
        return THRESH_MAX;
    }
    let hosts = 1i64.checked_shl(host_bits).filter(|&h| h > 0).unwrap_or(i64::MAX);
    hosts.max(ADDR_MIN).saturating_mul(ADDR_FACTOR).min(THRESH_MAX)
}

/// The bound on a table's gc_thresh3 that a device's addresses justify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Largest thresh3 to grow to.
    pub max: i64,
    /// Addresses it was computed from (0 for the fallback).
    pub naddrs: usize,
    /// True if [`FALLBACK_MAX`] was used.
    pub fallback: bool,
}

impl Bound {
    /// The fixed ceiling, for when the addresses are unknown.
    pub fn fallback() -> Self {
        Self { max: FALLBACK_MAX, naddrs: 0, fallback: true }
    }

    /// Sum of [`addr_max`] over the device's addresses (prefix lengths),
    /// capped at [`THRESH_MAX`]; the fallback if there are none.
    pub fn from_prefixlens(table: Table, prefixlens: &[u8]) -> Self {
        if prefixlens.is_empty() {
            return Self::fallback();
        }
        let max =
            prefixlens.iter().fold(0i64, |sum, &p| sum.saturating_add(addr_max(table.addr_bits(), p))).min(THRESH_MAX);
        Self { max, naddrs: prefixlens.len(), fallback: false }
    }
}

/// Why nothing is changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The table is no longer nearly full / nearly empty with the current
    /// thresholds (a change already landed since the event was sent).
    Stale,
    /// Thresholds the kernel would never report.
    Invalid,
}

/// What to do with a table's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Set thresh1/2/3 to these.
    Change([i64; 3]),
    /// thresh3 already reached the bound: report it, do not grow.
    AtBound,
    Hold(Hold),
}

/// The table is nearly full (`entries` against the current thresholds
/// `cur`): grow each threshold by one learning-rate step, thresh3 by at
/// least one and never past `max`, and never lower one (thresh1 and
/// thresh2 also stay at or below the new thresh3).
pub fn grow(lr: LearningRate, cur: [i64; 3], entries: i64, max: i64) -> Decision {
    if cur.iter().any(|&v| v <= 0) || entries < 0 {
        return Decision::Hold(Hold::Invalid);
    }
    if !lr.nearly_full(entries, cur[2]) {
        return Decision::Hold(Hold::Stale);
    }
    let max = max.min(THRESH_MAX);
    if cur[2] >= max {
        return Decision::AtBound;
    }
    let t3 = lr.grow(cur[2]).max(cur[2] + 1).min(max);
    let t2 = lr.grow(cur[1]).min(t3).max(cur[1]);
    let t1 = lr.grow(cur[0]).min(t2).max(cur[0]);
    Decision::Change([t1, t2, t3])
}

/// The table is nearly empty: shrink while thresh3 is above the kernel's
/// default. One learning-rate step each, never below the floors
/// ([`MIN_THRESH`]); once thresh3 would reach its floor all three go to
/// their floors (a threshold already below its floor is left alone).
pub fn shrink(lr: LearningRate, cur: [i64; 3], entries: i64) -> Decision {
    if cur.iter().any(|&v| v <= 0) || entries < 0 {
        return Decision::Hold(Hold::Invalid);
    }
    if cur[2] <= MIN_THRESH[2] || !lr.nearly_empty(entries, cur[2]) {
        return Decision::Hold(Hold::Stale);
    }
    let t3 = lr.shrink(cur[2]);
    let mut new = if t3 <= MIN_THRESH[2] {
        [cur[0].min(MIN_THRESH[0]), cur[1].min(MIN_THRESH[1]), MIN_THRESH[2]]
    } else {
        let step = |v: i64, floor: i64| if v > floor { lr.shrink(v).max(floor) } else { v };
        [step(cur[0], MIN_THRESH[0]), step(cur[1], MIN_THRESH[1]), t3]
    };
    new[1] = new[1].min(new[2]);
    new[0] = new[0].min(new[1]);
    Decision::Change(new)
}

/// What the tuner remembers about one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TableState {
    /// When it last changed (or tried to change) the thresholds, or
    /// reported the bound.
    last_action: Option<Instant>,
    /// The thresholds it last set.
    last_set: Option<[i64; 3]>,
    /// (bound, thresh3) last reported as "grown excessively".
    reported_bound: Option<(i64, i64)>,
}

/// Per-table bookkeeping.
#[derive(Debug, Default)]
pub struct Tables {
    state: HashMap<Table, TableState>,
}

impl Tables {
    /// True if the table may be acted on at `now` (nothing done to it in the
    /// last [`CHANGE_INTERVAL`]).
    pub fn may_act(&self, table: Table, now: Instant) -> bool {
        match self.state.get(&table).and_then(|s| s.last_action) {
            Some(last) => now.saturating_duration_since(last) >= CHANGE_INTERVAL,
            None => true,
        }
    }

    /// A change was attempted at `now` (also failed ones: no retry storm).
    pub fn acted(&mut self, table: Table, now: Instant) {
        self.state.entry(table).or_default().last_action = Some(now);
    }

    /// The thresholds were set to `new` at `now`.
    pub fn changed(&mut self, table: Table, new: [i64; 3], now: Instant) {
        let s = self.state.entry(table).or_default();
        s.last_action = Some(now);
        s.last_set = Some(new);
        s.reported_bound = None;
    }

    /// True if the table's thresholds are no longer what this tuner last
    /// set: someone else (e.g. `ip ntable change`) changed them since.
    pub fn changed_elsewhere(&self, table: Table, cur: [i64; 3]) -> bool {
        self.state.get(&table).and_then(|s| s.last_set).is_some_and(|set| set != cur)
    }

    /// Whether reaching `bound` with thresh3 `t3` should be reported: only
    /// once for the same bound and thresh3. Records it (and the time).
    pub fn report_bound(&mut self, table: Table, bound: i64, t3: i64, now: Instant) -> bool {
        let s = self.state.entry(table).or_default();
        s.last_action = Some(now);
        if s.reported_bound == Some((bound, t3)) {
            return false;
        }
        s.reported_bound = Some((bound, t3));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default learning rate (25 % steps).
    fn lr() -> LearningRate {
        LearningRate::default()
    }

    #[test]
    fn addr_max_per_prefix() {
        // A /24 allows 256 hosts: 256 * 4.
        assert_eq!(addr_max(32, 24), 1024);
        // Longer prefixes still allow the minimum of 256.
        assert_eq!(addr_max(32, 32), 1024);
        assert_eq!(addr_max(32, 30), 1024);
        assert_eq!(addr_max(32, 16), 65536 * 4);
        // 2^31 hosts * 4 is past INT_MAX.
        assert_eq!(addr_max(32, 0), THRESH_MAX);
        // IPv6: 64 host bits or more is unbounded.
        assert_eq!(addr_max(128, 64), THRESH_MAX);
        assert_eq!(addr_max(128, 0), THRESH_MAX);
        assert_eq!(addr_max(128, 120), 1024);
        assert_eq!(addr_max(128, 100), (1 << 28) * 4);
        assert_eq!(addr_max(128, 96), THRESH_MAX);
        // A bogus prefix longer than the address counts as a host route.
        assert_eq!(addr_max(32, 40), 1024);
    }

    #[test]
    fn bound_sums_addresses_and_falls_back() {
        assert_eq!(Bound::from_prefixlens(Table::Arp, &[24]), Bound { max: 1024, naddrs: 1, fallback: false });
        // The reference's max2 test: four /24s.
        assert_eq!(Bound::from_prefixlens(Table::Arp, &[24, 24, 24, 24]).max, 4096);
        assert_eq!(Bound::from_prefixlens(Table::Ndisc, &[64, 128]).max, THRESH_MAX);
        // Two /4s: 2^30 each, together past INT_MAX.
        assert_eq!(Bound::from_prefixlens(Table::Arp, &[4, 4]).max, THRESH_MAX);
        assert_eq!(Bound::from_prefixlens(Table::Arp, &[8, 8, 8]).max, 3 * (1 << 24) * 4);
        assert_eq!(Bound::from_prefixlens(Table::Arp, &[]), Bound::fallback());
        assert_eq!(Bound::fallback().max, FALLBACK_MAX);
    }

    #[test]
    fn grows_when_nearly_full() {
        // The reference test: 32/64/128, table nearly full.
        assert_eq!(grow(lr(), [32, 64, 128], 96, 1024), Decision::Change([40, 80, 160]));
        assert_eq!(grow(lr(), [32, 64, 128], 250, 1024), Decision::Change([40, 80, 160]));
        // Kernel defaults grow by 25 %.
        assert_eq!(grow(lr(), [128, 512, 1024], 1000, THRESH_MAX), Decision::Change([160, 640, 1280]));
        // A slower learning rate takes smaller steps.
        assert_eq!(grow(LearningRate::new(0), [128, 512, 1024], 1024, THRESH_MAX), Decision::Change([130, 520, 1040]));
        // Not nearly full (any more): nothing.
        assert_eq!(grow(lr(), [32, 64, 128], 95, 1024), Decision::Hold(Hold::Stale));
        assert_eq!(grow(lr(), [0, 64, 128], 100, 1024), Decision::Hold(Hold::Invalid));
    }

    #[test]
    fn growth_is_bounded() {
        // Growth stops at the bound, and is clamped to it.
        assert_eq!(grow(lr(), [128, 512, 1024], 1024, 1024), Decision::AtBound);
        assert_eq!(grow(lr(), [128, 512, 2000], 2000, 1024), Decision::AtBound);
        assert_eq!(grow(lr(), [100, 800, 900], 900, 1024), Decision::Change([125, 1000, 1024]));
        // thresh2 never passes the new thresh3, and nothing is lowered.
        assert_eq!(grow(lr(), [100, 1100, 900], 900, 1024), Decision::Change([125, 1100, 1024]));
        // Tiny values still move.
        assert_eq!(grow(lr(), [1, 2, 3], 3, 1024), Decision::Change([1, 2, 4]));
        // Never past INT_MAX.
        assert_eq!(grow(lr(), [1, 2, THRESH_MAX - 1], THRESH_MAX, i64::MAX), Decision::Change([1, 2, THRESH_MAX]));
        assert_eq!(grow(lr(), [1, 2, THRESH_MAX], THRESH_MAX, i64::MAX), Decision::AtBound);
    }

    #[test]
    fn shrinks_to_floors() {
        // The reference shrink test: 512/2048/4096 with the table emptied.
        assert_eq!(shrink(lr(), [512, 2048, 4096], 0), Decision::Change([384, 1536, 3072]));
        assert_eq!(shrink(lr(), [384, 1536, 3072], 10), Decision::Change([288, 1152, 2304]));
        assert_eq!(shrink(lr(), [288, 1152, 2304], 10), Decision::Change([216, 864, 1728]));
        assert_eq!(shrink(lr(), [216, 864, 1728], 10), Decision::Change([162, 648, 1296]));
        // 1296 -> 972 is below the floor: everything goes to the floors.
        assert_eq!(shrink(lr(), [162, 648, 1296], 10), Decision::Change([128, 512, 1024]));
        // At the floor: nothing more.
        assert_eq!(shrink(lr(), [128, 512, 1024], 0), Decision::Hold(Hold::Stale));
        // Not nearly empty: nothing.
        assert_eq!(shrink(lr(), [512, 2048, 4096], 1025), Decision::Hold(Hold::Stale));
        // Thresholds below their floors are never raised by a shrink.
        assert_eq!(shrink(lr(), [32, 64, 4096], 0), Decision::Change([32, 64, 3072]));
        assert_eq!(shrink(lr(), [32, 600, 1200], 0), Decision::Change([32, 512, 1024]));
        // Step-wise, thresh1/2 stop at their floors.
        assert_eq!(shrink(lr(), [130, 520, 8192], 0), Decision::Change([128, 512, 6144]));
        assert_eq!(shrink(lr(), [0, 2048, 4096], 0), Decision::Hold(Hold::Invalid));
    }

    #[test]
    fn rate_limit_per_table() {
        let mut t = Tables::default();
        let t0 = Instant::now();
        assert!(t.may_act(Table::Arp, t0));
        t.changed(Table::Arp, [40, 80, 160], t0);
        assert!(!t.may_act(Table::Arp, t0));
        assert!(!t.may_act(Table::Arp, t0 + Duration::from_millis(999)));
        assert!(t.may_act(Table::Arp, t0 + CHANGE_INTERVAL));
        // The other table is independent.
        assert!(t.may_act(Table::Ndisc, t0));
        // A failed attempt also counts.
        t.acted(Table::Ndisc, t0);
        assert!(!t.may_act(Table::Ndisc, t0 + Duration::from_millis(10)));
        // A clock that went backwards does not block forever.
        assert!(!t.may_act(Table::Arp, t0 - Duration::from_millis(10)));
    }

    #[test]
    fn notices_changes_made_elsewhere() {
        let mut t = Tables::default();
        let now = Instant::now();
        // Nothing set yet: whatever is there is the starting point.
        assert!(!t.changed_elsewhere(Table::Arp, [32, 64, 128]));
        t.changed(Table::Arp, [40, 80, 160], now);
        assert!(!t.changed_elsewhere(Table::Arp, [40, 80, 160]));
        assert!(t.changed_elsewhere(Table::Arp, [40, 80, 4096]));
        assert!(!t.changed_elsewhere(Table::Ndisc, [1, 2, 3]));
    }

    #[test]
    fn bound_reported_once() {
        let mut t = Tables::default();
        let now = Instant::now();
        assert!(t.report_bound(Table::Arp, 1024, 1187, now));
        assert!(!t.may_act(Table::Arp, now));
        assert!(!t.report_bound(Table::Arp, 1024, 1187, now + CHANGE_INTERVAL));
        // A new bound (an address was added) or new thresholds: again.
        assert!(t.report_bound(Table::Arp, 2048, 1187, now));
        t.changed(Table::Arp, [1, 2, 3], now);
        assert!(t.report_bound(Table::Arp, 2048, 1187, now));
    }
}
