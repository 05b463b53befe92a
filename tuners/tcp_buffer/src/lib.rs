//! The tcp_buffer tuner: TCP send/receive buffer maxima per network
//! namespace, TCP memory pressure and exhaustion, the low-memory toggles,
//! the latency guard, and the SYN backlog / syncookies under SYN floods.
//!
//! BPF (`src/bpf/tcp_buffer.bpf.c`) only observes and reports; every
//! decision is a pure function in [`policy`]. Memory state comes from two
//! sources: `sock_exceed_buf_limit` and the buffer hooks report
//! pressure/exhaustion as it happens, and a check every second reads
//! `/proc/net/sockstat` against `tcp_mem`, which is also how recovery is
//! noticed (BPF only sees sockets that are struggling).
//!
//! Cost on the data path: receive buffers are watched at
//! `tcp_rcvbuf_grow` (at most once per RTT, only while a receiver wants
//! more); the per-segment hooks (`tcp_probe`, and `tcp_rcv_space_adjust`
//! where `tcp_rcvbuf_grow` is missing) are attached only for one tick in
//! every [`DUTY`] period ([`duty`]), sooner again after they led to a change.

pub mod duty;
pub mod meminfo;
pub mod policy;
pub mod tables;
pub mod wire;

use std::collections::HashMap;
use std::path::Path;

use bpftune_sdk::abi::FeatureState;
use bpftune_sdk::change_reason;
use bpftune_sdk::corr::Corr;
use bpftune_sdk::{Event, LearningRate, SysctlUpdate, WriteOutcome, prepare_object};
use bpftune_sdk::{Host, NetnsAdmission, NetnsState, OwnedSkel, PerNetns, Tuner, UnknownNetns};
use libbpf_rs::Link;
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};

use duty::{DutyConfig, DutyCycle};

use policy::{BufferDecision, BufferInput, MemBounds, MemState, SynDecision, SynInput};
use tables::{Scenario, Tunable};
use wire::Extra;

bpftune_sdk::include_skeleton!(mod skel = "tcp_buffer");
bpftune_sdk::skel_family!(BpfSkel = skel::TcpBufferSkel);

/// Consecutive normal memory checks before leaving the low-memory state,
/// so the toggles do not flap while usage hovers at a threshold.
const LOWMEM_EXIT_TICKS: u32 = 3;

/// The tuner's tick: the granularity of the per-segment hooks' windows.
/// Each tick wakes the daemon, so not finer than the windows need (at
/// 250 ms the daemon's idle CPU time grew by a half, for windows no
/// cheaper on average).
const TICK: u32 = 500;

/// TCP memory is checked every this many ticks (1 s).
const MEM_CHECK_TICKS: u32 = 1000 / TICK;

/// Per-segment hooks: attached for one tick (500 ms) in every 8 (4 s),
/// and again 1 s after a window whose evidence led to a change (a buffer
/// grown in steps needs the next step soon). 1/8 of ~90 k calls/s at
/// ~70 ns is ~0.04 % of the two CPUs of a 20 Gbit/s loopback transfer.
/// (Windows every 8 s missed a send-limited sender for 20 s once on a
/// busy machine.) A window that saw no segment at all doubles the wait,
/// up to 64 s, so an idle machine is not interrupted by the text rewrites
/// of attaching and detaching ([`duty`]).
const DUTY: DutyConfig = DutyConfig { period: 8, window: 1, hurry: 2, max_idle_shift: 4 };

/// While backed off, packets received machine-wide (`NET_RX` softirqs,
/// every namespace) in one normal period that wake the windows: 16 a
/// second. An idle machine has none; the slowest flow worth a larger
/// buffer (64 KiB a round trip of 200 ms) has hundreds.
const WAKE_NET_RX: u64 = 64;

/// The original's sample names, in `sample_map` order (enum sample_id):
/// the two per-segment hooks' slots first.
const SAMPLE_NAMES: [&str; 3] = ["rcv_space_sample", "tcp_probe_sample", "syn_flood_action_sample"];

/// The tracepoint that fires only when a receiver wants a larger buffer
/// (6.16+); without it the per-read `tcp_rcv_space_adjust` stands in.
const RCVBUF_GROW_TP: &str = "tcp_rcvbuf_grow";

