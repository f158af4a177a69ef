//! The loaded runtime: `librkllmrt.so` opened with `libloading`, its 15 functions resolved, and
//! thin wrappers that build each ABI's structs. This module and [`super::ffi`] are the only
//! places with `unsafe`; everything above works with [`Handle`], [`InputSpec`] and the
//! [`ResultSink`] trait.
//!
//! Safety contract the wrappers rely on (docs/rkllm-abi.md §5): a handle runs one request at a time;
//! `rkllm_abort` may be called from another thread while `rkllm_run` blocks; pointers inside a
//! callback's results are valid only during that callback (the trampoline copies nothing itself
//! — the sink copies what it keeps); a handle is destroyed only when no run is in flight.

use std::{
    ffi::{CStr, CString, c_char, c_int, c_void},
    path::{Path, PathBuf},
};

use super::{
    ffi::{common as c, v1_2, v1_3},
    version::{self, Abi, AbiChoice, Version},
};

/// The state a callback reports (`LLMCallState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    Normal,
    Waiting,
    Finish,
    Error,
    Other(c_int),
}

/// One result of a callback, borrowed for the duration of the callback.
pub struct ResultView<'a> {
    /// Decoded bytes of this token (`None` when the runtime passed NULL).
    pub text: Option<&'a [u8]>,
    pub token_id: i32,
    /// `num_tokens × embd_size` float32 in `GET_LAST_HIDDEN_LAYER` mode.
    pub hidden: Option<(&'a [f32], usize)>,
    pub perf: c::RKLLMPerfStat,
}

/// What the callback tells the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Continue,
    /// Return 1: stop generating and keep the KV cache (1.2.1+).
    Pause,
}

/// Receives the callbacks of one `rkllm_run`. Called on whichever thread the runtime uses.
pub trait ResultSink: Sync {
    /// Results per callback: `n_batch` of them when the instance was created with `n_batch > 1`.
    fn n_batch(&self) -> usize;
    fn on(&self, state: CallState, results: &[ResultView<'_>]) -> Ret;
}

/// The C callback for both ABIs. `userdata` is a `*const &dyn ResultSink` set by [`Runtime::run`].
unsafe extern "C" fn trampoline(result: *mut c::RKLLMResult, userdata: *mut c_void, state: c_int) -> c_int {
    if userdata.is_null() {
        return 0;
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `run` passes a pointer to a `&dyn ResultSink` that outlives the run.
        let sink: &dyn ResultSink = unsafe { *(userdata as *const &dyn ResultSink) };
        let n = sink.n_batch().max(1);
        let mut views = Vec::with_capacity(n);
        if !result.is_null() {
            for i in 0..n {
                // SAFETY: the runtime passes `n_batch` results (docs/rkllm-abi.md §8, §13).
                let r = unsafe { &*result.add(i) };
                views.push(view(r));
            }
        }
        let st = match state {
            c::RKLLM_RUN_NORMAL => CallState::Normal,
            c::RKLLM_RUN_WAITING => CallState::Waiting,
            c::RKLLM_RUN_FINISH => CallState::Finish,
            c::RKLLM_RUN_ERROR => CallState::Error,
            o => CallState::Other(o),
        };
        sink.on(st, &views)
    }));
    match outcome {
        Ok(Ret::Continue) => 0,
        // A panic in the sink must not unwind into C; pausing ends the run cleanly.
        Ok(Ret::Pause) | Err(_) => 1,
    }
}

fn view(r: &c::RKLLMResult) -> ResultView<'_> {
    // SAFETY: text is NUL-terminated and valid during the callback when non-NULL.
    let text = (!r.text.is_null()).then(|| unsafe { CStr::from_ptr(r.text) }.to_bytes());
    let h = r.last_hidden_layer;
    let hidden = (!h.hidden_states.is_null() && h.embd_size > 0 && h.num_tokens > 0).then(|| {
        let len = h.embd_size as usize * h.num_tokens as usize;
        // SAFETY: the runtime documents num_tokens × embd_size float32 at hidden_states.
        (unsafe { std::slice::from_raw_parts(h.hidden_states, len) }, h.embd_size as usize)
    });
    ResultView { text, token_id: r.token_id, hidden, perf: r.perf }
}

