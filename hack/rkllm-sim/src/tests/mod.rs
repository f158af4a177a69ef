//! Unit tests that drive the exported `extern "C"` functions exactly as a C caller would:
//! real `#[repr(C)]` structs, C strings and an `extern "C"` callback that records every call.
//! The same tests run against both ABIs (`cargo test -p rkllm-sim [--features abi13]`).
//!
//! Tests run in parallel threads of one process, so configuration goes through the per-thread
//! [`SimEnv`] override (never the process environment), every test gets its own trace file,
//! and memory-domain tests use domain ids no other test touches.

mod features;
mod init;
mod run;

use std::{
    ffi::{CString, c_int, c_void},
    path::{Path, PathBuf},
    ptr,
    sync::{Mutex, OnceLock},
};

use crate::{
    abi::{
        LLMHandle, RKLLM_INFER_GENERATE, RKLLM_INPUT_PROMPT, RKLLM_RUN_FINISH, RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING,
        RKLLMLoraParam, RKLLMPerfStat, RKLLMPromptCacheParam, RKLLMResult,
        active::{RKLLMInferParam, RKLLMInput, RKLLMParam},
    },
    env::{SimEnv, set_thread_override},
    rkllm_createDefaultParam, rkllm_destroy, rkllm_get_kv_cache_size, rkllm_init, rkllm_run,
};

/// A directory private to this test process.
pub(crate) fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // libtest has no "after all tests" hook, so remove the dirs of earlier, finished runs.
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("rkllm-sim-test-")
                    && Path::new("/proc/self").exists()
                    && !Path::new("/proc").join(pid).exists()
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("rkllm-sim-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    })
}

/// Path of a generated model file, by file-name prefix (`"Qwen2"`, `"Qwen3-0.6B-sim_w8a8_rk3576"`).
pub(crate) fn model(prefix: &str) -> PathBuf {
    static PATHS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    let paths = PATHS.get_or_init(|| crate::model::write_catalog(&scratch().join("models")).expect("models"));
    paths
        .iter()
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .cloned()
        .expect("no such model")
}

/// Fast, roomy defaults: 1000× speed-up and effectively unlimited NPU memory.
pub(crate) fn fast_env(test: &str) -> SimEnv {
    let trace = scratch().join(format!("{test}.trace"));
    let _ = std::fs::remove_file(&trace);
    SimEnv { speedup: 1000.0, domain_mb: 1e9, trace: Some(trace), ..SimEnv::default() }
}

/// One recorded callback (all `n_batch` results of it).
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub state: c_int,
    pub slots: Vec<SlotEvent>,
}

#[derive(Clone, Debug)]
pub(crate) struct SlotEvent {
    pub text: Option<Vec<u8>>,
    pub token_id: i32,
    pub perf: RKLLMPerfStat,
    /// `(hidden_states, embd_size, num_tokens)` when the result carried a hidden layer.
    pub hidden: Option<(Vec<f32>, c_int, c_int)>,
}

/// Callback state: what arrived, and how to answer.
#[derive(Default)]
pub(crate) struct Recorder {
    pub n_batch: usize,
    /// Return 1 (pause) from the token callback with this 1-based index.
    pub pause_at: Option<usize>,
    pub events: Mutex<Vec<Event>>,
}

impl Recorder {
    pub(crate) fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    pub(crate) fn reset(&self) {
        self.events.lock().unwrap().clear();
    }

    /// Token callbacks (NORMAL/WAITING) so far.
    pub(crate) fn tokens(&self) -> Vec<Event> {
        self.events().into_iter().filter(|e| e.state == RKLLM_RUN_NORMAL || e.state == RKLLM_RUN_WAITING).collect()
    }

