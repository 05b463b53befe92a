//! The numbers tcp_conn's userspace shares with its BPF program
//! (`bpf/tcp_conn.bpf.c`): the algorithms by index, the reasons choice
//! events carry, and the policy constants its log lines show. Each is
//! checked against, or taken from, a C enum anchored in the object's BTF
//! when the tuner is compiled, so the two sides cannot drift.
//!
//! The decisions themselves live only in the BPF program; the integration
//! tests (`tests/tests/tcp_conn.rs`) drive it with real connections.

use crate::skel::types::{tcp_conn_alg, tcp_conn_const, tcp_conn_reason};

/// Loss threshold: retransmissions above `segs_out >> DROP_SHIFT` (1/64).
pub const DROP_SHIFT: u32 = tcp_conn_const::DROP_SHIFT.0;
/// One connection in `EXPLORE_EVERY` per destination explores (counted).
pub const EXPLORE_EVERY: u64 = tcp_conn_const::EXPLORE_EVERY.0 as u64;
/// Fixed-point scale of learned costs (1.0).
pub const RL_SCALE: u64 = tcp_conn_const::RL_SCALE.0 as u64;
/// Number of known algorithms (`NR_CC`).
pub const NR_CC: usize = tcp_conn_alg::NR_CC.0 as usize;

/// The algorithms the tuner knows, by their index in the BPF program
/// (`enum tcp_conn_alg`). Only those the kernel offers become candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Algorithm {
    Cubic = 0,
    Bbr = 1,
    Htcp = 2,
    Reno = 3,
}

bpftune_sdk::same_ids!(tcp_conn_alg => Algorithm {
    CC_CUBIC = Cubic,
    CC_BBR = Bbr,
    CC_HTCP = Htcp,
    CC_RENO = Reno,
});

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

    /// Its bit in the candidate mask (`cc_candidates` in BPF).
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

/// Why an algorithm was chosen; the numbers travel in events
/// (`enum tcp_conn_reason`).
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

bpftune_sdk::same_ids!(tcp_conn_reason => Reason {
    REASON_LOSS = Loss,
    REASON_COST = Cost,
    REASON_EXPLORE = Explore,
    REASON_UNTRIED = Untried,
    REASON_REMEMBER = Remember,
});

impl Reason {
    const ALL: [Reason; 5] = [Reason::Loss, Reason::Cost, Reason::Explore, Reason::Untried, Reason::Remember];

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| *r as u32 == v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_come_from_the_available_list() {
        let mask = candidate_mask("reno bbr cubic");
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
    fn reasons_decode() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_u32(r as u32), Some(r));
        }
        assert_eq!(Reason::from_u32(0), None);
        assert_eq!(Reason::from_u32(6), None);
    }
}
