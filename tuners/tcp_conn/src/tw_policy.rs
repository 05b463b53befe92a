//! Decisions of tcp_conn's time-wait part, as pure functions: when local
//! ports are under TIME_WAIT pressure, when TIME_WAIT reuse is not enough,
//! how far the local port range may widen, and the reason lines logged.
//! `tw_reuse.rs` feeds them fresh sysctl values; `bpf/tw_reuse.bpf.h`
//! applies the same two thresholds before it sends an event (the constants
//! here are taken from its `enum tw_reuse_threshold`, anchored in BTF).

use std::time::Duration;

/// TIME_WAIT pressure: TIME_WAIT sockets fill at least this share of the
/// range... Half, not "nearly full": a closed connection reaches TIME_WAIT
/// only once its FIN is acknowledged, and on a busy machine that lags the
/// connections being opened by tens of sockets, so a storm can run out of
/// ports while the count still says 3/4. Reuse is safe (TCP timestamps),
/// so acting at half leaves that lag room and comes before the failures.
pub const TW_PRESSURE_NUM: u64 = crate::skel::types::tw_reuse_threshold::TW_PRESSURE_NUM.0 as u64;
/// ...over this.
pub const TW_PRESSURE_DEN: u64 = crate::skel::types::tw_reuse_threshold::TW_PRESSURE_DEN.0 as u64;
/// Reuse cannot keep up when connections opened within the reuse delay
/// fill at least this share of the range...
pub const YOUNG_FULL_NUM: u64 = crate::skel::types::tw_reuse_threshold::YOUNG_FULL_NUM.0 as u64;
/// ...over this.
pub const YOUNG_FULL_DEN: u64 = crate::skel::types::tw_reuse_threshold::YOUNG_FULL_DEN.0 as u64;
/// The highest port the range may be widened to.
pub const PORT_MAX: i64 = 65535;
/// The range is never widened below this port (the kernel's default
/// start): lower ports belong to services that bind them.
pub const PORT_FLOOR: i64 = 32768;
/// A widening adds at least this many ports...
pub const WIDEN_MIN_STEP: i64 = 64;
/// Between two widenings in one namespace at least this much time passes.
pub const WIDEN_MIN_GAP: Duration = Duration::from_secs(1);
/// After reuse is enabled, TIME_WAIT sockets need the reuse delay to
/// become reusable: reuse is judged only after that delay plus this.
pub const REUSE_SETTLE_EXTRA: Duration = Duration::from_secs(1);
/// The value of `tcp_tw_reuse` that allows reuse for every destination
/// (2, the default, is loopback only).
pub const REUSE_ALL: i64 = 1;

/// Whether `tw` TIME_WAIT sockets fill at least half of a range of `span`
/// ports.
pub fn tw_pressure(tw: u64, span: u64) -> bool {
    span > 0 && tw * TW_PRESSURE_DEN >= span * TW_PRESSURE_NUM
}

/// Whether `young` connections fill at least 3/4 of a range of `span`
/// ports.
pub fn nearly_full(young: u64, span: u64) -> bool {
    span > 0 && young * YOUNG_FULL_DEN >= span * YOUNG_FULL_NUM
}

/// Ports in `low..=high` (0 for a reversed range).
pub fn span(low: i64, high: i64) -> u64 {
    if high < low { 0 } else { (high - low + 1) as u64 }
}

/// `used` as a percentage of `span`.
pub fn percent(used: u64, span: u64) -> u64 {
    (used * 100).checked_div(span).unwrap_or(0)
}

/// The widened range: a quarter of the span more (at least
/// [`WIDEN_MIN_STEP`] ports), taken above the range up to [`PORT_MAX`]
/// first, then below it down to [`PORT_FLOOR`] (never lower than the range
/// already starts). `None` when it cannot grow.
pub fn widen(low: i64, high: i64) -> Option<(i64, i64)> {
    if high < low || !(1..=PORT_MAX).contains(&low) || high > PORT_MAX {
        return None;
    }
    let step = ((high - low + 1) / 4).max(WIDEN_MIN_STEP);
    let up = (PORT_MAX - high).min(step);
    let down = (step - up).min((low - PORT_FLOOR).max(0));
    let (new_low, new_high) = (low - down, high + up);
    ((new_low, new_high) != (low, high)).then_some((new_low, new_high))
}

