//! The one rtnetlink request this tuner makes: an `RTM_GETADDR` dump
//! (prefix lengths of a device's addresses, which bound how far a table
//! may grow), run in the device's own namespace through the SDK's netlink
//! socket. Building the request and reading an address are pure functions,
//! unit-tested without a socket. (The thresholds themselves are changed as
//! sysctls, through the daemon's writer.)

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use bpftune_sdk::netlink::NetlinkError;
use bpftune_sdk::netlink::{self, NLM_F_DUMP, NLM_F_REQUEST, Socket};

/// `RTM_NEWADDR` / `RTM_GETADDR` (linux/rtnetlink.h).
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_GETADDR: u16 = 22;

/// `struct ifaddrmsg` size.
const IFADDRMSG_LEN: usize = 8;
/// How long to wait for the kernel's answer.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);

static SEQ: AtomicU32 = AtomicU32::new(1);

/// `RTM_GETADDR` dump of every address of `family`.
pub fn getaddr_request(seq: u32, family: u8) -> Vec<u8> {
    // struct ifaddrmsg { u8 family, prefixlen, flags, scope; u32 index; }
    let ifaddrmsg: [u8; IFADDRMSG_LEN] = [family, 0, 0, 0, 0, 0, 0, 0];
    netlink::request(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, &ifaddrmsg)
}

/// (ifindex, prefix length) of an `RTM_NEWADDR` payload of `family`.
pub fn addr_of(payload: &[u8], family: u8) -> Option<(u32, u8)> {
    if payload.len() < IFADDRMSG_LEN || payload[0] != family {
        return None;
    }
    let index = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    Some((index, payload[1]))
}

/// Prefix lengths of the addresses of `family` on device `ifindex`, in the
/// calling thread's network namespace.
pub fn prefixlens(family: u8, ifindex: u32) -> Result<Vec<u8>, NetlinkError> {
    let sock = Socket::open(libc::NETLINK_ROUTE, RECV_TIMEOUT)?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut out = Vec::new();
    sock.dump(&getaddr_request(seq, family), seq, |m| {
        if m.msg_type == RTM_NEWADDR
            && let Some((idx, plen)) = addr_of(m.payload, family)
            && idx == ifindex
        {
            out.push(plen);
        }
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getaddr_is_a_dump() {
        let m = getaddr_request(3, 10);
        assert_eq!(m.len(), 24);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_GETADDR);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(m[16], 10);
    }

    fn ifaddr(family: u8, prefixlen: u8, index: u32) -> Vec<u8> {
        let mut v = vec![family, prefixlen, 0, 0];
        v.extend_from_slice(&index.to_ne_bytes());
        v
    }

    #[test]
    fn reads_an_address() {
        let mut a = ifaddr(2, 24, 3);
        a.push(0xaa); // an attribute follows
        assert_eq!(addr_of(&a, 2), Some((3, 24)));
        assert_eq!(addr_of(&ifaddr(10, 64, 3), 10), Some((3, 64)));
        assert_eq!(addr_of(&ifaddr(10, 64, 3), 2), None);
        assert!(addr_of(&[2, 24], 2).is_none());
    }

    #[test]
    fn address_dump_completes() {
        // Whatever the namespace holds, the dump ends (DONE) without error.
        let lo = prefixlens(2, 1).expect("dump");
        assert!(lo.iter().all(|&p| p <= 32), "{lo:?}");
    }
}
