//! The daemon side of the plugin ABI: the state tuner callbacks act on
//! (registry, namespaces, sysctl I/O, logger) and the `extern "C"` host
//! functions behind [`crate::abi::HostVtable`], each guarded against panics.
//!
//! Everything runs on the daemon's main thread. The daemon never holds a
//! borrow of [`HostState`] while it calls into a tuner, so a tuner's callback
//! can always borrow it; if it cannot, the callback fails instead of
//! panicking.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use abi_stable::prefix_type::WithMetadata;
use abi_stable::std_types::{RResult, RStr, RString, RVec};

use crate::abi::{
    AdminWrite, CallError, FeatureState, HostContext, HostHandle, HostVtable, HostVtableRef, LogLevel, NetnsChange,
    NetnsChangeKind, NetnsInfo, NetnsJobFn, NetnsScan, SupportLevel, SysctlValue, WriteOutcome, WriteRequest,
};
use crate::advice::{Advice, AdviceLog};
use crate::learning::LearningRate;
use crate::netns::{self, NetnsHandle, NetnsRegistry, NsTarget};
use crate::registry::{FeatureInfo, Registry, TunerState};
use crate::sysctl::{self, SysctlIo};

/// Where log lines go; set by the daemon (syslog or stderr), or a buffer in
/// tests.
pub type LogSink = Rc<dyn Fn(LogLevel, &str)>;

/// Called before the first change of a tunable in a namespace, with the
/// value to restore; the daemon journals it durably.
pub type FirstWriteHook = Box<dyn FnMut(&FirstWrite<'_>)>;

/// What [`FirstWriteHook`] receives.
#[derive(Debug, Clone, Copy)]
pub struct FirstWrite<'a> {
    pub tuner: &'a str,
    pub tunable: &'a str,
    pub netns_cookie: u64,
    pub global: bool,
    pub original: &'a str,
}

/// Called before every sysctl write made for a tuner (never in advise
/// mode), after [`FirstWriteHook`]: the daemon journals the value being
/// replaced and the value about to be written, and where.
pub type WriteHook = Box<dyn FnMut(&PlannedWrite<'_>)>;

/// What [`WriteHook`] receives.
#[derive(Debug, Clone, Copy)]
pub struct PlannedWrite<'a> {
    pub tuner: &'a str,
    pub tunable: &'a str,
    pub netns_cookie: u64,
    pub global: bool,
    /// How to find the namespace again (None for the global one).
    pub netns: Option<&'a NetnsHandle>,
    pub old: &'a str,
    pub new: &'a str,
}

/// Settings fixed at start-up.
#[derive(Debug, Clone, Copy)]
pub struct HostConfig {
    pub debug: bool,
    /// Decide but never write: log advice instead.
    pub advise: bool,
    pub learning_rate: LearningRate,
    pub support: SupportLevel,
    pub daemon_pid: u32,
    pub netns_cookie_supported: bool,
}

pub use crate::messages::{change_reason, scenario_line};

/// Everything tuner callbacks act on.
pub struct HostState {
    pub config: HostConfig,
    pub registry: Registry,
    pub netns: NetnsRegistry,
    pub advice: AdviceLog,
    sysctl: Box<dyn SysctlIo>,
    log: LogSink,
    first_write: Option<FirstWriteHook>,
    write_hook: Option<WriteHook>,
    /// Namespace changes not yet handed to the netns tuner; `None` until it
    /// first asks (so nothing queues up without one).
    netns_watcher: Option<VecDeque<NetnsChange>>,
    /// Namespaces whose daemon-side state was released and whose tuner-side
    /// state is still to be (see [`HostState::take_released_netns`]).
    released_netns: Vec<u64>,
    /// The daemon's own recent writes (see [`admin::OwnWrites`]).
    own_writes: admin::OwnWrites,
    /// The operator's limits (`limits.conf`); empty unless configured.
    envelope: crate::limits::Envelope,
    /// Where the manual state is the operator's hold (`-q hold`).
    holds: admin::Holds,
    /// Samples, changes waiting for a verdict, back-offs.
    pub evidence: crate::evidence::Tracker,
    /// Revert changes judged `hurt` (not with `--no-revert`).
    revert: bool,
    read_counters: verdicts::CounterReader,
    verdict_hook: Option<verdicts::VerdictHook>,
}

