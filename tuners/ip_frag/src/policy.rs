//! Pure decisions of the ip_frag tuner: how far to move a namespace's
//! fragment-reassembly high threshold, and the low threshold when a
//! decrease would otherwise cross it. No I/O; unit-tested without root.

use bpftune_sdk::LearningRate;

/// Highest high threshold this tuner sets: 64 MiB, 16 times the kernel's
/// 4 MiB default. Reassembly memory is per namespace, so an unbounded
/// threshold would let a fragment flood in any container pin kernel memory.
pub const HIGH_THRESH_MAX: i64 = 64 << 20;

/// Lowest high threshold a decrease goes to (one maximal IPv4 datagram
/// must still fit).
pub const HIGH_THRESH_MIN: i64 = 64 << 10;

/// What the tuner knows when a namespace's reassembly memory is nearly at
/// its high threshold (both thresholds read in the same look as the memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragInput {
    /// high_thresh now (read in the namespace).
    pub current_high: i64,
    /// low_thresh now.
    pub low: i64,
    /// Reassembly failures correlate with our increases (enough samples).
    pub correlated: bool,
}

/// Why nothing is changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Already at [`HIGH_THRESH_MAX`].
    AtMax,
    /// A decrease would go below [`HIGH_THRESH_MIN`].
    AtMin,
    /// Values the kernel would never report.
    Invalid,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragDecision {
    /// Raise high_thresh to this (low_thresh is already below it).
    Grow(i64),
    /// Lower high_thresh to `high`; first lower low_thresh to `low` if set,
    /// so that low stays below high (the kernel rejects the high write
    /// otherwise).
    Shrink {
        high: i64,
        low: Option<i64>,
    },
    Hold(Hold),
}

/// Reassembly failure rate in percent; `None` without reassembly requests
/// (the original divided by zero there).
pub fn fail_rate(fails: u64, reqds: u64) -> Option<u64> {
    fails.saturating_mul(100).checked_div(reqds)
}

/// low_thresh to pair with a high threshold: 3/4 of it, the kernel's own
/// default ratio (3 MiB / 4 MiB).
pub fn low_for(high: i64) -> i64 {
    high - (high >> 2)
}

/// Decide for one "nearly full" observation.
pub fn decide(input: FragInput, lr: LearningRate) -> FragDecision {
    let FragInput { current_high, low, correlated } = input;
    if current_high <= 0 || low < 0 {
        return FragDecision::Hold(Hold::Invalid);
    }
    if correlated {
        let high = lr.shrink(current_high);
        if high < HIGH_THRESH_MIN || high >= current_high {
            return FragDecision::Hold(Hold::AtMin);
        }
        let low = if low >= high { Some(low_for(high)) } else { None };
        return FragDecision::Shrink { high, low };
    }
    if current_high >= HIGH_THRESH_MAX {
        return FragDecision::Hold(Hold::AtMax);
    }
    let high = lr.grow(current_high).min(HIGH_THRESH_MAX);
    if high <= current_high {
        // A step rounds to zero only for tiny values; move by one page.
        return FragDecision::Grow((current_high + 4096).min(HIGH_THRESH_MAX));
    }
    FragDecision::Grow(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(high: i64, low: i64, correlated: bool) -> FragInput {
        FragInput { current_high: high, low, correlated }
    }

    #[test]
    fn fail_rate_without_requests_is_none() {
        assert_eq!(fail_rate(0, 0), None);
        assert_eq!(fail_rate(5, 0), None);
        assert_eq!(fail_rate(1, 4), Some(25));
        assert_eq!(fail_rate(u64::MAX, 1), Some(u64::MAX));
    }

    #[test]
    fn grows_by_one_learning_rate_step() {
        let lr = LearningRate::default();
        assert_eq!(decide(input(8192, 8192, false), lr), FragDecision::Grow(10240));
        assert_eq!(decide(input(4 << 20, 3 << 20, false), lr), FragDecision::Grow(5 << 20));
        assert_eq!(decide(input(8192, 4096, false), LearningRate::new(0)), FragDecision::Grow(8192 + 128));
    }

    #[test]
    fn growth_is_bounded() {
        let lr = LearningRate::default();
        assert_eq!(decide(input(HIGH_THRESH_MAX - 1, 0, false), lr), FragDecision::Grow(HIGH_THRESH_MAX));
        assert_eq!(decide(input(HIGH_THRESH_MAX, 0, false), lr), FragDecision::Hold(Hold::AtMax));
        assert_eq!(decide(input(i64::MAX, 0, false), lr), FragDecision::Hold(Hold::AtMax));
        // Repeated growth converges on the cap.
        let mut high = 8192;
        for _ in 0..200 {
            match decide(input(high, 4096, false), lr) {
                FragDecision::Grow(n) => {
                    assert!(n > high && n <= HIGH_THRESH_MAX);
                    high = n;
                }
                FragDecision::Hold(Hold::AtMax) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(high, HIGH_THRESH_MAX);
    }

    #[test]
    fn tiny_values_still_move() {
        assert_eq!(decide(input(1, 0, false), LearningRate::default()), FragDecision::Grow(4097));
    }

    #[test]
    fn correlated_failures_shrink_keeping_low_below_high() {
        let lr = LearningRate::default();
        // low is already below the new high: only high moves.
        assert_eq!(decide(input(4 << 20, 1 << 20, true), lr), FragDecision::Shrink { high: 3 << 20, low: None });
        // low would be above (or equal to) the new high: lower it first.
        match decide(input(4 << 20, 3 << 20, true), lr) {
            FragDecision::Shrink { high, low: Some(low) } => {
                assert_eq!(high, 3 << 20);
                assert!(low < high);
                assert_eq!(low, low_for(high));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shrinking_stops_at_the_floor() {
        let lr = LearningRate::default();
        assert_eq!(decide(input(HIGH_THRESH_MIN, 0, true), lr), FragDecision::Hold(Hold::AtMin));
        assert_eq!(decide(input(8192, 4096, true), lr), FragDecision::Hold(Hold::AtMin));
    }

    #[test]
    fn invalid_values_hold() {
        let lr = LearningRate::default();
        assert_eq!(decide(input(0, 0, false), lr), FragDecision::Hold(Hold::Invalid));
        assert_eq!(decide(input(8192, -1, false), lr), FragDecision::Hold(Hold::Invalid));
    }
}
