//! Network namespaces: their cookies, finding a handle (an nsfs path) for a
//! namespace seen in an event, and running code inside one on a short-lived
//! helper thread, so the daemon's main thread never leaves its namespace.
//!
//! The daemon never holds a namespace open: a handle is a path (a bind mount
//! such as `/run/netns/NAME`, or `/proc/<pid>/ns/net`) plus the namespace's
//! inode and cookie, re-checked after every `setns`. A namespace is "gone"
//! when no process and no mount names it any more; its state is then
//! dropped everywhere (see [`NetnsRegistry::scan`]).

mod probe;
mod watch;
mod worker;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use bpftune_sdk::netns::*;
pub use probe::{ProbeResult, probe_paths};
pub use worker::{RawJob, Where, run_in, run_raw, threads_started};

/// A namespace other than the daemon's, and how to enter it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsHandle {
    pub cookie: u64,
    /// Inode of the namespace (`ns.inum`), to check the path still names it.
    pub inum: u64,
    /// `/run/netns/<name>` or `/proc/<pid>/ns/net`.
    pub path: PathBuf,
}

/// The namespace an access was meant for no longer exists (or the path now
/// names another one). Carried inside an `io::Error` of kind `NotFound`.
#[derive(Debug)]
pub struct NetnsGone(pub String);

impl std::fmt::Display for NetnsGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "network namespace gone: {}", self.0)
    }
}

impl std::error::Error for NetnsGone {}

pub fn gone(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, NetnsGone(msg))
}

/// True if `e` says the namespace is gone (not, say, a missing sysctl).
pub fn is_gone_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<NetnsGone>())
}

/// Run `f` inside `ns` on the namespace worker (see [`worker`]). Fails
/// with [`NetnsGone`] if the namespace is gone (path missing, or now naming
/// another namespace: both the inode of the opened file and the cookie seen
/// after `setns` must match).
pub fn in_netns<R: Send + 'static>(ns: &NetnsHandle, f: impl FnOnce() -> R + Send + 'static) -> io::Result<R> {
    run_in(Where::Netns(ns), f)
}

/// Every path that may name a network namespace: nsfs mounts (e.g.
/// `/run/netns/*`) and each process's `/proc/<pid>/ns/net`, deduplicated by
/// namespace inode (mounts first: they outlive processes).
pub fn candidate_paths(proc_root: &Path) -> HashMap<u64, PathBuf> {
    let mut found: HashMap<u64, PathBuf> = HashMap::new();
    for path in nsfs_mounts(proc_root) {
        if let Ok(meta) = fs::metadata(&path) {
            found.entry(meta.ino()).or_insert(path);
        }
    }
    if let Ok(entries) = fs::read_dir(proc_root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let path = entry.path().join("ns/net");
            if let Ok(meta) = fs::metadata(&path) {
                found.entry(meta.ino()).or_insert(path);
            }
        }
    }
    found
}

/// Mount points of nsfs files (any namespace type) in our mount namespace.
fn nsfs_mounts(proc_root: &Path) -> Vec<PathBuf> {
    let Ok(mounts) = fs::read_to_string(proc_root.join("self/mounts")) else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_src, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "nsfs").then(|| PathBuf::from(unescape_mount_path(target)))
        })
        .collect()
}

/// `/proc/mounts` escapes space, tab, newline and backslash as octal.
pub fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = u32::from(b[i + 1] - b'0') * 64 + u32::from(b[i + 2] - b'0') * 8 + u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Recently destroyed namespaces remembered (to skip their late events and
/// log their end once). Older ones are forgotten entirely.
pub const TOMBSTONES_MAX: usize = 1024;
/// Namespace changes queued for the netns tuner at most.
pub const CHANGES_MAX: usize = 8192;

/// Where a sysctl access happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsTarget {
    Global,
    Netns(NetnsHandle),
}

/// Cookie and inode of the namespace behind `path` (entered on a helper
/// thread).
pub fn cookie_of_path(path: &Path) -> io::Result<(u64, u64)> {
    let inum = fs::metadata(path)?.ino();
    let mut results = probe_paths(vec![(inum, path.to_path_buf())])?;
    match results.pop() {
        Some(r) => r.cookie.map(|c| (c, inum)),
        None => Err(io::Error::other("netns probe returned nothing")),
    }
}

