//! The 15 exported `extern "C"` functions of `rkllm.h` (docs/rkllm-abi.md §4).
//!
//! This is the only layer that touches caller memory. Each function validates its pointers
//! (NULL and alignment; a handle must be one the registry knows), copies what it needs into
//! owned Rust values and hands those to the ABI-independent engine. Bodies run inside
//! `catch_unwind`: a panic unwinding into C is undefined behaviour, so a sim bug becomes -1
//! plus a log line instead of a corrupted test process.
//!
//! # Safety (all functions)
//! Pointer arguments must be NULL or point to live, initialised values of the header's types
//! for the duration of the call (for `rkllm_run`, `input` must point to `n_batch` inputs).
//! Strings must be NUL-terminated. Results passed to callbacks are valid only during the call.

use std::{
    ffi::{CStr, c_char, c_int, c_void},
    panic::{AssertUnwindSafe, catch_unwind},
    path::PathBuf,
    ptr,
    sync::Arc,
};

use crate::{
    abi::{
        LLMHandle, LLMResultCallback, RKLLM_INFER_GENERATE, RKLLM_INFER_GET_LAST_HIDDEN_LAYER, RKLLM_INFER_GET_LOGITS,
        RKLLM_INPUT_EMBED, RKLLM_INPUT_MULTIMODAL, RKLLM_INPUT_PROMPT, RKLLM_INPUT_TOKEN, RKLLMCrossAttnParam,
        RKLLMLoraAdapter,
        active::{RKLLMInferParam, RKLLMInput, RKLLMParam},
    },
    engine::{self, Handle, InitConfig, RunRequest, Sampling, SlotInput, UserData},
    env::SimEnv,
    log::{self, Trace},
    prompt_cache,
    template::{DEFAULT_TOOL_TAG, Role},
};

/// Runs an FFI body, turning a panic into -1.
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        log::error("rkllm-sim internal error (panic); the call failed");
        -1
    })
}

/// `&*p` if `p` is non-NULL and aligned.
///
/// # Safety
/// A non-NULL `p` must point to a live `T`.
unsafe fn read<'a, T>(p: *const T) -> Option<&'a T> {
    if p.is_null() || !p.is_aligned() {
        return None;
    }
    // SAFETY: non-NULL and aligned checked above; liveness is the caller's contract.
    Some(unsafe { &*p })
}

