//! The stable, versioned ABI between the daemon and tuner `.so` files.
//!
//! Everything that crosses the boundary is declared here with
//! `#[derive(StableAbi)]`, so abi_stable checks the whole type graph's layout
//! (and this crate's version) before the daemon calls anything. Nothing from
//! libbpf-rs crosses: the daemon passes fds and ids, the tuner owns its BPF.
//!
//! This crate holds nothing else, and its own version (not the daemon's) is
//! what abi_stable compares at load time: a daemon-only change never rejects
//! a plugin, and a change here shows in the number. Tuner authors do not use
//! it directly: `bpftune-sdk` wraps it in a trait and an export macro that
//! catch panics at every entry point.

use std::ffi::c_void;

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RResult, RSlice, RStr, RString, RVec},
};

/// Bumped on any change to the meaning (not just layout) of the interface.
/// Layout changes are caught by abi_stable; this catches semantic ones.
/// 2: errors crossing the boundary are [`CallError`]s, not strings.
pub const BPFTUNE_ABI_VERSION: u32 = 2;

/// What kind of failure a [`CallError`] reports, so neither side parses
/// messages to tell a panic from an error.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The call ran and failed; the callee is still usable.
    Failed = 0,
    /// The callee panicked; the panic was caught at the boundary. The daemon
    /// disables a tuner that panics and never calls into it again.
    Panicked = 1,
    /// The daemon could not serve a host call because it was already inside
    /// one for this tuner (a re-entrant call); nothing was done.
    Busy = 2,
}

impl ErrorKind {
    /// The word the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Panicked => "panicked",
            Self::Busy => "busy",
        }
    }
}

/// The error every call across the boundary returns: a kind and a message
/// for the log.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub kind: ErrorKind,
    pub message: RString,
}

impl CallError {
    pub fn new(kind: ErrorKind, message: impl Into<RString>) -> Self {
        Self { kind, message: message.into() }
    }
    pub fn failed(message: impl Into<RString>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }
    pub fn panicked(message: impl Into<RString>) -> Self {
        Self::new(ErrorKind::Panicked, message)
    }
    pub fn busy(message: impl Into<RString>) -> Self {
        Self::new(ErrorKind::Busy, message)
    }
    pub fn is_panic(&self) -> bool {
        self.kind == ErrorKind::Panicked
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ErrorKind::Failed => f.write_str(&self.message),
            kind => write!(f, "{}: {}", kind.as_str(), self.message),
        }
    }
}

impl std::error::Error for CallError {}

/// Syslog-compatible severities (same numbers as `<syslog.h>`).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

/// What kind of BPF the running kernel supports (see `support`).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SupportLevel {
    None = 0,
    NoBtf = 1,
    Legacy = 2,
    Normal = 3,
}

/// A tunable is either a sysctl or something changed another way (netlink,
/// per-socket options) that is only logged and counted.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunableKind {
    Sysctl = 0,
    Other = 1,
}

/// Flags of a tunable; a type of its own so they cannot be confused with the
/// kind (the original's `tcp_syncookies` bug).
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunableFlags(pub u32);

impl TunableFlags {
    pub const NONE: Self = Self(0);
    /// Per network namespace: written in the event's namespace.
    pub const NAMESPACED: Self = Self(0x1);
    /// A missing sysctl is tolerated (e.g. IPv6 disabled).
    pub const OPTIONAL: Self = Self(0x2);
    /// The value is a string, not integers.
    pub const STRING: Self = Self(0x4);

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// One row of a tuner's tunable table.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct TunableDesc {
    pub name: RStr<'static>,
    pub kind: TunableKind,
    pub flags: TunableFlags,
    pub num_values: u8,
}

/// One row of a tuner's scenario table: a short name and the "why".
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct ScenarioDesc {
    pub name: RStr<'static>,
    pub description: RStr<'static>,
}

