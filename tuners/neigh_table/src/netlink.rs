//! The one rtnetlink request this tuner makes, over a raw `NETLINK_ROUTE`
//! socket: an `RTM_GETADDR` dump (prefix lengths of a device's addresses,
//! which bound how far a table may grow), run in the device's own
//! namespace. Message building and parsing are pure functions, unit-tested
//! without a socket. (The thresholds themselves are changed as sysctls,
//! through the daemon's writer.)

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// `RTM_NEWADDR` / `RTM_GETADDR` (linux/rtnetlink.h).
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_GETADDR: u16 = 22;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
/// `struct ifaddrmsg` size.
const IFADDRMSG_LEN: usize = 8;
/// How long to wait for the kernel's answer, in seconds.
const RECV_TIMEOUT_SECS: libc::time_t = 2;
/// Receive buffer (the kernel sends dump parts of up to a page or so).
const RECV_BUF: usize = 32 * 1024;

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("failed to alloc netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("netlink send failed: {0}")]
    Send(#[source] io::Error),
    #[error("netlink receive failed: {0}")]
    Recv(#[source] io::Error),
    #[error("{0}")]
    Kernel(#[source] io::Error),
    #[error("malformed netlink reply")]
    Malformed,
}

static SEQ: AtomicU32 = AtomicU32::new(1);

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// An rtnetlink message being built: header, family header, attributes.
struct MsgBuilder {
    buf: Vec<u8>,
}

impl MsgBuilder {
    fn new(msg_type: u16, flags: u16, seq: u32, family_header: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set in finish()
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
        buf.extend_from_slice(family_header);
        buf.resize(align4(buf.len()), 0);
        Self { buf }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// `RTM_GETADDR` dump of every address of `family`.
pub fn getaddr_request(seq: u32, family: u8) -> Vec<u8> {
    // struct ifaddrmsg { u8 family, prefixlen, flags, scope; u32 index; }
    let ifaddrmsg: [u8; IFADDRMSG_LEN] = [family, 0, 0, 0, 0, 0, 0, 0];
    MsgBuilder::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, &ifaddrmsg).finish()
}

/// One message of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Split a datagram into its netlink messages.
pub fn parse_messages(buf: &[u8]) -> Result<Vec<Msg<'_>>, NetlinkError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at).ok_or(NetlinkError::Malformed)? as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(NetlinkError::Malformed);
        }
        out.push(Msg {
            msg_type: u16_at(buf, at + 4).ok_or(NetlinkError::Malformed)?,
            flags: u16_at(buf, at + 6).ok_or(NetlinkError::Malformed)?,
            seq: u32_at(buf, at + 8).ok_or(NetlinkError::Malformed)?,
            payload: &buf[at + NLMSG_HDRLEN..at + len],
        });
        at += align4(len);
    }
    Ok(out)
}

/// The errno of an `NLMSG_ERROR` payload (0 for an acknowledgement).
pub fn error_code(payload: &[u8]) -> Result<i32, NetlinkError> {
    let raw = u32_at(payload, 0).ok_or(NetlinkError::Malformed)?;
    Ok(i32::from_ne_bytes(raw.to_ne_bytes()))
}

/// (ifindex, prefix length) of an `RTM_NEWADDR` payload of `family`.
pub fn addr_of(payload: &[u8], family: u8) -> Option<(u32, u8)> {
    if payload.len() < IFADDRMSG_LEN || payload[0] != family {
        return None;
    }
    Some((u32_at(payload, 4)?, payload[1]))
}

/// A `NETLINK_ROUTE` socket in the calling thread's network namespace.
struct Socket {
    fd: OwnedFd,
}

impl Socket {
    fn open() -> Result<Self, NetlinkError> {
        // SAFETY: plain socket(2); the fd is owned by OwnedFd right after.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh, valid descriptor we exclusively own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval { tv_sec: RECV_TIMEOUT_SECS, tv_usec: 0 };
        // SAFETY: tv is a valid timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        Ok(Self { fd })
    }

    fn send(&self, msg: &[u8]) -> Result<(), NetlinkError> {
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and addr are valid for reads of the sizes given.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NetlinkError::Send(io::Error::last_os_error()));
        }
        Ok(())
    }

    fn recv<'a>(&self, buf: &'a mut [u8]) -> Result<&'a [u8], NetlinkError> {
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return Ok(&buf[..n as usize]);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(NetlinkError::Recv(e));
            }
        }
    }
}

