//! Netlink requests to the kernel without a netlink crate: a socket of one
//! protocol (`NETLINK_ROUTE`, `NETLINK_SOCK_DIAG`, ...) in the calling
//! thread's network namespace, a request builder, and a dump loop that
//! hands each reply message to the caller until the kernel says done.
//! Parsing is pure and unit-tested; a reply that runs past its buffer is an
//! error, never a read out of bounds.

use std::io;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `NLMSG_ERROR`: an error, or with code 0 an acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST`: every request carries it.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_MULTI`: this message is one part of a multi-part reply.
pub const NLM_F_MULTI: u16 = 0x2;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`): every object, not one.
pub const NLM_F_DUMP: u16 = 0x300;
/// `struct nlmsghdr` size.
pub const NLMSG_HDRLEN: usize = 16;
/// Receive buffer: the kernel sends dump parts of up to a few pages.
const RECV_BUF: usize = 64 * 1024;

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("failed to alloc netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("netlink send failed: {0}")]
    Send(#[source] io::Error),
    #[error("netlink receive failed: {0}")]
    Recv(#[source] io::Error),
    /// The kernel answered with an error (`NLMSG_ERROR`).
    #[error("{0}")]
    Kernel(#[source] io::Error),
    #[error("malformed netlink reply")]
    Malformed,
}

impl From<NetlinkError> for io::Error {
    fn from(e: NetlinkError) -> Self {
        match e {
            NetlinkError::Socket(e) | NetlinkError::Send(e) | NetlinkError::Recv(e) | NetlinkError::Kernel(e) => e,
            NetlinkError::Malformed => io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply"),
        }
    }
}

/// Netlink messages and attributes are padded to 4 bytes.
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request: the header (`nlmsg_len` filled in), then `body` (the
/// protocol's family header and any attributes), padded.
pub fn request(msg_type: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = align4(NLMSG_HDRLEN + body.len());
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&msg_type.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
    m.extend_from_slice(body);
    m.resize(len, 0);
    m
}

/// One message of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    /// What follows the header, up to the message's length.
    pub payload: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Split a datagram into its messages.
pub fn messages(buf: &[u8]) -> Result<Vec<Message<'_>>, NetlinkError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at).ok_or(NetlinkError::Malformed)? as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(NetlinkError::Malformed);
        }
        out.push(Message {
            msg_type: u16_at(buf, at + 4).ok_or(NetlinkError::Malformed)?,
            flags: u16_at(buf, at + 6).ok_or(NetlinkError::Malformed)?,
            seq: u32_at(buf, at + 8).ok_or(NetlinkError::Malformed)?,
            payload: &buf[at + NLMSG_HDRLEN..at + len],
        });
        at += align4(len);
    }
    Ok(out)
}

/// The errno of an `NLMSG_ERROR` payload, negative as the kernel sends it
/// (0 for an acknowledgement).
pub fn error_code(payload: &[u8]) -> Result<i32, NetlinkError> {
    let raw = u32_at(payload, 0).ok_or(NetlinkError::Malformed)?;
    Ok(i32::from_ne_bytes(raw.to_ne_bytes()))
}

/// The attributes (`struct rtattr` / `struct nlattr`: length, type, data)
/// in `buf`, as (type, data). Stops at the first one that does not fit.
pub fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(buf, at)?);
        let kind = u16_at(buf, at + 2)?;
        if len < 4 || at + len > buf.len() {
            return None;
        }
        let data = &buf[at + 4..at + len];
        at += align4(len);
        Some((kind, data))
    })
}

/// A netlink socket of one protocol in the calling thread's network
/// namespace (the namespace is fixed when it is opened).
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// Open a socket of `protocol` (e.g. `libc::NETLINK_ROUTE`) whose
    /// receives give up after `recv_timeout`.
    pub fn open(protocol: libc::c_int, recv_timeout: Duration) -> Result<Self, NetlinkError> {
        // SAFETY: plain socket(2); the fd is owned by OwnedFd right after.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh, valid descriptor we exclusively own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(recv_timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            // Below a million: fits any suseconds_t.
            tv_usec: recv_timeout.subsec_micros() as libc::suseconds_t,
        };
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

    /// Send one request to the kernel.
    pub fn send(&self, msg: &[u8]) -> Result<(), NetlinkError> {
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

    /// Receive one datagram (retried on EINTR).
    pub fn recv<'a>(&self, buf: &'a mut [u8]) -> Result<&'a [u8], NetlinkError> {
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if let Ok(n) = usize::try_from(n) {
                return Ok(&buf[..n]);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(NetlinkError::Recv(e));
            }
        }
    }

    /// Send `req` (whose sequence number is `seq`) and hand each message
    /// of the reply with that number to `each`, until the reply ends
    /// (`NLMSG_DONE`, an acknowledgement, or a message that is not part of
    /// a multi-part reply) or `each` breaks. A kernel error is returned as
    /// [`NetlinkError::Kernel`]. A dump left unfinished by a break is
    /// ended by the kernel when the socket is closed.
    pub fn dump(
        &self,
        req: &[u8],
        seq: u32,
        mut each: impl FnMut(&Message<'_>) -> ControlFlow<()>,
    ) -> Result<(), NetlinkError> {
        self.send(req)?;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let data = self.recv(&mut buf)?;
            if data.is_empty() {
                return Ok(());
            }
            for m in messages(data)? {
                if m.seq != seq {
                    continue;
                }
                match m.msg_type {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        return match error_code(m.payload)? {
                            0 => Ok(()),
                            e => Err(NetlinkError::Kernel(io::Error::from_raw_os_error(-e))),
                        };
                    }
                    _ => {
                        if each(&m).is_break() || m.flags & NLM_F_MULTI == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(msg_type: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = request(msg_type, flags, seq, payload);
        // A reply's length is the unpadded one.
        let len = (NLMSG_HDRLEN + payload.len()) as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        m
    }

    #[test]
    fn a_request_has_its_length_and_is_padded() {
        let m = request(22, NLM_F_REQUEST | NLM_F_DUMP, 3, &[10, 0, 0, 0, 0, 0, 0]);
        assert_eq!(m.len(), 24);
        assert_eq!(u32_at(&m, 0), Some(24));
        assert_eq!(u16_at(&m, 4), Some(22));
        assert_eq!(u16_at(&m, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(u32_at(&m, 8), Some(3));
        assert_eq!(m[16], 10);
    }

    #[test]
    fn replies_split_into_messages_and_truncation_is_an_error() {
        let mut buf = msg(20, NLM_F_MULTI, 5, &[1, 2, 3]);
        buf.extend(msg(NLMSG_DONE, NLM_F_MULTI, 5, &0u32.to_ne_bytes()));
        let ms = messages(&buf).expect("parse");
        assert_eq!(ms.len(), 2);
        assert_eq!((ms[0].msg_type, ms[0].seq, ms[0].payload), (20, 5, &[1u8, 2, 3][..]));
        assert_eq!(ms[1].msg_type, NLMSG_DONE);
        assert!(matches!(messages(&buf[..18]), Err(NetlinkError::Malformed)));
        let err = msg(NLMSG_ERROR, 0, 9, &(-1i32).to_ne_bytes());
        assert_eq!(error_code(messages(&err).expect("parse")[0].payload).expect("code"), -1);
        assert!(error_code(&[0, 0]).is_err());
    }

    #[test]
    fn attributes_are_walked_and_bounded() {
        let mut b = Vec::new();
        b.extend_from_slice(&5u16.to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes());
        b.extend_from_slice(&[9, 0, 0, 0]); // 1 data byte, padded
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&2u16.to_ne_bytes());
        b.extend_from_slice(&7u32.to_ne_bytes());
        let attrs: Vec<_> = attributes(&b).collect();
        assert_eq!(attrs, vec![(1, &[9u8][..]), (2, &7u32.to_ne_bytes()[..])]);
        // A length past the end ends the walk.
        b[0] = 0xff;
        assert_eq!(attributes(&b).count(), 0);
    }

    /// A real dump (this namespace's IPv4 addresses) ends without error,
    /// and a break stops it early.
    #[test]
    fn an_address_dump_completes() {
        let Ok(sock) = Socket::open(libc::NETLINK_ROUTE, Duration::from_secs(2)) else {
            eprintln!("skipped: no NETLINK_ROUTE socket here");
            return;
        };
        let ifaddrmsg = [libc::AF_INET as u8, 0, 0, 0, 0, 0, 0, 0];
        let mut n = 0;
        sock.dump(&request(22, NLM_F_REQUEST | NLM_F_DUMP, 7, &ifaddrmsg), 7, |_| {
            n += 1;
            ControlFlow::Continue(())
        })
        .expect("dump");
        let mut first = 0;
        sock.dump(&request(22, NLM_F_REQUEST | NLM_F_DUMP, 8, &ifaddrmsg), 8, |_| {
            first += 1;
            ControlFlow::Break(())
        })
        .expect("dump");
        assert!(first <= 1 && first <= n, "{first} {n}");
    }
}
