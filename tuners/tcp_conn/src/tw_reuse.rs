//! tcp_conn's time-wait part: when TIME_WAIT sockets nearly fill a network
//! namespace's local port range, enable `net.ipv4.tcp_tw_reuse` there; when
//! reuse cannot keep up, widen `net.ipv4.ip_local_port_range` (bounded).
//!
//! The signal comes from tcp_conn's sockops program (`bpf/tw_reuse.bpf.h`,
//! its TCP_CONNECT_CB case): once per outgoing connection it compares the
//! namespace's TIME_WAIT count with its port range and sends a rate-limited
//! event when the range is nearly full. This side re-reads both sysctls,
//! decides with [`crate::tw_policy`] and writes through the host, which
//! logs, journals for rollback, and refuses namespaces where an
//! administrator owns a tunable of this tuner.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bpftune_sdk::abi::WriteOutcome;
use bpftune_sdk::change_reason;
use bpftune_sdk::messages::summary_line;
use bpftune_sdk::{Event, Host};
use libbpf_rs::{MapCore, MapFlags};

use crate::skel;
use crate::tw_policy::{self, Action, History, Observed};
use crate::{Scenario, Tunable};
use bpftune_sdk::read_plain;

// The event payload is integers only (tw_reuse.bpf.h).
bpftune_sdk::plain!(skel::types::tw_reuse_event);

/// tcp_conn's maps, where the time-wait part keeps its per-namespace state.
pub type Maps<'a> = skel::TcpConnMaps<'a>;

/// Namespaces remembered at most (BPF keeps as many in its LRU maps).
const NETNS_MAX: usize = 1024;

/// What is remembered per namespace.
#[derive(Debug, Clone, Copy, Default)]
struct NsState {
    /// When reuse was enabled here (by us, or seen enabled by a write
    /// racing ours).
    reuse_since: Option<Instant>,
    last_widen: Option<Instant>,
    /// The "cannot widen further" notice was logged.
    limit_noticed: bool,
}

/// Changes per tunable, for the summary (tcp_conn prints its own summary,
/// so the daemon's generic one does not list these).
#[derive(Debug, Clone, Default)]
struct Counts {
    global: u64,
    other: u64,
    /// Global namespace: value before the first change, and now.
    global_from: Option<String>,
    global_to: Option<String>,
}

/// The time-wait part's userspace state.
pub struct TwReuse {
    host: Host,
    state: HashMap<u64, NsState>,
    counts: [Counts; 2],
}

/// The scenarios this part sends (BPF's SCENARIO_TW_REUSE and
/// SCENARIO_PORT_RANGE).
pub fn handles(scenario_id: u32) -> bool {
    scenario_id == Scenario::TwReuse as u32 || scenario_id == Scenario::PortRange as u32
}

fn values_text(v: &[i64]) -> String {
    v.iter().map(i64::to_string).collect::<Vec<_>>().join(" ")
}

impl TwReuse {
    pub fn new(host: Host) -> Self {
        Self { host, state: HashMap::new(), counts: Default::default() }
    }

