//! The set of loaded tuners: loading plugin files (trust, ABI, init),
//! dispatching ring-buffer events by tuner id, ticks and strategy switches,
//! and finalising (summary, rollback). A tuner that panics or fails is
//! finalised and disabled; the others keep running.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use abi_stable::std_types::{RResult, RSlice};
use bpftune_core::LogLevel;
use bpftune_core::abi::CallError;
use bpftune_core::abi::{FeatureState, InstanceHandle, TunableKind};
use bpftune_core::event::Event;
use bpftune_core::host::{HostBinding, SharedFds, SharedHost, make_context, scenario_line};
use bpftune_core::loader::{self, Plugin};
use bpftune_core::privilege::Raised;
use bpftune_core::registry::{TunerRecord, TunerState};
use bpftune_core::strategy::{StrategyClock, choose};
use bpftune_core::summary;

use crate::logging;
use crate::rollback;

/// One loaded tuner.
pub struct LoadedTuner {
    pub id: u32,
    pub plugin: Plugin,
    pub instance: Option<InstanceHandle>,
    /// What the instance's host handle points to; boxed so it never moves.
    binding: Box<HostBinding>,
    pub next_tick: Option<Instant>,
    pub strategy: Option<StrategyClock>,
    pub rollback: bool,
}

impl LoadedTuner {
    pub fn name(&self) -> &str {
        self.plugin.descriptor.name.as_str()
    }
}

/// Every tuner loaded by this daemon, in load order. With `-R`, every
/// tuner (including ones hot-added later, unlike the original) is rolled
/// back when it is finalised.
pub struct TunerSet {
    pub host: SharedHost,
    pub tuners: Vec<LoadedTuner>,
    fds: SharedFds,
    allow: Vec<String>,
    rollback: bool,
    unknown_ids: HashSet<u32>,
    /// Owner uid required for plugin paths (0: root).
    owner: u32,
    /// Ticks fall on multiples of their period from here, so tuners with
    /// the same period share one wake-up whenever each was loaded.
    tick_epoch: Instant,
    /// Plugin files of a directory scan that did not load: (file name, why).
    pub failures: Vec<(String, String)>,
}

/// The first instant after `now` that is `epoch` plus a whole number of
/// `period`s (`now` + `period` if the period is zero).
fn next_on_grid(epoch: Instant, now: Instant, period: std::time::Duration) -> Instant {
    let (since, p) = (now.saturating_duration_since(epoch).as_nanos(), period.as_nanos());
    if p == 0 {
        return now + period;
    }
    let periods = u32::try_from(since / p + 1).unwrap_or(u32::MAX);
    epoch + period.saturating_mul(periods)
}

fn rresult<T>(r: RResult<T, CallError>) -> Result<T, CallError> {
    r.into_result()
}

impl TunerSet {
    pub fn new(host: SharedHost, fds: SharedFds, allow: Vec<String>, rollback: bool) -> Self {
        Self {
            host,
            tuners: Vec::new(),
            fds,
            allow,
            rollback,
            unknown_ids: HashSet::new(),
            owner: 0,
            tick_epoch: Instant::now(),
            failures: Vec::new(),
        }
    }