/// What one event calls for, given fresh values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Set `tcp_tw_reuse` to 1 (it was the value given).
    EnableReuse { from: i64 },
    /// Widen the range from `from` to `to`.
    Widen { from: (i64, i64), to: (i64, i64) },
    /// Reuse is not enough, and the range cannot widen further.
    AtLimit { range: (i64, i64) },
    /// Reuse was enabled too recently to judge.
    Settling,
    /// Nothing (no pressure any more, or too soon after a widening).
    Nothing,
}

/// What the kernel showed at the connection that raised the event, and
/// the sysctls as read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// TIME_WAIT sockets in the namespace.
    pub tw: u64,
    /// Connections opened within the reuse delay.
    pub young: u64,
    /// `tcp_tw_reuse` now.
    pub reuse: i64,
    /// `ip_local_port_range` now.
    pub range: (i64, i64),
}

/// How long ago reuse was enabled in the namespace (`None`: it already
/// was when first seen), and the last widening there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct History {
    pub reuse_for: Option<Duration>,
    pub since_widen: Option<Duration>,
}

/// Decide: enable reuse first; widen only once reuse has had time to work
/// and connections within the reuse delay still nearly fill the range.
pub fn decide(o: Observed, h: History, reuse_delay: Duration) -> Action {
    let span = span(o.range.0, o.range.1);
    if !tw_pressure(o.tw, span) {
        return Action::Nothing;
    }
    if o.reuse != REUSE_ALL {
        return Action::EnableReuse { from: o.reuse };
    }
    if !nearly_full(o.young, span) {
        return Action::Nothing;
    }
    if h.reuse_for.is_some_and(|d| d < reuse_delay + REUSE_SETTLE_EXTRA) {
        return Action::Settling;
    }
    if h.since_widen.is_some_and(|d| d < WIDEN_MIN_GAP) {
        return Action::Nothing;
    }
    match widen(o.range.0, o.range.1) {
        Some(to) => Action::Widen { from: o.range, to },
        None => Action::AtLimit { range: o.range },
    }
}

/// Why reuse is enabled (the "Due to ..." line's cause).
pub fn reuse_cause(tw: u64, range: (i64, i64)) -> String {
    format!(
        "TIME_WAIT sockets ({tw}) filling {}% of the local port range ({}-{}),",
        percent(tw, span(range.0, range.1)),
        range.0,
        range.1
    )
}

/// Why the range is widened.
pub fn widen_cause(young: u64, delay: Duration, range: (i64, i64)) -> String {
    format!(
        "connections opened within the TIME_WAIT reuse delay of {} ms ({young}) filling {}% of the local port range even with reuse,",
        delay.as_millis(),
        percent(young, span(range.0, range.1))
    )
}

