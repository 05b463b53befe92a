//! An administrator's sysctl write, as the sysctl tuner reports it: which
//! tuners give up which namespace, the log lines saying so, and telling the
//! daemon's own writes apart on kernels where BPF cannot see the writer's
//! pid (there the value written is compared with what the daemon wrote a
//! moment ago).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{HostState, process_command, same_value};
use crate::abi::LogLevel;
use crate::registry::TunerState;
use crate::sysctl;

/// How long a write of the daemon's own is remembered for matching.
const OWN_WRITE_WINDOW: Duration = Duration::from_secs(5);
/// At most this many recent own writes are remembered.
const OWN_WRITES_MAX: usize = 64;

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

impl HostState {
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
