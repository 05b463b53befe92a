//! The congestion-control policy of `bpf/tcp_conn.bpf.c`, mirrored in plain
//! Rust so it can be unit-tested without root: which algorithms are
//! candidates, when a connection counts as lossy, how a closed connection's
//! cost is computed and learned, and when a new connection is switched to
//! another algorithm (only on evidence: loss, a distinct learned cost, or
//! the bounded exploration).
//!
//! Keep the two in step: every constant and branch here has a twin in the
//! BPF program, named the same.

/// Connections to a destination before anything but loss switches one
/// (REMOTE_HOST_MIN_INSTANCES); also the first exploring connection.
pub const REMOTE_HOST_MIN_INSTANCES: u64 = 4;
/// Loss threshold: retransmissions above `segs_out >> DROP_SHIFT` (1/64).
pub const DROP_SHIFT: u32 = 6;
/// One connection in `EXPLORE_EVERY` per destination explores (counted).
pub const EXPLORE_EVERY: u64 = 64;
/// Samples an algorithm needs before its learned cost counts.
pub const MIN_SAMPLES: u32 = 2;
/// Fixed-point scale of the two cost terms.
pub const RL_SCALE: u64 = 1_000_000;
/// The smallest gap between two learned costs that counts (0.125).
pub const COST_MARGIN: u64 = RL_SCALE / 8;
/// Destinations remembered (LRU) across all namespaces.
pub const REMOTE_HOST_MAX: u32 = 4096;

/// The algorithms the tuner knows, by their index in the BPF program
/// (`CC_CUBIC` ...). Only those the kernel offers become candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Algorithm {
    Cubic = 0,
    Bbr = 1,
    Htcp = 2,
    Reno = 3,
}

/// Number of known algorithms (`NR_CC`).
pub const NR_CC: usize = 4;

impl Algorithm {
    pub const ALL: [Algorithm; NR_CC] = [Algorithm::Cubic, Algorithm::Bbr, Algorithm::Htcp, Algorithm::Reno];

    /// The kernel's name for it (`tcp_congestion_control` value).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Cubic => "cubic",
            Algorithm::Bbr => "bbr",
            Algorithm::Htcp => "htcp",
            Algorithm::Reno => "reno",
        }
    }

    pub fn from_index(i: u32) -> Option<Self> {
        Self::ALL.get(i as usize).copied()
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.name() == name)
    }

    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Bit mask of known algorithms listed in a
/// `net.ipv4.tcp_available_congestion_control` value.
pub fn candidate_mask(available: &str) -> u32 {
    available.split_whitespace().filter_map(Algorithm::from_name).fold(0, |m, a| m | a.bit())
}

/// The candidates in a mask, in index order.
pub fn candidates(mask: u32) -> Vec<Algorithm> {
    Algorithm::ALL.iter().copied().filter(|a| mask & a.bit() != 0).collect()
}

/// Loopback peers (127.0.0.0/8, its v4-mapped form, ::1) are skipped: no
/// path to tune (BPF `is_loopback`).
pub fn is_loopback(addr: std::net::Ipv6Addr) -> bool {
    match addr.to_ipv4_mapped() {
        Some(v4) => v4.is_loopback(),
        None => addr.is_loopback(),
    }
}

/// True when a connection's retransmissions exceed 1/64 of its segments.
pub fn is_lossy(total_retrans: u32, segs_out: u32) -> bool {
    total_retrans > (segs_out >> DROP_SHIFT)
}

/// Fold a closed connection into a destination's decaying loss sums
/// (BPF `on_close`): `sum -= sum >> shift; sum += count` for retransmits
/// and segments. Returns the new sums and whether the destination is now
/// lossy (its recent, segment-weighted loss rate above 1/64), i.e. whether
/// new connections to it start on bbr.
pub fn loss_update(sums: (u64, u64), total_retrans: u32, segs_out: u32, shift: u32) -> ((u64, u64), bool) {
    let retrans = sums.0 - (sums.0 >> shift) + u64::from(total_retrans);
    let segs = sums.1 - (sums.1 >> shift) + u64::from(segs_out);
    ((retrans, segs), retrans > (segs >> DROP_SHIFT))
}

