//! An administrator's sysctl write, as the sysctl tuner reports it: which
//! tuners give up which namespace, the log lines saying so, and telling the
//! daemon's own writes apart on kernels where BPF cannot see the writer's
//! pid (there the value written is compared with what the daemon wrote a
//! moment ago). Also the operator's `-q release` (hand a tunable back) and
//! `-q hold` (take it away without writing).

use std::collections::{HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{HostState, process_command, same_value};
use crate::abi::LogLevel;
use crate::registry::TunerState;
use crate::sysctl;

/// How long a write of the daemon's own is remembered for matching.
const OWN_WRITE_WINDOW: Duration = Duration::from_secs(5);
/// At most this many recent own writes are remembered.
const OWN_WRITES_MAX: usize = 64;
/// At most this many hand-backs wait for the tuners (drained every loop).
const HANDED_BACK_MAX: usize = 1024;

/// What the sysctl tuner saw of a write (the owned form of
/// [`crate::abi::AdminWrite`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminWriteInfo {
    /// 0 when unknown.
    pub pid: i32,
    pub netns_cookie: u64,
    /// False: the writer's namespace is unknown, and the write is taken as
    /// one in every namespace.
    pub netns_known: bool,
    pub name: String,
    /// The value written, or empty if not seen.
    pub value: String,
    /// The writer's command name from BPF, or empty.
    pub comm: String,
}

/// The daemon's recent sysctl writes: (when, dotted name, value).
#[derive(Debug, Default)]
pub struct OwnWrites {
    recent: VecDeque<(Instant, String, String)>,
}

impl OwnWrites {
    pub fn record(&mut self, name: &str, value: &str) {
        self.expire(Instant::now());
        if self.recent.len() >= OWN_WRITES_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back((Instant::now(), sysctl::path_name_to_dotted(name), value.to_string()));
    }

    /// Was `name` = `value` written by the daemon a moment ago? A match is
    /// consumed, so an administrator writing the same value again later is
    /// still seen.
    pub fn take_match(&mut self, name: &str, value: &str) -> bool {
        self.expire(Instant::now());
        let name = sysctl::path_name_to_dotted(name);
        let pos = self.recent.iter().position(|(_, n, v)| *n == name && same_value(v, value, false));
        pos.and_then(|i| self.recent.remove(i)).is_some()
    }

    fn expire(&mut self, now: Instant) {
        while self.recent.front().is_some_and(|(t, _, _)| now.duration_since(*t) > OWN_WRITE_WINDOW) {
            self.recent.pop_front();
        }
    }
}

/// (tuner id, namespace cookie) where the tuner is manual because the
/// operator held it (`-q hold`), not because of an administrator's write;
/// and the ones handed back (`-q release`) that the tuner is still to hear
/// of.
#[derive(Debug, Default)]
pub struct Holds {
    held: HashSet<(u32, u64)>,
    handed_back: Vec<(u32, u64)>,
}

/// `-q release` or `-q hold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    /// Hand the tunable back: manual -> active.
    Release,
    /// Take it away without writing it: active -> manual.
    Hold,
}

/// Who made a tuner manual in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualBy {
    Administrator,
    Operator,
}

impl ManualBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ManualBy::Administrator => "administrator",
            ManualBy::Operator => "operator",
        }
    }
}

