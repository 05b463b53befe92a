//! The tcp_conn tuner: per-connection TCP congestion-control choice.
//!
//! A sockops program on the daemon's cgroup (see `bpf/tcp_conn.bpf.c`)
//! switches lossy connections to bbr, remembers their destinations, and
//! learns per destination and network namespace which available algorithm
//! gives the lowest RTT and the highest delivery rate (reinforcement
//! learning; a connection is switched only on evidence). Namespace
//! defaults are never changed: every choice is a per-socket
//! `TCP_CONGESTION` option. This side picks the candidates, logs the
//! choice events and prints the summary table.

pub mod ids;
pub mod report;
pub mod tw_policy;
pub mod tw_reuse;

use std::time::{Duration, Instant};

use bpftune_sdk::abi::{FeatureState, WriteOutcome};
use bpftune_sdk::kernel;
use bpftune_sdk::{Event, prepare_object, read_plain};
use bpftune_sdk::{Host, OwnedSkel, Tuner};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, ProgramType};

use ids::{Algorithm, NR_CC, Reason};
use report::{Budget, ChoiceEvent, HostRow, LogBudget, Metric};

bpftune_sdk::include_skeleton!(mod skel = "tcp_conn");
bpftune_sdk::skel_family!(BpfSkel = skel::TcpConnSkel);

bpftune_sdk::tunables! {
    pub enum Tunable {
        CongestionControl = ("net.persock.tcp.congestion_control", Other, NONE, 0),
        AllowedCongestionControl = ("net.ipv4.tcp_allowed_congestion_control", Sysctl, NAMESPACED | STRING, 1),
        AvailableCongestionControl = ("net.ipv4.tcp_available_congestion_control", Sysctl, NAMESPACED | STRING, 1),
        DefaultCongestionControl = ("net.ipv4.tcp_congestion_control", Sysctl, NAMESPACED | STRING, 1),
        ThinLinearTimeouts = ("net.ipv4.tcp_thin_linear_timeouts", Sysctl, NAMESPACED, 1),
        // The time-wait part (tw_reuse.rs).
        TcpTwReuse = ("net.ipv4.tcp_tw_reuse", Sysctl, NAMESPACED, 1),
        IpLocalPortRange = ("net.ipv4.ip_local_port_range", Sysctl, NAMESPACED, 2),
    }
}

bpftune_sdk::scenarios! {
    pub enum Scenario {
        Specify = (
            "specify TCP congestion control algorithm",
            "To optimize TCP performance, a TCP congestion control algorithm was chosen to mimimize round-trip time and maximize delivery rate."
        ),
        // The time-wait part (tw_reuse.rs).
        TwReuse = (
            "need to reuse TIME_WAIT sockets as local ports run out",
            "Sockets in TIME_WAIT nearly fill the local port range for outgoing connections, so allow new outgoing connections to reuse TIME_WAIT sockets where it is safe from a protocol viewpoint (TCP timestamps)"
        ),
        PortRange = (
            "need to widen local port range as TIME_WAIT reuse cannot keep up",
            "Even with TIME_WAIT reuse, outgoing connections are opened faster than TIME_WAIT sockets become reusable and nearly fill the local port range, so widen the range (within 32768-65535)"
        ),
    }
}

// The ids the BPF side uses are its C enums' (anchored in the object's
// BTF): the build fails if the two ever differ.
bpftune_sdk::same_ids!(skel::types::tcp_conn_tunable => Tunable {
    TUNABLE_CONG = CongestionControl,
    TUNABLE_TW_REUSE = TcpTwReuse,
    TUNABLE_PORT_RANGE = IpLocalPortRange,
});
bpftune_sdk::same_ids!(skel::types::tcp_conn_scenario => Scenario {
    SCENARIO_SPECIFY = Specify,
    SCENARIO_TW_REUSE = TwReuse,
    SCENARIO_PORT_RANGE = PortRange,
});

/// Index of the thin-lto counter in `cong_stats` (after one per algorithm).
const STAT_THIN_LTO: u32 = skel::types::tcp_conn_stat::STAT_THIN_LTO.0;
/// Index of the loss-switch counter in `cong_stats`.
const STAT_LOSS: u32 = skel::types::tcp_conn_stat::STAT_LOSS.0;
/// Destinations listed in the debug summary.
const SUMMARY_MAX_HOSTS: usize = 64;
/// Choice log lines: a burst of this many...
const LOG_BURST: u32 = 20;
/// ...then one per this interval.
const LOG_REFILL: Duration = Duration::from_secs(3);

/// The loaded tuner.
pub struct TcpConnTuner {
    host: Host,
    candidates: u32,
    budget: LogBudget,
    /// The time-wait part, if its BPF object loaded.
    tw: Option<tw_reuse::TwReuse>,
    // Dropped in this order: link first, then the object.
    link: Option<Link>,
    skel: OwnedSkel<BpfSkel>,
}

