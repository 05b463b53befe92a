//! Network namespaces as a tuner meets them: cookies, a handle (an nsfs
//! path) for a namespace, and running code inside one on a short-lived helper
//! thread, so the caller's thread never leaves its namespace. The daemon
//! keeps the registry of namespaces (`bpftune_core::netns`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use crate::abi::{NetnsChange, NetnsChangeKind};

/// `SO_NETNS_COOKIE` from `<asm-generic/socket.h>`.
pub const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie changes carry for a namespace that was gone before its own
/// cookie could be learned (counted with the other dead namespaces).
pub const SHORT_LIVED_NETNS_COOKIE: u64 = u64::MAX - 1;

/// Cookie of the namespace the calling thread is in (from an AF_UNIX
/// socket: the cheapest socket to create, and bound to the creator's netns).
pub fn current_netns_cookie() -> io::Result<u64> {
    // SAFETY: plain socket(2); the fd is owned by OwnedFd right after.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
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

/// Run `f` on a helper thread inside `ns`. Fails with [`NetnsGone`] if the
/// namespace is gone (path missing, or now naming another namespace: both
/// the inode of the opened file and the cookie seen after `setns` must match).
pub fn in_netns<R: Send>(ns: &NetnsHandle, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    std::thread::scope(|scope| {
        let worker =
            std::thread::Builder::new().name("bpftune-netns".into()).spawn_scoped(scope, || -> io::Result<R> {
                let _caps = crate::privilege::Raised::raise(crate::privilege::NETNS_ENTRY);
                let file = fs::File::open(&ns.path).map_err(|e| gone(format!("{}: {e}", ns.path.display())))?;
                let ino = file.metadata()?.ino();
                if ino != ns.inum {
                    return Err(gone(format!("{} now names another namespace", ns.path.display())));
                }
                // SAFETY: setns on a valid nsfs fd; it changes only this helper
                // thread's namespace, and the thread ends when the scope does.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                    let e = io::Error::last_os_error();
                    return Err(gone(format!("setns {}: {e}", ns.path.display())));
                }
                drop(file);
                let cookie = current_netns_cookie()?;
                if cookie != ns.cookie {
                    return Err(gone(format!("namespace cookie {cookie} is not the expected {}", ns.cookie)));
                }
                Ok(f())
            })?;
        worker.join().map_err(|_| io::Error::other("netns helper thread panicked"))?
    })
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
