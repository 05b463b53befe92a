//! The tuner SDK: implement [`Tuner`], call [`export_tuner!`], and the
//! `.so` speaks the stable ABI of [`crate::abi`].
//!
//! Every entry point the macro exports catches panics, so a bug in a tuner
//! becomes an error the daemon logs (and acts on by disabling that tuner)
//! instead of unwinding across the FFI boundary or aborting the daemon.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};

use crate::abi::{
    AdminWrite, BPFTUNE_ABI_VERSION, FeatureState, HostContext, InstanceHandle, LogLevel, NetnsChange, ScenarioDesc,
    StrategyDesc, SupportLevel, TunableDesc, TunerDescriptor, TunerModule, TunerModuleRef, WriteOutcome, WriteRequest,
};
use crate::event::Event;
use crate::learning::LearningRate;
pub use crate::netns_admission::{NetnsAdmission, UnknownNetns};

/// What a tuner implements. One instance per loaded `.so`.
pub trait Tuner: Sized + 'static {
    /// Short name, e.g. `tcp_buffer`.
    const NAME: &'static str;
    /// The tunable table (see [`crate::tunables!`]).
    const TUNABLES: &'static [TunableDesc];
    /// The scenario table (see [`crate::scenarios!`]).
    const SCENARIOS: &'static [ScenarioDesc];
    /// Optional strategies; the daemon re-inits the tuner to switch.
    const STRATEGIES: &'static [StrategyDesc] = &[];
    /// If non-zero, [`Tuner::tick`] runs this often (milliseconds).
    const TICK_MS: u32 = 0;

    /// Open, load and attach BPF; the returned value lives until `fini`.
    fn init(host: Host) -> Result<Self, String>;
    /// React to one event from this tuner's BPF programs.
    fn event(&mut self, event: &Event) -> Result<(), String>;
    /// Detach; BPF objects are dropped with `self` afterwards.
    fn fini(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Custom summary lines; empty means the daemon's generic summary.
    fn summarize(&self) -> Vec<String> {
        Vec::new()
    }
    /// Periodic work, if `TICK_MS` is set.
    fn tick(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Score a strategy (index into `STRATEGIES`); highest wins.
    fn evaluate(&self, _strategy: u32) -> f64 {
        0.0
    }
    /// The namespace with this cookie is gone, or the daemon stopped
    /// tracking it: forget whatever is kept for it (a tuner with a
    /// [`crate::sdk::NetnsAdmission`] calls its `forget`), so state per
    /// namespace does not outlive the namespace.
    fn netns_released(&mut self, _netns_cookie: u64) {}
    /// Counters of the tuner's sampled BPF programs (see
    /// [`crate::sample::read_samples`]); logged before `fini`, as the
    /// original does.
    fn samples(&self) -> Vec<crate::sample::SampleCount> {
        Vec::new()
    }
}

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
            RResult::RErr(e) => Err(e.into_string()),
        }
    }

    /// Read a string sysctl in the namespace with that cookie (0 = global).
    pub fn sysctl_read_string(&self, netns_cookie: u64, name: &str) -> Result<String, String> {
        match (self.ctx.vtable.sysctl_read())(self.ctx.host, netns_cookie, RStr::from_str(name), true) {
            RResult::ROk(v) => Ok(v.text.into_string()),
            RResult::RErr(e) => Err(e.into_string()),
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
        (self.ctx.vtable.tunable_write())(self.ctx.host, req).into_result().map_err(RString::into_string)
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
    pub fn netns_changes(&self, seen: Option<(u64, u32, i32)>, scan: crate::abi::NetnsScan) -> Vec<NetnsChange> {
        let (cookie, inum, pid) = seen.unwrap_or((0, 0, 0));
        (self.ctx.vtable.netns_changes())(self.ctx.host, cookie, inum, pid, scan).into_vec()
    }

    /// Whether the kernel has netns cookies (per-namespace policy).
    pub fn netns_cookie_supported(&self) -> bool {
        self.ctx.netns_cookie_supported
    }
}

/// Set the globals every bpftune BPF object has and share the daemon's ring
/// buffer and counters maps with it. Call on the open skeleton, before load.
///
/// ```ignore
/// let mut open = builder.open(&mut storage)?;
/// bpftune_core::prepare_object!(open, host)?;
/// let skel = open.load()?;
/// ```
#[macro_export]
macro_rules! prepare_object {
    ($open:expr, $host:expr) => {{
        let host: &$crate::sdk::Host = &$host;
        match $open.maps.rodata_data.as_deref_mut() {
            Some(rodata) => {
                rodata.tuner_id = host.tuner_id();
                rodata.strategy_id = host.strategy_id();
                rodata.bpftune_pid = host.daemon_pid();
                rodata.bpftune_learning_rate = host.learning_rate().rate();
                rodata.debug = host.debug();
            }
            None => {}
        }
        $crate::sdk::reuse_shared_maps(&mut $open.maps.ring_buffer_map, &mut $open.maps.bpftune_stats, host)
    }};
}

/// Point an object's shared maps at the daemon's (see [`prepare_object!`]).
pub fn reuse_shared_maps(
    ringbuf: &mut libbpf_rs::OpenMapMut<'_>,
    stats: &mut libbpf_rs::OpenMapMut<'_>,
    host: &Host,
) -> Result<(), String> {
    use std::os::fd::BorrowedFd;
    // SAFETY: the daemon keeps these fds open for as long as the tuner is
    // loaded; reuse_fd dups them, so the borrow only lasts for the call.
    let ring = unsafe { BorrowedFd::borrow_raw(host.ringbuf_fd()) };
    ringbuf.reuse_fd(ring).map_err(|e| format!("reusing ring buffer fd: {e}"))?;
    // SAFETY: as above.
    let st = unsafe { BorrowedFd::borrow_raw(host.stats_map_fd()) };
    stats.reuse_fd(st).map_err(|e| format!("reusing stats map fd: {e}"))?;
    Ok(())
}

/// Where this `.so`'s own libbpf copy sends its messages.
static LIBBPF_SINK: OnceLock<Host> = OnceLock::new();

fn forward_libbpf(level: libbpf_rs::PrintLevel, msg: String) {
    if let Some(host) = LIBBPF_SINK.get() {
        let level = match level {
            libbpf_rs::PrintLevel::Warn => LogLevel::Debug,
            libbpf_rs::PrintLevel::Info | libbpf_rs::PrintLevel::Debug => LogLevel::Debug,
        };
        host.log(level, &format!("libbpf: {}", msg.trim_end()));
    }
}

/// Route this `.so`'s libbpf output to the daemon's logger (debug only),
/// and its panic messages to the daemon's log instead of raw stderr (each
/// `.so` has its own copy of std, so its own panic hook).
pub fn install_libbpf_logger(host: Host) {
    let _ = LIBBPF_SINK.set(host);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            if let Some(host) = LIBBPF_SINK.get() {
                host.log(LogLevel::Err, &format!("tuner panic: {info}"));
            }
        }));
    });
    if host.debug() {
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, forward_libbpf)));
    } else {
        libbpf_rs::set_print(None);
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

/// Run `f`, turning a panic into an error string.
pub fn guard<R>(f: impl FnOnce() -> Result<R, String>) -> RResult<R, RString> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(RString::from(e)),
        Err(payload) => RResult::RErr(RString::from(panic_message(payload))),
    }
}

