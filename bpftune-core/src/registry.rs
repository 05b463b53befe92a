//! The tuner-id map: every loaded tuner's declared tables, its state overall
//! and per network namespace, and per tunable the values it found and set
//! and how often each scenario fired (the stuff of summaries and rollback).

use std::collections::{BTreeMap, HashMap};

use crate::abi::{FeatureState, TunableFlags, TunableKind, TunerDescriptor};

/// Counts of namespaces that are gone are summed under this cookie (never a
/// real one: the kernel counts cookies up from 1), so per-namespace records
/// do not grow with every namespace that ever existed.
pub const RETIRED_NETNS_COOKIE: u64 = bpftune_sdk::netns::SHORT_LIVED_NETNS_COOKIE;

/// Same strings as the original's `bpftune_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TunerState {
    Inactive,
    Active,
    /// An administrator took over.
    Manual,
    /// The resource disappeared (plugin removed, namespace destroyed).
    Gone,
}

impl TunerState {
    pub fn as_str(self) -> &'static str {
        match self {
            TunerState::Inactive => "inactive",
            TunerState::Active => "active",
            TunerState::Manual => "manual",
            TunerState::Gone => "gone",
        }
    }
}

/// An owned copy of one tunable declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunableInfo {
    pub name: String,
    pub kind: TunableKind,
    pub flags: TunableFlags,
    pub num_values: u8,
}

impl TunableInfo {
    pub fn is_sysctl(&self) -> bool {
        self.kind == TunableKind::Sysctl
    }
    pub fn namespaced(&self) -> bool {
        self.flags.contains(TunableFlags::NAMESPACED)
    }
    pub fn is_string(&self) -> bool {
        self.flags.contains(TunableFlags::STRING)
    }
    pub fn optional(&self) -> bool {
        self.flags.contains(TunableFlags::OPTIONAL)
    }
}

/// An owned copy of one scenario declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioInfo {
    pub name: String,
    pub description: String,
}

/// A sysctl value as text (integers space-separated, or the string).
pub type ValueText = String;

/// Per tunable: values seen and set, per namespace cookie, and counts.
#[derive(Debug, Clone, Default)]
pub struct TunableRecord {
    /// Value before the daemon first changed it, per cookie.
    pub initial: BTreeMap<u64, ValueText>,
    /// Value the daemon last wrote, per cookie.
    pub current: BTreeMap<u64, ValueText>,
    /// (scenario, cookie) → times it led to a change.
    pub counts: BTreeMap<(u32, u64), u64>,
    /// Verdicts on its changes, by [`crate::evidence::Verdict::index`]
    /// (helped, neutral, hurt, unknown).
    pub verdicts: [u64; 4],
    /// Changes judged `hurt` and reverted.
    pub reverted: u64,
}

/// One loaded tuner, as the daemon sees it.
#[derive(Debug, Clone)]
pub struct TunerRecord {
    pub id: u32,
    pub name: String,
    pub path: String,
    pub state: TunerState,
    pub rollback: bool,
    pub tunables: Vec<TunableInfo>,
    pub scenarios: Vec<ScenarioInfo>,
    pub records: Vec<TunableRecord>,
    /// Namespaces where this tuner is not active (manual or gone).
    pub netns_state: HashMap<u64, TunerState>,
    /// What the tuner reported of its parts on this kernel.
    pub features: Vec<FeatureInfo>,
    /// The signals its scenarios are judged by
    /// ([`crate::evidence::signal_for`]; 0: none): its events keep their
    /// namespace's counters sampled for them.
    pub judged: crate::evidence::SignalSet,
}

/// One part of a tuner and how it fares on the running kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureInfo {
    pub part: String,
    pub state: FeatureState,
    pub detail: String,
}

impl FeatureInfo {
    /// `<tuner>: <part> <state>: <detail>`, the line logged and printed by
    /// `-S`.
    pub fn line(&self, tuner: &str) -> String {
        if self.detail.is_empty() {
            format!("{tuner}: {} {}", self.part, self.state.as_str())
        } else {
            format!("{tuner}: {} {}: {}", self.part, self.state.as_str(), self.detail)
        }
    }
}