/// Read the kernel's available algorithms; where a known algorithm is
/// missing and the kernel has loadable modules, try loading it once.
fn read_candidates(host: &Host) -> Result<u32, String> {
    let name = Tunable::AvailableCongestionControl.name();
    let available = host.sysctl_read_string(0, name)?;
    let mut mask = ids::candidate_mask(&available);
    let missing: Vec<Algorithm> = Algorithm::ALL.iter().copied().filter(|a| mask & a.bit() == 0).collect();
    if !missing.is_empty() && std::path::Path::new("/proc/modules").exists() {
        for alg in &missing {
            let module = format!("tcp_{}", alg.name());
            match std::process::Command::new("modprobe").args(["-q", &module]).status() {
                Ok(s) if s.success() => host.debug_log(&format!("tcp_conn: loaded module '{module}'")),
                Ok(s) => host.debug_log(&format!("tcp_conn: could not load module '{module}': {s}")),
                Err(e) => host.debug_log(&format!("tcp_conn: could not load module '{module}': {e}")),
            }
        }
        mask = ids::candidate_mask(&host.sysctl_read_string(0, name)?);
    }
    Ok(mask)
}

impl TcpConnTuner {
    fn stats(&self) -> ([u64; NR_CC], u64, u64) {
        let map = &self.skel.get().maps.cong_stats;
        let read = |idx: u32| -> u64 {
            match map.lookup(&idx.to_ne_bytes(), MapFlags::ANY) {
                Ok(Some(v)) if v.len() >= 8 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&v[..8]);
                    u64::from_ne_bytes(b)
                }
                _ => 0,
            }
        };
        let mut choices = [0u64; NR_CC];
        for (i, c) in choices.iter_mut().enumerate() {
            *c = read(i as u32);
        }
        (choices, read(STAT_THIN_LTO), read(STAT_LOSS))
    }

    /// Learned state of up to `SUMMARY_MAX_HOSTS` destinations, and how
    /// many more there are.
    fn host_rows(&self) -> (Vec<HostRow>, u64) {
        let map = &self.skel.get().maps.remote_host_map;
        let mut rows = Vec::new();
        let mut more = 0u64;
        for key in map.keys() {
            if rows.len() >= SUMMARY_MAX_HOSTS {
                more += 1;
                continue;
            }
            let Some(k) = read_plain::<skel::types::remote_host_key>(&key) else { continue };
            let Ok(Some(val)) = map.lookup(&key, MapFlags::ANY) else { continue };
            let Some(v) = read_plain::<skel::types::remote_host>(&val) else { continue };
            let mut metrics = [Metric::default(); NR_CC];
            for (m, b) in metrics.iter_mut().zip(v.metrics.iter()) {
                *m = Metric {
                    metric_value: b.metric_value,
                    max_rate: b.max_rate,
                    min_rtt: b.min_rtt,
                    metric_count: b.metric_count,
                    metric_dev: b.metric_dev,
                };
            }
            rows.push(HostRow { addr: report::addr_from_words(k.addr), netns_cookie: k.netns_cookie, metrics });
        }
        (rows, more)
    }

    fn decode(event: &Event) -> Option<ChoiceEvent> {
        let raw = event.raw_data();
        let e = read_plain::<skel::types::tcp_conn_event>(&raw)?;
        Some(ChoiceEvent {
            addr: report::addr_from_words(e.addr),
            alg: Algorithm::from_index(e.alg),
            prev_alg: Algorithm::from_index(e.prev_alg),
            reason: Reason::from_u32(e.reason),
            ncandidates: e.ncandidates,
            instances: e.instances,
            cost: e.cost,
            total_retrans: e.total_retrans,
            segs_out: e.segs_out,
        })
    }

    /// Stop choosing in a namespace where the daemon says the tuner is off.
    fn disable_netns(&self, cookie: u64) {
        let one = [1u8];
        if let Err(e) = self.skel.get().maps.netns_disabled.update(&cookie.to_ne_bytes(), &one, MapFlags::ANY) {
            self.host.error(&format!("tcp_conn: could not disable netns (cookie {cookie}): {e}"));
        } else {
            self.host.debug_log(&format!("tcp_conn: no more choices in netns (cookie {cookie})"));
        }
    }
}

// Map keys, values and the event payload are integers and arrays of them
// only (tcp_conn.bpf.c).
bpftune_sdk::plain!(skel::types::remote_host_key, skel::types::remote_host, skel::types::tcp_conn_event);

impl Tuner for TcpConnTuner {
    const NAME: &'static str = "tcp_conn";
    const TUNABLES: &'static [bpftune_sdk::abi::TunableDesc] = Tunable::TABLE;
    const SCENARIOS: &'static [bpftune_sdk::abi::ScenarioDesc] = Scenario::TABLE;