/// The instance behind an [`InstanceHandle`].
struct Instance<T> {
    tuner: T,
    host: Host,
}

extern "C" fn descriptor<T: Tuner>() -> TunerDescriptor {
    TunerDescriptor {
        abi_version: BPFTUNE_ABI_VERSION,
        name: RStr::from_str(T::NAME),
        tunables: RSlice::from_slice(T::TUNABLES),
        scenarios: RSlice::from_slice(T::SCENARIOS),
        strategies: RSlice::from_slice(T::STRATEGIES),
        tick_ms: T::TICK_MS,
    }
}

extern "C" fn init<T: Tuner>(ctx: &HostContext) -> RResult<InstanceHandle, RString> {
    let ctx = *ctx;
    guard(move || {
        let host = Host::new(ctx);
        install_libbpf_logger(host);
        let tuner = T::init(host)?;
        let boxed = Box::new(Instance { tuner, host });
        Ok(InstanceHandle(Box::into_raw(boxed).cast()))
    })
}

/// # Safety
/// `handle` must come from `init::<T>` and not have been passed to `fini`.
unsafe fn instance<'a, T: Tuner>(handle: InstanceHandle) -> Result<&'a mut Instance<T>, String> {
    let ptr = handle.0.cast::<Instance<T>>();
    // SAFETY: per the contract above the pointer is a live Box<Instance<T>>
    // and the daemon never calls into one tuner concurrently.
    unsafe { ptr.as_mut() }.ok_or_else(|| "null tuner instance".to_string())
}

