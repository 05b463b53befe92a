//! Network namespaces: their cookies, finding a handle (an nsfs path) for a
//! namespace seen in an event, and running code inside one on a short-lived
//! helper thread, so the daemon's main thread never leaves its namespace.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `SO_NETNS_COOKIE` from `<asm-generic/socket.h>`.
pub const SO_NETNS_COOKIE: libc::c_int = 71;

/// Cookie of the namespace the calling thread is in.
pub fn current_netns_cookie() -> io::Result<u64> {
    // SAFETY: plain socket(2); the fd is owned by OwnedFd right after.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we exclusively own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// A namespace other than the daemon's, and how to enter it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsHandle {
    pub cookie: u64,
    /// Inode of the namespace (`ns.inum`), to check the path still names it.
    pub inum: u64,
    /// `/run/netns/<name>` or `/proc/<pid>/ns/net`.
    pub path: PathBuf,
}

/// Where a sysctl access happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsTarget {
    Global,
    Netns(NetnsHandle),
}

fn gone(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, msg)
}

/// Run `f` on a helper thread inside `ns`. Fails with `NotFound` if the
/// namespace is gone (path missing, or now naming another namespace).
pub fn in_netns<R: Send>(ns: &NetnsHandle, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| -> io::Result<R> {
            let file = fs::File::open(&ns.path).map_err(|e| gone(format!("{}: {e}", ns.path.display())))?;
            let ino = file.metadata()?.ino();
            if ino != ns.inum {
                return Err(gone(format!("{} now names another namespace", ns.path.display())));
            }
            // SAFETY: setns on a valid nsfs fd; it changes only this helper
            // thread's namespace, and the thread ends when the scope does.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                return Err(io::Error::last_os_error());
            }
            let cookie = current_netns_cookie()?;
            if cookie != ns.cookie {
                return Err(gone(format!("namespace cookie {cookie} is not the expected {}", ns.cookie)));
            }
            Ok(f())
        });
        worker.join().map_err(|_| io::Error::other("netns helper thread panicked"))?
    })
}