    /// Bytes of slot `i` joined over all token callbacks.
    pub(crate) fn bytes(&self, i: usize) -> Vec<u8> {
        self.tokens().iter().filter_map(|e| e.slots[i].text.clone()).flatten().collect()
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.bytes(0)).expect("joined output is valid UTF-8")
    }

    pub(crate) fn finish(&self) -> Event {
        let events = self.events();
        let last = events.last().expect("at least one callback").clone();
        assert_eq!(last.state, RKLLM_RUN_FINISH, "last callback is FINISH: {events:?}");
        last
    }
}

/// The test callback: records the result array; returns 1 at `pause_at`.
pub(crate) unsafe extern "C" fn record(result: *mut RKLLMResult, userdata: *mut c_void, state: c_int) -> c_int {
    // SAFETY: every test passes a live Recorder (directly or as the 1.3 default userdata).
    let rec = unsafe { &*(userdata as *const Recorder) };
    // SAFETY: the sim passes n_batch results, valid for this call.
    let results = unsafe { std::slice::from_raw_parts(result, rec.n_batch.max(1)) };
    let slots = results
        .iter()
        .map(|r| SlotEvent {
            // SAFETY: non-NULL text is NUL-terminated and valid during the callback.
            text: (!r.text.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(r.text) }.to_bytes().to_vec()),
            token_id: r.token_id,
            perf: r.perf,
            hidden: (!r.last_hidden_layer.hidden_states.is_null()).then(|| {
                let n = (r.last_hidden_layer.embd_size * r.last_hidden_layer.num_tokens) as usize;
                // SAFETY: the sim passes embd_size × num_tokens floats.
                let v = unsafe { std::slice::from_raw_parts(r.last_hidden_layer.hidden_states, n) }.to_vec();
                (v, r.last_hidden_layer.embd_size, r.last_hidden_layer.num_tokens)
            }),
        })
        .collect();
    let mut events = rec.events.lock().unwrap();
    events.push(Event { state, slots });
    let tokens = events.iter().filter(|e| e.state == RKLLM_RUN_NORMAL || e.state == RKLLM_RUN_WAITING).count();
    c_int::from(state != RKLLM_RUN_FINISH && rec.pause_at == Some(tokens))
}

/// An initialised handle with its recorder; destroyed on drop.
pub(crate) struct Sim {
    pub handle: LLMHandle,
    pub rec: Box<Recorder>,
    pub trace: PathBuf,
}

// The raw handle is only an id for the sim's registry; tests share it with helper threads.
unsafe impl Send for Sim {}
unsafe impl Sync for Sim {}

/// What a run sends besides the prompts.
#[derive(Default)]
pub(crate) struct Opts<'a> {
    pub keep_history: bool,
    pub mode: c_int,
    pub lora: Option<&'a str>,
    pub save_cache: Option<&'a Path>,
    pub role: Option<&'a str>,
    pub thinking: bool,
    /// 1.3 only: per-run `max_new_tokens` (1.2 has no such field; set it at init instead).
    #[cfg_attr(not(feature = "abi13"), allow(dead_code))]
    pub max_new_tokens: i32,
}

/// `rkllm_init` with `env` and a tweak of the default params; `Err(rc)` on failure.
pub(crate) fn init(model_path: &Path, env: SimEnv, tweak: impl FnOnce(&mut RKLLMParam)) -> Result<Sim, c_int> {
    let trace = env.trace.clone().unwrap_or_default();
    set_thread_override(Some(env));
    let path = CString::new(model_path.to_str().unwrap()).unwrap();
    let mut p = rkllm_createDefaultParam();
    p.model_path = path.as_ptr();
    p.max_context_len = 4096;
    tweak(&mut p);
    let rec = Box::new(Recorder { n_batch: usize::from(p.extend_param.n_batch), ..Recorder::default() });
    let mut handle: LLMHandle = ptr::null_mut();
    #[cfg(not(feature = "abi13"))]
    // SAFETY: valid pointers to live values.
    let rc = unsafe { rkllm_init(&mut handle, &mut p, Some(record)) };
    #[cfg(feature = "abi13")]
    let rc = {
        let mut cb = crate::abi::v1_3::RKLLMCallback {
            result_callback: Some(record),
            result_userdata: &*rec as *const Recorder as *mut c_void,
            tokenizer_callback: None,
            tokenizer_userdata: ptr::null_mut(),
            embed_callback: None,
            embed_userdata: ptr::null_mut(),
        };
        // SAFETY: valid pointers to live values.
        unsafe { rkllm_init(&mut handle, &mut p, &mut cb) }
    };
    set_thread_override(None);
    if rc != 0 {
        assert!(handle.is_null(), "a failed init leaves the handle NULL");
        return Err(rc);
    }
    assert!(!handle.is_null());
    Ok(Sim { handle, rec, trace })
}

