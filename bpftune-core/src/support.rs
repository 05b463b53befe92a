//! The support probe (`bpftune -S`, and at every start): load, and where it
//! can be done without side effects attach, one tiny program per hook type
//! the tuners use, and report what this kernel can do.

use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};

use crate::abi::SupportLevel;
use crate::probe_skel::ProbeSkelBuilder;

/// Outcome of each probe: `Ok` or why it failed.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub tp_btf: Result<(), String>,
    pub raw_tp: Result<(), String>,
    pub sockops: Result<(), String>,
    pub cgroup_sysctl: Result<(), String>,
    pub iter_tcp: Result<(), String>,
    /// Optional fast path; fails with EPERM on some kernels.
    pub fentry: Result<(), String>,
    pub btf: bool,
    pub netns_cookie: bool,
    /// Helpers and kernel facts the tuners use where they exist and work
    /// around where they do not (name, present). Any one missing makes the
    /// level LEGACY: everything loads, some parts another way.
    pub extras: Vec<(&'static str, bool)>,
}

/// What the tuners' BPF uses beyond the hook types (see each tuner's
/// `init`, which probes the same things through [`crate::kernel`]).
fn probe_extras() -> Vec<(&'static str, bool)> {
    use libbpf_rs::ProgramType::{CgroupSysctl, SockOps};

    use crate::kernel::{self, *};
    vec![
        ("cgroup/sysctl: bpf_get_current_pid_tgid", kernel::helper_supported(CgroupSysctl, GET_CURRENT_PID_TGID)),
        ("cgroup/sysctl: bpf_get_current_task_btf", kernel::helper_supported(CgroupSysctl, GET_CURRENT_TASK_BTF)),
        ("cgroup/sysctl: bpf_get_current_comm", kernel::helper_supported(CgroupSysctl, GET_CURRENT_COMM)),
        ("sockops: bpf_get_netns_cookie", kernel::helper_supported(SockOps, GET_NETNS_COOKIE)),
        (
            "tp_btf/kfree_skb: drop reason CPU_BACKLOG",
            kernel::btf_enum_value_exists("skb_drop_reason", "SKB_DROP_REASON_CPU_BACKLOG"),
        ),
    ]
}

/// Text of the original's support lines.
pub const SUPPORT_NORMAL: &str = "bpftune works fully";
pub const SUPPORT_LEGACY: &str = "bpftune works in legacy mode";
pub const SUPPORT_NONE: &str = "bpftune is not supported";
pub const SUPPORT_NOBTF: &str = "bpftune works, but no BPF Type Format information (BTF) is available. \
This means that offsets of kernel data structures may not match, so this mode is unsupported and failures \
are to be expected. BTF may also be present but unusable because libbpf is too old. If kernel BTF _is_ \
present, consider updating libbpf to a more recent version to allow bpftune to use it. ";
pub const NETNS_SUPPORTED: &str = "bpftune supports per-netns policy (via netns cookie)";
pub const NETNS_UNSUPPORTED: &str = "bpftune does not support per-netns policy (via netns cookie)";

impl ProbeReport {
    /// NORMAL needs BTF tracepoints plus the cgroup hooks; LEGACY makes do
    /// with raw tracepoints.
    pub fn level(&self) -> SupportLevel {
        let cgroup = self.sockops.is_ok() && self.cgroup_sysctl.is_ok();
        let extras = self.extras.iter().all(|(_, ok)| *ok);
        if self.tp_btf.is_ok() && cgroup && self.btf && extras {
            SupportLevel::Normal
        } else if (self.tp_btf.is_ok() || self.raw_tp.is_ok()) && cgroup && self.btf {
            SupportLevel::Legacy
        } else if self.raw_tp.is_ok() {
            SupportLevel::NoBtf
        } else {
            SupportLevel::None
        }
    }