/// Whether kernel BTF has the BTF-enabled tracepoint `name` (its
/// `btf_trace_<name>` typedef); `BPFTUNE_PRETEND_MISSING=<name>` says no.
fn tracepoint_exists(name: &str) -> bool {
    use libbpf_rs::btf::Btf;
    use libbpf_rs::btf::types::Typedef;
    if bpftune_sdk::kernel::pretend_missing(name) {
        return false;
    }
    let Ok(btf) = Btf::from_vmlinux() else { return false };
    btf.type_by_name::<Typedef<'_>>(&format!("btf_trace_{name}")).is_some()
}

/// Toggles set while memory is low and undone afterwards.
const LOWMEM_TOGGLES: [Tunable; 3] =
    [Tunable::TcpNoMetricsSave, Tunable::TcpNoSsthreshMetricsSave, Tunable::HighOrderAllocDisable];

/// What we changed in one namespace for one buffer tunable.
#[derive(Debug, Clone, Copy)]
struct Raised {
    /// The max before this tuner first raised it (low-memory shrink floor).
    initial_max: i64,
}

/// Everything the tuner keeps for one namespace (the daemon's included),
/// held in a [`PerNetns`] that the SDK releases when the namespace goes.
#[derive(Debug, Default)]
struct NsState {
    /// Per tunable: (buffer max, RTT) or (SYN floods, established) samples.
    corr: HashMap<Tunable, Corr>,
    /// Buffer maxima lowered for latency: the max we set.
    latency_hold: HashMap<Tunable, i64>,
    /// Buffer maxima this tuner raised.
    raised: HashMap<Tunable, Raised>,
    /// Last values this tuner wrote, to drop events that saw older ones.
    last_written: HashMap<Tunable, Vec<i64>>,
    /// `tcp_moderate_rcvbuf` was checked here.
    moderate_checked: bool,
    /// Sockets here reported low memory (the toggles go here too; never
    /// set for the daemon's namespace, which always gets them).
    lowmem: bool,
    /// Low-memory toggles we set here, to undo.
    lowmem_set: Vec<Tunable>,
    /// SYN backlog lowered for low memory: the value to restore.
    syn_saved: Option<i64>,
    /// SYN floods were seen here.
    syn_flood: bool,
}

/// What the SDK releases when a namespace goes (see
/// [`Tuner::netns_state`]): everything kept per namespace.
fn netns_states<'a>(netns: &'a mut NetnsAdmission, ns: &'a mut PerNetns<NsState>) -> Vec<&'a mut dyn NetnsState> {
    vec![netns, ns]
}

impl Tunable {
    fn namespaced(self) -> bool {
        Self::TABLE[self as usize].flags.contains(bpftune_sdk::TunableFlags::NAMESPACED)
    }
}

/// The loaded tuner.
pub struct TcpBufferTuner {
    host: Host,
    lr: LearningRate,
    bounds: MemBounds,
    /// Namespaces seen in events, and the ones an administrator took over
    /// (or that are gone); also knows the daemon's namespace.
    netns: NetnsAdmission,
    /// What the tuner keeps per namespace (released by the SDK).
    ns: PerNetns<NsState>,
    mem: MemState,
    normal_ticks: u32,
    /// Ticks so far (memory is checked every [`MEM_CHECK_TICKS`]).
    ticks: u32,
    /// When the per-segment hooks are attached.
    duty: DutyCycle,
    /// Whether `tcp_rcv_space_adjust` stands in for `tcp_rcvbuf_grow`
    /// (and so is windowed like `tcp_probe`).
    rcv_space_fallback: bool,
    /// The per-segment hooks' links while a window is open; dropped
    /// (detached) before the skeleton.
    hot: Vec<Link>,
    /// Calls of the per-segment hooks when the open window opened.
    calls_at_open: u64,
    /// `NET_RX` softirqs at the last look while backed off.
    net_rx: Option<u64>,
    // Dropped last: the BPF object (its other links live in the skeleton).
    skel: OwnedSkel<BpfSkel>,
}

impl TcpBufferTuner {
    fn global_cookie(&self) -> u64 {
        self.netns.global_cookie()
    }

    fn is_global(&self, cookie: u64) -> bool {
        self.netns.is_global(cookie)
    }