/// Prefix lengths of the addresses of `family` on device `ifindex`, in the
/// calling thread's network namespace.
pub fn prefixlens(family: u8, ifindex: u32) -> Result<Vec<u8>, NetlinkError> {
    let sock = Socket::open()?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    sock.send(&getaddr_request(seq, family))?;
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = Vec::new();
    loop {
        let data = sock.recv(&mut buf)?;
        for m in parse_messages(data)? {
            if m.seq != seq {
                continue;
            }
            match m.msg_type {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => match error_code(m.payload)? {
                    0 => return Ok(out),
                    e => return Err(NetlinkError::Kernel(io::Error::from_raw_os_error(-e))),
                },
                RTM_NEWADDR => {
                    if let Some((idx, plen)) = addr_of(m.payload, family) {
                        if idx == ifindex {
                            out.push(plen);
                        }
                    }
                }
                _ => {}
            }
            if m.flags & NLM_F_MULTI == 0 && m.msg_type != RTM_NEWADDR {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getaddr_is_a_dump() {
        let m = getaddr_request(3, 10);
        assert_eq!(m.len(), 24);
        assert_eq!(u16_at(&m, 4), Some(RTM_GETADDR));
        assert_eq!(u16_at(&m, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(m[16], 10);
    }

    fn msg(msg_type: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&msg_type.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    fn ifaddr(family: u8, prefixlen: u8, index: u32) -> Vec<u8> {
        let mut v = vec![family, prefixlen, 0, 0];
        v.extend_from_slice(&index.to_ne_bytes());
        v
    }

    #[test]
    fn parses_replies() {
        // Two addresses (ifindex 3 /24 with an attribute, ifindex 4 /16),
        // an IPv6 one, DONE.
        let mut a = ifaddr(2, 24, 3);
        a.push(0xaa);
        let mut buf = msg(RTM_NEWADDR, NLM_F_MULTI, 5, &a);
        buf.extend(msg(RTM_NEWADDR, NLM_F_MULTI, 5, &ifaddr(2, 16, 4)));
        buf.extend(msg(RTM_NEWADDR, NLM_F_MULTI, 5, &ifaddr(10, 64, 3)));
        buf.extend(msg(NLMSG_DONE, NLM_F_MULTI, 5, &0u32.to_ne_bytes()));
        let msgs = parse_messages(&buf).expect("parse");
        assert_eq!(msgs.len(), 4);
        let v4: Vec<_> = msgs.iter().filter_map(|m| addr_of(m.payload, 2)).collect();
        assert_eq!(v4, vec![(3, 24), (4, 16)]);
        let v6: Vec<_> = msgs.iter().filter_map(|m| addr_of(m.payload, 10)).collect();
        assert_eq!(v6, vec![(3, 64)]);
        assert_eq!(msgs[3].msg_type, NLMSG_DONE);
        // An error reply: -EPERM.
        let err = msg(NLMSG_ERROR, 0, 9, &(-1i32).to_ne_bytes());
        let m = parse_messages(&err).expect("parse");
        assert_eq!(error_code(m[0].payload).expect("code"), -1);
        // Truncated input is rejected, not read past.
        assert!(matches!(parse_messages(&buf[..20]), Err(NetlinkError::Malformed)));
        assert!(addr_of(&[2, 24], 2).is_none());
    }

    #[test]
    fn address_dump_completes() {
        // Whatever the namespace holds, the dump ends (DONE) without error.
        let lo = prefixlens(2, 1).expect("dump");
        assert!(lo.iter().all(|&p| p <= 32), "{lo:?}");
    }
}
