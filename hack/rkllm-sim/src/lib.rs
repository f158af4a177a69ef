//! ABI-exact stand-in for the RKLLM runtime `librkllmrt.so` (see README.md).
//!
//! The agent drives the vendor's closed runtime through raw FFI, and that code path is the one
//! most likely to break (struct layouts drift between minor releases, rknn-llm #509). This crate
//! builds a library with the same 15 exported symbols and the same `#[repr(C)]` layouts, so the
//! agent's *real* binding code can run in CI on machines without an NPU. Behaviour follows the
//! documented contract (`docs/rkllm-abi.md` §4, §5, §8); where the vendor is silent the sim
//! picks a deterministic, documented behaviour (README.md, "Behaviour").
//!
//! ```text
//!  C caller ──► api (extern "C", ABI-specific structs → owned Rust values)
//!                 │
//!                 ▼
//!               engine::Handle ──► template (prompt assembly) ──► tokenizer
//!                 │                 textgen (deterministic answers)
//!                 ├── domain (NPU memory per base_domain_id, process-global)
//!                 └── log (vendor-style stderr lines + RKLLM_SIM_TRACE events)
//! ```
//!
//! One ABI is exported per build: the default is 1.2.1–1.2.3, feature `abi13` selects 1.3.0.
//! Both layout modules are always compiled, so every build checks every asserted offset.

// The workspace denies unsafe code; an FFI library cannot exist without it.
#![allow(unsafe_code)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("rkllm-sim asserts the LP64 layouts of docs/rkllm-abi.md §7; 32-bit targets are not supported");

pub mod abi;
mod api;
mod domain;
mod engine;
mod env;
mod hidden;
mod log;
pub mod model;
mod prompt_cache;
mod template;
mod textgen;
pub mod tokenizer;

#[cfg(test)]
mod tests;

pub use api::*;

/// The runtime version this build claims, `X.Y.Z`. `RKLLM_SIM_VERSION` at build time overrides
/// it so tests can produce a library that claims an unsupported version.
pub const RUNTIME_VERSION: &str = match option_env!("RKLLM_SIM_VERSION") {
    Some(v) => v,
    None if cfg!(feature = "abi13") => "1.3.0",
    None => "1.2.3",
};

const VERSION_PREFIX: &str = "rkllm-runtime version: ";
const VERSION_TAG_LEN: usize = VERSION_PREFIX.len() + RUNTIME_VERSION.len();

/// `rkllm-runtime version: X.Y.Z`, NUL-terminated, as bytes in the binary.
///
/// The agent reads this literal from the `.so` file before loading it, to pick the binding
/// module without risking a call through a wrong layout. `#[used]` keeps it in the object file
/// and [`version_line`] reads it at init, which keeps it reachable from an exported symbol so the
/// linker's section GC cannot drop it from the cdylib.
#[used]
pub static VERSION_TAG: [u8; VERSION_TAG_LEN + 1] = version_tag();

const fn version_tag() -> [u8; VERSION_TAG_LEN + 1] {
    let mut out = [0u8; VERSION_TAG_LEN + 1];
    let (p, v) = (VERSION_PREFIX.as_bytes(), RUNTIME_VERSION.as_bytes());
    let mut i = 0;
    while i < p.len() {
        out[i] = p[i];
        i += 1;
    }
    let mut j = 0;
    while j < v.len() {
        out[p.len() + j] = v[j];
        j += 1;
    }
    out
}

/// The version text without the trailing NUL, read from [`VERSION_TAG`] (see there for why).
pub fn version_line() -> &'static str {
    // Built from two `&str`s, so always valid UTF-8; the fallback cannot happen.
    std::str::from_utf8(&VERSION_TAG[..VERSION_TAG_LEN]).unwrap_or(VERSION_PREFIX)
}