impl HostState {
    /// The namespace an operator names: `global` (or nothing), a cookie,
    /// or a named namespace (`NAME` under /run/netns, or a path to an nsfs
    /// file). Unknown namespaces are an error.
    pub fn resolve_netns(&mut self, arg: Option<&str>) -> Result<u64, String> {
        let global = self.netns.global_cookie();
        let arg = match arg {
            None | Some("global") => return Ok(global),
            Some(a) => a,
        };
        if let Ok(cookie) = arg.parse::<u64>() {
            if self.netns.is_global(cookie) && (cookie == global || !self.netns.cookies_supported()) {
                return Ok(global);
            }
            if !self.known_live(cookie) {
                self.netns.scan();
                self.sync_netns();
            }
            if self.known_live(cookie) {
                return Ok(cookie);
            }
            return Err(format!("unknown namespace: no network namespace with cookie {cookie}"));
        }
        let path = if arg.contains('/') { Path::new(arg).to_path_buf() } else { Path::new("/run/netns").join(arg) };
        let ino =
            std::fs::metadata(&path).map_err(|e| format!("unknown namespace '{arg}': {}: {e}", path.display()))?.ino();
        if std::fs::metadata("/proc/self/ns/net").is_ok_and(|m| m.ino() == ino) {
            return Ok(global);
        }
        let find = |h: &HostState| h.netns.known_cookies().find(|c| h.netns.handle(*c).is_some_and(|n| n.inum == ino));
        let found = match find(self) {
            Some(c) => Some(c),
            None => {
                self.netns.scan();
                self.sync_netns();
                find(self)
            }
        };
        found.ok_or_else(|| {
            format!("unknown namespace '{arg}': {} is not a network namespace bpftune knows", path.display())
        })
    }

    /// (tuner id, cookie) handed back by the operator since the last call:
    /// the daemon tells each tuner to drop what it kept for that namespace
    /// (its own "leave it alone" marks among it), outside any tuner call.
    pub fn take_handed_back(&mut self) -> Vec<(u32, u64)> {
        std::mem::take(&mut self.holds.handed_back)
    }

    fn known_live(&self, cookie: u64) -> bool {
        !self.netns.is_gone(cookie) && self.netns.known_cookies().any(|c| c == cookie)
    }

    /// Who made tuner `tuner_id` manual in namespace `cookie`, if it is.
    pub fn manual_by(&self, tuner_id: u32, cookie: u64) -> Option<ManualBy> {
        let t = self.registry.get(tuner_id)?;
        if t.netns_state.get(&cookie) != Some(&TunerState::Manual) {
            return None;
        }
        Some(if self.holds.held.contains(&(tuner_id, cookie)) { ManualBy::Operator } else { ManualBy::Administrator })
    }

    /// The operator's `-q release`/`-q hold` of sysctl `tunable` (dotted or
    /// path form) in namespace `cookie` (global tunables: always the
    /// global namespace). Returns one reply line per tuner declaring it;
    /// changes are logged. Nothing is written to the sysctl.
    pub fn operator(&mut self, action: OperatorAction, tunable: &str, cookie: u64) -> Result<Vec<String>, String> {
        let name = sysctl::path_name_to_dotted(tunable);
        let global_cookie = self.netns.global_cookie();
        let cookie = self.netns.normalize(cookie);
        let mut replies = Vec::new();
        let mut logs = Vec::new();
        let mut declared = false;
        for tuner in self.registry.iter_mut() {
            let Some(idx) = tuner.tunable_index(&name) else { continue };
            declared = true;
            let target = if tuner.tunables[idx].namespaced() { cookie } else { global_cookie };
            let ns = if target == global_cookie { "global ns".to_string() } else { format!("netns (cookie {target})") };
            let from = tuner.netns_state(target);
            let key = (tuner.id, target);
            let to = match (action, from) {
                (OperatorAction::Release, TunerState::Manual) => {
                    tuner.netns_state.remove(&target);
                    self.holds.held.remove(&key);
                    if self.holds.handed_back.len() < HANDED_BACK_MAX {
                        self.holds.handed_back.push(key);
                    }
                    TunerState::Active
                }
                (OperatorAction::Hold, TunerState::Active) => {
                    tuner.netns_state.insert(target, TunerState::Manual);
                    self.holds.held.insert(key);
                    TunerState::Manual
                }
                (_, state) => {
                    replies.push(format!(
                        "tuner '{}' in {ns}: already {}; nothing changed",
                        tuner.name,
                        state.as_str()
                    ));
                    continue;
                }
            };
            let what = match action {
                OperatorAction::Release => "released",
                OperatorAction::Hold => "held (sysctl not written)",
            };
            let change = format!("tuner '{}' in {ns}: {} -> {}", tuner.name, from.as_str(), to.as_str());
            logs.push(format!("operator {what} sysctl '{name}': {change}"));
            replies.push(change);
        }
        if !declared {
            return Err(format!("unknown tunable '{name}': no loaded tuner declares it (see -q tunables)"));
        }
        for l in logs {
            self.log(LogLevel::Notice, &l);
        }
        Ok(replies)
    }

