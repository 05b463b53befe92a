//! The net_buffer tuner: grows `net.core.netdev_max_backlog` and enables
//! flow limits (`net.core.flow_limit_cpu_bitmap`) for a CPU when packets are
//! dropped because that CPU's input backlog was full; grows
//! `net.core.netdev_budget` / `netdev_budget_usecs` when NET_RX softirq runs
//! end with work left (time squeeze), and steps them back if tasks' run-queue
//! waits rise with them; re-enables high-order allocations for skb page
//! frags on kernels from 5.14 on.
//!
//! BPF (`src/bpf/net_buffer.bpf.c`) counts backlog drops; the budget side
//! reads `/proc` on the 1 s timer. Kernels differ: without a
//! `SKB_DROP_REASON_CPU_BACKLOG` drop reason (before 5.19) the per-CPU drop
//! counters of `/proc/net/softnet_stat` are read on the timer instead of
//! loading the BPF program; without `CONFIG_NET_FLOW_LIMIT` there are no
//! flow limits to set, and the rest works. Both are reported once at load
//! and listed by `bpftune -S`. Every decision is a pure function in
//! [`policy`], re-checked here against fresh sysctl values. All tunables
//! are system-wide: every write goes to the daemon's (initial) namespace,
//! whichever namespace the drops happened in.

pub mod policy;
pub mod procfs;
pub mod tables;

use std::path::Path;

use bpftune_sdk::abi::FeatureState;
use bpftune_sdk::corr::Corr;
use bpftune_sdk::kernel;
use bpftune_sdk::{Event, LearningRate, WriteOutcome, prepare_object};
use bpftune_sdk::{Host, NetnsAdmission, NetnsState, OwnedSkel, Tuner, UnknownNetns};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags};

use policy::{BudgetLimit, BudgetStep, CpuMask};
use procfs::WaitSampler;
use tables::{Scenario, Tunable};

bpftune_sdk::include_skeleton!(mod skel = "net_buffer");
bpftune_sdk::skel_family!(BpfSkel = skel::NetBufferSkel);

/// No machine has more CPUs than this (the kernel's NR_CPUS maximum); a
/// larger CPU number in an event is garbage.
const MAX_CPUS: i64 = 8192;

/// Where BPF puts its measurements in a backlog event's `old` values
/// (`enum net_buffer_extra`, checked against the C enum when compiled).
#[derive(Debug, Clone, Copy)]
enum Slot {
    Cpu = 0,
    Drops = 1,
}

bpftune_sdk::same_ids!(skel::types::net_buffer_extra => Slot { EXTRA_CPU = Cpu, EXTRA_DROPS = Drops });

/// What BPF attaches to a backlog event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Extra {
    cpu: i64,
    drops: i64,
}

impl Extra {
    fn decode(event: &Event) -> Self {
        let old = event.extra().old;
        Self { cpu: old[Slot::Cpu as usize], drops: old[Slot::Drops as usize] }
    }
}

/// The loaded tuner.
pub struct NetBufferTuner {
    host: Host,
    lr: LearningRate,
    /// Namespaces seen in events (reporting only: every write goes to the
    /// daemon's namespace). The only state kept per namespace; the SDK
    /// releases it ([`netns_states`]).
    netns: NetnsAdmission,
    /// netdev_budget and netdev_budget_usecs at start-up: decreases stop
    /// there (the tuner only takes back what it added).
    budget_floor: (i64, i64),
    /// Last total of the time_squeeze counters.
    last_squeeze: Option<u64>,
    /// Run-queue waits, as a percentage, per tick.
    wait: WaitSampler,
    /// (budget, wait %) samples. The budget is system-wide, so there is
    /// one series, the daemon's namespace's.
    budget_corr: Corr,
    /// The start-up work of the first tick is done.
    started: bool,
    /// A budget limit was logged; not again until the budget moves.
    budget_limit_noticed: bool,
    /// An administrator took over a tunable: leave it alone from then on.
    disabled: Vec<Tunable>,
    /// The kernel has `flow_limit_cpu_bitmap` (CONFIG_NET_FLOW_LIMIT).
    flow_limit: bool,
    /// Backlog drops are counted from softnet_stat on the timer (no drop
    /// reason for BPF): the per-CPU totals last read.
    timer_drops: Option<Vec<(u32, u64)>>,
    // Dropped last: the BPF object (its links live in the skeleton).
    skel: OwnedSkel<BpfSkel>,
}

