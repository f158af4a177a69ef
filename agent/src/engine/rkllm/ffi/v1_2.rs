//! RKLLM 1.2.1–1.2.3: `rkllm_init` takes the result callback by value; sampling and
//! `max_new_tokens` exist only in `RKLLMParam` (fixed at init).

use std::ffi::{c_char, c_int};

use super::{
    common::{
        LLMHandle, RKLLMEmbedInput, RKLLMExtendParam, RKLLMLoraParam, RKLLMPromptCacheParam, RKLLMTokenInput,
        ResultCallback,
    },
    off, size,
};

#[repr(C)]
#[derive(Clone, Copy)]
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
size!(RKLLMParam, 208);
off!(RKLLMParam, model_path, 0);
off!(RKLLMParam, max_context_len, 8);
off!(RKLLMParam, max_new_tokens, 12);
off!(RKLLMParam, top_k, 16);
off!(RKLLMParam, n_keep, 20);
off!(RKLLMParam, top_p, 24);
off!(RKLLMParam, temperature, 28);
off!(RKLLMParam, repeat_penalty, 32);
off!(RKLLMParam, frequency_penalty, 36);
off!(RKLLMParam, presence_penalty, 40);
off!(RKLLMParam, mirostat, 44);
off!(RKLLMParam, mirostat_tau, 48);
off!(RKLLMParam, mirostat_eta, 52);
off!(RKLLMParam, skip_special_token, 56);
off!(RKLLMParam, is_async, 57);
off!(RKLLMParam, img_start, 64);
off!(RKLLMParam, img_end, 72);
off!(RKLLMParam, img_content, 80);
off!(RKLLMParam, extend_param, 88);

/// `RKLLMMultiModelInput` (1.2.1–1.2.3, renamed MultiModal in 1.2.3).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RKLLMMultiModalInput {
    pub prompt: *mut c_char,
    pub image_embed: *mut f32,
    pub n_image_tokens: usize,
    pub n_image: usize,
    pub image_width: usize,
    pub image_height: usize,
}
size!(RKLLMMultiModalInput, 48);
off!(RKLLMMultiModalInput, image_width, 32);

#[repr(C)]
#[derive(Clone, Copy)]
pub union InputUnion {
    pub prompt_input: *const c_char,
    pub embed_input: RKLLMEmbedInput,
    pub token_input: RKLLMTokenInput,
    pub multimodal_input: RKLLMMultiModalInput,
}
size!(InputUnion, 48);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RKLLMInput {
    pub role: *const c_char,
    pub enable_thinking: bool,
    pub input_type: c_int,
    pub input: InputUnion,
}
size!(RKLLMInput, 64);
off!(RKLLMInput, role, 0);
off!(RKLLMInput, enable_thinking, 8);
off!(RKLLMInput, input_type, 12);
off!(RKLLMInput, input, 16);

#[repr(C)]
pub struct RKLLMInferParam {
    pub mode: c_int,
    pub lora_params: *mut RKLLMLoraParam,
    pub prompt_cache_params: *mut RKLLMPromptCacheParam,
    pub keep_history: c_int,
}
size!(RKLLMInferParam, 32);
off!(RKLLMInferParam, mode, 0);
off!(RKLLMInferParam, lora_params, 8);
off!(RKLLMInferParam, prompt_cache_params, 16);
off!(RKLLMInferParam, keep_history, 24);

pub type FnCreateDefaultParam = unsafe extern "C" fn() -> RKLLMParam;
pub type FnInit = unsafe extern "C" fn(*mut LLMHandle, *mut RKLLMParam, ResultCallback) -> c_int;