    /// Is this plugin file name allowed by `-a` (everything if no list)?
    pub fn allowed(&self, file_name: &str) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|a| a == file_name)
    }

    pub fn active_count(&self) -> usize {
        self.tuners.iter().filter(|t| t.instance.is_some()).count()
    }

    /// Load every tuner file in `dir`. Returns how many loaded.
    pub fn load_dir(&mut self, dir: &Path) -> usize {
        let files = match loader::scan_dir(dir) {
            Ok(f) => f,
            Err(e) => {
                logging::debug(&format!("could not open dir '{}': {e}", dir.display()));
                return 0;
            }
        };
        let mut n = 0;
        for path in files {
            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if !self.allow.is_empty() && !self.allow.contains(&file_name) {
                logging::debug(&format!("skipping {file_name} as not on allowlist"));
                continue;
            }
            logging::debug(&format!("found lib {}, init", path.display()));
            match self.load_file(&path) {
                Ok(_) => n += 1,
                Err(e) => self.failures.push((file_name, e)),
            }
        }
        n
    }

    /// Trust-check, load and initialise one plugin; one clear log line on
    /// failure.
    pub fn load_file(&mut self, path: &Path) -> Result<u32, String> {
        let plugin = match loader::load_plugin(path, self.owner) {
            Ok(p) => p,
            Err(e) => {
                let msg = e.to_string();
                logging::err(&msg);
                return Err(msg);
            }
        };
        let name = plugin.descriptor.name.as_str().to_string();
        if let Some(other) = self.tuners.iter().find(|t| t.instance.is_some() && t.name() == name) {
            let msg = format!(
                "tuner '{name}' from '{}' is already loaded from '{}'; skipping it",
                path.display(),
                other.plugin.path.display()
            );
            logging::err(&msg);
            return Err(msg);
        }
        let id = self.host.borrow().registry.next_id();
        let mut record = TunerRecord::from_descriptor(id, &path.display().to_string(), &plugin.descriptor);
        record.rollback = self.rollback;
        let missing_optional = match self.check_tunables(&record) {
            Ok(missing) => missing,
            Err(msg) => {
                let msg = format!("error initializing '{}': {msg}", path.display());
                logging::err(&msg);
                return Err(msg);
            }
        };
        self.host.borrow_mut().registry.insert(record);
        let binding = HostBinding::new(id, self.host.clone());
        let strategies = plugin.descriptor.strategies;
        let mut tuner = LoadedTuner {
            id,
            plugin,
            instance: None,
            binding,
            next_tick: None,
            strategy: None,
            rollback: self.rollback,
        };
        let now = Instant::now();
        if let Some(first) = strategies.as_slice().first() {
            tuner.strategy = Some(StrategyClock::new(0, first.timeout_secs, now));
            logging::debug(&format!("setting strategy for tuner '{name}' to '{}': {}", first.name, first.description));
        }
        match Self::init_instance(self.fds, &mut tuner) {
            Ok(()) => {
                let tick = tuner.plugin.descriptor.tick_ms;
                if tick > 0 {
                    let period = std::time::Duration::from_millis(u64::from(tick));
                    tuner.next_tick = Some(next_on_grid(self.tick_epoch, now, period));
                }
                if let Some(rec) = self.host.borrow_mut().registry.get_mut(id) {
                    rec.state = TunerState::Active;
                }
                self.report_missing_optional(id, &missing_optional);
                logging::debug(&format!("sucessfully initialized tuner {name}[{id}]"));
                self.tuners.push(tuner);
                Ok(id)
            }
            Err(e) => {
                let msg = format!("error initializing '{}': {e}", path.display());
                logging::err(&msg);
                self.host.borrow_mut().registry.remove(id);
                Err(msg)
            }
        }
    }

    /// An optional tunable this kernel lacks is said once, unless the tuner
    /// itself reported that part (by the sysctl's last name component).
    fn report_missing_optional(&self, id: u32, missing: &[String]) {
        let mut host = self.host.borrow_mut();
        for name in missing {
            let last = name.rsplit('.').next().unwrap_or(name);
            let covered =
                host.registry.get(id).is_some_and(|r| r.features.iter().any(|f| f.part == *name || f.part == last));
            if !covered {
                host.feature(id, name, FeatureState::Off, "not in this kernel; the tuner works without it");
            }
        }
    }

    /// Every non-optional sysctl a tuner declares must be readable; returns
    /// the optional ones that are not.
    fn check_tunables(&self, record: &TunerRecord) -> Result<Vec<String>, String> {
        let mut host = self.host.borrow_mut();
        let global = host.netns.global_cookie();
        let mut missing = Vec::new();
        for t in &record.tunables {
            if t.kind != TunableKind::Sysctl {
                continue;
            }
            match host.read_text(global, &t.name) {
                Ok(_) => {}
                Err(e) if t.optional() => {
                    logging::debug(&format!("error reading optional tunable '{}': {e}", t.name));
                    missing.push(t.name.clone());
                }
                Err(e) => return Err(format!("error reading tunable '{}': {e}", t.name)),
            }
        }
        Ok(missing)
    }

    fn init_instance(fds: SharedFds, tuner: &mut LoadedTuner) -> Result<(), String> {
        // Loading and attaching BPF.
        let _caps = Raised::runtime();
        let strategy_id = tuner.strategy.map(|s| s.current).unwrap_or(0);
        let ctx = make_context(&tuner.binding, fds, strategy_id);
        let handle = rresult((tuner.plugin.module.init())(&ctx)).map_err(|e| e.to_string())?;
        tuner.instance = Some(handle);
        Ok(())
    }

    fn fini_instance(tuner: &mut LoadedTuner) {
        let _caps = Raised::runtime();
        if let Some(handle) = tuner.instance.take() {
            if let Err(e) = rresult((tuner.plugin.module.fini())(handle)) {
                logging::err(&format!("error finalizing tuner '{}': {e}", tuner.name()));
            }
        }
    }

    /// Hand events to their tuners.
    pub fn dispatch(&mut self, events: impl IntoIterator<Item = Event>) {
        // A tuner's reaction may enter namespaces or send netlink.
        let _caps = Raised::runtime();
        for ev in events {
            self.dispatch_one(&ev);
        }
    }

    fn dispatch_one(&mut self, ev: &Event) {
        let id = ev.tuner_id();
        let Some(idx) = self.tuners.iter().position(|t| t.id == id && t.instance.is_some()) else {
            if self.unknown_ids.insert(id) {
                logging::debug(&format!("no tuner for id {id}"));
            }
            return;
        };
        let (cookie, global, active, judged) = {
            let host = self.host.borrow();
            let cookie = host.netns.normalize(ev.netns_cookie());
            let global = host.netns.is_global(cookie);
            let rec = host.registry.get(id);
            let active = rec.is_some_and(|r| r.active_in(cookie));
            (cookie, global, active, rec.map_or(0, |r| r.judged))
        };
        if active && judged != 0 {
            // Sample the namespace's counters from before the tuner acts,
            // so its changes can be judged (crate::evidence).
            self.host.borrow_mut().note_event(cookie, judged);
        }
        let tuner = &mut self.tuners[idx];
        if logging::debug_enabled() {
            let strategy = tuner
                .strategy
                .and_then(|s| tuner.plugin.descriptor.strategies.as_slice().get(s.current as usize))
                .map(|s| format!(", strategy {}", s.name.as_str()))
                .unwrap_or_default();
            logging::debug(&format!(
                "event scenario [{}] for tuner {}[{id}] netns {cookie} ({}) {}{strategy}",
                ev.scenario_id(),
                tuner.name(),
                if global { "global netns" } else { "non-global netns" },
                if active { "sent" } else { "skipped due to inactive tuner/netns" },
            ));
        }
        if !active {
            return;
        }
        let Some(handle) = tuner.instance else { return };
        let result = rresult((tuner.plugin.module.event_handler())(handle, RSlice::from_slice(ev.as_bytes())));
        if let Err(e) = result {
            self.tuner_failed(idx, "event handler", &e);
        }
    }

    /// A tuner returned an error: panics disable it; other errors are logged.
    fn tuner_failed(&mut self, idx: usize, what: &str, err: &CallError) {
        let name = self.tuners[idx].name().to_string();
        if err.is_panic() {
            logging::err(&format!("tuner '{name}' panicked: {} in its {what}; disabling it", err.message));
            self.abandon(idx);
        } else {
            logging::log(LogLevel::Warning, &format!("tuner '{name}': {what}: {err}"));
        }
    }

    /// Pass namespaces the daemon found gone (returned) to every tuner that exports
    /// `bpftune_netns_released_v2` (plugins built before it existed are
    /// skipped). Runs between tuner calls, never inside one.
    pub fn release_netns(&mut self) -> Vec<u64> {
        let cookies = self.host.borrow_mut().take_released_netns();
        let _caps = (!cookies.is_empty()).then(Raised::runtime);
        for &cookie in &cookies {
            for idx in 0..self.tuners.len() {
                let tuner = &self.tuners[idx];
                let (Some(handle), Some(release)) = (tuner.instance, tuner.plugin.netns_released) else {
                    continue;
                };
                if let Err(e) = rresult(release(handle, cookie)) {
                    self.tuner_failed(idx, "namespace release", &e);
                }
            }
            logging::debug(&format!("netns (cookie {cookie}) released in every tuner"));
        }
        self.hand_back();
        cookies
    }

    /// Tunables the operator handed back (`-q release`): the tuner that
    /// owns each drops what it kept for that namespace (through the same
    /// entry point), including its own record of having been told to
    /// leave it alone, and decides afresh from the next event.
    fn hand_back(&mut self) {
        let handed = self.host.borrow_mut().take_handed_back();
        let _caps = (!handed.is_empty()).then(Raised::runtime);
        for (id, cookie) in handed {
            let Some(idx) = self.tuners.iter().position(|t| t.id == id) else { continue };
            let tuner = &self.tuners[idx];
            let (Some(handle), Some(release)) = (tuner.instance, tuner.plugin.netns_released) else {
                continue;
            };
            let name = tuner.name().to_string();
            if let Err(e) = rresult(release(handle, cookie)) {
                self.tuner_failed(idx, "namespace hand-back", &e);
            } else {
                logging::debug(&format!("tuner '{name}' starts afresh in netns (cookie {cookie})"));
            }
        }
    }

    /// The first instant after `now` on the tuners' tick grid for
    /// `period` (other periodic work shares their wake-ups).
    pub fn grid_deadline(&self, now: Instant, period: std::time::Duration) -> Instant {
        next_on_grid(self.tick_epoch, now, period)
    }

    /// When the next tick or strategy evaluation is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let evidence = self.host.borrow().evidence_deadline();
        self.tuners
            .iter()
            .filter(|t| t.instance.is_some())
            .flat_map(|t| [t.next_tick, t.strategy.and_then(|s| s.next_evaluation)])
            .chain([evidence])
            .flatten()
            .min()
    }

    /// Run due ticks and strategy evaluations.
    pub fn run_timers(&mut self, now: Instant) {
        let evidence_due = self.host.borrow().evidence_deadline().is_some_and(|d| now >= d);
        let due = evidence_due
            || self.tuners.iter().any(|t| {
                t.instance.is_some()
                    && (t.next_tick.is_some_and(|d| now >= d) || t.strategy.is_some_and(|s| s.due(now)))
            });
        let _caps = due.then(Raised::runtime);
        if evidence_due {
            // Sampling enters namespaces; a revert writes a sysctl.
            self.host.borrow_mut().evidence_tick(now);
        }
        for idx in 0..self.tuners.len() {
            let tuner = &mut self.tuners[idx];
            let Some(handle) = tuner.instance else { continue };
            if tuner.next_tick.is_some_and(|t| now >= t) {
                let period = std::time::Duration::from_millis(u64::from(tuner.plugin.descriptor.tick_ms));
                tuner.next_tick = Some(next_on_grid(self.tick_epoch, now, period));
                if let Err(e) = rresult((tuner.plugin.module.tick())(handle)) {
                    self.tuner_failed(idx, "tick", &e);
                    continue;
                }
            }
            let tuner = &mut self.tuners[idx];
            if tuner.strategy.is_some_and(|s| s.due(now)) {
                self.evaluate_strategies(idx, now);
            }
        }
    }

    fn evaluate_strategies(&mut self, idx: usize, now: Instant) {
        let tuner = &mut self.tuners[idx];
        let (Some(handle), Some(mut clock)) = (tuner.instance, tuner.strategy) else { return };
        let strategies = tuner.plugin.descriptor.strategies;
        let mut scores = Vec::with_capacity(strategies.len());
        for sid in 0..strategies.len() as u32 {
            match rresult((tuner.plugin.module.evaluate())(handle, sid)) {
                Ok(s) => scores.push(s),
                Err(e) => {
                    self.tuner_failed(idx, "strategy evaluation", &e);
                    return;
                }
            }
        }
        let Some(winner) = choose(&scores, clock.current) else { return };
        let Some(desc) = strategies.as_slice().get(winner as usize) else { return };
        let switched = clock.rearm(winner, desc.timeout_secs, now);
        tuner.strategy = Some(clock);
        if !switched {
            return;
        }
        let name = tuner.name().to_string();
        logging::debug(&format!(
            "setting strategy for tuner '{name}' to '{}': {}",
            desc.name.as_str(),
            desc.description.as_str()
        ));
        Self::fini_instance(tuner);
        // Re-initialise with the new strategy (only its programs attach).
        if let Err(e) = Self::init_instance(self.fds, tuner) {
            logging::err(&format!("could not switch tuner '{name}' to strategy '{}': {e}", desc.name.as_str()));
            let id = tuner.id;
            if let Some(rec) = self.host.borrow_mut().registry.get_mut(id) {
                rec.state = TunerState::Gone;
            }
        }
    }

    /// Summary lines of one tuner: its own summarize, else the generic one.
    pub fn summary_lines(&self, idx: usize) -> Vec<String> {
        // A tuner's summary may read its BPF maps (bpf(2) needs CAP_BPF
        // before 6.5).
        let _caps = Raised::runtime();
        let tuner = &self.tuners[idx];
        let own = tuner
            .instance
            .and_then(|handle| rresult((tuner.plugin.module.summarize())(handle)).ok())
            .map(|lines| lines.into_iter().map(|l| l.into_string()).collect::<Vec<_>>())
            .filter(|lines| !lines.is_empty());
        let host = self.host.borrow();
        let Some(rec) = host.registry.get(tuner.id) else { return own.unwrap_or_default() };
        let mut lines = own.unwrap_or_else(|| summary::tuner_summary(rec, host.netns.global_cookie()));
        lines.extend(summary::verdict_lines(rec));
        lines
    }

    /// Disable tuner `idx` after it panicked, without calling into it again
    /// (its state may be broken): the summary comes from the daemon's own
    /// records, its changes are rolled back if asked, and the instance is
    /// left as it is (its BPF stays loaded until the daemon exits; its
    /// events are dropped from now on, as for any disabled tuner).
    fn abandon(&mut self, idx: usize) {
        let tuner = &mut self.tuners[idx];
        if tuner.instance.take().is_none() {
            return;
        }
        let id = tuner.id;
        let rollback = tuner.rollback;
        {
            let host = self.host.borrow();
            if let Some(rec) = host.registry.get(id) {
                for line in summary::tuner_summary(rec, host.netns.global_cookie()) {
                    logging::notice(&line);
                }
                for line in summary::verdict_lines(rec) {
                    logging::notice(&line);
                }
            }
        }
        if rollback {
            rollback_tuner(&self.host, id);
        }
        if let Some(rec) = self.host.borrow_mut().registry.get_mut(id) {
            rec.state = TunerState::Gone;
        }
    }

    /// Finalise tuner `idx`: summary, fini, rollback if asked; `state` is
    /// what it becomes (inactive at exit, manual/gone otherwise).
    pub fn finalize(&mut self, idx: usize, state: TunerState) {
        if self.tuners[idx].instance.is_none() {
            return;
        }
        for line in self.summary_lines(idx) {
            logging::notice(&line);
        }
        let tuner = &mut self.tuners[idx];
        Self::fini_instance(tuner);
        let (id, rollback) = (tuner.id, tuner.rollback);
        if rollback {
            rollback_tuner(&self.host, id);
        }
        if let Some(rec) = self.host.borrow_mut().registry.get_mut(id) {
            rec.state = state;
        }
    }

    /// Finalise every tuner (daemon exit).
    pub fn finalize_all(&mut self) {
        for idx in 0..self.tuners.len() {
            self.finalize(idx, TunerState::Inactive);
        }
    }

    /// Finalise every tuner without a summary or rollback (`-S`, which
    /// only loads them to see what works).
    pub fn discard_all(&mut self) {
        for tuner in &mut self.tuners {
            Self::fini_instance(tuner);
            if let Some(rec) = self.host.borrow_mut().registry.get_mut(tuner.id) {
                rec.state = TunerState::Inactive;
            }
        }
    }

    /// Index of the active tuner loaded from `path`.
    pub fn index_by_path(&self, path: &Path) -> Option<usize> {
        self.tuners.iter().position(|t| t.instance.is_some() && t.plugin.path == path)
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.tuners.iter().filter(|t| t.instance.is_some()).map(|t| t.plugin.path.clone()).collect()
    }
}