/// What the SDK releases when a namespace goes (see
/// [`Tuner::netns_state`]): everything kept per namespace.
fn netns_states(netns: &mut NetnsAdmission) -> Vec<&mut dyn NetnsState> {
    vec![netns]
}

/// `bpf_ktime_get_ns()` now: CLOCK_MONOTONIC in nanoseconds.
fn ktime_now() -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to
    // a local; CLOCK_MONOTONIC always exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Decode one CPU's `struct backlog_window`; `None` if the size is wrong.
fn decode_window(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() != std::mem::size_of::<skel::types::backlog_window>() {
        return None;
    }
    // SAFETY: the length matches and backlog_window is two u64s, valid for
    // any bit pattern; read_unaligned copes with any alignment.
    let w = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<skel::types::backlog_window>()) };
    Some((w.count, w.start))
}

impl NetBufferTuner {
    /// Backlog drops in the CPUs' current BPF windows, summed here (BPF
    /// counts per CPU), and how many CPUs they came from.
    fn window_drops(&self) -> Option<(u64, usize)> {
        let values = self.skel.get().maps.drop_windows.lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY).ok()??;
        let windows: Vec<(u64, u64)> = values.iter().filter_map(|v| decode_window(v)).collect();
        let restart = self.skel.get().maps.bss_data.as_deref().map_or(0, |b| b.drop_window_start);
        Some(policy::window_drops(&windows, ktime_now()?, restart))
    }

    fn read1(&self, t: Tunable) -> Option<i64> {
        match self.host.sysctl_read(0, t.name()) {
            Ok(v) => v.first().copied(),
            Err(e) => {
                self.host.debug_log(&format!("net_buffer: {e}"));
                None
            }
        }
    }

    fn read_mask(&self) -> Option<(String, CpuMask)> {
        if !self.flow_limit {
            return None;
        }
        let t = Tunable::FlowLimitCpuBitmap;
        let text = match self.host.sysctl_read_string(0, t.name()) {
            Ok(s) => s.trim().to_string(),
            Err(e) => {
                self.host.debug_log(&format!("net_buffer: {e}"));
                return None;
            }
        };
        match CpuMask::parse(&text) {
            Ok(m) => Some((text, m)),
            Err(e) => {
                self.host.debug_log(&format!("net_buffer: '{}' = '{text}': {e}", t.name()));
                None
            }
        }
    }

    /// Write one value (integers, or `text` for the cpumask); `None` if
    /// nothing may follow (skipped, or failed).
    fn write(
        &mut self,
        t: Tunable,
        s: Scenario,
        values: &[i64],
        text: Option<&str>,
        reason: &str,
    ) -> Option<WriteOutcome> {
        if self.disabled.contains(&t) {
            return None;
        }
        let cookie = self.netns.global_cookie();
        let res = match text {
            Some(text) => self.host.write_string(t, s, cookie, text, reason),
            None => self.host.write(t, s, cookie, values, reason),
        };
        match res {
            Ok(WriteOutcome::SkippedManual | WriteOutcome::NetnsGone) => {
                self.host.debug_log(&format!("net_buffer: leaving '{}' alone from now on", t.name()));
                self.disabled.push(t);
                None
            }
            Ok(outcome) => Some(outcome),
            Err(e) => {
                self.host.error(&format!("net_buffer: could not change '{}': {e}", t.name()));
                None
            }
        }
    }

    /// Copy the current backlog length and flow-limit mask into the BPF
    /// globals the drop counter uses.
    fn sync_bpf(&mut self) {
        let backlog = self.read1(Tunable::NetdevMaxBacklog);
        let mask = self.read_mask().map(|(_, m)| m.low64());
        self.skel.with_mut(|skel| {
            if let Some(bss) = skel.maps.bss_data.as_deref_mut() {
                if let Some(v) = backlog {
                    bss.netdev_max_backlog = v;
                }
                if let Some(v) = mask {
                    bss.flow_limit_cpu_bitmap = v;
                }
            }
        });
    }

    /// Enough backlog drops: grow netdev_max_backlog one step.
    fn on_backlog(&mut self, cookie: u64, event_old: i64, extra: Extra) {
        let t = Tunable::NetdevMaxBacklog;
        if self.disabled.contains(&t) {
            return;
        }
        let Some(current) = self.read1(t) else { return };
        // BPF counts per CPU (without the drop reason the timer counts).
        let all = self
            .timer_drops
            .is_none()
            .then(|| self.window_drops())
            .flatten()
            .map_or_else(String::new, |(n, cpus)| format!(" (current windows of all CPUs: {n} on {cpus} CPU(s))"));
        self.host.debug_log(&format!(
            "net_buffer: {} backlog drops, CPU {}{all} (netns cookie {cookie}), netdev_max_backlog {current}",
            extra.drops, extra.cpu
        ));
        if current != event_old {
            // An earlier event already grew it (or someone else changed it).
            self.sync_bpf();
            return;
        }
        if let Some(new) = policy::backlog_next(current, self.lr) {
            let reason = tables::reason_backlog(t.name(), current, new);
            let written = self.write(t, Scenario::MaxBacklogIncrease, &[new], None, &reason);
            if written == Some(WriteOutcome::Written) && new >= tables::NETDEV_MAX_BACKLOG_MAX {
                self.host.notice(&tables::notice_backlog_limit(new));
            }
        }
        self.sync_bpf();
    }

    /// Enough backlog drops on `cpu`: enable flow limits there.
    fn on_flow_limit(&mut self, extra: Extra) {
        let t = Tunable::FlowLimitCpuBitmap;
        if self.disabled.contains(&t) || !self.flow_limit {
            return;
        }
        let Ok(cpu) = u32::try_from(extra.cpu) else { return };
        if i64::from(cpu) >= MAX_CPUS {
            return;
        }
        let Some((old_text, mask)) = self.read_mask() else { return };
        if !mask.is_set(cpu) {
            let new_text = mask.with(cpu).format();
            let reason = tables::reason_flow_limit(t.name(), &old_text, &new_text);
            self.write(t, Scenario::FlowLimitSet, &[], Some(&new_text), &reason);
        }
        self.sync_bpf();
    }

    /// Without BPF drop reasons: compare each CPU's backlog drops with the
    /// last tick's and act as the BPF counter would (a CPU with at least
    /// netdev_max_backlog/32 new drops).
    fn timer_backlog_drops(&mut self) {
        let Some(last) = self.timer_drops.as_ref() else { return };
        let now = match procfs::read_backlog_drops(Path::new("/proc")) {
            Ok(Some(now)) => now,
            Ok(None) => return,
            Err(e) => {
                self.host.debug_log(&format!("net_buffer: {e}"));
                return;
            }
        };
        let dropping = policy::dropping_cpus(last, &now, self.read1(Tunable::NetdevMaxBacklog).unwrap_or(0));
        self.timer_drops = Some(now);
        let cookie = self.netns.global_cookie();
        if let Some(&(cpu, drops)) = dropping.first() {
            if let Some(current) = self.read1(Tunable::NetdevMaxBacklog) {
                let extra = Extra { cpu: i64::from(cpu), drops: i64::try_from(drops).unwrap_or(i64::MAX) };
                self.on_backlog(cookie, current, extra);
            }
        }
        for (cpu, drops) in dropping {
            self.on_flow_limit(Extra { cpu: i64::from(cpu), drops: i64::try_from(drops).unwrap_or(i64::MAX) });
        }
    }

    /// NET_RX softirq runs were squeezed since the last tick; `wait_pct`
    /// is how long tasks waited to run over the same second, if known.
    fn on_squeeze(&mut self, wait_pct: Option<i64>) {
        let (tb, tu) = (Tunable::NetdevBudget, Tunable::NetdevBudgetUsecs);
        if self.disabled.contains(&tb) || self.disabled.contains(&tu) {
            return;
        }
        let (Some(budget), Some(usecs)) = (self.read1(tb), self.read1(tu)) else { return };
        // One series, always the same (the original's key was left
        // uninitialised when schedstat could not be read); no sample is fed
        // when the wait could not be measured.
        if let Some(pct) = wait_pct {
            let x = policy::budget_sample_x((budget, usecs), self.lr);
            self.budget_corr.update(x as f64, pct as f64);
        }
        let corr = self.budget_corr;
        self.host.debug_log(&format!(
            "net_buffer: time squeeze; budget {budget} usecs {usecs}, wait {wait_pct:?}%, corr {:.3} ({} samples)",
            corr.compute(),
            corr.samples()
        ));
        let (scenario, new_budget, new_usecs) =
            match policy::budget_step((budget, usecs), self.budget_floor, corr.is_correlated(), self.lr) {
                BudgetStep::Increase(b, u) => (Scenario::BudgetIncrease, b, u),
                BudgetStep::Decrease(b, u) => (Scenario::BudgetDecrease, b, u),
                BudgetStep::Limit(limit) => {
                    if !self.budget_limit_noticed {
                        self.budget_limit_noticed = true;
                        self.host.notice(&match limit {
                            BudgetLimit::Usecs(u) => tables::notice_usecs_limit(u),
                            BudgetLimit::Budget(b) => tables::notice_budget_limit(b),
                        });
                    }
                    return;
                }
            };
        let decrease = scenario == Scenario::BudgetDecrease;
        let reason = if decrease {
            tables::reason_budget_decrease(tb.name(), budget, new_budget)
        } else {
            tables::reason_budget_increase(tb.name(), budget, new_budget)
        };
        match self.write(tb, scenario, &[new_budget], None, &reason) {
            Some(WriteOutcome::Written) => self.budget_limit_noticed = false,
            Some(_) => {}
            None => return,
        }
        let reason = if decrease {
            tables::reason_budget_usecs_decrease(usecs, new_usecs)
        } else {
            tables::reason_budget_usecs_increase(usecs, new_usecs)
        };
        self.write(tu, scenario, &[new_usecs], None, &reason);
    }

    /// Start-up work that needs the tuner to be active (writes made from
    /// `init` would be refused): re-enable high-order allocations.
    fn first_tick(&mut self) {
        let t = Tunable::HighOrderAllocDisable;
        let Some(disabled) = self.read1(t) else { return };
        let Some(version) = kernel::release() else {
            self.host.debug_log("net_buffer: kernel release: cannot read kernel.osrelease");
            return;
        };
        if policy::should_enable_high_order(disabled, version, tables::HIGH_ORDER_ALLOC_MIN_KERNEL) {
            self.write(t, Scenario::HighOrderAllocEnable, &[0], None, tables::REASON_HIGH_ORDER);
        }
    }
}