    fn read(&self, cookie: u64, t: Tunable) -> Option<Vec<i64>> {
        match self.host.sysctl_read(cookie, t.name()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.host.debug_log(&format!("tcp_conn: {e}"));
                None
            }
        }
    }

    /// Stop acting in a namespace an administrator owns (BPF stops
    /// sending its events too).
    fn disable(&mut self, maps: &Maps<'_>, cookie: u64) {
        self.state.remove(&cookie);
        let one = [1u8];
        if let Err(e) = maps.tw_netns_disabled.update(&cookie.to_ne_bytes(), &one, MapFlags::ANY) {
            self.host.error(&format!("tcp_conn: could not disable time-wait tuning in netns (cookie {cookie}): {e}"));
        } else {
            self.host.debug_log(&format!("tcp_conn: no more time-wait tuning in netns (cookie {cookie})"));
        }
    }

    /// Forget a namespace that is gone.
    pub fn forget(&mut self, maps: &Maps<'_>, cookie: u64) {
        self.state.remove(&cookie);
        let key = cookie.to_ne_bytes();
        let _ = maps.tw_windows.delete(&key);
        let _ = maps.tw_netns_disabled.delete(&key);
    }

    /// Write through the host; what follows a refusal is handled here.
    /// Returns whether the value is now the one asked for.
    fn write(
        &mut self,
        maps: &Maps<'_>,
        (t, s): (Tunable, Scenario),
        cookie: u64,
        old: &[i64],
        new: &[i64],
        reason: &str,
    ) -> bool {
        match self.host.write(t, s, cookie, new, reason) {
            Ok(WriteOutcome::Written) => {
                let global = cookie == self.host.global_netns_cookie();
                let c = &mut self.counts[if t == Tunable::TcpTwReuse { 0 } else { 1 }];
                if global {
                    c.global += 1;
                    c.global_from.get_or_insert_with(|| values_text(old));
                    c.global_to = Some(values_text(new));
                } else {
                    c.other += 1;
                }
                true
            }
            Ok(WriteOutcome::Unchanged | WriteOutcome::Advised) => true,
            Ok(WriteOutcome::SkippedManual) => {
                self.disable(maps, cookie);
                false
            }
            Ok(WriteOutcome::NetnsGone) => {
                self.forget(maps, cookie);
                false
            }
            Err(e) => {
                self.host.error(&format!("tcp_conn: could not change '{}': {e}", t.name()));
                false
            }
        }
    }

    /// One event from `bpf/tw_reuse.bpf.h`.
    pub fn event(&mut self, maps: &Maps<'_>, event: &Event) {
        let raw = event.raw_data();
        let Some(e) = read_plain::<skel::types::tw_reuse_event>(&raw) else {
            self.host.debug_log("tcp_conn: short time-wait event");
            return;
        };
        let cookie = event.netns_cookie();
        self.host.netns_seen(cookie, event.netns_inum());
        if !self.state.contains_key(&cookie) && self.state.len() >= NETNS_MAX {
            // Bounded: drop the namespace that widened longest ago (or never).
            if let Some(&old) = self.state.iter().min_by_key(|(_, s)| s.last_widen.or(s.reuse_since)).map(|(k, _)| k) {
                self.state.remove(&old);
            }
        }
        let (Some(reuse), Some(range)) =
            (self.read(cookie, Tunable::TcpTwReuse), self.read(cookie, Tunable::IpLocalPortRange))
        else {
            return;
        };
        let (Some(&reuse), [low, high, ..]) = (reuse.first(), range.as_slice()) else { return };
        let range = (*low, *high);
        let now = Instant::now();
        let st = self.state.entry(cookie).or_default();
        let history = History {
            reuse_for: st.reuse_since.map(|t| now.duration_since(t)),
            since_widen: st.last_widen.map(|t| now.duration_since(t)),
        };
        let delay = Duration::from_millis(u64::from(e.delay_ms.max(1)));
        let observed = Observed { tw: u64::from(e.tw), young: u64::from(e.young), reuse, range };
        self.host.debug_log(&format!(
            "tcp_conn: time-wait pressure in netns (cookie {cookie}): {} TIME_WAIT, {} within {} ms, range {}-{}, tcp_tw_reuse {reuse} (BPF read {})",
            e.tw, e.young, e.delay_ms, range.0, range.1, e.reuse
        ));
        match tw_policy::decide(observed, history, delay) {
            Action::EnableReuse { from } => {
                let t = Tunable::TcpTwReuse;
                let why = tw_policy::reuse_cause(observed.tw, range);
                let reason = change_reason(&why, t.name(), "", &[from], &[tw_policy::REUSE_ALL]);
                if self.write(maps, (t, Scenario::TwReuse), cookie, &[from], &[tw_policy::REUSE_ALL], &reason) {
                    if let Some(st) = self.state.get_mut(&cookie) {
                        st.reuse_since = Some(now);
                    }
                }
            }
            Action::Widen { from, to } => {
                let t = Tunable::IpLocalPortRange;
                let why = tw_policy::widen_cause(observed.young, delay, range);
                let (old, new) = ([from.0, from.1], [to.0, to.1]);
                let reason = change_reason(&why, t.name(), "", &old, &new);
                if self.write(maps, (t, Scenario::PortRange), cookie, &old, &new, &reason) {
                    if let Some(st) = self.state.get_mut(&cookie) {
                        st.last_widen = Some(now);
                        st.limit_noticed = false;
                    }
                }
            }
            Action::AtLimit { range } => {
                if !st.limit_noticed {
                    st.limit_noticed = true;
                    self.host.notice(&tw_policy::notice_at_limit(range));
                }
            }
            Action::Settling => self.host.debug_log("tcp_conn: TIME_WAIT reuse enabled recently; judging it later"),
            Action::Nothing => {}
        }
    }

    /// Summary lines in the daemon's format, for tcp_conn's own summary.
    pub fn summary_lines(&self) -> Vec<String> {
        summary_lines(&self.counts)
    }
}