extern "C" fn event_handler<T: Tuner>(handle: InstanceHandle, bytes: RSlice<'_, u8>) -> RResult<(), RString> {
    guard(|| {
        let event =
            Event::from_bytes(bytes.as_slice()).ok_or_else(|| format!("unexpected size event {}", bytes.len()))?;
        // SAFETY: the daemon only passes handles it got from our init.
        let inst = unsafe { instance::<T>(handle) }?;
        inst.tuner.event(&event)
    })
}

extern "C" fn fini<T: Tuner>(handle: InstanceHandle) -> RResult<(), RString> {
    guard(|| {
        let ptr = handle.0.cast::<Instance<T>>();
        if ptr.is_null() {
            return Err("null tuner instance".to_string());
        }
        // SAFETY: the pointer came from Box::into_raw in init and the daemon
        // calls fini exactly once; we take ownership back here.
        let mut inst = unsafe { Box::from_raw(ptr) };
        for s in inst.tuner.samples() {
            inst.host.notice(&s.line());
        }
        inst.tuner.fini()
        // inst (and its BPF objects and links) dropped here.
    })
}

extern "C" fn summarize<T: Tuner>(handle: InstanceHandle) -> RResult<RVec<RString>, RString> {
    guard(|| {
        // SAFETY: the daemon only passes handles it got from our init.
        let inst = unsafe { instance::<T>(handle) }?;
        Ok(inst.tuner.summarize().into_iter().map(RString::from).collect())
    })
}

extern "C" fn tick<T: Tuner>(handle: InstanceHandle) -> RResult<(), RString> {
    guard(|| {
        // SAFETY: the daemon only passes handles it got from our init.
        let inst = unsafe { instance::<T>(handle) }?;
        inst.tuner.tick()
    })
}

/// [`crate::abi::NETNS_RELEASED_SYMBOL`] for `T`; exported by [`export_tuner!`].
#[doc(hidden)]
pub extern "C" fn netns_released<T: Tuner>(handle: InstanceHandle, netns_cookie: u64) -> RResult<(), RString> {
    guard(|| {
        // SAFETY: the daemon only passes handles it got from our init.
        let inst = unsafe { instance::<T>(handle) }?;
        inst.tuner.netns_released(netns_cookie);
        Ok(())
    })
}

extern "C" fn evaluate<T: Tuner>(handle: InstanceHandle, strategy: u32) -> RResult<f64, RString> {
    guard(|| {
        // SAFETY: the daemon only passes handles it got from our init.
        let inst = unsafe { instance::<T>(handle) }?;
        Ok(inst.tuner.evaluate(strategy))
    })
}

/// Build the root module for `T`; used by [`export_tuner!`].
pub fn module_for<T: Tuner>() -> TunerModuleRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    TunerModule {
        descriptor: descriptor::<T>,
        init: init::<T>,
        event_handler: event_handler::<T>,
        fini: fini::<T>,
        summarize: summarize::<T>,
        tick: tick::<T>,
        evaluate: evaluate::<T>,
    }
    .leak_into_prefix()
}

