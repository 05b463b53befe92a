//! The daemon's one event loop (mio): the shared ring buffer, a signalfd for
//! SIGINT/SIGTERM (exit) and SIGHUP (reload the limits), inotify on the plugin directories, the query socket and
//! its connections, and timers for tuner ticks, strategy evaluation and
//! query deadlines, and the metrics listener and textfile. It sleeps until
//! something happens; an idle daemon with no timers never wakes. Nothing in
//! it blocks on a client.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bpftune_core::ringbuf::SharedRing;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::hotplug::{self, Hotplug};
use crate::identity::Identities;
use crate::journal::Journal;
use crate::logging;
use crate::metrics::http::MetricsServer;
use crate::metrics::textfile::{self, Textfile};
use crate::metrics::{self, LoopStats};
use crate::query::QueryServer;
use crate::replies::{Recent, ReplyCtx};
use crate::tuners::TunerSet;

const RING: Token = Token(0);
const SIGNAL: Token = Token(1);
const INOTIFY: Token = Token(2);

/// Everything besides the tuners the loop serves.
#[derive(Default)]
pub struct Services {
    pub query: Option<QueryServer>,
    pub hotplug: Option<Hotplug>,
    /// Plugin directories (rescanned if inotify events were lost).
    pub plugin_dirs: Vec<PathBuf>,
    pub journal: Option<Rc<RefCell<Journal>>>,
    pub recent: Recent,
    /// `--metrics-listen`.
    pub metrics: Option<MetricsServer>,
    /// `--metrics-textfile`.
    pub textfile: Option<Textfile>,
    /// Event counters the metrics report.
    pub stats: LoopStats,
    /// Which workload each namespace bpftune changed belongs to.
    pub identities: Rc<RefCell<Identities>>,
}

/// How often, at most, the ring-buffer drop counter is read.
const DROP_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Block SIGINT/SIGTERM/SIGHUP (so they arrive on the signalfd) and open it. Call
/// before any thread is started so every thread inherits the mask.
pub fn signal_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local, zero-initialised set.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; these only touch `set`.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
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

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Run until SIGINT or SIGTERM.
pub fn run(set: &mut TunerSet, ring: &SharedRing, sigfd: &OwnedFd, svc: &mut Services) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let ring_fd = ring.epoll_fd();
    let sig_fd = sigfd.as_raw_fd();
    poll.registry().register(&mut SourceFd(&ring_fd), RING, Interest::READABLE)?;
    poll.registry().register(&mut SourceFd(&sig_fd), SIGNAL, Interest::READABLE)?;
    if let Some(h) = &svc.hotplug {
        let fd = h.raw_fd();
        poll.registry().register(&mut SourceFd(&fd), INOTIFY, Interest::READABLE)?;
    }
    if let Some(q) = svc.query.as_mut() {
        q.register(poll.registry())?;
    }
    if let Some(m) = svc.metrics.as_mut() {
        m.register(poll.registry())?;
    }
    if let Some(t) = svc.textfile.as_mut() {
        t.next = Some(Instant::now());
    }
    let mut last_drop_check = Instant::now();
    let mut drops_seen = 0u64;
    loop {
        let deadline = earliest(set.next_deadline(), svc.query.as_ref().and_then(QueryServer::next_deadline));
        let deadline = earliest(deadline, svc.metrics.as_ref().and_then(MetricsServer::next_deadline));
        let deadline = earliest(deadline, svc.textfile.as_ref().and_then(|t| t.next));
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
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
                    svc.stats.drained(queue.events.len(), queue.malformed, queue.overflowed);
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
                INOTIFY => {
                    if let Some(h) = svc.hotplug.as_mut() {
                        let changes = h.read_changes();
                        let journal = svc.journal.as_deref();
                        hotplug::apply(set, journal, changes, &svc.plugin_dirs);
                    }
                }
                token if MetricsServer::owns(token) => {
                    if let Some(m) = svc.metrics.as_mut() {
                        svc.stats.ringbuf_drops.set(ring.ringbuf_drops());
                        with_reply_ctx(set, &svc.journal, &svc.recent, &svc.stats, &svc.identities, |ctx| {
                            let render = |f| metrics::render(&metrics::snapshot::gather(ctx), f);
                            m.handle(poll.registry(), token, &render);
                        });
                    }
                }
                token if QueryServer::owns(token) => {
                    if let Some(q) = svc.query.as_mut() {
                        svc.stats.ringbuf_drops.set(ring.ringbuf_drops());
                        with_reply_ctx(set, &svc.journal, &svc.recent, &svc.stats, &svc.identities, |ctx| {
                            q.handle(poll.registry(), token, ctx);
                        });
                    }
                }
                SIGNAL => {
                    while let Some(signo) = read_signal(sigfd) {
                        if signo == libc::SIGINT as u32 || signo == libc::SIGTERM as u32 {
                            logging::debug(&format!("received signal {signo}; exiting"));
                            return Ok(());
                        }
                        if signo == libc::SIGHUP as u32 {
                            logging::debug("received SIGHUP; reloading limits");
                            // Logged either way; a bad file keeps the old limits.
                            let _ = crate::operator::reload_limits(&set.host);
                        }
                    }
                }
                _ => {}
            }
        }
        let now = Instant::now();
        if let Some(q) = svc.query.as_mut() {
            q.expire(poll.registry(), now);
        }
        if let Some(m) = svc.metrics.as_mut() {
            m.expire(poll.registry(), now);
        }
        if svc.textfile.as_ref().and_then(|t| t.next).is_some_and(|due| now >= due) {
            svc.stats.ringbuf_drops.set(ring.ringbuf_drops());
            write_textfile(set, svc);
            if let Some(t) = svc.textfile.as_mut() {
                t.next = Some(set.grid_deadline(now, textfile::INTERVAL));
            }
        }
        set.run_timers(now);
        let gone = set.release_netns();
        if let Some(j) = svc.journal.as_ref().filter(|_| !gone.is_empty()) {
            if let Ok(mut j) = j.try_borrow_mut() {
                for cookie in gone {
                    j.forget_netns(cookie);
                }
            }
        }
    }
}

/// Write the metrics textfile now (also called once more at exit).
pub fn write_textfile(set: &TunerSet, svc: &mut Services) {
    let Some(t) = svc.textfile.as_mut() else { return };
    with_reply_ctx(set, &svc.journal, &svc.recent, &svc.stats, &svc.identities, |ctx| {
        t.write_logged(&metrics::render(&metrics::snapshot::gather(ctx), metrics::Format::Prometheus));
    });
}

/// Run `f` with what queries, scrapes and the textfile read: the tuners,
/// the journal and the namespaces' identities (each skipped if busy), the
/// recent decisions and the loop's counters. Takes the fields, not the
/// whole [`Services`], so the caller can hold its server mutably.
fn with_reply_ctx<R>(
    set: &TunerSet,
    journal: &Option<Rc<RefCell<Journal>>>,
    recent: &Recent,
    stats: &LoopStats,
    identities: &RefCell<Identities>,
    f: impl FnOnce(&ReplyCtx<'_>) -> R,
) -> R {
    let journal = journal.as_ref().and_then(|j| j.try_borrow().ok());
    let ids = identities.try_borrow().ok();
    let ctx = ReplyCtx { set, journal: journal.as_deref(), recent, stats: Some(stats), identities: ids.as_deref() };
    f(&ctx)
}
