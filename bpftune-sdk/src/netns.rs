//! Network namespaces as a tuner meets them: cookies. Entering a namespace
//! is the daemon's job (`Host::in_netns`, `Host::read_net_file`); the daemon
//! keeps the registry of namespaces and their handles.

use std::io;
use std::os::fd::AsRawFd;

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
