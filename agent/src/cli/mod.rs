//! Command line: `serve`, `models`, `openapi`, `doctor`, `store`, `device-plugin`. Parses and hands over: `serve` becomes an
//! `app::AgentConfig` for `app::Agent::run`. Every flag has an environment variable
//! (`ROCKCHIP_LLAMA_*`) so the Helm chart and systemd units configure the agent without argv
//! (`tests::every_flag_reads_an_env_var`).

mod store;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use api_types::log::LogArgs;
use clap::{Args, Parser, Subcommand};

use self::store::StoreCommand;
use crate::{
    app::{Agent, AgentConfig, EngineChoice},
    cluster::ClusterArgs,
    doctor::DoctorArgs,
    keepalive::KeepAlive,
    models::ModelArgs,
    node::BoardArgs,
    npu::NpuArgs,
    size::Size,
    store::{FetchOptions, StoreOptions},
};

#[derive(Debug, Parser)]
#[command(
    name = "rockchip-llama-agent",
    version,
    about = "LLM node agent: OpenAI and Ollama APIs on RKLLM or llama.cpp"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size of the `serve` variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
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
    /// Work on the model store without a running agent (pre-seed a board: `store fetch`).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Kubelet device plugin: advertise the board's NPU as `rockchipllama.io/npu`, so the agent's
    /// pod gets the NPU device nodes without running privileged (docs/helm.md).
    DevicePlugin(crate::deviceplugin::DevicePluginArgs),
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
    /// Refuse API requests that carry neither the cluster token nor an --api-key-file key, so
    /// that only the cluster gateway and peer boards get through. Needs --cluster-token-file.
    #[arg(long, env = "ROCKCHIP_LLAMA_REQUIRE_CLUSTER_TOKEN")]
    pub require_cluster_token: bool,
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
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The model store's limits and peer blob serving.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Free disk kept on the store's filesystem: a download that would use it is refused before
    /// it starts.
    #[arg(long, env = "ROCKCHIP_LLAMA_STORE_RESERVE", default_value = "256MiB")]
    pub store_reserve: String,
    /// Model downloads at once.
    #[arg(long, env = "ROCKCHIP_LLAMA_MAX_DOWNLOADS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub max_downloads: u32,
    /// Blob uploads to peer boards at once; more are refused with 503 (the peer tries another source).
    #[arg(long, env = "ROCKCHIP_LLAMA_MAX_UPLOADS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_uploads: u32,
    /// Seconds a download source may send nothing before the download continues from the next
    /// source at the same offset.
    #[arg(long, env = "ROCKCHIP_LLAMA_FETCH_STALL_TIMEOUT", default_value_t = 10.0)]
    pub fetch_stall_timeout: f64,
    /// File holding the cluster token: peers must send it to read blobs from this agent, and it
    /// is sent to peers. Without it no blob is served to peers. Where the API needs a key
    /// (--api-key-file, --require-cluster-token) the token is accepted as one: the gateway sends it.
    #[arg(long, env = "ROCKCHIP_LLAMA_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
}

impl Cli {
    /// Runs the command; the exit code is the process's.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Serve(args) => {
                Agent::run(args.into_config()?).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Models(args) => {
                list_models(&args)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Openapi => {
                println!("{}", crate::api::openapi_json());
                Ok(ExitCode::SUCCESS)
            }
            Command::Doctor(args) => Ok(if crate::doctor::run(&args)? { ExitCode::SUCCESS } else { ExitCode::FAILURE }),
            Command::Store(cmd) => {
                cmd.run().await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::DevicePlugin(args) => {
                let stop = tokio_util::sync::CancellationToken::new();
                tokio::spawn({
                    let stop = stop.clone();
                    async move {
                        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                        let term = async move {
                            match term.as_mut() {
                                Some(t) => {
                                    t.recv().await;
                                }
                                None => std::future::pending::<()>().await,
                            }
                        };
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            () = term => {}
                        }
                        stop.cancel();
                    }
                });
                crate::deviceplugin::run(args, stop).await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

impl ServeArgs {
    /// The flags as the agent's typed configuration; a flag that does not parse is named.
    pub fn into_config(self) -> anyhow::Result<AgentConfig> {
        let Self {
            listen,
            models,
            default_model,
            api_key_file,
            require_cluster_token,
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
            store,
            cluster,
        } = self;
        let token = read_token(store.cluster_token_file.as_deref())?;
        let stall = stall_timeout(store.fetch_stall_timeout)?;
        let store_opts = StoreOptions {
            reserve: Size::parse(&store.store_reserve).context("--store-reserve")?.or_auto(|| 256 << 20),
            max_downloads: store.max_downloads as usize,
            max_uploads: store.max_uploads as usize,
            fetch: FetchOptions { stall, token: token.clone(), ..FetchOptions::default() },
        };
        let cluster = cluster.resolve(listen)?;
        Ok(AgentConfig {
            listen,
            models,
            default_model,
            api_key_file,
            max_queue,
            parallel,
            memory_budget: Size::parse(&memory_budget).context("--memory-budget")?,
            engine,
            threads,
            prefix_cache,
            keep_alive: KeepAlive::parse(&keep_alive).context("--keep-alive")?,
            shutdown_grace: Duration::from_secs(shutdown_grace),
            npu,
            board,
            store: store_opts,
            cluster_token: token,
            require_cluster_token,
            cluster,
        })
    }
}

/// The cluster token in `--cluster-token-file` (trimmed; an empty file means none), for `serve`
/// and `store fetch` alike.
fn read_token(path: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let Some(p) = path else { return Ok(None) };
    let text = std::fs::read_to_string(p).with_context(|| format!("--cluster-token-file {}", p.display()))?;
    Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// `--fetch-stall-timeout` as a duration: a positive, finite number of seconds.
fn stall_timeout(secs: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(secs > 0.0 && secs.is_finite(), "--fetch-stall-timeout must be a positive number of seconds");
    Ok(Duration::from_secs_f64(secs))
}

fn list_models(args: &ModelArgs) -> anyhow::Result<()> {
    let reg = args.open()?;
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn require_cluster_token_is_a_bare_flag_off_by_default() {
        let serve = |extra: &[&str]| {
            let argv = ["rockchip-llama-agent", "serve"].into_iter().chain(extra.iter().copied());
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Serve(args) => args.into_config().unwrap(),
                other => panic!("{other:?}"),
            }
        };
        assert!(!serve(&[]).require_cluster_token);
        assert!(serve(&["--require-cluster-token"]).require_cluster_token);
    }

    /// The chart and systemd units configure the agent through the environment only.
    #[test]
    fn every_flag_reads_an_env_var() {
        let missing = api_types::log::flags_without_env(&Cli::command());
        assert!(missing.is_empty(), "flags without an env var: {missing:?}");
    }
}