/// Shared handle the daemon and the per-tuner bindings hold.
pub type SharedHost = Rc<RefCell<HostState>>;

impl HostState {
    pub fn new(config: HostConfig, netns: NetnsRegistry, sysctl: Box<dyn SysctlIo>, log: LogSink) -> Self {
        Self {
            config,
            registry: Registry::new(),
            netns,
            advice: AdviceLog::default(),
            sysctl,
            log,
            first_write: None,
            write_hook: None,
            netns_watcher: None,
            released_netns: Vec::new(),
            own_writes: admin::OwnWrites::default(),
            envelope: crate::limits::Envelope::default(),
            holds: admin::Holds::default(),
            evidence: crate::evidence::Tracker::new(),
            revert: true,
            read_counters: Box::new(verdicts::read_counters_proc),
            verdict_hook: None,
        }
    }

    /// The limits every tuner's values are clamped into from now on.
    pub fn set_limits(&mut self, limits: crate::limits::Limits) {
        self.envelope.set(limits);
    }

    pub fn limits(&self) -> &crate::limits::Limits {
        self.envelope.limits()
    }

    /// Values for a tuner's write after the operator's limits; logs the
    /// clamp (once per distinct result).
    fn limited(&mut self, tuner: &str, tunable: &str, cookie: u64, global: bool, values: &[i64]) -> String {
        let (values, line) = self.envelope.apply(tuner, tunable, cookie, global, values);
        if let Some(line) = line {
            self.log(LogLevel::Notice, &line);
        }
        sysctl::format_values(&values)
    }

    /// Log and apply what the namespace registry noticed: a destroyed
    /// namespace's state is released in every tuner (it is then "gone" for
    /// a while, so late events are skipped), a created one is tracked.
    pub fn sync_netns(&mut self) {
        if !self.netns.has_pending() {
            return;
        }
        for change in self.netns.take_changes() {
            let cookie = change.cookie;
            let what = match change.kind {
                NetnsChangeKind::Created => "created",
                NetnsChangeKind::Found => "found",
                NetnsChangeKind::Destroyed => "destroyed",
            };
            if change.kind != NetnsChangeKind::Destroyed && !self.netns.is_gone(cookie) {
                self.registry.clear_gone(cookie);
            }
            self.log(LogLevel::Debug, &format!("netns {what} (cookie {cookie})"));
            if let Some(q) = self.netns_watcher.as_mut() {
                if q.len() >= netns::CHANGES_MAX {
                    q.pop_front();
                }
                q.push_back(change);
            }
        }
        for cookie in self.netns.take_evicted() {
            self.registry.forget_netns(cookie);
            self.evidence.forget(cookie);
        }
        // Tuners hear of each gone namespace once, here; late events for it
        // stop at the daemon while it stays marked gone.
        for cookie in self.netns.take_newly_gone() {
            self.registry.forget_netns(cookie);
            self.evidence.forget(cookie);
            if self.netns.is_gone(cookie) {
                self.registry.mark_gone(cookie);
            }
            self.released_netns.push(cookie);
        }
    }

    /// Namespaces released since the last call, each once: the daemon
    /// passes them to every tuner's `netns_released` outside any tuner
    /// call (a release can be noticed in the middle of one).
    pub fn take_released_netns(&mut self) -> Vec<u64> {
        let mut cookies = std::mem::take(&mut self.released_netns);
        cookies.sort_unstable();
        cookies.dedup();
        cookies
    }

    /// The netns tuner's call: learn an event's namespace, scan, release
    /// the dead, and return the changes since it last asked.
    pub fn netns_changes(&mut self, cookie: u64, inum: u32, pid: i32, scan: NetnsScan) -> Vec<NetnsChange> {
        if self.netns_watcher.is_none() {
            self.netns_watcher = Some(VecDeque::new());
        }
        if cookie != 0 {
            self.netns.note(cookie, u64::from(inum), pid);
        }
        match scan {
            NetnsScan::None => {}
            NetnsScan::IfChanged => {
                self.netns.scan_if_changed();
            }
            NetnsScan::Full => self.netns.scan(),
        }
        self.sync_netns();
        self.netns_watcher.as_mut().map(|q| q.drain(..).collect()).unwrap_or_default()
    }

