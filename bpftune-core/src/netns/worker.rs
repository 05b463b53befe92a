//! One long-lived thread that enters network namespaces on request: every
//! sysctl access, `/proc/net` read or probe in another namespace runs here,
//! so no call starts a thread and no caller's thread leaves its namespace.
//!
//! A job names its namespace by handle; the worker opens the handle's path,
//! checks the inode, `setns`es and checks the cookie (the path may now name
//! another namespace), then runs the job. Nothing is held open between jobs
//! except the daemon's own namespace, where the thread returns after every
//! job: an open nsfs file, or a thread left inside, would keep a dead
//! namespace alive.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, OnceLock, mpsc};

use super::{NetnsHandle, current_netns_cookie, gone};

/// Where a job runs.
#[derive(Debug, Clone, Copy)]
pub enum Where<'a> {
    /// The daemon's own namespace.
    Own,
    /// Another namespace.
    Netns(&'a NetnsHandle),
}

type Job = Box<dyn FnOnce(&mut WorkerState) + Send>;

/// The worker thread's way home: its own namespace. The thread returns
/// there after every job, because a thread left inside a namespace would
/// keep that namespace alive after its last process and mount are gone.
struct WorkerState {
    own: File,
}

impl WorkerState {
    fn enter(&mut self, target: Where<'_>) -> io::Result<()> {
        let Where::Netns(ns) = target else { return Ok(()) };
        let file = File::open(&ns.path).map_err(|e| gone(format!("{}: {e}", ns.path.display())))?;
        if file.metadata()?.ino() != ns.inum {
            return Err(gone(format!("{} now names another namespace", ns.path.display())));
        }
        setns(&file).map_err(|e| gone(format!("setns {}: {e}", ns.path.display())))?;
        let cookie = current_netns_cookie()?;
        if cookie != ns.cookie {
            return Err(gone(format!("namespace cookie {cookie} is not the expected {}", ns.cookie)));
        }
        Ok(())
    }

    /// Back to the daemon's namespace; if even that fails the thread stops
    /// taking jobs (callers then get "namespace worker stopped").
    fn go_home(&mut self) -> io::Result<()> {
        setns(&self.own)
    }
}

fn setns(file: &File) -> io::Result<()> {
    let _caps = crate::privilege::Raised::raise(crate::privilege::NETNS_ENTRY);
    // SAFETY: setns on a valid nsfs fd; it moves only the worker thread,
    // which runs nothing but jobs that first say where they run.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The handle on the worker thread.
struct Worker {
    jobs: Mutex<mpsc::Sender<Job>>,
}

static WORKER: OnceLock<Result<Worker, String>> = OnceLock::new();
/// Threads started for namespace work (one, unless it could not start).
static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn start() -> Result<Worker, String> {
    let own = File::open("/proc/thread-self/ns/net").map_err(|e| format!("opening own netns: {e}"))?;
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("bpftune-netns".into())
        .spawn(move || {
            let mut state = WorkerState { own };
            for job in rx {
                job(&mut state);
                if state.go_home().is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("starting the namespace worker: {e}"))?;
    STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(Worker { jobs: Mutex::new(tx) })
}

/// Threads started for namespace work since the daemon started (for the
/// benchmark and `-q status`: it stays at one).
pub fn threads_started() -> u64 {
    STARTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Run `f` in namespace `target` on the worker and wait for it. Fails with
/// [`super::NetnsGone`] if the namespace is gone or its path names another.
pub fn run_in<R: Send + 'static>(target: Where<'_>, f: impl FnOnce() -> R + Send + 'static) -> io::Result<R> {
    let worker = WORKER.get_or_init(start).as_ref().map_err(|e| io::Error::other(e.clone()))?;
    let target_owned = match target {
        Where::Own => None,
        Where::Netns(h) => Some(h.clone()),
    };
    let (reply_tx, reply_rx) = mpsc::sync_channel::<io::Result<R>>(1);
    let job: Job = Box::new(move |state| {
        let place = match &target_owned {
            None => Where::Own,
            Some(h) => Where::Netns(h),
        };
        let result = match state.enter(place) {
            Ok(()) => catch_unwind(AssertUnwindSafe(f)).map_err(|_| io::Error::other("namespace job panicked")),
            Err(e) => Err(e),
        };
        // The caller waits for this; if it is gone there is nobody to tell.
        let _ = reply_tx.send(result);
    });
    worker
        .jobs
        .lock()
        .map_err(|_| io::Error::other("namespace worker lock poisoned"))?
        .send(job)
        .map_err(|_| io::Error::other("namespace worker stopped"))?;
    reply_rx.recv().map_err(|_| io::Error::other("namespace worker stopped"))?
}

/// A job given as a C function and its context (a tuner's closure, see the
/// SDK's `Host::in_netns`).
#[derive(Clone, Copy)]
pub struct RawJob {
    pub run: extern "C" fn(*mut std::ffi::c_void),
    pub ctx: *mut std::ffi::c_void,
}

// SAFETY: a RawJob is only run by `run_raw`, whose caller blocks until the
// worker has run it (or dropped it unrun), so `ctx` is used by one thread
// at a time and never after the caller returns; the SDK only builds one
// from a `Send` closure and result.
unsafe impl Send for RawJob {}

/// Run a C job in `target` on the worker (the daemon's own namespace runs
/// it on the calling thread) and wait for it.
pub fn run_raw(target: Where<'_>, job: RawJob) -> io::Result<()> {
    match target {
        Where::Own => {
            (job.run)(job.ctx);
            Ok(())
        }
        Where::Netns(_) => run_in(target, move || {
            let job = job;
            (job.run)(job.ctx)
        }),
    }
}
