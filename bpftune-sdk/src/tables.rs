//! Macros that declare a tuner's tunables and scenarios as one enum plus one
//! table each, so an id is always the enum's discriminant and the table's
//! index: they cannot drift apart.

/// Declare a tunable enum and its table.
///
/// ```
/// bpftune_sdk::tunables! {
///     pub enum Tunable {
///         TcpRmem = ("net.ipv4.tcp_rmem", Sysctl, NAMESPACED, 3),
///         TcpMem = ("net.ipv4.tcp_mem", Sysctl, NONE, 3),
///     }
/// }
/// assert_eq!(Tunable::TcpMem as u32, 1);
/// assert_eq!(Tunable::TABLE[1].name.as_str(), "net.ipv4.tcp_mem");
/// ```
#[macro_export]
macro_rules! tunables {
    ($vis:vis enum $name:ident {
        $( $variant:ident = ($sysctl:expr, $kind:ident, $($flag:ident)|+, $n:expr) ),* $(,)?
    }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        $vis enum $name { $($variant),* }

        #[allow(dead_code)]
        impl $name {
            /// The table the daemon sees, in discriminant order.
            pub const TABLE: &'static [$crate::abi::TunableDesc] = &[
                $( $crate::abi::TunableDesc {
                    name: $crate::__private::RStr::from_str($sysctl),
                    kind: $crate::abi::TunableKind::$kind,
                    flags: $crate::abi::TunableFlags::NONE
                        $( .union($crate::abi::TunableFlags::$flag) )+,
                    num_values: $n,
                } ),*
            ];
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn from_id(id: u32) -> Option<Self> {
                Self::ALL.get(id as usize).copied()
            }
            pub fn name(self) -> &'static str {
                Self::TABLE[self as usize].name.as_str()
            }
        }

        impl From<$name> for u32 {
            fn from(v: $name) -> u32 {
                v as u32
            }
        }
    };
}

/// Declare a scenario enum and its table of (name, description).
#[macro_export]
macro_rules! scenarios {
    ($vis:vis enum $name:ident {
        $( $variant:ident = ($title:expr, $desc:expr) ),* $(,)?
    }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        $vis enum $name { $($variant),* }

        #[allow(dead_code)]
        impl $name {
            pub const TABLE: &'static [$crate::abi::ScenarioDesc] = &[
                $( $crate::abi::ScenarioDesc {
                    name: $crate::__private::RStr::from_str($title),
                    description: $crate::__private::RStr::from_str($desc),
                } ),*
            ];
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn from_id(id: u32) -> Option<Self> {
                Self::ALL.get(id as usize).copied()
            }
            pub fn name(self) -> &'static str {
                Self::TABLE[self as usize].name.as_str()
            }
        }

        impl From<$name> for u32 {
            fn from(v: $name) -> u32 {
                v as u32
            }
        }
    };
}

/// Include the libbpf-rs skeleton a `build.rs` generated for `$name` (via
/// `bpf_common::build_skeleton`) as module `$module`, with the lints that
/// generated code cannot satisfy switched off.
///
/// ```ignore
/// bpftune_sdk::include_skeleton!(mod skel = "sysctl");
/// ```
#[macro_export]
macro_rules! include_skeleton {
    ($(#[$meta:meta])* $vis:vis mod $module:ident = $name:literal) => {
        $(#[$meta])*
        #[allow(
            clippy::all,
            clippy::pedantic,
            clippy::restriction,
            non_camel_case_types,
            non_snake_case,
            dead_code,
            unused_imports,
            missing_docs,
            unsafe_op_in_unsafe_fn
        )]
        $vis mod $module {
            include!(concat!(env!("OUT_DIR"), "/", $name, ".skel.rs"));
        }
    };
}

/// Check, when the tuner is compiled, that a C enum of its BPF object and
/// a Rust table give every id the same number, so the two can never drift:
/// the build fails instead. Anchor the C enum in the object's BTF (a global
/// of that type, `enum my_tunable my_tunable_anchor = 0;`) so libbpf-cargo
/// generates it into the skeleton, then name each pair once:
///
/// ```ignore
/// bpftune_sdk::same_ids!(skel::types::udp_buffer_tunable => Tunable {
///     UDP_BUFFER_UDP_MEM = UdpMem,
///     UDP_BUFFER_RMEM_MAX = RmemMax,
/// });
/// ```
///
/// Name every id the BPF side uses; a Rust id the BPF never sends (one
/// only userspace decides on) needs no C twin.
#[macro_export]
macro_rules! same_ids {
    ($($c_enum:ident)::+ => $rust:ident { $($c:ident = $r:ident),+ $(,)? }) => {
        const _: () = {
            type CEnum = $($c_enum)::+;
            $(
                assert!(
                    CEnum::$c.0 as u64 == $rust::$r as u64,
                    concat!("C ", stringify!($c), " and Rust ", stringify!($rust), "::", stringify!($r), " differ")
                );
            )+
        };
    };
}

#[cfg(test)]
mod tests {
    crate::tunables! {
        enum T {
            A = ("net.ipv4.tcp_wmem", Sysctl, NAMESPACED, 3),
            B = ("net.ipv4.tcp_syncookies", Sysctl, NAMESPACED | OPTIONAL, 1),
            C = ("net.persock.cc", Other, NONE, 0),
        }
    }
    crate::scenarios! {
        enum S {
            Up = ("need to increase", "because"),
            Down = ("need to decrease", "because not"),
        }
    }

    #[test]
    fn ids_are_table_positions() {
        for (i, t) in T::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i);
            assert_eq!(T::from_id(i as u32), Some(*t));
        }
        assert_eq!(T::B.name(), "net.ipv4.tcp_syncookies");
        assert!(T::TABLE[1].flags.contains(crate::abi::TunableFlags::OPTIONAL));
        assert!(T::TABLE[1].flags.contains(crate::abi::TunableFlags::NAMESPACED));
        assert_eq!(T::TABLE[1].kind, crate::abi::TunableKind::Sysctl);
        assert_eq!(T::TABLE[2].kind, crate::abi::TunableKind::Other);
        assert_eq!(S::Down.name(), "need to decrease");
        assert_eq!(S::from_id(2), None);
        assert_eq!(u32::from(S::Down), 1);
    }
}