/// Every path that may name a network namespace: nsfs mounts (e.g.
/// `/run/netns/*`) and each process's `/proc/<pid>/ns/net`, deduplicated by
/// namespace inode.
pub fn candidate_paths(proc_root: &Path) -> HashMap<u64, PathBuf> {
    let mut found: HashMap<u64, PathBuf> = HashMap::new();
    if let Ok(mounts) = fs::read_to_string(proc_root.join("self/mounts")) {
        for line in mounts.lines() {
            let mut fields = line.split_whitespace();
            let (Some(_src), Some(target), Some(fstype)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            if fstype != "nsfs" {
                continue;
            }
            let path = PathBuf::from(target.replace("\\040", " "));
            if let Ok(meta) = fs::metadata(&path) {
                found.entry(meta.ino()).or_insert(path);
            }
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

/// Cookie of the namespace behind `path` (entered on a helper thread).
pub fn cookie_of_path(path: &Path) -> io::Result<(u64, u64)> {
    let inum = fs::metadata(path)?.ino();
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> io::Result<(u64, u64)> {
                let file = fs::File::open(path)?;
                // SAFETY: setns on a valid nsfs fd, affecting only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok((current_netns_cookie()?, inum))
            })
            .join()
            .map_err(|_| io::Error::other("netns helper thread panicked"))?
    })
}

/// The namespaces the daemon knows, by cookie. Bounded by the namespaces
/// alive on the machine: entries are dropped when a namespace is gone.
#[derive(Debug, Default)]
pub struct NetnsRegistry {
    global_cookie: u64,
    global_inum: u64,
    known: HashMap<u64, NetnsHandle>,
    /// Cookies confirmed gone; kept only to log "destroyed" once.
    gone: HashSet<u64>,
    proc_root: PathBuf,
}

impl NetnsRegistry {
    pub fn new(global_cookie: u64, proc_root: impl Into<PathBuf>) -> Self {
        let proc_root = proc_root.into();
        let global_inum = fs::metadata(proc_root.join("self/ns/net")).map(|m| m.ino()).unwrap_or(0);
        Self { global_cookie, global_inum, known: HashMap::new(), gone: HashSet::new(), proc_root }
    }

    pub fn global_cookie(&self) -> u64 {
        self.global_cookie
    }

    /// 0 and "unknown" mean the daemon's own namespace.
    pub fn is_global(&self, cookie: u64) -> bool {
        cookie == 0 || cookie == u64::MAX || cookie == self.global_cookie
    }

    /// Map a cookie from BPF to the one used everywhere (0/unknown → global).
    pub fn normalize(&self, cookie: u64) -> u64 {
        if self.is_global(cookie) { self.global_cookie } else { cookie }
    }

    pub fn known_count(&self) -> usize {
        self.known.len()
    }

    pub fn known_cookies(&self) -> impl Iterator<Item = u64> + '_ {
        self.known.keys().copied()
    }

    /// Remember that a namespace with this cookie has this inode. Returns
    /// true if it was new.
    pub fn note(&mut self, cookie: u64, inum: u64) -> bool {
        if self.is_global(cookie) || inum == 0 || inum == self.global_inum {
            return false;
        }
        if let Some(h) = self.known.get(&cookie) {
            if h.inum == inum {
                return false;
            }
        }
        let path = candidate_paths(&self.proc_root).remove(&inum);
        match path {
            Some(path) => {
                self.gone.remove(&cookie);
                self.known.insert(cookie, NetnsHandle { cookie, inum, path });
                true
            }
            None => false,
        }
    }

    /// Find every live namespace now (start-up discovery). Returns the
    /// cookies that were not known before.
    pub fn discover(&mut self) -> Vec<u64> {
        let mut new = Vec::new();
        let known_inums: HashSet<u64> = self.known.values().map(|h| h.inum).collect();
        for (inum, path) in candidate_paths(&self.proc_root) {
            if inum == self.global_inum || known_inums.contains(&inum) {
                continue;
            }
            if let Ok((cookie, inum)) = cookie_of_path(&path) {
                if self.is_global(cookie) {
                    continue;
                }
                self.known.insert(cookie, NetnsHandle { cookie, inum, path });
                new.push(cookie);
            }
        }
        new
    }

    /// Where to act for this cookie; `NotFound` if the namespace is gone.
    pub fn target(&mut self, cookie: u64) -> io::Result<NsTarget> {
        if self.is_global(cookie) {
            return Ok(NsTarget::Global);
        }
        if let Some(h) = self.known.get(&cookie) {
            if fs::metadata(&h.path).map(|m| m.ino()).ok() == Some(h.inum) {
                return Ok(NsTarget::Netns(h.clone()));
            }
            // The path went away (process exited); look for another one.
            let inum = h.inum;
            if let Some(path) = candidate_paths(&self.proc_root).remove(&inum) {
                let handle = NetnsHandle { cookie, inum, path };
                self.known.insert(cookie, handle.clone());
                return Ok(NsTarget::Netns(handle));
            }
        }
        Err(gone(format!("no handle for netns cookie {cookie}")))
    }

    /// Forget a namespace that is gone. Returns true the first time.
    pub fn forget(&mut self, cookie: u64) -> bool {
        let was_known = self.known.remove(&cookie).is_some();
        let first = self.gone.insert(cookie);
        // Keep the tombstone set bounded.
        if self.gone.len() > 4096 {
            self.gone.clear();
        }
        was_known || first
    }

    /// Namespaces whose every handle disappeared since last checked.
    pub fn reap(&mut self) -> Vec<u64> {
        let live = candidate_paths(&self.proc_root);
        let live_inums: HashSet<u64> = live.keys().copied().collect();
        let dead: Vec<u64> = self.known.values().filter(|h| !live_inums.contains(&h.inum)).map(|h| h.cookie).collect();
        for c in &dead {
            self.forget(*c);
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_cookie_normalisation() {
        let r = NetnsRegistry::new(5, "/proc");
        assert!(r.is_global(0));
        assert!(r.is_global(u64::MAX));
        assert!(r.is_global(5));
        assert!(!r.is_global(6));
        assert_eq!(r.normalize(0), 5);
        assert_eq!(r.normalize(9), 9);
    }

    #[test]
    fn own_namespace_is_a_candidate() {
        let own = fs::metadata("/proc/self/ns/net").map(|m| m.ino()).expect("own ns");
        assert!(candidate_paths(Path::new("/proc")).contains_key(&own));
    }

    #[test]
    fn unknown_cookie_has_no_target() {
        let mut r = NetnsRegistry::new(1, "/proc");
        assert!(r.target(12345).is_err());
        assert_eq!(r.target(1).expect("global"), NsTarget::Global);
    }
}