/// NOTICE when the range cannot widen any more.
pub fn notice_at_limit(range: (i64, i64)) -> String {
    format!(
        "tcp_conn: local ports nearly exhausted even with TIME_WAIT reuse, but net.ipv4.ip_local_port_range ({} {}) \
         is not widened beyond {PORT_FLOOR}-{PORT_MAX}; consider fewer short connections (keep-alive, pooling) or more source addresses",
        range.0, range.1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(1);

    fn obs(tw: u64, young: u64, reuse: i64, range: (i64, i64)) -> Observed {
        Observed { tw, young, reuse, range }
    }

    #[test]
    fn thresholds() {
        assert_eq!(span(40000, 40199), 200);
        assert_eq!(span(5, 4), 0);
        assert!(nearly_full(150, 200));
        assert!(!nearly_full(149, 200));
        assert!(!nearly_full(10, 0));
        assert!(tw_pressure(100, 200));
        assert!(!tw_pressure(99, 200));
        assert!(!tw_pressure(10, 0));
        assert_eq!(percent(183, 200), 91);
        assert_eq!(percent(1, 0), 0);
    }

    #[test]
    fn widening_is_bounded() {
        // A quarter more (at least 64 ports), above the range first.
        assert_eq!(widen(40000, 40199), Some((40000, 40263)));
        assert_eq!(widen(40000, 40999), Some((40000, 41249)));
        // The kernel default: 4536 ports above; nothing below the floor.
        assert_eq!(widen(32768, 60999), Some((32768, 65535)));
        assert_eq!(widen(40000, 60999), Some((39286, 65535)));
        // Small ranges grow by at least the minimum step.
        assert_eq!(widen(50000, 50009), Some((50000, 50073)));
        // At the top: below only, never under the floor.
        assert_eq!(widen(33000, 65535), Some((32768, 65535)));
        assert_eq!(widen(32768, 65535), None);
        // An administrator's wider range is never narrowed.
        assert_eq!(widen(1024, 65535), None);
        assert_eq!(widen(1024, 60999), Some((1024, 65535)));
        // Nonsense is left alone.
        assert_eq!(widen(0, 100), None);
        assert_eq!(widen(200, 100), None);
        assert_eq!(widen(100, 70000), None);
        // Repeated widening converges on the bounds.
        let mut r = (40000, 40199);
        for _ in 0..100 {
            match widen(r.0, r.1) {
                Some(n) => {
                    assert!(n.0 <= r.0 && n.1 >= r.1 && n.0 >= PORT_FLOOR && n.1 <= PORT_MAX);
                    r = n;
                }
                None => break,
            }
        }
        assert_eq!(r, (PORT_FLOOR, PORT_MAX));
    }

    #[test]
    fn reuse_first() {
        let h = History::default();
        assert_eq!(decide(obs(160, 0, 0, (40000, 40199)), h, DELAY), Action::EnableReuse { from: 0 });
        assert_eq!(decide(obs(160, 0, 2, (40000, 40199)), h, DELAY), Action::EnableReuse { from: 2 });
        // Pressure gone by the time the event is handled.
        assert_eq!(decide(obs(160, 0, 0, (40000, 49999)), h, DELAY), Action::Nothing);
    }

    #[test]
    fn widen_only_when_reuse_cannot_keep_up() {
        let settled = History { reuse_for: Some(Duration::from_secs(5)), since_widen: None };
        // Reuse keeps up: few connections within the delay.
        assert_eq!(decide(obs(200, 40, 1, (40000, 40199)), settled, DELAY), Action::Nothing);
        assert_eq!(
            decide(obs(200, 180, 1, (40000, 40199)), settled, DELAY),
            Action::Widen { from: (40000, 40199), to: (40000, 40263) }
        );
        // Reuse enabled by someone before we looked: judged at once.
        let before = History::default();
        assert!(matches!(decide(obs(200, 180, 1, (40000, 40199)), before, DELAY), Action::Widen { .. }));
        // Just enabled: give it the delay first.
        let fresh = History { reuse_for: Some(Duration::from_millis(300)), since_widen: None };
        assert_eq!(decide(obs(200, 180, 1, (40000, 40199)), fresh, DELAY), Action::Settling);
        // A longer reuse delay (tcp_tw_reuse_delay) is waited for too.
        let two_s = History { reuse_for: Some(Duration::from_millis(2500)), since_widen: None };
        assert_eq!(decide(obs(200, 180, 1, (40000, 40199)), two_s, Duration::from_secs(2)), Action::Settling);
        // Not twice within a second.
        let recent = History { reuse_for: Some(Duration::from_secs(5)), since_widen: Some(Duration::from_millis(200)) };
        assert_eq!(decide(obs(200, 180, 1, (40000, 40199)), recent, DELAY), Action::Nothing);
        // At the bounds.
        assert_eq!(
            decide(obs(30000, 30000, 1, (32768, 65535)), settled, DELAY),
            Action::AtLimit { range: (32768, 65535) }
        );
    }

    #[test]
    fn reason_lines() {
        let why = reuse_cause(183, (40000, 40199));
        let line = bpftune_sdk::change_reason(&why, "net.ipv4.tcp_tw_reuse", "", &[0], &[1]);
        assert_eq!(
            line,
            "Due to TIME_WAIT sockets (183) filling 91% of the local port range (40000-40199), \
             change net.ipv4.tcp_tw_reuse from (0) -> (1)"
        );
        let why = widen_cause(180, DELAY, (40000, 40199));
        let line =
            bpftune_sdk::change_reason(&why, "net.ipv4.ip_local_port_range", "", &[40000, 40199], &[40000, 40249]);
        assert!(
            line.starts_with("Due to connections opened within the TIME_WAIT reuse delay of 1000 ms (180)"),
            "{line}"
        );
        assert!(line.ends_with("change net.ipv4.ip_local_port_range from (40000 40199) -> (40000 40249)"), "{line}");
        assert!(notice_at_limit((32768, 65535)).contains("(32768 65535)"));
    }
}
