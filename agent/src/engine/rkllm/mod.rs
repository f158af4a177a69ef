//! The NPU engine: Rockchip's RKLLM runtime (`librkllmrt.so`) over FFI.
//!
//! ```text
//!  Runtime::open ── reads the embedded version ─► binding for ABI 1.2 | 1.3 (ffi/)
//!  RkllmEngine::load ── rkllm_init (stderr captured for the reason) ─► RkllmInstance
//!  RkllmInstance ── worker thread: rkllm_run per request/batch, callbacks → sink → events
//!                └─ watcher thread: rkllm_abort when every client has gone
//! ```
//!
//! What is honoured on each ABI, the multi-turn policy and what was verified only against
//! `rkllm-sim` are in docs/npu.md.

#[allow(unsafe_code)]
mod ffi;
#[allow(unsafe_code)]
pub mod rt;

pub mod conv;
pub mod domains;
pub mod family;
pub mod instance;
pub mod logcap;
pub mod pcache;
pub mod sink;
pub mod version;

use std::{
    ffi::CString,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

pub use pcache::PromptCacheDir;
pub use rt::Runtime;
pub use version::{Abi, AbiChoice, Version};

use self::{domains::Domains, logcap::InitFailure};
use super::{Engine, EngineError, Instance, LoadSpec, ModelFacts};

/// Where the vendor's install instructions and distributions put the runtime.
pub const DEFAULT_LIB_PATHS: &[&str] =
    &["/usr/lib/librkllmrt.so", "/usr/local/lib/librkllmrt.so", "/usr/lib/aarch64-linux-gnu/librkllmrt.so"];

/// The first existing default path.
pub fn find_lib() -> Option<PathBuf> {
    DEFAULT_LIB_PATHS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Settings shared by every RKLLM instance of the agent.
#[derive(Debug, Clone)]
pub struct RkllmOptions {
    /// `enabled_cpus_mask` (the board's big cores).
    pub cpus_mask: u32,
    pub cpus_num: i8,
    pub embed_flash: bool,
    pub prompt_cache: Option<PromptCacheDir>,
    pub batch_wait: Duration,
    /// NPU memory domains (`base_domain_id` 0..n) instances are spread over.
    pub npu_domains: u32,
    /// Bytes of NPU memory one domain holds.
    pub npu_domain_bytes: u64,
}

pub struct RkllmEngine {
    rt: Arc<Runtime>,
    opts: RkllmOptions,
    domains: Arc<Domains>,
}

impl RkllmEngine {
    pub fn new(rt: Arc<Runtime>, opts: RkllmOptions) -> Self {
        let domains = Domains::new(opts.npu_domains, opts.npu_domain_bytes);
        Self { rt, opts, domains }
    }
}

/// The runtime batches at most 8 sequences per `rkllm_run` (docs/rkllm-abi.md §13).
const MAX_BATCH: u32 = 8;

impl Engine for RkllmEngine {
    fn name(&self) -> &'static str {
        "rkllm"
    }

    fn slots(&self, requested: u32) -> u32 {
        requested.clamp(1, MAX_BATCH)
    }

    fn load(&self, spec: &LoadSpec) -> Result<Arc<dyn Instance>, EngineError> {
        let shown = spec.path.display().to_string();
        let fail = |reason: String| EngineError::Load { path: shown.clone(), reason };
        let path_c = CString::new(spec.path.to_string_lossy().as_bytes()).map_err(|e| fail(e.to_string()))?;
        let n_batch = self.slots(spec.parallel);
        // The weights the runtime maps into NPU memory: about the file's size. Booked before
        // rkllm_init, which RKLLM 1.3.0 does not survive on overflow.
        let size = std::fs::metadata(&spec.path).map(|m| m.len()).unwrap_or(0);
        let booking = self.domains.book(size)?;
        let params = rt::InitParams {
            model_path: path_c,
            max_context_len: i32::try_from(spec.n_ctx).unwrap_or(i32::MAX),
            max_new_tokens: i32::try_from(spec.n_ctx).unwrap_or(i32::MAX),
            sampling: instance::to_sampling(&spec.sampling),
            n_batch: n_batch as u8,
            domain: booking.domain,
            cpus_mask: self.opts.cpus_mask,
            cpus_num: self.opts.cpus_num,
            embed_flash: spec.embed_flash.unwrap_or(self.opts.embed_flash),
        };
        let (res, log) = logcap::capture(|| self.rt.init(&params));
        let (h, keep) = res.map_err(|rc| match logcap::init_failure(&log) {
            InitFailure::ContextLimit { requested, limit } => fail(format!(
                "max_context_len {requested} exceeds the model's max_context_limit {limit} (set `context: {limit}` \
                 or less for this model)"
            )),
            InitFailure::NpuMemory(line) => EngineError::NpuMemory(format!(
                "no room for {} in NPU memory domain {} ({line})",
                spec.path.file_name().unwrap_or_default().to_string_lossy(),
                booking.domain
            )),
            InitFailure::BadModel(line) => fail(format!("not a model this runtime can load: {line}")),
            InitFailure::Other(why) => fail(format!("rkllm_init returned {rc}: {why}")),
        })?;
        if let (Some(want), Some(found)) = (spec.npu_cores, logcap::npu_core_num(&log))
            && want != found
        {
            self.rt.destroy(h);
            return Err(fail(format!(
                "the file was converted for {found} NPU cores but npuCores is {want}: reconvert it with \
                 rkllm-toolkit (num_npu_core={want}) or drop the setting"
            )));
        }
        for (name, file) in &spec.loras {
            let (Ok(p), Ok(n)) = (CString::new(file.to_string_lossy().as_bytes()), CString::new(name.as_str())) else {
                continue;
            };
            let rc = self.rt.load_lora(h, &p, &n, 1.0);
            if rc != 0 {
                self.rt.destroy(h);
                return Err(fail(format!("rkllm_load_lora({name}, {}) returned {rc}", file.display())));
            }
        }
        let facts = ModelFacts {
            n_ctx: spec.n_ctx,
            n_ctx_train: spec.n_ctx,
            n_params: 0,
            size_bytes: size,
            bos: String::new(),
            eos: String::new(),
            thinking: false,
        };
        let family = model_family(spec);
        let facts = ModelFacts { thinking: family.is_some_and(family::Family::thinking), ..facts };
        let cfg = instance::Config {
            rt: Arc::clone(&self.rt),
            name: file_name(&spec.path),
            path: spec.path.clone(),
            n_ctx: spec.n_ctx,
            n_batch: n_batch as usize,
            family,
            prompt_cache: self.opts.prompt_cache.clone(),
            batch_wait: self.opts.batch_wait,
            reuse: spec.prefix_cache,
            template: spec.chat_template.clone(),
            facts,
        };
        Ok(instance::spawn(cfg, h, keep, booking))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The template family of the model to load: from its catalog family and the names it is known
/// by, the path's own file name last (all a caller that gives no names has).
fn model_family(spec: &LoadSpec) -> Option<family::Family> {
    let own = file_name(&spec.path);
    let names: Vec<&str> = spec.names.iter().map(String::as_str).chain([own.as_str()]).collect();
    family::Family::detect(spec.family.as_deref(), &names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, names: &[&str]) -> LoadSpec {
        LoadSpec {
            path: PathBuf::from(path),
            n_ctx: 4096,
            parallel: 1,
            threads: 1,
            prefix_cache: true,
            family: None,
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            sampling: crate::engine::SamplingParams::default(),
            chat_template: None,
            npu_cores: None,
            embed_flash: None,
            prompt_caches: Vec::new(),
            loras: Vec::new(),
            cpus: Vec::new(),
        }
    }

    /// A model served from the content-addressed store (cluster mode, `/api/pull`) has a path
    /// that is only a digest; its family comes from the names it is served under.
    #[test]
    fn a_store_blob_gets_its_family_from_its_names() {
        let blob = "/models/blobs/sha256-2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
        assert_eq!(model_family(&spec(blob, &[])), None);
        let thinking = Some(family::Family::ChatMl { thinking: true });
        assert_eq!(model_family(&spec(blob, &["Qwen3-0.6B-sim_w8a8_rk3588.rkllm", "qwen"])), thinking);
        assert_eq!(model_family(&spec(blob, &["model.rkllm", "assistant", "qwen3:0.6b"])), thinking);
        assert_eq!(model_family(&spec("/models/gemma-3-1b_w8a8.rkllm", &[])), Some(family::Family::Gemma));
    }
}
