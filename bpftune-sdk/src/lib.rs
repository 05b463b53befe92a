//! bpftune-sdk: what a tuner author uses, and nothing of the daemon.
//!
//! * [`Tuner`] and [`export_tuner!`]: implement the trait, export the type;
//!   the `.so` then speaks the stable interface of [`abi`] (the
//!   `bpftune-abi` crate), with panics caught at every entry point.
//! * [`Host`]: the daemon's services (log, sysctl read/write, accounting).
//! * [`tunables!`], [`scenarios!`]: a tuner's tables; [`Event`]: what its
//!   BPF sends; [`OwnedSkel`] and [`prepare_object!`]: owning its BPF.
//! * [`learning`], [`corr`], [`protomem`], [`procfs`], [`kernel`],
//!   [`netlink`], [`NetnsAdmission`]: policy and system building blocks.

pub use bpftune_abi as abi;

pub mod corr;
pub mod event;
pub mod export;
pub mod host;
pub mod kernel;
pub mod learning;
pub mod messages;
pub mod netlink;
pub mod netns;
pub mod netns_admission;
pub mod per_netns;
pub mod plain;
pub mod privilege;
pub mod procfs;
pub mod protomem;
pub mod sample;
pub mod skel;
pub mod tables;
pub mod testing;
pub mod tuner;

include_skeleton!(
    /// The SDK's types-only BPF object: the source of the Rust event and
    /// sample types.
    pub(crate) mod types_skel = "types"
);

/// Re-exports the macros need; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable;
    pub use abi_stable::std_types::RStr;
}

pub use abi::{FeatureState, LogLevel, SupportLevel, TunableFlags, TunableKind, WriteOutcome};
pub use event::{Event, NETNS_UNKNOWN, SysctlUpdate, SysctlWrite};
pub use host::Host;
pub use learning::LearningRate;
pub use messages::{change_reason, scenario_line};
pub use netns_admission::{NetnsAdmission, UnknownNetns};
pub use per_netns::{NetnsState, PerNetns};
pub use plain::{Plain, read_plain};
pub use sample::{SampleCount, read_samples};
pub use skel::{OwnedSkel, SkelFamily};
pub use tuner::Tuner;
