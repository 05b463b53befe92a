//! What the tcp_conn tuner tells people: the reason line logged for each
//! choice event, a budget that keeps those lines from flooding the log, and
//! the summary table of algorithm → connection count (plus per-destination
//! learned costs at debug level).

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::ids::{Algorithm, DROP_SHIFT, EXPLORE_EVERY, NR_CC, RL_SCALE, Reason};

/// Prefix of every summary line (the original's format).
pub const SUMMARY_PREFIX: &str = "# Summary: tcp_conn_tuner:";

/// A choice event decoded from `struct tcp_conn_event` in raw_data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChoiceEvent {
    pub addr: IpAddr,
    pub alg: Option<Algorithm>,
    pub prev_alg: Option<Algorithm>,
    pub reason: Option<Reason>,
    pub ncandidates: u32,
    pub instances: u64,
    pub cost: u64,
    pub total_retrans: u32,
    pub segs_out: u32,
}

/// The peer address from the BPF key words (network byte order in memory);
/// IPv4 peers are stored v4-mapped and shown as IPv4.
pub fn addr_from_words(words: [u32; 4]) -> IpAddr {
    let mut bytes = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn alg_name(alg: Option<Algorithm>) -> &'static str {
    alg.map_or("the default", Algorithm::name)
}

/// "use X congestion control algorithm instead of Y", or "keep X ..." when
/// the connection already ran X.
fn use_instead(ev: &ChoiceEvent) -> String {
    let alg = alg_name(ev.alg);
    if ev.alg.is_some() && ev.prev_alg == ev.alg {
        format!("keep {alg} congestion control algorithm")
    } else {
        format!("use {alg} congestion control algorithm instead of {}", alg_name(ev.prev_alg))
    }
}

/// A fixed-point cost as a decimal with two places (1.00 = one "best").
pub fn format_cost(cost: u64) -> String {
    let hundredths = cost.saturating_mul(100) / RL_SCALE;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// Loss threshold as a percentage, e.g. "1.56".
fn threshold_percent() -> String {
    let bp = 10_000u64 >> DROP_SHIFT; // basis points, 1/64 = 156
    format!("{}.{:02}", bp / 100, bp % 100)
}

/// The reason line logged after the Scenario line.
pub fn reason_line(ev: &ChoiceEvent) -> String {
    let alg = alg_name(ev.alg);
    let prev = alg_name(ev.prev_alg);
    let addr = ev.addr;
    match ev.reason {
        Some(Reason::Loss) => format!(
            "Because loss rate has exceeded {} percent ({} of {} segments retransmitted) for a connection to {addr}, \
             use {alg} congestion control algorithm instead of {prev}; new connections to {addr} start on {alg}",
            threshold_percent(),
            ev.total_retrans,
            ev.segs_out
        ),
        Some(Reason::Remember) => format!(
            "Because connections to {addr} lost more than {} percent of their segments, \
             use {alg} congestion control algorithm instead of {prev}",
            threshold_percent()
        ),
        Some(Reason::Cost) => format!(
            "Due to lowest learned cost {} (relative distance from best min RTT and delivery rate, \
             {} candidates, {} connections) for connections to {addr}, {}",
            format_cost(ev.cost),
            ev.ncandidates,
            ev.instances,
            use_instead(ev)
        ),
        Some(Reason::Untried) => format!(
            "To learn which congestion control algorithm suits connections to {addr} best \
             ({} connections so far), try {alg} instead of {prev}",
            ev.instances
        ),
        Some(Reason::Explore) => format!(
            "To keep learning which congestion control algorithm suits connections to {addr} best \
             (exploration, 1 connection in {}), try {alg} instead of {prev}",
            EXPLORE_EVERY
        ),
        None => format!("Use {alg} congestion control algorithm instead of {prev} for connections to {addr}"),
    }
}

/// At most `burst` log lines at once, refilled at one per `refill`; what
/// does not fit is counted and reported when the budget allows again.
#[derive(Debug)]
pub struct LogBudget {
    burst: u32,
    refill: Duration,
    tokens: u32,
    last: Instant,
    suppressed: u64,
}

/// What the budget says about one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Log it; `suppressed` lines were dropped since the last logged one.
    Log { suppressed: u64 },
    /// Do not log (counted).
    Drop,
}

impl LogBudget {
    pub fn new(burst: u32, refill: Duration, now: Instant) -> Self {
        Self { burst, refill, tokens: burst, last: now, suppressed: 0 }
    }

