//! The tcp_buffer tuner's decision rules as pure functions of their inputs,
//! so every rule is unit-tested without root, BPF or a kernel: buffer
//! growth and its caps, the latency guard, TCP memory bounds, low-memory
//! shrinking and the SYN backlog / syncookies choices.

use bpftune_sdk::LearningRate;
use bpftune_sdk::corr::{CORR_MIN_SAMPLES, CORR_THRESHOLD};

/// Largest value a buffer sysctl can hold (INT_MAX).
pub const TCP_BUFFER_MAX: i64 = i32::MAX as i64;
/// The SYN backlog is never shrunk below this.
pub const MIN_SYN_BACKLOG: i64 = 128;
/// Failed syncookie validations (with none succeeding) that make syncookies
/// count as ineffective.
pub const BAD_SYNCOOKIES: u64 = 1024;
/// Memory assumed per pending connection request when bounding the SYN
/// backlog by memory (a request sock plus its share of overhead, generous).
pub const SYN_REQUEST_BYTES: i64 = 512;

use bpftune_sdk::protomem::{MemCaps, raise_capped, raise_limits};
pub use bpftune_sdk::protomem::{MemState, mem_state};

/// Bounds derived from the machine's free buffer memory (as the original:
/// `tcp_mem` max ≤ 25 % of free buffer pages, pressure ≤ 1/8, min ≤ 1/16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemBounds {
    /// Sum over zones of managed − high pages (see `meminfo`).
    pub free_pages: i64,
    pub page_size: i64,
}

impl MemBounds {
    fn caps(&self) -> MemCaps {
        MemCaps { free_pages: self.free_pages }
    }
    pub fn mem_min_cap(&self) -> i64 {
        self.caps().min_cap()
    }
    pub fn mem_pressure_cap(&self) -> i64 {
        self.caps().pressure_cap()
    }
    pub fn mem_max_cap(&self) -> i64 {
        self.caps().max_cap()
    }
    /// A socket buffer max (bytes) beyond all TCP memory is pointless.
    pub fn buffer_cap(&self) -> i64 {
        self.mem_max_cap().saturating_mul(self.page_size).clamp(1, TCP_BUFFER_MAX)
    }
    /// Pending requests the TCP memory bound can hold.
    pub fn syn_backlog_cap(&self) -> i64 {
        (self.mem_max_cap().saturating_mul(self.page_size) / SYN_REQUEST_BYTES).clamp(MIN_SYN_BACKLOG, TCP_BUFFER_MAX)
    }
}

/// New `tcp_mem` for a memory state, or `None` if nothing should change.
///
/// Pressure raises all three values (each within its bound); exhaustion
/// raises only the hard limit. Values are never lowered here (the original
/// could lower `tcp_mem[2]` through its `min()`), and the raised values
/// keep min ≤ pressure ≤ max.
pub fn tcp_mem_next(state: MemState, old: [i64; 3], bounds: MemBounds, lr: LearningRate) -> Option<[i64; 3]> {
    match state {
        MemState::Normal => None,
        MemState::Pressure => raise_limits(old, bounds.caps(), lr, [true; 3]),
        MemState::Exhaustion => raise_limits(old, bounds.caps(), lr, [false, false, true]),
    }
}

/// Is a socket limited by its buffer? The rule the BPF programs apply
/// (`tcp_rcv_space_adjust` for receive, `tcp_probe` for send buffers):
/// the buffer is within one step of the namespace maximum and the
/// application did not fix its size with `SO_RCVBUF`/`SO_SNDBUF`.
pub fn buffer_limited(buf: i64, user_locked: bool, ns_max: i64, lr: LearningRate) -> bool {
    !user_locked && ns_max > 0 && lr.nearly_full(buf, ns_max)
}

/// Everything [`decide_buffer`] looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BufferInput {
    /// Current `tcp_rmem`/`tcp_wmem` (min default max) of the namespace.
    pub old: [i64; 3],
    pub mem: MemState,
    /// Correlation of buffer max with RTT in this namespace, and its samples.
    pub corr: f64,
    pub corr_samples: u64,
    /// Max we last shrank to because of latency (hold there while latency
    /// still follows buffer size).
    pub latency_hold: Option<i64>,
    /// Highest allowed max (bytes).
    pub cap: i64,
}

/// Why a buffer maximum stays as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    LowMemory,
    AtCap,
    /// Latency follows buffer size and we already stepped back.
    Latency,
    /// A latency step back would go to or below the default.
    AtDefault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferDecision {
    Grow([i64; 3]),
    ShrinkForLatency([i64; 3]),
    Hold(Hold),
}