impl TunerRecord {
    /// Copy the descriptor's tables out of the plugin's memory.
    pub fn from_descriptor(id: u32, path: &str, desc: &TunerDescriptor) -> Self {
        let tunables: Vec<TunableInfo> = desc
            .tunables
            .iter()
            .map(|t| TunableInfo {
                name: t.name.as_str().to_string(),
                kind: t.kind,
                flags: t.flags,
                num_values: t.num_values,
            })
            .collect();
        let scenarios: Vec<ScenarioInfo> = desc
            .scenarios
            .iter()
            .map(|s| ScenarioInfo {
                name: s.name.as_str().to_string(),
                description: s.description.as_str().to_string(),
            })
            .collect();
        let names: Vec<&str> = tunables.iter().map(|t| t.name.as_str()).collect();
        let judged = crate::evidence::signals_of(scenarios.iter().map(|s| s.name.as_str()), &names);
        Self {
            id,
            name: desc.name.as_str().to_string(),
            path: path.to_string(),
            state: TunerState::Inactive,
            rollback: false,
            records: vec![TunableRecord::default(); tunables.len()],
            tunables,
            scenarios,
            netns_state: HashMap::new(),
            features: Vec::new(),
            judged,
        }
    }

    /// Active here: the tuner is active and not disabled in this namespace.
    pub fn active_in(&self, cookie: u64) -> bool {
        self.state == TunerState::Active && !self.netns_state.contains_key(&cookie)
    }

    pub fn netns_state(&self, cookie: u64) -> TunerState {
        if self.state != TunerState::Active {
            return self.state;
        }
        self.netns_state.get(&cookie).copied().unwrap_or(TunerState::Active)
    }

    /// Index of the tunable with exactly this dotted name.
    pub fn tunable_index(&self, name: &str) -> Option<usize> {
        self.tunables.iter().position(|t| t.name == name)
    }
}

/// All tuners, by id. Ids are never reused while the daemon runs.
#[derive(Debug, Default)]
pub struct Registry {
    tuners: BTreeMap<u32, TunerRecord>,
    next_id: u32,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id the next registered tuner will get.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    pub fn insert(&mut self, record: TunerRecord) {
        self.next_id = self.next_id.max(record.id + 1);
        self.tuners.insert(record.id, record);
    }

