//! The round-trip time the data of a namespace's TCP connections sees, for
//! judging buffer raises by the latency they add: one `sock_diag` dump of
//! the calling thread's namespace's established TCP sockets with their
//! `tcp_info`, averaged over the sockets that moved data in the last
//! second. A receiver's own smoothed RTT only times its ACKs, so for a
//! socket that received more than it sent the receive-side estimate
//! (`tcpi_rcv_rtt`, which includes the queue its data waited in) is used.
//!
//! A dump walks the whole established hash table, whatever the namespace
//! holds (about 1 ms per family here, `bench/verdicts/RESULTS.md`), so a
//! family whose `sockstat` counts no TCP socket in the namespace is not
//! dumped, and the host bounds the dumps per second.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Sockets looked at per dump, at most: the dump is closed after these
/// (the kernel ends it), so a namespace with a million connections costs
/// a bounded sample, not a million `tcp_info`s a second.
pub const MAX_SOCKETS: usize = 4096;

/// A socket counts as active if it sent or received data this recently.
const ACTIVE_MS: u32 = 1000;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_INFO: u16 = 2;
const TCP_ESTABLISHED: u32 = 1;
/// `struct inet_diag_msg`: family, state, timer, retrans, id (48 bytes),
/// expires, rqueue, wqueue, uid, inode.
const INET_DIAG_MSG_LEN: usize = 72;
const NLMSG_HDR_LEN: usize = 16;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;

/// Offsets in `struct tcp_info` (stable UAPI, fields only ever appended).
const TI_LAST_DATA_SENT: usize = 44;
const TI_LAST_DATA_RECV: usize = 52;
const TI_RTT: usize = 68;
const TI_RCV_RTT: usize = 92;
const TI_BYTES_ACKED: usize = 120;
const TI_BYTES_RECEIVED: usize = 128;

/// What one dump saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RttSample {
    /// Mean RTT of the active sockets, in milliseconds (None: no socket
    /// moved data in the last second).
    pub mean_ms: Option<f64>,
    /// Active sockets the mean is over.
    pub active: usize,
    /// Established sockets looked at.
    pub seen: usize,
}

/// The RTT one socket's data sees, in microseconds, if it is active.
fn socket_rtt_us(info: &[u8]) -> Option<u32> {
    let u32_at = |o: usize| info.get(o..o + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |o: usize| info.get(o..o + 8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
    let sent_ago = u32_at(TI_LAST_DATA_SENT)?;
    let recv_ago = u32_at(TI_LAST_DATA_RECV)?;
    if sent_ago >= ACTIVE_MS && recv_ago >= ACTIVE_MS {
        return None;
    }
    let rtt = u32_at(TI_RTT)?;
    let rcv_rtt = u32_at(TI_RCV_RTT).unwrap_or(0);
    // Kernels before 4.1 have no byte counts: use the sender's RTT.
    let receiver = matches!((u64_at(TI_BYTES_RECEIVED), u64_at(TI_BYTES_ACKED)), (Some(r), Some(a)) if r > a);
    let us = if receiver && rcv_rtt > 0 { rcv_rtt } else { rtt };
    (us > 0).then_some(us)
}

/// The mean over the active sockets in a stream of `sock_diag` replies
/// (whole netlink messages, as read); `Err` on a netlink error message.
/// Returns whether the dump is over.
fn take_replies(buf: &[u8], sum_us: &mut f64, sample: &mut RttSample) -> io::Result<bool> {
    let mut off = 0;
    while off + NLMSG_HDR_LEN <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < NLMSG_HDR_LEN || off + len > buf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated sock_diag reply"));
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = buf.get(off + 16..off + 20).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if code == 0 {
                    return Ok(true);
                }
                return Err(io::Error::from_raw_os_error(-code));
            }
            SOCK_DIAG_BY_FAMILY => {
                sample.seen += 1;
                let mut a = off + NLMSG_HDR_LEN + INET_DIAG_MSG_LEN;
                while a + 4 <= off + len {
                    let alen = u16::from_ne_bytes([buf[a], buf[a + 1]]) as usize;
                    let akind = u16::from_ne_bytes([buf[a + 2], buf[a + 3]]);
                    if alen < 4 || a + alen > off + len {
                        break;
                    }
                    if akind == INET_DIAG_INFO
                        && let Some(us) = socket_rtt_us(&buf[a + 4..a + alen])
                    {
                        *sum_us += f64::from(us);
                        sample.active += 1;
                    }
                    a += (alen + 3) & !3;
                }
            }
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Ok(false)
}

/// A `sock_diag` request for the established TCP sockets of `family`
/// with their `tcp_info`.
fn request(family: u8, seq: u32) -> Vec<u8> {
    // nlmsghdr + inet_diag_req_v2 (family, protocol, ext, pad, states, id).
    let len = NLMSG_HDR_LEN + 8 + 48;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(family);
    m.push(libc::IPPROTO_TCP as u8);
    m.push(1 << (INET_DIAG_INFO - 1));
    m.push(0);
    m.extend_from_slice(&(1u32 << TCP_ESTABLISHED).to_ne_bytes());
    m.resize(len, 0);
    m
}

/// TCP sockets in use in the calling thread's namespace by family (IPv4,
/// IPv6), from `sockstat`; a file that cannot be read counts as in use.
fn in_use() -> [bool; 2] {
    let count = |file: &str, key: &str| -> bool {
        let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) else { return true };
        tcp_in_use(&text, key).is_none_or(|n| n > 0)
    };
    [count("sockstat", "TCP:"), count("sockstat6", "TCP6:")]
}