/// The namespaces the daemon knows, by cookie. Bounded by the namespaces
/// alive on the machine: entries are dropped when a namespace is gone.
///
/// A global cookie of 0 means the kernel has no netns cookies: then every
/// cookie is the global namespace and nothing is tracked (global-only
/// policy).
#[derive(Debug, Default)]
pub struct NetnsRegistry {
    global_cookie: u64,
    global_inum: u64,
    known: HashMap<u64, NetnsHandle>,
    /// inode → cookie of the known namespaces.
    by_inum: HashMap<u64, u64>,
    /// Cookies confirmed gone, most recent last; bounded.
    gone: HashSet<u64>,
    gone_order: VecDeque<u64>,
    /// Tombstones dropped from `gone` since the host last synced.
    evicted: Vec<u64>,
    /// Tombstones added since the host last synced.
    newly_gone: Vec<u64>,
    /// What happened since the host last synced (logged and applied there).
    changes: VecDeque<NetnsChange>,
    /// Changes dropped because nobody drained the queue.
    changes_dropped: u64,
    /// Inodes of nsfs mounts that are not network namespaces.
    not_netns: HashSet<u64>,
    /// Set by the first [`NetnsRegistry::discover`]: later finds are "created".
    started: bool,
    watch: Option<watch::RunNetnsWatch>,
    proc_root: PathBuf,
}

impl NetnsRegistry {
    pub fn new(global_cookie: u64, proc_root: impl Into<PathBuf>) -> Self {
        let proc_root = proc_root.into();
        let global_inum = fs::metadata(proc_root.join("self/ns/net")).map(|m| m.ino()).unwrap_or(0);
        Self { global_cookie, global_inum, proc_root, ..Self::default() }
    }

    pub fn global_cookie(&self) -> u64 {
        self.global_cookie
    }

    /// False on kernels without netns cookies: global-only policy.
    pub fn cookies_supported(&self) -> bool {
        self.global_cookie != 0
    }

    /// 0 and "unknown" mean the daemon's own namespace; without cookie
    /// support every cookie does.
    pub fn is_global(&self, cookie: u64) -> bool {
        !self.cookies_supported() || cookie == 0 || cookie == u64::MAX || cookie == self.global_cookie
    }

    /// Map a cookie from BPF to the one used everywhere (0/unknown → global).
    pub fn normalize(&self, cookie: u64) -> u64 {
        if self.is_global(cookie) { self.global_cookie } else { cookie }
    }

    /// Inode of the daemon's own namespace (0 if unknown).
    pub fn global_inum(&self) -> u64 {
        self.global_inum
    }

    pub fn known_count(&self) -> usize {
        self.known.len()
    }

