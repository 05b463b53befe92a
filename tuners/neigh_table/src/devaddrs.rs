//! The prefix lengths of the addresses on the device a neighbour event
//! names, read in that device's own network namespace.
//!
//! The neighbour tables are shared by all namespaces, but an ifindex only
//! means something in its own namespace: the event carries the device's
//! namespace (cookie and inode), and the daemon runs the address dump inside
//! it (`Host::in_netns`: its namespace worker finds the namespace, enters it
//! and re-checks the cookie; no thread or `/proc` scan per dump).

use bpftune_sdk::Host;
use bpftune_sdk::event::NETNS_UNKNOWN;

use crate::netlink::{self, NetlinkError};

/// Why the addresses could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DevAddrError {
    #[error("the device's network namespace is unknown")]
    UnknownNetns,
    #[error("could not enter network namespace: {0}")]
    Enter(String),
    #[error("address dump failed: {0}")]
    Netlink(#[source] NetlinkError),
}

/// Dumps addresses in the namespace a neighbour event names.
#[derive(Debug)]
pub struct DevAddrs {
    global_cookie: u64,
}

impl DevAddrs {
    /// For a daemon whose own namespace has cookie `global_cookie`.
    pub fn new(global_cookie: u64) -> Self {
        Self { global_cookie }
    }

    /// Prefix lengths of the `family` addresses on device `ifindex` of the
    /// namespace (`cookie`, `inum`) an event came from.
    pub fn prefixlens(
        &self,
        host: &Host,
        cookie: u64,
        inum: u32,
        family: u8,
        ifindex: u32,
    ) -> Result<Vec<u8>, DevAddrError> {
        if cookie == NETNS_UNKNOWN {
            return Err(DevAddrError::UnknownNetns);
        }
        if cookie == 0 || cookie == self.global_cookie {
            // The daemon's main thread never leaves its namespace.
            return netlink::prefixlens(family, ifindex).map_err(DevAddrError::Netlink);
        }
        host.in_netns(cookie, inum, || netlink::prefixlens(family, ifindex))
            .map_err(DevAddrError::Enter)?
            .map_err(DevAddrError::Netlink)
    }
}
