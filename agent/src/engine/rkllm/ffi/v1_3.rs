//! RKLLM 1.3.0: `rkllm_init` takes a pointer to an `RKLLMCallback` struct; `RKLLMInferParam`
//! gains per-run sampling and `max_new_tokens`; multimodal input reworked (image + video).

use std::ffi::{c_char, c_int, c_void};

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
    pub ignore_eos_token: bool,
    pub is_async: bool,
    pub extend_param: RKLLMExtendParam,
}
size!(RKLLMParam, 184);
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
off!(RKLLMParam, ignore_eos_token, 57);
off!(RKLLMParam, is_async, 58);
off!(RKLLMParam, extend_param, 60);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ImageInput {
    pub image_embed: *mut f32,
    pub n_image_tokens: usize,
    pub n_image: usize,
    pub image_start: *const c_char,
    pub image_end: *const c_char,
    pub image_content: *const c_char,
    pub image_width: usize,
    pub image_height: usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct VideoInput {
    pub video_embed: *mut f32,
    pub n_frame_tokens: usize,
    pub n_frame_per_video: usize,
    pub n_video: usize,
    pub video_start: *const c_char,
    pub video_end: *const c_char,
    pub video_content: *const c_char,
    pub frame_width: usize,
    pub frame_height: usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RKLLMMultiModalInput {
    pub prompt: *mut c_char,
    pub image: ImageInput,
    pub video: VideoInput,
}
size!(RKLLMMultiModalInput, 144);
off!(RKLLMMultiModalInput, image, 8);
off!(RKLLMMultiModalInput, video, 72);

#[repr(C)]
#[derive(Clone, Copy)]
pub union InputUnion {
    pub prompt_input: *const c_char,
    pub embed_input: RKLLMEmbedInput,
    pub token_input: RKLLMTokenInput,
    pub multimodal_input: RKLLMMultiModalInput,
}
size!(InputUnion, 144);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RKLLMInput {
    pub role: *const c_char,
    pub enable_thinking: bool,
    pub input_type: c_int,
    pub input: InputUnion,
}
size!(RKLLMInput, 160);
off!(RKLLMInput, role, 0);
off!(RKLLMInput, enable_thinking, 8);
off!(RKLLMInput, input_type, 12);
off!(RKLLMInput, input, 16);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMSamplingParam {
    pub top_k: i32,
    pub top_p: f32,
    pub temperature: f32,
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub mirostat: i32,
    pub mirostat_tau: f32,
    pub mirostat_eta: f32,
}
size!(RKLLMSamplingParam, 36);
off!(RKLLMSamplingParam, mirostat, 24);
off!(RKLLMSamplingParam, mirostat_eta, 32);

#[repr(C)]
pub struct RKLLMInferParam {
    pub mode: c_int,
    pub lora_params: *mut RKLLMLoraParam,
    pub prompt_cache_params: *mut RKLLMPromptCacheParam,
    pub sampling_params: *mut RKLLMSamplingParam,
    pub keep_history: c_int,
    pub max_new_tokens: i32,
}
size!(RKLLMInferParam, 40);
off!(RKLLMInferParam, mode, 0);
off!(RKLLMInferParam, lora_params, 8);
off!(RKLLMInferParam, prompt_cache_params, 16);
off!(RKLLMInferParam, sampling_params, 24);
off!(RKLLMInferParam, keep_history, 32);
off!(RKLLMInferParam, max_new_tokens, 36);

pub type TokenizerCallback = unsafe extern "C" fn(*mut c_void, *const c_char, i32, *mut i32, i32) -> c_int;
pub type EmbedCallback = unsafe extern "C" fn(*mut c_void, *mut i32, u64, *mut c_void, u64) -> c_int;

/// `RKLLMCallback` (1.3.0). Zeroed except `result_callback`: the tokenizer and embedding
/// callbacks are only consulted for models without their own (docs/rkllm-abi.md §6, §7.5).
#[repr(C)]
pub struct RKLLMCallback {
    pub result_callback: Option<ResultCallback>,
    pub result_userdata: *mut c_void,
    pub tokenizer_callback: Option<TokenizerCallback>,
    pub tokenizer_userdata: *mut c_void,
    pub embed_callback: Option<EmbedCallback>,
    pub embed_userdata: *mut c_void,
}
size!(RKLLMCallback, 48);
off!(RKLLMCallback, result_userdata, 8);
off!(RKLLMCallback, tokenizer_callback, 16);
off!(RKLLMCallback, embed_callback, 32);
off!(RKLLMCallback, embed_userdata, 40);

pub type FnCreateDefaultParam = unsafe extern "C" fn() -> RKLLMParam;
pub type FnInit = unsafe extern "C" fn(*mut LLMHandle, *mut RKLLMParam, *mut RKLLMCallback) -> c_int;
