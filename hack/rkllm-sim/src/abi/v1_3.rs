//! RKLLM 1.3.0 layouts: `rkllm_init(handle, param*, RKLLMCallback*)`, image/video multimodal
//! sub-structs, `ignore_eos_token`, per-run sampling and `max_new_tokens` in `RKLLMInferParam`.

use std::ffi::{c_char, c_int, c_void};

use super::{
    LLMResultCallback, RKLLMEmbedInput, RKLLMExtendParam, RKLLMLoraParam, RKLLMPromptCacheParam, RKLLMTokenInput,
    layout,
};

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
    pub ignore_eos_token: bool,
    pub is_async: bool,
    pub extend_param: RKLLMExtendParam,
}
layout!(RKLLMParam, size 184; model_path @ 0; max_context_len @ 8; max_new_tokens @ 12; top_k @ 16;
    n_keep @ 20; top_p @ 24; temperature @ 28; repeat_penalty @ 32; frequency_penalty @ 36;
    presence_penalty @ 40; mirostat @ 44; mirostat_tau @ 48; mirostat_eta @ 52; skip_special_token @ 56;
    ignore_eos_token @ 57; is_async @ 58; extend_param @ 60);

/// The unnamed `image` member of `RKLLMMultiModalInput`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMImageInput {
    pub image_embed: *mut f32,
    pub n_image_tokens: usize,
    pub n_image: usize,
    pub image_start: *const c_char,
    pub image_end: *const c_char,
    pub image_content: *const c_char,
    pub image_width: usize,
    pub image_height: usize,
}

/// The unnamed `video` member of `RKLLMMultiModalInput`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMVideoInput {
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
#[derive(Clone, Copy, Debug)]
pub struct RKLLMMultiModalInput {
    pub prompt: *mut c_char,
    pub image: RKLLMImageInput,
    pub video: RKLLMVideoInput,
}
layout!(RKLLMMultiModalInput, size 144; prompt @ 0; image.image_embed @ 8; image.n_image_tokens @ 16;
    image.n_image @ 24; image.image_start @ 32; image.image_end @ 40; image.image_content @ 48;
    image.image_width @ 56; image.image_height @ 64; video.video_embed @ 72; video.n_frame_tokens @ 80;
    video.n_frame_per_video @ 88; video.n_video @ 96; video.video_start @ 104; video.video_end @ 112;
    video.video_content @ 120; video.frame_width @ 128; video.frame_height @ 136);

/// The anonymous union of `RKLLMInput`; which member is valid depends on `input_type`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union RKLLMInputUnion {
    pub prompt_input: *const c_char,
    pub embed_input: RKLLMEmbedInput,
    pub token_input: RKLLMTokenInput,
    pub multimodal_input: RKLLMMultiModalInput,
}
layout!(RKLLMInputUnion, size 144);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RKLLMInput {
    pub role: *const c_char,
    pub enable_thinking: bool,
    pub input_type: c_int,
    pub input: RKLLMInputUnion,
}
layout!(RKLLMInput, size 160; role @ 0; enable_thinking @ 8; input_type @ 12; input @ 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
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
layout!(RKLLMSamplingParam, size 36; top_k @ 0; top_p @ 4; temperature @ 8; repeat_penalty @ 12;
    frequency_penalty @ 16; presence_penalty @ 20; mirostat @ 24; mirostat_tau @ 28; mirostat_eta @ 32);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMInferParam {
    pub mode: c_int,
    pub lora_params: *mut RKLLMLoraParam,
    pub prompt_cache_params: *mut RKLLMPromptCacheParam,
    pub sampling_params: *mut RKLLMSamplingParam,
    pub keep_history: c_int,
    pub max_new_tokens: i32,
}
layout!(RKLLMInferParam, size 40; mode @ 0; lora_params @ 8; prompt_cache_params @ 16; sampling_params @ 24;
    keep_history @ 32; max_new_tokens @ 36);

/// `LLMTokenizerCallback`: only used by models without an internal tokenizer.
pub type LLMTokenizerCallback = unsafe extern "C" fn(
    userdata: *mut c_void,
    text: *const c_char,
    text_len: i32,
    tokens: *mut i32,
    n_tokens_max: i32,
) -> c_int;

/// `LLMGetEmbedCallback`: only used by models without an internal embedding layer.
pub type LLMGetEmbedCallback = unsafe extern "C" fn(
    userdata: *mut c_void,
    tokens: *mut i32,
    num_tokens: u64,
    embed: *mut c_void,
    len: u64,
) -> c_int;

/// `RKLLMCallback`, passed by pointer to `rkllm_init` since 1.3.0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RKLLMCallback {
    pub result_callback: Option<LLMResultCallback>,
    pub result_userdata: *mut c_void,
    pub tokenizer_callback: Option<LLMTokenizerCallback>,
    pub tokenizer_userdata: *mut c_void,
    pub embed_callback: Option<LLMGetEmbedCallback>,
    pub embed_userdata: *mut c_void,
}
layout!(RKLLMCallback, size 48; result_callback @ 0; result_userdata @ 8; tokenizer_callback @ 16;
    tokenizer_userdata @ 24; embed_callback @ 32; embed_userdata @ 40);
