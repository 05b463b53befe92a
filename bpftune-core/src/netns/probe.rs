//! Learning the cookies of many namespaces at once: one helper thread
//! enters each candidate in turn (`setns` needs no fresh thread per
//! namespace), so start-up discovery with a thousand namespaces costs a
//! thousand `setns` calls, not a thousand threads.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::{current_netns_cookie, gone};

/// What entering one candidate path found.
#[derive(Debug)]
pub struct ProbeResult {
    /// The inode the candidate was expected to have.
    pub inum: u64,
    pub path: PathBuf,
    /// The namespace's cookie; `EINVAL` if the path is not a network
    /// namespace, [`super::NetnsGone`] if it vanished or changed.
    pub cookie: io::Result<u64>,
}

fn probe_one(inum: u64, path: &std::path::Path) -> io::Result<u64> {
    let file = fs::File::open(path).map_err(|e| gone(format!("{}: {e}", path.display())))?;
    if file.metadata()?.ino() != inum {
        return Err(gone(format!("{} now names another namespace", path.display())));
    }
    // SAFETY: setns on a valid nsfs fd; it moves only the calling helper
    // thread, which exits when the probe is done.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    current_netns_cookie()
}

/// Enter each `(inode, path)` on one helper thread and read its cookie.
/// Fails only if the thread cannot be started.
pub fn probe_paths(paths: Vec<(u64, PathBuf)>) -> io::Result<Vec<ProbeResult>> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new().name("bpftune-netns".into()).spawn_scoped(scope, move || {
            let _caps = crate::privilege::Raised::raise(crate::privilege::NETNS_ENTRY);
            paths
                .into_iter()
                .map(|(inum, path)| {
                    let cookie = probe_one(inum, &path);
                    ProbeResult { inum, path, cookie }
                })
                .collect::<Vec<_>>()
        })?;
        worker.join().map_err(|_| io::Error::other("netns helper thread panicked"))
    })
}
