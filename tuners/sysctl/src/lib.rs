//! The sysctl tuner: detects administrators taking over a tunable.
//!
//! A `cgroup/sysctl` program on the daemon's cgroup reports every sysctl
//! write (except the daemon's own) with the value written and the writer's
//! pid, command name and namespace, as far as the kernel lets it see them;
//! the daemon then disables, in that namespace only (or everywhere, where
//! the namespace cannot be seen), every tuner that declares exactly that
//! sysctl. It declares no tunables itself.

use abi_stable::std_types::RStr;
use bpftune_sdk::abi::{AdminWrite, FeatureState};
use bpftune_sdk::kernel::{self, GET_CURRENT_COMM, GET_CURRENT_PID_TGID, GET_CURRENT_TASK_BTF};
use bpftune_sdk::{Event, prepare_object};
use bpftune_sdk::{Host, OwnedSkel, Tuner};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, ProgramType};

bpftune_sdk::include_skeleton!(mod skel = "sysctl");
bpftune_sdk::skel_family!(BpfSkel = skel::SysctlSkel);

/// The loaded tuner: the BPF object and its cgroup link.
pub struct SysctlTuner {
    host: Host,
    // Dropped in this order: link first, then the object.
    _link: Link,
    _skel: OwnedSkel<BpfSkel>,
}

/// Which of the helpers the program would like it may call here.
#[derive(Debug, Clone, Copy)]
struct Helpers {
    pid: bool,
    task: bool,
    comm: bool,
}

impl Helpers {
    fn probe() -> Self {
        let ok = |h| kernel::helper_supported(ProgramType::CgroupSysctl, h);
        Self { pid: ok(GET_CURRENT_PID_TGID), task: ok(GET_CURRENT_TASK_BTF), comm: ok(GET_CURRENT_COMM) }
    }

    /// Tell the daemon (and so `-S`) what works another way.
    fn report(self, host: &Host) {
        let parts = [
            (
                "writer's pid",
                self.pid,
                "cgroup/sysctl programs cannot call bpf_get_current_pid_tgid on this kernel; \
                 the daemon's own writes are told apart by name and value",
            ),
            (
                "writer's namespace",
                self.task,
                "cgroup/sysctl programs cannot call bpf_get_current_task_btf on this kernel; \
                 an administrator's write is taken as one in every namespace",
            ),
            (
                "writer's command",
                self.comm,
                "cgroup/sysctl programs cannot call bpf_get_current_comm on this kernel; \
                 read from /proc/<pid>/cmdline after the write",
            ),
        ];
        for (part, available, fallback) in parts {
            if available {
                host.feature(part, FeatureState::Active, "");
            } else {
                host.feature(part, FeatureState::Fallback, fallback);
            }
        }
    }
}

impl Tuner for SysctlTuner {
    const NAME: &'static str = "sysctl";
    const TUNABLES: &'static [bpftune_sdk::abi::TunableDesc] = &[];
    const SCENARIOS: &'static [bpftune_sdk::abi::ScenarioDesc] = &[];

    fn init(host: Host) -> Result<Self, String> {
        let helpers = Helpers::probe();
        let skel = OwnedSkel::<BpfSkel>::new(|storage| {
            let mut open = skel::SysctlSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
            prepare_object!(open, host)?;
            if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
                rodata.have_pid_helper = helpers.pid;
                rodata.have_task_helper = helpers.task;
                rodata.have_comm_helper = helpers.comm;
            }
            open.load().map_err(|e| format!("load: {e}"))
        })?;
        let link = skel
            .get()
            .progs
            .bpftune_sysctl_write
            .attach_cgroup(host.cgroup_fd())
            .map_err(|e| format!("cannot attach 'bpftune_sysctl_write' to cgroup: {e}"))?;
        helpers.report(&host);
        Ok(Self { host, _link: link, _skel: skel })
    }

    fn event(&mut self, event: &Event) -> Result<(), String> {
        let w = event.sysctl_write();
        self.host.debug_log(&format!(
            "sysctl write for '{}' (scenario {}) for tuner sysctl",
            w.name,
            event.scenario_id()
        ));
        if w.netns_known {
            self.host.netns_seen(event.netns_cookie(), event.netns_inum());
        }
        let value = w.value.as_deref().unwrap_or_default();
        let comm = w.comm.as_deref().unwrap_or_default();
        self.host.admin_write(&AdminWrite {
            pid: if w.pid_known { event.pid() } else { 0 },
            netns_cookie: event.netns_cookie(),
            netns_known: w.netns_known,
            name: RStr::from_str(&w.name),
            value: RStr::from_str(value.trim_end()),
            comm: RStr::from_str(comm),
        });
        Ok(())
    }
}

bpftune_sdk::export_tuner!(SysctlTuner);
