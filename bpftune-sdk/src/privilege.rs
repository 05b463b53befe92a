//! Least privilege after start-up. Once its tuners are loaded and its
//! cgroup, sockets and ring buffer are set up, the daemon keeps only the
//! capabilities a later step may need in its permitted set ([`RUNTIME`]),
//! with nothing effective; a step that needs some raises exactly those for
//! its duration with a [`Raised`] guard, on its own thread (capabilities
//! are per thread, and threads started while a guard is held inherit it).
//!
//! Everything here is best effort when the daemon was not started with the
//! capabilities (an unprivileged test, a container without them): the
//! guard then raises what it can and the step fails as it would have.

use caps::{CapSet, Capability, CapsHashSet};

/// What the daemon keeps after start-up, and why (the systemd unit's
/// `CapabilityBoundingSet` is the same list):
/// * `CAP_BPF`, `CAP_PERFMON`: load a hot-plugged tuner's BPF, reload a
///   tuner on a strategy switch (kernels >= 5.8).
/// * `CAP_SYS_ADMIN`: `setns(2)` into other network namespaces; `bpf(2)` on
///   kernels before 5.8; cgroup program attach on a hot-plugged tuner.
/// * `CAP_NET_ADMIN`: netlink changes (neighbour tables), sockops and
///   cgroup/sysctl attach for a hot-plugged tuner.
/// * `CAP_SYS_PTRACE`: open `/proc/<pid>/ns/net` of processes owned by
///   other users (rootless containers) to find their namespaces.
pub const RUNTIME: &[Capability] = &[
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_SYS_PTRACE,
];

/// What a bpf(2) call on an existing map or program needs on kernels before
/// 6.5 where unprivileged BPF is disabled (every command is checked there).
pub const BPF_SYSCALL: &[Capability] = &[Capability::CAP_BPF, Capability::CAP_SYS_ADMIN];

/// What entering another network namespace needs.
pub const NETNS_ENTRY: &[Capability] = &[Capability::CAP_SYS_ADMIN, Capability::CAP_SYS_PTRACE];

/// The capabilities this kernel knows, of `wanted`.
fn supported(wanted: &[Capability]) -> CapsHashSet {
    let known = caps::runtime::thread_all_supported();
    wanted.iter().copied().filter(|c| known.contains(c)).collect()
}

/// Reduce this thread (the daemon's main thread, with no other thread
/// alive) to [`RUNTIME`]: bounding and permitted sets to those of them it
/// has, nothing effective, inheritable or ambient. Returns the permitted
/// set kept; an error after the permitted and effective sets are reduced
/// if the bounding set could not be (no CAP_SETPCAP).
pub fn drop_to_runtime() -> Result<CapsHashSet, caps::errors::CapsError> {
    let keep: CapsHashSet = supported(RUNTIME)
        .into_iter()
        .filter(|c| caps::has_cap(None, CapSet::Permitted, *c).unwrap_or(false))
        .collect();
    // The bounding set first, while CAP_SETPCAP is still effective: no
    // exec can bring anything else back. Only what is there is dropped, so
    // under a unit whose bounding set is already RUNTIME (and so lacks
    // CAP_SETPCAP) nothing needs dropping; a failure here does not stop
    // the rest.
    let bounding = caps::read(None, CapSet::Bounding).unwrap_or_default();
    let mut bounding_error = None;
    for c in bounding.into_iter().filter(|c| !keep.contains(c)) {
        if let Err(e) = caps::drop(None, CapSet::Bounding, c) {
            bounding_error = Some(e);
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    caps::clear(None, CapSet::Effective)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    match bounding_error {
        Some(e) => Err(e),
        None => Ok(keep),
    }
}

/// Capabilities raised into this thread's effective set; the effective set
/// is put back as it was on drop.
#[must_use = "the capabilities are dropped again when the guard goes"]
pub struct Raised {
    before: Option<CapsHashSet>,
}

impl Raised {
    /// Raise each of `wanted` that this thread has permitted.
    pub fn raise(wanted: &[Capability]) -> Self {
        let before = caps::read(None, CapSet::Effective).ok();
        let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
        let mut want = before.clone().unwrap_or_default();
        want.extend(supported(wanted).into_iter().filter(|c| permitted.contains(c)));
        if Some(&want) != before.as_ref() {
            let _ = caps::set(None, CapSet::Effective, &want);
        }
        Self { before }
    }

    /// Raise everything the daemon keeps ([`RUNTIME`]): around calls into
    /// a tuner, which may load BPF, enter namespaces or send netlink.
    pub fn runtime() -> Self {
        Self::raise(RUNTIME)
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        if let Some(before) = &self.before {
            if caps::read(None, CapSet::Effective).ok().as_ref() != Some(before) {
                let _ = caps::set(None, CapSet::Effective, before);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_restores_the_effective_set() {
        // Works as root and unprivileged alike: it never raises beyond the
        // permitted set, and restores what was there.
        let before = caps::read(None, CapSet::Effective).expect("read");
        {
            let _g = Raised::raise(&[Capability::CAP_SYS_ADMIN]);
        }
        assert_eq!(caps::read(None, CapSet::Effective).expect("read"), before);
        assert!(RUNTIME.contains(&Capability::CAP_SYS_ADMIN));
        assert!(NETNS_ENTRY.iter().all(|c| RUNTIME.contains(c)));
    }
}
