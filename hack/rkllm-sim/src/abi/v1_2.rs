//! RKLLM 1.2.1–1.2.3 layouts: `rkllm_init(handle, param*, LLMResultCallback)` (function pointer
//! by value), multimodal image tags inside `RKLLMParam`, no per-run sampling.

use std::ffi::{c_char, c_int};

use super::{RKLLMEmbedInput, RKLLMExtendParam, RKLLMLoraParam, RKLLMPromptCacheParam, RKLLMTokenInput, layout};

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMParam {
    pub model_path: *const c_char,
    pub max_context_len: i32,
    pub max_new_tokens: i32,
    pub top_k: i32,
    pub n_keep: i32,
    pub top_p: f32,
    pub temperature: f32,
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub mirostat: i32,
    pub mirostat_tau: f32,
    pub mirostat_eta: f32,
    pub skip_special_token: bool,
    pub is_async: bool,
    pub img_start: *const c_char,
    pub img_end: *const c_char,
    pub img_content: *const c_char,
    pub extend_param: RKLLMExtendParam,
}
layout!(RKLLMParam, size 208; model_path @ 0; max_context_len @ 8; max_new_tokens @ 12; top_k @ 16;
    n_keep @ 20; top_p @ 24; temperature @ 28; repeat_penalty @ 32; frequency_penalty @ 36;
    presence_penalty @ 40; mirostat @ 44; mirostat_tau @ 48; mirostat_eta @ 52; skip_special_token @ 56;
    is_async @ 57; img_start @ 64; img_end @ 72; img_content @ 80; extend_param @ 88);

/// `RKLLMMultiModelInput` (renamed `RKLLMMultiModalInput` in 1.2.3, same layout).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMMultiModalInput {
    pub prompt: *mut c_char,
    pub image_embed: *mut f32,
    pub n_image_tokens: usize,
    pub n_image: usize,
    pub image_width: usize,
    pub image_height: usize,
}
layout!(RKLLMMultiModalInput, size 48; prompt @ 0; image_embed @ 8; n_image_tokens @ 16; n_image @ 24;
    image_width @ 32; image_height @ 40);

/// The anonymous union of `RKLLMInput`; which member is valid depends on `input_type`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union RKLLMInputUnion {
    pub prompt_input: *const c_char,
    pub embed_input: RKLLMEmbedInput,
    pub token_input: RKLLMTokenInput,
    pub multimodal_input: RKLLMMultiModalInput,
}
layout!(RKLLMInputUnion, size 48);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RKLLMInput {
    pub role: *const c_char,
    pub enable_thinking: bool,
    pub input_type: c_int,
    pub input: RKLLMInputUnion,
}
layout!(RKLLMInput, size 64; role @ 0; enable_thinking @ 8; input_type @ 12; input @ 16);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMInferParam {
    pub mode: c_int,
    pub lora_params: *mut RKLLMLoraParam,
    pub prompt_cache_params: *mut RKLLMPromptCacheParam,
    pub keep_history: c_int,
}
layout!(RKLLMInferParam, size 32; mode @ 0; lora_params @ 8; prompt_cache_params @ 16; keep_history @ 24);
