//! The udp_buffer tuner's decision rules as pure functions of their
//! inputs, unit-tested without root, BPF or a kernel: when a dropping
//! socket grows `rmem_max` or `rmem_default`, how `udp_mem` grows under
//! memory pressure within the free-memory bound, and the drop rate.
//!
//! The original's bugs are not copied: `udp_mem[0]`/`[1]` are never
//! written as 0 (a value past its bound stays as it is), and the drop rate
//! of a namespace without datagrams is 0, not a division by zero.

use bpftune_sdk::LearningRate;

/// rmem_max / rmem_default are never set below this.
pub const UDP_BUFFER_MIN: i64 = 8192;
/// rmem_max / rmem_default are never raised to this or beyond (256 MiB).
pub const UDP_BUFFER_MAX: i64 = 268_435_456;

/// Above 80 % of `limit`: `v + v/4 > limit`, the original's test (also in
/// `udp_buffer.bpf.c`).
pub fn above_80(v: i64, limit: i64) -> bool {
    limit > 0 && v.saturating_add(v / 4) > limit
}

/// Which receive-buffer tunable a drop asks to grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmemTarget {
    Max,
    Default,
}

/// A socket dropped a datagram because its receive queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RcvbufDrop {
    /// `sk_rcvbuf` of the socket.
    pub rcvbuf: i64,
    /// The application fixed the size with `SO_RCVBUF`.
    pub locked: bool,
    /// Current `net.core.rmem_max` and `net.core.rmem_default`.
    pub rmem_max: i64,
    pub rmem_default: i64,
}

/// What to change for a drop, or `None`:
/// 1. rcvbuf above 80 % of rmem_max: grow rmem_max one step (the socket, or
///    the application asking with `SO_RCVBUF`, is held back by the max);
/// 2. else rcvbuf above 80 % of rmem_default and not `SO_RCVBUF`-locked:
///    grow rmem_default one step, never above rmem_max;
/// 3. else nothing. Nothing either when the new value would reach
///    [`UDP_BUFFER_MAX`] or is not larger than the old one.
pub fn decide_rcvbuf(d: RcvbufDrop, lr: LearningRate) -> Option<(RmemTarget, i64, i64)> {
    let (target, old, new) = if above_80(d.rcvbuf, d.rmem_max) {
        (RmemTarget::Max, d.rmem_max, lr.grow(d.rmem_max))
    } else if !d.locked && above_80(d.rcvbuf, d.rmem_default) {
        (RmemTarget::Default, d.rmem_default, lr.grow(d.rmem_default).min(d.rmem_max))
    } else {
        return None;
    };
    if !(UDP_BUFFER_MIN..UDP_BUFFER_MAX).contains(&new) || new <= old {
        return None;
    }
    Some((target, old, new))
}

use bpftune_sdk::protomem::{MemCaps, raise_limits};
pub use bpftune_sdk::protomem::{MemState, mem_state};

/// Bounds from the machine's free buffer memory, as the original (and
/// tcp_buffer): `udp_mem` max ≤ 1/4 of free buffer pages, pressure ≤ 1/8,
/// min ≤ 1/16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemBounds {
    pub free_pages: i64,
}

impl MemBounds {
    fn caps(&self) -> MemCaps {
        MemCaps { free_pages: self.free_pages }
    }
    pub fn min_cap(&self) -> i64 {
        self.caps().min_cap()
    }
    pub fn pressure_cap(&self) -> i64 {
        self.caps().pressure_cap()
    }
    pub fn max_cap(&self) -> i64 {
        self.caps().max_cap()
    }
}

/// New `udp_mem` when memory is low, or `None` if nothing changes. Each of
/// the three values grows one step within its bound (the original's rule
/// for both pressure and exhaustion, without its zeros); the result keeps
/// min ≤ pressure ≤ max and no value is lowered.
pub fn udp_mem_next(state: MemState, old: [i64; 3], bounds: MemBounds, lr: LearningRate) -> Option<[i64; 3]> {
    if !state.is_low() || old.iter().any(|v| *v <= 0) {
        return None;
    }
    raise_limits(old, bounds.caps(), lr, [true; 3])
}