    pub fn get(&self, id: u32) -> Option<&TunerRecord> {
        self.tuners.get(&id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut TunerRecord> {
        self.tuners.get_mut(&id)
    }

    pub fn remove(&mut self, id: u32) -> Option<TunerRecord> {
        self.tuners.remove(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &TunerRecord> {
        self.tuners.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut TunerRecord> {
        self.tuners.values_mut()
    }

    pub fn len(&self) -> usize {
        self.tuners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tuners.is_empty()
    }

    /// Drop per-namespace state for a namespace that is gone; its counts
    /// are folded into [`RETIRED_NETNS_COOKIE`] (the summary still adds
    /// them up as non-global).
    pub fn forget_netns(&mut self, cookie: u64) {
        for t in self.tuners.values_mut() {
            t.netns_state.remove(&cookie);
            for r in &mut t.records {
                r.initial.remove(&cookie);
                r.current.remove(&cookie);
                let dead: Vec<(u32, u64)> = r.counts.keys().filter(|(_, c)| *c == cookie).copied().collect();
                for key in dead {
                    if let Some(n) = r.counts.remove(&key) {
                        *r.counts.entry((key.0, RETIRED_NETNS_COOKIE)).or_insert(0) += n;
                    }
                }
            }
        }
    }

    /// Mark a destroyed namespace gone in every tuner (its late events are
    /// skipped); removed again by [`Registry::forget_netns`].
    pub fn mark_gone(&mut self, cookie: u64) {
        for t in self.tuners.values_mut() {
            t.netns_state.insert(cookie, TunerState::Gone);
        }
    }

    /// A namespace thought gone is back (found again): drop its gone marks.
    pub fn clear_gone(&mut self, cookie: u64) {
        for t in self.tuners.values_mut() {
            if t.netns_state.get(&cookie) == Some(&TunerState::Gone) {
                t.netns_state.remove(&cookie);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{ScenarioDesc, TunableDesc};
    use abi_stable::std_types::{RSlice, RStr};

    static TUNABLES: [TunableDesc; 2] = [
        TunableDesc {
            name: RStr::from_str("net.ipv4.tcp_rmem"),
            kind: TunableKind::Sysctl,
            flags: TunableFlags::NAMESPACED,
            num_values: 3,
        },
        TunableDesc {
            name: RStr::from_str("net.ipv4.tcp_mem"),
            kind: TunableKind::Sysctl,
            flags: TunableFlags::NONE,
            num_values: 3,
        },
    ];
    static SCENARIOS: [ScenarioDesc; 1] =
        [ScenarioDesc { name: RStr::from_str("grow"), description: RStr::from_str("because") }];

    pub(crate) fn descriptor() -> TunerDescriptor {
        TunerDescriptor {
            abi_version: crate::abi::BPFTUNE_ABI_VERSION,
            name: RStr::from_str("test"),
            tunables: RSlice::from_slice(&TUNABLES),
            scenarios: RSlice::from_slice(&SCENARIOS),
            strategies: RSlice::from_slice(&[]),
            tick_ms: 0,
        }
    }

    #[test]
    fn record_copies_tables_and_matches_exact_names() {
        let rec = TunerRecord::from_descriptor(0, "/x/test_tuner.so", &descriptor());
        assert_eq!(rec.name, "test");
        assert_eq!(rec.tunable_index("net.ipv4.tcp_mem"), Some(1));
        assert_eq!(rec.tunable_index("net.ipv4.tcp_me"), None);
        assert_eq!(rec.tunable_index("ipv4.tcp_mem"), None);
        assert!(rec.tunables[0].namespaced());
        assert!(!rec.tunables[1].namespaced());
    }

    #[test]
    fn per_netns_state() {
        let mut rec = TunerRecord::from_descriptor(0, "p", &descriptor());
        rec.state = TunerState::Active;
        rec.netns_state.insert(7, TunerState::Manual);
        assert!(rec.active_in(1));
        assert!(!rec.active_in(7));
        assert_eq!(rec.netns_state(7), TunerState::Manual);
        let mut reg = Registry::new();
        reg.insert(rec);
        assert_eq!(reg.next_id(), 1);
        reg.forget_netns(7);
        assert!(reg.get(0).expect("tuner").active_in(7));
    }

    #[test]
    fn gone_namespaces_release_state_and_fold_counts() {
        let mut rec = TunerRecord::from_descriptor(0, "p", &descriptor());
        rec.state = TunerState::Active;
        rec.records[0].initial.insert(9, "1 2 3".into());
        rec.records[0].current.insert(9, "1 2 4".into());
        rec.records[0].counts.insert((0, 9), 2);
        rec.records[0].counts.insert((0, 1), 5);
        let mut reg = Registry::new();
        reg.insert(rec);
        reg.forget_netns(9);
        reg.mark_gone(9);
        let t = reg.get(0).expect("tuner");
        assert_eq!(t.netns_state(9), TunerState::Gone);
        assert!(!t.active_in(9));
        assert!(t.records[0].initial.is_empty() && t.records[0].current.is_empty());
        assert_eq!(t.records[0].counts.get(&(0, RETIRED_NETNS_COOKIE)), Some(&2));
        assert_eq!(t.records[0].counts.get(&(0, 1)), Some(&5));
        reg.clear_gone(9);
        assert!(reg.get(0).expect("tuner").active_in(9));
        reg.mark_gone(9);
        reg.forget_netns(9);
        assert!(reg.get(0).expect("tuner").netns_state.is_empty());
    }
}
