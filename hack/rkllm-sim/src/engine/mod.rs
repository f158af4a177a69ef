//! Handles: creation (`rkllm_init`), the process-wide registry, and the per-handle state that
//! the non-run API calls manipulate. Running a prompt lives in [`run`].
//!
//! ```text
//!  HANDLES: address of Box<u64> ──► Arc<Handle>
//!                                     ├── model, env snapshot, init config, domain Reservation
//!                                     ├── current_run / abort_run (atomics, lock-free from callbacks)
//!                                     └── Mutex<State>: template, tools, LoRAs, prompt cache,
//!                                                       one Slot (KV cache) per batch entry
//! ```
//!
//! The pointer handed to C is a real heap address (a `Box<u64>` holding the handle number), but
//! the sim never dereferences a caller-supplied handle: every call looks the address up in the
//! registry first. A stale or foreign handle is therefore a clean -1, not undefined behaviour,
//! and a run in progress keeps its own `Arc` so `destroy` can never free state under it.

mod run;

use std::{
    collections::HashMap,
    ffi::c_void,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

pub(crate) use run::{RunRequest, SlotInput};

use crate::{
    abi::{LLMHandle, LLMResultCallback},
    domain::{self, Reservation},
    env::SimEnv,
    log::{self, Trace},
    model::{Kind, ModelFile, ParseError},
    prompt_cache,
    template::{Template, Tools},
};

/// Extra NPU memory per additional batch slot, as a fraction of the model's memory: each slot
/// needs its own KV cache and activations, while the weights are shared.
const MEMORY_PER_EXTRA_SLOT: f64 = 0.1;
/// `n_batch` range the vendor guide recommends and the sim enforces.
const MAX_BATCH: i32 = 8;
const MIB: f64 = 1024.0 * 1024.0;

/// A caller's `void*` carried across threads. The sim only hands it back to the caller's own
/// callback, never dereferences it; thread-safety of what it points to is the caller's contract.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UserData(pub *mut c_void);
// SAFETY: see the type's doc — the pointer is opaque to the sim.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

/// Sampling values, only recorded (the sim's output does not depend on them) so tests can check
/// which values the caller passed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Sampling {
    pub top_k: i32,
    pub top_p: f32,
    pub temperature: f32,
}

/// `rkllm_init` arguments after pointer validation.
pub(crate) struct InitConfig {
    pub model_path: String,
    pub max_context_len: i32,
    pub max_new_tokens: i32,
    pub sampling: Sampling,
    pub base_domain_id: i32,
    pub n_batch: i32,
    pub cpus_mask: u32,
    pub cpus_num: i32,
    pub callback: LLMResultCallback,
    /// 1.3: `RKLLMCallback.result_userdata`, used when a run passes NULL. 1.2: NULL.
    pub default_userdata: UserData,
}

/// The KV cache of one batch slot.
#[derive(Clone, Debug, Default)]
pub(crate) struct Slot {
    /// Token strings currently cached. A multi-byte token emitted as WAITING + NORMAL occupies
    /// two positions: the whole token, then an empty continuation.
    pub kv: Vec<String>,
    /// How many leading KV tokens are the system part (kept by `keep_system_prompt=1`).
    pub system_len: usize,
    /// The previous run's prompt tokens (KV + input), for the runtime's automatic prefix reuse.
    pub last_prompt: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub template: Template,
    pub tools: Option<Tools>,
    pub slots: Vec<Slot>,
    /// Tokens of the loaded prompt-cache file.
    pub prompt_cache: Option<Vec<String>>,
    /// Names of the loaded LoRA adapters.
    pub loras: Vec<String>,
}