/// One strategy: a named set of BPF programs, evaluated on a timer.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct StrategyDesc {
    pub name: RStr<'static>,
    pub description: RStr<'static>,
    /// Seconds between evaluations while this strategy is active; 0 = never.
    pub timeout_secs: u32,
}

/// What a tuner declares about itself; read before `init`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct TunerDescriptor {
    pub abi_version: u32,
    /// Short name, e.g. `tcp_buffer`.
    pub name: RStr<'static>,
    pub tunables: RSlice<'static, TunableDesc>,
    pub scenarios: RSlice<'static, ScenarioDesc>,
    pub strategies: RSlice<'static, StrategyDesc>,
    /// If non-zero, the daemon calls `tick` this often (milliseconds).
    pub tick_ms: u32,
}

/// Opaque pointer to the daemon's per-tuner binding; only the daemon
/// dereferences it.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct HostHandle(pub *const c_void);

/// Opaque pointer to a tuner instance; only the tuner dereferences it.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct InstanceHandle(pub *mut c_void);

/// A sysctl value as read: integers, or a string for STRING tunables.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct SysctlValue {
    pub ints: RVec<i64>,
    pub text: RString,
    pub is_string: bool,
}

/// A request to change one tunable, with the reason to log.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct WriteRequest<'a> {
    pub tunable: u32,
    pub scenario: u32,
    pub netns_cookie: u64,
    pub values: RSlice<'a, i64>,
    pub text: RStr<'a>,
    pub reason: RStr<'a>,
}

/// What happened to a [`WriteRequest`].
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The value changed; logged and counted.
    Written = 0,
    /// Already at that value: nothing written, logged or counted.
    Unchanged = 1,
    /// The tuner is disabled (administrator override) in that namespace.
    SkippedManual = 2,
    /// Advise mode: logged as advice, nothing written.
    Advised = 3,
    /// The namespace no longer exists.
    NetnsGone = 4,
}

