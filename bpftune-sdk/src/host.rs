//! A tuner's handle on the daemon: the context it was started with and the
//! host calls (log, sysctl read/write, change accounting, namespaces).
//!
//! `Host` is neither `Send` nor `Sync` (it carries the daemon's raw handle):
//! the daemon serves host calls on its main thread only, so a tuner cannot
//! call it from a thread of its own.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use abi_stable::std_types::{RResult, RSlice, RStr};

use crate::abi::{
    AdminWrite, CallError, FeatureState, HostContext, LogLevel, NetnsChange, NetnsInfo, NetnsJobFn, NetnsScan,
    SupportLevel, WriteOutcome, WriteRequest,
};
use crate::learning::LearningRate;

/// A tuner's handle on the daemon: logging, sysctl I/O, learning rate.
#[derive(Clone, Copy)]
pub struct Host {
    ctx: HostContext,
}

impl Host {
    /// Wrap the context the daemon passed to `init`.
    pub fn new(ctx: HostContext) -> Self {
        Self { ctx }
    }
    pub fn context(&self) -> &HostContext {
        &self.ctx
    }
    pub fn tuner_id(&self) -> u32 {
        self.ctx.tuner_id
    }
    pub fn ringbuf_fd(&self) -> i32 {
        self.ctx.ringbuf_fd
    }
    pub fn stats_map_fd(&self) -> i32 {
        self.ctx.stats_map_fd
    }
    pub fn cgroup_fd(&self) -> i32 {
        self.ctx.cgroup_fd
    }
    pub fn debug(&self) -> bool {
        self.ctx.debug
    }
    pub fn daemon_pid(&self) -> u32 {
        self.ctx.daemon_pid
    }
    pub fn support(&self) -> SupportLevel {
        self.ctx.support
    }
    pub fn strategy_id(&self) -> u32 {
        self.ctx.strategy_id
    }
    pub fn global_netns_cookie(&self) -> u64 {
        self.ctx.global_netns_cookie
    }
    pub fn learning_rate(&self) -> LearningRate {
        LearningRate::new(self.ctx.learning_rate)
    }

    pub fn log(&self, level: LogLevel, msg: &str) {
        (self.ctx.vtable.log())(self.ctx.host, level, RStr::from_str(msg));
    }
    pub fn notice(&self, msg: &str) {
        self.log(LogLevel::Notice, msg);
    }
    pub fn debug_log(&self, msg: &str) {
        self.log(LogLevel::Debug, msg);
    }
    pub fn error(&self, msg: &str) {
        self.log(LogLevel::Err, msg);
    }

    /// Read an integer sysctl in the namespace with that cookie (0 = global).
    pub fn sysctl_read(&self, netns_cookie: u64, name: &str) -> Result<Vec<i64>, String> {
        match (self.ctx.vtable.sysctl_read())(self.ctx.host, netns_cookie, RStr::from_str(name), false) {
            RResult::ROk(v) => Ok(v.ints.into_vec()),
            RResult::RErr(e) => Err(e.to_string()),
        }
    }

    /// Read a string sysctl in the namespace with that cookie (0 = global).
    pub fn sysctl_read_string(&self, netns_cookie: u64, name: &str) -> Result<String, String> {
        match (self.ctx.vtable.sysctl_read())(self.ctx.host, netns_cookie, RStr::from_str(name), true) {
            RResult::ROk(v) => Ok(v.text.into_string()),
            RResult::RErr(e) => Err(e.to_string()),
        }
    }

    /// Change a declared integer tunable; the daemon logs the Scenario line
    /// and `reason`, counts it, and records the original for rollback.
    pub fn write(
        &self,
        tunable: impl Into<u32>,
        scenario: impl Into<u32>,
        netns_cookie: u64,
        values: &[i64],
        reason: &str,
    ) -> Result<WriteOutcome, String> {
        let req = WriteRequest {
            tunable: tunable.into(),
            scenario: scenario.into(),
            netns_cookie,
            values: RSlice::from_slice(values),
            text: RStr::from_str(""),
            reason: RStr::from_str(reason),
        };
        self.submit(&req)
    }

    /// Change a declared string tunable.
    pub fn write_string(
        &self,
        tunable: impl Into<u32>,
        scenario: impl Into<u32>,
        netns_cookie: u64,
        text: &str,
        reason: &str,
    ) -> Result<WriteOutcome, String> {
        let req = WriteRequest {
            tunable: tunable.into(),
            scenario: scenario.into(),
            netns_cookie,
            values: RSlice::from_slice(&[]),
            text: RStr::from_str(text),
            reason: RStr::from_str(reason),
        };
        self.submit(&req)
    }

    fn submit(&self, req: &WriteRequest<'_>) -> Result<WriteOutcome, String> {
        (self.ctx.vtable.tunable_write())(self.ctx.host, req).into_result().map_err(|e: CallError| e.to_string())
    }

    /// Log and count a change made another way (netlink, per socket).
    pub fn update(
        &self,
        tunable: impl Into<u32>,
        scenario: impl Into<u32>,
        netns_cookie: u64,
        reason: &str,
    ) -> WriteOutcome {
        (self.ctx.vtable.tunable_update())(
            self.ctx.host,
            tunable.into(),
            scenario.into(),
            netns_cookie,
            RStr::from_str(reason),
        )
    }

    /// Report that `pid` wrote sysctl `name` in that namespace.
    pub fn admin_override(&self, pid: i32, netns_cookie: u64, name: &str) {
        (self.ctx.vtable.admin_override())(self.ctx.host, pid, netns_cookie, RStr::from_str(name));
    }

