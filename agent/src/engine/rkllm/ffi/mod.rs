//! Raw bindings to `librkllmrt.so`, one module per runtime ABI (docs/rkllm-abi.md §7).
//!
//! The runtime's structs change size between minor versions and a stale layout segfaults
//! (rknn-llm #509), so every struct carries compile-time size and offset asserts taken from the
//! LP64 tables of docs/rkllm-abi.md §7. Types shared by 1.2.1–1.3.0 live in [`common`]; [`v1_2`] and
//! [`v1_3`] hold what differs. Nothing here is called directly by the engine: [`super::rt`]
//! wraps it.
//!
//! `hack/rkllm-sim` declares the same structs again on purpose, written separately from the same
//! tables: were they shared, a wrong offset would be wrong on both sides and every test would
//! still pass. Two transcriptions that must agree at runtime (and each against the documented
//! sizes) catch it. The 1.2 and 1.3 modules repeat fields for the same reason the
//! vendor's headers do: they are different layouts.

pub mod common;
pub mod v1_2;
pub mod v1_3;

/// Asserts a field offset at compile time.
macro_rules! off {
    ($t:ty, $f:ident, $n:expr) => {
        const _: () = assert!(::std::mem::offset_of!($t, $f) == $n);
    };
}
/// Asserts a struct size at compile time.
macro_rules! size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(::std::mem::size_of::<$t>() == $n);
    };
}
pub(crate) use off;
pub(crate) use size;
