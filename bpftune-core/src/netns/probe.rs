//! Learning the cookies of many namespaces at once: one job on the
//! namespace worker enters each candidate in turn, so start-up discovery
//! with a thousand namespaces costs a thousand `setns` calls and no thread.

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
    // SAFETY: setns on a valid nsfs fd; it moves only the namespace worker
    // thread, which returns to the daemon's namespace after the job.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    current_netns_cookie()
}

/// Enter each `(inode, path)` in one job on the namespace worker and read
/// its cookie. Fails only if the worker cannot run it.
pub fn probe_paths(paths: Vec<(u64, PathBuf)>) -> io::Result<Vec<ProbeResult>> {
    super::run_in(super::Where::Own, move || {
        let _caps = crate::privilege::Raised::raise(crate::privilege::NETNS_ENTRY);
        paths
            .into_iter()
            .map(|(inum, path)| {
                let cookie = probe_one(inum, &path);
                ProbeResult { inum, path, cookie }
            })
            .collect::<Vec<_>>()
    })
}