    /// Report an administrator's sysctl write with what BPF saw at the
    /// write; a daemon older than this call gets the plain
    /// [`Host::admin_override`].
    pub fn admin_write(&self, write: &AdminWrite<'_>) {
        match self.ctx.vtable.admin_write() {
            Some(f) => f(self.ctx.host, write),
            None => self.admin_override(write.pid, write.netns_cookie, write.name.as_str()),
        }
    }

    /// Say how one part of this tuner fares on the running kernel: the
    /// daemon logs a part that is not [`FeatureState::Active`] once and lists
    /// every part in `-S` and `-q jstatus`. Call from `init`, before
    /// returning. `part` is short (`flow_limit_cpu_bitmap`, `backlog
    /// drops`); `detail` says why, and what works instead.
    pub fn feature(&self, part: &str, state: FeatureState, detail: &str) {
        match self.ctx.vtable.feature() {
            Some(f) => f(self.ctx.host, RStr::from_str(part), state, RStr::from_str(detail)),
            None if state != FeatureState::Active => {
                self.log(LogLevel::Info, &format!("{part} {}: {detail}", state.as_str()));
            }
            None => {}
        }
    }

    /// Tell the daemon about a namespace seen in an event.
    pub fn netns_seen(&self, netns_cookie: u64, netns_inum: u32) {
        (self.ctx.vtable.netns_seen())(self.ctx.host, netns_cookie, netns_inum);
    }

    /// Namespace changes since last asked (for the netns tuner): first
    /// learn the namespace of an event, if `seen` is `Some((cookie, inum,
    /// pid))`, and scan as `scan` says.
    pub fn netns_changes(&self, seen: Option<(u64, u32, i32)>, scan: NetnsScan) -> Vec<NetnsChange> {
        let (cookie, inum, pid) = seen.unwrap_or((0, 0, 0));
        (self.ctx.vtable.netns_changes())(self.ctx.host, cookie, inum, pid, scan).into_vec()
    }

    /// Whether the kernel has netns cookies (per-namespace policy).
    pub fn netns_cookie_supported(&self) -> bool {
        self.ctx.netns_cookie_supported
    }

    /// Run `f` inside the namespace with that cookie and return what it
    /// returns. `netns_inum` (0 if unknown) helps the daemon find a
    /// namespace it has not seen yet. The daemon enters namespaces on one
    /// long-lived thread of its own (never a new thread, never a `/proc`
    /// scan per call), so `f` must be `Send`; inside, `/proc/thread-self/net`
    /// is that namespace's `/proc/net` and `/proc/sys/net` its sysctls. The
    /// daemon's own namespace runs `f` on the calling thread.
    pub fn in_netns<F: FnOnce() -> R + Send, R: Send>(
        &self,
        netns_cookie: u64,
        netns_inum: u32,
        f: F,
    ) -> Result<R, String> {
        let Some(run) = self.ctx.vtable.netns_run() else {
            return Err("the daemon is too old to enter namespaces for tuners".to_string());
        };
        let mut job = NetnsJob { f: Some(f), out: None };
        let ctx = std::ptr::from_mut(&mut job).cast::<c_void>();
        run(self.ctx.host, netns_cookie, netns_inum, NetnsJobFn { run: run_netns_job::<F, R> }, ctx)
            .into_result()
            .map_err(|e: CallError| e.to_string())?;
        match job.out {
            Some(Ok(r)) => Ok(r),
            Some(Err(_)) => Err("panicked inside the namespace".to_string()),
            None => Err("the namespace job did not run".to_string()),
        }
    }

    /// The text of `/proc/net/<name>` (e.g. `snmp`, `sockstat6`) in the
    /// namespace with that cookie, read by the daemon inside it.
    pub fn read_net_file(&self, netns_cookie: u64, netns_inum: u32, name: &str) -> Result<String, String> {
        if name.is_empty() || name.starts_with('/') || name.split('/').any(|p| p == "..") {
            return Err(format!("not a /proc/net file name: {name}"));
        }
        let path = format!("/proc/thread-self/net/{name}");
        self.in_netns(netns_cookie, netns_inum, move || std::fs::read_to_string(&path))?
            .map_err(|e| format!("/proc/net/{name}: {e}"))
    }

    /// Every network namespace the daemon knows, its own first. `scan`
    /// asks it to look for new ones first ([`NetnsScan::IfChanged`] is cheap:
    /// only if `/run/netns` changed; [`NetnsScan::Full`] walks every process).
    pub fn namespaces(&self, scan: NetnsScan) -> Vec<NetnsInfo> {
        match self.ctx.vtable.netns_list() {
            Some(list) => list(self.ctx.host, scan).into_vec(),
            None => vec![NetnsInfo { cookie: self.global_netns_cookie(), inum: 0 }],
        }
    }
}

/// A closure on its way into a namespace, and what it returned.
struct NetnsJob<F, R> {
    f: Option<F>,
    out: Option<std::thread::Result<R>>,
}

/// Runs a [`NetnsJob`] where the daemon calls it (its namespace thread).
extern "C" fn run_netns_job<F: FnOnce() -> R + Send, R: Send>(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `NetnsJob<F, R>` `Host::in_netns` made on its
    // stack; it waits until the daemon has run (or dropped) this call, and
    // the daemon calls it at most once, so the reference is unique and
    // live. F and R are Send, so using them on the daemon's thread is fine.
    let job = unsafe { &mut *ctx.cast::<NetnsJob<F, R>>() };
    if let Some(f) = job.f.take() {
        job.out = Some(catch_unwind(AssertUnwindSafe(f)));
    }
}
