//! Command-line side of the NPU engine: which `librkllmrt.so`, which ABI, and how RKLLM
//! instances are configured. Opening the runtime happens once at start; when it fails under
//! `--engine auto` the agent still serves GGUF models and answers requests for `.rkllm` models
//! with the reason.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Args;

use crate::{
    engine::{
        Engine,
        rkllm::{self, AbiChoice, PromptCacheDir, RkllmEngine, RkllmOptions, Runtime},
    },
    size::{Size, SizeError},
};

/// Why the NPU runtime or its settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NpuError {
    #[error("no RKLLM runtime found (looked in {looked}); set --rkllm-lib")]
    NoLibrary { looked: String },
    /// The library did not open, or its version is not one the agent binds to.
    #[error(transparent)]
    Open(#[from] crate::engine::rkllm::rt::RuntimeError),
    #[error("--npu-domain-memory: {0}")]
    DomainMemory(#[from] SizeError),
    #[error("--npu-domain-memory: give a size such as 4GiB (auto is not defined for it)")]
    DomainMemoryAuto,
}

#[derive(Debug, Clone, Args)]
pub struct NpuArgs {
    /// The RKLLM runtime library. Default: the first of /usr/lib, /usr/local/lib,
    /// /usr/lib/aarch64-linux-gnu that has librkllmrt.so.
    #[arg(long, env = "ROCKCHIP_LLAMA_RKLLM_LIB")]
    pub rkllm_lib: Option<PathBuf>,
    /// Runtime ABI: `auto` reads the version the library embeds; `1.2` or `1.3` only for a
    /// library whose version cannot be read (a contradicting override is refused).
    #[arg(long, env = "ROCKCHIP_LLAMA_RKLLM_ABI", default_value = "auto")]
    pub rkllm_abi: AbiChoice,
    /// NPU memory domains (`base_domain_id` 0..n) that RKLLM instances are spread over.
    #[arg(long, env = "ROCKCHIP_LLAMA_NPU_DOMAINS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub npu_domains: u32,
    /// NPU memory one domain holds (`4GiB`, `512MiB`, bytes); a model needs about its file size.
    /// Checked before loading, since RKLLM 1.3.0 crashes when a domain overflows (rknn-llm #522).
    #[arg(long, env = "ROCKCHIP_LLAMA_NPU_DOMAIN_MEMORY", default_value = "4GiB")]
    pub npu_domain_memory: String,
    /// With `n_batch` > 1: how long a batch waits for more queued requests after the first.
    #[arg(long, env = "ROCKCHIP_LLAMA_RKLLM_BATCH_WAIT_MS", default_value_t = 20)]
    pub rkllm_batch_wait_ms: u64,
    /// Keep word embeddings in the model file instead of RAM (`embed_flash`, as the vendor demos).
    #[arg(long, env = "ROCKCHIP_LLAMA_RKLLM_EMBED_FLASH", default_value_t = true, action = clap::ArgAction::Set)]
    pub rkllm_embed_flash: bool,
    /// Save and reuse RKLLM prompt-cache files for system prompts (`--prompt-cache=false` to disable).
    #[arg(long, env = "ROCKCHIP_LLAMA_PROMPT_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub prompt_cache: bool,
    /// Where prompt-cache files live (default: `<models-dir>/.prompt-cache`).
    #[arg(long, env = "ROCKCHIP_LLAMA_PROMPT_CACHE_DIR")]
    pub prompt_cache_dir: Option<PathBuf>,
    /// Prompt-cache files kept on disk; the least recently used go first.
    #[arg(long, env = "ROCKCHIP_LLAMA_PROMPT_CACHE_FILES", default_value_t = 32)]
    pub prompt_cache_files: usize,
}

/// The runtime library to open: the flag, else the first default path.
pub fn lib_path(args: &NpuArgs) -> Result<PathBuf, NpuError> {
    match &args.rkllm_lib {
        Some(p) => Ok(p.clone()),
        None => rkllm::find_lib().ok_or_else(|| NpuError::NoLibrary { looked: rkllm::DEFAULT_LIB_PATHS.join(", ") }),
    }
}

/// Opens the runtime named by the flags.
pub fn open_runtime(args: &NpuArgs) -> Result<Arc<Runtime>, NpuError> {
    let path = lib_path(args)?;
    Ok(Arc::new(Runtime::open(&path, args.rkllm_abi)?))
}

/// The RKLLM engine, with instances pinned to `cpus` (the board's big cores).
pub fn engine(
    rt: Arc<Runtime>,
    args: &NpuArgs,
    models_dir: &std::path::Path,
    cpus_mask: u32,
) -> Result<Arc<dyn Engine>, NpuError> {
    let npu_domain_bytes = match Size::parse(&args.npu_domain_memory)? {
        Size::Bytes(b) => b,
        Size::Auto => return Err(NpuError::DomainMemoryAuto),
    };
    let prompt_cache = args.prompt_cache.then(|| PromptCacheDir {
        dir: args.prompt_cache_dir.clone().unwrap_or_else(|| models_dir.join(".prompt-cache")),
        max_files: args.prompt_cache_files.max(1),
    });
    let (mask, num) = if cpus_mask == 0 { (0xF0, 4) } else { (cpus_mask, cpus_mask.count_ones() as i8) };
    Ok(Arc::new(RkllmEngine::new(
        rt,
        RkllmOptions {
            cpus_mask: mask,
            cpus_num: num,
            embed_flash: args.rkllm_embed_flash,
            prompt_cache,
            batch_wait: Duration::from_millis(args.rkllm_batch_wait_ms),
            npu_domains: args.npu_domains,
            npu_domain_bytes,
        },
    )))
}