/// An owned copy of a C string (invalid UTF-8 replaced), `None` for NULL.
///
/// # Safety
/// A non-NULL `p` must point to a NUL-terminated string.
unsafe fn string(p: *const c_char) -> Option<String> {
    // SAFETY: the caller's contract.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The registered handle, or a logged -1 for the caller to return.
fn handle_of(h: LLMHandle) -> Result<Arc<Handle>, c_int> {
    engine::lookup(h).ok_or_else(|| {
        log::error("invalid handle (NULL, unknown or destroyed)");
        -1
    })
}

/// Runs `f` on a valid handle; -1 for an invalid one.
fn with_handle(h: LLMHandle, f: impl FnOnce(&Arc<Handle>) -> c_int) -> c_int {
    guard(|| match handle_of(h) {
        Ok(handle) => f(&handle),
        Err(rc) => rc,
    })
}

/// `RKLLMParam rkllm_createDefaultParam(void)`.
///
/// The guide documents the sampling, domain, CPU and batch defaults; the others are the sim's
/// choice: `max_context_len` 512, `max_new_tokens` -1 (unlimited), `n_keep` -1,
/// `skip_special_token` true, `embed_flash` 0, `enabled_cpus_mask` 0 (no mask: the last
/// `enabled_cpus_num` cores), `model_path` and all other pointers NULL.
#[unsafe(no_mangle)]
pub extern "C" fn rkllm_createDefaultParam() -> RKLLMParam {
    // SAFETY: every field of RKLLMParam (integers, floats, bools, raw pointers) is valid as zero.
    let mut p: RKLLMParam = unsafe { std::mem::MaybeUninit::zeroed().assume_init() };
    p.max_context_len = 512;
    p.max_new_tokens = -1;
    p.top_k = 40;
    p.n_keep = -1;
    p.top_p = 0.9;
    p.temperature = 0.8;
    p.repeat_penalty = 1.1;
    p.frequency_penalty = 0.0;
    p.presence_penalty = 0.0;
    p.mirostat = 0;
    p.mirostat_tau = 5.0;
    p.mirostat_eta = 0.1;
    p.skip_special_token = true;
    p.is_async = false;
    p.extend_param.base_domain_id = 0;
    p.extend_param.embed_flash = 0;
    p.extend_param.enabled_cpus_num = 4;
    p.extend_param.enabled_cpus_mask = 0;
    p.extend_param.n_batch = 1;
    p.extend_param.use_cross_attn = 0;
    p
}

/// Shared part of both `rkllm_init` signatures.
///
/// # Safety
/// See the module docs.
unsafe fn init_common(
    handle: *mut LLMHandle,
    param: *mut RKLLMParam,
    callback: Option<LLMResultCallback>,
    default_userdata: UserData,
) -> c_int {
    let env = SimEnv::current();
    let trace = Trace::new(env.trace.clone());
    let bad = |msg: &str| {
        log::error(msg);
        engine::init_failed(&trace, "bad_pointer");
        -1
    };
    if handle.is_null() || !handle.is_aligned() {
        return bad("handle pointer is NULL");
    }
    // SAFETY: non-NULL, aligned; the caller provides a writable LLMHandle slot.
    unsafe { *handle = ptr::null_mut() };
    // SAFETY: the caller's contract (module docs).
    let Some(p) = (unsafe { read(param) }) else { return bad("param is NULL") };
    // SAFETY: as above.
    let Some(model_path) = (unsafe { string(p.model_path) }) else { return bad("model_path is NULL") };
    let Some(callback) = callback else { return bad("result callback is NULL") };
    let cfg = InitConfig {
        model_path,
        max_context_len: p.max_context_len,
        max_new_tokens: p.max_new_tokens,
        sampling: Sampling { top_k: p.top_k, top_p: p.top_p, temperature: p.temperature },
        base_domain_id: p.extend_param.base_domain_id,
        n_batch: i32::from(p.extend_param.n_batch),
        cpus_mask: p.extend_param.enabled_cpus_mask,
        cpus_num: i32::from(p.extend_param.enabled_cpus_num),
        callback,
        default_userdata,
    };
    match engine::init(cfg, env) {
        Some(h) => {
            // SAFETY: checked above.
            unsafe { *handle = h };
            0
        }
        None => -1,
    }
}

/// `int rkllm_init(LLMHandle*, RKLLMParam*, LLMResultCallback)` — ABI 1.2.
///
/// # Safety
/// See the module docs.
#[cfg(not(feature = "abi13"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_init(
    handle: *mut LLMHandle,
    param: *mut RKLLMParam,
    callback: Option<LLMResultCallback>,
) -> c_int {
    // SAFETY: forwarded caller contract.
    guard(|| unsafe { init_common(handle, param, callback, UserData(ptr::null_mut())) })
}

/// `int rkllm_init(LLMHandle*, RKLLMParam*, RKLLMCallback*)` — ABI 1.3. The tokenizer and
/// embedding callbacks are accepted and ignored: every sim model has both built in, which is
/// exactly when the vendor ignores them too.
///
/// # Safety
/// See the module docs.
#[cfg(feature = "abi13")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_init(
    handle: *mut LLMHandle,
    param: *mut RKLLMParam,
    callback: *mut crate::abi::v1_3::RKLLMCallback,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let cb = unsafe { read(callback) };
        let (f, ud) = cb.map_or((None, ptr::null_mut()), |c| (c.result_callback, c.result_userdata));
        // SAFETY: forwarded caller contract.
        unsafe { init_common(handle, param, f, UserData(ud)) }
    })
}

/// `int rkllm_destroy(LLMHandle)`: -1 while a run is in progress (abort, wait, then destroy).
///
/// # Safety
/// See the module docs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_destroy(handle: LLMHandle) -> c_int {
    guard(|| engine::destroy(handle))
}