    /// Write through the daemon; remember what we wrote, and stop acting in
    /// a namespace where an administrator took over or that is gone.
    fn write(&mut self, t: Tunable, s: Scenario, cookie: u64, values: &[i64], reason: &str) -> Option<WriteOutcome> {
        match self.host.write(t, s, cookie, values, reason) {
            Ok(outcome) => {
                match outcome {
                    WriteOutcome::Written | WriteOutcome::Advised | WriteOutcome::Unchanged => {
                        self.ns.entry(cookie).last_written.insert(t, values.to_vec());
                    }
                    WriteOutcome::SkippedManual | WriteOutcome::NetnsGone => {
                        // Global tunables are written in the daemon's ns.
                        let ns = if t.namespaced() { cookie } else { self.global_cookie() };
                        self.netns.disable(ns);
                    }
                }
                Some(outcome)
            }
            Err(e) => {
                self.host.error(&format!("tcp_buffer: could not change '{}': {e}", t.name()));
                None
            }
        }
    }

    fn read(&self, t: Tunable, cookie: u64) -> Option<Vec<i64>> {
        match self.host.sysctl_read(cookie, t.name()) {
            Ok(v) if !v.is_empty() => Some(v),
            Ok(_) => None,
            Err(e) => {
                self.host.debug_log(&format!("tcp_buffer: {e}"));
                None
            }
        }
    }

    /// False (and forgets what we wrote) if the event saw values other than
    /// the ones we last wrote: it is stale, or someone else changed them.
    fn fresh(&mut self, t: Tunable, cookie: u64, old: &[i64]) -> bool {
        let Some(ns) = self.ns.get_mut(cookie) else { return true };
        match ns.last_written.get(&t) {
            Some(last) if last.as_slice() != old => {
                ns.last_written.remove(&t);
                false
            }
            _ => true,
        }
    }

    /// The samples of one tunable in one namespace (none yet: empty).
    fn corr(&self, t: Tunable, cookie: u64) -> Corr {
        self.ns.get(cookie).and_then(|ns| ns.corr.get(&t).copied()).unwrap_or_default()
    }

    fn on_buffer(&mut self, t: Tunable, cookie: u64, upd: SysctlUpdate, extra: Extra) {
        let old = upd.old;
        if !self.fresh(t, cookie, &old) {
            return;
        }
        if extra.srtt_us > 0 {
            self.ns.entry(cookie).corr.entry(t).or_default().update(old[2] as f64, extra.srtt_us as f64);
        }
        let corr = self.corr(t, cookie);
        let input = BufferInput {
            old,
            mem: self.mem.max(extra.mem_state),
            corr: corr.compute(),
            corr_samples: corr.samples(),
            latency_hold: self.ns.get(cookie).and_then(|ns| ns.latency_hold.get(&t).copied()),
            cap: self.bounds.buffer_cap(),
        };
        match policy::decide_buffer(input, self.lr) {
            BufferDecision::Grow(new) => {
                let reason = change_reason(tables::WHY_INCREASE, t.name(), tables::BUFFER_LABELS, &old, &new);
                if self.write(t, Scenario::Increase, cookie, &new, &reason) == Some(WriteOutcome::Written) {
                    // One step may not be enough: look again soon, where
                    // the evidence came from a windowed hook.
                    if t == Tunable::TcpWmem || self.rcv_space_fallback {
                        self.duty.hurry();
                    }
                    let ns = self.ns.entry(cookie);
                    ns.raised.entry(t).or_insert(Raised { initial_max: old[2] });
                    ns.latency_hold.remove(&t);
                    if t == Tunable::TcpRmem {
                        self.ensure_moderate_rcvbuf(cookie);
                    }
                }
            }
            BufferDecision::ShrinkForLatency(new) => {
                let reason = change_reason(tables::WHY_LATENCY, t.name(), tables::BUFFER_LABELS, &old, &new);
                if self.write(t, Scenario::DecreaseLatency, cookie, &new, &reason).is_some() {
                    self.ns.entry(cookie).latency_hold.insert(t, new[2]);
                }
            }
            BufferDecision::Hold(why) => {
                self.host.debug_log(&format!("tcp_buffer: not changing '{}' (cookie {cookie}): {why:?}", t.name()));
            }
        }
    }

    /// Receive-buffer auto-tuning must be on for a larger max to matter.
    fn ensure_moderate_rcvbuf(&mut self, cookie: u64) {
        if std::mem::replace(&mut self.ns.entry(cookie).moderate_checked, true) {
            return;
        }
        let t = Tunable::TcpModerateRcvbuf;
        if self.read(t, cookie).is_some_and(|v| v[0] != 1) {
            self.write(t, Scenario::MatchRcvbuf, cookie, &[1], &tables::reason_moderate_rcvbuf(t.name()));
        }
    }