    pub fn take(&mut self, now: Instant) -> Budget {
        if !self.refill.is_zero() {
            let elapsed = now.saturating_duration_since(self.last);
            let n = (elapsed.as_nanos() / self.refill.as_nanos()).min(u128::from(self.burst)) as u32;
            if n > 0 {
                self.tokens = (self.tokens + n).min(self.burst);
                self.last = now;
            }
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            return Budget::Drop;
        }
        self.tokens -= 1;
        let suppressed = std::mem::take(&mut self.suppressed);
        Budget::Log { suppressed }
    }

    /// Lines dropped and not yet reported.
    pub fn pending(&self) -> u64 {
        self.suppressed
    }
}

/// What the BPF program learned per destination and algorithm
/// (`struct cc_metric`), for the debug summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metric {
    /// Learned cost, lower is better.
    pub metric_value: u64,
    /// Learned mean deviation of the samples from `metric_value`.
    pub metric_dev: u64,
    /// Best delivery rate seen, bytes/s.
    pub max_rate: u64,
    /// Best min RTT seen, us.
    pub min_rtt: u32,
    /// Connections that updated the cost.
    pub metric_count: u32,
}

/// One destination's learned state, for the debug summary.
#[derive(Debug, Clone)]
pub struct HostRow {
    pub addr: IpAddr,
    pub netns_cookie: u64,
    pub metrics: [Metric; NR_CC],
}