/// Delivery rate in bytes/s of the last rate sample.
pub fn delivery_rate(rate_delivered: u32, mss_cache: u32, rate_interval_us: u32) -> u64 {
    if rate_interval_us == 0 {
        return 0;
    }
    u64::from(rate_delivered) * u64::from(mss_cache) * 1_000_000 / u64::from(rate_interval_us)
}

/// Cost of one connection (lower is better): relative distance of its min
/// RTT from the destination's best, plus relative distance of its delivery
/// rate from the destination's best, each scaled by [`RL_SCALE`].
pub fn cost(min_rtt: u64, rate: u64, host_min_rtt: u64, host_max_rate: u64) -> u64 {
    let mut c = 0;
    if host_min_rtt != 0 && min_rtt > host_min_rtt {
        c += (min_rtt - host_min_rtt) * RL_SCALE / host_min_rtt;
    }
    if host_max_rate != 0 && rate < host_max_rate {
        c += (host_max_rate - rate) * RL_SCALE / host_max_rate;
    }
    c
}

/// Move a moving average towards a sample by `1/2^shift` of the gap
/// (reference §3.12; BPF `ewma`).
pub fn ewma(value: u64, sample: u64, shift: u32) -> u64 {
    if sample > value { value + ((sample - value) >> shift) } else { value - ((value - sample) >> shift) }
}

/// What the BPF program learns per destination and algorithm
/// (`struct cc_metric`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metric {
    /// Learned cost, lower is better.
    pub metric_value: u64,
    /// Learned mean deviation of the samples from `metric_value`.
    pub metric_dev: u64,
    pub max_rate: u64,
    pub min_rtt: u32,
    pub metric_count: u32,
}

/// One destination (`struct remote_host`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Host {
    pub instances: u64,
    pub max_rate: u64,
    pub min_rtt: u32,
    pub lossy: bool,
    /// The cheapest sampled candidate when some other one is distinctly
    /// worse (BPF `host->best`, recomputed by [`learn`]).
    pub best: Option<Algorithm>,
    pub metrics: [Metric; NR_CC],
}

/// Why an algorithm was chosen; the numbers travel in events (`REASON_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    /// The connection's loss exceeded 1/64: switched to bbr.
    Loss = 1,
    /// A distinctly lower learned cost.
    Cost = 2,
    /// Bounded exploration of a candidate already sampled.
    Explore = 3,
    /// Bounded exploration of a candidate never sampled.
    Untried = 4,
    /// The destination is remembered as lossy: start on bbr.
    Remember = 5,
}

impl Reason {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Reason::Loss),
            2 => Some(Reason::Cost),
            3 => Some(Reason::Explore),
            4 => Some(Reason::Untried),
            5 => Some(Reason::Remember),
            _ => None,
        }
    }
}

/// Source of random numbers, standing in for `bpf_get_prandom_u32()`; the
/// call order matches the BPF program's.
pub trait Random {
    fn next_u32(&mut self) -> u32;
}

/// Is `worse`'s learned cost clearly above `better`'s: both learned from
/// at least [`MIN_SAMPLES`] connections, and the gap larger than
/// [`COST_MARGIN`] and than the sum of their mean deviations (BPF
/// `distinct`)?
pub fn distinct(host: &Host, worse: Algorithm, better: Algorithm) -> bool {
    let w = &host.metrics[worse as usize];
    let b = &host.metrics[better as usize];
    if w.metric_count < MIN_SAMPLES || b.metric_count < MIN_SAMPLES {
        return false;
    }
    let margin = (w.metric_dev + b.metric_dev).max(COST_MARGIN);
    w.metric_value > b.metric_value + margin
}

/// The sampled candidate with the lowest learned cost (first in index
/// order on ties), if some other candidate is distinctly worse (BPF
/// `best_candidate`).
pub fn best(host: &Host, mask: u32) -> Option<Algorithm> {
    let sampled = || candidates(mask).into_iter().filter(|a| host.metrics[*a as usize].metric_count >= MIN_SAMPLES);
    let mut best: Option<Algorithm> = None;
    for a in sampled() {
        if best.is_none_or(|b| host.metrics[a as usize].metric_value < host.metrics[b as usize].metric_value) {
            best = Some(a);
        }
    }
    let b = best?;
    candidates(mask).into_iter().any(|a| distinct(host, a, b)).then_some(b)
}

