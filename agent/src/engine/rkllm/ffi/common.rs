//! Types whose layout is identical in RKLLM 1.2.1–1.2.3 and 1.3.0 (LP64).

use std::ffi::{c_char, c_int, c_void};

use super::{off, size};

pub type LLMHandle = *mut c_void;

/// `LLMResultCallback` (1.2.1+: returns int; 1 pauses, 2 releases the output buffer on 1.3).
pub type ResultCallback = unsafe extern "C" fn(result: *mut RKLLMResult, userdata: *mut c_void, state: c_int) -> c_int;

pub const RKLLM_RUN_NORMAL: c_int = 0;
pub const RKLLM_RUN_WAITING: c_int = 1;
pub const RKLLM_RUN_FINISH: c_int = 2;
pub const RKLLM_RUN_ERROR: c_int = 3;

pub const RKLLM_INPUT_PROMPT: c_int = 0;

pub const RKLLM_INFER_GENERATE: c_int = 0;
pub const RKLLM_INFER_GET_LAST_HIDDEN_LAYER: c_int = 1;

/// `RKLLMExtendParam` — 120 bytes since 1.2.0 (`n_batch` and `use_cross_attn` since 1.2.1).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RKLLMExtendParam {
    pub base_domain_id: i32,
    pub embed_flash: i8,
    pub enabled_cpus_num: i8,
    pub enabled_cpus_mask: u32,
    pub n_batch: u8,
    pub use_cross_attn: i8,
    pub reserved: [u8; 104],
}
size!(RKLLMExtendParam, 120);
off!(RKLLMExtendParam, base_domain_id, 0);
off!(RKLLMExtendParam, embed_flash, 4);
off!(RKLLMExtendParam, enabled_cpus_num, 5);
off!(RKLLMExtendParam, enabled_cpus_mask, 8);
off!(RKLLMExtendParam, n_batch, 12);
off!(RKLLMExtendParam, use_cross_attn, 13);
off!(RKLLMExtendParam, reserved, 14);

#[repr(C)]
pub struct RKLLMLoraAdapter {
    pub lora_adapter_path: *const c_char,
    pub lora_adapter_name: *const c_char,
    pub scale: f32,
}
size!(RKLLMLoraAdapter, 24);
off!(RKLLMLoraAdapter, lora_adapter_path, 0);
off!(RKLLMLoraAdapter, lora_adapter_name, 8);
off!(RKLLMLoraAdapter, scale, 16);

#[repr(C)]
pub struct RKLLMLoraParam {
    pub lora_adapter_name: *const c_char,
}
size!(RKLLMLoraParam, 8);

#[repr(C)]
pub struct RKLLMPromptCacheParam {
    pub save_prompt_cache: c_int,
    pub prompt_cache_path: *const c_char,
}
size!(RKLLMPromptCacheParam, 16);
off!(RKLLMPromptCacheParam, save_prompt_cache, 0);
off!(RKLLMPromptCacheParam, prompt_cache_path, 8);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RKLLMEmbedInput {
    pub embed: *mut f32,
    pub n_tokens: usize,
}
size!(RKLLMEmbedInput, 16);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RKLLMTokenInput {
    pub input_ids: *mut i32,
    pub n_tokens: usize,
}
size!(RKLLMTokenInput, 16);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RKLLMResultLastHiddenLayer {
    pub hidden_states: *const f32,
    pub embd_size: c_int,
    pub num_tokens: c_int,
}
size!(RKLLMResultLastHiddenLayer, 16);
off!(RKLLMResultLastHiddenLayer, embd_size, 8);
off!(RKLLMResultLastHiddenLayer, num_tokens, 12);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RKLLMResultLogits {
    pub logits: *const f32,
    pub vocab_size: c_int,
    pub num_tokens: c_int,
}
size!(RKLLMResultLogits, 16);

/// `RKLLMPerfStat` (1.2.1+): the only source of the agent's timings and token counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RKLLMPerfStat {
    pub prefill_time_ms: f32,
    pub prefill_tokens: c_int,
    pub generate_time_ms: f32,
    pub generate_tokens: c_int,
    pub memory_usage_mb: f32,
}
size!(RKLLMPerfStat, 20);
off!(RKLLMPerfStat, prefill_tokens, 4);
off!(RKLLMPerfStat, generate_time_ms, 8);
off!(RKLLMPerfStat, generate_tokens, 12);
off!(RKLLMPerfStat, memory_usage_mb, 16);

/// `RKLLMResult` — 72 bytes in 1.2.1+ (1.2.0 had no `perf`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RKLLMResult {
    pub text: *const c_char,
    pub token_id: i32,
    pub last_hidden_layer: RKLLMResultLastHiddenLayer,
    pub logits: RKLLMResultLogits,
    pub perf: RKLLMPerfStat,
}
size!(RKLLMResult, 72);
off!(RKLLMResult, text, 0);
off!(RKLLMResult, token_id, 8);
off!(RKLLMResult, last_hidden_layer, 16);
off!(RKLLMResult, logits, 32);
off!(RKLLMResult, perf, 48);

// Functions whose signatures are the same in every supported ABI. `run` takes the ABI's own
// input and infer-param structs; the wrapper builds them and passes pointers.
pub type FnDestroy = unsafe extern "C" fn(LLMHandle) -> c_int;
pub type FnAbort = unsafe extern "C" fn(LLMHandle) -> c_int;
pub type FnIsRunning = unsafe extern "C" fn(LLMHandle) -> c_int;
pub type FnRun = unsafe extern "C" fn(LLMHandle, *mut c_void, *mut c_void, *mut c_void) -> c_int;
pub type FnLoadLora = unsafe extern "C" fn(LLMHandle, *mut RKLLMLoraAdapter) -> c_int;
pub type FnLoadPromptCache = unsafe extern "C" fn(LLMHandle, *const c_char) -> c_int;
pub type FnReleasePromptCache = unsafe extern "C" fn(LLMHandle) -> c_int;
pub type FnClearKvCache = unsafe extern "C" fn(LLMHandle, c_int, *mut c_int, *mut c_int) -> c_int;
pub type FnGetKvCacheSize = unsafe extern "C" fn(LLMHandle, *mut c_int) -> c_int;
pub type FnSetChatTemplate = unsafe extern "C" fn(LLMHandle, *const c_char, *const c_char, *const c_char) -> c_int;
pub type FnSetFunctionTools = unsafe extern "C" fn(LLMHandle, *const c_char, *const c_char, *const c_char) -> c_int;
