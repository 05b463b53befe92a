//! Advise mode: decisions are logged as advice with a stable id instead of
//! being written. The same tunable, namespace and direction always get the
//! same id, so operators can deduplicate and track them across runs.

use std::collections::{BTreeMap, VecDeque};

/// Direction of a proposed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Increase,
    Decrease,
    Set,
}

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Advice {
    pub id: String,
    pub tuner: String,
    pub tunable: String,
    pub netns_cookie: u64,
    pub global: bool,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    pub scenario: String,
    pub reason: String,
    /// How many times the same advice was given.
    pub count: u64,
}

/// FNV-1a: a hash that is the same in every build and run.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0u8)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn direction(from: &str, to: &str) -> Direction {
    let parse = |s: &str| s.split_whitespace().map(str::parse::<i64>).collect::<Result<Vec<_>, _>>();
    match (parse(from), parse(to)) {
        (Ok(a), Ok(b)) if a.len() == b.len() && !a.is_empty() => {
            let up = a.iter().zip(&b).any(|(x, y)| y > x);
            let down = a.iter().zip(&b).any(|(x, y)| y < x);
            match (up, down) {
                (true, false) => Direction::Increase,
                (false, true) => Direction::Decrease,
                _ => Direction::Set,
            }
        }
        _ => Direction::Set,
    }
}

impl Advice {
    #[expect(clippy::too_many_arguments, reason = "one field per fact of the advice")]
    pub fn new(
        tuner: &str,
        tunable: &str,
        netns_cookie: u64,
        global: bool,
        from: &str,
        to: &str,
        scenario: &str,
        reason: &str,
    ) -> Self {
        let direction = direction(from, to);
        let dir = format!("{direction:?}");
        // Global advice is keyed without the cookie, which differs per boot.
        let ns = if global { "global".to_string() } else { netns_cookie.to_string() };
        let id = format!("{:016x}", fnv1a(&[tunable, &ns, &dir]));
        Self {
            id,
            tuner: tuner.to_string(),
            tunable: tunable.to_string(),
            netns_cookie,
            global,
            direction,
            from: from.to_string(),
            to: to.to_string(),
            scenario: scenario.to_string(),
            reason: reason.to_string(),
            count: 1,
        }
    }

    /// The line logged for it.
    pub fn log_line(&self) -> String {
        let ns = if self.global { "global ns".to_string() } else { format!("netns (cookie {})", self.netns_cookie) };
        format!(
            "Advice {}: scenario '{}' for tunable '{}' in {ns}: would change {} from ({}) -> ({}). {}; to apply: sysctl -w {}=\"{}\"",
            self.id, self.scenario, self.tunable, self.tunable, self.from, self.to, self.reason, self.tunable, self.to
        )
    }
}

/// Advice given so far, by id; bounded.
#[derive(Debug, Default)]
pub struct AdviceLog {
    by_id: BTreeMap<String, Advice>,
    /// Target values already logged, per id (the latest few).
    logged: BTreeMap<String, VecDeque<String>>,
}

/// At most this many distinct pieces of advice are kept.
pub const ADVICE_MAX: usize = 1024;

/// Target values remembered per id: advice that alternates between a few
/// targets (two CPUs taking turns at dropping packets, say) is logged once
/// per target instead of at every turn.
pub const RECENT_TARGETS: usize = 8;

impl AdviceLog {
    /// Record advice; true if it is new or its target value changed (worth
    /// logging), false for a repeat.
    pub fn record(&mut self, advice: Advice) -> bool {
        let Some(prev) = self.by_id.get_mut(&advice.id) else {
            if self.by_id.len() >= ADVICE_MAX {
                return false;
            }
            self.logged.insert(advice.id.clone(), VecDeque::from([advice.to.clone()]));
            self.by_id.insert(advice.id.clone(), advice);
            return true;
        };
        prev.count += 1;
        if prev.to == advice.to {
            return false;
        }
        let seen = self.logged.entry(advice.id.clone()).or_default();
        let new_target = !seen.contains(&advice.to);
        if new_target {
            if seen.len() >= RECENT_TARGETS {
                seen.pop_front();
            }
            seen.push_back(advice.to.clone());
        }
        prev.from = advice.from;
        prev.to = advice.to;
        prev.reason = advice.reason;
        new_target
    }

    pub fn iter(&self) -> impl Iterator<Item = &Advice> {
        self.by_id.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinguish_direction_and_ns() {
        let a = Advice::new("t", "net.ipv4.tcp_rmem", 1, true, "1 2 3", "1 2 4", "s", "r");
        let b = Advice::new("t", "net.ipv4.tcp_rmem", 99, true, "1 2 4", "1 2 5", "s", "r");
        let c = Advice::new("t", "net.ipv4.tcp_rmem", 1, true, "1 2 4", "1 2 3", "s", "r");
        let d = Advice::new("t", "net.ipv4.tcp_rmem", 7, false, "1 2 3", "1 2 4", "s", "r");
        assert_eq!(a.id, b.id, "global advice keeps its id across cookies");
        assert_ne!(a.id, c.id);
        assert_ne!(a.id, d.id);
        assert_eq!(a.direction, Direction::Increase);
        assert_eq!(c.direction, Direction::Decrease);
        assert_eq!(a.id.len(), 16);
    }

    #[test]
    fn advice_alternating_between_targets_is_logged_once_per_target() {
        let mut log = AdviceLog::default();
        let to = |t: &str| Advice::new("t", "x", 1, true, "0", t, "s", "r");
        assert!(log.record(to("1")));
        assert!(log.record(to("2")), "a new target is worth a line");
        for _ in 0..50 {
            assert!(!log.record(to("1")));
            assert!(!log.record(to("2")));
        }
        assert!(log.record(to("3")));
        assert_eq!(log.iter().next().map(|x| (x.count, x.to.as_str())), Some((103, "3")));
    }

    #[test]
    fn repeats_are_collapsed() {
        let mut log = AdviceLog::default();
        let a = Advice::new("t", "x", 1, true, "1", "2", "s", "r");
        assert!(log.record(a.clone()));
        assert!(!log.record(a.clone()));
        assert_eq!(log.iter().next().map(|x| x.count), Some(2));
    }
}
