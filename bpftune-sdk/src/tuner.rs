//! The trait a tuner implements: one instance per loaded `.so`, driven by
//! the daemon through the entry points [`crate::export_tuner!`] exports.

use crate::abi::{ScenarioDesc, StrategyDesc, TunableDesc};
use crate::event::Event;
use crate::host::Host;

/// What a tuner implements. One instance per loaded `.so`.
pub trait Tuner: Sized + 'static {
    /// Short name, e.g. `tcp_buffer`.
    const NAME: &'static str;
    /// The tunable table (see [`crate::tunables!`]).
    const TUNABLES: &'static [TunableDesc];
    /// The scenario table (see [`crate::scenarios!`]).
    const SCENARIOS: &'static [ScenarioDesc];
    /// Optional strategies; the daemon re-inits the tuner to switch.
    const STRATEGIES: &'static [StrategyDesc] = &[];
    /// If non-zero, [`Tuner::tick`] runs this often (milliseconds).
    const TICK_MS: u32 = 0;

    /// Open, load and attach BPF; the returned value lives until `fini`.
    fn init(host: Host) -> Result<Self, String>;
    /// React to one event from this tuner's BPF programs.
    fn event(&mut self, event: &Event) -> Result<(), String>;
    /// Detach; BPF objects are dropped with `self` afterwards.
    fn fini(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Custom summary lines; empty means the daemon's generic summary.
    fn summarize(&self) -> Vec<String> {
        Vec::new()
    }
    /// Periodic work, if `TICK_MS` is set.
    fn tick(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Score a strategy (index into `STRATEGIES`); highest wins.
    fn evaluate(&self, _strategy: u32) -> f64 {
        0.0
    }
    /// Everything this tuner keeps per namespace ([`crate::PerNetns`],
    /// [`crate::NetnsAdmission`]): when the daemon reports a namespace gone
    /// the SDK releases it in each of these, then calls
    /// [`Tuner::netns_released`], so state per namespace does not outlive
    /// the namespace and no tuner clears its maps by hand.
    fn netns_state(&mut self) -> Vec<&mut dyn crate::NetnsState> {
        Vec::new()
    }
    /// The namespace with this cookie is gone, or the daemon stopped
    /// tracking it, and [`Tuner::netns_state`] has been released there:
    /// drop anything else kept for it (BPF map entries, say) or log.
    fn netns_released(&mut self, _netns_cookie: u64) {}
    /// Counters of the tuner's sampled BPF programs (see
    /// [`crate::sample::read_samples`]); logged before `fini`, as the
    /// original does.
    fn samples(&self) -> Vec<crate::sample::SampleCount> {
        Vec::new()
    }
}