/// The summary lines for these counts (reuse, then range).
fn summary_lines(counts: &[Counts; 2]) -> Vec<String> {
    let mut out = Vec::new();
    for (c, (t, s)) in
        counts.iter().zip([(Tunable::TcpTwReuse, Scenario::TwReuse), (Tunable::IpLocalPortRange, Scenario::PortRange)])
    {
        let desc = Scenario::TABLE[s as usize].description.as_str();
        if c.global > 0 {
            out.push(summary_line(s.name(), c.global, t.name(), true, desc));
            if let (Some(from), Some(to)) = (&c.global_from, &c.global_to) {
                out.push(format!("# sysctl '{}' changed from ({from}) -> ({to})", t.name()));
                out.push(
                    "# To replicate this change on another system, run the following as a privileged user in a terminal:"
                        .to_string(),
                );
                out.push(format!("sysctl -w {}=\"{to}\"", t.name()));
            }
        }
        if c.other > 0 {
            out.push(summary_line(s.name(), c.other, t.name(), false, desc));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_its_scenarios_and_its_tunables_are_per_namespace() {
        // The ids and thresholds are checked against the BPF side's enums
        // at compile time (same_ids! in lib.rs; tw_policy takes the
        // thresholds from the skeleton).
        assert!(handles(1) && handles(2) && !handles(0));
        assert_eq!(Tunable::IpLocalPortRange.name(), "net.ipv4.ip_local_port_range");
        let d = &Tunable::TABLE[Tunable::IpLocalPortRange as usize];
        assert_eq!(d.num_values, 2);
        assert!(d.flags.contains(bpftune_sdk::abi::TunableFlags::NAMESPACED));
        assert!(
            Tunable::TABLE[Tunable::TcpTwReuse as usize].flags.contains(bpftune_sdk::abi::TunableFlags::NAMESPACED)
        );
    }

    #[test]
    fn summary_in_the_daemons_format() {
        let reuse =
            Counts { global: 1, other: 2, global_from: Some(values_text(&[0])), global_to: Some(values_text(&[1])) };
        let range = Counts { other: 1, ..Counts::default() };
        let lines = summary_lines(&[reuse, range]);
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert!(lines[0].starts_with(
            "# Summary: scenario 'need to reuse TIME_WAIT sockets as local ports run out' occurred 1 times \
             for tunable 'net.ipv4.tcp_tw_reuse' in global ns."
        ));
        assert_eq!(lines[1], "# sysctl 'net.ipv4.tcp_tw_reuse' changed from (0) -> (1)");
        assert_eq!(lines[3], "sysctl -w net.ipv4.tcp_tw_reuse=\"1\"");
        assert!(lines[4].contains("occurred 2 times for tunable 'net.ipv4.tcp_tw_reuse' in non-global ns."));
        assert!(
            lines[5].contains("'need to widen local port range as TIME_WAIT reuse cannot keep up' occurred 1 times")
        );
        assert!(summary_lines(&Default::default()).is_empty());
    }
}
