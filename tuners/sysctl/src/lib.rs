//! The sysctl tuner: detects administrators taking over a tunable.
//!
//! A `cgroup/sysctl` program on the daemon's cgroup reports every sysctl
//! write (except the daemon's own) with the writer's pid and namespace; the
//! daemon then disables, in that namespace only, every tuner that declares
//! exactly that sysctl. It declares no tunables itself.

use bpftune_core::sdk::{Host, OwnedSkel, Tuner};
use bpftune_core::{Event, prepare_object};
use libbpf_rs::Link;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

bpftune_core::include_skeleton!(mod skel = "sysctl");

/// The loaded tuner: the BPF object and its cgroup link.
pub struct SysctlTuner {
    host: Host,
    // Dropped in this order: link first, then the object.
    _link: Link,
    _skel: OwnedSkel<skel::SysctlSkel<'static>>,
}

impl Tuner for SysctlTuner {
    const NAME: &'static str = "sysctl";
    const TUNABLES: &'static [bpftune_core::abi::TunableDesc] = &[];
    const SCENARIOS: &'static [bpftune_core::abi::ScenarioDesc] = &[];

    fn init(host: Host) -> Result<Self, String> {
        let skel = OwnedSkel::new(|storage| {
            let mut open = skel::SysctlSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
            prepare_object!(open, host)?;
            open.load().map_err(|e| format!("load: {e}"))
        })?;
        let link = skel
            .progs
            .bpftune_sysctl_write
            .attach_cgroup(host.cgroup_fd())
            .map_err(|e| format!("cannot attach 'bpftune_sysctl_write' to cgroup: {e}"))?;
        Ok(Self { host, _link: link, _skel: skel })
    }

    fn event(&mut self, event: &Event) -> Result<(), String> {
        let name = event.text();
        self.host.debug_log(&format!("sysctl write for '{name}' (scenario {}) for tuner sysctl", event.scenario_id()));
        self.host.netns_seen(event.netns_cookie(), event.netns_inum());
        self.host.admin_override(event.pid(), event.netns_cookie(), &name);
        Ok(())
    }
}

bpftune_core::export_tuner!(SysctlTuner);