    fn init(host: Host) -> Result<Self, String> {
        let candidates = read_candidates(&host)?;
        if candidates == 0 {
            return Err("no known TCP congestion control algorithm is available".to_string());
        }
        let names: Vec<&str> = ids::candidates(candidates).iter().map(|a| a.name()).collect();
        host.debug_log(&format!("tcp_conn: candidate congestion control algorithms: {}", names.join(" ")));

        let netns_cookie = kernel::helper_supported(ProgramType::SockOps, kernel::GET_NETNS_COOKIE);
        let own_inum =
            std::fs::metadata("/proc/self/ns/net").map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32).unwrap_or(0);
        let skel = OwnedSkel::<BpfSkel>::new(|storage| {
            let mut open = skel::TcpConnSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
            prepare_object!(open, host)?;
            if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
                rodata.cc_candidates = candidates;
                rodata.have_netns_cookie_helper = netns_cookie;
                rodata.fallback_netns_cookie = host.global_netns_cookie();
                rodata.own_netns_inum = own_inum;
            }
            open.load().map_err(|e| format!("load: {e}"))
        })?;
        let link = skel
            .get()
            .progs
            .bpftune_conn_tuner
            .attach_cgroup(host.cgroup_fd())
            .map_err(|e| format!("cannot attach 'bpftune_conn_tuner' to cgroup: {e}"))?;
        host.debug_log("tcp_conn: sockops program 'bpftune_conn_tuner' attached to the cgroup");
        if netns_cookie {
            host.feature("per-namespace learning", FeatureState::Active, "");
        } else {
            host.feature(
                "per-namespace learning",
                FeatureState::Fallback,
                "sockops programs cannot call bpf_get_netns_cookie on this kernel (5.15+); \
                 destinations are learned for all namespaces together",
            );
        }
        if netns_cookie {
            host.feature("time-wait reuse", FeatureState::Active, "");
        } else {
            host.feature(
                "time-wait reuse",
                FeatureState::Fallback,
                "sockops programs cannot call bpf_get_netns_cookie on this kernel (5.15+); \
                 only the daemon's own namespace is tuned",
            );
        }
        let tw = Some(tw_reuse::TwReuse::new(host));
        Ok(Self {
            host,
            candidates,
            budget: LogBudget::new(LOG_BURST, LOG_REFILL, Instant::now()),
            tw,
            link: Some(link),
            skel,
        })
    }

    fn event(&mut self, event: &Event) -> Result<(), String> {
        if tw_reuse::handles(event.scenario_id()) {
            if let Some(tw) = self.tw.as_mut() {
                tw.event(&self.skel.get().maps, event);
            }
            return Ok(());
        }
        let Some(choice) = Self::decode(event) else {
            self.host.debug_log("tcp_conn: got unexpected event");
            return Ok(());
        };
        let cookie = event.netns_cookie();
        self.host.netns_seen(cookie, event.netns_inum());
        let reason = report::reason_line(&choice);
        match self.budget.take(Instant::now()) {
            Budget::Drop => {
                self.host.debug_log(&format!("tcp_conn: (not logged, too many) {reason}"));
                return Ok(());
            }
            Budget::Log { suppressed } if suppressed > 0 => {
                self.host.notice(&format!("tcp_conn: {suppressed} similar congestion control choices were not logged"));
            }
            Budget::Log { .. } => {}
        }
        let outcome = self.host.update(Tunable::CongestionControl, Scenario::Specify, cookie, &reason);
        if outcome == WriteOutcome::SkippedManual {
            self.disable_netns(cookie);
        }
        Ok(())
    }

    fn fini(&mut self) -> Result<(), String> {
        // Detach first so no new choices race the final summary.
        self.link.take();
        Ok(())
    }

    fn summarize(&self) -> Vec<String> {
        let (choices, thin_lto, loss) = self.stats();
        let hosts = self.host.debug().then(|| self.host_rows());
        let mut lines = report::summary_lines(
            &choices,
            thin_lto,
            self.candidates,
            hosts.as_ref().map(|(rows, more)| (rows.as_slice(), *more)),
            self.host.global_netns_cookie(),
        );
        if self.host.debug() && loss > 0 {
            lines.push(format!("{} {loss} connections switched to bbr on loss", report::SUMMARY_PREFIX));
        }
        if let Some(tw) = self.tw.as_ref() {
            lines.extend(tw.summary_lines());
        }
        lines
    }

    /// A namespace that is gone, or handed back by the operator (`-q
    /// release`): choose congestion control there again and forget its
    /// time-wait state.
    fn netns_released(&mut self, netns_cookie: u64) {
        let maps = &self.skel.get().maps;
        let _ = maps.netns_disabled.delete(&netns_cookie.to_ne_bytes());
        if let Some(tw) = self.tw.as_mut() {
            tw.forget(maps, netns_cookie);
        }
    }
}

bpftune_sdk::export_tuner!(TcpConnTuner);