    /// Where to act for namespace `cookie` (`inum`, if not 0, helps find a
    /// namespace not seen before), for a tuner's namespace job.
    pub fn netns_target(&mut self, cookie: u64, inum: u32) -> io::Result<NsTarget> {
        if inum != 0 && !self.netns.is_global(cookie) {
            self.netns.note(cookie, u64::from(inum), 0);
        }
        let r = self.netns.target(cookie);
        self.sync_netns();
        r
    }

    /// Every namespace known (the daemon's own first), after looking for
    /// new ones as `scan` says.
    pub fn netns_list(&mut self, scan: NetnsScan) -> Vec<NetnsInfo> {
        match scan {
            NetnsScan::None => {}
            NetnsScan::IfChanged => {
                self.netns.scan_if_changed();
            }
            NetnsScan::Full => self.netns.scan(),
        }
        self.sync_netns();
        let mut list = vec![NetnsInfo { cookie: self.netns.global_cookie(), inum: self.netns.global_inum() }];
        list.extend(
            self.netns
                .known_cookies()
                .filter_map(|c| self.netns.handle(c))
                .map(|h| NetnsInfo { cookie: h.cookie, inum: h.inum }),
        );
        list
    }

    /// State of tuner `tuner_id` in namespace `cookie`: active, manual
    /// (an administrator took over there) or gone (namespace destroyed).
    pub fn tuner_netns_state(&self, tuner_id: u32, cookie: u64) -> Option<TunerState> {
        let cookie = self.netns.normalize(cookie);
        let t = self.registry.get(tuner_id)?;
        if t.state == TunerState::Active && self.netns.is_gone(cookie) {
            return Some(TunerState::Gone);
        }
        Some(t.netns_state(cookie))
    }

    pub fn set_first_write_hook(&mut self, hook: FirstWriteHook) {
        self.first_write = Some(hook);
    }

    pub fn set_write_hook(&mut self, hook: WriteHook) {
        self.write_hook = Some(hook);
    }

    pub fn logger(&self) -> LogSink {
        self.log.clone()
    }

    pub fn log(&self, level: LogLevel, msg: &str) {
        (self.log)(level, msg);
    }

    fn ns_label(&self, cookie: u64) -> String {
        if self.netns.is_global(cookie) { "global ns".to_string() } else { format!("netns (cookie {cookie})") }
    }

    /// Read a sysctl as text in the namespace with that cookie.
    pub fn read_text(&mut self, cookie: u64, name: &str) -> io::Result<String> {
        let r = match self.netns.target(cookie) {
            Ok(mut target) => self.read_at(cookie, &mut target, name),
            Err(e) => Err(e),
        };
        self.sync_netns();
        r
    }

    /// Read at `target`; if the namespace's path vanished meanwhile (a
    /// process left), find another path for it once and retry.
    fn read_at(&mut self, cookie: u64, target: &mut NsTarget, name: &str) -> io::Result<String> {
        match self.sysctl.read(target, name) {
            Err(e) if netns::is_gone_error(&e) && matches!(target, NsTarget::Netns(_)) => {
                *target = self.netns.retarget(cookie)?;
                self.sysctl.read(target, name)
            }
            r => r,
        }
    }

    /// Write at `target`, with the same single retry as [`Self::read_at`].
    fn write_at(&mut self, cookie: u64, target: &mut NsTarget, name: &str, text: &str) -> io::Result<()> {
        self.own_writes.record(name, text);
        match self.sysctl.write(target, name, text) {
            Err(e) if netns::is_gone_error(&e) && matches!(target, NsTarget::Netns(_)) => {
                *target = self.netns.retarget(cookie)?;
                self.sysctl.write(target, name, text)
            }
            r => r,
        }
    }