    /// An administrator wrote sysctl `path_name` (`net/ipv4/tcp_rmem` form
    /// or dotted) in namespace `cookie`: disable every tuner that declares
    /// exactly that tunable, in that namespace only.
    pub fn admin_override(&mut self, pid: i32, cookie: u64, path_name: &str) -> Vec<String> {
        self.admin_write(&AdminWriteInfo {
            pid,
            netns_cookie: cookie,
            netns_known: true,
            name: path_name.to_string(),
            value: String::new(),
            comm: String::new(),
        })
    }

    /// The sysctl tuner's report of a write; returns the tuners disabled.
    pub fn admin_write(&mut self, w: &AdminWriteInfo) -> Vec<String> {
        let name = sysctl::path_name_to_dotted(&w.name);
        if w.pid <= 0 && !w.value.is_empty() && self.own_writes.take_match(&name, &w.value) {
            // The kernel hides the writer from BPF here: our own write.
            return Vec::new();
        }
        let global_cookie = self.netns.global_cookie();
        let cookie = self.netns.normalize(w.netns_cookie);
        let everywhere: Vec<u64> = if w.netns_known {
            Vec::new()
        } else {
            std::iter::once(global_cookie).chain(self.netns.known_cookies()).collect()
        };
        let cmd = if !w.comm.is_empty() {
            w.comm.clone()
        } else if w.pid > 0 {
            process_command(w.pid)
        } else {
            "?".to_string()
        };
        let mut disabled = Vec::new();
        let mut lines = Vec::new();
        for tuner in self.registry.iter_mut() {
            let Some(idx) = tuner.tunable_index(&name) else { continue };
            // A global tunable written anywhere changes the global value.
            let targets = if !tuner.tunables[idx].namespaced() {
                vec![global_cookie]
            } else if w.netns_known {
                vec![cookie]
            } else {
                everywhere.clone()
            };
            for target in targets {
                if tuner.netns_state.get(&target) == Some(&TunerState::Manual) {
                    continue;
                }
                lines.push((
                    LogLevel::Notice,
                    format!(
                        "pid {}, cmd '{cmd}' modified sysctl '{name}' that tuner '{}' uses; disabling '{}' for namespace cookie {target}",
                        w.pid, tuner.name, tuner.name
                    ),
                ));
                // The original's line (at its level).
                lines.push((
                    LogLevel::Debug,
                    format!("setting state of netns (cookie {target}) to manual for '{}'", tuner.name),
                ));
                tuner.netns_state.insert(target, TunerState::Manual);
                self.holds.held.remove(&(tuner.id, target));
                if !disabled.contains(&tuner.name) {
                    disabled.push(tuner.name.clone());
                }
            }
        }
        for (level, l) in lines {
            self.log(level, &l);
        }
        disabled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_writes_match_once_by_name_and_value() {
        let mut own = OwnWrites::default();
        own.record("net.ipv4.tcp_rmem", "4096 131072 7864320");
        assert!(!own.take_match("net/ipv4/tcp_rmem", "4096 131072 6291456"));
        assert!(!own.take_match("net/ipv4/tcp_wmem", "4096 131072 7864320"));
        assert!(own.take_match("net/ipv4/tcp_rmem", "4096\t131072\t7864320\n"));
        assert!(!own.take_match("net/ipv4/tcp_rmem", "4096 131072 7864320"));
    }
}
