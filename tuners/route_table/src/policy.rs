//! The route_table tuner's decisions as pure functions: whether
//! net.ipv6.route.max_size limits anything on this kernel, what
//! `/proc/net/rt6_stats` says, and whether (and how far) to raise max_size.

use bpftune_sdk::LearningRate;

/// The most max_size is ever raised to: 2^18 dst entries, 64 MiB of
/// `ip6_dst_cache` at 256 bytes each (64 times the old default of 4096).
/// A cache that outgrows this is more likely a flood of one-off routes
/// (CVE-2023-52340: a raw socket sending in a loop) than a working set; the
/// tuner stops there and says so, and an administrator may go higher.
pub const MAX_SIZE_CEILING: i64 = 1 << 18;

/// How far the kernel's folded percpu dst count may lag the exact one per
/// CPU (`DST_PERCPU_COUNTER_BATCH`).
pub const DST_PERCPU_COUNTER_BATCH: i64 = 32;

/// First release where max_size limits nothing (upstream af6d10345ca7).
pub const UNLIMITED_SINCE: (u32, u32, u32) = (6, 3, 0);

/// Whether max_size bounds the IPv6 destination cache on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// dst_alloc() fails past max_size: the tuner is needed.
    Limits(Evidence),
    /// max_size limits nothing: nothing to tune.
    Unlimited(Evidence),
}

/// How the verdict was reached (said in `-S`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Kernel BTF: the return type of `struct dst_ops`'s `gc` member (int
    /// while gc can refuse an allocation, void since the limit went away,
    /// also in stable kernels that took the fix).
    Btf,
    /// No usable BTF: the release number alone.
    Release,
    /// Told to treat max_size as a limit (BPFTUNE_PRETEND_MISSING).
    Pretend,
}

/// Decide from what the kernel shows: `gc_returns_void` from BTF (None if
/// BTF could not tell), else the release, else assume it limits (the
/// tuner then only acts if a namespace really nears max_size).
pub fn verdict(pretend: bool, gc_returns_void: Option<bool>, release: Option<(u32, u32, u32)>) -> Verdict {
    if pretend {
        return Verdict::Limits(Evidence::Pretend);
    }
    match (gc_returns_void, release) {
        (Some(true), _) => Verdict::Unlimited(Evidence::Btf),
        (Some(false), _) => Verdict::Limits(Evidence::Btf),
        (None, Some(r)) if r >= UNLIMITED_SINCE => Verdict::Unlimited(Evidence::Release),
        (None, _) => Verdict::Limits(Evidence::Release),
    }
}

/// The counters of `/proc/net/rt6_stats` (seven hex fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rt6Stats {
    /// Field 5: cached routes (exceptions: PMTU, redirects).
    pub cache_entries: i64,
    /// Field 6: dst entries, the exact count max_size bounds.
    pub dst_entries: i64,
}

/// Parse `/proc/net/rt6_stats`.
pub fn parse_rt6_stats(text: &str) -> Option<Rt6Stats> {
    let fields: Vec<i64> =
        text.split_whitespace().map(|f| i64::from_str_radix(f, 16).ok()).collect::<Option<Vec<_>>>()?;
    if fields.len() < 6 {
        return None;
    }
    Some(Rt6Stats { cache_entries: fields[4], dst_entries: fields[5] })
}

/// What to do about one namespace's max_size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Raise max_size to this.
    Grow(i64),
    /// Leave it.
    Hold(Hold),
}

/// Why max_size is left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The exact count is not within one step of max_size.
    NotNearlyFull,
    /// max_size is at (or an administrator set it above) the ceiling.
    AtCeiling,
}

/// Raise `max_size` when `entries` (the exact dst count) is within one
/// learning-rate step of it: to one step above the larger of the two (a
/// cache already past the limit gets room for what it holds), never above
/// [`MAX_SIZE_CEILING`], never down.
pub fn decide(entries: i64, max_size: i64, lr: LearningRate) -> Decision {
    if !lr.nearly_full(entries, max_size) {
        return Decision::Hold(Hold::NotNearlyFull);
    }
    if max_size >= MAX_SIZE_CEILING {
        return Decision::Hold(Hold::AtCeiling);
    }
    let want = lr.grow(max_size.max(entries)).max(max_size + 1);
    Decision::Grow(want.min(MAX_SIZE_CEILING))
}

/// The slack BPF adds to the folded count for `cpus` CPUs.
pub fn count_slack(cpus: usize) -> i64 {
    DST_PERCPU_COUNTER_BATCH.saturating_mul(i64::try_from(cpus.max(1)).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(false, Some(true), Some((5, 10, 0))), Verdict::Unlimited(Evidence::Btf));
        assert_eq!(verdict(false, Some(false), Some((6, 18, 0))), Verdict::Limits(Evidence::Btf));
        assert_eq!(verdict(false, None, Some((6, 3, 0))), Verdict::Unlimited(Evidence::Release));
        assert_eq!(verdict(false, None, Some((6, 1, 0))), Verdict::Limits(Evidence::Release));
        assert_eq!(verdict(false, None, None), Verdict::Limits(Evidence::Release));
        assert_eq!(verdict(true, Some(true), Some((6, 18, 0))), Verdict::Limits(Evidence::Pretend));
    }

    #[test]
    fn rt6_stats() {
        // A capture from a namespace holding 0x1f4 PMTU exceptions.
        let s = parse_rt6_stats("000b 0007 000c 0008 01f4 01f9 0000\n").expect("parse");
        assert_eq!(s, Rt6Stats { cache_entries: 500, dst_entries: 505 });
        // Wider than four digits (the kernel prints %04x).
        assert_eq!(parse_rt6_stats("0 0 0 0 0 12345 0").map(|s| s.dst_entries), Some(0x12345));
        assert_eq!(parse_rt6_stats("0009 0006 000a"), None);
        assert_eq!(parse_rt6_stats("zz 0 0 0 0 0 0"), None);
    }

    #[test]
    fn grows_within_one_step_only_and_stops_at_the_ceiling() {
        let lr = LearningRate::default();
        assert_eq!(decide(100, 256, lr), Decision::Hold(Hold::NotNearlyFull));
        assert_eq!(decide(191, 256, lr), Decision::Hold(Hold::NotNearlyFull));
        assert_eq!(decide(192, 256, lr), Decision::Grow(320));
        // Already past the limit (the count can exceed it briefly).
        assert_eq!(decide(400, 256, lr), Decision::Grow(500));
        assert_eq!(decide(4000, 4096, lr), Decision::Grow(5120));
        assert_eq!(decide(MAX_SIZE_CEILING - 10, MAX_SIZE_CEILING - 20, lr), Decision::Grow(MAX_SIZE_CEILING));
        assert_eq!(decide(MAX_SIZE_CEILING, MAX_SIZE_CEILING, lr), Decision::Hold(Hold::AtCeiling));
        assert_eq!(decide(i64::MAX, i64::from(i32::MAX), lr), Decision::Hold(Hold::AtCeiling));
        // The slowest learning rate still moves by at least one.
        assert_eq!(decide(10, 10, LearningRate::new(0)), Decision::Grow(11));
    }

    #[test]
    fn slack() {
        assert_eq!(count_slack(2), 64);
        assert_eq!(count_slack(0), 32);
    }
}
