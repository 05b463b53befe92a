//! One consistent picture of the daemon for a scrape or a report, taken on
//! the main thread from the tuner registry (changes, values, states,
//! features, verdicts on changes), the failed plugin files, the loop's
//! counters and `/proc/self`. Plain data, so the renderers are tested
//! without a daemon.

use std::path::Path;

use bpftune_core::abi::FeatureState;
use bpftune_core::evidence;
use bpftune_core::registry::{RETIRED_NETNS_COOKIE, TunerRecord, TunerState};

use super::proc::{self, ProcessStats, ProgStats};
use crate::identity::Identity;
use crate::replies::ReplyCtx;

/// The states `bpftune_tuner_state` has a series for.
pub const TUNER_STATES: [&str; 4] = ["active", "manual", "failed", "inactive"];
/// The states `bpftune_tuner_feature` has a series for.
pub const FEATURE_STATES: [&str; 4] = ["active", "fallback", "off", "not needed"];

/// How often a scenario led a tuner to change a tunable in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeCount {
    pub tuner: String,
    pub tunable: String,
    pub scenario: String,
    pub netns: String,
    pub count: u64,
}

/// One value of a tunable bpftune changed in a namespace: the one it last
/// wrote and the one it found. Every tunable that bpftune changed has
/// `index` 0; multi-value sysctls (`tcp_rmem`) have 1, 2, … too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunableValue {
    pub tuner: String,
    pub tunable: String,
    pub netns: String,
    pub index: usize,
    pub current: i64,
    pub original: i64,
}

/// The verdicts on a tuner's changes of one tunable (all namespaces), for
/// every tunable the tuner changed in a scenario that is judged
/// ([`evidence::signal_for`], as the host decides), from that change on:
/// its series are 0 until the verdict, some 5 s later, so the first
/// verdict shows in `increase()`. Tunables only changed in scenarios that
/// are not judged have none (and any tunable with a verdict has them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunableVerdicts {
    pub tuner: String,
    pub tunable: String,
    /// By [`evidence::Verdict::index`] (helped, neutral, hurt, unknown).
    pub counts: [u64; 4],
    /// Changes judged `hurt` and reverted.
    pub reverted: u64,
}

/// A changed tunable as text (strings too), for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunableChange {
    pub tuner: String,
    pub tunable: String,
    pub netns: String,
    /// `/run/netns/NAME` or `/proc/PID/ns/net`, where known.
    pub netns_path: String,
    pub original: String,
    pub current: String,
    /// Changes made, all scenarios.
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunerStatus {
    pub name: String,
    /// One of [`TUNER_STATES`].
    pub state: &'static str,
    /// Why, for a plugin that failed to load.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureStatus {
    pub tuner: String,
    pub part: String,
    /// One of [`FEATURE_STATES`].
    pub state: &'static str,
    pub detail: String,
}

/// The workload a namespace bpftune changed belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsInfo {
    pub netns: String,
    pub identity: Identity,
}

/// Ring-buffer events: received, and lost on either side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    pub received: u64,
    pub malformed: u64,
    pub queue_full: u64,
    pub ringbuf_dropped: u64,
}

/// Everything the metrics and the report show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub version: String,
    pub pid: u32,
    pub advise: bool,
    pub changes: Vec<ChangeCount>,
    pub values: Vec<TunableValue>,
    pub changed: Vec<TunableChange>,
    pub verdicts: Vec<TunableVerdicts>,
    pub tuners: Vec<TunerStatus>,
    pub features: Vec<FeatureStatus>,
    /// By namespace cookie order.
    pub netns_info: Vec<NetnsInfo>,
    pub events: EventCounts,
    /// Namespaces the daemon knows besides its own.
    pub netns_known: u64,
    /// `kernel.bpf_stats_enabled`, if the kernel has it.
    pub bpf_stats_enabled: Option<bool>,
    /// Filled only while BPF statistics are on.
    pub programs: Vec<ProgStats>,
    pub process: Option<ProcessStats>,
}

/// The `netns` label: `global` for the daemon's namespace, `retired` for
/// the sum over namespaces that are gone, else the namespace cookie.
pub fn netns_label(cookie: u64, global_cookie: u64) -> String {
    if cookie == global_cookie {
        "global".to_string()
    } else if cookie == RETIRED_NETNS_COOKIE {
        "retired".to_string()
    } else {
        cookie.to_string()
    }
}