/// `inuse` of the `key` line of a `sockstat` file.
fn tcp_in_use(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "inuse")?;
    words.next()?.parse().ok()
}

/// Dump the calling thread's namespace's established TCP sockets (IPv4
/// and IPv6, each only if the namespace has TCP sockets of that family)
/// and average the RTT of the active ones.
pub fn sample() -> io::Result<RttSample> {
    let families = in_use();
    if families == [false, false] {
        return Ok(RttSample::default());
    }
    // SAFETY: plain socket(2); the fd is owned by OwnedFd right after.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we exclusively own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
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
        return Err(io::Error::last_os_error());
    }
    let mut sample = RttSample::default();
    let mut sum_us = 0.0;
    let mut buf = vec![0u8; 64 << 10];
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        if !families[seq as usize - 1] {
            continue;
        }
        let msg = request(family, seq);
        // SAFETY: msg is valid for reads of its length; a null address
        // sends to the kernel on a netlink socket.
        let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let done = take_replies(&buf[..n as usize], &mut sum_us, &mut sample)?;
            if done || n == 0 {
                break;
            }
            if sample.seen >= MAX_SOCKETS {
                // Closing the socket ends the kernel's dump.
                return Ok(finish(sample, sum_us));
            }
        }
    }
    Ok(finish(sample, sum_us))
}

