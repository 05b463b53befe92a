//! Strategies: a tuner may declare several ways of working (each a set of
//! BPF programs); the daemon re-evaluates them on each strategy's timeout and
//! re-initialises the tuner with the winner.
//!
//! Unlike the original, evaluation keeps running after the current strategy
//! wins (it re-arms its own timeout), ties keep the current strategy, and
//! negative scores can win when all are negative.

use std::time::{Duration, Instant};

/// Pick the strategy to run next from `scores` (index = strategy id).
/// Highest score wins; a tie with the current strategy keeps it; among other
/// ties the lowest id wins. `None` if there are no scores.
pub fn choose(scores: &[f64], current: u32) -> Option<u32> {
    let mut best: Option<(u32, f64)> = None;
    for (i, &s) in scores.iter().enumerate() {
        if s.is_nan() {
            continue;
        }
        let i = i as u32;
        best = match best {
            None => Some((i, s)),
            Some((_, bs)) if s > bs || (s == bs && i == current) => Some((i, s)),
            keep => keep,
        };
    }
    best.map(|(i, _)| i)
}

/// Per tuner: which strategy runs and when to evaluate next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrategyClock {
    pub current: u32,
    pub next_evaluation: Option<Instant>,
}

impl StrategyClock {
    pub fn new(current: u32, timeout_secs: u32, now: Instant) -> Self {
        Self { current, next_evaluation: deadline(timeout_secs, now) }
    }

    /// Has the current strategy's timeout passed?
    pub fn due(&self, now: Instant) -> bool {
        self.next_evaluation.is_some_and(|t| now >= t)
    }

    /// After an evaluation: run `winner`, evaluate again after its timeout.
    pub fn rearm(&mut self, winner: u32, timeout_secs: u32, now: Instant) -> bool {
        let switched = winner != self.current;
        self.current = winner;
        self.next_evaluation = deadline(timeout_secs, now);
        switched
    }
}

fn deadline(timeout_secs: u32, now: Instant) -> Option<Instant> {
    if timeout_secs == 0 { None } else { Some(now + Duration::from_secs(u64::from(timeout_secs))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_wins_and_ties_keep_current() {
        assert_eq!(choose(&[0.0, 1.0], 0), Some(1));
        assert_eq!(choose(&[1.0, 0.0], 1), Some(0));
        assert_eq!(choose(&[1.0, 1.0], 1), Some(1));
        assert_eq!(choose(&[1.0, 1.0], 0), Some(0));
        assert_eq!(choose(&[-3.0, -1.0], 0), Some(1));
        assert_eq!(choose(&[], 0), None);
        assert_eq!(choose(&[f64::NAN, 2.0], 0), Some(1));
    }

    #[test]
    fn clock_rearms_even_when_current_wins() {
        let t0 = Instant::now();
        let mut c = StrategyClock::new(0, 30, t0);
        assert!(!c.due(t0));
        assert!(c.due(t0 + Duration::from_secs(30)));
        assert!(!c.rearm(0, 30, t0 + Duration::from_secs(30)));
        assert!(c.next_evaluation.is_some());
        assert!(c.rearm(1, 0, t0));
        assert_eq!(c.next_evaluation, None);
    }
}