impl Sim {
    pub(crate) fn userdata(&self) -> *mut c_void {
        // 1.3 falls back to RKLLMCallback.result_userdata when the run passes NULL; exercise that.
        if cfg!(feature = "abi13") { ptr::null_mut() } else { &*self.rec as *const Recorder as *mut c_void }
    }

    /// One run with `prompts` (one per batch slot; `None` = NULL prompt).
    pub(crate) fn run(&self, prompts: &[Option<&str>], o: &Opts<'_>) -> c_int {
        let texts: Vec<Option<CString>> = prompts.iter().map(|p| p.map(|t| CString::new(t).unwrap())).collect();
        let role = CString::new(o.role.unwrap_or("user")).unwrap();
        let inputs: Vec<RKLLMInput> = texts
            .iter()
            .map(|t| {
                // SAFETY: all-zero is a valid RKLLMInput (NULL pointers, PROMPT type).
                let mut inp: RKLLMInput = unsafe { std::mem::zeroed() };
                inp.role = role.as_ptr();
                inp.enable_thinking = o.thinking;
                inp.input_type = RKLLM_INPUT_PROMPT;
                inp.input.prompt_input = t.as_ref().map_or(ptr::null(), |c| c.as_ptr());
                inp
            })
            .collect();
        let lora_name = o.lora.map(|l| CString::new(l).unwrap());
        let mut lora = RKLLMLoraParam { lora_adapter_name: lora_name.as_ref().map_or(ptr::null(), |c| c.as_ptr()) };
        let cache_path = o.save_cache.map(|p| CString::new(p.to_str().unwrap()).unwrap());
        let mut cache = RKLLMPromptCacheParam {
            save_prompt_cache: 1,
            prompt_cache_path: cache_path.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
        };
        // SAFETY: all-zero is a valid RKLLMInferParam.
        let mut ip: RKLLMInferParam = unsafe { std::mem::zeroed() };
        ip.mode = if o.mode == 0 { RKLLM_INFER_GENERATE } else { o.mode };
        ip.keep_history = c_int::from(o.keep_history);
        if o.lora.is_some() {
            ip.lora_params = &mut lora;
        }
        if o.save_cache.is_some() {
            ip.prompt_cache_params = &mut cache;
        }
        #[cfg(feature = "abi13")]
        {
            ip.max_new_tokens = o.max_new_tokens;
        }
        // SAFETY: pointers to live values; `inputs` has n_batch entries.
        unsafe { rkllm_run(self.handle, inputs.as_ptr().cast_mut(), &mut ip, self.userdata()) }
    }

    pub(crate) fn kv_sizes(&self) -> Vec<c_int> {
        let mut sizes = vec![-1; self.rec.n_batch];
        // SAFETY: room for n_batch ints.
        assert_eq!(unsafe { rkllm_get_kv_cache_size(self.handle, sizes.as_mut_ptr()) }, 0);
        sizes
    }

    pub(crate) fn trace(&self) -> String {
        std::fs::read_to_string(&self.trace).unwrap_or_default()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // SAFETY: the handle came from rkllm_init.
        let rc = unsafe { rkllm_destroy(self.handle) };
        if !std::thread::panicking() {
            assert_eq!(rc, 0, "destroy");
        }
    }
}