fn finish(mut sample: RttSample, sum_us: f64) -> RttSample {
    sample.mean_ms = (sample.active > 0).then(|| sum_us / sample.active as f64 / 1000.0);
    sample
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn info(sent_ago: u32, recv_ago: u32, rtt: u32, rcv_rtt: u32, acked: u64, received: u64) -> Vec<u8> {
        let mut b = vec![0u8; 136];
        b[TI_LAST_DATA_SENT..][..4].copy_from_slice(&sent_ago.to_ne_bytes());
        b[TI_LAST_DATA_RECV..][..4].copy_from_slice(&recv_ago.to_ne_bytes());
        b[TI_RTT..][..4].copy_from_slice(&rtt.to_ne_bytes());
        b[TI_RCV_RTT..][..4].copy_from_slice(&rcv_rtt.to_ne_bytes());
        b[TI_BYTES_ACKED..][..8].copy_from_slice(&acked.to_ne_bytes());
        b[TI_BYTES_RECEIVED..][..8].copy_from_slice(&received.to_ne_bytes());
        b
    }

    #[test]
    fn which_rtt_a_socket_counts_with() {
        // A sender: its smoothed RTT.
        assert_eq!(socket_rtt_us(&info(5, 5000, 20_000, 0, 1 << 20, 10)), Some(20_000));
        // A receiver: the receive-side estimate (queueing included).
        assert_eq!(socket_rtt_us(&info(5000, 3, 10_000, 41_000, 10, 1 << 20)), Some(41_000));
        // A receiver without a receive estimate yet: its RTT.
        assert_eq!(socket_rtt_us(&info(5000, 3, 10_000, 0, 10, 1 << 20)), Some(10_000));
        // Idle for a second or more: not counted.
        assert_eq!(socket_rtt_us(&info(1000, 2000, 10_000, 0, 10, 10)), None);
        // An old kernel's shorter tcp_info: no byte counts, the RTT.
        assert_eq!(socket_rtt_us(&info(0, 0, 7_000, 9_000, 0, 0)[..104]), Some(7_000));
        assert_eq!(socket_rtt_us(&[0u8; 40]), None);
    }

    #[test]
    fn sockstat_in_use() {
        let text = "sockets: used 10\nTCP: inuse 3 orphan 1 tw 0 alloc 5 mem 179\nUDP: inuse 0 mem 260\n";
        assert_eq!(tcp_in_use(text, "TCP:"), Some(3));
        assert_eq!(tcp_in_use("TCP6: inuse 0\nUDP6: inuse 0\n", "TCP6:"), Some(0));
        assert_eq!(tcp_in_use("", "TCP6:"), None);
    }

    #[test]
    fn a_reply_stream_is_parsed_and_bounded() {
        // One reply carrying an INET_DIAG_INFO attribute, then DONE.
        let ti = info(0, 2000, 30_000, 0, 100, 0);
        let attr_len = 4 + ti.len();
        let msg_len = NLMSG_HDR_LEN + INET_DIAG_MSG_LEN + attr_len;
        let mut buf = Vec::new();
        buf.extend_from_slice(&(msg_len as u32).to_ne_bytes());
        buf.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        buf.extend_from_slice(&[0; 10]);
        buf.extend_from_slice(&[0; INET_DIAG_MSG_LEN]);
        buf.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        buf.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
        buf.extend_from_slice(&ti);
        buf.extend_from_slice(&(NLMSG_HDR_LEN as u32 + 4).to_ne_bytes());
        buf.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        buf.extend_from_slice(&[0; 14]);
        let (mut sum, mut s) = (0.0, RttSample::default());
        assert!(take_replies(&buf, &mut sum, &mut s).expect("parse"));
        assert_eq!((s.seen, s.active, sum), (1, 1, 30_000.0));
        // A length running past the buffer is an error, not a panic.
        let mut bad = buf.clone();
        bad[0] = 0xff;
        assert!(take_replies(&bad, &mut sum, &mut s).is_err());
    }

    /// A real dump of this namespace sees a loopback connection that is
    /// moving data (loopback only; nothing leaves the machine).
    #[test]
    fn a_dump_sees_an_active_loopback_connection() {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
            eprintln!("skipped: no loopback TCP here");
            return;
        };
        let Ok(addr) = listener.local_addr() else { return };
        let Ok(mut client) = TcpStream::connect(addr) else { return };
        let Ok((mut server, _)) = listener.accept() else { return };
        let chunk = vec![7u8; 1 << 16];
        let mut got = vec![0u8; 1 << 16];
        for _ in 0..16 {
            client.write_all(&chunk).expect("write");
            server.read_exact(&mut got).expect("read");
        }
        let s = match sample() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped: sock_diag (CONFIG_INET_DIAG) unavailable: {e}");
                return;
            }
        };
        assert!(s.seen >= 2, "{s:?}");
        assert!(s.active >= 2, "{s:?}");
        assert!(s.mean_ms.is_some_and(|ms| ms > 0.0 && ms < 1000.0), "{s:?}");
    }
}