unsafe extern "C" {
    /// C stdio's `fflush`; `NULL` flushes every open output stream.
    fn fflush(stream: *mut c_void) -> c_int;
}

/// Flushes the C library's buffered `stdout`/`stderr` streams, so text a C runtime printed with
/// `printf` reaches its file descriptor now (used around the init log capture).
pub fn flush_c_stdio() {
    // SAFETY: fflush(NULL) is defined by C99 to flush all output streams; no pointers are read.
    unsafe {
        fflush(std::ptr::null_mut());
    }
}

/// An initialised model handle. Plain data: [`super::instance`] owns its lifecycle.
#[derive(Clone, Copy, Debug)]
pub struct Handle(c::LLMHandle);
// SAFETY: the runtime's functions take the handle from any thread; the instance serialises runs
// and only `rkllm_abort` is called concurrently with a run, which the API is designed for.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

/// Sampling settings in the runtime's terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub top_k: i32,
    pub top_p: f32,
    pub temperature: f32,
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
}

/// `rkllm_init` settings.
#[derive(Debug, Clone)]
pub struct InitParams {
    pub model_path: CString,
    pub max_context_len: i32,
    /// Init-time cap on new tokens (the only one on ABI 1.2).
    pub max_new_tokens: i32,
    pub sampling: Sampling,
    pub n_batch: u8,
    pub domain: i32,
    pub cpus_mask: u32,
    pub cpus_num: i8,
    pub embed_flash: bool,
}

/// One input of a run.
pub struct InputSpec<'a> {
    pub role: &'a CStr,
    pub thinking: bool,
    /// `None` pads a batch slot (a NULL prompt).
    pub prompt: Option<&'a CStr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Generate,
    LastHiddenLayer,
}

/// `RKLLMInferParam` settings of a run.
pub struct InferSpec<'a> {
    pub mode: Mode,
    pub lora: Option<&'a CStr>,
    /// Save the prefill of this run to this prompt-cache file.
    pub save_cache: Option<&'a CStr>,
    pub keep_history: bool,
    /// Per-run sampling (ABI 1.3 only; ignored on 1.2).
    pub sampling: Option<Sampling>,
    /// Per-run cap (ABI 1.3 only; ≤ 0 = the init value).
    pub max_new_tokens: i32,
}

enum Init {
    V12(v1_2::FnCreateDefaultParam, v1_2::FnInit),
    V13(v1_3::FnCreateDefaultParam, v1_3::FnInit),
}

/// Resources the runtime may keep pointers to for the handle's lifetime.
pub struct Keepalive {
    _callback: Option<Box<v1_3::RKLLMCallback>>,
    _path: CString,
}
// SAFETY: the boxed callback struct only holds a function pointer and NULLs.
unsafe impl Send for Keepalive {}
unsafe impl Sync for Keepalive {}

/// An opened `librkllmrt.so`.
pub struct Runtime {
    pub path: PathBuf,
    pub abi: Abi,
    /// The version read from the library, when it could be read.
    pub version: Option<Version>,
    init: Init,
    destroy: c::FnDestroy,
    abort: c::FnAbort,
    is_running: c::FnIsRunning,
    run: c::FnRun,
    load_lora: c::FnLoadLora,
    load_prompt_cache: c::FnLoadPromptCache,
    release_prompt_cache: c::FnReleasePromptCache,
    clear_kv_cache: c::FnClearKvCache,
    get_kv_cache_size: c::FnGetKvCacheSize,
    set_chat_template: c::FnSetChatTemplate,
    set_function_tools: c::FnSetFunctionTools,
    // Last: the function pointers above are valid only while the library stays loaded.
    _lib: libloading::Library,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("path", &self.path)
            .field("abi", &self.abi)
            .field("version", &self.version)
            .finish()
    }
}

