//! The host's side of judging changes ([`crate::evidence`]): reading a
//! namespace's counters through the namespace worker, registering each
//! written change, the once-a-second sampling and judging, the verdict
//! line, and reverting a change judged `hurt` (a logged, journaled write
//! back to the value it replaced, then a back-off for that tuner, tunable
//! and namespace).

use std::time::{Duration, Instant};

use super::{HostState, same_value};
use crate::abi::LogLevel;
use crate::evidence::{self, ChangeKey, Counters, Judgement, SignalSet, Verdict};
use crate::netns::{self, NsTarget};
use crate::registry::TunerState;
use crate::sock_rtt;

/// Reads one namespace's counters for a set of signals (tests replace it).
pub type CounterReader = Box<dyn FnMut(&NsTarget, SignalSet) -> Option<Counters>>;

/// Called with every verdict (and whether the change was reverted); the
/// daemon journals it.
pub type VerdictHook = Box<dyn FnMut(&Judgement, bool)>;

/// A reading taken this recently is reused for a change.
const FRESH: Duration = Duration::from_millis(100);

/// Read the counters of `signals` in `target` on the namespace worker
/// (only the files those signals need, and a `sock_diag` dump only for
/// the RTT guard).
pub fn read_counters_proc(target: &NsTarget, signals: SignalSet) -> Option<Counters> {
    let need = evidence::files_for(signals);
    let rtt = evidence::needs_sock_diag(signals);
    let read = move || {
        let mut files: [Option<String>; 6] = Default::default();
        for (i, f) in evidence::FILES.iter().enumerate().filter(|(i, _)| need[*i]) {
            files[i] = std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).ok();
        }
        // A failed dump (no CONFIG_INET_DIAG) leaves the guard unknown.
        let rtt = if rtt { sock_rtt::sample().ok().and_then(|s| s.mean_ms) } else { None };
        (files, rtt)
    };
    let (files, rtt) = match target {
        // The daemon's thread is in its own namespace already.
        NsTarget::Global => read(),
        NsTarget::Netns(h) => netns::run_in(netns::Where::Netns(h), read).ok()?,
    };
    let mut counters = Counters::parse(&files);
    if let Some(ms) = rtt {
        counters.set(evidence::Signal::TcpRtt, ms);
    }
    Some(counters)
}

impl HostState {
    /// Judge changes by their effect and revert the ones that hurt (the
    /// default); `false` (`--no-revert`) still judges and logs.
    pub fn set_revert(&mut self, revert: bool) {
        self.revert = revert;
    }

    pub fn set_counter_reader(&mut self, reader: CounterReader) {
        self.read_counters = reader;
    }

    pub fn set_verdict_hook(&mut self, hook: VerdictHook) {
        self.verdict_hook = Some(hook);
    }

    /// Read and record the counters of a namespace now.
    fn sample(&mut self, cookie: u64, now: Instant, signals: SignalSet) -> Option<Counters> {
        if signals == 0 {
            return None;
        }
        let target = self.netns.target(cookie);
        self.sync_netns();
        let counters = (self.read_counters)(&target.ok()?, signals)?;
        self.evidence.record(cookie, now, counters);
        Some(counters)
    }

    /// An event from this namespace is about to reach a tuner: keep its
    /// counters sampled (and read them now if they were not).
    /// `signals` are those the tuner's scenarios are judged by.
    pub fn note_event(&mut self, cookie: u64, signals: SignalSet) {
        if self.config.advise || signals == 0 {
            return;
        }
        let now = Instant::now();
        if self.evidence.note_activity(cookie, now, signals) {
            let all = self.evidence.signals(cookie);
            self.sample(cookie, now, all);
        }
    }

    /// The key of a tuner's tunable in a namespace.
    pub(super) fn change_key(tuner_id: u32, tunable: &str, cookie: u64) -> ChangeKey {
        ChangeKey { tuner_id, tunable: tunable.to_string(), cookie }
    }

    /// Until when the tuner backs off this tunable here after a revert.
    pub(super) fn backing_off(&self, key: &ChangeKey) -> Option<Instant> {
        self.evidence.backing_off(key, Instant::now())
    }

