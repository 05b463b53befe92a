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
use std::ops::ControlFlow;
use std::time::Duration;

use bpftune_sdk::netlink::{self, NLM_F_DUMP, NLM_F_REQUEST, Socket};

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

/// Count one `sock_diag` reply (an `inet_diag_msg` and its attributes)
/// into the sum of active sockets' RTTs.
fn take_reply(payload: &[u8], sum_us: &mut f64, sample: &mut RttSample) {
    sample.seen += 1;
    let Some(attrs) = payload.get(INET_DIAG_MSG_LEN..) else { return };
    for (kind, data) in netlink::attributes(attrs) {
        if kind == INET_DIAG_INFO
            && let Some(us) = socket_rtt_us(data)
        {
            *sum_us += f64::from(us);
            sample.active += 1;
        }
    }
}

/// A `sock_diag` request for the established TCP sockets of `family`
/// with their `tcp_info`.
fn request(family: u8, seq: u32) -> Vec<u8> {
    // inet_diag_req_v2: family, protocol, ext, pad, states, id (48 bytes).
    let mut req = vec![family, libc::IPPROTO_TCP as u8, 1 << (INET_DIAG_INFO - 1), 0];
    req.extend_from_slice(&(1u32 << TCP_ESTABLISHED).to_ne_bytes());
    req.resize(8 + 48, 0);
    netlink::request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, &req)
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
    let sock = Socket::open(libc::NETLINK_SOCK_DIAG, Duration::from_secs(1))?;
    let mut sample = RttSample::default();
    let mut sum_us = 0.0;
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        if !families[seq as usize - 1] || sample.seen >= MAX_SOCKETS {
            continue;
        }
        // Breaking off a dump at the bound: closing the socket ends it.
        sock.dump(&request(family, seq), seq, |m| {
            if m.msg_type == SOCK_DIAG_BY_FAMILY {
                take_reply(m.payload, &mut sum_us, &mut sample);
            }
            if sample.seen >= MAX_SOCKETS { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })?;
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
    fn a_reply_is_counted_by_its_info_attribute() {
        // An inet_diag_msg, an attribute of another kind, then INET_DIAG_INFO.
        let ti = info(0, 2000, 30_000, 0, 100, 0);
        let mut payload = vec![0u8; INET_DIAG_MSG_LEN];
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&1u16.to_ne_bytes());
        payload.extend_from_slice(&[0; 4]);
        payload.extend_from_slice(&((4 + ti.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
        payload.extend_from_slice(&ti);
        let (mut sum, mut s) = (0.0, RttSample::default());
        take_reply(&payload, &mut sum, &mut s);
        assert_eq!((s.seen, s.active, sum), (1, 1, 30_000.0));
        // A reply cut short is seen but not counted, and does not panic.
        take_reply(&payload[..INET_DIAG_MSG_LEN - 1], &mut sum, &mut s);
        take_reply(&payload[..INET_DIAG_MSG_LEN + 10], &mut sum, &mut s);
        assert_eq!((s.seen, s.active), (3, 1));
    }

    #[test]
    fn the_request_asks_for_established_sockets_with_info() {
        let m = request(libc::AF_INET6 as u8, 2);
        assert_eq!(m.len(), 16 + 56);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), SOCK_DIAG_BY_FAMILY);
        assert_eq!(&m[16..20], &[libc::AF_INET6 as u8, libc::IPPROTO_TCP as u8, 1 << (INET_DIAG_INFO - 1), 0]);
        assert_eq!(u32::from_ne_bytes([m[20], m[21], m[22], m[23]]), 1 << TCP_ESTABLISHED);
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
