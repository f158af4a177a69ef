//! Command line: `serve`, `models`, `openapi`. Every flag has an environment variable
//! (`ROCKCHIP_LLAMA_*`) so the Helm chart and systemd units configure the agent without argv.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

use crate::{
    api::{self, AppState},
    config::Config,
    doctor::DoctorArgs,
    engine::{Engine, llama::LlamaEngine},
    keepalive::KeepAlive,
    metrics::Metrics,
    models::{Catalog, Registry},
    node::{BoardArgs, Node},
    npu::{self, NpuArgs},
    sched::{self, Engines, SchedOptions, Scheduler},
};

#[derive(Debug, Parser)]
#[command(
    name = "rockchip-llama-agent",
    version,
    about = "LLM node agent: OpenAI and Ollama APIs on RKLLM or llama.cpp"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "ROCKCHIP_LLAMA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the OpenAI and Ollama APIs.
    Serve(ServeArgs),
    /// List the models found in the models directory.
    Models(ModelArgs),
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Check the board, the NPU runtime and the models; exit 1 on a blocking problem.
    Doctor(DoctorArgs),
}

/// Where models come from; shared by `serve` and `models`.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Directory holding `*.gguf` (and, with the NPU engine, `*.rkllm`) files.
    #[arg(long, env = "ROCKCHIP_LLAMA_MODELS_DIR", default_value_os_t = default_models_dir())]
    pub models_dir: PathBuf,
    /// Config file (YAML or JSON) with per-model defaults; see docs/configuration.md.
    #[arg(long, env = "ROCKCHIP_LLAMA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Model catalog replacing the built-in models/catalog.yaml.
    #[arg(long, env = "ROCKCHIP_LLAMA_CATALOG")]
    pub catalog: Option<PathBuf>,
}

/// Which engine serves which files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    /// llama.cpp for `.gguf`; RKLLM for `.rkllm` where the runtime loads.
    Auto,
    /// llama.cpp only.
    Llama,
    /// RKLLM only (the NPU engine).
    Rkllm,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ROCKCHIP_LLAMA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub models: ModelArgs,
    /// Model loaded at start-up, kept resident, and used when a request names no model.
    #[arg(long, env = "ROCKCHIP_LLAMA_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// File with one API key per line; when set, requests need `Authorization: Bearer <key>`.
    #[arg(long, env = "ROCKCHIP_LLAMA_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Requests that may wait per model beyond those running; more get 429.
    #[arg(long, env = "ROCKCHIP_LLAMA_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,
    /// Sequences generated together per model.
    #[arg(long, env = "ROCKCHIP_LLAMA_PARALLEL", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: u32,
    /// Memory all resident models may use: `auto` (80 % of RAM) or a size such as `6GiB`.
    #[arg(long, env = "ROCKCHIP_LLAMA_MEMORY_BUDGET", default_value = "auto")]
    pub memory_budget: String,
    /// Engine selection.
    #[arg(long, env = "ROCKCHIP_LLAMA_ENGINE", value_enum, default_value_t = EngineChoice::Auto)]
    pub engine: EngineChoice,
    /// CPU threads for llama.cpp (default: one per big core when the board reports them, else all cores).
    #[arg(long, env = "ROCKCHIP_LLAMA_THREADS")]
    pub threads: Option<u32>,
    /// Reuse KV-cache entries of a prompt prefix already evaluated (`--prefix-cache=false` to
    /// disable, e.g. to measure its effect).
    #[arg(long, env = "ROCKCHIP_LLAMA_PREFIX_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub prefix_cache: bool,
    /// Default keep_alive: how long an idle model stays loaded (`5m`, seconds, `-1` = forever).
    #[arg(long, env = "ROCKCHIP_LLAMA_KEEP_ALIVE", default_value = "5m")]
    pub keep_alive: String,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "ROCKCHIP_LLAMA_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,
    #[command(flatten)]
    pub npu: NpuArgs,
    #[command(flatten)]
    pub board: BoardArgs,
}