/// Dropped datagrams per thousand received; 0 when nothing was received.
pub fn drop_rate_per_mille(datagrams: u64, drops: u64) -> u64 {
    drops.saturating_mul(1000).checked_div(datagrams).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lr() -> LearningRate {
        LearningRate::default()
    }

    fn drop(rcvbuf: i64, locked: bool, rmem_max: i64, rmem_default: i64) -> RcvbufDrop {
        RcvbufDrop { rcvbuf, locked, rmem_max, rmem_default }
    }

    #[test]
    fn eighty_percent_test() {
        assert!(above_80(16384, 16384));
        assert!(above_80(13200, 16384));
        assert!(!above_80(13000, 16384));
        assert!(!above_80(16384, 20480));
        assert!(!above_80(16384, 0));
    }

    #[test]
    fn full_socket_at_max_grows_max_first_then_default() {
        let d = drop(16384, false, 16384, 16384);
        assert_eq!(decide_rcvbuf(d, lr()), Some((RmemTarget::Max, 16384, 20480)));
        let d = drop(16384, false, 20480, 16384);
        assert_eq!(decide_rcvbuf(d, lr()), Some((RmemTarget::Default, 16384, 20480)));
        // Default is never raised above the max.
        let d = drop(16384, false, 17000, 16384);
        assert_eq!(decide_rcvbuf(d, lr()), Some((RmemTarget::Max, 17000, 21250)));
        let d = drop(14000, false, 18000, 16384);
        assert_eq!(decide_rcvbuf(d, lr()), Some((RmemTarget::Default, 16384, 18000)));
        let d = drop(14000, false, 16384, 16384);
        assert_eq!(decide_rcvbuf(d, lr()), Some((RmemTarget::Max, 16384, 20480)));
    }

    #[test]
    fn locked_socket_never_grows_default() {
        let d = drop(16384, true, 1 << 20, 16384);
        assert_eq!(decide_rcvbuf(d, lr()), None);
        // But an application asking for more than the max raises the max.
        let d = drop(1 << 20, true, 1 << 20, 16384);
        assert_eq!(decide_rcvbuf(d, lr()), Some((RmemTarget::Max, 1 << 20, 1_310_720)));
    }

    #[test]
    fn roomy_sockets_and_bounds() {
        assert_eq!(decide_rcvbuf(drop(4096, false, 1 << 20, 212_992), lr()), None);
        // Growth that reaches 256 MiB is refused.
        let near = UDP_BUFFER_MAX - 1000;
        assert_eq!(decide_rcvbuf(drop(near, false, near, 212_992), lr()), None);
        let d = drop(200_000_000, false, 200_000_000, 212_992);
        assert_eq!(decide_rcvbuf(d, lr()), Some((RmemTarget::Max, 200_000_000, 250_000_000)));
        // Unknown (0) limits do nothing.
        assert_eq!(decide_rcvbuf(drop(16384, false, 0, 0), lr()), None);
    }

    #[test]
    fn mem_state_thresholds() {
        let m = [1000, 2000, 4000];
        assert_eq!(mem_state(100, m, lr()), MemState::Normal);
        assert_eq!(mem_state(1500, m, lr()), MemState::Pressure);
        assert_eq!(mem_state(3000, m, lr()), MemState::Exhaustion);
        assert_eq!(mem_state(5000, [0, 0, 0], lr()), MemState::Normal);
        assert_eq!(MemState::Exhaustion.label(), "near memory exhaustion");
        assert_eq!(MemState::Pressure.label(), "near memory pressure");
    }

    #[test]
    fn udp_mem_grows_within_bounds_and_never_writes_zero() {
        let b = MemBounds { free_pages: 160_000 }; // caps 10000 20000 40000
        for state in [MemState::Pressure, MemState::Exhaustion] {
            assert_eq!(udp_mem_next(state, [1000, 2000, 4000], b, lr()), Some([1250, 2500, 5000]));
            assert_eq!(udp_mem_next(state, [9000, 19000, 39000], b, lr()), Some([10000, 20000, 40000]));
            assert_eq!(udp_mem_next(state, [10000, 20000, 40000], b, lr()), None);
            // Past the bounds (the original wrote 0 for [0] and [1] here).
            assert_eq!(udp_mem_next(state, [20000, 30000, 39000], b, lr()), Some([20000, 30000, 40000]));
            assert_eq!(udp_mem_next(state, [20000, 30000, 90000], b, lr()), None);
        }
        assert_eq!(udp_mem_next(MemState::Normal, [1000, 2000, 4000], b, lr()), None);
        assert_eq!(udp_mem_next(MemState::Pressure, [0, 2000, 4000], b, lr()), None);
        for old in [[1, 2, 3], [5000, 19999, 20000], [100, 100, 100], [30000, 1000, 2000]] {
            if let Some(n) = udp_mem_next(MemState::Exhaustion, old, b, lr()) {
                assert!(n.iter().all(|v| *v > 0), "{n:?}");
                assert!(n.iter().zip(old.iter()).all(|(n, o)| n >= o), "{n:?} lowered {old:?}");
            }
        }
    }

    #[test]
    fn drop_rate_is_safe() {
        assert_eq!(drop_rate_per_mille(0, 0), 0);
        assert_eq!(drop_rate_per_mille(0, 10), 0);
        assert_eq!(drop_rate_per_mille(1000, 25), 25);
        assert_eq!(drop_rate_per_mille(3, 3), 1000);
        assert_eq!(drop_rate_per_mille(1, u64::MAX), u64::MAX);
    }
}