    /// The value as text, as compared and logged: for numbers the
    /// kernel's tabs become single spaces.
    pub(super) fn read_current(
        &mut self,
        cookie: u64,
        target: &mut NsTarget,
        name: &str,
        string: bool,
    ) -> io::Result<String> {
        let t = self.read_at(cookie, target, name)?;
        Ok(if string { t } else { t.split_whitespace().collect::<Vec<_>>().join(" ") })
    }

    /// The one way a change reaches the kernel, a tuner's write or a
    /// revert alike: the daemon journals it first (the write hook), then
    /// it is written.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn journal_and_write(
        &mut self,
        tuner: &str,
        tunable: &str,
        cookie: u64,
        global: bool,
        target: &mut NsTarget,
        old: &str,
        new: &str,
    ) -> io::Result<()> {
        if let Some(hook) = self.write_hook.as_mut() {
            hook(&PlannedWrite {
                tuner,
                tunable,
                netns_cookie: cookie,
                global,
                netns: match &*target {
                    NsTarget::Netns(h) => Some(h),
                    NsTarget::Global => None,
                },
                old,
                new,
            });
        }
        self.write_at(cookie, target, tunable, new)
    }

    /// Write a sysctl as text in the namespace with that cookie (rollback).
    pub fn write_text(&mut self, cookie: u64, name: &str, text: &str) -> io::Result<()> {
        let r = match self.netns.target(cookie) {
            Ok(mut target) => self.write_at(cookie, &mut target, name, text),
            Err(e) => Err(e),
        };
        self.sync_netns();
        r
    }

    /// Read for a tuner: integers or a string.
    pub fn read_value(&mut self, cookie: u64, name: &str, string: bool) -> Result<SysctlValue, String> {
        let text = self
            .read_text(cookie, name)
            .map_err(|e| format!("could not read sysctl '{name}' in {}: {e}", self.ns_label(cookie)))?;
        if string {
            Ok(SysctlValue { ints: RVec::new(), text: RString::from(text), is_string: true })
        } else {
            let ints = sysctl::parse_ints(&text).map_err(|e| format!("could not parse sysctl '{name}': {e}"))?;
            Ok(SysctlValue { ints: RVec::from(ints), text: RString::from(text), is_string: false })
        }
    }

    /// The sysctl writer: checks, no-op detection, advice, journaling, the
    /// write itself, the two log lines and the counters.
    pub fn write(&mut self, tuner_id: u32, req: &WriteRequest<'_>) -> Result<WriteOutcome, String> {
        let Some(tuner) = self.registry.get(tuner_id) else {
            return Err(format!("no tuner with id {tuner_id}"));
        };
        let tuner_name = tuner.name.clone();
        let Some(info) = tuner.tunables.get(req.tunable as usize).cloned() else {
            return Err(format!("no tunable {} for tuner '{tuner_name}'", req.tunable));
        };
        let Some(scenario) = tuner.scenarios.get(req.scenario as usize).cloned() else {
            return Err(format!("no scenario {} for tuner '{tuner_name}'", req.scenario));
        };
        if !info.is_sysctl() {
            return Err(format!("tunable '{}' of tuner '{tuner_name}' is not a sysctl", info.name));
        }
        // Global tunables are always changed (and owned) in the daemon's
        // namespace, whatever namespace the event came from.
        let cookie =
            if info.namespaced() { self.netns.normalize(req.netns_cookie) } else { self.netns.global_cookie() };
        let global = self.netns.is_global(cookie);
        let state = tuner.netns_state(cookie);
        if state != TunerState::Active {
            self.log(
                LogLevel::Debug,
                &format!(
                    "Skipping update of '{}' ; tuner '{tuner_name}' is {} in netns (cookie {cookie})",
                    info.name,
                    state.as_str()
                ),
            );
            if state == TunerState::Gone {
                return Ok(WriteOutcome::NetnsGone);
            }
            return Ok(WriteOutcome::SkippedManual);
        }
        let key = Self::change_key(tuner_id, &info.name, cookie);
        if let Some(until) = self.backing_off(&key) {
            let left = until.saturating_duration_since(std::time::Instant::now()).as_secs();
            self.log(
                LogLevel::Debug,
                &format!(
                    "Skipping update of '{}' ; tuner '{tuner_name}' backs off it in netns (cookie {cookie}) for {left} s more after a change that hurt",
                    info.name
                ),
            );
            return Ok(WriteOutcome::Unchanged);
        }
        let new_text = if info.is_string() {
            req.text.as_str().trim().to_string()
        } else {
            self.limited(&tuner_name, &info.name, cookie, global, req.values.as_slice())
        };

        let target = self.netns.target(cookie);
        self.sync_netns();
        let mut target = match target {
            Ok(t) => t,
            Err(_) => return Ok(self.netns_gone(tuner_id, cookie, &info.name)),
        };
        let old_text = match self.read_current(cookie, &mut target, &info.name, info.is_string()) {
            Ok(t) => t,
            Err(e) if netns::is_gone_error(&e) && !global => {
                return Ok(self.netns_gone(tuner_id, cookie, &info.name));
            }
            Err(e) => return Err(format!("could not read sysctl '{}' in {}: {e}", info.name, self.ns_label(cookie))),
        };
        if same_value(&old_text, &new_text, info.is_string()) {
            return Ok(WriteOutcome::Unchanged);
        }

        let scenario_msg = scenario_line(&scenario.name, &info.name, global, &scenario.description);
        let reason = if global {
            req.reason.as_str().to_string()
        } else {
            format!("{} (netns cookie {cookie})", req.reason.as_str())
        };

        if self.config.advise {
            let advice =
                Advice::new(&tuner_name, &info.name, cookie, global, &old_text, &new_text, &scenario.name, &reason);
            if self.advice.record(advice.clone()) {
                self.log(LogLevel::Notice, &advice.log_line());
            }
            return Ok(WriteOutcome::Advised);
        }

        // Remember (and let the daemon journal) the original before the
        // first change in this namespace.
        let first = self
            .registry
            .get(tuner_id)
            .and_then(|t| t.records.get(req.tunable as usize))
            .is_some_and(|r| !r.initial.contains_key(&cookie));
        if first {
            if let Some(hook) = self.first_write.as_mut() {
                hook(&FirstWrite {
                    tuner: &tuner_name,
                    tunable: &info.name,
                    netns_cookie: cookie,
                    global,
                    original: &old_text,
                });
            }
        }

        match self.journal_and_write(&tuner_name, &info.name, cookie, global, &mut target, &old_text, &new_text) {
            Ok(()) => {}
            Err(e) if netns::is_gone_error(&e) && !global => {
                return Ok(self.netns_gone(tuner_id, cookie, &info.name));
            }
            Err(e) => {
                let msg = format!(
                    "could not change sysctl '{}' in {} from ({old_text}) to ({new_text}): {e}",
                    info.name,
                    self.ns_label(cookie)
                );
                self.log(LogLevel::Err, &msg);
                return Err(msg);
            }
        }

        self.log(LogLevel::Notice, &scenario_msg);
        self.log(LogLevel::Notice, &reason);
        if let Some(rec) = self.registry.get_mut(tuner_id).and_then(|t| t.records.get_mut(req.tunable as usize)) {
            rec.initial.entry(cookie).or_insert_with(|| old_text.clone());
            rec.current.insert(cookie, new_text.clone());
            *rec.counts.entry((req.scenario, cookie)).or_insert(0) += 1;
        }
        self.register_change(key, &tuner_name, &scenario.name, global, &old_text, &new_text);
        Ok(WriteOutcome::Written)
    }

    /// The namespace vanished under a write: one debug line, its state
    /// released in every tuner (via [`HostState::sync_netns`]), no error.
    /// (Later writes for it stop earlier, at the "gone" state check.)
    fn netns_gone(&mut self, _tuner_id: u32, cookie: u64, tunable: &str) -> WriteOutcome {
        self.netns.forget(cookie);
        self.log(LogLevel::Debug, &format!("netns (cookie {cookie}) is gone; not changing '{tunable}' there"));
        self.sync_netns();
        WriteOutcome::NetnsGone
    }

    /// Log and count a change made another way (netlink, per socket).
    pub fn update(&mut self, tuner_id: u32, tunable: u32, scenario: u32, cookie: u64, reason: &str) -> WriteOutcome {
        let cookie = self.netns.normalize(cookie);
        let global = self.netns.is_global(cookie);
        let Some(tuner) = self.registry.get(tuner_id) else {
            return WriteOutcome::SkippedManual;
        };
        // A gone namespace can still be reported on (the netns tuner logs
        // its destruction); only an inactive tuner or an admin blocks this.
        if !matches!(tuner.netns_state(cookie), TunerState::Active | TunerState::Gone) {
            return WriteOutcome::SkippedManual;
        }
        // Counts of dead namespaces go to one bucket, so they cannot pile up.
        let count_cookie = if self.netns.is_gone(cookie) { crate::registry::RETIRED_NETNS_COOKIE } else { cookie };
        let (Some(info), Some(sc)) = (tuner.tunables.get(tunable as usize), tuner.scenarios.get(scenario as usize))
        else {
            self.log(LogLevel::Err, &format!("no tunable {tunable} / scenario {scenario} for tuner '{}'", tuner.name));
            return WriteOutcome::Unchanged;
        };
        let line = scenario_line(&sc.name, &info.name, global, &sc.description);
        self.log(LogLevel::Notice, &line);
        self.log(LogLevel::Notice, reason);
        if let Some(rec) = self.registry.get_mut(tuner_id).and_then(|t| t.records.get_mut(tunable as usize)) {
            *rec.counts.entry((scenario, count_cookie)).or_insert(0) += 1;
        }
        WriteOutcome::Written
    }

    /// Tuner `tuner_id` says how one of its parts fares on this kernel:
    /// kept for `-S` and `-q jstatus`, and logged once (a part not working
    /// as designed at INFO, else at DEBUG) when first reported or changed.
    pub fn feature(&mut self, tuner_id: u32, part: &str, state: FeatureState, detail: &str) {
        let Some(tuner) = self.registry.get_mut(tuner_id) else { return };
        let info = FeatureInfo { part: part.to_string(), state, detail: detail.to_string() };
        let line = info.line(&tuner.name);
        match tuner.features.iter_mut().find(|f| f.part == part) {
            Some(f) if *f == info => return,
            Some(f) => *f = info,
            None => tuner.features.push(info),
        }
        let level = if state == FeatureState::Active { LogLevel::Debug } else { LogLevel::Info };
        self.log(level, &line);
    }
}