    /// TCP memory is approaching pressure or exhaustion (from BPF or the
    /// tick): raise `tcp_mem` within its bounds; at exhaustion also enter
    /// the low-memory state.
    fn on_memory(&mut self, state: MemState, tcp_mem: [i64; 3], cookie: u64) {
        if !state.is_low() || self.netns.is_disabled(self.global_cookie()) {
            return;
        }
        self.normal_ticks = 0;
        self.mem = state;
        if !self.is_global(cookie) {
            self.ns.entry(cookie).lowmem = true;
        }
        if let Some(new) = policy::tcp_mem_next(state, tcp_mem, self.bounds, self.lr) {
            let t = Tunable::TcpMem;
            let scenario = if state == MemState::Exhaustion { Scenario::MemExhaustion } else { Scenario::MemPressure };
            let reason = change_reason(state.label(), t.name(), tables::MEM_LABELS, &tcp_mem, &new);
            self.write(t, scenario, self.global_cookie(), &new, &reason);
        }
        if state == MemState::Exhaustion {
            self.enter_lowmem();
        }
    }

    /// Low memory: set the toggles, step back buffer maxima we raised and
    /// SYN backlogs, remembering what to undo.
    fn enter_lowmem(&mut self) {
        let mut cookies: Vec<u64> = vec![self.global_cookie()];
        cookies.extend(self.ns.iter().filter(|(c, ns)| ns.lowmem && !self.netns.is_disabled(*c)).map(|(c, _)| c));
        for t in LOWMEM_TOGGLES {
            let namespaced = t != Tunable::HighOrderAllocDisable;
            for &cookie in &cookies {
                if !namespaced && !self.is_global(cookie) {
                    continue;
                }
                if self.ns.get(cookie).is_some_and(|ns| ns.lowmem_set.contains(&t)) {
                    continue;
                }
                if self.read(t, cookie).is_some_and(|v| v[0] == 0)
                    && self.write(t, Scenario::LowmemSet, cookie, &[1], &tables::reason_lowmem_set(t.name()))
                        == Some(WriteOutcome::Written)
                {
                    self.ns.entry(cookie).lowmem_set.push(t);
                }
            }
        }
        let raised: Vec<(Tunable, u64, Raised)> =
            self.ns.iter().flat_map(|(c, ns)| ns.raised.iter().map(move |(t, r)| (*t, c, *r))).collect();
        for (t, cookie, r) in raised {
            if self.netns.is_disabled(cookie) {
                continue;
            }
            let Some(cur) = self.read(t, cookie).and_then(|v| <[i64; 3]>::try_from(v).ok()) else { continue };
            if let Some(new) = policy::shrink_buffer_lowmem(cur, r.initial_max, self.lr) {
                let reason = change_reason(self.mem.label(), t.name(), tables::BUFFER_LABELS, &cur, &new);
                self.write(t, Scenario::Decrease, cookie, &new, &reason);
            }
        }
        let syn: Vec<u64> =
            self.ns.iter().filter(|(_, ns)| ns.syn_flood && ns.syn_saved.is_none()).map(|(c, _)| c).collect();
        for cookie in syn {
            let t = Tunable::TcpMaxSynBacklog;
            let Some(cur) = self.read(t, cookie).map(|v| v[0]) else { continue };
            if let Some(new) = policy::syn_backlog_lowmem(cur, self.lr) {
                if self.write(t, Scenario::LowmemSet, cookie, &[new], &tables::reason_lowmem_set(t.name()))
                    == Some(WriteOutcome::Written)
                {
                    self.ns.entry(cookie).syn_saved = Some(cur);
                }
            }
        }
    }

