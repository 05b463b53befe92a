//! The ip_frag tuner: raises a network namespace's IPv4/IPv6 fragment
//! reassembly high threshold when its reassembly memory nears it, and
//! lowers it again if reassembly failures correlate with the increases.
//!
//! BPF (`src/bpf/ip_frag.bpf.c`) watches received fragments and reports
//! "nearly full" per namespace; every decision is a pure function in
//! [`policy`]. Unlike the original, thresholds are tuned in the namespace
//! the fragments arrived in (they are per namespace), growth is capped,
//! a zero request count never divides, and low_thresh is kept below
//! high_thresh.

pub mod policy;
pub mod snmp;
pub mod tables;

use bpftune_sdk::corr::CorrTable;
use bpftune_sdk::{Event, LearningRate, WriteOutcome, prepare_object};
use bpftune_sdk::{Host, NetnsAdmission, OwnedSkel, Tuner, UnknownNetns};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};

use policy::{FragDecision, FragInput};
use snmp::SnmpReader;
use tables::{Scenario, Tunable};

bpftune_sdk::include_skeleton!(mod skel = "ip_frag");
bpftune_sdk::skel_family!(BpfSkel = skel::IpFragSkel);

/// The fqdir memory BPF saw (payload slot 1, `old[0]`).
fn event_mem(event: &Event) -> i64 {
    event.extra().old[0]
}

/// The loaded tuner.
pub struct IpFragTuner {
    host: Host,
    lr: LearningRate,
    /// Namespaces seen in events, and the ones an administrator took over
    /// (or that are gone); also knows the daemon's namespace.
    netns: NetnsAdmission,
    /// (high threshold, netns) → (threshold, failure rate) samples.
    corr: CorrTable<(Tunable, u64)>,
    snmp: SnmpReader,
    // Dropped last: the BPF object (its links live in the skeleton).
    skel: OwnedSkel<BpfSkel>,
}

impl IpFragTuner {
    fn read(&self, t: Tunable, cookie: u64) -> Option<i64> {
        match self.host.sysctl_read(cookie, t.name()) {
            Ok(v) => v.first().copied(),
            Err(e) => {
                self.host.debug_log(&format!("ip_frag: {e}"));
                None
            }
        }
    }

    /// Write through the daemon; stop acting in a namespace where an
    /// administrator took over or that is gone. True if the value is now set.
    fn write(&mut self, t: Tunable, s: Scenario, cookie: u64, old: i64, new: i64) -> bool {
        let reason = tables::reason(t.name(), old, new);
        match self.host.write(t, s, cookie, &[new], &reason) {
            Ok(WriteOutcome::Written | WriteOutcome::Advised | WriteOutcome::Unchanged) => true,
            Ok(WriteOutcome::SkippedManual | WriteOutcome::NetnsGone) => {
                self.netns.disable(cookie);
                self.snmp.forget(cookie);
                self.corr.retain(|k, _| k.1 != cookie);
                false
            }
            Err(e) => {
                self.host.error(&format!("ip_frag: could not change '{}': {e}", t.name()));
                false
            }
        }
    }

    /// Feed the correlation with (new threshold, failure rate) and say
    /// whether failures follow our increases.
    fn correlated(&mut self, t: Tunable, cookie: u64, next_high: i64) -> bool {
        let inum = self.netns.inum(cookie);
        if !self.netns.is_global(cookie) && inum.is_none() {
            return false;
        }
        let key = (t, cookie);
        match self.snmp.read(&self.host, cookie, inum, t.is_ipv6()) {
            Ok(r) => {
                if let Some(rate) = policy::fail_rate(r.fails, r.reqds) {
                    self.corr.update(key, next_high as f64, rate as f64);
                }
            }
            Err(e) => self.host.debug_log(&format!("ip_frag: {e}")),
        }
        self.corr.get(&key).is_correlated()
    }

    fn on_nearly_full(&mut self, t: Tunable, cookie: u64, event_high: i64, mem: i64) {
        let Some(current_high) = self.read(t, cookie) else { return };
        let Some(low) = self.read(t.low(), cookie) else { return };
        if event_high != current_high {
            self.host.debug_log(&format!(
                "ip_frag: stale event for '{}' (cookie {cookie}): saw {event_high}, now {current_high}",
                t.name()
            ));
            return;
        }
        let correlated = self.correlated(t, cookie, self.lr.grow(current_high));
        let input = FragInput { event_high, current_high, low, correlated };
        match policy::decide(input, self.lr) {
            FragDecision::Grow(new) => {
                self.write(t, Scenario::Increase, cookie, current_high, new);
            }
            FragDecision::Shrink { high, low: new_low } => {
                if let Some(new_low) = new_low {
                    if !self.write(t.low(), Scenario::Decrease, cookie, low, new_low) {
                        return;
                    }
                }
                self.write(t, Scenario::Decrease, cookie, current_high, high);
            }
            FragDecision::Hold(why) => {
                self.host.debug_log(&format!(
                    "ip_frag: not changing '{}' (cookie {cookie}, mem {mem}, high {current_high}): {why:?}",
                    t.name()
                ));
            }
        }
    }
}

impl Tuner for IpFragTuner {
    const NAME: &'static str = "ip_frag";
    const TUNABLES: &'static [bpftune_sdk::abi::TunableDesc] = Tunable::TABLE;
    const SCENARIOS: &'static [bpftune_sdk::abi::ScenarioDesc] = Scenario::TABLE;

    fn init(host: Host) -> Result<Self, String> {
        let mut skel = OwnedSkel::<BpfSkel>::new(|storage| {
            let mut open = skel::IpFragSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
            prepare_object!(open, host)?;
            open.load().map_err(|e| format!("BPF load for tuner 'ip_frag' failed: {e}"))
        })?;
        skel.with_mut(|s| s.attach()).map_err(|e| format!("could not attach skeleton: {e}"))?;
        Ok(Self {
            host,
            lr: host.learning_rate(),
            netns: NetnsAdmission::new(host.global_netns_cookie(), UnknownNetns::Skip),
            corr: CorrTable::new(),
            snmp: SnmpReader,
            skel,
        })
    }

    fn event(&mut self, event: &Event) -> Result<(), String> {
        let Some(cookie) = self.netns.admit(&self.host, event) else { return Ok(()) };
        let upd = event.update();
        match Tunable::from_id(upd.tunable) {
            Some(t @ (Tunable::IpfragHighThresh | Tunable::Ip6fragHighThresh)) => {
                self.on_nearly_full(t, cookie, upd.old[0], event_mem(event));
            }
            _ => self.host.debug_log(&format!("ip_frag: unexpected event for tunable {}", upd.tunable)),
        }
        Ok(())
    }

    fn netns_released(&mut self, cookie: u64) {
        self.netns.forget(cookie);
        self.corr.retain(|(_, c), _| *c != cookie);
        self.snmp.forget(cookie);
    }

    fn fini(&mut self) -> Result<(), String> {
        // Links are dropped with the skeleton; nothing is restored here
        // (the daemon's rollback does that when asked).
        let _ = &self.skel;
        Ok(())
    }
}

bpftune_sdk::export_tuner!(IpFragTuner);