/// Restore what tuner `id` changed, in every namespace, unless someone else
/// changed the value since (then leave it and say why); the decisions and
/// the lines are [`rollback`]'s.
pub fn rollback_tuner(host: &SharedHost, id: u32) {
    let _caps = Raised::runtime();
    let Some(rec) = host.borrow().registry.get(id).cloned() else { return };
    let mut h = host.borrow_mut();
    for (idx, info) in rec.tunables.iter().enumerate() {
        if info.kind != TunableKind::Sysctl {
            continue;
        }
        let Some(tr) = rec.records.get(idx) else { continue };
        for (cookie, initial) in &tr.initial {
            let Some(ours) = tr.current.get(cookie) else { continue };
            let global = h.netns.is_global(*cookie);
            let change = rollback::Change {
                tunable: &info.name,
                cookie: *cookie,
                global,
                original: initial,
                written: vec![ours.as_str()],
                left_by: None,
            };
            // The scenario that changed it most often, logged before the
            // restore as the original's writer does.
            let scenario = tr
                .counts
                .iter()
                .filter(|((_, c), _)| c == cookie)
                .max_by_key(|(_, n)| **n)
                .and_then(|((s, _), _)| rec.scenarios.get(*s as usize));
            let now = h.read_text(*cookie, &info.name);
            rollback::restore(
                &change,
                now,
                || {
                    if let Some(sc) = scenario {
                        logging::notice(&scenario_line(&sc.name, &info.name, global, &sc.description));
                    }
                },
                |v| h.write_text(*cookie, &info.name, v),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ticks_land_on_a_shared_grid() {
        let epoch = Instant::now();
        let s = Duration::from_secs(1);
        // Two tuners loaded 0.3 s and 0.8 s after the epoch tick together.
        assert_eq!(next_on_grid(epoch, epoch + Duration::from_millis(300), s), epoch + s);
        assert_eq!(next_on_grid(epoch, epoch + Duration::from_millis(800), s), epoch + s);
        // Exactly on a tick: the next one, never the same instant again.
        assert_eq!(next_on_grid(epoch, epoch + s, s), epoch + 2 * s);
        // A longer period stays on the shorter one's grid.
        assert_eq!(next_on_grid(epoch, epoch + Duration::from_millis(1500), 5 * s), epoch + 5 * s);
        assert_eq!(next_on_grid(epoch, epoch, Duration::ZERO), epoch);
    }
}