    /// Memory recovered: undo what [`Self::enter_lowmem`] set.
    fn leave_lowmem(&mut self) {
        let mut set: Vec<(Tunable, u64)> = Vec::new();
        let mut syn_saved: Vec<(u64, i64)> = Vec::new();
        for (cookie, ns) in self.ns.iter_mut() {
            set.extend(std::mem::take(&mut ns.lowmem_set).into_iter().map(|t| (t, cookie)));
            syn_saved.extend(ns.syn_saved.take().map(|v| (cookie, v)));
            ns.lowmem = false;
        }
        // In the order enter_lowmem set them: toggle by toggle, the
        // daemon's namespace first.
        let global = self.global_cookie();
        set.sort_by_key(|(t, c)| (LOWMEM_TOGGLES.iter().position(|x| x == t), *c != global));
        for (t, cookie) in set {
            if !self.netns.is_disabled(cookie) {
                self.write(t, Scenario::LowmemUnset, cookie, &[0], &tables::reason_lowmem_unset(t.name()));
            }
        }
        for (cookie, value) in syn_saved {
            if !self.netns.is_disabled(cookie) {
                let t = Tunable::TcpMaxSynBacklog;
                self.write(t, Scenario::LowmemUnset, cookie, &[value], &tables::reason_lowmem_unset(t.name()));
            }
        }
        self.mem = MemState::Normal;
    }

    /// Calls of the per-segment hooks so far: the first two sample slots
    /// (the receive slot also counts `tcp_rcvbuf_grow`, itself a sign of
    /// segments arriving).
    fn hook_calls(&self) -> u64 {
        bpftune_sdk::sample::read_samples(&self.skel.get().maps.sample_map, &SAMPLE_NAMES[..2])
            .iter()
            .map(|s| s.calls)
            .sum()
    }

    /// Whether packets arrived machine-wide since the last look (the
    /// first look only takes the count).
    fn packets_moving(&mut self) -> bool {
        let Ok(now) = bpftune_sdk::procfs::read_softirq_total(Path::new("/proc"), "NET_RX:") else {
            // No count to go by: do not stay backed off on a guess.
            return true;
        };
        let before = self.net_rx.replace(now);
        before.is_some_and(|b| now.saturating_sub(b) >= WAKE_NET_RX)
    }

    /// Open or close the per-segment hooks' window for this tick.
    fn step_duty(&mut self) {
        let open = self.duty.step();
        if !open {
            if !self.hot.is_empty() {
                // Dropping the links detaches the programs.
                self.hot.clear();
                let saw = self.hook_calls() > self.calls_at_open;
                let was_backed_off = self.duty.backed_off();
                self.duty.window_closed(saw);
                if self.duty.backed_off() && !was_backed_off {
                    // The NET_RX count starts again from the next look.
                    self.net_rx = None;
                    self.host.debug_log("tcp_buffer: no segment in a window: per-segment hooks back off");
                }
            }
            if self.duty.backed_off() && self.ticks % DUTY.period == 0 && self.packets_moving() {
                self.duty.wake();
                self.host.debug_log(&format!(
                    "tcp_buffer: packets arriving: per-segment hooks every {} s again",
                    DUTY.period * TICK / 1000
                ));
            }
            return;
        }
        if !self.hot.is_empty() {
            return;
        }
        self.calls_at_open = self.hook_calls();
        let mut progs = vec![&self.skel.get().progs.bpftune_tcp_probe];
        if self.rcv_space_fallback {
            progs.push(&self.skel.get().progs.bpftune_rcv_space_adjust);
        }
        for prog in progs {
            match prog.attach() {
                Ok(link) => self.hot.push(link),
                Err(e) => {
                    self.host.debug_log(&format!("tcp_buffer: could not attach {}: {e}", prog.name().to_string_lossy()))
                }
            }
        }
    }

    /// TCP memory against `tcp_mem`, every second.
    fn check_memory(&mut self) {
        let allocated = match meminfo::read_sockstat_tcp_mem(Path::new("/proc")) {
            Ok(v) => v,
            Err(e) => {
                self.host.debug_log(&format!("tcp_buffer: {e}"));
                return;
            }
        };
        let Some(tcp_mem) = self.read(Tunable::TcpMem, 0).and_then(|v| <[i64; 3]>::try_from(v).ok()) else {
            return;
        };
        let state = policy::mem_state(allocated, tcp_mem, self.lr);
        if state.is_low() {
            self.on_memory(state, tcp_mem, self.global_cookie());
        } else if self.mem.is_low() {
            self.normal_ticks += 1;
            if self.normal_ticks >= LOWMEM_EXIT_TICKS {
                self.host.debug_log(&format!(
                    "tcp_buffer: TCP memory back to normal ({allocated} pages, tcp_mem {tcp_mem:?})"
                ));
                self.leave_lowmem();
            }
        }
    }