/// One input → one slot. In a batch, NULL or empty prompts are padding.
///
/// # Safety
/// `inp` comes from the caller's array; see the module docs.
unsafe fn slot_input(inp: &RKLLMInput, batch: bool) -> Result<Option<SlotInput>, String> {
    // SAFETY: forwarded caller contract.
    let role = match unsafe { string(inp.role) }.as_deref() {
        None | Some("user") => Role::User,
        Some("tool") => Role::Tool,
        Some(r) => return Err(format!("unsupported role {r:?}: expected \"user\" or \"tool\"")),
    };
    match inp.input_type {
        RKLLM_INPUT_PROMPT => {
            // SAFETY: input_type says the union holds `prompt_input`; the string is the caller's.
            let text = unsafe { string(inp.input.prompt_input) };
            match text {
                Some(t) if batch && t.is_empty() => Ok(None),
                None if batch => Ok(None),
                None => Err("prompt_input is NULL".to_owned()),
                Some(text) => Ok(Some(SlotInput { role, enable_thinking: inp.enable_thinking, text })),
            }
        }
        RKLLM_INPUT_TOKEN => Err("token input is not supported by rkllm-sim; send text prompts".to_owned()),
        RKLLM_INPUT_EMBED => Err("embedding input is not supported by rkllm-sim".to_owned()),
        RKLLM_INPUT_MULTIMODAL => Err("multimodal input is not supported by rkllm-sim".to_owned()),
        t => Err(format!("unknown input_type {t}")),
    }
}

/// Effective sampling and `max_new_tokens` of a run: per-run values (1.3) or the init values.
#[cfg(feature = "abi13")]
unsafe fn per_run(ip: &RKLLMInferParam, h: &Handle) -> (Sampling, i32) {
    // SAFETY: forwarded caller contract.
    let sampling = unsafe { read(ip.sampling_params) }.map_or(h.sampling, |s| Sampling {
        top_k: s.top_k,
        top_p: s.top_p,
        temperature: s.temperature,
    });
    (sampling, if ip.max_new_tokens > 0 { ip.max_new_tokens } else { h.max_new_tokens })
}

/// ABI 1.2 has no per-run overrides: always the init values.
#[cfg(not(feature = "abi13"))]
unsafe fn per_run(_ip: &RKLLMInferParam, h: &Handle) -> (Sampling, i32) {
    (h.sampling, h.max_new_tokens)
}

/// Copies `rkllm_run`'s arguments into an owned request.
///
/// # Safety
/// See the module docs.
unsafe fn request(
    h: &Handle,
    input: *mut RKLLMInput,
    infer: *mut RKLLMInferParam,
    userdata: *mut c_void,
) -> Result<RunRequest, String> {
    if input.is_null() || !input.is_aligned() {
        return Err("rkllm_input is NULL".to_owned());
    }
    // SAFETY: non-NULL, aligned; the caller passes n_batch inputs (header contract).
    let inputs = unsafe { std::slice::from_raw_parts(input, h.n_batch) };
    // SAFETY: forwarded caller contract.
    let ip = unsafe { read(infer) }.ok_or("rkllm_infer_params is NULL")?;
    let hidden = match ip.mode {
        RKLLM_INFER_GENERATE => false,
        RKLLM_INFER_GET_LAST_HIDDEN_LAYER => true,
        RKLLM_INFER_GET_LOGITS => return Err("infer mode GET_LOGITS is not supported by rkllm-sim".to_owned()),
        m => return Err(format!("unknown infer mode {m}")),
    };
    // SAFETY: forwarded caller contract (both pointers may be NULL).
    let lora = unsafe { read(ip.lora_params) }.and_then(|l| unsafe { string(l.lora_adapter_name) });
    // SAFETY: as above.
    let save_cache = unsafe { read(ip.prompt_cache_params) }.filter(|p| p.save_prompt_cache != 0).map(|p| {
        // SAFETY: as above.
        PathBuf::from(unsafe { string(p.prompt_cache_path) }.unwrap_or_else(|| prompt_cache::DEFAULT_PATH.to_owned()))
    });
    // SAFETY: as above.
    let (sampling, max_new_tokens) = unsafe { per_run(ip, h) };
    let batch = h.n_batch > 1;
    let inputs = inputs
        .iter()
        // SAFETY: each element is a caller-provided input.
        .map(|inp| unsafe { slot_input(inp, batch) })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RunRequest {
        inputs,
        hidden,
        lora,
        save_cache,
        keep_history: ip.keep_history != 0,
        sampling,
        max_new_tokens,
        userdata: UserData(userdata),
    })
}