fn same_value(old: &str, new: &str, string: bool) -> bool {
    if string {
        return old.trim() == new.trim();
    }
    match (sysctl::parse_ints(old), sysctl::parse_ints(new)) {
        (Ok(a), Ok(b)) => a == b,
        _ => old.trim() == new.trim(),
    }
}

/// First word of `/proc/<pid>/cmdline`, or `?`.
pub fn process_command(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|b| {
            let first = b.split(|&c| c == 0).next()?.to_vec();
            let s = String::from_utf8_lossy(&first).into_owned();
            if s.is_empty() { None } else { Some(s) }
        })
        .unwrap_or_else(|| "?".to_string())
}

/// What a tuner's [`HostHandle`] points to.
pub struct HostBinding {
    pub tuner_id: u32,
    pub host: SharedHost,
    log: LogSink,
}

impl HostBinding {
    pub fn new(tuner_id: u32, host: SharedHost) -> Box<Self> {
        let log = host.borrow().logger();
        Box::new(Self { tuner_id, host, log })
    }
}

/// Run a host callback: find the binding, catch panics, fall back on error.
fn with_binding<R>(handle: HostHandle, fallback: R, f: impl FnOnce(&HostBinding) -> R) -> R {
    if handle.0.is_null() {
        return fallback;
    }
    // SAFETY: the daemon creates every HostHandle from a Box<HostBinding>
    // it keeps alive (and unmoved) for as long as the tuner is loaded.
    let binding = unsafe { &*handle.0.cast::<HostBinding>() };
    match catch_unwind(AssertUnwindSafe(|| f(binding))) {
        Ok(r) => r,
        Err(_) => {
            (binding.log)(LogLevel::Err, "internal error: host callback panicked");
            fallback
        }
    }
}