    fn on_syn_flood(&mut self, cookie: u64, upd: SysctlUpdate, extra: Extra) {
        let t = Tunable::TcpMaxSynBacklog;
        let backlog = upd.old[0];
        if !self.fresh(t, cookie, &[backlog]) {
            return;
        }
        let ns = self.ns.entry(cookie);
        ns.syn_flood = true;
        ns.corr.entry(t).or_default().update(extra.syn_floods as f64, extra.established as f64);
        let corr = self.corr(t, cookie);
        let (mut failed, mut recv) = (None, None);
        if extra.syncookies > 0 {
            match meminfo::read_netstat(&self.host, cookie, self.netns.inum(cookie)) {
                Ok(text) => {
                    if let Some((r, f)) = meminfo::syncookie_counters(&text) {
                        recv = Some(r);
                        failed = Some(f);
                    }
                }
                Err(e) => self.host.debug_log(&format!("tcp_buffer: {e}")),
            }
        }
        let input = SynInput {
            backlog,
            syncookies: extra.syncookies,
            mem: self.mem.max(extra.mem_state),
            corr: corr.compute(),
            corr_samples: corr.samples(),
            cookies_failed: failed,
            cookies_recv: recv,
            cap: self.bounds.syn_backlog_cap(),
        };
        let cookies = Tunable::TcpSyncookies;
        match policy::decide_syn_flood(input, self.lr) {
            SynDecision::DisableSyncookies { failed } => {
                let reason = tables::reason_syncookies_disable(failed, cookies.name());
                self.write(cookies, Scenario::SyncookiesDisable, cookie, &[0], &reason);
            }
            SynDecision::EnableSyncookies => {
                let reason = tables::reason_syncookies_enable(cookies.name());
                self.write(cookies, Scenario::SyncookiesEnable, cookie, &[1], &reason);
            }
            SynDecision::Grow(new) => {
                self.write(t, Scenario::SynBacklogIncrease, cookie, &[new], &tables::reason_syn_increase(t.name()));
            }
            SynDecision::Shrink(new) => {
                let reason = tables::reason_syn_decrease(t.name(), backlog, new);
                self.write(t, Scenario::SynBacklogDecrease, cookie, &[new], &reason);
            }
            SynDecision::SyncookiesActive | SynDecision::Nothing => {
                self.host.debug_log(&format!("tcp_buffer: SYN flood in netns cookie {cookie}: no change"));
            }
        }
    }
}

impl Tuner for TcpBufferTuner {
    const NAME: &'static str = "tcp_buffer";
    const TUNABLES: &'static [bpftune_sdk::abi::TunableDesc] = Tunable::TABLE;
    const SCENARIOS: &'static [bpftune_sdk::abi::ScenarioDesc] = Scenario::TABLE;
    const TICK_MS: u32 = TICK;