fn correlated(corr: f64, samples: u64) -> bool {
    samples >= CORR_MIN_SAMPLES && corr > CORR_THRESHOLD
}

/// What to do when a socket reports its buffer at the namespace maximum.
pub fn decide_buffer(input: BufferInput, lr: LearningRate) -> BufferDecision {
    let [min, default, max] = input.old;
    if input.mem.is_low() {
        return BufferDecision::Hold(Hold::LowMemory);
    }
    if correlated(input.corr, input.corr_samples) {
        if input.latency_hold.is_some_and(|h| max <= h) {
            return BufferDecision::Hold(Hold::Latency);
        }
        let new = lr.shrink(max);
        if new <= default {
            return BufferDecision::Hold(Hold::AtDefault);
        }
        return BufferDecision::ShrinkForLatency([min, default, new]);
    }
    let new = raise_capped(max, input.cap.min(TCP_BUFFER_MAX), lr);
    if new <= max {
        return BufferDecision::Hold(Hold::AtCap);
    }
    BufferDecision::Grow([min, default, new])
}

/// One step back of a buffer max while memory is low, never below `floor`
/// (the max before this tuner raised it) nor below the default value.
pub fn shrink_buffer_lowmem(current: [i64; 3], floor: i64, lr: LearningRate) -> Option<[i64; 3]> {
    let [min, default, max] = current;
    let new = lr.shrink(max).max(floor).max(default);
    (new < max).then_some([min, default, new])
}

/// Everything [`decide_syn_flood`] looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynInput {
    /// Current `tcp_max_syn_backlog`.
    pub backlog: i64,
    pub syncookies: i64,
    pub mem: MemState,
    /// Correlation of SYN-flood observations with established passive opens.
    pub corr: f64,
    pub corr_samples: u64,
    /// `SyncookiesFailed` and `SyncookiesRecv` of the namespace, if read.
    pub cookies_failed: Option<u64>,
    pub cookies_recv: Option<u64>,
    pub cap: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynDecision {
    DisableSyncookies {
        failed: u64,
    },
    EnableSyncookies,
    Grow(i64),
    Shrink(i64),
    /// Syncookies are on and working: the SYN backlog limit does not apply.
    SyncookiesActive,
    Nothing,
}

/// What to do about a SYN flood in one namespace.
pub fn decide_syn_flood(input: SynInput, lr: LearningRate) -> SynDecision {
    if input.syncookies > 0 {
        return match (input.cookies_failed, input.cookies_recv) {
            (Some(failed), Some(0)) if failed >= BAD_SYNCOOKIES => SynDecision::DisableSyncookies { failed },
            _ => SynDecision::SyncookiesActive,
        };
    }
    if input.mem.is_low() {
        return SynDecision::EnableSyncookies;
    }
    if input.corr_samples >= CORR_MIN_SAMPLES && input.corr < CORR_THRESHOLD {
        let new = lr.shrink(input.backlog).max(MIN_SYN_BACKLOG);
        return if new < input.backlog { SynDecision::Shrink(new) } else { SynDecision::Nothing };
    }
    let new = raise_capped(input.backlog, input.cap.min(TCP_BUFFER_MAX), lr);
    if new > input.backlog { SynDecision::Grow(new) } else { SynDecision::Nothing }
}