/// The registry's state, in the metric's words: a tuner that panicked or
/// could not switch strategy is `gone` in the registry and `failed` here.
pub fn tuner_state(state: TunerState) -> &'static str {
    match state {
        TunerState::Active => "active",
        TunerState::Manual => "manual",
        TunerState::Gone => "failed",
        TunerState::Inactive => "inactive",
    }
}

fn feature_state(state: FeatureState) -> &'static str {
    match state {
        FeatureState::Active => FEATURE_STATES[0],
        FeatureState::Fallback => FEATURE_STATES[1],
        FeatureState::Off => FEATURE_STATES[2],
        FeatureState::NotNeeded => FEATURE_STATES[3],
    }
}

/// The tuner name of a plugin file name (`tcp_buffer_tuner.so`).
fn tuner_of_file(file: &str) -> String {
    file.strip_suffix("_tuner.so").or_else(|| file.strip_suffix(".so")).unwrap_or(file).to_string()
}

fn ints(text: &str) -> Option<Vec<i64>> {
    text.split_whitespace().map(|v| v.parse().ok()).collect()
}

fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The verdict counts of a tuner's tunables (see [`TunableVerdicts`] for
/// which).
fn tunable_verdicts(t: &TunerRecord) -> Vec<TunableVerdicts> {
    t.tunables
        .iter()
        .zip(&t.records)
        .filter(|(info, rec)| {
            let judged = |sid: u32| {
                t.scenarios.get(sid as usize).is_some_and(|sc| evidence::signal_for(&sc.name, &info.name).is_some())
            };
            rec.counts.keys().any(|(sid, _)| judged(*sid)) || rec.verdicts.iter().any(|n| *n > 0) || rec.reverted > 0
        })
        .map(|(info, rec)| TunableVerdicts {
            tuner: t.name.clone(),
            tunable: info.name.clone(),
            counts: rec.verdicts,
            reverted: rec.reverted,
        })
        .collect()
}

