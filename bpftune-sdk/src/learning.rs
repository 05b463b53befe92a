//! The learning rate (`-r 0..4`) and the step helpers derived from it: grow
//! and shrink by `v >> shift`, "nearly full" within one step. BPF computes
//! the same shift from the same global (see `bpftune.bpf.h`).

/// Highest learning rate (`-r 4`, the default): 25 % steps.
pub const LEARNING_RATE_MAX: u32 = 4;

/// A validated learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearningRate(u32);

impl Default for LearningRate {
    fn default() -> Self {
        Self(LEARNING_RATE_MAX)
    }
}

impl LearningRate {
    /// Clamp to 0..=4.
    pub fn new(rate: u32) -> Self {
        Self(rate.min(LEARNING_RATE_MAX))
    }
    pub fn rate(self) -> u32 {
        self.0
    }
    /// Bit shift: rate 4 → 2 (25 %), … rate 0 → 6 (1/64).
    pub fn shift(self) -> u32 {
        (LEARNING_RATE_MAX + 2) - self.0
    }
    /// `v` plus one step.
    pub fn grow(self, v: i64) -> i64 {
        v.saturating_add(v >> self.shift())
    }
    /// `v` minus one step.
    pub fn shrink(self, v: i64) -> i64 {
        v - (v >> self.shift())
    }
    /// `v` has reached `limit`, or is within one step of it.
    pub fn nearly_full(self, v: i64, limit: i64) -> bool {
        v >= limit || v.saturating_add(limit >> self.shift()) >= limit
    }
    /// `v` is at most one step above zero relative to `limit`.
    pub fn nearly_empty(self, v: i64, limit: i64) -> bool {
        v <= limit >> self.shift()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_match_the_original_table() {
        let shifts: Vec<u32> = (0..=4).map(|r| LearningRate::new(r).shift()).collect();
        assert_eq!(shifts, vec![6, 5, 4, 3, 2]);
        assert_eq!(LearningRate::new(9).rate(), 4);
    }

    #[test]
    fn grow_shrink_nearly_full() {
        let lr = LearningRate::default();
        assert_eq!(lr.grow(6291456), 7864320);
        assert_eq!(lr.shrink(4096), 3072);
        assert!(lr.nearly_full(100, 100));
        assert!(lr.nearly_full(76, 100));
        assert!(!lr.nearly_full(74, 100));
        assert!(lr.nearly_empty(25, 100));
        assert!(!lr.nearly_empty(26, 100));
        assert_eq!(LearningRate::new(0).grow(6400), 6500);
        assert_eq!(lr.grow(i64::MAX), i64::MAX);
    }
}