/// The SYN backlog while memory is low: one step down, floor 128.
pub fn syn_backlog_lowmem(backlog: i64, lr: LearningRate) -> Option<i64> {
    let new = lr.shrink(backlog).max(MIN_SYN_BACKLOG);
    (new < backlog).then_some(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lr() -> LearningRate {
        LearningRate::default()
    }
    const BOUNDS: MemBounds = MemBounds { free_pages: 4_000_000, page_size: 4096 };

    fn input(old: [i64; 3]) -> BufferInput {
        BufferInput {
            old,
            mem: MemState::Normal,
            corr: 0.0,
            corr_samples: 0,
            latency_hold: None,
            cap: BOUNDS.buffer_cap(),
        }
    }

    #[test]
    fn growth_is_one_step_of_max_only() {
        assert_eq!(decide_buffer(input([4096, 131072, 131072]), lr()), BufferDecision::Grow([4096, 131072, 163840]));
        let slow = LearningRate::new(0);
        assert_eq!(decide_buffer(input([4096, 131072, 6400]), slow), BufferDecision::Grow([4096, 131072, 6500]));
    }

    #[test]
    fn growth_is_capped_at_int_max_and_memory() {
        let near = TCP_BUFFER_MAX - 10;
        assert_eq!(
            decide_buffer(input([4096, 131072, near]), lr()),
            BufferDecision::Grow([4096, 131072, TCP_BUFFER_MAX])
        );
        assert_eq!(decide_buffer(input([4096, 131072, TCP_BUFFER_MAX]), lr()), BufferDecision::Hold(Hold::AtCap));
        let small = MemBounds { free_pages: 400, page_size: 4096 };
        let mut i = input([4096, 131072, 400_000]);
        i.cap = small.buffer_cap();
        assert_eq!(small.buffer_cap(), 409_600);
        assert_eq!(decide_buffer(i, lr()), BufferDecision::Grow([4096, 131072, 409_600]));
        i.old[2] = 409_600;
        assert_eq!(decide_buffer(i, lr()), BufferDecision::Hold(Hold::AtCap));
        // An administrator's larger value is never lowered by "growth".
        i.old[2] = 900_000;
        assert_eq!(decide_buffer(i, lr()), BufferDecision::Hold(Hold::AtCap));
    }

    #[test]
    fn low_memory_stops_growth() {
        let mut i = input([4096, 131072, 131072]);
        i.mem = MemState::Pressure;
        assert_eq!(decide_buffer(i, lr()), BufferDecision::Hold(Hold::LowMemory));
        i.mem = MemState::Exhaustion;
        assert_eq!(decide_buffer(i, lr()), BufferDecision::Hold(Hold::LowMemory));
    }

    #[test]
    fn locked_or_roomy_buffers_are_not_limited() {
        assert!(buffer_limited(131072, false, 131072, lr()));
        assert!(buffer_limited(100_000, false, 131072, lr()));
        assert!(!buffer_limited(131072, true, 131072, lr()));
        assert!(!buffer_limited(50_000, false, 131072, lr()));
        assert!(!buffer_limited(50_000, false, 0, lr()));
    }

    #[test]
    fn latency_correlation_shrinks_one_step_then_holds() {
        use bpftune_sdk::corr::Corr;
        let mut c = Corr::default();
        // RTT rises with every buffer increase.
        for i in 0..12 {
            let x = 131072.0 * (1.0 + i as f64 * 0.25);
            c.update(x, 100.0 + 30.0 * i as f64);
        }
        let mut i = input([4096, 131072, 1_000_000]);
        i.corr = c.compute();
        i.corr_samples = c.samples();
        assert_eq!(decide_buffer(i, lr()), BufferDecision::ShrinkForLatency([4096, 131072, 750_000]));
        i.old[2] = 750_000;
        i.latency_hold = Some(750_000);
        assert_eq!(decide_buffer(i, lr()), BufferDecision::Hold(Hold::Latency));
        // Not below the default.
        i.latency_hold = None;
        i.old[2] = 150_000;
        assert_eq!(decide_buffer(i, lr()), BufferDecision::Hold(Hold::AtDefault));
        // Too few samples: keep growing.
        i.corr_samples = 9;
        assert!(matches!(decide_buffer(i, lr()), BufferDecision::Grow(_)));
        // Uncorrelated: keep growing.
        i.corr_samples = 20;
        i.corr = 0.2;
        assert!(matches!(decide_buffer(i, lr()), BufferDecision::Grow(_)));
    }

    #[test]
    fn mem_state_thresholds() {
        let m = [1000, 2000, 4000];
        assert_eq!(mem_state(100, m, lr()), MemState::Normal);
        assert_eq!(mem_state(1499, m, lr()), MemState::Normal);
        assert_eq!(mem_state(1500, m, lr()), MemState::Pressure);
        assert_eq!(mem_state(3000, m, lr()), MemState::Exhaustion);
        assert_eq!(mem_state(5000, m, lr()), MemState::Exhaustion);
        assert_eq!(mem_state(5000, [0, 0, 0], lr()), MemState::Normal);
        assert_eq!(MemState::from_raw(2), MemState::Exhaustion);
        assert_eq!(MemState::Exhaustion.label(), "near memory exhaustion");
    }

    #[test]
    fn tcp_mem_pressure_raises_within_bounds() {
        let b = MemBounds { free_pages: 160_000, page_size: 4096 };
        // caps: min 10000, pressure 20000, max 40000
        assert_eq!(tcp_mem_next(MemState::Pressure, [1000, 2000, 4000], b, lr()), Some([1250, 2500, 5000]));
        assert_eq!(tcp_mem_next(MemState::Pressure, [9000, 19000, 39000], b, lr()), Some([10000, 20000, 40000]));
        assert_eq!(tcp_mem_next(MemState::Pressure, [10000, 20000, 40000], b, lr()), None);
        // Above the bound already (administrator): never lowered.
        assert_eq!(tcp_mem_next(MemState::Pressure, [20000, 30000, 90000], b, lr()), None);
        assert_eq!(tcp_mem_next(MemState::Normal, [1000, 2000, 4000], b, lr()), None);
        for old in [[1, 2, 3], [5000, 19999, 20000], [100, 100, 100]] {
            if let Some(n) = tcp_mem_next(MemState::Pressure, old, b, lr()) {
                assert!(n[0] <= n[1] && n[1] <= n[2], "{n:?}");
                assert!(n[2] <= b.mem_max_cap() && n[1] <= b.mem_pressure_cap() && n[0] <= b.mem_min_cap());
            }
        }
    }

    #[test]
    fn tcp_mem_exhaustion_raises_max_only() {
        let b = MemBounds { free_pages: 160_000, page_size: 4096 };
        assert_eq!(tcp_mem_next(MemState::Exhaustion, [1000, 2000, 4000], b, lr()), Some([1000, 2000, 5000]));
        assert_eq!(tcp_mem_next(MemState::Exhaustion, [1000, 2000, 39000], b, lr()), Some([1000, 2000, 40000]));
        assert_eq!(tcp_mem_next(MemState::Exhaustion, [1000, 2000, 40000], b, lr()), None);
    }

    #[test]
    fn lowmem_buffer_shrink_stops_at_floor_and_default() {
        assert_eq!(shrink_buffer_lowmem([4096, 131072, 400_000], 131072, lr()), Some([4096, 131072, 300_000]));
        assert_eq!(shrink_buffer_lowmem([4096, 131072, 150_000], 131072, lr()), Some([4096, 131072, 131072]));
        assert_eq!(shrink_buffer_lowmem([4096, 131072, 131072], 131072, lr()), None);
        assert_eq!(shrink_buffer_lowmem([4096, 131072, 400_000], 390_000, lr()), Some([4096, 131072, 390_000]));
    }

    fn syn(backlog: i64) -> SynInput {
        SynInput {
            backlog,
            syncookies: 0,
            mem: MemState::Normal,
            corr: 0.0,
            corr_samples: 0,
            cookies_failed: None,
            cookies_recv: None,
            cap: BOUNDS.syn_backlog_cap(),
        }
    }

    #[test]
    fn syn_backlog_grows_while_correlated_and_shrinks_otherwise() {
        assert_eq!(decide_syn_flood(syn(256), lr()), SynDecision::Grow(320));
        let mut s = syn(256);
        s.corr_samples = 12;
        s.corr = 0.95;
        assert_eq!(decide_syn_flood(s, lr()), SynDecision::Grow(320));
        s.corr = 0.0;
        assert_eq!(decide_syn_flood(s, lr()), SynDecision::Shrink(192));
        s.backlog = 150;
        assert_eq!(decide_syn_flood(s, lr()), SynDecision::Shrink(MIN_SYN_BACKLOG));
        s.backlog = MIN_SYN_BACKLOG;
        assert_eq!(decide_syn_flood(s, lr()), SynDecision::Nothing);
        let mut capped = syn(1000);
        capped.cap = 1100;
        assert_eq!(decide_syn_flood(capped, lr()), SynDecision::Grow(1100));
        capped.backlog = 1100;
        assert_eq!(decide_syn_flood(capped, lr()), SynDecision::Nothing);
    }

    #[test]
    fn syncookies_rules() {
        let mut s = syn(256);
        s.mem = MemState::Pressure;
        assert_eq!(decide_syn_flood(s, lr()), SynDecision::EnableSyncookies);
        s.syncookies = 1;
        assert_eq!(decide_syn_flood(s, lr()), SynDecision::SyncookiesActive);
        s.cookies_failed = Some(2000);
        s.cookies_recv = Some(0);
        assert_eq!(decide_syn_flood(s, lr()), SynDecision::DisableSyncookies { failed: 2000 });
        s.cookies_recv = Some(3);
        assert_eq!(decide_syn_flood(s, lr()), SynDecision::SyncookiesActive);
        s.cookies_recv = Some(0);
        s.cookies_failed = Some(BAD_SYNCOOKIES - 1);
        assert_eq!(decide_syn_flood(s, lr()), SynDecision::SyncookiesActive);
    }

    #[test]
    fn syn_backlog_lowmem_floor() {
        assert_eq!(syn_backlog_lowmem(2048, lr()), Some(1536));
        assert_eq!(syn_backlog_lowmem(140, lr()), Some(128));
        assert_eq!(syn_backlog_lowmem(128, lr()), None);
        assert!(BOUNDS.syn_backlog_cap() >= MIN_SYN_BACKLOG);
    }
}