/// Shared body of `rkllm_run` and `rkllm_run_async`.
///
/// # Safety
/// See the module docs.
unsafe fn start_run(
    handle: LLMHandle,
    input: *mut RKLLMInput,
    infer: *mut RKLLMInferParam,
    userdata: *mut c_void,
    background: bool,
) -> c_int {
    with_handle(handle, |h| {
        // SAFETY: forwarded caller contract.
        let req = match unsafe { request(h, input, infer, userdata) } {
            Ok(r) => r,
            Err(e) => {
                log::error(&e);
                return -1;
            }
        };
        let Some(claim) = h.claim() else { return -1 };
        if !background {
            return claim.execute(req);
        }
        let spawned = std::thread::Builder::new().name("rkllm-sim-run".to_owned()).spawn(move || {
            guard(|| claim.execute(req));
        });
        match spawned {
            Ok(_) => 0,
            Err(e) => {
                log::error(&format!("cannot start the async run thread: {e}"));
                -1
            }
        }
    })
}

/// `int rkllm_run(LLMHandle, RKLLMInput*, RKLLMInferParam*, void* userdata)`: blocks until the
/// FINISH (or ERROR) callback has returned. -1 without any callback for invalid arguments or a
/// busy handle; -1 after an ERROR callback when the prompt does not fit the context.
///
/// # Safety
/// See the module docs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_run(
    handle: LLMHandle,
    input: *mut RKLLMInput,
    infer: *mut RKLLMInferParam,
    userdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe { start_run(handle, input, infer, userdata, false) }
}

/// `rkllm_run_async`: validates and copies the arguments, claims the handle (so
/// `rkllm_is_running` is 1 on return), then runs on a background thread and returns 0;
/// callbacks arrive from that thread.
///
/// # Safety
/// See the module docs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_run_async(
    handle: LLMHandle,
    input: *mut RKLLMInput,
    infer: *mut RKLLMInferParam,
    userdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe { start_run(handle, input, infer, userdata, true) }
}

/// `int rkllm_abort(LLMHandle)`: 0 (also when idle); the run stops at its next step boundary.
///
/// # Safety
/// See the module docs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_abort(handle: LLMHandle) -> c_int {
    with_handle(handle, |h| {
        h.abort();
        0
    })
}

/// `int rkllm_is_running(LLMHandle)`: 1 while a run is in progress, 0 when idle (the 1.3.0
/// header's meaning), -1 for an invalid handle.
///
/// # Safety
/// See the module docs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_is_running(handle: LLMHandle) -> c_int {
    with_handle(handle, |h| c_int::from(h.is_running()))
}

/// `int rkllm_clear_kv_cache(LLMHandle, int keep_system_prompt, int* start_pos, int* end_pos)`.
///
/// # Safety
/// See the module docs; non-NULL `start_pos` / `end_pos` hold `n_batch` ints each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_clear_kv_cache(
    handle: LLMHandle,
    keep_system_prompt: c_int,
    start_pos: *mut c_int,
    end_pos: *mut c_int,
) -> c_int {
    with_handle(handle, |h| {
        let ranges = match (start_pos.is_null(), end_pos.is_null()) {
            (true, true) => None,
            (false, false) if start_pos.is_aligned() && end_pos.is_aligned() => {
                // SAFETY: non-NULL, aligned, n_batch entries each (caller contract).
                let (s, e) = unsafe {
                    (std::slice::from_raw_parts(start_pos, h.n_batch), std::slice::from_raw_parts(end_pos, h.n_batch))
                };
                Some(s.iter().copied().zip(e.iter().copied()).collect())
            }
            _ => {
                log::error("start_pos and end_pos must both be NULL or both be arrays of n_batch ints");
                return -1;
            }
        };
        h.clear_kv_cache(keep_system_prompt != 0, ranges)
    })
}

/// `int rkllm_get_kv_cache_size(LLMHandle, int* cache_sizes)`: writes `n_batch` entries.
///
/// # Safety
/// See the module docs; `cache_sizes` must have room for `n_batch` ints.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_get_kv_cache_size(handle: LLMHandle, cache_sizes: *mut c_int) -> c_int {
    with_handle(handle, |h| {
        if cache_sizes.is_null() || !cache_sizes.is_aligned() {
            log::error("cache_sizes is NULL");
            return -1;
        }
        for (i, n) in h.kv_cache_sizes().into_iter().enumerate() {
            // SAFETY: room for n_batch entries (caller contract); kv_cache_sizes has n_batch.
            unsafe { cache_sizes.add(i).write(c_int::try_from(n).unwrap_or(c_int::MAX)) };
        }
        0
    })
}

