//! Decoding the measurements tcp_buffer's BPF programs put in payload slot 1
//! of an event (`enum tcp_buffer_extra` in `tcp_buffer.bpf.c`): slot 0 is
//! the sysctl update every tuner uses, slot 1 `old[0..3]`/`new[0..3]` carry
//! RTT, memory and SYN-flood counters.

use bpftune_sdk::{Event, SysctlUpdate};

use crate::policy::MemState;

/// Measurements attached to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extra {
    /// Smoothed RTT of the socket (receivers: their receive-side RTT), us.
    pub srtt_us: i64,
    /// TCP memory allocated, pages.
    pub mem_pages: i64,
    /// The namespace's `tcp_syncookies`.
    pub syncookies: i64,
    /// SYN-flood observations so far in the namespace.
    pub syn_floods: i64,
    /// Completed passive opens so far in the namespace.
    pub established: i64,
    pub mem_state: MemState,
}

/// Where BPF puts its measurements: slots 0-2 in an event's `old` values,
/// 3-5 in its `new` values (`enum tcp_buffer_extra`, checked against the C
/// enum when compiled).
#[derive(Debug, Clone, Copy)]
enum Slot {
    SrttUs = 0,
    MemPages = 1,
    Syncookies = 2,
    SynFloods = 3,
    Established = 4,
    MemState = 5,
}

bpftune_sdk::same_ids!(crate::skel::types::tcp_buffer_extra => Slot {
    EXTRA_SRTT_US = SrttUs,
    EXTRA_MEM_PAGES = MemPages,
    EXTRA_SYNCOOKIES = Syncookies,
    EXTRA_SYN_FLOODS = SynFloods,
    EXTRA_ESTABLISHED = Established,
    EXTRA_MEM_STATE = MemState,
});

impl Slot {
    fn of(self, u: &SysctlUpdate) -> i64 {
        let i = self as usize;
        if i < 3 { u.old[i] } else { u.new[i - 3] }
    }
}

impl Extra {
    pub fn decode(event: &Event) -> Self {
        let u = event.extra();
        Self {
            srtt_us: Slot::SrttUs.of(&u),
            mem_pages: Slot::MemPages.of(&u),
            syncookies: Slot::Syncookies.of(&u),
            syn_floods: Slot::SynFloods.of(&u),
            established: Slot::Established.of(&u),
            mem_state: MemState::from_raw(Slot::MemState.of(&u)),
        }
    }

    /// Encode into an event, as the BPF side does (tests and tools).
    pub fn encode(&self, event: &mut Event) {
        event.set_extra(SysctlUpdate {
            tunable: event.extra().tunable,
            old: [self.srtt_us, self.mem_pages, self.syncookies],
            new: [self.syn_floods, self.established, self.mem_state as i64],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot1_round_trip_keeps_slot0() {
        let mut e = Event::new(1, 0, 7, 0);
        let upd = SysctlUpdate { tunable: 1, old: [4096, 131072, 131072], new: [4096, 131072, 163840] };
        e.set_update(upd);
        let x = Extra {
            srtt_us: 120,
            mem_pages: 5000,
            syncookies: 1,
            syn_floods: 33,
            established: 12,
            mem_state: MemState::Pressure,
        };
        x.encode(&mut e);
        assert_eq!(Extra::decode(&e), x);
        assert_eq!(e.update(), upd);
    }

    #[test]
    fn slot1_offsets_follow_the_update_layout() {
        // Writing update[1] through the generic accessor of slot 0 layout:
        // old[0] of slot 1 sits right after slot 0 (56 bytes) and its id/pad.
        let mut e = Event::new(0, 0, 0, 0);
        let mut raw = [0u8; 128];
        raw[64..72].copy_from_slice(&99i64.to_ne_bytes());
        e.set_raw_data(&raw);
        assert_eq!(Extra::decode(&e).srtt_us, 99);
    }
}