    pub fn known_cookies(&self) -> impl Iterator<Item = u64> + '_ {
        self.known.keys().copied()
    }

    /// The handle of a known namespace.
    pub fn handle(&self, cookie: u64) -> Option<&NetnsHandle> {
        self.known.get(&cookie)
    }

    /// A recently destroyed namespace.
    pub fn is_gone(&self, cookie: u64) -> bool {
        self.gone.contains(&cookie)
    }

    /// Tombstones currently kept (bounded by [`TOMBSTONES_MAX`]).
    pub fn gone_count(&self) -> usize {
        self.gone.len()
    }

    fn push_change(&mut self, cookie: u64, kind: NetnsChangeKind) {
        if self.changes.len() >= CHANGES_MAX {
            self.changes.pop_front();
            self.changes_dropped += 1;
        }
        self.changes.push_back(NetnsChange { cookie, kind });
    }

    /// Changes since the last call, for the host to log and apply.
    pub fn take_changes(&mut self) -> Vec<NetnsChange> {
        self.changes.drain(..).collect()
    }

    /// Tombstones dropped since the last call (their "gone" state can go).
    pub fn take_evicted(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.evicted)
    }

    /// Cookies found gone since the last call, known or not (their state
    /// goes, and they are marked gone in every tuner).
    pub fn take_newly_gone(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.newly_gone)
    }

    pub fn has_pending(&self) -> bool {
        !self.changes.is_empty() || !self.evicted.is_empty() || !self.newly_gone.is_empty()
    }

    pub(crate) fn insert(&mut self, handle: NetnsHandle, kind: NetnsChangeKind) {
        let cookie = handle.cookie;
        if self.gone.remove(&cookie) {
            self.gone_order.retain(|c| *c != cookie);
            self.newly_gone.retain(|c| *c != cookie);
        }
        self.by_inum.insert(handle.inum, cookie);
        let was_known = self.known.insert(cookie, handle).is_some();
        if !was_known {
            self.push_change(cookie, kind);
        }
    }

    fn found_kind(&self) -> NetnsChangeKind {
        if self.started { NetnsChangeKind::Created } else { NetnsChangeKind::Found }
    }

    /// Remember that a namespace with this cookie has this inode (from an
    /// event; `pid`, a process or thread id, was in it, 0 if unknown). The
    /// pair is verified by entering the namespace once. Returns true if it
    /// was new.
    pub fn note(&mut self, cookie: u64, inum: u64, pid: i32) -> bool {
        if self.is_global(cookie) || inum == 0 || inum == self.global_inum || self.gone.contains(&cookie) {
            return false;
        }
        if self.known.get(&cookie).is_some_and(|h| h.inum == inum) {
            return false;
        }
        let by_pid = (pid > 0).then(|| self.proc_root.join(format!("{pid}/ns/net")));
        let path = match by_pid.filter(|p| fs::metadata(p).is_ok_and(|m| m.ino() == inum)) {
            Some(p) => Some(p),
            None => candidate_paths(&self.proc_root).remove(&inum),
        };
        let Some(path) = path else { return false };
        let Ok(mut probed) = probe_paths(vec![(inum, path.clone())]) else { return false };
        let Some(Ok(real)) = probed.pop().map(|r| r.cookie) else { return false };
        if real != cookie {
            // A stale event: that namespace died and its inode was reused.
            return false;
        }
        // Inodes are unique among live namespaces: an older owner is dead.
        if let Some(old) = self.by_inum.get(&inum).copied().filter(|c| *c != cookie) {
            self.forget(old);
        }
        self.insert(NetnsHandle { cookie, inum, path }, NetnsChangeKind::Created);
        true
    }

    /// Find every live namespace now (start-up discovery; also the first
    /// scan). Returns the cookies of every known namespace.
    pub fn discover(&mut self) -> Vec<u64> {
        self.scan();
        self.known.keys().copied().collect()
    }

    /// One pass over every nsfs mount and process: register namespaces not
    /// seen before (entering each new one once, all on one helper thread),
    /// re-check known ones whose holder changed, and forget the ones no
    /// process or mount holds any more.
    pub fn scan(&mut self) {
        if !self.cookies_supported() {
            return;
        }
        let (suspects, created) = self.watch_events();
        let live = candidate_paths(&self.proc_root);
        let mut dead = Vec::new();
        let mut to_probe: Vec<(u64, PathBuf)> = Vec::new();
        let mut recheck: HashMap<u64, u64> = HashMap::new(); // inum -> old cookie
        for h in self.known.values() {
            let suspect = suspects.contains(&h.path);
            let same_holder = !suspect && fs::metadata(&h.path).is_ok_and(|m| m.ino() == h.inum);
            if same_holder {
                continue;
            }
            match live.get(&h.inum) {
                // Someone else holds it now, or the same path was re-made:
                // the inode may have been reused, so look again.
                Some(path) => {
                    recheck.insert(h.inum, h.cookie);
                    to_probe.push((h.inum, path.clone()));
                }
                None => dead.push(h.cookie),
            }
        }
        for (inum, path) in &live {
            if *inum == self.global_inum || self.by_inum.contains_key(inum) || self.not_netns.contains(inum) {
                continue;
            }
            to_probe.push((*inum, path.clone()));
        }
        let results = if to_probe.is_empty() { Vec::new() } else { probe_paths(to_probe).unwrap_or_default() };
        let kind = self.found_kind();
        for r in results {
            let old = recheck.get(&r.inum).copied();
            match r.cookie {
                Ok(cookie) if old == Some(cookie) => {
                    if let Some(h) = self.known.get_mut(&cookie) {
                        h.path = r.path;
                    }
                }
                Ok(cookie) => {
                    if let Some(old) = old {
                        dead.push(old);
                    }
                    if !self.is_global(cookie) {
                        self.by_inum.remove(&r.inum);
                        self.insert(NetnsHandle { cookie, inum: r.inum, path: r.path }, kind);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && old.is_none() => {
                    if self.not_netns.len() >= 4096 {
                        self.not_netns.clear();
                    }
                    self.not_netns.insert(r.inum);
                }
                Err(_) => {
                    if let Some(old) = old {
                        dead.push(old);
                    }
                }
            }
        }
        for cookie in dead {
            self.forget(cookie);
        }
        if self.started {
            self.note_short_lived(&created);
        }
        self.started = true;
    }

    /// `/run/netns` entries created since the last scan that are gone
    /// already and were never resolved (`ip netns add x; ip netns del x`):
    /// the inotify event is the evidence a namespace was made. Each is
    /// reported created and destroyed under [`SHORT_LIVED_NETNS_COOKIE`]
    /// (no cookie was ever learned); one that is still there was resolved
    /// by this scan and reported under its own cookie, once.
    fn note_short_lived(&mut self, created: &[PathBuf]) {
        for path in created {
            let resolved = self.known.values().any(|h| h.path == *path);
            if resolved || path.exists() {
                continue;
            }
            self.push_change(SHORT_LIVED_NETNS_COOKIE, NetnsChangeKind::Created);
            self.push_change(SHORT_LIVED_NETNS_COOKIE, NetnsChangeKind::Destroyed);
        }
    }

    /// Cheap check between full scans: rescan if `/run/netns` changed.
    /// Returns true if it scanned.
    pub fn scan_if_changed(&mut self) -> bool {
        if !self.cookies_supported() {
            return false;
        }
        let changed = match self.watch.as_mut() {
            Some(w) => w.pending(),
            None => true,
        };
        if changed {
            self.scan();
        }
        changed
    }

    /// Paths under `/run/netns` that were created or removed since last
    /// asked, and the ones created (and set the watch up if needed).
    fn watch_events(&mut self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        if self.watch.is_none() {
            self.watch = watch::RunNetnsWatch::new().ok();
        }
        match self.watch.as_mut() {
            Some(w) => w.changed_paths(),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// Where to act for this cookie; [`NetnsGone`] if the namespace is gone
    /// or cannot be found. An unknown cookie triggers one scan (a namespace
    /// created since the last one).
    pub fn target(&mut self, cookie: u64) -> io::Result<NsTarget> {
        if self.is_global(cookie) {
            return Ok(NsTarget::Global);
        }
        if self.gone.contains(&cookie) {
            return Err(gone(format!("netns cookie {cookie} was destroyed")));
        }
        if !self.known.contains_key(&cookie) {
            self.scan();
        }
        let Some(h) = self.known.get(&cookie) else {
            // Nothing names it: remember that, so its next events cost nothing.
            self.forget(cookie);
            return Err(gone(format!("no handle for netns cookie {cookie}")));
        };
        if fs::metadata(&h.path).is_ok_and(|m| m.ino() == h.inum) {
            return Ok(NsTarget::Netns(h.clone()));
        }
        // The path went away (process exited); look for another one.
        let inum = h.inum;
        if let Some(path) = candidate_paths(&self.proc_root).remove(&inum) {
            let handle = NetnsHandle { cookie, inum, path };
            self.known.insert(cookie, handle.clone());
            return Ok(NsTarget::Netns(handle));
        }
        self.forget(cookie);
        Err(gone(format!("netns cookie {cookie} is no longer held by any process or mount")))
    }

    /// The handle of `cookie` failed mid-access (its path vanished, say a
    /// thread or process left): find another path naming the same
    /// namespace, or forget it as gone.
    pub fn retarget(&mut self, cookie: u64) -> io::Result<NsTarget> {
        if self.is_global(cookie) {
            return Ok(NsTarget::Global);
        }
        let Some(h) = self.known.get(&cookie) else {
            return Err(gone(format!("no handle for netns cookie {cookie}")));
        };
        let (inum, old) = (h.inum, h.path.clone());
        match candidate_paths(&self.proc_root).remove(&inum) {
            Some(path) if path != old => {
                let handle = NetnsHandle { cookie, inum, path };
                self.known.insert(cookie, handle.clone());
                Ok(NsTarget::Netns(handle))
            }
            _ => {
                self.forget(cookie);
                Err(gone(format!("netns cookie {cookie} is no longer held by any process or mount")))
            }
        }
    }

    /// Forget a namespace that is gone. Returns true the first time.
    pub fn forget(&mut self, cookie: u64) -> bool {
        if self.is_global(cookie) {
            return false;
        }
        let was_known = match self.known.remove(&cookie) {
            Some(h) => {
                if self.by_inum.get(&h.inum) == Some(&cookie) {
                    self.by_inum.remove(&h.inum);
                }
                true
            }
            None => false,
        };
        if was_known {
            self.push_change(cookie, NetnsChangeKind::Destroyed);
        }
        let first = self.gone.insert(cookie);
        if first {
            self.newly_gone.push(cookie);
            self.gone_order.push_back(cookie);
            while self.gone_order.len() > TOMBSTONES_MAX {
                if let Some(old) = self.gone_order.pop_front() {
                    self.gone.remove(&old);
                    self.evicted.push(old);
                }
            }
        }
        was_known || first
    }

    /// Namespaces whose every handle disappeared since last checked.
    pub fn reap(&mut self) -> Vec<u64> {
        let before: HashSet<u64> = self.known.keys().copied().collect();
        self.scan();
        before.into_iter().filter(|c| !self.known.contains_key(c)).collect()
    }
}

#[cfg(test)]
mod tests;