/// Daemon services a tuner may call. Every function catches its own panics.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostVtableRef)))]
#[sabi(missing_field(panic))]
pub struct HostVtable {
    pub log: extern "C" fn(host: HostHandle, level: LogLevel, msg: RStr<'_>),
    /// Read a sysctl in the namespace with that cookie (global if 0 or the
    /// global cookie).
    pub sysctl_read: extern "C" fn(
        host: HostHandle,
        netns_cookie: u64,
        name: RStr<'_>,
        string: bool,
    ) -> RResult<SysctlValue, CallError>,
    /// Change a declared tunable, logging the Scenario/Due-to lines.
    pub tunable_write: extern "C" fn(host: HostHandle, req: &WriteRequest<'_>) -> RResult<WriteOutcome, CallError>,
    /// Log and count a change made some other way (netlink, per socket).
    pub tunable_update: extern "C" fn(
        host: HostHandle,
        tunable: u32,
        scenario: u32,
        netns_cookie: u64,
        reason: RStr<'_>,
    ) -> WriteOutcome,
    /// An administrator (pid) wrote sysctl `name` in that namespace: the
    /// daemon disables every tuner owning it there.
    pub admin_override: extern "C" fn(host: HostHandle, pid: i32, netns_cookie: u64, name: RStr<'_>),
    /// Make sure the daemon can act in the namespace with that cookie (it
    /// was seen in an event carrying `netns_inum`).
    pub netns_seen: extern "C" fn(host: HostHandle, netns_cookie: u64, netns_inum: u32),
    /// The netns tuner's view of namespaces: learn the one an event names
    /// (`netns_cookie` non-zero; `pid`, a process or thread id, was in it,
    /// 0 if unknown), rescan every namespace if `scan` is
    /// [`NetnsScan::Full`] (or only if `/run/netns` changed, for
    /// [`NetnsScan::IfChanged`]), forget the dead everywhere, and return
    /// every change since the caller last asked.
    #[sabi(last_prefix_field)]
    pub netns_changes: extern "C" fn(
        host: HostHandle,
        netns_cookie: u64,
        netns_inum: u32,
        pid: i32,
        scan: NetnsScan,
    ) -> RVec<NetnsChange>,
    /// Report one part of the tuner and whether it works on this kernel
    /// (logged once when not [`FeatureState::Active`], listed by `-S` and
    /// `-q jstatus`). Added after the first release: a daemon built before
    /// it has no such field, and `bpftune_sdk::Host::feature` then only
    /// logs the line itself.
    #[sabi(missing_field(option))]
    pub feature: extern "C" fn(host: HostHandle, part: RStr<'_>, state: FeatureState, detail: RStr<'_>),
    /// An administrator wrote a sysctl: like `admin_override`, with what
    /// BPF saw at the write (the writer's command name, the new value, and
    /// whether the pid and namespace are known on this kernel). Added after
    /// the first release; older daemons only have `admin_override`.
    #[sabi(missing_field(option))]
    pub admin_write: extern "C" fn(host: HostHandle, write: &AdminWrite<'_>),
    /// Run `job(ctx)` inside the namespace with that cookie (`netns_inum`,
    /// if not 0, helps the daemon find one it has not seen yet) and wait
    /// for it. The daemon enters namespaces on one long-lived thread of its
    /// own, so `job` may run on another thread than the caller's (the SDK
    /// only passes `Send` closures); the daemon's own namespace runs it on
    /// the calling thread.
    #[sabi(missing_field(option))]
    pub netns_run: extern "C" fn(
        host: HostHandle,
        netns_cookie: u64,
        netns_inum: u32,
        job: NetnsJobFn,
        ctx: *mut c_void,
    ) -> RResult<(), CallError>,
    /// Every network namespace the daemon knows, its own first; `scan`
    /// says how hard to look for new ones first.
    #[sabi(missing_field(option))]
    pub netns_list: extern "C" fn(host: HostHandle, scan: NetnsScan) -> RVec<NetnsInfo>,
}

/// The job [`HostVtable::netns_run`] runs inside a namespace.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct NetnsJobFn {
    pub run: extern "C" fn(ctx: *mut c_void),
}

/// A namespace the daemon knows.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetnsInfo {
    pub cookie: u64,
    /// Its inode (`ns.inum`); 0 if unknown.
    pub inum: u64,
}

/// How one part of a tuner (a hook, a helper, an optional tunable) fares on
/// the running kernel.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FeatureState {
    /// Works as designed.
    Active = 0,
    /// Works another way (an older hook, a counter read on a timer).
    Fallback = 1,
    /// Not available here: that part does nothing, the rest works.
    Off = 2,
    /// Not needed on this kernel (what it tunes limits nothing here).
    NotNeeded = 3,
}

impl FeatureState {
    /// The word `-S` and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Fallback => "fallback",
            Self::Off => "off",
            Self::NotNeeded => "not needed",
        }
    }
}

/// A sysctl write by someone other than the daemon, as the sysctl tuner's
/// BPF program saw it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct AdminWrite<'a> {
    /// The writer's process id; 0 where the kernel cannot tell BPF.
    pub pid: i32,
    /// The writer's network namespace; meaningful if `netns_known`.
    pub netns_cookie: u64,
    /// False where BPF cannot see the writer's namespace: the write is then
    /// taken as one in every namespace (the daemon backs off everywhere).
    pub netns_known: bool,
    /// `net/ipv4/tcp_rmem` form (or dotted).
    pub name: RStr<'a>,
    /// The value written, as text; empty if not seen.
    pub value: RStr<'a>,
    /// The writer's command name taken at the write (`comm`); empty if the
    /// kernel does not let BPF read it there.
    pub comm: RStr<'a>,
}