fn busy() -> CallError {
    CallError::busy("daemon state is busy (re-entrant host call)")
}

/// A host call that returns nothing could not be served (re-entrant call):
/// say so instead of dropping it silently.
fn log_busy(b: &HostBinding, what: &str) {
    (b.log)(LogLevel::Warning, &format!("{what} ignored: {}", busy().message));
}

extern "C" fn host_log(handle: HostHandle, level: LogLevel, msg: RStr<'_>) {
    with_binding(handle, (), |b| {
        if level == LogLevel::Debug && !b.host.try_borrow().map(|h| h.config.debug).unwrap_or(true) {
            return;
        }
        (b.log)(level, msg.as_str())
    })
}

extern "C" fn host_sysctl_read(
    handle: HostHandle,
    cookie: u64,
    name: RStr<'_>,
    string: bool,
) -> RResult<SysctlValue, CallError> {
    with_binding(handle, RResult::RErr(CallError::panicked("host sysctl read")), |b| match b.host.try_borrow_mut() {
        Ok(mut h) => h.read_value(cookie, name.as_str(), string).map_err(CallError::failed).into(),
        Err(_) => RResult::RErr(busy()),
    })
}

extern "C" fn host_tunable_write(handle: HostHandle, req: &WriteRequest<'_>) -> RResult<WriteOutcome, CallError> {
    with_binding(handle, RResult::RErr(CallError::panicked("host tunable write")), |b| match b.host.try_borrow_mut() {
        Ok(mut h) => h.write(b.tuner_id, req).map_err(CallError::failed).into(),
        Err(_) => RResult::RErr(busy()),
    })
}