pub(crate) struct Handle {
    pub id: u64,
    pub model: ModelFile,
    pub env: SimEnv,
    pub trace: Trace,
    pub max_context_len: i32,
    pub max_new_tokens: i32,
    pub sampling: Sampling,
    pub n_batch: usize,
    pub callback: LLMResultCallback,
    pub default_userdata: UserData,
    /// NPU memory this handle holds, MB (reported as `memory_usage_mb`).
    pub memory_mb: f64,
    _memory: Reservation,
    /// Id of the run in progress, 0 when idle. Doubles as the one-run-at-a-time lock.
    pub current_run: AtomicU64,
    /// Id of the run `rkllm_abort` was called for. Keyed by run id so a late abort can never
    /// leak into the next run.
    pub abort_run: AtomicU64,
    pub state: Mutex<State>,
}

/// Registry of live handles by address.
static HANDLES: Mutex<Option<HashMap<usize, Arc<Handle>>>> = Mutex::new(None);
/// Handle numbers (for logs and traces) and run ids; shared, so both are unique process-wide.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

fn registry() -> MutexGuard<'static, Option<HashMap<usize, Arc<Handle>>>> {
    HANDLES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The handle behind a caller's pointer, or `None` for NULL / unknown / destroyed handles.
pub(crate) fn lookup(h: LLMHandle) -> Option<Arc<Handle>> {
    if h.is_null() {
        return None;
    }
    registry().as_ref()?.get(&(h as usize)).cloned()
}

/// Logs and traces a failed init; every failure path ends here so the vendor's final
/// `rkllm_init failed` line is never missing.
pub(crate) fn init_failed(trace: &Trace, reason: &str) {
    log::error("rkllm_init failed");
    trace.event(&format!("init_failed reason={reason}"));
}

