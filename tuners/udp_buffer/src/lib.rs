//! The udp_buffer tuner: grows `net.core.rmem_max` and
//! `net.core.rmem_default` when UDP sockets drop datagrams because their
//! receive buffer is full, and `net.ipv4.udp_mem` when UDP memory nears
//! pressure or exhaustion.
//!
//! BPF (`src/bpf/udp_buffer.bpf.c`) observes the drops and prefilters;
//! every decision is a pure function in [`policy`], re-checked here against
//! fresh sysctl values. All three tunables are global on this kernel (the
//! rmem values of other namespaces are read-only copies), so every write
//! goes to the daemon's namespace whichever namespace the drop was in.

pub mod policy;
pub mod procfs;
pub mod tables;

use std::path::Path;

use bpftune_sdk::change_reason;
use bpftune_sdk::{Event, LearningRate, WriteOutcome, prepare_object};
use bpftune_sdk::{Host, NetnsAdmission, NetnsState, OwnedSkel, Tuner, UnknownNetns};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};

use policy::{MemBounds, MemState, RcvbufDrop, RmemTarget};
use tables::{Scenario, Tunable};

bpftune_sdk::include_skeleton!(mod skel = "udp_buffer");
bpftune_sdk::skel_family!(BpfSkel = skel::UdpBufferSkel);

/// Where BPF puts its measurements in an event's `old` values (`enum
/// udp_buffer_extra`, checked against the C enum when compiled).
#[derive(Debug, Clone, Copy)]
enum Slot {
    Rcvbuf = 0,
    Locked = 1,
    MemPages = 2,
}

bpftune_sdk::same_ids!(skel::types::udp_buffer_extra => Slot {
    EXTRA_RCVBUF = Rcvbuf,
    EXTRA_LOCKED = Locked,
    EXTRA_MEM_PAGES = MemPages,
});

/// Measurements BPF attaches to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Extra {
    rcvbuf: i64,
    locked: bool,
}

impl Extra {
    fn decode(event: &Event) -> Self {
        let old = event.extra().old;
        Self { rcvbuf: old[Slot::Rcvbuf as usize], locked: old[Slot::Locked as usize] != 0 }
    }
}

/// What the SDK releases when a namespace goes (see
/// [`Tuner::netns_state`]): everything kept per namespace.
fn netns_states(netns: &mut NetnsAdmission) -> Vec<&mut dyn NetnsState> {
    vec![netns]
}

/// The loaded tuner.
pub struct UdpBufferTuner {
    host: Host,
    lr: LearningRate,
    bounds: MemBounds,
    /// Namespaces seen in events (for their UDP counters); every write goes
    /// to the daemon's namespace, so none is ever disabled here. The only
    /// state kept per namespace; the SDK releases it ([`netns_states`]).
    netns: NetnsAdmission,
    /// An administrator took over a tunable: leave it alone from then on.
    disabled: Vec<Tunable>,
    // Dropped last: the BPF object (its links live in the skeleton).
    skel: OwnedSkel<BpfSkel>,
}

impl UdpBufferTuner {
    fn read(&self, t: Tunable) -> Option<Vec<i64>> {
        match self.host.sysctl_read(0, t.name()) {
            Ok(v) if v.len() == Tunable::TABLE[t as usize].num_values as usize => Some(v),
            Ok(_) => None,
            Err(e) => {
                self.host.debug_log(&format!("udp_buffer: {e}"));
                None
            }
        }
    }

    fn read1(&self, t: Tunable) -> Option<i64> {
        self.read(t).map(|v| v[0])
    }