/// `int rkllm_set_chat_template(LLMHandle, system, prefix, postfix)`: all three are required
/// (empty strings allowed); afterwards `enable_thinking` has no effect.
///
/// # Safety
/// See the module docs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_set_chat_template(
    handle: LLMHandle,
    system_prompt: *const c_char,
    prompt_prefix: *const c_char,
    prompt_postfix: *const c_char,
) -> c_int {
    with_handle(handle, |h| {
        // SAFETY: forwarded caller contract.
        let parts = unsafe { (string(system_prompt), string(prompt_prefix), string(prompt_postfix)) };
        let (Some(system), Some(prefix), Some(postfix)) = parts else {
            log::error("set_chat_template: system_prompt, prompt_prefix and prompt_postfix must not be NULL");
            return -1;
        };
        h.set_chat_template(system, prefix, postfix);
        0
    })
}

/// `int rkllm_set_function_tools(LLMHandle, system_prompt, tools, tool_response_str)`: `tools`
/// must be a JSON array (an empty one removes the tools); NULL `system_prompt` = "", NULL tag
/// = "tool_response".
///
/// # Safety
/// See the module docs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_set_function_tools(
    handle: LLMHandle,
    system_prompt: *const c_char,
    tools: *const c_char,
    tool_response_str: *const c_char,
) -> c_int {
    with_handle(handle, |h| {
        // SAFETY: forwarded caller contract.
        let (system, tools, tag) = unsafe { (string(system_prompt), string(tools), string(tool_response_str)) };
        let Some(tools) = tools else {
            log::error("set_function_tools: tools must not be NULL");
            return -1;
        };
        h.set_function_tools(system.unwrap_or_default(), tools, tag.unwrap_or_else(|| DEFAULT_TOOL_TAG.to_owned()))
    })
}

/// `int rkllm_load_lora(LLMHandle, RKLLMLoraAdapter*)`: path and name are required; `scale`
/// is accepted and ignored (the sim's output depends only on the adapter name).
///
/// # Safety
/// See the module docs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_load_lora(handle: LLMHandle, lora_adapter: *mut RKLLMLoraAdapter) -> c_int {
    with_handle(handle, |h| {
        // SAFETY: forwarded caller contract.
        let Some(a) = (unsafe { read(lora_adapter) }) else {
            log::error("lora_adapter is NULL");
            return -1;
        };
        // SAFETY: as above.
        let (path, name) = unsafe { (string(a.lora_adapter_path), string(a.lora_adapter_name)) };
        let (Some(path), Some(name)) = (path, name) else {
            log::error("lora_adapter_path and lora_adapter_name must not be NULL");
            return -1;
        };
        h.load_lora(&path, name)
    })
}

/// `int rkllm_load_prompt_cache(LLMHandle, const char* path)`.
///
/// # Safety
/// See the module docs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_load_prompt_cache(handle: LLMHandle, prompt_cache_path: *const c_char) -> c_int {
    with_handle(handle, |h| {
        // SAFETY: forwarded caller contract.
        match unsafe { string(prompt_cache_path) } {
            Some(path) => h.load_prompt_cache(&path),
            None => {
                log::error("prompt_cache_path is NULL");
                -1
            }
        }
    })
}

/// `int rkllm_release_prompt_cache(LLMHandle)`.
///
/// # Safety
/// See the module docs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_release_prompt_cache(handle: LLMHandle) -> c_int {
    with_handle(handle, |h| {
        h.release_prompt_cache();
        0
    })
}

/// `int rkllm_set_cross_attn_params(LLMHandle, RKLLMCrossAttnParam*)`: the sim models have no
/// cross-attention layers, so the pointer is validated and nothing is stored (0).
///
/// # Safety
/// See the module docs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkllm_set_cross_attn_params(handle: LLMHandle, params: *mut RKLLMCrossAttnParam) -> c_int {
    with_handle(handle, |_| {
        // SAFETY: forwarded caller contract.
        if unsafe { read(params) }.is_none() {
            log::error("cross_attn_params is NULL");
            return -1;
        }
        0
    })
}