    /// The lines `-S` prints.
    pub fn lines(&self, level: SupportLevel) -> Vec<&'static str> {
        let mut out = vec![match level {
            SupportLevel::Normal => SUPPORT_NORMAL,
            SupportLevel::Legacy => SUPPORT_LEGACY,
            SupportLevel::NoBtf => SUPPORT_NOBTF,
            SupportLevel::None => SUPPORT_NONE,
        }];
        if level > SupportLevel::None {
            out.push(if self.netns_cookie { NETNS_SUPPORTED } else { NETNS_UNSUPPORTED });
        }
        out
    }

    /// One debug line per hook.
    pub fn details(&self) -> Vec<String> {
        let row = |name: &str, r: &Result<(), String>| match r {
            Ok(()) => format!("support: {name}: yes"),
            Err(e) => format!("support: {name}: no ({e})"),
        };
        vec![
            row("tp_btf", &self.tp_btf),
            row("raw_tp", &self.raw_tp),
            row("sockops", &self.sockops),
            row("cgroup/sysctl", &self.cgroup_sysctl),
            row("iter/tcp", &self.iter_tcp),
            row("fentry (optional)", &self.fentry),
            format!("support: kernel BTF: {}", if self.btf { "yes" } else { "no" }),
            format!("support: netns cookie: {}", if self.netns_cookie { "yes" } else { "no" }),
        ]
        .into_iter()
        .chain(self.extras.iter().map(|(name, ok)| format!("support: {name}: {}", if *ok { "yes" } else { "no" })))
        .collect()
    }
}

fn try_prog(prog: &str, cgroup: Option<BorrowedFd<'_>>) -> Result<(), String> {
    let mut storage = MaybeUninit::uninit();
    let mut open = ProbeSkelBuilder::default().open(&mut storage).map_err(|e| format!("open: {e}"))?;
    for mut p in open.open_object_mut().progs_mut() {
        let keep = p.name() == prog;
        p.set_autoload(keep);
    }
    let skel = open.load().map_err(|e| format!("load: {e}"))?;
    let p = &skel.progs;
    let attached = match prog {
        "probe_tp_btf" => p.probe_tp_btf.attach().map(Some),
        "probe_raw_tp" => p.probe_raw_tp.attach().map(Some),
        "probe_fentry" => p.probe_fentry.attach().map(Some),
        "probe_sockops" => match cgroup {
            Some(fd) => p.probe_sockops.attach_cgroup(std::os::fd::AsRawFd::as_raw_fd(&fd)).map(Some),
            None => Ok(None),
        },
        "probe_sysctl" => match cgroup {
            Some(fd) => p.probe_sysctl.attach_cgroup(std::os::fd::AsRawFd::as_raw_fd(&fd)).map(Some),
            None => Ok(None),
        },
        // Loading proves the iterator type; creating one needs no attach.
        _ => Ok(None),
    };
    attached.map(drop).map_err(|e| format!("attach: {e}"))
}

/// Probe everything. `cgroup` is the daemon's cgroup v2 directory, used to
/// attach (and at once detach) the cgroup programs.
pub fn probe(cgroup: Option<BorrowedFd<'_>>) -> ProbeReport {
    ProbeReport {
        tp_btf: try_prog("probe_tp_btf", cgroup),
        raw_tp: try_prog("probe_raw_tp", cgroup),
        sockops: try_prog("probe_sockops", cgroup),
        cgroup_sysctl: try_prog("probe_sysctl", cgroup),
        iter_tcp: try_prog("probe_iter_tcp", cgroup),
        fentry: try_prog("probe_fentry", cgroup),
        btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        netns_cookie: !crate::kernel::pretend_missing("SO_NETNS_COOKIE")
            && crate::netns::current_netns_cookie().is_ok(),
        extras: probe_extras(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ok: bool) -> ProbeReport {
        let r = |b: bool| if b { Ok(()) } else { Err("EPERM".to_string()) };
        ProbeReport {
            tp_btf: r(ok),
            raw_tp: Ok(()),
            sockops: Ok(()),
            cgroup_sysctl: Ok(()),
            iter_tcp: Ok(()),
            fentry: r(false),
            btf: true,
            netns_cookie: true,
            extras: vec![("sockops: bpf_get_netns_cookie", true)],
        }
    }

    #[test]
    fn levels_and_lines() {
        assert_eq!(report(true).level(), SupportLevel::Normal);
        assert_eq!(report(false).level(), SupportLevel::Legacy);
        assert_eq!(report(true).lines(SupportLevel::Normal), vec![SUPPORT_NORMAL, NETNS_SUPPORTED]);
        assert_eq!(report(true).lines(SupportLevel::None), vec![SUPPORT_NONE]);
        assert!(report(true).details().iter().any(|l| l.contains("fentry (optional): no (EPERM)")));
        let mut old_kernel = report(true);
        old_kernel.extras[0].1 = false;
        assert_eq!(old_kernel.level(), SupportLevel::Legacy);
        assert!(old_kernel.details().iter().any(|l| l == "support: sockops: bpf_get_netns_cookie: no"));
    }
}