    fn init(host: Host) -> Result<Self, String> {
        let proc_root = Path::new("/proc");
        let free_pages = meminfo::read_free_buffer_pages(proc_root).map_err(|e| e.to_string())?;
        // SAFETY: sysconf has no preconditions.
        let page_size = i64::from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as i32).max(4096);
        let bounds = MemBounds { free_pages, page_size };
        let rcvbuf_grow = tracepoint_exists(RCVBUF_GROW_TP);
        let mut skel = OwnedSkel::<BpfSkel>::new(|storage| {
            let mut open = skel::TcpBufferSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
            prepare_object!(open, host)?;
            open.progs.bpftune_rcvbuf_grow.set_autoload(rcvbuf_grow);
            open.progs.bpftune_rcv_space_adjust.set_autoload(!rcvbuf_grow);
            // Per-segment hooks: attached in windows by step_duty().
            open.progs.bpftune_rcv_space_adjust.set_autoattach(false);
            open.progs.bpftune_tcp_probe.set_autoattach(false);
            open.load().map_err(|e| format!("BPF load for tuner 'tcp_buffer' failed: {e}"))
        })?;
        skel.with_mut(|s| s.attach()).map_err(|e| format!("could not attach skeleton: {e}"))?;
        let duty = DutyCycle::new(DUTY);
        let window = format!(
            "attached {} ms in every {} s ({:.1} % of the time)",
            DUTY.window * TICK,
            DUTY.period * TICK / 1000,
            duty.share() * 100.0
        );
        if rcvbuf_grow {
            host.feature("receive buffers", FeatureState::Active, "tp_btf/tcp_rcvbuf_grow (once per RTT at most)");
        } else {
            host.feature(
                "receive buffers",
                FeatureState::Fallback,
                &format!("no tcp_rcvbuf_grow tracepoint (before 6.16): tp_btf/tcp_rcv_space_adjust, sampled, {window}"),
            );
        }
        host.feature("send buffers", FeatureState::Active, &format!("tp_btf/tcp_probe, sampled, {window}"));
        host.debug_log(&format!(
            "tcp_buffer: free buffer pages {free_pages}; tcp_mem bounds ({} {} {}), buffer cap {}",
            bounds.mem_min_cap(),
            bounds.mem_pressure_cap(),
            bounds.mem_max_cap(),
            bounds.buffer_cap()
        ));
        Ok(Self {
            host,
            lr: host.learning_rate(),
            bounds,
            netns: NetnsAdmission::new(host.global_netns_cookie(), UnknownNetns::Skip),
            ns: PerNetns::new(),
            mem: MemState::Normal,
            normal_ticks: 0,
            ticks: 0,
            duty,
            rcv_space_fallback: !rcvbuf_grow,
            hot: Vec::new(),
            calls_at_open: 0,
            net_rx: None,
            skel,
        })
    }

    fn event(&mut self, event: &Event) -> Result<(), String> {
        let Some(cookie) = self.netns.admit(&self.host, event) else { return Ok(()) };
        let upd = event.update();
        let extra = Extra::decode(event);
        match Tunable::from_id(upd.tunable) {
            Some(t @ (Tunable::TcpRmem | Tunable::TcpWmem)) => self.on_buffer(t, cookie, upd, extra),
            Some(Tunable::TcpMem) => {
                let state = match Scenario::from_id(event.scenario_id()) {
                    Some(Scenario::MemExhaustion) => MemState::Exhaustion,
                    _ => MemState::Pressure,
                };
                if self.fresh(Tunable::TcpMem, self.global_cookie(), &upd.old) {
                    self.on_memory(state, upd.old, cookie);
                }
            }
            Some(Tunable::TcpMaxSynBacklog) => self.on_syn_flood(cookie, upd, extra),
            _ => self.host.debug_log(&format!("tcp_buffer: unexpected event for tunable {}", upd.tunable)),
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), String> {
        self.step_duty();
        if self.ticks % MEM_CHECK_TICKS == 0 {
            self.check_memory();
        }
        self.ticks = self.ticks.wrapping_add(1);
        Ok(())
    }

    fn netns_state(&mut self) -> Vec<&mut dyn NetnsState> {
        netns_states(&mut self.netns, &mut self.ns)
    }

    fn samples(&self) -> Vec<bpftune_sdk::sample::SampleCount> {
        bpftune_sdk::sample::read_samples(&self.skel.get().maps.sample_map, &SAMPLE_NAMES)
    }

    fn fini(&mut self) -> Result<(), String> {
        // Links are dropped with the skeleton (the windowed ones here);
        // nothing is restored (the daemon's rollback does that when asked).
        self.hot.clear();
        Ok(())
    }
}

bpftune_sdk::export_tuner!(TcpBufferTuner);

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_sdk::testing::{self, ALIVE, GLOBAL, GONE};

    /// Every field of one namespace's state set, as a busy namespace in low
    /// memory would have them.
    fn busy() -> NsState {
        let mut ns = NsState::default();
        ns.corr.entry(Tunable::TcpRmem).or_default().update(1.0, 2.0);
        ns.latency_hold.insert(Tunable::TcpWmem, 4096);
        ns.raised.insert(Tunable::TcpRmem, Raised { initial_max: 6 << 20 });
        ns.last_written.insert(Tunable::TcpRmem, vec![4096, 131072, 8 << 20]);
        ns.moderate_checked = true;
        ns.lowmem = true;
        ns.lowmem_set.push(Tunable::TcpNoMetricsSave);
        ns.syn_saved = Some(1024);
        ns.syn_flood = true;
        ns
    }

    #[test]
    fn a_released_namespace_leaves_nothing() {
        let mut ns: PerNetns<NsState> = PerNetns::new();
        for cookie in [GLOBAL, GONE, ALIVE] {
            *ns.entry(cookie) = busy();
        }
        let mut held = (testing::admission(UnknownNetns::Skip), ns);
        testing::assert_released_namespace_leaves_nothing(&mut held, |(netns, ns)| netns_states(netns, ns));
        assert_eq!(held.1.get(ALIVE).map(|s| s.corr.get(&Tunable::TcpRmem).map(Corr::samples)), Some(Some(1)));
    }
}
