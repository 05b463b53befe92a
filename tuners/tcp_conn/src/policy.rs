//! The congestion-control policy of `bpf/tcp_conn.bpf.c`, mirrored in plain
//! Rust so it can be unit-tested without root: which algorithms are
//! candidates, when a connection counts as lossy, how a closed connection's
//! cost is computed and learned, and how the next connection's algorithm is
//! chosen (greedy with random tie-breaking, epsilon-greedy exploration).
//!
//! Keep the two in step: every constant and branch here has a twin in the
//! BPF program, named the same.

/// Connections to a destination before learned costs are used
/// (REMOTE_HOST_MIN_INSTANCES).
pub const REMOTE_HOST_MIN_INSTANCES: u64 = 4;
/// Loss threshold: retransmissions above `segs_out >> DROP_SHIFT` (1/64).
pub const DROP_SHIFT: u32 = 6;
/// One connection in `RL_EPSILON` explores a random candidate (5 %).
pub const RL_EPSILON: u32 = 20;
/// Fixed-point scale of the two cost terms.
pub const RL_SCALE: u64 = 1_000_000;
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

/// Move `value` towards `gain` by `1/2^shift` of the gap (reference §3.12);
/// 0 means "nothing learned" and takes the gain as is.
pub fn rl_update(value: u64, gain: u64, shift: u32) -> u64 {
    if value == 0 {
        gain
    } else if gain > value {
        value + ((gain - value) >> shift)
    } else if gain < value {
        value - ((value - gain) >> shift)
    } else {
        value
    }
}

/// What the BPF program learns per destination and algorithm
/// (`struct cc_metric`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metric {
    pub metric_value: u64,
    pub max_rate: u64,
    pub min_rtt: u32,
    pub metric_count: u32,
    pub greedy_count: u32,
}

/// One destination (`struct remote_host`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Host {
    pub instances: u64,
    pub max_rate: u64,
    pub min_rtt: u32,
    pub lossy: bool,
    pub metrics: [Metric; NR_CC],
}

/// Why an algorithm was chosen; the numbers travel in events (`REASON_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    /// The connection's loss exceeded 1/64: switched to bbr.
    Loss = 1,
    /// Lowest learned cost.
    Cost = 2,
    /// Epsilon-greedy exploration.
    Explore = 3,
    /// A candidate never tried for this destination.
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

/// Learned cost used for selection: untried counts as 0 so it is explored.
pub fn learned_cost(host: &Host, alg: Algorithm) -> u64 {
    let m = &host.metrics[alg as usize];
    if m.metric_count == 0 { 0 } else { m.metric_value }
}

/// The candidate with the lowest learned cost, ties broken uniformly at
/// random (reservoir sampling: the k-th tie replaces the pick with
/// probability 1/k); also returns the number of candidates.
pub fn rl_greedy(host: &Host, mask: u32, rng: &mut impl Random) -> (Option<Algorithm>, u32) {
    let mut best = None;
    let mut best_cost = u64::MAX;
    let mut ties = 0u32;
    let mut n = 0u32;
    for alg in candidates(mask) {
        n += 1;
        let c = learned_cost(host, alg);
        if c < best_cost {
            best_cost = c;
            best = Some(alg);
            ties = 1;
        } else if c == best_cost {
            ties += 1;
            if rng.next_u32() % ties == 0 {
                best = Some(alg);
            }
        }
    }
    (best, n)
}

/// The k-th candidate (0-based) in index order.
pub fn nth_candidate(mask: u32, k: u32) -> Option<Algorithm> {
    candidates(mask).get(k as usize).copied()
}

/// True when every candidate has a learned cost.
pub fn all_tried(host: &Host, mask: u32) -> bool {
    candidates(mask).iter().all(|a| host.metrics[*a as usize].metric_count != 0)
}

/// The choice for a new connection to a known destination, after its
/// `instances` counter was incremented (BPF `on_established`). `None`: leave
/// the namespace default alone.
pub fn choose(host: &Host, mask: u32, rng: &mut impl Random) -> Option<(Algorithm, Reason)> {
    if host.lossy && mask & Algorithm::Bbr.bit() != 0 {
        return Some((Algorithm::Bbr, Reason::Remember));
    }
    if host.instances < REMOTE_HOST_MIN_INSTANCES {
        return None;
    }
    let (greedy, ncand) = rl_greedy(host, mask, rng);
    let greedy = greedy?;
    let mut choice = greedy;
    let mut reason = if host.metrics[greedy as usize].metric_count == 0 { Reason::Untried } else { Reason::Cost };
    if ncand > 1 && rng.next_u32() % RL_EPSILON == 0 {
        if let Some(alg) = nth_candidate(mask, rng.next_u32() % ncand) {
            choice = alg;
            if alg != greedy {
                reason = Reason::Explore;
            }
        }
    }
    Some((choice, reason))
}