impl Tuner for NetBufferTuner {
    const NAME: &'static str = "net_buffer";
    const TUNABLES: &'static [bpftune_sdk::abi::TunableDesc] = Tunable::TABLE;
    const SCENARIOS: &'static [bpftune_sdk::abi::ScenarioDesc] = Scenario::TABLE;
    const TICK_MS: u32 = 1000;

    fn init(host: Host) -> Result<Self, String> {
        let read = |t: Tunable| -> Result<i64, String> {
            host.sysctl_read(0, t.name())?.first().copied().ok_or_else(|| format!("'{}' is empty", t.name()))
        };
        let budget_floor = (read(Tunable::NetdevBudget)?, read(Tunable::NetdevBudgetUsecs)?);
        let flow_limit = kernel::sysctl_exists(Tunable::FlowLimitCpuBitmap.name());
        let drop_reason = kernel::btf_enum_value_exists("skb_drop_reason", "SKB_DROP_REASON_CPU_BACKLOG");
        let skel = OwnedSkel::<BpfSkel>::new(|storage| {
            let mut open = skel::NetBufferSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
            prepare_object!(open, host)?;
            if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
                rodata.netdev_max_backlog_max = tables::NETDEV_MAX_BACKLOG_MAX;
                rodata.flow_limit_enabled = flow_limit;
            }
            open.progs.bpftune_kfree_skb.set_autoload(drop_reason);
            open.load().map_err(|e| format!("BPF load for tuner 'net_buffer' failed: {e}"))
        })?;
        if drop_reason {
            host.feature("backlog drops", FeatureState::Active, "tp_btf/kfree_skb, drop reason CPU_BACKLOG");
        } else {
            host.feature(
                "backlog drops",
                FeatureState::Fallback,
                "no CPU_BACKLOG drop reason for tp_btf/kfree_skb in this kernel (5.19+); \
                 reading the per-CPU drop counters of /proc/net/softnet_stat every second",
            );
        }
        if flow_limit {
            host.feature("flow_limit_cpu_bitmap", FeatureState::Active, "");
        } else {
            host.feature(
                "flow_limit_cpu_bitmap",
                FeatureState::Off,
                "not in this kernel (CONFIG_NET_FLOW_LIMIT); backlog and budget tuning active",
            );
        }
        let timer_drops = if drop_reason {
            None
        } else {
            Some(procfs::read_backlog_drops(Path::new("/proc")).ok().flatten().unwrap_or_default())
        };
        let mut tuner = Self {
            host,
            lr: host.learning_rate(),
            netns: NetnsAdmission::new(host.global_netns_cookie(), UnknownNetns::Global),
            budget_floor,
            last_squeeze: None,
            wait: WaitSampler::new("/proc"),
            budget_corr: Corr::default(),
            started: false,
            budget_limit_noticed: false,
            disabled: Vec::new(),
            flow_limit,
            timer_drops,
            skel,
        };
        // The counter needs the backlog length before it sees any drop.
        tuner.sync_bpf();
        tuner.skel.with_mut(|s| s.attach()).map_err(|e| format!("could not attach skeleton: {e}"))?;
        tuner.last_squeeze = procfs::read_time_squeeze(Path::new("/proc")).ok().flatten();
        let _ = tuner.wait.sample();
        host.debug_log(&format!(
            "net_buffer: netdev_budget {} usecs {} at start; time_squeeze total {:?}",
            budget_floor.0, budget_floor.1, tuner.last_squeeze
        ));
        Ok(tuner)
    }

    fn event(&mut self, event: &Event) -> Result<(), String> {
        // Unknown namespaces count as the daemon's: all writes go there.
        let Some(cookie) = self.netns.admit(&self.host, event) else { return Ok(()) };
        let upd = event.update();
        match (Tunable::from_id(upd.tunable), Scenario::from_id(event.scenario_id())) {
            (Some(Tunable::NetdevMaxBacklog), Some(Scenario::MaxBacklogIncrease)) => {
                self.on_backlog(cookie, upd.old[0], Extra::decode(event));
            }
            (Some(Tunable::FlowLimitCpuBitmap), Some(Scenario::FlowLimitSet)) => {
                self.on_flow_limit(Extra::decode(event));
            }
            _ => self.host.debug_log(&format!(
                "net_buffer: unexpected event for tunable {} scenario {}",
                upd.tunable,
                event.scenario_id()
            )),
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), String> {
        if !self.started {
            self.started = true;
            self.first_tick();
        }
        // Pick up values changed by others, so the BPF counter is right.
        self.sync_bpf();
        self.timer_backlog_drops();
        let wait_pct = self.wait.sample();
        let total = match procfs::read_time_squeeze(Path::new("/proc")) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.host.debug_log(&format!("net_buffer: {e}"));
                return Ok(());
            }
        };
        let squeezed = policy::squeezed(self.last_squeeze, total);
        self.last_squeeze = Some(total);
        if squeezed {
            self.on_squeeze(wait_pct);
        }
        Ok(())
    }

    fn netns_state(&mut self) -> Vec<&mut dyn NetnsState> {
        netns_states(&mut self.netns)
    }

    fn samples(&self) -> Vec<bpftune_sdk::sample::SampleCount> {
        // The original's sample names, in sample_map order.
        bpftune_sdk::sample::read_samples(&self.skel.get().maps.sample_map, &["drop_sample"])
    }

    fn fini(&mut self) -> Result<(), String> {
        // Links go with the skeleton; the daemon's rollback restores values.
        let _ = &self.skel;
        Ok(())
    }
}

bpftune_sdk::export_tuner!(NetBufferTuner);

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_sdk::testing;

    #[test]
    fn extra_slot1_offsets() {
        let mut e = Event::new(0, 0, 0, 0);
        let mut raw = [0u8; 128];
        raw[64..72].copy_from_slice(&3i64.to_ne_bytes());
        raw[72..80].copy_from_slice(&42i64.to_ne_bytes());
        e.set_raw_data(&raw);
        assert_eq!(Extra::decode(&e), Extra { cpu: 3, drops: 42 });
    }

    #[test]
    fn a_released_namespace_leaves_nothing() {
        testing::assert_released_namespace_leaves_nothing(&mut testing::admission(UnknownNetns::Global), netns_states);
    }
}
