//! When to look at each namespace, and looking at many at once.
//!
//! [`Schedule`] keeps the per-tick cost bounded on hosts with many
//! namespaces: one that holds fragment memory is read every tick, an idle
//! one less and less often (every 1, 2, 4 ticks, at most every
//! [`IDLE_EVERY_MAX`]). [`read_namespaces`] reads all the namespaces due in
//! a tick on one helper thread, which enters each in turn with `setns`
//! (no thread per namespace), checks it is still the namespace it was
//! meant to be (inode of the path, cookie after entering), and reads there
//! (see [`crate::sockstat::read`]).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bpftune_core::LearningRate;
use bpftune_core::netns::{NetnsHandle, current_netns_cookie};

use crate::sockstat::{self, Reading};

/// An idle namespace is read at least once every this many ticks.
pub const IDLE_EVERY_MAX: u32 = 4;

#[derive(Debug, Clone, Copy)]
struct Slot {
    next: u64,
    every: u32,
}

/// Which namespaces are due at a tick.
#[derive(Debug, Default)]
pub struct Schedule {
    slots: HashMap<u64, Slot>,
}

impl Schedule {
    /// Whether `cookie` is to be read at `tick` (a namespace not seen
    /// before is due at once).
    pub fn due(&self, cookie: u64, tick: u64) -> bool {
        self.slots.get(&cookie).is_none_or(|s| tick >= s.next)
    }

    /// Record a read at `tick`: busy means next tick, idle backs off.
    pub fn observed(&mut self, cookie: u64, tick: u64, busy: bool) {
        let every = match self.slots.get(&cookie) {
            _ if busy => 1,
            Some(s) => (s.every * 2).min(IDLE_EVERY_MAX),
            None => 1,
        };
        self.slots.insert(cookie, Slot { next: tick + u64::from(every), every });
    }

    pub fn forget(&mut self, cookie: u64) {
        self.slots.remove(&cookie);
    }

    /// Keep only the namespaces `keep` says yes to.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.slots.retain(|c, _| keep(*c));
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Enter `h` on the calling (helper) thread and read it there.
fn read_one(h: &NetnsHandle, lr: LearningRate) -> io::Result<Reading> {
    let file = fs::File::open(&h.path)?;
    if file.metadata()?.ino() != h.inum {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} names another namespace", h.path.display())));
    }
    // SAFETY: setns on a valid nsfs fd we hold open; it moves only this
    // helper thread, which exits when the pass is done.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let cookie = current_netns_cookie()?;
    if cookie != h.cookie {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("cookie {cookie}, expected {}", h.cookie)));
    }
    // /proc/thread-self follows this thread; /proc/sys/net is looked up in
    // the calling thread's namespace.
    Ok(sockstat::read(Path::new("/proc/thread-self/net"), Path::new("/proc/sys"), lr))
}

/// Read every handle's namespace on one helper thread; one result per
/// handle, in order. Fails only if the thread cannot be started.
pub fn read_namespaces(handles: &[NetnsHandle], lr: LearningRate) -> io::Result<Vec<io::Result<Reading>>> {
    if handles.is_empty() {
        return Ok(Vec::new());
    }
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new().name("bpftune-ipfrag".into()).spawn_scoped(scope, || {
            let _caps = bpftune_core::privilege::Raised::raise(bpftune_core::privilege::NETNS_ENTRY);
            handles.iter().map(|h| read_one(h, lr)).collect::<Vec<_>>()
        })?;
        worker.join().map_err(|_| io::Error::other("ip_frag helper thread panicked"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_namespaces_back_off_and_busy_ones_are_read_every_tick() {
        let mut s = Schedule::default();
        assert!(s.due(7, 0), "new namespaces are due at once");
        let mut reads = Vec::new();
        for tick in 0..20 {
            if s.due(7, tick) {
                reads.push(tick);
                s.observed(7, tick, false);
            }
        }
        assert_eq!(reads, vec![0, 1, 3, 7, 11, 15, 19]);
        // Busy: read at the next tick, every tick.
        s.observed(7, 20, true);
        assert!(s.due(7, 21));
        s.observed(7, 21, true);
        assert!(s.due(7, 22));
        // Idle again: back off from 2.
        s.observed(7, 22, false);
        assert!(!s.due(7, 23));
        assert!(s.due(7, 24));
    }

    #[test]
    fn forgotten_namespaces_keep_nothing() {
        let mut s = Schedule::default();
        s.observed(1, 0, false);
        s.observed(2, 0, true);
        s.observed(3, 0, false);
        s.forget(1);
        s.retain(|c| c != 3);
        assert_eq!(s.len(), 1);
        assert!(s.due(1, 0));
    }

    #[test]
    fn a_pass_over_nothing_starts_no_thread() {
        assert!(read_namespaces(&[], LearningRate::default()).expect("pass").is_empty());
    }

    #[test]
    fn a_pass_reports_a_bad_handle_and_reads_a_good_one() {
        // The daemon's own namespace through /proc/self/ns/net: entering it
        // again is allowed (as root) and changes nothing.
        let path = std::path::PathBuf::from("/proc/self/ns/net");
        let Ok(inum) = fs::metadata(&path).map(|m| m.ino()) else { return };
        let Ok(cookie) = current_netns_cookie() else { return };
        let good = NetnsHandle { cookie, inum, path: path.clone() };
        let wrong_cookie = NetnsHandle { cookie: cookie.wrapping_add(1), inum, path: path.clone() };
        let wrong_inode = NetnsHandle { cookie, inum: inum.wrapping_add(1), path };
        let missing = NetnsHandle { cookie, inum, path: "/nonexistent/ns/net".into() };
        let r = read_namespaces(&[good, wrong_cookie, wrong_inode, missing], LearningRate::default()).expect("pass");
        assert_eq!(r.len(), 4);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(r[0].as_ref().is_ok_and(|x| x.v4.is_some()), "{:?}", r[0]);
            assert!(r[1].is_err());
        }
        assert!(r[2].is_err());
        assert!(r[3].is_err());
    }
}
