//! Owning a libbpf-rs skeleton: setting the globals every bpftune BPF object
//! has, sharing the daemon's ring buffer and counters maps, and keeping the
//! skeleton together with the storage it borrows without letting a borrow of
//! that storage escape.

use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr::NonNull;

use libbpf_rs::OpenObject;

use crate::host::Host;

/// Set the globals every bpftune BPF object has and share the daemon's ring
/// buffer and counters maps with it. Call on the open skeleton, before load.
///
/// ```ignore
/// let mut open = builder.open(&mut storage)?;
/// bpftune_sdk::prepare_object!(open, host)?;
/// let skel = open.load()?;
/// ```
#[macro_export]
macro_rules! prepare_object {
    ($open:expr, $host:expr) => {{
        let host: &$crate::Host = &$host;
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
        $crate::skel::reuse_shared_maps(&mut $open.maps.ring_buffer_map, &mut $open.maps.bpftune_stats, host)
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

/// Names the skeleton type of one BPF object for every lifetime of the
/// storage it borrows, so [`OwnedSkel`] can hand out a skeleton whose
/// lifetime is tied to a borrow of the owner, never `'static`. Declare one
/// with [`crate::skel_family!`].
pub trait SkelFamily: 'static {
    /// The loaded skeleton borrowing storage for `'obj`.
    type Skel<'obj>;
}

/// Declare a [`SkelFamily`] for a generated skeleton type:
/// `bpftune_sdk::skel_family!(pub Family = skel::SysctlSkel);`
#[macro_export]
macro_rules! skel_family {
    ($vis:vis $family:ident = $($skel:ident)::+) => {
        /// The [`SkelFamily`]($crate::skel::SkelFamily) of this tuner's skeleton.
        $vis struct $family;
        impl $crate::skel::SkelFamily for $family {
            type Skel<'obj> = $($skel)::+<'obj>;
        }
    };
}

/// A loaded BPF skeleton together with the storage its object lives in, so
/// a tuner can own both in one field. The skeleton is dropped (programs
/// detached, maps closed) before the storage is freed.
///
/// Access is only ever through a borrow of the owner: [`OwnedSkel::get`]
/// returns a skeleton whose lifetime is that borrow's, and
/// [`OwnedSkel::with_mut`] runs a closure that must work for any lifetime,
/// so nothing borrowed from the storage can be kept past it.
pub struct OwnedSkel<F: SkelFamily> {
    /// Really borrows `storage`; the `'static` is never shown to callers.
    skel: ManuallyDrop<F::Skel<'static>>,
    storage: NonNull<MaybeUninit<OpenObject>>,
    _family: PhantomData<F>,
}

impl<F: SkelFamily> OwnedSkel<F> {
    /// Open and load a skeleton with `f`, which gets the storage to open it
    /// in and returns the loaded skeleton borrowing it. `f` must work for
    /// any lifetime of that borrow, so it cannot keep it.
    pub fn new<E>(
        f: impl for<'obj> FnOnce(&'obj mut MaybeUninit<OpenObject>) -> Result<F::Skel<'obj>, E>,
    ) -> Result<Self, E> {
        let raw = Box::into_raw(Box::new(MaybeUninit::uninit()));
        // SAFETY: Box::into_raw never returns null.
        let storage = unsafe { NonNull::new_unchecked(raw) };
        // SAFETY: `raw` is a fresh heap allocation that only this value owns
        // and frees, after the skeleton borrowing it has been dropped (see
        // Drop); until then it stays valid and is reached only through the
        // skeleton.
        match f(unsafe { &mut *raw }) {
            Ok(skel) => {
                let skel = ManuallyDrop::new(skel);
                // SAFETY: only the lifetime changes (same type otherwise);
                // the storage outlives the skeleton by construction, and the
                // 'static is never handed out (see `get` and `with_mut`).
                let skel = unsafe { std::ptr::read(std::ptr::from_ref(&*skel).cast::<F::Skel<'static>>()) };
                Ok(Self { skel: ManuallyDrop::new(skel), storage, _family: PhantomData })
            }
            Err(e) => {
                // SAFETY: whatever borrowed the storage inside `f` was
                // dropped when `f` returned its error.
                drop(unsafe { Box::from_raw(raw) });
                Err(e)
            }
        }
    }

    /// The skeleton, borrowed for as long as `self` is.
    pub fn get(&self) -> &F::Skel<'_> {
        let skel: &F::Skel<'static> = &self.skel;
        // SAFETY: shortening the skeleton's lifetime to the borrow of self:
        // the storage lives as long as self, and through a shared reference
        // nothing shorter-lived can be stored into the skeleton (generated
        // skeletons have no interior mutability over their borrows).
        unsafe { &*std::ptr::from_ref(skel).cast::<F::Skel<'_>>() }
    }

    /// Run `f` on the skeleton mutably (attach, detach, write `.bss`). `f`
    /// must work for any lifetime of the skeleton, so it can neither keep a
    /// borrow of the storage nor store a shorter-lived one in it.
    pub fn with_mut<R>(&mut self, f: impl for<'obj> FnOnce(&mut F::Skel<'obj>) -> R) -> R {
        let skel: &mut F::Skel<'static> = &mut self.skel;
        // SAFETY: the closure is generic over the lifetime, so it cannot let
        // the borrow escape or put anything of another lifetime in; the
        // storage outlives the call.
        f(unsafe { &mut *std::ptr::from_mut(skel).cast::<F::Skel<'_>>() })
    }
}

impl<F: SkelFamily> Drop for OwnedSkel<F> {
    fn drop(&mut self) {
        // SAFETY: the skeleton is dropped exactly once, here, before the
        // storage it borrows.
        unsafe { ManuallyDrop::drop(&mut self.skel) };
        // SAFETY: the storage came from Box::into_raw in `new` and nothing
        // borrows it any more.
        drop(unsafe { Box::from_raw(self.storage.as_ptr()) });
    }
}
