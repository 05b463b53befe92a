//! Protocol memory (`tcp_mem`, `udp_mem`): where usage stands against the
//! limits, and how the limits may grow within the bounds the original used
//! (max <= 1/4 of free buffer pages, pressure <= 1/8, min <= 1/16). Shared
//! by the tuners that watch protocol memory; mirrors
//! `bpftune_proto_mem_state()` in `bpftune.bpf.h`.

use crate::learning::LearningRate;

/// Memory in use relative to a protocol's three limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub enum MemState {
    #[default]
    Normal,
    Pressure,
    Exhaustion,
}

impl MemState {
    /// The original's label, used in reason lines.
    pub fn label(self) -> &'static str {
        match self {
            MemState::Normal => "normal memory conditions",
            MemState::Pressure => "near memory pressure",
            MemState::Exhaustion => "near memory exhaustion",
        }
    }
    pub fn is_low(self) -> bool {
        self != MemState::Normal
    }
    /// From the BPF encoding (`enum bpftune_mem_state`).
    pub fn from_raw(v: i64) -> Self {
        match v {
            1 => MemState::Pressure,
            2 => MemState::Exhaustion,
            _ => MemState::Normal,
        }
    }
}

/// Classify `allocated` pages against `limits` (pages): within one
/// learning-rate step of `limits[2]` is exhaustion, of `limits[1]` pressure.
pub fn mem_state(allocated: i64, limits: [i64; 3], lr: LearningRate) -> MemState {
    if allocated <= 0 || limits[1] <= 0 || limits[2] <= 0 {
        return MemState::Normal;
    }
    if lr.nearly_full(allocated, limits[2]) {
        MemState::Exhaustion
    } else if lr.nearly_full(allocated, limits[1]) {
        MemState::Pressure
    } else {
        MemState::Normal
    }
}

/// Caps on the three limits from the machine's free buffer pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemCaps {
    pub free_pages: i64,
}

impl MemCaps {
    pub fn min_cap(&self) -> i64 {
        self.free_pages / 16
    }
    pub fn pressure_cap(&self) -> i64 {
        self.free_pages / 8
    }
    pub fn max_cap(&self) -> i64 {
        self.free_pages / 4
    }
}

/// One step up, but never past `cap`, and never down (a value an
/// administrator set above the cap stays).
pub fn raise_capped(v: i64, cap: i64, lr: LearningRate) -> i64 {
    if v >= cap { v } else { lr.grow(v).min(cap) }
}

/// Raise the limits marked in `which` one step each within their caps,
/// keeping min <= pressure <= max and never lowering anything; `None` if
/// nothing would change.
pub fn raise_limits(old: [i64; 3], caps: MemCaps, lr: LearningRate, which: [bool; 3]) -> Option<[i64; 3]> {
    let cap = [caps.min_cap(), caps.pressure_cap(), caps.max_cap()];
    let mut new = old;
    for i in 0..3 {
        if which[i] {
            new[i] = raise_capped(old[i], cap[i], lr);
        }
    }
    if new[1] > new[2] {
        new[1] = new[2].max(old[1]);
    }
    if new[0] > new[1] {
        new[0] = new[1].max(old[0]);
    }
    (new != old).then_some(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        let lr = LearningRate::default();
        assert_eq!(mem_state(0, [1, 2, 3], lr), MemState::Normal);
        assert_eq!(mem_state(100, [50, 100, 200], lr), MemState::Pressure);
        assert_eq!(mem_state(190, [50, 100, 200], lr), MemState::Exhaustion);
        assert_eq!(MemState::from_raw(2), MemState::Exhaustion);
        assert_eq!(MemState::Pressure.label(), "near memory pressure");
    }

    #[test]
    fn raise_within_caps_keeps_order() {
        let lr = LearningRate::default();
        let caps = MemCaps { free_pages: 16_000 };
        assert_eq!(raise_limits([100, 200, 400], caps, lr, [true; 3]), Some([125, 250, 500]));
        assert_eq!(raise_limits([100, 200, 400], caps, lr, [false, false, true]), Some([100, 200, 500]));
        assert_eq!(raise_limits([1000, 2000, 4000], caps, lr, [true; 3]), None, "all at their caps");
        assert_eq!(raise_limits([10, 3000, 3500], caps, lr, [true; 3]), Some([12, 3000, 4000]));
    }
}
