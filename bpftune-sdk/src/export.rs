//! The entry points [`crate::export_tuner!`] exports for a [`Tuner`]: each
//! catches panics and turns errors into typed [`CallError`]s, so nothing
//! unwinds across the FFI boundary and the daemon never parses messages.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};

use crate::abi::{
    BPFTUNE_ABI_VERSION, CallError, HostContext, InstanceHandle, LogLevel, TunerDescriptor, TunerModule, TunerModuleRef,
};
use crate::event::Event;
use crate::host::Host;
use crate::tuner::Tuner;

thread_local! {
    /// Where this `.so`'s own libbpf copy and panic hook send their messages:
    /// the host of the tuner running on this thread (the daemon's main
    /// thread; `Host` may not leave it).
    static LOG_SINK: RefCell<Option<Host>> = const { RefCell::new(None) };
}

fn log_to_host(level: LogLevel, msg: &str) -> bool {
    LOG_SINK.with(|sink| match sink.try_borrow() {
        Ok(sink) => sink.as_ref().map(|host| host.log(level, msg)).is_some(),
        Err(_) => false,
    })
}

fn forward_libbpf(_level: libbpf_rs::PrintLevel, msg: String) {
    log_to_host(LogLevel::Debug, &format!("libbpf: {}", msg.trim_end()));
}

/// Route this `.so`'s libbpf output to the daemon's logger (debug only),
/// and its panic messages to the daemon's log instead of raw stderr (each
/// `.so` has its own copy of std, so its own panic hook). A panic on a
/// thread of the tuner's own still goes to stderr.
pub fn install_libbpf_logger(host: Host) {
    LOG_SINK.with(|sink| {
        if let Ok(mut sink) = sink.try_borrow_mut() {
            *sink = Some(host);
        }
    });
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            if !log_to_host(LogLevel::Err, &format!("tuner panic: {info}")) {
                eprintln!("tuner panic: {info}");
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
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.to_string()
    } else {
        "(no message)".to_string()
    }
}

/// Run `f`, turning its error into [`ErrorKind::Failed`](crate::abi::ErrorKind)
/// and a panic into [`ErrorKind::Panicked`](crate::abi::ErrorKind).
pub fn guard<R>(f: impl FnOnce() -> Result<R, String>) -> RResult<R, CallError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(CallError::failed(e)),
        Err(payload) => RResult::RErr(CallError::panicked(panic_message(payload))),
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

extern "C" fn init<T: Tuner>(ctx: &HostContext) -> RResult<InstanceHandle, CallError> {
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

extern "C" fn event_handler<T: Tuner>(handle: InstanceHandle, bytes: RSlice<'_, u8>) -> RResult<(), CallError> {
    guard(|| {
        let event =
            Event::from_bytes(bytes.as_slice()).ok_or_else(|| format!("unexpected size event {}", bytes.len()))?;
        // SAFETY: the daemon only passes handles it got from our init.
        let inst = unsafe { instance::<T>(handle) }?;
        inst.tuner.event(&event)
    })
}

extern "C" fn fini<T: Tuner>(handle: InstanceHandle) -> RResult<(), CallError> {
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

extern "C" fn summarize<T: Tuner>(handle: InstanceHandle) -> RResult<RVec<RString>, CallError> {
    guard(|| {
        // SAFETY: the daemon only passes handles it got from our init.
        let inst = unsafe { instance::<T>(handle) }?;
        Ok(inst.tuner.summarize().into_iter().map(RString::from).collect())
    })
}

extern "C" fn tick<T: Tuner>(handle: InstanceHandle) -> RResult<(), CallError> {
    guard(|| {
        // SAFETY: the daemon only passes handles it got from our init.
        let inst = unsafe { instance::<T>(handle) }?;
        inst.tuner.tick()
    })
}

/// [`crate::abi::NETNS_RELEASED_SYMBOL`] for `T`; exported by [`export_tuner!`].
#[doc(hidden)]
pub extern "C" fn netns_released<T: Tuner>(handle: InstanceHandle, netns_cookie: u64) -> RResult<(), CallError> {
    guard(|| {
        // SAFETY: the daemon only passes handles it got from our init.
        let inst = unsafe { instance::<T>(handle) }?;
        crate::per_netns::release_all(&mut inst.tuner.netns_state(), netns_cookie);
        inst.tuner.netns_released(netns_cookie);
        Ok(())
    })
}

extern "C" fn evaluate<T: Tuner>(handle: InstanceHandle, strategy: u32) -> RResult<f64, CallError> {
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
                $crate::export::module_for::<$tuner>()
            }

            /// The optional entry point `abi::NETNS_RELEASED_SYMBOL`.
            #[unsafe(no_mangle)]
            pub extern "C" fn bpftune_netns_released_v2(
                instance: $crate::abi::InstanceHandle,
                netns_cookie: u64,
            ) -> abi_stable::std_types::RResult<(), $crate::abi::CallError> {
                $crate::export::netns_released::<$tuner>(instance, netns_cookie)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_module_symbol_matches_abi_stable() {
        assert_eq!(ROOT_MODULE_SYMBOL, abi_stable::library::ROOT_MODULE_LOADER_NAME);
    }

    #[test]
    fn guard_keeps_errors_and_panics_apart() {
        let r: RResult<(), CallError> = guard(|| Err("no".to_string()));
        assert_eq!(r.into_result(), Err(CallError::failed("no")));
    }

    #[test]
    fn guard_turns_panic_into_error() {
        let r: RResult<(), CallError> = guard(|| panic!("boom"));
        match r {
            RResult::RErr(e) => {
                assert!(e.is_panic());
                assert!(e.message.as_str().contains("boom"));
            }
            RResult::ROk(()) => panic!("expected an error"),
        }
    }
}
