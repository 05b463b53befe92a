//! The ip_frag tuner: raises a network namespace's IPv4/IPv6 fragment
//! reassembly high threshold when its reassembly memory nears it, and
//! lowers it again if reassembly failures correlate with the increases.
//!
//! Nothing runs per packet: reassembly memory is a slow, per-namespace
//! signal, so once a second a BPF task iterator ([`fragmem`]) reads every
//! namespace's fragment memory in one kernel pass, and only namespaces that
//! hold some are read in detail (`FRAG` lines, thresholds, counters; see
//! [`sampler`]). The namespaces are the daemon's (`Host::namespaces`:
//! inotify on `/run/netns`, a full walk every [`SCAN_EVERY`] ticks), and the
//! daemon reads inside each one (`Host::in_netns`). Every decision is a pure function in [`policy`].
//! Unlike the original, thresholds are tuned in the namespace that
//! reassembles (they are per namespace), growth is capped, a zero request
//! count never divides, and low_thresh is kept below high_thresh.

pub mod fragmem;
pub mod policy;
pub mod sampler;
pub mod snmp;
pub mod sockstat;
pub mod tables;

use std::collections::HashMap;
use std::path::Path;

use bpftune_sdk::abi::FeatureState;
use bpftune_sdk::abi::{NetnsInfo, NetnsScan};
use bpftune_sdk::corr::Corr;
use bpftune_sdk::{Event, LearningRate, WriteOutcome, kernel};
use bpftune_sdk::{Host, NetnsState, PerNetns, Tuner};

use fragmem::FragMem;
use policy::{FragDecision, FragInput};
use sampler::Schedule;
use snmp::Reasm;
use sockstat::Reading;
use tables::{Scenario, Tunable};

/// Milliseconds between looks at the namespaces due.
pub const TICK_MS: u32 = 1000;
/// Every this many ticks the tuner walks every nsfs mount and process to
/// find namespaces (in between, only if `/run/netns` changed).
pub const SCAN_EVERY: u64 = 5;

/// Everything the tuner keeps for one namespace (the daemon's included),
/// held in a [`PerNetns`]: released by the SDK when the daemon reports the
/// namespace gone, and by the tuner when its listing no longer has it.
#[derive(Debug, Default)]
struct NsState {
    /// When to read it next.
    schedule: Schedule,
    /// The daemon was told about it (it needs a handle to write).
    reported: bool,
    /// An administrator took over here, or it is gone.
    disabled: bool,
    /// Per high threshold: (threshold, failure rate) samples.
    corr: HashMap<Tunable, Corr>,
}

/// What the SDK releases when a namespace goes (see
/// [`Tuner::netns_state`]): everything kept per namespace.
fn netns_states(ns: &mut PerNetns<NsState>) -> Vec<&mut dyn NetnsState> {
    vec![ns]
}

/// The loaded tuner.
pub struct IpFragTuner {
    host: Host,
    lr: LearningRate,
    /// The daemon's namespace (where `/proc/net` is read directly).
    global: u64,
    /// The IPv6 thresholds exist (probed at load).
    ipv6: bool,
    /// The BPF task iterator (every namespace's fragment memory in one
    /// pass); `None` where it cannot load (the timer reads /proc instead).
    fragmem: Option<FragMem>,
    /// Every other namespace on the host the daemon knows (cookie, inode);
    /// empty without netns cookies (global-only policy).
    namespaces: Vec<NetnsInfo>,
    tick: u64,
    /// What the tuner keeps per namespace.
    ns: PerNetns<NsState>,
}

impl IpFragTuner {
    /// Write through the daemon; stop acting in a namespace where an
    /// administrator took over or that is gone. True if the value is now set.
    fn write(&mut self, t: Tunable, s: Scenario, cookie: u64, old: i64, new: i64) -> bool {
        let reason = tables::reason(t.name(), old, new);
        match self.host.write(t, s, cookie, &[new], &reason) {
            Ok(WriteOutcome::Written | WriteOutcome::Advised | WriteOutcome::Unchanged) => true,
            Ok(WriteOutcome::SkippedManual | WriteOutcome::NetnsGone) => {
                let ns = self.ns.entry(cookie);
                ns.disabled = true;
                ns.corr.clear();
                false
            }
            Err(e) => {
                self.host.error(&format!("ip_frag: could not change '{}': {e}", t.name()));
                false
            }
        }
    }

