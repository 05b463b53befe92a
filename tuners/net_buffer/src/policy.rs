//! The net_buffer tuner's decisions as pure functions: how far to grow the
//! backlog, how to set one CPU's bit in the flow-limit cpumask (hex text),
//! how to move the NAPI budget up or down, and whether the kernel is new
//! enough to re-enable high-order allocations. No I/O here, so every rule
//! is unit-tested without root.

use bpftune_sdk::LearningRate;

use crate::tables::{NETDEV_BUDGET_MAX, NETDEV_BUDGET_USECS_MAX, NETDEV_MAX_BACKLOG_MAX};

/// One learning-rate step up, but at least +1 so small values (a backlog
/// or budget of 1 to 3) still move.
pub fn grow_at_least_one(lr: LearningRate, v: i64) -> i64 {
    lr.grow(v).max(v.saturating_add(1))
}

/// The next `netdev_max_backlog` after backlog drops, or `None` at the
/// ceiling ([`NETDEV_MAX_BACKLOG_MAX`]) or for a nonsensical current value.
pub fn backlog_next(current: i64, lr: LearningRate) -> Option<i64> {
    if current <= 0 || current >= NETDEV_MAX_BACKLOG_MAX {
        return None;
    }
    Some(grow_at_least_one(lr, current).min(NETDEV_MAX_BACKLOG_MAX))
}

/// Why the budget cannot grow further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetLimit {
    /// The grown budget would pass [`NETDEV_BUDGET_MAX`] (or INT_MAX).
    Budget(i64),
    /// The grown usecs would pass [`NETDEV_BUDGET_USECS_MAX`].
    Usecs(i64),
}

/// Budget and usecs one step up after a time squeeze, or the limit that
/// stops it. As in the original, both move together or neither does.
pub fn budget_grow(budget: i64, usecs: i64, lr: LearningRate) -> Result<(i64, i64), BudgetLimit> {
    let new_budget = grow_at_least_one(lr, budget.max(1));
    if new_budget > NETDEV_BUDGET_MAX || new_budget > i64::from(i32::MAX) {
        return Err(BudgetLimit::Budget(new_budget));
    }
    let new_usecs = grow_at_least_one(lr, usecs.max(1));
    if new_usecs > NETDEV_BUDGET_USECS_MAX {
        return Err(BudgetLimit::Usecs(new_usecs));
    }
    Ok((new_budget, new_usecs))
}

/// Budget and usecs one step down, never below `floor` (the values found
/// at start-up: the tuner only takes back what it added) and never above
/// the current values (someone else may have set them below the floor).
pub fn budget_shrink(current: (i64, i64), floor: (i64, i64), lr: LearningRate) -> (i64, i64) {
    let down = |v: i64, f: i64| lr.shrink(v).max(f).min(v);
    (down(current.0, floor.0), down(current.1, floor.1))
}

/// What to do about a time squeeze.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetStep {
    /// Raise (budget, usecs) to these values.
    Increase(i64, i64),
    /// Lower (budget, usecs) to these values.
    Decrease(i64, i64),
    /// Cannot grow further (and no reason to shrink).
    Limit(BudgetLimit),
}

/// The budget rule: grow one step after a squeeze, unless run-queue waits
/// have been rising with the budget (`correlated`), in which case step
/// back towards `floor`. A decrease is possible even at the growth limits
/// (the original checked the limits first and so could never shrink
/// there).
pub fn budget_step(current: (i64, i64), floor: (i64, i64), correlated: bool, lr: LearningRate) -> BudgetStep {
    if correlated {
        let (b, u) = budget_shrink(current, floor, lr);
        return BudgetStep::Decrease(b, u);
    }
    match budget_grow(current.0, current.1, lr) {
        Ok((b, u)) => BudgetStep::Increase(b, u),
        Err(limit) => BudgetStep::Limit(limit),
    }
}

/// The budget the correlation is fed with for a squeeze: the value the
/// increase would set (as the original), or the current one at a limit.
pub fn budget_sample_x(current: (i64, i64), lr: LearningRate) -> i64 {
    budget_grow(current.0, current.1, lr).map_or(current.0, |(b, _)| b)
}

