//! When the per-segment hooks are attached: a short window every few
//! seconds, so that a bulk transfer runs no tcp_buffer program on almost
//! all of its segments (a detached tracepoint costs nothing, while even an
//! empty attached program costs ~75 ns per segment).
//!
//! Attaching and detaching a tracepoint's first program rewrites kernel
//! text (a jump label and a static call), and each rewrite interrupts
//! every CPU to synchronise it. So windows that saw no segment at all back
//! off, doubling the wait up to a bound; the tuner wakes the cycle when
//! packets move again.
//!
//! Pure state, stepped once per tuner tick; the tuner attaches or detaches
//! the links as [`DutyCycle::step`] says.

/// Ticks per cycle, ticks the hooks stay attached, and how soon the next
/// window opens after a window's evidence led to a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DutyConfig {
    pub period: u32,
    pub window: u32,
    pub hurry: u32,
    /// Idle windows double the period up to `period << max_idle_shift`.
    pub max_idle_shift: u32,
}

/// The cycle: position in it, and whether a change asked for an early
/// window (a buffer that was grown may need another step soon).
#[derive(Debug, Clone)]
pub struct DutyCycle {
    cfg: DutyConfig,
    /// Ticks until the next window opens (0: open now).
    until_open: u32,
    /// Ticks the current window still stays open (0: closed).
    open_left: u32,
    /// The period is `period << idle_shift`: one more for each window in
    /// a row that saw nothing.
    idle_shift: u32,
}

impl DutyCycle {
    /// The first window opens at the first tick.
    pub fn new(cfg: DutyConfig) -> Self {
        let window = cfg.window.max(1);
        let period = cfg.period.max(window + 1);
        let cfg = DutyConfig {
            period,
            window,
            hurry: cfg.hurry.clamp(1, period),
            max_idle_shift: cfg.max_idle_shift.min(16),
        };
        Self { cfg, until_open: 0, open_left: 0, idle_shift: 0 }
    }

    /// Ticks between window openings now.
    fn period(&self) -> u32 {
        self.cfg.period.saturating_mul(1 << self.idle_shift)
    }

    /// Advance one tick; true if the hooks should be attached until the
    /// next tick.
    pub fn step(&mut self) -> bool {
        if self.open_left > 0 {
            self.open_left -= 1;
            return self.open_left > 0;
        }
        if self.until_open > 0 {
            self.until_open -= 1;
        }
        if self.until_open > 0 {
            return false;
        }
        self.open_left = self.cfg.window;
        self.until_open = self.period() - self.cfg.window;
        true
    }

    /// A window closed: whether its hooks were called at all. A window
    /// that saw nothing doubles the wait for the next one (up to the
    /// bound); one that saw segments returns to the normal period.
    pub fn window_closed(&mut self, saw_segments: bool) {
        let before = self.period();
        self.idle_shift = if saw_segments { 0 } else { (self.idle_shift + 1).min(self.cfg.max_idle_shift) };
        let after = self.period();
        // The wait was set when the window opened, for the old period.
        self.until_open = (self.until_open + after).saturating_sub(before).max(1);
    }

    /// Whether idle windows have lengthened the period.
    pub fn backed_off(&self) -> bool {
        self.idle_shift > 0
    }

    /// Packets move again: back to the normal period, the next window
    /// within `hurry` ticks.
    pub fn wake(&mut self) {
        if self.idle_shift > 0 {
            self.idle_shift = 0;
            self.hurry();
        }
    }

    /// A window's evidence led to a change: open the next one within
    /// `hurry` ticks instead of waiting out the period.
    /// (While a window is open, the count starts when it closes.)
    pub fn hurry(&mut self) {
        self.until_open = self.until_open.min(self.cfg.hurry);
    }

    /// The share of time the hooks are attached without hurrying.
    pub fn share(&self) -> f64 {
        f64::from(self.cfg.window) / f64::from(self.cfg.period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &mut DutyCycle, n: usize) -> Vec<bool> {
        (0..n).map(|_| d.step()).collect()
    }

    #[test]
    fn one_window_per_period() {
        let mut d = DutyCycle::new(DutyConfig { period: 4, window: 1, hurry: 2, max_idle_shift: 0 });
        assert_eq!(run(&mut d, 9), [true, false, false, false, true, false, false, false, true]);
        assert!((d.share() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn longer_windows() {
        let mut d = DutyCycle::new(DutyConfig { period: 5, window: 2, hurry: 1, max_idle_shift: 0 });
        assert_eq!(run(&mut d, 10), [true, true, false, false, false, true, true, false, false, false]);
    }

    #[test]
    fn hurry_opens_the_next_window_early() {
        let mut d = DutyCycle::new(DutyConfig { period: 16, window: 1, hurry: 4, max_idle_shift: 0 });
        assert!(d.step());
        assert!(!d.step());
        d.hurry();
        // Four ticks after the hurry, not fifteen after the window.
        assert_eq!(run(&mut d, 4), [false, false, false, true]);
        // Then the normal period again.
        let after = run(&mut d, 16);
        assert_eq!(after.iter().filter(|&&on| on).count(), 1);
        assert!(after[15]);
    }

    #[test]
    fn hurry_never_delays() {
        let mut d = DutyCycle::new(DutyConfig { period: 16, window: 1, hurry: 4, max_idle_shift: 0 });
        assert!(d.step());
        assert_eq!(run(&mut d, 13), vec![false; 13]);
        // Three ticks before the next window: hurrying keeps it there.
        d.hurry();
        assert_eq!(run(&mut d, 3), [false, false, true]);
    }

    #[test]
    fn degenerate_configs_still_close_the_window() {
        let mut d = DutyCycle::new(DutyConfig { period: 0, window: 0, hurry: 0, max_idle_shift: 0 });
        assert_eq!(run(&mut d, 4), [true, false, true, false]);
    }

    #[test]
    fn idle_windows_back_off_to_the_bound_and_traffic_restores_the_period() {
        let mut d = DutyCycle::new(DutyConfig { period: 4, window: 1, hurry: 2, max_idle_shift: 2 });
        let (mut opens, mut was_open) = (Vec::new(), false);
        for tick in 0..60 {
            let open = d.step();
            if open && !was_open {
                opens.push(tick);
            }
            if was_open && !open {
                // Nothing was seen in that window.
                d.window_closed(false);
            }
            was_open = open;
        }
        // Windows 8, then 16, then 16 ticks apart (period 4, doubled twice).
        assert_eq!(opens, [0, 8, 24, 40, 56]);
        assert!(d.backed_off());
        // Traffic: the next window within `hurry` ticks, then every 4.
        d.wake();
        assert!(!d.backed_off());
        let next = run(&mut d, 2);
        assert_eq!(next, [false, true]);
        assert!(!d.step());
        d.window_closed(true);
        assert_eq!(run(&mut d, 4), [false, false, true, false]);
    }

    #[test]
    fn a_window_that_saw_segments_keeps_the_normal_period() {
        let mut d = DutyCycle::new(DutyConfig { period: 4, window: 1, hurry: 2, max_idle_shift: 3 });
        assert!(d.step());
        assert!(!d.step());
        d.window_closed(true);
        assert_eq!(run(&mut d, 3), [false, false, true]);
        assert!(!d.backed_off());
    }
}