    /// Feed the correlation with (next threshold, failure rate) and say
    /// whether failures follow our increases.
    fn correlated(&mut self, t: Tunable, cookie: u64, next_high: i64, counters: Option<Reasm>) -> bool {
        if let Some(rate) = counters.and_then(|r| policy::fail_rate(r.fails, r.reqds)) {
            self.ns.entry(cookie).corr.entry(t).or_default().update(next_high as f64, rate as f64);
        }
        self.ns.get(cookie).and_then(|ns| ns.corr.get(&t)).is_some_and(Corr::is_correlated)
    }

    /// Whether the tuner stopped acting in that namespace.
    fn disabled(&self, cookie: u64) -> bool {
        self.ns.get(cookie).is_some_and(|ns| ns.disabled)
    }

    /// Act on one look at a namespace (`inum` None: the daemon's own).
    fn act(&mut self, cookie: u64, inum: Option<u64>, reading: &Reading) {
        let v6 = if self.ipv6 { reading.v6 } else { None };
        let families = [(Tunable::IpfragHighThresh, reading.v4), (Tunable::Ip6fragHighThresh, v6)];
        for (t, fam) in families {
            let Some(fam) = fam.filter(|f| f.nearly_full(self.lr)) else { continue };
            let Some((high, low)) = fam.thresh else { continue };
            if self.disabled(cookie) {
                return;
            }
            self.host.debug_log(&format!(
                "ip_frag: mem {} high_thresh {high} tunable {} (cookie {cookie}, {} queues)",
                fam.mem.memory,
                t.name(),
                fam.mem.inuse
            ));
            if let Some(inum) = inum.and_then(|i| u32::try_from(i).ok()) {
                if !std::mem::replace(&mut self.ns.entry(cookie).reported, true) {
                    self.host.netns_seen(cookie, inum);
                }
            }
            let correlated = self.correlated(t, cookie, self.lr.grow(high), fam.counters);
            let input = FragInput { current_high: high, low, correlated };
            match policy::decide(input, self.lr) {
                FragDecision::Grow(new) => {
                    self.write(t, Scenario::Increase, cookie, high, new);
                }
                FragDecision::Shrink { high: new_high, low: new_low } => {
                    if let Some(new_low) = new_low {
                        if !self.write(t.low(), Scenario::Decrease, cookie, low, new_low) {
                            continue;
                        }
                    }
                    self.write(t, Scenario::Decrease, cookie, high, new_high);
                }
                FragDecision::Hold(why) => {
                    self.host.debug_log(&format!(
                        "ip_frag: not changing '{}' (cookie {cookie}, mem {}, high {high}): {why:?}",
                        t.name(),
                        fam.mem.memory
                    ));
                }
            }
        }
    }

    /// The daemon's namespaces: a full walk every [`SCAN_EVERY`] ticks (and
    /// the first), otherwise only if `/run/netns` changed. A namespace no
    /// longer listed is gone: forget it.
    fn discover(&mut self) {
        if !self.host.netns_cookie_supported() {
            return;
        }
        let scan = if self.tick % SCAN_EVERY == 1 { NetnsScan::Full } else { NetnsScan::IfChanged };
        let global = self.global;
        let now: Vec<NetnsInfo> = self.host.namespaces(scan).into_iter().filter(|n| n.cookie != global).collect();
        let gone: Vec<u64> =
            self.namespaces.iter().map(|n| n.cookie).filter(|c| !now.iter().any(|n| n.cookie == *c)).collect();
        for cookie in gone {
            self.ns.remove(cookie);
        }
        self.namespaces = now;
    }
}

impl Tuner for IpFragTuner {
    const NAME: &'static str = "ip_frag";
    const TUNABLES: &'static [bpftune_sdk::abi::TunableDesc] = Tunable::TABLE;
    const SCENARIOS: &'static [bpftune_sdk::abi::ScenarioDesc] = Scenario::TABLE;
    const TICK_MS: u32 = TICK_MS;