/// CPUs whose backlog drops grew by at least `max_backlog / 32` (the BPF
/// counter's threshold, at least 1) between two softnet_stat readings, with
/// the new drops, largest first. A CPU missing from `last` (it came online)
/// counts from zero; a counter that went backwards is ignored.
pub fn dropping_cpus(last: &[(u32, u64)], now: &[(u32, u64)], max_backlog: i64) -> Vec<(u32, u64)> {
    let threshold = u64::try_from(max_backlog >> 5).unwrap_or(0).max(1);
    let mut out: Vec<(u32, u64)> = now
        .iter()
        .filter_map(|&(cpu, total)| {
            let before = last.iter().find(|(c, _)| *c == cpu).map_or(0, |(_, t)| *t);
            let new = total.checked_sub(before)?;
            (new >= threshold).then_some((cpu, new))
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// How long a CPU's backlog-drop window lasts in BPF (`DROP_WINDOW_NS`).
pub const DROP_WINDOW_NS: u64 = 60_000_000_000;

/// Backlog drops in the CPUs' current BPF windows, summed: each CPU's
/// `(count, start)` from the per-CPU `drop_windows` map counts if its window
/// began at or after `restart` (the last backlog event, which starts a new
/// window on every CPU) and less than [`DROP_WINDOW_NS`] before `now` (all
/// `bpf_ktime_get_ns()` times). Returns the total and how many CPUs it came
/// from.
pub fn window_drops(windows: &[(u64, u64)], now: u64, restart: u64) -> (u64, usize) {
    windows
        .iter()
        .filter(|&&(count, start)| count > 0 && start >= restart && now.saturating_sub(start) <= DROP_WINDOW_NS)
        .fold((0, 0), |(total, cpus), &(count, _)| (total.saturating_add(count), cpus + 1))
}

/// A time squeeze happened between two readings of the total (`None`: no
/// previous reading yet, so nothing can be said).
pub fn squeezed(previous: Option<u64>, now: u64) -> bool {
    previous.is_some_and(|p| now > p)
}

/// Whether high_order_alloc_disable should be set back to 0: it is set
/// and the kernel is at least `min`.
pub fn should_enable_high_order(disabled: i64, release: (u32, u32, u32), min: (u32, u32, u32)) -> bool {
    disabled != 0 && release >= min
}

/// Why a cpumask could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("empty cpumask")]
    Empty,
    #[error("bad cpumask group '{0}'")]
    BadGroup(String),
}

/// A cpumask as the kernel prints it (`%*pb`): hex, most significant
/// 32-bit group first, groups separated by commas, the first group only as
/// wide as the number of possible CPUs needs. The original wrote this
/// sysctl as a decimal number, which sets the wrong CPUs from CPU 4 on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMask {
    /// 32-bit groups, least significant first.
    groups: Vec<u32>,
    /// Hex digits of the most significant group as read (kept on output).
    first_width: usize,
}

impl CpuMask {
    /// Parse the kernel's text, e.g. `0`, `3`, `00000000,00000001`.
    pub fn parse(text: &str) -> Result<Self, MaskError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(MaskError::Empty);
        }
        let parts: Vec<&str> = text.split(',').collect();
        let mut groups = Vec::with_capacity(parts.len());
        for p in parts.iter().rev() {
            let p = p.trim();
            let ok = !p.is_empty() && p.len() <= 8 && p.chars().all(|c| c.is_ascii_hexdigit());
            if !ok {
                return Err(MaskError::BadGroup(p.to_string()));
            }
            groups.push(u32::from_str_radix(p, 16).map_err(|_| MaskError::BadGroup(p.to_string()))?);
        }
        let first_width = parts.first().map_or(1, |p| p.trim().len());
        Ok(Self { groups, first_width })
    }

    /// Whether `cpu`'s bit is set.
    pub fn is_set(&self, cpu: u32) -> bool {
        let (g, b) = ((cpu / 32) as usize, cpu % 32);
        self.groups.get(g).is_some_and(|v| v & (1u32 << b) != 0)
    }

    /// The mask with `cpu`'s bit set (groups added as needed).
    pub fn with(&self, cpu: u32) -> Self {
        let (g, b) = ((cpu / 32) as usize, cpu % 32);
        let mut out = self.clone();
        if out.groups.len() <= g {
            out.groups.resize(g + 1, 0);
            // A new most significant group: as wide as its value needs.
            out.first_width = 1;
        }
        out.groups[g] |= 1u32 << b;
        out
    }

    /// CPUs 0-63 as a 64-bit bitmap (what the BPF program keeps), with 64-bit
    /// shifts only.
    pub fn low64(&self) -> u64 {
        let lo = u64::from(self.groups.first().copied().unwrap_or(0));
        let hi = u64::from(self.groups.get(1).copied().unwrap_or(0));
        lo | (hi << 32)
    }

    /// The kernel's text form (see the type's documentation).
    pub fn format(&self) -> String {
        let mut out = Vec::with_capacity(self.groups.len());
        for (i, g) in self.groups.iter().enumerate().rev() {
            if i + 1 == self.groups.len() {
                out.push(format!("{g:0w$x}", w = self.first_width.clamp(1, 8)));
            } else {
                out.push(format!("{g:08x}"));
            }
        }
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_grows_by_a_step_with_a_ceiling() {
        let lr = LearningRate::default();
        assert_eq!(backlog_next(8, lr), Some(10));
        assert_eq!(backlog_next(1000, lr), Some(1250));
        assert_eq!(backlog_next(1, lr), Some(2), "small values still move");
        assert_eq!(backlog_next(3, lr), Some(4));
        assert_eq!(backlog_next(60000, lr), Some(NETDEV_MAX_BACKLOG_MAX));
        assert_eq!(backlog_next(NETDEV_MAX_BACKLOG_MAX, lr), None);
        assert_eq!(backlog_next(1 << 20, lr), None, "never lowered either");
        assert_eq!(backlog_next(0, lr), None);
        assert_eq!(backlog_next(8, LearningRate::new(0)), Some(9));
    }

    #[test]
    fn budget_grows_together_within_limits() {
        let lr = LearningRate::default();
        assert_eq!(budget_grow(5, 2000, lr), Ok((6, 2500)));
        assert_eq!(budget_grow(300, 8000, lr), Ok((375, 10000)));
        assert_eq!(budget_grow(300, 40001, lr), Err(BudgetLimit::Usecs(50001)));
        assert_eq!(budget_grow(300, 40000, lr), Ok((375, 50000)));
        assert_eq!(budget_grow(NETDEV_BUDGET_MAX, 2000, lr), Err(BudgetLimit::Budget(20480)));
        assert_eq!(budget_grow(i64::from(i32::MAX), 2000, lr), Err(BudgetLimit::Budget(2684354558)));
        assert_eq!(budget_grow(0, 0, lr), Ok((2, 2)));
    }

    #[test]
    fn budget_shrinks_to_the_start_values_only() {
        let lr = LearningRate::default();
        assert_eq!(budget_shrink((375, 10000), (300, 8000), lr), (300, 8000));
        assert_eq!(budget_shrink((800, 20000), (300, 8000), lr), (600, 15000));
        assert_eq!(budget_shrink((6, 2500), (5, 2000), lr), (5, 2000));
        // Someone set it below where we started: not raised by a "decrease".
        assert_eq!(budget_shrink((100, 1000), (300, 8000), lr), (100, 1000));
    }

    #[test]
    fn budget_step_grows_until_waits_follow_the_budget() {
        use bpftune_sdk::corr::CorrTable;
        let lr = LearningRate::default();
        let floor = (5, 2000);
        let mut cur = floor;
        let mut corr: CorrTable<u8> = CorrTable::new();
        let mut steps = Vec::new();
        // Waits rise with the budget: after 10 samples the rule turns round.
        for wait in 0..12 {
            let x = budget_sample_x(cur, lr);
            corr.update(0, x as f64, f64::from(wait * 10));
            let step = budget_step(cur, floor, corr.get(&0).is_correlated(), lr);
            steps.push(step);
            cur = match step {
                BudgetStep::Increase(b, u) | BudgetStep::Decrease(b, u) => (b, u),
                BudgetStep::Limit(_) => cur,
            };
        }
        assert_eq!(steps[0], BudgetStep::Increase(6, 2500));
        assert!(steps[..9].iter().all(|s| matches!(s, BudgetStep::Increase(..))), "{steps:?}");
        assert!(matches!(steps[9], BudgetStep::Decrease(..)), "{steps:?}");
        assert!(matches!(steps[11], BudgetStep::Decrease(..)), "{steps:?}");
        // At the usecs limit an uncorrelated squeeze stops, a correlated one
        // still steps back.
        assert_eq!(budget_step((300, 45000), floor, false, lr), BudgetStep::Limit(BudgetLimit::Usecs(56250)));
        assert_eq!(budget_step((300, 45000), floor, true, lr), BudgetStep::Decrease(225, 33750));
        assert_eq!(budget_sample_x((300, 45000), lr), 300);
        assert_eq!(budget_sample_x((300, 8000), lr), 375);
    }

    #[test]
    fn dropping_cpus_over_the_threshold() {
        let last = [(0, 100), (1, 5)];
        // max 8: threshold 1; max 1000: threshold 31.
        assert_eq!(dropping_cpus(&last, &[(0, 100), (1, 9)], 8), vec![(1, 4)]);
        assert_eq!(dropping_cpus(&last, &[(0, 140), (1, 9), (2, 50)], 1000), vec![(2, 50), (0, 40)]);
        assert!(dropping_cpus(&last, &[(0, 50), (1, 5)], 8).is_empty());
        assert!(dropping_cpus(&last, &last, 0).is_empty());
    }

    #[test]
    fn window_drops_sums_current_windows_only() {
        let now = 100 * DROP_WINDOW_NS;
        let windows = [
            (10, now - 1_000),             // current
            (5, now - DROP_WINDOW_NS),     // current, just
            (7, now - DROP_WINDOW_NS - 1), // expired
            (9, 50),                       // before the last event
            (0, now),                      // no drops
        ];
        assert_eq!(window_drops(&windows, now, 100), (15, 2));
        assert_eq!(window_drops(&windows, now, now), (0, 0));
        assert_eq!(window_drops(&[], now, 0), (0, 0));
        // A window that began after `now` was read (another CPU's clock
        // read later) still counts.
        assert_eq!(window_drops(&[(3, now + 5)], now, 0), (3, 1));
    }

    #[test]
    fn squeeze_needs_a_previous_reading() {
        assert!(!squeezed(None, 10));
        assert!(!squeezed(Some(10), 10));
        assert!(squeezed(Some(10), 11));
        assert!(!squeezed(Some(10), 9), "a counter that went back is no squeeze");
    }

    #[test]
    fn high_order_from_the_kernel_release() {
        let min = (5, 14, 0);
        assert!(should_enable_high_order(1, (6, 18, 44), min));
        assert!(should_enable_high_order(1, (5, 14, 0), min));
        assert!(!should_enable_high_order(1, (5, 13, 99), min));
        assert!(!should_enable_high_order(0, (6, 18, 44), min));
    }

    #[test]
    fn cpumask_is_hex_in_kernel_format() {
        let m = CpuMask::parse("0").expect("parse");
        assert_eq!(m.format(), "0");
        assert_eq!(m.with(1).format(), "2");
        assert_eq!(m.with(0).with(1).format(), "3");
        // The original's decimal bug: CPU 4 is 0x10, not "16".
        assert_eq!(CpuMask::parse("00").expect("parse").with(4).format(), "10");
        let wide = CpuMask::parse("00000000,00000000").expect("parse");
        assert_eq!(wide.with(33).format(), "00000002,00000000");
        assert_eq!(wide.with(33).low64(), 1u64 << 33);
        assert!(wide.with(33).is_set(33) && !wide.with(33).is_set(1));
        // CPU 40 of a one-group mask: a group is added, no 32-bit overflow.
        let grown = CpuMask::parse("1").expect("parse").with(40);
        assert_eq!(grown.format(), "100,00000001");
        assert_eq!(grown.low64(), (1u64 << 40) | 1);
        // CPUs beyond 64 work in userspace.
        let big = CpuMask::parse("0").expect("parse").with(100);
        assert!(big.is_set(100));
        assert_eq!(big.low64(), 0);
        assert_eq!(big.format(), "10,00000000,00000000,00000000");
        assert_eq!(CpuMask::parse("ff,00000001").expect("parse").low64(), (0xffu64 << 32) | 1);
    }

    #[test]
    fn cpumask_rejects_garbage() {
        assert_eq!(CpuMask::parse(""), Err(MaskError::Empty));
        assert_eq!(CpuMask::parse("12").map(|m| m.low64()), Ok(0x12), "12 is hex");
        assert!(matches!(CpuMask::parse("0x1"), Err(MaskError::BadGroup(_))));
        assert!(matches!(CpuMask::parse("123456789"), Err(MaskError::BadGroup(_))));
        assert!(matches!(CpuMask::parse("1,,2"), Err(MaskError::BadGroup(_))));
    }
}
