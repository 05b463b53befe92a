//! Reading a BPF value (a ring-buffer record, a map value) out of bytes.
//! Only types declared [`Plain`] can be read this way: a `bool` or an enum
//! read from arbitrary bytes would be undefined behaviour, so each type is
//! vouched for once, where it is declared plain, instead of at every read.

/// A type every bit pattern of its size is a valid value of (integers,
/// arrays and `#[repr(C)]` structs of them: the types libbpf-cargo generates
/// for BPF structs without `bool` or enum fields).
///
/// # Safety
/// Implement only for `Copy` types with no padding-sensitive invariants,
/// no references, no `bool`, `char` or enum fields: any byte content of
/// `size_of::<T>()` bytes must be a valid `T`.
pub unsafe trait Plain: Copy + 'static {}

/// Declare generated BPF types [`Plain`], with the reason in one place:
/// `bpftune_sdk::plain!(skel::types::my_event, skel::types::my_key);`
/// Each type must meet [`Plain`]'s contract (integers and arrays only).
#[macro_export]
macro_rules! plain {
    ($($ty:ty),+ $(,)?) => {
        $(
            // SAFETY: the caller of `plain!` vouches that this generated BPF
            // type is made of integers and arrays of them only.
            unsafe impl $crate::plain::Plain for $ty {}
        )+
    };
}

/// The `T` at the start of `bytes`, or `None` if there are too few bytes.
pub fn read_plain<T: Plain>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked, read_unaligned has no alignment
    // requirement, and `T: Plain` means any bytes are a valid `T`.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

macro_rules! plain_primitives {
    ($($t:ty),+) => { $(
        // SAFETY: every bit pattern is a valid integer.
        unsafe impl Plain for $t {}
    )+ };
}
plain_primitives!(u8, u16, u32, u64, i8, i16, i32, i64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_integers_and_refuses_short_input() {
        assert_eq!(read_plain::<u32>(&[1, 0, 0, 0, 9]), Some(1));
        assert_eq!(read_plain::<u64>(&[1, 0, 0]), None);
    }
}