/// `rkllm_init` after pointer validation: loads the model file, checks it against the chip,
/// the context limit, the batch size and the domain's memory, then registers a handle.
pub(crate) fn init(cfg: InitConfig, env: SimEnv) -> Option<LLMHandle> {
    let trace = Trace::new(env.trace.clone());
    let fail = |reason: &str, msg: Option<String>| {
        if let Some(m) = msg {
            log::error(&m);
        }
        init_failed(&trace, reason);
        None
    };
    log::info(&format!("{}, rknpu driver version: 0.9.8, platform: {}", crate::version_line(), env.platform));
    log::info(&format!("loading rkllm model from {}", cfg.model_path));
    let model = match ModelFile::read(std::path::Path::new(&cfg.model_path)) {
        Ok(m) if m.kind == Kind::Model => m,
        Ok(_) => return fail("not_a_model", Some(format!("{} is a LoRA adapter, not a model", cfg.model_path))),
        Err(ParseError::Io(e)) => {
            return fail("model_open", Some(format!("failed to open rkllm model {}: {e}", cfg.model_path)));
        }
        Err(ParseError::Magic) => return fail("bad_magic", Some("invalid rknn llm model magic".to_owned())),
        Err(e @ ParseError::Field(_)) => return fail("bad_model", Some(e.to_string())),
    };
    log::info(&format!(
        "rkllm-toolkit version: {}, max_context_limit: {}, npu_core_num: {}, target_platform: {}, model_dtype: {}",
        model.toolkit_version, model.max_context_limit, model.npu_core_num, model.platform, model.dtype
    ));
    if model.platform != env.platform {
        let msg = format!("model target_platform {} does not match the chip {}", model.platform, env.platform);
        return fail("platform", Some(msg));
    }
    if cfg.max_context_len > model.max_context_limit {
        let msg = format!(
            "max_context[{}] must be less than the model's max_context_limit[{}]",
            cfg.max_context_len, model.max_context_limit
        );
        return fail("max_context", Some(msg));
    }
    let max_context_len = if cfg.max_context_len <= 0 { model.max_context_limit } else { cfg.max_context_len };
    if !(1..=MAX_BATCH).contains(&cfg.n_batch) {
        return fail("n_batch", Some(format!("n_batch must be between 1 and {MAX_BATCH}, got {}", cfg.n_batch)));
    }
    let memory_mb = model.memory_mb * (1.0 + MEMORY_PER_EXTRA_SLOT * f64::from(cfg.n_batch - 1));
    let bytes = (memory_mb * MIB).round() as u64;
    let Some(reservation) = domain::reserve(cfg.base_domain_id, bytes, (env.domain_mb * MIB) as u64) else {
        // The vendor's allocator line comes from the RKNN layer, hence the different prefix.
        crate::log::raw(&format!("E RKNN: failed to malloc npu memory, size: {bytes}, flags: 0x0"));
        return fail("npu_memory", None);
    };
    // Reading the weights into NPU memory (`RKLLM_SIM_LOAD_MB_S`; instant by default). The
    // memory is reserved first, so a load that cannot fit fails at once, as it should.
    let load = env.load_time(model.memory_mb);
    if !load.is_zero() {
        trace.event(&format!("load model={} mb={} ms={}", model.name, model.memory_mb, load.as_millis()));
        std::thread::sleep(load);
    }
    let cpus = enabled_cpus(cfg.cpus_mask, cfg.cpus_num);
    log::info(&format!("Enabled cpus: [{}]", cpus.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")));
    log::info(&format!("Enabled cpus num: {}", cpus.len()));

    let id = next_id();
    let n_batch = cfg.n_batch as usize;
    let handle = Arc::new(Handle {
        id,
        trace: trace.clone(),
        max_context_len,
        max_new_tokens: cfg.max_new_tokens,
        sampling: cfg.sampling,
        n_batch,
        callback: cfg.callback,
        default_userdata: cfg.default_userdata,
        memory_mb,
        _memory: reservation,
        current_run: AtomicU64::new(0),
        abort_run: AtomicU64::new(0),
        state: Mutex::new(State {
            template: Template::default(),
            tools: None,
            slots: vec![Slot::default(); n_batch],
            prompt_cache: None,
            loras: Vec::new(),
        }),
        model,
        env,
    });
    trace.event(&format!(
        "init handle={id} model={} domain={} ctx={max_context_len} n_batch={n_batch} cpus_mask={:#x} cpus_num={}",
        handle.model.name, cfg.base_domain_id, cfg.cpus_mask, cfg.cpus_num
    ));
    let ptr = Box::into_raw(Box::new(id)).cast::<c_void>();
    registry().get_or_insert_with(HashMap::new).insert(ptr as usize, handle);
    Some(ptr)
}

/// The CPU list the init log prints: the mask's bits, or without a mask the last `num` cores
/// (on RK3588 those are the big A76 cores 4–7, which is what the vendor demos select).
fn enabled_cpus(mask: u32, num: i32) -> Vec<u32> {
    if mask != 0 {
        return (0..32).filter(|b| mask & (1 << b) != 0).collect();
    }
    let num = num.clamp(1, 8) as u32;
    (8 - num..8).collect()
}

/// `rkllm_destroy`: refuses while a run is in progress (the caller must abort and wait).
pub(crate) fn destroy(h: LLMHandle) -> i32 {
    let mut reg = registry();
    let Some(map) = reg.as_mut() else { return -1 };
    let Some(handle) = map.get(&(h as usize)).cloned() else { return -1 };
    if handle.is_running() {
        drop(reg);
        log::error("cannot destroy the handle while a task is running; abort it and wait for rkllm_run to return");
        handle.trace.event(&format!("destroy_refused handle={} reason=running", handle.id));
        return -1;
    }
    map.remove(&(h as usize));
    drop(reg);
    // SAFETY: the address was in the registry, so it came from `Box::into_raw` in `init` and
    // has not been freed (removal from the registry happens exactly once, above).
    drop(unsafe { Box::from_raw(h.cast::<u64>()) });
    handle.trace.event(&format!("destroy handle={}", handle.id));
    // Normally `handle` is the last Arc and dropping it releases the domain memory now. A run
    // that looked the handle up just before the removal keeps its own Arc, so nothing is freed
    // under it; the memory is then released when that run ends.
    0
}

impl Handle {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.current_run.load(Ordering::SeqCst) != 0
    }

    /// `rkllm_abort`: flags the current run (if any); it stops at its next step boundary.
    pub(crate) fn abort(&self) {
        self.trace.event(&format!("abort handle={}", self.id));
        let run = self.current_run.load(Ordering::SeqCst);
        if run != 0 {
            self.abort_run.store(run, Ordering::SeqCst);
        }
    }

    /// `rkllm_clear_kv_cache`. `ranges` = per-slot `(start, end)`; `None` clears whole slots.
    pub(crate) fn clear_kv_cache(&self, keep_system_prompt: bool, ranges: Option<Vec<(i32, i32)>>) -> i32 {
        if self.is_running() {
            log::error("cannot clear the kv cache while a task is running");
            return -1;
        }
        let ranged = ranges.is_some();
        let mut st = self.lock();
        for (i, slot) in st.slots.iter_mut().enumerate() {
            match ranges.as_ref().map(|r| r[i]) {
                None if keep_system_prompt => slot.kv.truncate(slot.system_len),
                None => {
                    slot.kv.clear();
                    slot.system_len = 0;
                }
                Some((start, end)) if start < end => {
                    let len = slot.kv.len();
                    let (s, e) = (start.max(0) as usize, (end.max(0) as usize).min(len));
                    if s < e {
                        slot.kv.drain(s..e);
                        let overlap = slot.system_len.min(e).saturating_sub(s);
                        slot.system_len -= overlap;
                    }
                }
                Some(_) => {}
            }
            // The automatic prefix reuse works on what is actually cached.
            slot.last_prompt = slot.kv.clone();
        }
        drop(st);
        self.trace.event(&format!(
            "clear_kv_cache handle={} keep_system_prompt={} ranged={}",
            self.id,
            u8::from(keep_system_prompt),
            u8::from(ranged)
        ));
        0
    }

    pub(crate) fn kv_cache_sizes(&self) -> Vec<usize> {
        self.lock().slots.iter().map(|s| s.kv.len()).collect()
    }

    pub(crate) fn set_chat_template(&self, system: String, prefix: String, postfix: String) {
        self.lock().template = Template { system, prefix, postfix, overridden: true };
        self.trace.event("set_chat_template");
    }

    /// `rkllm_set_function_tools`; an empty array removes the tools section again.
    pub(crate) fn set_function_tools(&self, system: String, json: String, tag: String) -> i32 {
        match Tools::parse(system, json, tag) {
            Ok(tools) => {
                let n = tools.functions.len();
                self.lock().tools = (n > 0).then_some(tools);
                self.trace.event(&format!("set_function_tools n={n}"));
                0
            }
            Err(e) => {
                log::error(&e);
                -1
            }
        }
    }

    /// `rkllm_load_lora`: the file must be a sim LoRA whose base is this handle's model.
    pub(crate) fn load_lora(&self, path: &str, name: String) -> i32 {
        let file = match ModelFile::read(std::path::Path::new(path)) {
            Ok(f) => f,
            Err(e) => {
                log::error(&format!("failed to load lora adapter {path}: {e}"));
                return -1;
            }
        };
        if file.kind != Kind::Lora {
            log::error(&format!("{path} is not a lora adapter"));
            return -1;
        }
        if file.base.as_deref() != Some(self.model.name.as_str()) {
            log::error(&format!(
                "lora adapter {path} was trained for {}, not {}",
                file.base.unwrap_or_default(),
                self.model.name
            ));
            return -1;
        }
        let mut st = self.lock();
        if !st.loras.contains(&name) {
            st.loras.push(name.clone());
        }
        drop(st);
        self.trace.event(&format!("load_lora name={name}"));
        0
    }

    pub(crate) fn load_prompt_cache(&self, path: &str) -> i32 {
        match prompt_cache::load(std::path::Path::new(path), &self.model.name) {
            Ok(tokens) => {
                let n = tokens.len();
                self.lock().prompt_cache = Some(tokens);
                self.trace.event(&format!("load_prompt_cache path={path} tokens={n}"));
                0
            }
            Err(e) => {
                log::error(&e);
                -1
            }
        }
    }

    pub(crate) fn release_prompt_cache(&self) {
        self.lock().prompt_cache = None;
        self.trace.event("release_prompt_cache");
    }
}