/// Learn from a closed connection that ran `alg` throughout (BPF
/// `on_close`): update the destination's bests, then the algorithm's
/// cost. Returns the connection's cost.
pub fn learn(host: &mut Host, mask: u32, alg: Algorithm, min_rtt: u32, rate: u64, shift: u32) -> u64 {
    if host.min_rtt == 0 || min_rtt < host.min_rtt {
        host.min_rtt = min_rtt;
    }
    if rate > host.max_rate {
        host.max_rate = rate;
    }
    let i = alg as usize;
    {
        let m = &mut host.metrics[i];
        if m.min_rtt == 0 || min_rtt < m.min_rtt {
            m.min_rtt = min_rtt;
        }
        if rate > m.max_rate {
            m.max_rate = rate;
        }
    }
    let c = cost(u64::from(min_rtt), rate, u64::from(host.min_rtt), host.max_rate);
    let own = learned_cost(host, alg);
    let greedy = candidates(mask).into_iter().filter(|a| *a != alg).all(|a| learned_cost(host, a) >= own);
    let m = &mut host.metrics[i];
    m.metric_value = if m.metric_count == 0 { c } else { rl_update(m.metric_value, c, shift) };
    m.metric_count += 1;
    if greedy {
        m.greedy_count += 1;
    }
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
    fn rl_update_moves_by_the_shift() {
        assert_eq!(rl_update(0, 500, 2), 500);
        assert_eq!(rl_update(1000, 2000, 2), 1250);
        assert_eq!(rl_update(1000, 0, 2), 750);
        assert_eq!(rl_update(1000, 1000, 2), 1000);
        assert_eq!(rl_update(1000, 2000, 6), 1015);
        // Repeated samples converge to the gain.
        let mut v = 10_000;
        for _ in 0..100 {
            v = rl_update(v, 100, 2);
        }
        assert!(v < 110, "{v}");
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
    fn no_choice_before_min_instances() {
        let mask = candidate_mask(HERE);
        let mut rng = Seq(vec![], 0);
        for n in 1..REMOTE_HOST_MIN_INSTANCES {
            let h = Host { instances: n, ..Host::default() };
            assert_eq!(choose(&h, mask, &mut rng), None);
        }
        let h = Host { instances: REMOTE_HOST_MIN_INSTANCES, ..Host::default() };
        assert!(choose(&h, mask, &mut rng).is_some());
    }

    #[test]
    fn lossy_destination_starts_on_bbr_even_early() {
        let mask = candidate_mask(HERE);
        let h = Host { instances: 2, lossy: true, ..Host::default() };
        assert_eq!(choose(&h, mask, &mut Seq(vec![], 0)), Some((Algorithm::Bbr, Reason::Remember)));
        // ...but only if bbr is available.
        assert_eq!(choose(&h, candidate_mask("reno cubic"), &mut Seq(vec![], 0)), None);
    }

    #[test]
    fn greedy_picks_lowest_learned_cost() {
        let mask = candidate_mask(HERE);
        let mut h = Host { instances: 10, ..Host::default() };
        for (alg, cost) in [(Algorithm::Cubic, 300), (Algorithm::Bbr, 100), (Algorithm::Reno, 200)] {
            h.metrics[alg as usize] = Metric { metric_value: cost, metric_count: 3, ..Metric::default() };
        }
        // rng 1: no exploration (1 % 20 != 0)
        assert_eq!(choose(&h, mask, &mut Seq(vec![1], 0)), Some((Algorithm::Bbr, Reason::Cost)));
        // htcp has no learned cost but is not a candidate here
        assert_eq!(rl_greedy(&h, mask, &mut Seq(vec![], 0)), (Some(Algorithm::Bbr), 3));
    }

    #[test]
    fn untried_candidates_are_tried_first() {
        let mask = candidate_mask(HERE);
        let mut h = Host { instances: 4, ..Host::default() };
        h.metrics[Algorithm::Cubic as usize] = Metric { metric_value: 5, metric_count: 1, ..Metric::default() };
        // bbr and reno tie at 0 (untried); the tie-break draw decides.
        // Reno is the 2nd tie: draw % 2 == 0 takes it.
        assert_eq!(choose(&h, mask, &mut Seq(vec![0, 1], 0)), Some((Algorithm::Reno, Reason::Untried)));
        assert_eq!(choose(&h, mask, &mut Seq(vec![1, 1], 0)), Some((Algorithm::Bbr, Reason::Untried)));
    }

    #[test]
    fn ties_are_broken_uniformly() {
        let mask = candidate_mask(HERE);
        let h = Host { instances: 4, ..Host::default() };
        let mut rng = XorShift(0x1234_5678);
        let mut counts = [0u32; NR_CC];
        let n = 30_000;
        for _ in 0..n {
            let (alg, _) = rl_greedy(&h, mask, &mut rng);
            counts[alg.expect("a candidate") as usize] += 1;
        }
        for a in candidates(mask) {
            let share = f64::from(counts[a as usize]) / f64::from(n);
            assert!((share - 1.0 / 3.0).abs() < 0.02, "{a:?}: {share}");
        }
        assert_eq!(counts[Algorithm::Htcp as usize], 0);
    }

    #[test]
    fn exploration_is_about_five_percent() {
        let mask = candidate_mask(HERE);
        let mut h = Host { instances: 100, ..Host::default() };
        for (alg, cost) in [(Algorithm::Cubic, 300), (Algorithm::Bbr, 100), (Algorithm::Reno, 200)] {
            h.metrics[alg as usize] = Metric { metric_value: cost, metric_count: 3, ..Metric::default() };
        }
        let mut rng = XorShift(42);
        let n = 40_000;
        let mut explored = 0;
        let mut not_greedy = 0;
        for _ in 0..n {
            let (alg, reason) = choose(&h, mask, &mut rng).expect("a choice");
            if reason == Reason::Explore {
                explored += 1;
                assert_ne!(alg, Algorithm::Bbr);
            }
            if alg != Algorithm::Bbr {
                not_greedy += 1;
            }
        }
        assert_eq!(explored, not_greedy);
        // 1/20 explore, 2/3 of those land on another candidate: ~3.3 %.
        let share = f64::from(explored) / f64::from(n);
        assert!((share - 0.05 * 2.0 / 3.0).abs() < 0.006, "{share}");
    }

    #[test]
    fn exploration_draws_match_the_bpf_call_order() {
        let mask = candidate_mask(HERE);
        let mut h = Host { instances: 9, ..Host::default() };
        for a in candidates(mask) {
            h.metrics[a as usize] = Metric { metric_value: 100 + a as u64, metric_count: 1, ..Metric::default() };
        }
        // greedy = cubic (no ties, no draws); draw 0 explores; draw 2 picks
        // the third candidate (reno).
        assert_eq!(choose(&h, mask, &mut Seq(vec![0, 2], 0)), Some((Algorithm::Reno, Reason::Explore)));
        // exploration that lands on the greedy choice keeps its reason
        assert_eq!(choose(&h, mask, &mut Seq(vec![0, 0], 0)), Some((Algorithm::Cubic, Reason::Cost)));
        // a single candidate never explores
        assert_eq!(choose(&h, Algorithm::Cubic.bit(), &mut Seq(vec![0, 0], 0)), Some((Algorithm::Cubic, Reason::Cost)));
    }

    #[test]
    fn learning_converges_on_the_better_algorithm() {
        // Synthetic destination: bbr gets 2x cubic's rate at the same RTT,
        // reno half of cubic's; after enough connections greedy picks bbr.
        let mask = candidate_mask(HERE);
        let mut h = Host::default();
        let mut rng = XorShift(7);
        let sample = |alg: Algorithm| match alg {
            Algorithm::Bbr => (1000, 20_000_000),
            Algorithm::Cubic => (1100, 10_000_000),
            _ => (1200, 5_000_000),
        };
        let mut picks = [0u32; NR_CC];
        for _ in 0..200 {
            h.instances += 1;
            let alg = choose(&h, mask, &mut rng).map_or(Algorithm::Cubic, |(a, _)| a);
            if h.instances > 100 {
                picks[alg as usize] += 1;
            }
            let (rtt, rate) = sample(alg);
            learn(&mut h, mask, alg, rtt, rate, 2);
        }
        assert!(all_tried(&h, mask));
        assert!(learned_cost(&h, Algorithm::Bbr) < learned_cost(&h, Algorithm::Cubic));
        assert!(learned_cost(&h, Algorithm::Cubic) < learned_cost(&h, Algorithm::Reno));
        assert!(picks[Algorithm::Bbr as usize] >= 90, "{picks:?}");
        assert_eq!(h.min_rtt, 1000);
        assert_eq!(h.max_rate, 20_000_000);
        assert!(h.metrics[Algorithm::Bbr as usize].greedy_count > 0);
    }

    #[test]
    fn greedy_flag_records_whether_the_choice_was_cheapest() {
        let mask = candidate_mask(HERE);
        let mut h = Host::default();
        h.metrics[Algorithm::Bbr as usize] = Metric { metric_value: 10, metric_count: 1, ..Metric::default() };
        h.metrics[Algorithm::Cubic as usize] = Metric { metric_value: 500, metric_count: 1, ..Metric::default() };
        h.metrics[Algorithm::Reno as usize] = Metric { metric_value: 600, metric_count: 1, ..Metric::default() };
        learn(&mut h, mask, Algorithm::Cubic, 100, 100, 2);
        assert_eq!(h.metrics[Algorithm::Cubic as usize].greedy_count, 0);
        learn(&mut h, mask, Algorithm::Bbr, 100, 100, 2);
        assert_eq!(h.metrics[Algorithm::Bbr as usize].greedy_count, 1);
    }
}