    fn init(host: Host) -> Result<Self, String> {
        let lr = host.learning_rate();
        if sockstat::read(Path::new("/proc/net"), Path::new("/proc/sys"), lr).v4.is_none() {
            return Err("ip_frag: no FRAG line in /proc/net/sockstat".to_string());
        }
        let fragmem = match FragMem::load(&host) {
            Ok(f) => {
                host.feature(
                    "reassembly memory",
                    FeatureState::Active,
                    "a BPF task iterator reads every namespace's fragment memory once a second; \
                     /proc/net/sockstat and snmp only where memory is held",
                );
                Some(f)
            }
            Err(e) => {
                host.feature(
                    "reassembly memory",
                    FeatureState::Fallback,
                    &format!("no BPF task iterator ({e}): FRAG lines of /proc/net/sockstat per namespace on a timer"),
                );
                None
            }
        };
        let ipv6 = kernel::sysctl_exists("net.ipv6.ip6frag_high_thresh");
        if !ipv6 {
            host.feature("ipv6", FeatureState::Off, "no net.ipv6.ip6frag_high_thresh (IPv6 disabled): IPv4 only");
        }
        // Without netns cookies the policy is global-only: no other
        // namespace is listed.
        let global = host.global_netns_cookie();
        if !host.netns_cookie_supported() {
            host.feature(
                "other namespaces",
                FeatureState::Off,
                "no netns cookies (5.14+): only the daemon's namespace is watched",
            );
        }
        Ok(Self { host, lr, global, ipv6, fragmem, namespaces: Vec::new(), tick: 0, ns: PerNetns::new() })
    }

    fn event(&mut self, _event: &Event) -> Result<(), String> {
        // The iterator is read on the tick; it sends no events.
        Ok(())
    }

    fn tick(&mut self) -> Result<(), String> {
        self.tick += 1;
        let tick = self.tick;
        self.discover();
        let global = self.global;
        if self.ns.get(global).is_none_or(|ns| !ns.disabled && ns.schedule.due(tick)) {
            let reading = sockstat::read(Path::new("/proc/net"), Path::new("/proc/sys"), self.lr);
            self.ns.entry(global).schedule.observed(tick, reading.busy());
            self.act(global, None, &reading);
        }
        // One kernel pass: which namespaces (with a process in them) hold
        // fragment memory at all. Those are read in detail now; the others
        // not at all; namespaces no process lives in (a bind mount only)
        // are read on the backing-off schedule.
        let held = match self.fragmem.as_ref().map(FragMem::read) {
            Some(Ok(m)) => Some(m),
            Some(Err(e)) => {
                self.host.debug_log(&format!("ip_frag: {e}; reading on the schedule this tick"));
                None
            }
            None => None,
        };
        let mut due = Vec::new();
        for n in &self.namespaces {
            let ns = self.ns.entry(n.cookie);
            if ns.disabled {
                continue;
            }
            match held.as_ref().and_then(|m| m.get(&n.inum)) {
                Some(f) if f.holds_memory() => due.push(*n),
                Some(_) => ns.schedule.observed(tick, false),
                None if ns.schedule.due(tick) => due.push(*n),
                None => {}
            }
        }
        for n in due {
            match sampler::read_namespace(&self.host, n.cookie, n.inum, self.lr) {
                Ok(reading) => {
                    self.ns.entry(n.cookie).schedule.observed(tick, reading.busy());
                    self.act(n.cookie, Some(n.inum), &reading);
                }
                Err(e) => {
                    // Gone or changed: the next listing tells; back off meanwhile.
                    self.ns.entry(n.cookie).schedule.observed(tick, false);
                    self.host.debug_log(&format!("ip_frag: netns cookie {}: {e}", n.cookie));
                }
            }
        }
        if tick % SCAN_EVERY == 1 {
            let namespaces = &self.namespaces;
            for (cookie, ns) in self.ns.iter_mut() {
                if cookie != global && !namespaces.iter().any(|n| n.cookie == cookie) {
                    ns.schedule.forget();
                }
            }
        }
        Ok(())
    }

    fn netns_state(&mut self) -> Vec<&mut dyn NetnsState> {
        netns_states(&mut self.ns)
    }
}

bpftune_sdk::export_tuner!(IpFragTuner);

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_sdk::testing::{self, ALIVE, GLOBAL, GONE};

    #[test]
    fn a_released_namespace_leaves_nothing() {
        let mut ns: PerNetns<NsState> = PerNetns::new();
        for cookie in [GLOBAL, GONE, ALIVE] {
            let s = ns.entry(cookie);
            s.schedule.observed(3, false);
            s.reported = true;
            s.disabled = cookie == GONE;
            s.corr.entry(Tunable::IpfragHighThresh).or_default().update(1.0, 2.0);
        }
        testing::assert_released_namespace_leaves_nothing(&mut ns, netns_states);
        assert!(ns.get(ALIVE).is_some_and(|s| s.reported && s.schedule.is_set()));
    }
}