/// Take the snapshot.
pub fn gather(ctx: &ReplyCtx<'_>) -> Snapshot {
    let mut s =
        Snapshot { version: env!("CARGO_PKG_VERSION").to_string(), pid: std::process::id(), ..Snapshot::default() };
    {
        let host = ctx.set.host.borrow();
        let global = host.netns.global_cookie();
        s.advise = host.config.advise;
        s.netns_known = host.netns.known_count() as u64;
        for t in host.registry.iter() {
            s.tuners.push(TunerStatus { name: t.name.clone(), state: tuner_state(t.state), detail: String::new() });
            for f in &t.features {
                s.features.push(FeatureStatus {
                    tuner: t.name.clone(),
                    part: f.part.clone(),
                    state: feature_state(f.state),
                    detail: f.detail.clone(),
                });
            }
            s.verdicts.extend(tunable_verdicts(t));
            for (info, rec) in t.tunables.iter().zip(&t.records) {
                for ((sid, cookie), n) in &rec.counts {
                    let scenario = t.scenarios.get(*sid as usize).map(|sc| sc.name.clone()).unwrap_or_default();
                    s.changes.push(ChangeCount {
                        tuner: t.name.clone(),
                        tunable: info.name.clone(),
                        scenario,
                        netns: netns_label(*cookie, global),
                        count: *n,
                    });
                }
                for (cookie, original) in &rec.initial {
                    let current = rec.current.get(cookie).unwrap_or(original);
                    let netns = netns_label(*cookie, global);
                    let count = rec.counts.iter().filter(|((_, c), _)| c == cookie).map(|(_, n)| *n).sum();
                    let netns_path =
                        host.netns.handle(*cookie).map(|h| h.path.display().to_string()).unwrap_or_default();
                    s.changed.push(TunableChange {
                        tuner: t.name.clone(),
                        tunable: info.name.clone(),
                        netns: netns.clone(),
                        netns_path,
                        original: words(original),
                        current: words(current),
                        count,
                    });
                    let (Some(orig), Some(cur)) = (ints(original), ints(current)) else { continue };
                    for (index, (o, c)) in orig.iter().zip(&cur).enumerate() {
                        s.values.push(TunableValue {
                            tuner: t.name.clone(),
                            tunable: info.name.clone(),
                            netns: netns.clone(),
                            index,
                            current: *c,
                            original: *o,
                        });
                    }
                }
            }
        }
    }
    if let Some(ids) = ctx.identities {
        let global = ctx.set.host.borrow().netns.global_cookie();
        let mut found: Vec<(&u64, &Identity)> = ids.iter().collect();
        found.sort_unstable_by_key(|(c, _)| **c);
        s.netns_info = found
            .into_iter()
            .map(|(c, id)| NetnsInfo { netns: netns_label(*c, global), identity: id.clone() })
            .collect();
    }
    for (file, why) in &ctx.set.failures {
        let name = tuner_of_file(file);
        if !s.tuners.iter().any(|t| t.name == name) {
            s.tuners.push(TunerStatus { name, state: "failed", detail: why.clone() });
        }
    }
    if let Some(st) = ctx.stats {
        s.events = EventCounts {
            received: st.events_received.get(),
            malformed: st.events_malformed.get(),
            queue_full: st.events_overflowed.get(),
            ringbuf_dropped: st.ringbuf_drops.get(),
        };
    }
    let proc_self = Path::new("/proc/self");
    s.bpf_stats_enabled = proc::bpf_stats_enabled(Path::new("/proc"));
    if s.bpf_stats_enabled == Some(true) {
        s.programs = proc::bpf_programs(proc_self, proc::prog_name);
    }
    s.process = proc::process_stats(proc_self);
    s
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bpftune_core::abi::{TunableFlags, TunableKind};
    use bpftune_core::registry::{ScenarioInfo, TunableInfo, TunableRecord};

    use super::*;

    #[test]
    fn labels_and_states() {
        assert_eq!(netns_label(5, 5), "global");
        assert_eq!(netns_label(RETIRED_NETNS_COOKIE, 5), "retired");
        assert_eq!(netns_label(4097, 5), "4097");
        assert_eq!(tuner_state(TunerState::Gone), "failed");
        assert_eq!(tuner_of_file("tcp_buffer_tuner.so"), "tcp_buffer");
        assert_eq!(ints("4096 131072 6291456"), Some(vec![4096, 131072, 6291456]));
        assert_eq!(ints("cubic"), None);
        for s in [FeatureState::Active, FeatureState::Fallback, FeatureState::Off, FeatureState::NotNeeded] {
            assert_eq!(feature_state(s), s.as_str());
        }
    }

    fn tunable(name: &str) -> TunableInfo {
        TunableInfo { name: name.into(), kind: TunableKind::Sysctl, flags: TunableFlags::NAMESPACED, num_values: 3 }
    }

    /// tcp_buffer's shape: a buffer raise of `tcp_rmem` is judged, a
    /// low-memory change of `tcp_no_metrics_save` is not.
    fn tuner() -> TunerRecord {
        let names = ["net.ipv4.tcp_rmem", "net.ipv4.tcp_no_metrics_save", "net.ipv4.tcp_low_latency"];
        TunerRecord {
            id: 0,
            name: "tcp_buffer".into(),
            path: "p".into(),
            state: TunerState::Active,
            rollback: false,
            tunables: names.iter().map(|n| tunable(n)).collect(),
            scenarios: vec![
                ScenarioInfo { name: "need to increase TCP buffer size(s)".into(), description: String::new() },
                ScenarioInfo { name: "set tunable on entering low-memory state".into(), description: String::new() },
            ],
            records: vec![TunableRecord::default(); 3],
            judged: 0,
            netns_state: HashMap::new(),
            features: Vec::new(),
        }
    }

    #[test]
    fn verdicts_of_judged_changes_start_at_zero() {
        let mut t = tuner();
        assert!(tunable_verdicts(&t).is_empty(), "no change yet");
        // Changes in two namespaces; the low-memory one is not judged.
        t.records[0].counts.insert((0, 1), 2);
        t.records[0].counts.insert((0, 4097), 1);
        t.records[1].counts.insert((1, 1), 1);
        let v = tunable_verdicts(&t);
        assert_eq!(
            v,
            vec![TunableVerdicts {
                tuner: "tcp_buffer".into(),
                tunable: "net.ipv4.tcp_rmem".into(),
                counts: [0; 4],
                reverted: 0
            }]
        );
        // Counted where the host counts them (by Verdict::index).
        t.records[0].verdicts[evidence::Verdict::Hurt.index()] = 2;
        t.records[0].reverted = 1;
        // A tunable with a verdict shows even if no scenario names it.
        t.records[2].verdicts[evidence::Verdict::Unknown.index()] = 1;
        let v = tunable_verdicts(&t);
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!((v[0].counts, v[0].reverted), ([0, 0, 2, 0], 1));
        assert_eq!((v[1].tunable.as_str(), v[1].counts), ("net.ipv4.tcp_low_latency", [0, 0, 0, 1]));
    }
}