/// Why the runtime library cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot read the RKLLM runtime {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Abi(#[from] super::version::AbiError),
    #[error("cannot load {path}: {message}")]
    Load { path: String, message: String },
    #[error("{path} lacks {symbol}: {message}")]
    Symbol { path: String, symbol: &'static str, message: String },
}

macro_rules! sym {
    ($lib:expr, $path:expr, $name:literal) => {{
        // SAFETY: the type comes from the ABI module chosen for this library's version.
        let s = unsafe { $lib.get(concat!($name, "\0").as_bytes()) }.map_err(|e| RuntimeError::Symbol {
            path: $path.clone(),
            symbol: $name,
            message: e.to_string(),
        })?;
        *s
    }};
}

impl Runtime {
    /// Reads the library's version, picks the binding, loads it and resolves every symbol.
    pub fn open(path: &Path, choice: AbiChoice) -> Result<Self, RuntimeError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Read { path: shown.clone(), source })?;
        let found = version::embedded_version(&bytes);
        drop(bytes);
        let (abi, version) = version::choose(found, choice, &shown)?;
        // SAFETY: loading runs the library's initialisers; this is the vendor runtime (or the
        // simulator) the operator pointed the agent at.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| RuntimeError::Load { path: shown.clone(), message: e.to_string() })?;
        let init = match abi {
            Abi::V1_2 => Init::V12(sym!(lib, shown, "rkllm_createDefaultParam"), sym!(lib, shown, "rkllm_init")),
            Abi::V1_3 => Init::V13(sym!(lib, shown, "rkllm_createDefaultParam"), sym!(lib, shown, "rkllm_init")),
        };
        Ok(Self {
            path: path.to_owned(),
            abi,
            version,
            init,
            destroy: sym!(lib, shown, "rkllm_destroy"),
            abort: sym!(lib, shown, "rkllm_abort"),
            is_running: sym!(lib, shown, "rkllm_is_running"),
            run: sym!(lib, shown, "rkllm_run"),
            load_lora: sym!(lib, shown, "rkllm_load_lora"),
            load_prompt_cache: sym!(lib, shown, "rkllm_load_prompt_cache"),
            release_prompt_cache: sym!(lib, shown, "rkllm_release_prompt_cache"),
            clear_kv_cache: sym!(lib, shown, "rkllm_clear_kv_cache"),
            get_kv_cache_size: sym!(lib, shown, "rkllm_get_kv_cache_size"),
            set_chat_template: sym!(lib, shown, "rkllm_set_chat_template"),
            set_function_tools: sym!(lib, shown, "rkllm_set_function_tools"),
            _lib: lib,
        })
    }

    /// `rkllm_createDefaultParam` + overrides + `rkllm_init`. Returns the runtime's status on failure.
    pub fn init(&self, p: &InitParams) -> Result<(Handle, Keepalive), c_int> {
        let mut h: c::LLMHandle = std::ptr::null_mut();
        let path = p.model_path.clone();
        let s = &p.sampling;
        macro_rules! common_fields {
            ($param:expr) => {{
                $param.model_path = path.as_ptr();
                $param.max_context_len = p.max_context_len;
                $param.max_new_tokens = p.max_new_tokens;
                $param.top_k = s.top_k;
                $param.top_p = s.top_p;
                $param.temperature = s.temperature;
                $param.repeat_penalty = s.repeat_penalty;
                $param.frequency_penalty = s.frequency_penalty;
                $param.presence_penalty = s.presence_penalty;
                $param.mirostat = 0;
                // The demos keep the whole window on shifts (-1); documented in docs/npu.md.
                $param.n_keep = -1;
                $param.skip_special_token = true;
                $param.is_async = false;
                $param.extend_param.base_domain_id = p.domain;
                $param.extend_param.embed_flash = i8::from(p.embed_flash);
                $param.extend_param.enabled_cpus_num = p.cpus_num;
                $param.extend_param.enabled_cpus_mask = p.cpus_mask;
                $param.extend_param.n_batch = p.n_batch.max(1);
                $param.extend_param.use_cross_attn = 0;
            }};
        }
        let (rc, cb) = match self.init {
            Init::V12(default, init) => {
                // SAFETY: returns the struct by value; layout asserted in ffi::v1_2.
                let mut param = unsafe { default() };
                common_fields!(param);
                // SAFETY: all pointers valid for the call; the callback is a plain fn.
                (unsafe { init(&mut h, &mut param, trampoline) }, None)
            }
            Init::V13(default, init) => {
                // SAFETY: as above for the 1.3 layout.
                let mut param = unsafe { default() };
                common_fields!(param);
                param.ignore_eos_token = false;
                let mut cb = Box::new(v1_3::RKLLMCallback {
                    result_callback: Some(trampoline),
                    result_userdata: std::ptr::null_mut(),
                    tokenizer_callback: None,
                    tokenizer_userdata: std::ptr::null_mut(),
                    embed_callback: None,
                    embed_userdata: std::ptr::null_mut(),
                });
                // SAFETY: the callback struct lives as long as the handle (kept in Keepalive).
                (unsafe { init(&mut h, &mut param, &mut *cb) }, Some(cb))
            }
        };
        if rc != 0 || h.is_null() {
            return Err(if rc == 0 { -1 } else { rc });
        }
        Ok((Handle(h), Keepalive { _callback: cb, _path: path }))
    }

    /// Blocking `rkllm_run`. `inputs.len()` must equal the handle's `n_batch`.
    pub fn run(&self, h: Handle, inputs: &[InputSpec<'_>], infer: &InferSpec<'_>, sink: &dyn ResultSink) -> c_int {
        let mut lora = c::RKLLMLoraParam { lora_adapter_name: infer.lora.map_or(std::ptr::null(), CStr::as_ptr) };
        let mut cache = c::RKLLMPromptCacheParam {
            save_prompt_cache: 1,
            prompt_cache_path: infer.save_cache.map_or(std::ptr::null(), CStr::as_ptr),
        };
        let lora_p: *mut c::RKLLMLoraParam = if infer.lora.is_some() { &mut lora } else { std::ptr::null_mut() };
        let cache_p: *mut c::RKLLMPromptCacheParam =
            if infer.save_cache.is_some() { &mut cache } else { std::ptr::null_mut() };
        let mode = match infer.mode {
            Mode::Generate => c::RKLLM_INFER_GENERATE,
            Mode::LastHiddenLayer => c::RKLLM_INFER_GET_LAST_HIDDEN_LAYER,
        };
        let sink_ref: &dyn ResultSink = sink;
        let ud = &sink_ref as *const &dyn ResultSink as *mut c_void;
        let prompt = |i: &InputSpec<'_>| i.prompt.map_or(std::ptr::null(), CStr::as_ptr) as *const c_char;
        match self.abi {
            Abi::V1_2 => {
                let mut ins: Vec<v1_2::RKLLMInput> = inputs
                    .iter()
                    .map(|i| v1_2::RKLLMInput {
                        role: i.role.as_ptr(),
                        enable_thinking: i.thinking,
                        input_type: c::RKLLM_INPUT_PROMPT,
                        input: v1_2::InputUnion { prompt_input: prompt(i) },
                    })
                    .collect();
                let mut ip = v1_2::RKLLMInferParam {
                    mode,
                    lora_params: lora_p,
                    prompt_cache_params: cache_p,
                    keep_history: c_int::from(infer.keep_history),
                };
                // SAFETY: every pointer outlives the blocking call; the sink reference too.
                unsafe { (self.run)(h.0, ins.as_mut_ptr().cast(), (&mut ip as *mut v1_2::RKLLMInferParam).cast(), ud) }
            }
            Abi::V1_3 => {
                let mut ins: Vec<v1_3::RKLLMInput> = inputs
                    .iter()
                    .map(|i| v1_3::RKLLMInput {
                        role: i.role.as_ptr(),
                        enable_thinking: i.thinking,
                        input_type: c::RKLLM_INPUT_PROMPT,
                        input: v1_3::InputUnion { prompt_input: prompt(i) },
                    })
                    .collect();
                let mut sp = infer.sampling.map(|s| v1_3::RKLLMSamplingParam {
                    top_k: s.top_k,
                    top_p: s.top_p,
                    temperature: s.temperature,
                    repeat_penalty: s.repeat_penalty,
                    frequency_penalty: s.frequency_penalty,
                    presence_penalty: s.presence_penalty,
                    mirostat: 0,
                    mirostat_tau: 5.0,
                    mirostat_eta: 0.1,
                });
                let mut ip = v1_3::RKLLMInferParam {
                    mode,
                    lora_params: lora_p,
                    prompt_cache_params: cache_p,
                    sampling_params: sp.as_mut().map_or(std::ptr::null_mut(), |s| s as *mut _),
                    keep_history: c_int::from(infer.keep_history),
                    max_new_tokens: infer.max_new_tokens,
                };
                // SAFETY: as above.
                unsafe { (self.run)(h.0, ins.as_mut_ptr().cast(), (&mut ip as *mut v1_3::RKLLMInferParam).cast(), ud) }
            }
        }
    }

    pub fn abort(&self, h: Handle) -> c_int {
        // SAFETY: abort is meant to be called while another thread is inside rkllm_run.
        unsafe { (self.abort)(h.0) }
    }

    pub fn is_running(&self, h: Handle) -> bool {
        // SAFETY: plain query on a live handle.
        unsafe { (self.is_running)(h.0) == 1 }
    }

    /// Frees the handle. Callers guarantee no run is in flight.
    pub fn destroy(&self, h: Handle) -> c_int {
        // SAFETY: see above.
        unsafe { (self.destroy)(h.0) }
    }

    /// Whole-cache clear (`start_pos`/`end_pos` NULL), optionally keeping the system prompt.
    pub fn clear_kv_cache(&self, h: Handle, keep_system_prompt: bool) -> c_int {
        // SAFETY: NULL ranges are the documented whole-cache form.
        unsafe {
            (self.clear_kv_cache)(h.0, c_int::from(keep_system_prompt), std::ptr::null_mut(), std::ptr::null_mut())
        }
    }

    /// Positions in the KV cache per batch slot.
    pub fn kv_cache_sizes(&self, h: Handle, n_batch: usize) -> Result<Vec<i32>, c_int> {
        let mut v = vec![0 as c_int; n_batch.max(1)];
        // SAFETY: the runtime writes n_batch ints.
        let rc = unsafe { (self.get_kv_cache_size)(h.0, v.as_mut_ptr()) };
        if rc == 0 { Ok(v) } else { Err(rc) }
    }

    pub fn set_chat_template(&self, h: Handle, system: &CStr, prefix: &CStr, postfix: &CStr) -> c_int {
        // SAFETY: NUL-terminated strings valid for the call; the runtime copies them.
        unsafe { (self.set_chat_template)(h.0, system.as_ptr(), prefix.as_ptr(), postfix.as_ptr()) }
    }

    pub fn set_function_tools(&self, h: Handle, system: &CStr, tools: &CStr, tag: &CStr) -> c_int {
        // SAFETY: as above.
        unsafe { (self.set_function_tools)(h.0, system.as_ptr(), tools.as_ptr(), tag.as_ptr()) }
    }

    pub fn load_lora(&self, h: Handle, path: &CStr, name: &CStr, scale: f32) -> c_int {
        let mut a = c::RKLLMLoraAdapter { lora_adapter_path: path.as_ptr(), lora_adapter_name: name.as_ptr(), scale };
        // SAFETY: struct and strings valid for the call.
        unsafe { (self.load_lora)(h.0, &mut a) }
    }

    pub fn load_prompt_cache(&self, h: Handle, path: &CStr) -> c_int {
        // SAFETY: as above.
        unsafe { (self.load_prompt_cache)(h.0, path.as_ptr()) }
    }

    pub fn release_prompt_cache(&self, h: Handle) -> c_int {
        // SAFETY: plain call on a live handle.
        unsafe { (self.release_prompt_cache)(h.0) }
    }
}