/// How much [`HostVtable::netns_changes`] looks before answering.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsScan {
    /// Only report what is already known.
    None = 0,
    /// Rescan if `/run/netns` changed since the last scan.
    IfChanged = 1,
    /// Walk every nsfs mount and process.
    Full = 2,
}

/// What happened to a network namespace.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsChangeKind {
    /// Appeared while the daemon runs.
    Created = 0,
    /// No process or mount holds it any more; its state was released.
    Destroyed = 1,
    /// Existed when the daemon started (start-up discovery).
    Found = 2,
}

/// One namespace change, by cookie.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetnsChange {
    pub cookie: u64,
    pub kind: NetnsChangeKind,
}

/// Everything `init` receives. Plain data plus the host vtable.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostContext {
    pub tuner_id: u32,
    /// The shared ring buffer map: `reuse_fd` it before loading.
    pub ringbuf_fd: i32,
    /// The shared counters map (ring buffer drops): `reuse_fd` it too.
    pub stats_map_fd: i32,
    /// cgroup v2 directory for sockops / sysctl programs.
    pub cgroup_fd: i32,
    /// 0..=4 as given with `-r`.
    pub learning_rate: u32,
    pub support: SupportLevel,
    pub debug: bool,
    pub daemon_pid: u32,
    pub global_netns_cookie: u64,
    pub netns_cookie_supported: bool,
    /// Index into the descriptor's strategies (0 if it has none).
    pub strategy_id: u32,
    pub host: HostHandle,
    pub vtable: HostVtableRef,
}

/// The root module every tuner `.so` exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = TunerModuleRef)))]
#[sabi(missing_field(panic))]
pub struct TunerModule {
    pub descriptor: extern "C" fn() -> TunerDescriptor,
    pub init: extern "C" fn(ctx: &HostContext) -> RResult<InstanceHandle, CallError>,
    pub event_handler: extern "C" fn(instance: InstanceHandle, event: RSlice<'_, u8>) -> RResult<(), CallError>,
    /// Finalise and free the instance; it must not be used afterwards.
    pub fini: extern "C" fn(instance: InstanceHandle) -> RResult<(), CallError>,
    /// Lines for the summary; empty to use the daemon's generic summary.
    pub summarize: extern "C" fn(instance: InstanceHandle) -> RResult<RVec<RString>, CallError>,
    pub tick: extern "C" fn(instance: InstanceHandle) -> RResult<(), CallError>,
    /// Score strategy `strategy` (index into the descriptor's strategies);
    /// the highest score wins.
    #[sabi(last_prefix_field)]
    pub evaluate: extern "C" fn(instance: InstanceHandle, strategy: u32) -> RResult<f64, CallError>,
}

/// Optional entry points a plugin may export next to its root module, each
/// found by name with `dlsym` after the ABI check; a plugin built before one
/// existed simply lacks the symbol. They live outside [`TunerModule`]
/// because abi_stable lets a prefix type grow only in the library: a daemon
/// expecting one more field there would refuse every older plugin. The
/// version is part of the name; a changed signature gets a new name.
///
/// `bpftune_netns_released_v2(instance, netns_cookie)`: the namespace with
/// this cookie is gone; drop whatever the instance keeps for it.
pub const NETNS_RELEASED_SYMBOL: &std::ffi::CStr = c"bpftune_netns_released_v2";

/// Signature of [`NETNS_RELEASED_SYMBOL`].
pub type NetnsReleasedFn = extern "C" fn(instance: InstanceHandle, netns_cookie: u64) -> RResult<(), CallError>;

impl RootModule for TunerModuleRef {
    declare_root_module_statics! {TunerModuleRef}
    const BASE_NAME: &'static str = "bpftune_tuner";
    const NAME: &'static str = "bpftune tuner";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

// `HostHandle` and `InstanceHandle` carry raw pointers and so are neither
// `Send` nor `Sync`: the daemon's side of a handle is single-threaded, and a
// tuner cannot move its `Host` to another thread by accident.