    /// A change was written: wait for its verdict, if its scenario is one
    /// that is judged.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn register_change(
        &mut self,
        key: ChangeKey,
        tuner: &str,
        scenario: &str,
        global: bool,
        old: &str,
        new: &str,
    ) {
        let Some(signal) = evidence::signal_for(scenario, &key.tunable) else { return };
        let guard = evidence::guard_for(scenario, &key.tunable).map_or(0, evidence::Signal::bit);
        let now = Instant::now();
        let counters = match self.evidence.latest(key.cookie, now, FRESH) {
            Some(c) => Some(c),
            None => {
                let set = self.evidence.signals(key.cookie) | signal.bit() | guard;
                self.sample(key.cookie, now, set)
            }
        };
        self.evidence.changed(key, tuner, scenario, global, signal, old, new, now, counters);
    }

    /// When sampling or judging is next due.
    pub fn evidence_deadline(&self) -> Option<Instant> {
        self.evidence.next_deadline()
    }

    /// Sample the active namespaces, judge the changes whose after-window
    /// is over, log the verdicts and revert what hurt.
    pub fn evidence_tick(&mut self, now: Instant) {
        for (cookie, signals) in self.evidence.due(now) {
            self.sample(cookie, now, signals);
        }
        for j in self.evidence.judge_due(now) {
            self.log(LogLevel::Notice, &j.log_line());
            let reverted = j.verdict == Verdict::Hurt && self.revert && self.revert_change(&j);
            let key = &j.change.key;
            if let Some(rec) = self.registry.get_mut(key.tuner_id).and_then(|t| {
                let idx = t.tunable_index(&key.tunable)?;
                t.records.get_mut(idx)
            }) {
                rec.verdicts[j.verdict.index()] += 1;
                if reverted {
                    rec.reverted += 1;
                }
            }
            if let Some(hook) = self.verdict_hook.as_mut() {
                hook(&j, reverted);
            }
        }
    }

    /// Put back the value a change replaced, if it is still the value the
    /// change wrote and the tuner still acts there; then back off.
    fn revert_change(&mut self, j: &Judgement) -> bool {
        let c = &j.change;
        let key = c.key.clone();
        let Some(tuner) = self.registry.get(key.tuner_id) else { return false };
        if tuner.netns_state(key.cookie) != TunerState::Active {
            return false;
        }
        let tuner_name = tuner.name.clone();
        let string =
            tuner.tunable_index(&key.tunable).and_then(|i| tuner.tunables.get(i)).is_some_and(|i| i.is_string());
        let Ok(mut target) = self.netns.target(key.cookie) else { return false };
        let Ok(now_text) = self.read_current(key.cookie, &mut target, &key.tunable, string) else { return false };
        if !same_value(&now_text, &c.new, string) {
            self.log(
                LogLevel::Debug,
                &format!(
                    "not reverting '{}': it is ({now_text}) now, not the ({}) that was judged",
                    key.tunable, c.new
                ),
            );
            return false;
        }
        if let Err(e) =
            self.journal_and_write(&tuner_name, &key.tunable, key.cookie, c.global, &mut target, &c.new, &c.old)
        {
            self.log(LogLevel::Err, &format!("could not revert '{}' to ({}): {e}", key.tunable, c.old));
            return false;
        }
        let backoff = self.evidence.back_off(key.clone(), Instant::now());
        let ns = if c.global { String::new() } else { format!(" (netns cookie {})", key.cookie) };
        self.log(
            LogLevel::Notice,
            &format!(
                "Reverting {} from ({}) -> ({}){ns} as the change hurt; tuner '{tuner_name}' backs off it there for {} s",
                key.tunable,
                c.new,
                c.old,
                backoff.as_secs()
            ),
        );
        if let Some(rec) = self.registry.get_mut(key.tuner_id).and_then(|t| {
            let idx = t.tunable_index(&key.tunable)?;
            t.records.get_mut(idx)
        }) {
            rec.current.insert(key.cookie, c.old.clone());
        }
        true
    }
}