    fn write(&mut self, t: Tunable, s: Scenario, values: &[i64], reason: &str) -> bool {
        if self.disabled.contains(&t) {
            return false;
        }
        match self.host.write(t, s, self.netns.global_cookie(), values, reason) {
            Ok(WriteOutcome::Written) => true,
            Ok(WriteOutcome::SkippedManual | WriteOutcome::NetnsGone) => {
                self.disabled.push(t);
                false
            }
            Ok(WriteOutcome::Advised | WriteOutcome::Unchanged) => false,
            Err(e) => {
                self.host.error(&format!("udp_buffer: could not change '{}': {e}", t.name()));
                false
            }
        }
    }

    /// Copy the current rmem values into the BPF globals its prefilter
    /// compares with.
    fn sync_bpf_limits(&mut self) {
        let (max, def) = (self.read1(Tunable::RmemMax), self.read1(Tunable::RmemDefault));
        self.skel.with_mut(|skel| {
            if let Some(bss) = skel.maps.bss_data.as_deref_mut() {
                if let Some(v) = max {
                    bss.rmem_max = v;
                }
                if let Some(v) = def {
                    bss.rmem_default = v;
                }
            }
        });
    }

    fn log_drops(&self, cookie: u64) {
        match procfs::read_udp_counters(&self.host, cookie, self.netns.inum(cookie)) {
            Ok(c) => {
                let rate = policy::drop_rate_per_mille(c.datagrams, c.rcvbuf_errors);
                self.host.notice(&tables::drops_notice(cookie, c.datagrams, c.rcvbuf_errors, rate));
            }
            Err(e) => self.host.debug_log(&format!("udp_buffer: UDP counters of netns {cookie}: {e}")),
        }
    }

    /// A socket dropped datagrams with its receive queue full.
    fn on_rcvbuf_drop(&mut self, cookie: u64, extra: Extra) {
        let (Some(rmem_max), Some(rmem_default)) = (self.read1(Tunable::RmemMax), self.read1(Tunable::RmemDefault))
        else {
            return;
        };
        let drop = RcvbufDrop { rcvbuf: extra.rcvbuf, locked: extra.locked, rmem_max, rmem_default };
        let Some((target, old, new)) = policy::decide_rcvbuf(drop, self.lr) else {
            self.host.debug_log(&format!("udp_buffer: no change for drop {drop:?} (netns cookie {cookie})"));
            self.sync_bpf_limits();
            return;
        };
        let t = match target {
            RmemTarget::Max => Tunable::RmemMax,
            RmemTarget::Default => Tunable::RmemDefault,
        };
        if self.disabled.contains(&t) {
            return;
        }
        self.log_drops(cookie);
        let reason = tables::reason_single(tables::WHY_INCREASE, t.name(), old, new);
        self.write(t, Scenario::Increase, &[new], &reason);
        self.sync_bpf_limits();
    }

    /// UDP memory is nearing pressure or exhaustion.
    fn on_memory(&mut self, state: MemState) {
        let t = Tunable::UdpMem;
        let Some(old) = self.read(t).and_then(|v| <[i64; 3]>::try_from(v).ok()) else { return };
        let Some(new) = policy::udp_mem_next(state, old, self.bounds, self.lr) else {
            self.host.debug_log(&format!("udp_buffer: udp_mem {old:?} at its bounds ({})", state.label()));
            return;
        };
        let scenario = if state == MemState::Exhaustion { Scenario::MemExhaustion } else { Scenario::MemPressure };
        let reason = change_reason(state.label(), t.name(), tables::MEM_LABELS, &old, &new);
        self.write(t, scenario, &new, &reason);
    }
}

impl Tuner for UdpBufferTuner {
    const NAME: &'static str = "udp_buffer";
    const TUNABLES: &'static [bpftune_sdk::abi::TunableDesc] = Tunable::TABLE;
    const SCENARIOS: &'static [bpftune_sdk::abi::ScenarioDesc] = Scenario::TABLE;
    const TICK_MS: u32 = 1000;

