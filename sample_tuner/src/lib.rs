//! The sample third-party tuner (`sample`): shows the whole plugin contract
//! in a few lines. Its BPF program reports every read of
//! `kernel.core_pattern`; the handler logs it at debug level, as the
//! original's sample did. It declares no tunables and changes nothing.

use bpftune_sdk::abi::{ScenarioDesc, TunableDesc};
use bpftune_sdk::{Host, OwnedSkel, Tuner};
use bpftune_sdk::{Event, prepare_object};
use libbpf_rs::Link;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

bpftune_sdk::include_skeleton!(mod skel = "sample");
bpftune_sdk::skel_family!(BpfSkel = skel::SampleSkel);

/// The loaded tuner: the BPF object and its cgroup link.
pub struct SampleTuner {
    host: Host,
    // Dropped in this order: link first, then the object.
    _link: Link,
    _skel: OwnedSkel<BpfSkel>,
}

impl Tuner for SampleTuner {
    const NAME: &'static str = "sample";
    const TUNABLES: &'static [TunableDesc] = &[];
    const SCENARIOS: &'static [ScenarioDesc] = &[];

    fn init(host: Host) -> Result<Self, String> {
        let skel = OwnedSkel::<BpfSkel>::new(|storage| {
            let mut open = skel::SampleSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
            // Shared ring buffer, tuner id, learning rate, debug flag.
            prepare_object!(open, host)?;
            open.load().map_err(|e| format!("load: {e}"))
        })?;
        let link = skel
            .get()
            .progs
            .sample_core_pattern
            .attach_cgroup(host.cgroup_fd())
            .map_err(|e| format!("cannot attach 'sample_core_pattern' to cgroup: {e}"))?;
        Ok(Self { host, _link: link, _skel: skel })
    }

    fn event(&mut self, event: &Event) -> Result<(), String> {
        self.host.debug_log(&format!("event  (scenario {}) for tuner sample", event.scenario_id()));
        Ok(())
    }
}

bpftune_sdk::export_tuner!(SampleTuner);