fn default_models_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from("models"), |h| Path::new(&h).join(".cache/rockchip-llama/models"))
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Serve(args) => serve(args).await,
            Command::Models(args) => list_models(&args),
            Command::Openapi => {
                println!("{}", api::openapi_json());
                Ok(())
            }
            Command::Doctor(args) => {
                let code = crate::doctor::run(&args)?;
                std::process::exit(code);
            }
        }
    }
}

pub fn registry(args: &ModelArgs) -> anyhow::Result<Registry> {
    let catalog = Catalog::load(args.catalog.as_deref()).map_err(anyhow::Error::msg).context("loading the catalog")?;
    let config = match &args.config {
        Some(p) => Config::load(p).map_err(anyhow::Error::msg).context("loading the config file")?,
        None => Config::default(),
    };
    Ok(Registry::new(args.models_dir.clone(), catalog, config))
}

fn list_models(args: &ModelArgs) -> anyhow::Result<()> {
    let reg = registry(args)?;
    let models = reg.list();
    if models.is_empty() {
        println!("no models in {}", args.models_dir.display());
        return Ok(());
    }
    println!("{:<28} {:<6} {:>8} {:>9}  {:<40} ALIASES", "NAME", "FORMAT", "CONTEXT", "SIZE", "FILE");
    for m in models {
        println!(
            "{:<28} {:<6} {:>8} {:>8}M  {:<40} {}",
            m.name,
            m.format.as_str(),
            m.context,
            m.size / 1_000_000,
            m.file_name,
            m.aliases.join(",")
        );
    }
    Ok(())
}

fn read_keys(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading API keys from {}", path.display()))?;
    let keys: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    if keys.is_empty() {
        bail!("{} holds no API keys", path.display());
    }
    Ok(keys)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        listen,
        models,
        default_model,
        api_key_file,
        max_queue,
        parallel,
        memory_budget,
        engine,
        threads,
        prefix_cache,
        keep_alive,
        shutdown_grace,
        npu,
        board,
    } = args;
    let nofile = board::raise_nofile(board::VENDOR_NOFILE);
    let info = board::BoardInfo::detect(&board::Sysfs::new(&board.sysfs_root));
    let (engines, runtime_json) = engines(engine, &npu, &models.models_dir, info.big_core_mask() as u32)?;
    if nofile.after_soft < board::VENDOR_NOFILE && engines.rkllm.is_ok() {
        tracing::warn!(
            soft = nofile.after_soft,
            hard = nofile.hard,
            "open-file limit below the 102400 the RKLLM runtime needs; raise the hard limit (LimitNOFILE=)"
        );
    } else if nofile.after_soft > nofile.before_soft {
        tracing::info!(
            from = nofile.before_soft,
            to = nofile.after_soft,
            "raised the open-file limit for the RKLLM runtime"
        );
    }
    let node = Arc::new(Node::new(&board, info, nofile, runtime_json).map_err(anyhow::Error::msg)?);
    let keys = api_key_file.as_deref().map(read_keys).transpose()?.map(Arc::new);
    let default_keep_alive = KeepAlive::parse(&keep_alive).map_err(anyhow::Error::msg)?;
    let opts = SchedOptions {
        parallel,
        max_queue,
        memory_budget: sched::parse_size(&memory_budget).map_err(anyhow::Error::msg)?,
        // Default: one llama.cpp thread per big core where the board says which those are.
        threads: threads.unwrap_or_else(|| match node.info.big_cores().len() {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
            n => n as u32,
        }),
        prefix_cache,
        default_keep_alive,
        npu_domains: npu.npu_domains,
        npu_domain_bytes: sched::parse_size(&npu.npu_domain_memory)
            .map_err(|e| anyhow::anyhow!("--npu-domain-memory: {e}"))?,
        big_cores: node.info.big_cores(),
    };
    let registry = Arc::new(registry(&models)?);
    tracing::info!(dir = %models.models_dir.display(), models = registry.list().len(), "models discovered");
    let metrics = Arc::new(Metrics::new());
    let sched = Scheduler::new(Arc::clone(&registry), engines, opts, Arc::clone(&metrics));
    {
        let node = Arc::clone(&node);
        sched.set_before_load(Box::new(move || node.pin()));
    }
    tokio::spawn(Arc::clone(&sched).reap_forever());
    {
        let s = Arc::clone(&sched);
        tokio::spawn(Arc::clone(&node).idle_watch(move || s.residents().is_empty()));
    }
    let state = AppState {
        sched: Arc::clone(&sched),
        metrics,
        keys,
        http: reqwest::Client::builder().connect_timeout(Duration::from_secs(30)).build()?,
        pulls: Arc::default(),
        default_model: default_model.clone(),
        ready: Arc::new(AtomicBool::new(false)),
        node: Some(Arc::clone(&node)),
    };
    if let Some(name) = &default_model {
        let entry = registry
            .lookup(name)
            .with_context(|| format!("--default-model {name}: no such model in {}", models.models_dir.display()))?;
        sched.load(&entry, KeepAlive::Forever).await.with_context(|| format!("loading default model {name}"))?;
    }
    let app = api::router(state.clone());
    let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving OpenAI (/v1) and Ollama (/api) APIs");
    state.ready.store(true, std::sync::atomic::Ordering::SeqCst);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        r = &mut server => r?,
        () = shutdown_signal() => {
            tracing::info!(grace_seconds = shutdown_grace, "shutting down: no new connections, finishing in-flight requests");
            state.ready.store(false, std::sync::atomic::Ordering::SeqCst);
            let _ = stop_tx.send(true);
            if tokio::time::timeout(Duration::from_secs(shutdown_grace), &mut server).await.is_err() {
                tracing::warn!("grace period over; abandoning the remaining requests");
            }
        }
    }
    sched.unload_all();
    node.restore();
    tracing::info!("stopped");
    Ok(())
}