    fn init(host: Host) -> Result<Self, String> {
        let free_pages = procfs::read_free_buffer_pages(Path::new("/proc")).map_err(|e| e.to_string())?;
        let bounds = MemBounds { free_pages };
        let mut skel = OwnedSkel::<BpfSkel>::new(|storage| {
            let mut open = skel::UdpBufferSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
            prepare_object!(open, host)?;
            open.load().map_err(|e| format!("BPF load for tuner 'udp_buffer' failed: {e}"))
        })?;
        skel.with_mut(|s| s.attach()).map_err(|e| format!("could not attach skeleton: {e}"))?;
        host.debug_log(&format!(
            "udp_buffer: free buffer pages {free_pages}; udp_mem bounds ({} {} {})",
            bounds.min_cap(),
            bounds.pressure_cap(),
            bounds.max_cap()
        ));
        let mut tuner = Self {
            host,
            lr: host.learning_rate(),
            bounds,
            netns: NetnsAdmission::new(host.global_netns_cookie(), UnknownNetns::Global),
            disabled: Vec::new(),
            skel,
        };
        tuner.sync_bpf_limits();
        Ok(tuner)
    }

    fn event(&mut self, event: &Event) -> Result<(), String> {
        // Unknown namespaces count as the daemon's: all writes go there.
        let Some(cookie) = self.netns.admit(&self.host, event) else { return Ok(()) };
        let upd = event.update();
        match (Tunable::from_id(upd.tunable), Scenario::from_id(event.scenario_id())) {
            (Some(Tunable::RmemMax | Tunable::RmemDefault), Some(Scenario::Increase)) => {
                self.on_rcvbuf_drop(cookie, Extra::decode(event));
            }
            (Some(Tunable::UdpMem), Some(Scenario::MemExhaustion)) => self.on_memory(MemState::Exhaustion),
            (Some(Tunable::UdpMem), Some(_)) => self.on_memory(MemState::Pressure),
            _ => self.host.debug_log(&format!("udp_buffer: unexpected event for tunable {}", upd.tunable)),
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), String> {
        // Pick up values changed by others, so the BPF prefilter is right.
        self.sync_bpf_limits();
        let allocated = match procfs::read_sockstat_udp_mem(Path::new("/proc")) {
            Ok(v) => v,
            Err(e) => {
                self.host.debug_log(&format!("udp_buffer: {e}"));
                return Ok(());
            }
        };
        let Some(udp_mem) = self.read(Tunable::UdpMem).and_then(|v| <[i64; 3]>::try_from(v).ok()) else {
            return Ok(());
        };
        let state = policy::mem_state(allocated, udp_mem, self.lr);
        if state.is_low() {
            self.on_memory(state);
        }
        Ok(())
    }

    fn netns_state(&mut self) -> Vec<&mut dyn NetnsState> {
        netns_states(&mut self.netns)
    }

    fn samples(&self) -> Vec<bpftune_sdk::sample::SampleCount> {
        // The original's sample names, in sample_map order.
        bpftune_sdk::sample::read_samples(&self.skel.get().maps.sample_map, &["udp_fail_rcv_sample"])
    }

    fn fini(&mut self) -> Result<(), String> {
        // Links go with the skeleton; the daemon's rollback restores values.
        let _ = &self.skel;
        Ok(())
    }
}

bpftune_sdk::export_tuner!(UdpBufferTuner);

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_sdk::testing;

    #[test]
    fn extra_slot1_offsets() {
        let mut e = Event::new(0, 0, 0, 0);
        let mut raw = [0u8; 128];
        raw[64..72].copy_from_slice(&16384i64.to_ne_bytes());
        raw[72..80].copy_from_slice(&1i64.to_ne_bytes());
        e.set_raw_data(&raw);
        assert_eq!(Extra::decode(&e), Extra { rcvbuf: 16384, locked: true });
    }

    #[test]
    fn a_released_namespace_leaves_nothing() {
        testing::assert_released_namespace_leaves_nothing(&mut testing::admission(UnknownNetns::Global), netns_states);
    }
}