/// The summary lines: thin-lto count, the algorithm table, and (debug)
/// per-destination costs, at most `max_hosts` of them.
pub fn summary_lines(
    choices: &[u64; NR_CC],
    thin_lto: u64,
    candidates: u32,
    hosts: Option<(&[HostRow], u64)>,
    global_cookie: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    if thin_lto > 0 {
        out.push(format!(
            "{SUMMARY_PREFIX} set 'net.ipv4.tcp_thin_linear_timeouts' for {thin_lto} connections to improve \
             responsiveness of thin flows durning retransmission"
        ));
    }
    out.push(format!("{SUMMARY_PREFIX} {:>20} {:>20}", "CongAlg", "Count"));
    for alg in Algorithm::ALL {
        let n = choices[alg as usize];
        if candidates & alg.bit() == 0 && n == 0 {
            continue;
        }
        out.push(format!("{SUMMARY_PREFIX} {:>20} {:>20}", alg.name(), n));
    }
    if let Some((rows, more)) = hosts {
        out.push(format!(
            "{SUMMARY_PREFIX} {:>48} {:>8} {:>20} {:>8} {:>8} {:>8} {:>8}",
            "IPAddress", "CongAlg", "Metric", "Count", "MeanDev", "MinRtt", "MaxDlvr"
        ));
        for row in rows {
            let who = if row.netns_cookie == global_cookie {
                row.addr.to_string()
            } else {
                format!("{} (netns {})", row.addr, row.netns_cookie)
            };
            for alg in Algorithm::ALL {
                let m = &row.metrics[alg as usize];
                if m.metric_count == 0 {
                    continue;
                }
                out.push(format!(
                    "{SUMMARY_PREFIX} {:>48} {:>8} {:>20} {:>8} {:>8} {:>8} {:>8}",
                    who,
                    alg.name(),
                    m.metric_value,
                    m.metric_count,
                    m.metric_dev,
                    m.min_rtt,
                    m.max_rate
                ));
            }
        }
        if more > 0 {
            out.push(format!("{SUMMARY_PREFIX} ... and {more} more destinations"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4_words(a: Ipv4Addr) -> [u32; 4] {
        [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), u32::from_ne_bytes(a.octets())]
    }

    #[test]
    fn addresses_decode_from_bpf_words() {
        assert_eq!(
            addr_from_words(v4_words(Ipv4Addr::new(10, 1, 2, 3))),
            "10.1.2.3".parse::<IpAddr>().expect("test value")
        );
        let v6: Ipv6Addr = "fd00::1".parse().expect("test value");
        let o = v6.octets();
        let words = [0, 1, 2, 3].map(|i| u32::from_ne_bytes([o[i * 4], o[i * 4 + 1], o[i * 4 + 2], o[i * 4 + 3]]));
        assert_eq!(addr_from_words(words), IpAddr::V6(v6));
    }

    fn event(reason: Reason) -> ChoiceEvent {
        ChoiceEvent {
            addr: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 3)),
            alg: Some(Algorithm::Bbr),
            prev_alg: Some(Algorithm::Cubic),
            reason: Some(reason),
            ncandidates: 3,
            instances: 7,
            cost: 1_250_000,
            total_retrans: 25,
            segs_out: 800,
        }
    }

    #[test]
    fn reason_lines_say_what_and_why() {
        let l = reason_line(&event(Reason::Loss));
        assert!(l.starts_with("Because loss rate has exceeded 1.56 percent (25 of 800 segments retransmitted)"), "{l}");
        assert!(l.contains("use bbr congestion control algorithm instead of cubic"), "{l}");
        let l = reason_line(&event(Reason::Cost));
        assert!(l.contains("lowest learned cost 1.25"), "{l}");
        assert!(l.contains("use bbr congestion control algorithm instead of cubic"), "{l}");
        assert!(reason_line(&event(Reason::Untried)).contains("try bbr instead of cubic"));
        assert!(reason_line(&event(Reason::Explore)).contains("(exploration, 1 connection in 64)"));
        assert!(reason_line(&event(Reason::Remember)).contains("10.9.0.3 lost more than 1.56 percent"));
        let mut e = event(Reason::Cost);
        e.prev_alg = Some(Algorithm::Bbr);
        assert!(reason_line(&e).ends_with("keep bbr congestion control algorithm"), "{}", reason_line(&e));
        let mut e = event(Reason::Loss);
        e.prev_alg = None;
        assert!(reason_line(&e).contains("instead of the default"));
    }

    #[test]
    fn costs_format_as_decimals() {
        assert_eq!(format_cost(0), "0.00");
        assert_eq!(format_cost(RL_SCALE), "1.00");
        assert_eq!(format_cost(1_234_567), "1.23");
        assert_eq!(format_cost(u64::MAX), format_cost(u64::MAX));
    }

    #[test]
    fn budget_limits_bursts_and_reports_drops() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(2, Duration::from_secs(1), t0);
        assert_eq!(b.take(t0), Budget::Log { suppressed: 0 });
        assert_eq!(b.take(t0), Budget::Log { suppressed: 0 });
        assert_eq!(b.take(t0), Budget::Drop);
        assert_eq!(b.take(t0 + Duration::from_millis(500)), Budget::Drop);
        assert_eq!(b.pending(), 2);
        assert_eq!(b.take(t0 + Duration::from_millis(1000)), Budget::Log { suppressed: 2 });
        assert_eq!(b.pending(), 0);
        // a long quiet period refills to the burst, not beyond
        let later = t0 + Duration::from_secs(100);
        assert!(matches!(b.take(later), Budget::Log { .. }));
        assert!(matches!(b.take(later), Budget::Log { .. }));
        assert_eq!(b.take(later), Budget::Drop);
    }

    #[test]
    fn summary_has_the_original_table() {
        let choices = [3, 5, 0, 1];
        let mask = crate::ids::candidate_mask("reno bbr cubic");
        let lines = summary_lines(&choices, 0, mask, None, 1);
        assert_eq!(
            lines,
            vec![
                format!("{SUMMARY_PREFIX}              CongAlg                Count"),
                format!("{SUMMARY_PREFIX}                cubic                    3"),
                format!("{SUMMARY_PREFIX}                  bbr                    5"),
                format!("{SUMMARY_PREFIX}                 reno                    1"),
            ]
        );
        let lines = summary_lines(&choices, 2, mask, None, 1);
        assert!(lines[0].contains("'net.ipv4.tcp_thin_linear_timeouts' for 2 connections"));
        // Repeated calls give the same answer (nothing accumulates).
        assert_eq!(summary_lines(&choices, 2, mask, None, 1), lines);
    }

    #[test]
    fn debug_summary_lists_learned_costs() {
        let mut metrics = [Metric::default(); NR_CC];
        metrics[1] = Metric { metric_value: 42, metric_dev: 7, max_rate: 1000, min_rtt: 80, metric_count: 3 };
        let rows = vec![
            HostRow { addr: "10.0.0.2".parse().expect("test value"), netns_cookie: 1, metrics },
            HostRow { addr: "fd00::2".parse().expect("test value"), netns_cookie: 4097, metrics },
        ];
        let lines = summary_lines(&[0; NR_CC], 0, 0b1011, Some((&rows, 5)), 1);
        assert!(lines.iter().any(|l| l.contains("IPAddress") && l.contains("MaxDlvr")));
        let row = lines.iter().find(|l| l.contains("10.0.0.2")).expect("test value");
        assert!(row.contains(" bbr ") && row.contains(" 42 ") && row.ends_with(" 1000"), "{row}");
        assert!(lines.iter().any(|l| l.contains("fd00::2 (netns 4097)")));
        assert!(lines.last().expect("test value").contains("5 more destinations"));
    }
}
