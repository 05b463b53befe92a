//! Which namespace an event belongs to, and whether a tuner still acts
//! there: the prologue every per-namespace tuner's event handler shares.
//!
//! Before this existed, tcp_buffer, ip_frag and udp_buffer each kept their
//! own `seen` map and `disabled` set and repeated the same steps at the top
//! of `Tuner::event`: turn the event's cookie into a real one (0 means the
//! daemon's namespace), drop events from namespaces the tuner gave up on
//! (an administrator took over there, or the namespace is gone), and tell
//! the daemon about a namespace the first time one of its events arrives
//! (so it can find a handle to read and write sysctls in it). A tuner now
//! owns one [`NetnsAdmission`] and calls [`NetnsAdmission::admit`] first.

use std::collections::{HashMap, HashSet};

use crate::event::{Event, NETNS_UNKNOWN};
use crate::host::Host;

/// What to do with an event whose namespace BPF could not tell
/// ([`NETNS_UNKNOWN`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownNetns {
    /// Drop the event: the tuner acts per namespace and cannot guess one.
    Skip,
    /// Treat it as the daemon's namespace: the tuner only changes global
    /// tunables, so the namespace only matters for reporting.
    Global,
}

/// The namespaces one tuner has seen in events and the ones it stopped
/// acting in, keyed by netns cookie.
#[derive(Debug, Clone)]
pub struct NetnsAdmission {
    global_cookie: u64,
    unknown: UnknownNetns,
    /// Namespace cookie → inode, as seen in events (never the global one).
    seen: HashMap<u64, u32>,
    /// Namespaces where an administrator took over (or that are gone).
    disabled: HashSet<u64>,
}

impl NetnsAdmission {
    /// Track namespaces for a tuner whose daemon runs in the namespace with
    /// cookie `global_cookie` ([`Host::global_netns_cookie`]).
    pub fn new(global_cookie: u64, unknown: UnknownNetns) -> Self {
        Self { global_cookie, unknown, seen: HashMap::new(), disabled: HashSet::new() }
    }

    /// The daemon's namespace.
    pub fn global_cookie(&self) -> u64 {
        self.global_cookie
    }

    /// Whether `cookie` (already normalised) is the daemon's namespace.
    pub fn is_global(&self, cookie: u64) -> bool {
        cookie == self.global_cookie
    }

    /// The real cookie of an event's namespace: 0 means the daemon's.
    pub fn normalize(&self, cookie: u64) -> u64 {
        if cookie == 0 { self.global_cookie } else { cookie }
    }

    /// The event's namespace (normalised cookie), or `None` if the tuner
    /// must ignore the event: its namespace is unknown (and the policy is
    /// [`UnknownNetns::Skip`]) or disabled. A non-global namespace is
    /// reported to the daemon ([`Host::netns_seen`]) the first time.
    pub fn admit(&mut self, host: &Host, event: &Event) -> Option<u64> {
        // Without netns cookies (before 5.14) policy is global-only: every
        // event counts as the daemon's namespace, whatever BPF could read.
        let cookie = if host.netns_cookie_supported() { event.netns_cookie() } else { self.global_cookie };
        self.admit_with(cookie, event.netns_inum(), |cookie, inum| host.netns_seen(cookie, inum))
    }

    /// [`Self::admit`] with the report to the daemon as a closure.
    #[doc(hidden)]
    pub fn admit_with(&mut self, cookie: u64, inum: u32, report: impl FnOnce(u64, u32)) -> Option<u64> {
        let cookie = match (cookie, self.unknown) {
            (NETNS_UNKNOWN, UnknownNetns::Skip) => return None,
            (NETNS_UNKNOWN, UnknownNetns::Global) => self.global_cookie,
            (c, _) => self.normalize(c),
        };
        if self.disabled.contains(&cookie) {
            return None;
        }
        // The latest inode wins, but the daemon hears of a namespace once.
        if !self.is_global(cookie) && self.seen.insert(cookie, inum).is_none() {
            report(cookie, inum);
        }
        Some(cookie)
    }

    /// The inode of a namespace seen in events, to read its `/proc/net`;
    /// `None` for the daemon's namespace (and for one never seen).
    pub fn inum(&self, cookie: u64) -> Option<u32> {
        if self.is_global(cookie) { None } else { self.seen.get(&cookie).copied() }
    }

    /// Stop acting in that namespace: [`Self::admit`] drops its events from
    /// now on. Returns true if it was not disabled already.
    pub fn disable(&mut self, cookie: u64) -> bool {
        self.disabled.insert(cookie)
    }

    /// Whether the tuner stopped acting in that namespace.
    pub fn is_disabled(&self, cookie: u64) -> bool {
        self.disabled.contains(&cookie)
    }

    /// Forget a namespace the daemon released ([`crate::Tuner::netns_released`]):
    /// its inode and whether it was disabled. Returns true if anything was
    /// kept for it. (Events for it stop at the daemon while it stays marked
    /// gone there, and cookies are never reused.)
    pub fn forget(&mut self, cookie: u64) -> bool {
        let seen = self.seen.remove(&cookie).is_some();
        let disabled = self.disabled.remove(&cookie);
        seen || disabled
    }

    /// How many namespaces this keeps anything for (seen or disabled).
    pub fn tracked(&self) -> usize {
        self.seen.len() + self.disabled.iter().filter(|c| !self.seen.contains_key(c)).count()
    }
}