/// The engines for `--engine`, and the runtime's state for the status endpoint.
fn engines(
    choice: EngineChoice,
    npu_args: &NpuArgs,
    models_dir: &Path,
    mask: u32,
) -> anyhow::Result<(Engines, serde_json::Value)> {
    let llama: Option<Arc<dyn Engine>> =
        (choice != EngineChoice::Rkllm).then(|| Arc::new(LlamaEngine) as Arc<dyn Engine>);
    if choice == EngineChoice::Llama {
        let why = "--engine llama".to_owned();
        return Ok((Engines { llama, rkllm: Err(why.clone()) }, serde_json::json!({"rkllm": null, "reason": why})));
    }
    match npu::open_runtime(npu_args) {
        Ok(rt) => {
            tracing::info!(lib = %rt.path.display(), version = ?rt.version.map(|v| v.to_string()), abi = %rt.abi,
                           cpus_mask = format!("{mask:#x}"), "RKLLM runtime loaded");
            if mask == 0 {
                tracing::warn!("no cpufreq topology under --sysfs-root; RKLLM threads use the vendor default CPUs 4-7");
            }
            let json = serde_json::json!({"rkllm": {"lib": rt.path, "version": rt.version.map(|v| v.to_string()), "abi": rt.abi.as_str()}});
            Ok((Engines { llama, rkllm: Ok(npu::engine(rt, npu_args, models_dir, mask)) }, json))
        }
        Err(why) if choice == EngineChoice::Rkllm => bail!("--engine rkllm: {why}"),
        Err(why) => {
            tracing::info!(%why, "RKLLM runtime not available; serving GGUF models on the CPU only");
            Ok((Engines { llama, rkllm: Err(why.clone()) }, serde_json::json!({"rkllm": null, "reason": why})))
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