/// The candidate other than `skip` with the fewest samples, ties broken
/// uniformly at random (reservoir sampling: the k-th tie replaces the pick
/// with probability 1/k; BPF `least_sampled`).
pub fn least_sampled(host: &Host, mask: u32, skip: Option<Algorithm>, rng: &mut impl Random) -> Option<Algorithm> {
    let mut pick = None;
    let mut fewest = u32::MAX;
    let mut ties = 0u32;
    for alg in candidates(mask).into_iter().filter(|a| Some(*a) != skip) {
        let count = host.metrics[alg as usize].metric_count;
        if count < fewest {
            fewest = count;
            pick = Some(alg);
            ties = 1;
        } else if count == fewest {
            ties += 1;
            if rng.next_u32() % ties == 0 {
                pick = Some(alg);
            }
        }
    }
    pick
}

/// Does the `n`-th connection to a destination explore?
pub fn explores(n: u64) -> bool {
    n >= REMOTE_HOST_MIN_INSTANCES && (n - REMOTE_HOST_MIN_INSTANCES) % EXPLORE_EVERY == 0
}

/// The switch for a new connection to a known destination that runs `cur`
/// (`None`: an algorithm the tuner does not know), after the destination's
/// `instances` counter was incremented (BPF `on_established`). `None`:
/// leave the connection alone, which is the answer whenever nothing
/// distinguishes the candidates and the connection does not explore.
pub fn choose(host: &Host, mask: u32, cur: Option<Algorithm>, rng: &mut impl Random) -> Option<(Algorithm, Reason)> {
    let mut explore = explores(host.instances);
    let mut choice = cur;
    let mut reason = None;
    if host.lossy && mask & Algorithm::Bbr.bit() != 0 {
        choice = Some(Algorithm::Bbr);
        reason = Some(Reason::Remember);
        explore = false;
    } else if let (Some(b), Some(c)) = (host.best, cur) {
        if b != c && distinct(host, c, b) {
            choice = Some(b);
            reason = Some(Reason::Cost);
        }
    }
    if explore && candidates(mask).len() > 1 {
        if let Some(other) = least_sampled(host, mask, choice, rng) {
            reason =
                Some(if host.metrics[other as usize].metric_count == 0 { Reason::Untried } else { Reason::Explore });
            choice = Some(other);
        }
    }
    match (choice, reason) {
        (Some(alg), Some(reason)) if Some(alg) != cur => Some((alg, reason)),
        _ => None,
    }
}