/// The symbol abi_stable looks up in a library
/// (`abi_stable::library::ROOT_MODULE_LOADER_NAME`; a unit test checks it).
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// Export `$tuner` (a type implementing [`Tuner`]) as this cdylib's root
/// module.
#[macro_export]
macro_rules! export_tuner {
    ($tuner:ty) => {
        #[doc(hidden)]
        pub mod __bpftune_export {
            use super::*;
            use $crate::__private::abi_stable;

            fn root_module() -> $crate::abi::TunerModuleRef {
                $crate::sdk::module_for::<$tuner>()
            }

            /// The optional entry point `abi::NETNS_RELEASED_SYMBOL`.
            #[unsafe(no_mangle)]
            pub extern "C" fn bpftune_netns_released_v1(
                instance: $crate::abi::InstanceHandle,
                netns_cookie: u64,
            ) -> abi_stable::std_types::RResult<(), abi_stable::std_types::RString> {
                $crate::sdk::netns_released::<$tuner>(instance, netns_cookie)
            }

            extern "C" fn erased_root_module() -> abi_stable::library::RootModuleResult {
                abi_stable::library::__call_root_module_loader(root_module)
            }

            /// The library header abi_stable checks before anything is called.
            #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
            pub static BPFTUNE_ROOT_MODULE: abi_stable::library::LibHeader = {
                // SAFETY: erased_root_module returns the prefix of a
                // TunerModuleRef, as from_constructor requires.
                unsafe {
                    abi_stable::library::LibHeader::from_constructor::<$crate::abi::TunerModuleRef>(
                        erased_root_module,
                        abi_stable::library::CheckTypeLayout::Yes,
                    )
                }
            };
        }
    };
}

/// A BPF skeleton together with the storage its open object lives in, so a
/// tuner can own both in one field. The skeleton is dropped (programs
/// detached, maps closed) before the storage is freed.
pub struct OwnedSkel<S> {
    skel: std::mem::ManuallyDrop<S>,
    storage: std::ptr::NonNull<std::mem::MaybeUninit<libbpf_rs::OpenObject>>,
}

impl<S> OwnedSkel<S> {
    /// Open and load a skeleton with `f`, which gets the storage to open it
    /// in and returns the loaded skeleton.
    pub fn new<E>(
        f: impl FnOnce(&'static mut std::mem::MaybeUninit<libbpf_rs::OpenObject>) -> Result<S, E>,
    ) -> Result<Self, E> {
        let raw = Box::into_raw(Box::new(std::mem::MaybeUninit::uninit()));
        // SAFETY: Box::into_raw never returns null.
        let storage = unsafe { std::ptr::NonNull::new_unchecked(raw) };
        // SAFETY: `raw` is a fresh heap allocation that only this value owns
        // and frees, after the skeleton borrowing it has been dropped (see
        // Drop); until then the pointer stays valid and unaliased.
        match f(unsafe { &mut *raw }) {
            Ok(skel) => Ok(Self { skel: std::mem::ManuallyDrop::new(skel), storage }),
            Err(e) => {
                // SAFETY: whatever borrowed the storage inside `f` was
                // dropped when `f` returned its error.
                drop(unsafe { Box::from_raw(raw) });
                Err(e)
            }
        }
    }
}

impl<S> std::ops::Deref for OwnedSkel<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.skel
    }
}

impl<S> std::ops::DerefMut for OwnedSkel<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.skel
    }
}

impl<S> Drop for OwnedSkel<S> {
    fn drop(&mut self) {
        // SAFETY: the skeleton is dropped exactly once, here, before the
        // storage it borrows.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.skel) };
        // SAFETY: the storage came from Box::leak in `new` and nothing
        // borrows it any more.
        drop(unsafe { Box::from_raw(self.storage.as_ptr()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_module_symbol_matches_abi_stable() {
        assert_eq!(ROOT_MODULE_SYMBOL, abi_stable::library::ROOT_MODULE_LOADER_NAME);
    }

    #[test]
    fn guard_turns_panic_into_error() {
        let r: RResult<(), RString> = guard(|| panic!("boom"));
        match r {
            RResult::RErr(e) => assert!(e.as_str().contains("boom")),
            RResult::ROk(()) => panic!("expected an error"),
        }
    }
}
