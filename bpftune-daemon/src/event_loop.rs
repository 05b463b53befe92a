//! The daemon's one event loop (mio): the shared ring buffer, a signalfd for
//! SIGINT/SIGTERM, and timers for tuner ticks and strategy evaluation. It
//! sleeps until something happens; an idle daemon with no timers never wakes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use bpftune_core::ringbuf::SharedRing;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::logging;
use crate::tuners::TunerSet;

const RING: Token = Token(0);
const SIGNAL: Token = Token(1);

/// How often, at most, the ring-buffer drop counter is read.
const DROP_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Block SIGINT/SIGTERM (so they arrive on the signalfd) and open it. Call
/// before any thread is started so every thread inherits the mask.
pub fn signal_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local, zero-initialised set.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; these only touch `set`.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    // SAFETY: changes this thread's mask; `set` is valid.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: a new signalfd for `set`; ownership moves into OwnedFd.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_signal(fd: &OwnedFd) -> Option<u32> {
    // SAFETY: reading one siginfo record into a zeroed, correctly sized buffer.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: the buffer is `size` bytes and writable.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
    if n as usize == size { Some(info.ssi_signo) } else { None }
}

/// Run until SIGINT or SIGTERM.
pub fn run(set: &mut TunerSet, ring: &SharedRing, sigfd: &OwnedFd) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(64);
    let ring_fd = ring.epoll_fd();
    let sig_fd = sigfd.as_raw_fd();
    poll.registry().register(&mut SourceFd(&ring_fd), RING, Interest::READABLE)?;
    poll.registry().register(&mut SourceFd(&sig_fd), SIGNAL, Interest::READABLE)?;
    let mut last_drop_check = Instant::now();
    let mut drops_seen = 0u64;
    loop {
        let timeout = set.next_deadline().map(|d| d.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                logging::debug("poll interrupted; continuing");
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            match ev.token() {
                RING => {
                    let queue = ring.drain().map_err(|e| io::Error::other(format!("ring buffer: {e}")))?;
                    if queue.malformed > 0 {
                        logging::warn(&format!("unexpected size event: {} dropped", queue.malformed));
                    }
                    if queue.overflowed > 0 {
                        logging::warn(&format!("event queue full: {} events dropped", queue.overflowed));
                    }
                    set.dispatch(queue.events);
                    if last_drop_check.elapsed() >= DROP_CHECK_INTERVAL {
                        last_drop_check = Instant::now();
                        let drops = ring.ringbuf_drops();
                        if drops > drops_seen {
                            logging::warn(&format!(
                                "ring buffer full: {} events lost ({drops} in total)",
                                drops - drops_seen
                            ));
                            drops_seen = drops;
                        }
                    }
                }
                SIGNAL => {
                    while let Some(signo) = read_signal(sigfd) {
                        if signo == libc::SIGINT as u32 || signo == libc::SIGTERM as u32 {
                            logging::debug(&format!("received signal {signo}; exiting"));
                            return Ok(());
                        }
                    }
                }
                _ => {}
            }
        }
        set.run_timers(Instant::now());
    }
}