extern "C" fn host_tunable_update(
    handle: HostHandle,
    tunable: u32,
    scenario: u32,
    cookie: u64,
    reason: RStr<'_>,
) -> WriteOutcome {
    with_binding(handle, WriteOutcome::Unchanged, |b| match b.host.try_borrow_mut() {
        Ok(mut h) => h.update(b.tuner_id, tunable, scenario, cookie, reason.as_str()),
        Err(_) => {
            log_busy(b, "tunable update");
            WriteOutcome::Unchanged
        }
    })
}

extern "C" fn host_admin_override(handle: HostHandle, pid: i32, cookie: u64, name: RStr<'_>) {
    with_binding(handle, (), |b| match b.host.try_borrow_mut() {
        Ok(mut h) => {
            h.admin_override(pid, cookie, name.as_str());
        }
        Err(_) => log_busy(b, "admin override"),
    })
}

extern "C" fn host_admin_write(handle: HostHandle, w: &AdminWrite<'_>) {
    with_binding(handle, (), |b| {
        let Ok(mut h) = b.host.try_borrow_mut() else {
            log_busy(b, "admin write");
            return;
        };
        {
            h.admin_write(&AdminWriteInfo {
                pid: w.pid,
                netns_cookie: w.netns_cookie,
                netns_known: w.netns_known,
                name: w.name.as_str().to_string(),
                value: w.value.as_str().to_string(),
                comm: w.comm.as_str().to_string(),
            });
        }
    })
}

extern "C" fn host_feature(handle: HostHandle, part: RStr<'_>, state: FeatureState, detail: RStr<'_>) {
    with_binding(handle, (), |b| match b.host.try_borrow_mut() {
        Ok(mut h) => h.feature(b.tuner_id, part.as_str(), state, detail.as_str()),
        Err(_) => (b.log)(LogLevel::Info, &format!("{} {}: {}", part.as_str(), state.as_str(), detail.as_str())),
    })
}

extern "C" fn host_netns_seen(handle: HostHandle, cookie: u64, inum: u32) {
    with_binding(handle, (), |b| match b.host.try_borrow_mut() {
        Ok(mut h) => {
            h.netns.note(cookie, u64::from(inum), 0);
            h.sync_netns();
        }
        Err(_) => log_busy(b, "netns seen"),
    })
}

