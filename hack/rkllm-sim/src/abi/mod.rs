//! `#[repr(C)]` types of the RKLLM C API (`docs/rkllm-abi.md` §7, LP64).
//!
//! A wrong offset here means the agent's binding and the sim agree with each other but not with
//! the vendor library, which is exactly the failure (a segfault on the board) the sim exists to
//! prevent. So every struct carries compile-time size and offset asserts copied from the
//! reference tables, not derived from the Rust definitions. Types identical in 1.2.1–1.3.0 live
//! here; [`v1_2`] and [`v1_3`] hold the ones that differ, and [`active`] is the one this build
//! exports (feature `abi13`).

use std::ffi::{c_char, c_int, c_void};

pub mod v1_2;
pub mod v1_3;

#[cfg(not(feature = "abi13"))]
pub use v1_2 as active;
#[cfg(feature = "abi13")]
pub use v1_3 as active;

/// Compile-time layout check: `layout!(T, size N; field @ off, ...)`.
macro_rules! layout {
    ($t:ty, size $n:expr $(; $($f:ident).+ @ $o:expr)* $(;)?) => {
        const _: () = assert!(::std::mem::size_of::<$t>() == $n);
        $(const _: () = assert!(::std::mem::offset_of!($t, $($f).+) == $o);)*
    };
}
pub(crate) use layout;

/// `LLMHandle`: opaque to the caller; the sim hands out a unique heap address.
pub type LLMHandle = *mut c_void;

/// `LLMResultCallback` (1.2.1+ returns int: 0 continue, 1 pause, 1.3: 2 release the buffer).
pub type LLMResultCallback =
    unsafe extern "C" fn(result: *mut RKLLMResult, userdata: *mut c_void, state: c_int) -> c_int;

/// `LLMCallState`.
pub const RKLLM_RUN_NORMAL: c_int = 0;
pub const RKLLM_RUN_WAITING: c_int = 1;
pub const RKLLM_RUN_FINISH: c_int = 2;
pub const RKLLM_RUN_ERROR: c_int = 3;

/// `RKLLMInputType`.
pub const RKLLM_INPUT_PROMPT: c_int = 0;
pub const RKLLM_INPUT_TOKEN: c_int = 1;
pub const RKLLM_INPUT_EMBED: c_int = 2;
pub const RKLLM_INPUT_MULTIMODAL: c_int = 3;

/// `RKLLMInferMode`.
pub const RKLLM_INFER_GENERATE: c_int = 0;
pub const RKLLM_INFER_GET_LAST_HIDDEN_LAYER: c_int = 1;
pub const RKLLM_INFER_GET_LOGITS: c_int = 2;

/// `RKLLMExtendParam`, 120 bytes since 1.2.0 (`n_batch`, `use_cross_attn` since 1.2.1).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMExtendParam {
    pub base_domain_id: i32,
    pub embed_flash: i8,
    pub enabled_cpus_num: i8,
    pub enabled_cpus_mask: u32,
    pub n_batch: u8,
    pub use_cross_attn: i8,
    pub reserved: [u8; 104],
}
layout!(RKLLMExtendParam, size 120; base_domain_id @ 0; embed_flash @ 4; enabled_cpus_num @ 5;
    enabled_cpus_mask @ 8; n_batch @ 12; use_cross_attn @ 13; reserved @ 14);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMLoraAdapter {
    pub lora_adapter_path: *const c_char,
    pub lora_adapter_name: *const c_char,
    pub scale: f32,
}
layout!(RKLLMLoraAdapter, size 24; lora_adapter_path @ 0; lora_adapter_name @ 8; scale @ 16);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMLoraParam {
    pub lora_adapter_name: *const c_char,
}
layout!(RKLLMLoraParam, size 8; lora_adapter_name @ 0);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMEmbedInput {
    pub embed: *mut f32,
    pub n_tokens: usize,
}
layout!(RKLLMEmbedInput, size 16; embed @ 0; n_tokens @ 8);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMTokenInput {
    pub input_ids: *mut i32,
    pub n_tokens: usize,
}
layout!(RKLLMTokenInput, size 16; input_ids @ 0; n_tokens @ 8);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMPromptCacheParam {
    pub save_prompt_cache: c_int,
    pub prompt_cache_path: *const c_char,
}
layout!(RKLLMPromptCacheParam, size 16; save_prompt_cache @ 0; prompt_cache_path @ 8);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMCrossAttnParam {
    pub encoder_k_cache: *mut f32,
    pub encoder_v_cache: *mut f32,
    pub encoder_mask: *mut f32,
    pub encoder_pos: *mut i32,
    pub num_tokens: c_int,
}
layout!(RKLLMCrossAttnParam, size 40; encoder_k_cache @ 0; encoder_v_cache @ 8; encoder_mask @ 16;
    encoder_pos @ 24; num_tokens @ 32);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMResultLastHiddenLayer {
    pub hidden_states: *const f32,
    pub embd_size: c_int,
    pub num_tokens: c_int,
}
layout!(RKLLMResultLastHiddenLayer, size 16; hidden_states @ 0; embd_size @ 8; num_tokens @ 12);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMResultLogits {
    pub logits: *const f32,
    pub vocab_size: c_int,
    pub num_tokens: c_int,
}
layout!(RKLLMResultLogits, size 16; logits @ 0; vocab_size @ 8; num_tokens @ 12);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RKLLMPerfStat {
    pub prefill_time_ms: f32,
    pub prefill_tokens: c_int,
    pub generate_time_ms: f32,
    pub generate_tokens: c_int,
    pub memory_usage_mb: f32,
}
layout!(RKLLMPerfStat, size 20; prefill_time_ms @ 0; prefill_tokens @ 4; generate_time_ms @ 8;
    generate_tokens @ 12; memory_usage_mb @ 16);

/// One result; with `n_batch > 1` the callback receives an array of `n_batch` of these.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMResult {
    pub text: *const c_char,
    pub token_id: i32,
    pub last_hidden_layer: RKLLMResultLastHiddenLayer,
    pub logits: RKLLMResultLogits,
    pub perf: RKLLMPerfStat,
}
layout!(RKLLMResult, size 72; text @ 0; token_id @ 8; last_hidden_layer @ 16; logits @ 32; perf @ 48);

impl RKLLMResult {
    /// A result with no text, no buffers and `token_id` -1 (the batch "finished" marker).
    pub const EMPTY: Self = Self {
        text: std::ptr::null(),
        token_id: -1,
        last_hidden_layer: RKLLMResultLastHiddenLayer { hidden_states: std::ptr::null(), embd_size: 0, num_tokens: 0 },
        logits: RKLLMResultLogits { logits: std::ptr::null(), vocab_size: 0, num_tokens: 0 },
        perf: RKLLMPerfStat {
            prefill_time_ms: 0.0,
            prefill_tokens: 0,
            generate_time_ms: 0.0,
            generate_tokens: 0,
            memory_usage_mb: 0.0,
        },
    };
}
