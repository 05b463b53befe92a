//! The prefix lengths of the addresses on the device a neighbour event
//! names, read in that device's own network namespace.
//!
//! The neighbour tables are shared by all namespaces, but an ifindex only
//! means something in its own namespace: the event carries the device's
//! namespace (cookie and inode), so the address dump runs there, on a
//! short-lived helper thread (bpftune-core's `in_netns`, which re-checks the
//! cookie after entering). A namespace handle is found by inode among the
//! nsfs mounts and `/proc/<pid>/ns/net` files, and kept for next time.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;

use bpftune_sdk::event::NETNS_UNKNOWN;
use bpftune_sdk::netns::{self, NetnsHandle};

use crate::netlink::{self, NetlinkError};

/// Namespaces whose handles are remembered at most (a few are plenty: the
/// tuner acts once a second at most).
const PATHS_MAX: usize = 64;

/// Why the addresses could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DevAddrError {
    #[error("the device's network namespace is unknown")]
    UnknownNetns,
    #[error("no handle found for network namespace inode {0}")]
    NetnsNotFound(u32),
    #[error("could not enter network namespace: {0}")]
    Enter(#[source] io::Error),
    #[error("address dump failed: {0}")]
    Netlink(#[source] NetlinkError),
}

/// Finds namespaces by inode and dumps addresses in them.
#[derive(Debug)]
pub struct DevAddrs {
    global_cookie: u64,
    proc_root: PathBuf,
    paths: HashMap<u64, PathBuf>,
}

impl DevAddrs {
    /// For a daemon whose own namespace has cookie `global_cookie`.
    pub fn new(global_cookie: u64) -> Self {
        Self { global_cookie, proc_root: PathBuf::from("/proc"), paths: HashMap::new() }
    }

    /// Prefix lengths of the `family` addresses on device `ifindex` of the
    /// namespace (`cookie`, `inum`) an event came from.
    pub fn prefixlens(&mut self, cookie: u64, inum: u32, family: u8, ifindex: u32) -> Result<Vec<u8>, DevAddrError> {
        if cookie == NETNS_UNKNOWN {
            return Err(DevAddrError::UnknownNetns);
        }
        if cookie == 0 || cookie == self.global_cookie {
            // The daemon's main thread never leaves its namespace.
            return netlink::prefixlens(family, ifindex).map_err(DevAddrError::Netlink);
        }
        // A remembered handle first; if it fails, look again once.
        if let Some(path) = self.paths.get(&cookie).cloned() {
            match Self::dump_in(cookie, inum, path, family, ifindex) {
                Err(DevAddrError::Enter(_)) => {
                    self.paths.remove(&cookie);
                }
                r => return r,
            }
        }
        let path = netns::candidate_paths(&self.proc_root)
            .remove(&u64::from(inum))
            .ok_or(DevAddrError::NetnsNotFound(inum))?;
        let r = Self::dump_in(cookie, inum, path.clone(), family, ifindex);
        if r.is_ok() {
            if self.paths.len() >= PATHS_MAX {
                self.paths.clear();
            }
            self.paths.insert(cookie, path);
        }
        r
    }

    /// Forget the path remembered for a namespace that is gone.
    pub fn forget(&mut self, cookie: u64) {
        self.paths.remove(&cookie);
    }

    fn dump_in(cookie: u64, inum: u32, path: PathBuf, family: u8, ifindex: u32) -> Result<Vec<u8>, DevAddrError> {
        let handle = NetnsHandle { cookie, inum: u64::from(inum), path };
        netns::in_netns(&handle, || netlink::prefixlens(family, ifindex))
            .map_err(DevAddrError::Enter)?
            .map_err(DevAddrError::Netlink)
    }
}