extern "C" fn host_netns_changes(
    handle: HostHandle,
    cookie: u64,
    inum: u32,
    pid: i32,
    scan: NetnsScan,
) -> RVec<NetnsChange> {
    with_binding(handle, RVec::new(), |b| match b.host.try_borrow_mut() {
        Ok(mut h) => RVec::from(h.netns_changes(cookie, inum, pid, scan)),
        Err(_) => {
            log_busy(b, "netns changes");
            RVec::new()
        }
    })
}

extern "C" fn host_netns_run(
    handle: HostHandle,
    cookie: u64,
    inum: u32,
    job: NetnsJobFn,
    ctx: *mut c_void,
) -> RResult<(), CallError> {
    with_binding(handle, RResult::RErr(CallError::panicked("host namespace job")), |b| {
        let raw = netns::RawJob { run: job.run, ctx };
        let run = |target: &NsTarget| match target {
            NsTarget::Global => netns::run_raw(netns::Where::Own, raw),
            NsTarget::Netns(h) => netns::run_raw(netns::Where::Netns(h), raw),
        };
        let target = match b.host.try_borrow_mut() {
            Ok(mut h) => h.netns_target(cookie, inum),
            Err(_) => return RResult::RErr(busy()),
        };
        // The state is not borrowed while the job runs.
        let result = match target.and_then(|t| run(&t)) {
            // The namespace's path went away (a process left): find another
            // path once; the job did not run.
            Err(e) if netns::is_gone_error(&e) => {
                let retarget = match b.host.try_borrow_mut() {
                    Ok(mut h) => h.netns.retarget(cookie),
                    Err(_) => return RResult::RErr(busy()),
                };
                retarget.and_then(|t| run(&t))
            }
            r => r,
        };
        result.map_err(|e| CallError::failed(e.to_string())).into()
    })
}

extern "C" fn host_netns_list(handle: HostHandle, scan: NetnsScan) -> RVec<NetnsInfo> {
    with_binding(handle, RVec::new(), |b| match b.host.try_borrow_mut() {
        Ok(mut h) => RVec::from(h.netns_list(scan)),
        Err(_) => {
            log_busy(b, "netns list");
            RVec::new()
        }
    })
}

static HOST_VTABLE: WithMetadata<HostVtable> = WithMetadata::new(HostVtable {
    log: host_log,
    sysctl_read: host_sysctl_read,
    tunable_write: host_tunable_write,
    tunable_update: host_tunable_update,
    admin_override: host_admin_override,
    netns_seen: host_netns_seen,
    netns_changes: host_netns_changes,
    feature: host_feature,
    admin_write: host_admin_write,
    netns_run: host_netns_run,
    netns_list: host_netns_list,
});

/// The vtable every tuner's context points to.
pub fn host_vtable() -> HostVtableRef {
    HostVtableRef(HOST_VTABLE.static_as_prefix())
}

/// Fixed per-daemon parts of every tuner's context.
#[derive(Debug, Clone, Copy)]
pub struct SharedFds {
    pub ringbuf_fd: i32,
    pub stats_map_fd: i32,
    pub cgroup_fd: i32,
}

/// Build the context for tuner `binding` (which must outlive the tuner).
pub fn make_context(binding: &HostBinding, fds: SharedFds, strategy_id: u32) -> HostContext {
    let h = binding.host.borrow();
    HostContext {
        tuner_id: binding.tuner_id,
        ringbuf_fd: fds.ringbuf_fd,
        stats_map_fd: fds.stats_map_fd,
        cgroup_fd: fds.cgroup_fd,
        learning_rate: h.config.learning_rate.rate(),
        support: h.config.support,
        debug: h.config.debug,
        daemon_pid: h.config.daemon_pid,
        global_netns_cookie: h.netns.global_cookie(),
        netns_cookie_supported: h.config.netns_cookie_supported,
        strategy_id,
        host: HostHandle((binding as *const HostBinding).cast::<c_void>()),
        vtable: host_vtable(),
    }
}

mod admin;
mod verdicts;
pub use admin::{AdminWriteInfo, ManualBy, OperatorAction};
pub use verdicts::{CounterReader, VerdictHook, read_counters_proc};

#[cfg(test)]
mod tests;