/// Learn from a closed connection that ran `alg` throughout and has a rate
/// sample (BPF `on_close`): update the destination's bests, then the
/// algorithm's cost and deviation, then [`Host::best`]. Returns the
/// connection's cost.
pub fn learn(host: &mut Host, mask: u32, alg: Algorithm, min_rtt: u32, rate: u64, shift: u32) -> u64 {
    if host.min_rtt == 0 || min_rtt < host.min_rtt {
        host.min_rtt = min_rtt;
    }
    if rate > host.max_rate {
        host.max_rate = rate;
    }
    let c;
    {
        let m = &mut host.metrics[alg as usize];
        if m.min_rtt == 0 || min_rtt < m.min_rtt {
            m.min_rtt = min_rtt;
        }
        if rate > m.max_rate {
            m.max_rate = rate;
        }
        c = cost(u64::from(min_rtt), rate, u64::from(host.min_rtt), host.max_rate);
        if m.metric_count == 0 {
            m.metric_value = c;
        } else {
            let dev = c.abs_diff(m.metric_value);
            m.metric_dev = if m.metric_count == 1 { dev } else { ewma(m.metric_dev, dev, shift) };
            m.metric_value = ewma(m.metric_value, c, shift);
        }
        m.metric_count += 1;
    }
    host.best = best(host, mask);
    c
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Replays a fixed sequence of "random" numbers.
    struct Seq(Vec<u32>, usize);
    impl Random for Seq {
        fn next_u32(&mut self) -> u32 {
            let v = self.0.get(self.1).copied().unwrap_or(1);
            self.1 += 1;
            v
        }
    }

    /// Deterministic xorshift for statistical tests.
    struct XorShift(u32);
    impl Random for XorShift {
        fn next_u32(&mut self) -> u32 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.0 = x;
            x
        }
    }

    const HERE: &str = "reno bbr cubic";

    #[test]
    fn candidates_come_from_the_available_list() {
        let mask = candidate_mask(HERE);
        assert_eq!(candidates(mask), vec![Algorithm::Cubic, Algorithm::Bbr, Algorithm::Reno]);
        assert_eq!(candidate_mask("reno cubic dctcp vegas\n"), Algorithm::Cubic.bit() | Algorithm::Reno.bit());
        assert_eq!(candidate_mask(""), 0);
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
            assert_eq!(Algorithm::from_index(a as u32), Some(a));
        }
        assert_eq!(Algorithm::from_index(4), None);
    }

    #[test]
    fn loopback_peers_are_skipped() {
        for a in ["::ffff:127.0.0.1", "::ffff:127.1.2.3", "::1"] {
            assert!(is_loopback(a.parse().expect("test value")), "{a}");
        }
        for a in ["::ffff:10.0.0.1", "::ffff:128.0.0.1", "fd00::1", "::2", "::"] {
            assert!(!is_loopback(a.parse().expect("test value")), "{a}");
        }
    }

    #[test]
    fn loss_threshold_is_one_in_64() {
        assert!(!is_lossy(0, 0));
        assert!(!is_lossy(1, 64));
        assert!(is_lossy(2, 64));
        assert!(is_lossy(1, 63));
        // 3 % random loss is well above the threshold.
        assert!(is_lossy(30, 1000));
        assert!(!is_lossy(15, 1000));
    }

    #[test]
    fn destination_loss_rate_is_smoothed_over_connections() {
        // one lossy connection marks the destination
        let (mut sums, lossy) = loss_update((0, 0), 30, 1000, 2);
        assert!(lossy);
        // a few more at 3 % reach the steady state
        for _ in 0..6 {
            (sums, _) = loss_update(sums, 30, 1000, 2);
        }
        // a short clean connection (e.g. a control connection) does not clear it
        let (sums, lossy) = loss_update(sums, 0, 10, 2);
        assert!(lossy);
        // one lucky clean bulk connection does not either
        let (sums, lossy) = loss_update(sums, 0, 1000, 2);
        assert!(lossy, "{sums:?}");
        // a run of clean connections does
        let mut s = sums;
        let mut lossy = true;
        for _ in 0..8 {
            (s, lossy) = loss_update(s, 0, 1000, 2);
        }
        assert!(!lossy, "{s:?}");
        // a path with 3 % loss stays lossy despite noisy samples
        let mut s = (0, 0);
        for retrans in [40, 22, 35, 18, 30, 25, 41, 20] {
            let (n, l) = loss_update(s, retrans, 1000, 2);
            s = n;
            assert!(l, "{s:?}");
        }
        // a path under 1/64 never becomes lossy
        let mut s = (0, 0);
        for _ in 0..20 {
            let (n, l) = loss_update(s, 10, 1000, 2);
            s = n;
            assert!(!l);
        }
    }

    #[test]
    fn cost_is_relative_distance_from_the_bests() {
        assert_eq!(cost(100, 1000, 100, 1000), 0);
        // twice the best RTT: +1.0
        assert_eq!(cost(200, 1000, 100, 1000), RL_SCALE);
        // half the best rate: +0.5
        assert_eq!(cost(100, 500, 100, 1000), RL_SCALE / 2);
        assert_eq!(cost(150, 750, 100, 1000), RL_SCALE / 2 + RL_SCALE / 4);
        // nothing known yet
        assert_eq!(cost(100, 0, 0, 0), 0);
        assert_eq!(delivery_rate(10, 1448, 1000), 14_480_000);
        assert_eq!(delivery_rate(10, 1448, 0), 0);
    }

    #[test]
    fn cost_uses_this_connections_rate_not_the_algorithms_best() {
        let mask = candidate_mask(HERE);
        let mut h = Host::default();
        learn(&mut h, mask, Algorithm::Cubic, 100, 1000, 2);
        // A slow cubic connection must cost more even though cubic's best
        // rate is still the host's best.
        let c = learn(&mut h, mask, Algorithm::Cubic, 100, 250, 2);
        assert_eq!(c, RL_SCALE * 3 / 4);
        assert_eq!(h.metrics[0].max_rate, 1000);
    }

    #[test]
    fn ewma_moves_by_the_shift() {
        assert_eq!(ewma(1000, 2000, 2), 1250);
        assert_eq!(ewma(1000, 0, 2), 750);
        assert_eq!(ewma(1000, 1000, 2), 1000);
        assert_eq!(ewma(1000, 2000, 6), 1015);
        // 0 is a value like any other (a connection as good as the best).
        assert_eq!(ewma(0, 500, 2), 125);
        // Repeated samples converge to the sample.
        let mut v = 10_000;
        for _ in 0..100 {
            v = ewma(v, 100, 2);
        }
        assert!(v < 110, "{v}");
    }

    fn metric(value: u64, dev: u64, count: u32) -> Metric {
        Metric { metric_value: value, metric_dev: dev, metric_count: count, ..Metric::default() }
    }

    /// A destination past its first connections with these learned
    /// (cost, deviation, samples) for cubic, bbr and reno; `best` as
    /// learning would have left it.
    fn learned(n: u64, costs: [(u64, u64, u32); 3]) -> Host {
        let mut h = Host { instances: n, ..Host::default() };
        for (alg, (v, d, c)) in [Algorithm::Cubic, Algorithm::Bbr, Algorithm::Reno].into_iter().zip(costs) {
            h.metrics[alg as usize] = metric(v, d, c);
        }
        h.best = best(&h, candidate_mask(HERE));
        h
    }

    const CUBIC: Option<Algorithm> = Some(Algorithm::Cubic);

    #[test]
    fn nothing_but_loss_switches_before_min_instances() {
        let mask = candidate_mask(HERE);
        let mut rng = Seq(vec![], 0);
        for n in 1..REMOTE_HOST_MIN_INSTANCES {
            let h = Host { instances: n, ..Host::default() };
            assert_eq!(choose(&h, mask, CUBIC, &mut rng), None);
        }
        // The 4th connection is the first exploration: an untried candidate.
        let h = Host { instances: REMOTE_HOST_MIN_INSTANCES, ..Host::default() };
        assert_eq!(choose(&h, mask, CUBIC, &mut Seq(vec![1], 0)), Some((Algorithm::Bbr, Reason::Untried)));
        assert_eq!(choose(&h, mask, CUBIC, &mut Seq(vec![0], 0)), Some((Algorithm::Reno, Reason::Untried)));
    }

    #[test]
    fn lossy_destination_starts_on_bbr_even_early() {
        let mask = candidate_mask(HERE);
        let h = Host { instances: 2, lossy: true, ..Host::default() };
        assert_eq!(choose(&h, mask, CUBIC, &mut Seq(vec![], 0)), Some((Algorithm::Bbr, Reason::Remember)));
        // ...but only if bbr is available, and not if it runs bbr already.
        assert_eq!(choose(&h, candidate_mask("reno cubic"), CUBIC, &mut Seq(vec![], 0)), None);
        assert_eq!(choose(&h, mask, Some(Algorithm::Bbr), &mut Seq(vec![], 0)), None);
        // No exploration on a lossy path.
        let h = Host { instances: REMOTE_HOST_MIN_INSTANCES + EXPLORE_EVERY, lossy: true, ..Host::default() };
        assert_eq!(choose(&h, mask, CUBIC, &mut Seq(vec![0, 0], 0)), Some((Algorithm::Bbr, Reason::Remember)));
    }

    #[test]
    fn tied_or_unlearned_costs_switch_nothing() {
        let mask = candidate_mask(HERE);
        let mut rng = XorShift(9);
        // Nothing learned (e.g. connections that carry no data), equal
        // costs, and costs whose gap is within their deviations.
        for h in [
            Host { instances: 1000, ..Host::default() },
            learned(1000, [(500_000, 0, 50), (500_000, 0, 50), (500_000, 0, 50)]),
            learned(1000, [(900_000, 300_000, 50), (500_000, 200_000, 50), (600_000, 0, 9)]),
            learned(1000, [(600_000, 0, 50), (500_000, 0, 50), (550_000, 0, 50)]),
        ] {
            assert_eq!(h.best, None, "{h:?}");
            for n in 5..2000 {
                let h = Host { instances: n, ..h };
                if !explores(n) {
                    assert_eq!(choose(&h, mask, CUBIC, &mut rng), None, "{n} {h:?}");
                }
            }
        }
    }

    #[test]
    fn a_distinct_cost_gap_switches() {
        let mask = candidate_mask(HERE);
        let mut rng = Seq(vec![], 0);
        // bbr 0.5 below cubic, deviations 0.1 each: switch.
        let h = learned(10, [(900_000, 100_000, 20), (400_000, 100_000, 2), (950_000, 0, 5)]);
        assert_eq!(h.best, Some(Algorithm::Bbr));
        assert_eq!(choose(&h, mask, CUBIC, &mut rng), Some((Algorithm::Bbr, Reason::Cost)));
        // Nothing to do for a connection already on bbr.
        assert_eq!(choose(&h, mask, Some(Algorithm::Bbr), &mut rng), None);
        // An algorithm the tuner does not know is not compared.
        assert_eq!(choose(&h, mask, None, &mut rng), None);
        // One sample is not enough.
        let h = learned(10, [(900_000, 100_000, 20), (400_000, 0, 1), (950_000, 0, 5)]);
        assert_eq!((h.best, choose(&h, mask, CUBIC, &mut rng)), (None, None));
        // The gap must exceed the deviations...
        let h = learned(10, [(900_000, 300_000, 20), (400_000, 250_000, 5), (950_000, 0, 5)]);
        assert_eq!(choose(&h, mask, CUBIC, &mut rng), None);
        // ...and the margin.
        let h = learned(10, [(500_000, 0, 20), (400_000, 0, 5), (450_000, 0, 5)]);
        assert_eq!(choose(&h, mask, CUBIC, &mut rng), None);
        // A connection on reno (distinctly worse than bbr) is switched; one
        // on cubic, close enough to bbr, is not.
        let h = learned(10, [(450_000, 0, 20), (400_000, 0, 5), (950_000, 0, 5)]);
        assert_eq!(h.best, Some(Algorithm::Bbr));
        assert_eq!(choose(&h, mask, Some(Algorithm::Reno), &mut rng), Some((Algorithm::Bbr, Reason::Cost)));
        assert_eq!(choose(&h, mask, CUBIC, &mut rng), None);
    }

    #[test]
    fn exploration_is_one_connection_in_64() {
        let mask = candidate_mask(HERE);
        let mut rng = XorShift(42);
        let h = learned(0, [(500_000, 0, 50), (500_000, 0, 40), (500_000, 0, 30)]);
        let mut explored = Vec::new();
        for n in 1..=6400 {
            let h = Host { instances: n, ..h };
            if let Some((alg, reason)) = choose(&h, mask, CUBIC, &mut rng) {
                // The candidate with the fewest samples, other than cubic.
                assert_eq!((alg, reason), (Algorithm::Reno, Reason::Explore));
                explored.push(n);
            }
        }
        assert_eq!(explored.len(), 100);
        assert_eq!(explored[..3], [4, 68, 132]);
    }

    #[test]
    fn exploration_skips_what_the_connection_would_run() {
        let mask = candidate_mask(HERE);
        let n = REMOTE_HOST_MIN_INSTANCES + EXPLORE_EVERY;
        // bbr is distinctly best and would be chosen: explore among cubic
        // and reno, the one with fewer samples (cubic, frozen while bbr ran).
        let h = Host { instances: n, ..learned(n, [(900_000, 0, 3), (100_000, 0, 90), (950_000, 0, 5)]) };
        // From a cubic connection that explores cubic: it stays as it is.
        assert_eq!(choose(&h, mask, CUBIC, &mut Seq(vec![], 0)), None);
        assert_eq!(least_sampled(&h, mask, Some(Algorithm::Bbr), &mut Seq(vec![], 0)), Some(Algorithm::Cubic));
        // Exploring on reno from a reno connection: skip reno.
        assert_eq!(
            choose(&h, mask, Some(Algorithm::Reno), &mut Seq(vec![], 0)),
            Some((Algorithm::Cubic, Reason::Explore))
        );
        // A single candidate never explores.
        let h = Host { instances: n, ..Host::default() };
        assert_eq!(choose(&h, Algorithm::Cubic.bit(), CUBIC, &mut Seq(vec![0, 0], 0)), None);
    }

    /// Simulates connections to one destination whose namespace default is
    /// cubic; `sample(alg, rng)` gives a closed connection's (min RTT, rate).
    /// Returns the connections per algorithm and per reason over the last
    /// half, and the destination.
    fn simulate(
        n: u64,
        seed: u32,
        sample: impl Fn(Algorithm, &mut XorShift) -> (u32, u64),
    ) -> ([u32; NR_CC], [u32; 6], Host) {
        let mask = candidate_mask(HERE);
        let mut h = Host::default();
        let mut rng = XorShift(seed);
        let mut noise = XorShift(seed ^ 0x5555);
        let (mut algs, mut reasons) = ([0u32; NR_CC], [0u32; 6]);
        for i in 0..n {
            h.instances += 1;
            let choice = choose(&h, mask, CUBIC, &mut rng);
            let alg = choice.map_or(Algorithm::Cubic, |(a, _)| a);
            if i >= n / 2 {
                algs[alg as usize] += 1;
                reasons[choice.map_or(0, |(_, r)| r as usize)] += 1;
            }
            let (rtt, rate) = sample(alg, &mut noise);
            learn(&mut h, mask, alg, rtt, rate, 2);
        }
        (algs, reasons, h)
    }

    #[test]
    fn learning_converges_on_the_better_algorithm() {
        // bbr gets 2x cubic's rate at the same RTT, reno half of cubic's,
        // with 10 % noise: after the explorations, bbr runs.
        let (algs, reasons, h) = simulate(2000, 7, |alg, rng| {
            let jitter = u64::from(rng.next_u32() % 100);
            match alg {
                Algorithm::Bbr => (1000 + jitter as u32, 20_000_000 - jitter * 20_000),
                Algorithm::Cubic => (1100 + jitter as u32, 10_000_000 - jitter * 10_000),
                _ => (1200 + jitter as u32, 5_000_000 - jitter * 5000),
            }
        });
        assert_eq!(h.best, Some(Algorithm::Bbr), "{h:?}");
        assert!(algs[Algorithm::Bbr as usize] >= 980, "{algs:?}");
        assert!(reasons[Reason::Cost as usize] >= 980, "{reasons:?}");
        assert!(h.metrics[Algorithm::Bbr as usize].metric_value < h.metrics[Algorithm::Cubic as usize].metric_value);
        assert!(h.metrics[Algorithm::Cubic as usize].metric_value < h.metrics[Algorithm::Reno as usize].metric_value);
    }

    #[test]
    fn noisy_ties_rarely_switch() {
        // The same noisy path whatever the algorithm (a loss-free veth):
        // min RTT 20-60 us, rate 1-3 GB/s. Apart from the 1-in-64
        // explorations, hardly any connection may be switched.
        for seed in [1, 2, 3, 4, 5] {
            let (algs, reasons, _) = simulate(20_000, seed, |_, rng| {
                (20 + rng.next_u32() % 41, 1_000_000_000 + u64::from(rng.next_u32() % 2_000_000_000))
            });
            let switched: u32 = algs.iter().sum::<u32>() - algs[Algorithm::Cubic as usize];
            let explored = reasons[Reason::Explore as usize] + reasons[Reason::Untried as usize];
            assert!(explored <= 10_000 / 64 + 1, "{reasons:?}");
            assert!(switched < 10_000 / 50, "seed {seed}: {algs:?} {reasons:?}");
        }
    }
}
