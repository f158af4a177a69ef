//! Command line. Every flag also reads an environment variable, because the chart configures the
//! operator through env.

use std::{
    fs,
    io::{self, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use api_types::log::LogArgs;
use clap::{Parser, Subcommand};

use crate::{controller, gateway};

/// Kubernetes operator for RockchipLlama.
#[derive(Debug, Parser)]
#[command(name = "rockchip-llama-operator", version, about)]
pub struct Args {
    /// `--log` and `--log-format`, shared with the agent.
    #[command(flatten)]
    pub log: LogArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions (ModelDeployment, Board) as YAML, or write one file
    /// per CRD into a directory.
    Crd(CrdArgs),
    /// Run the controller: place ModelDeployments on Boards (leader-elected, so several
    /// replicas may run), and the gateway (every replica serves it). Reaches the API server
    /// in-cluster, or through KUBECONFIG.
    Run(RunArgs),
    /// Run only the gateway (no controller): e.g. more gateway replicas than controllers.
    Gateway(GatewayOnlyArgs),
    /// Print the gateway's OpenAPI document (committed as docs/openapi-gateway.json).
    Openapi,
}

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Namespace of the boards' Leases and of the leader Lease `rockchip-llama-operator`
    /// (the chart sets it from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "rockchip-llama")]
    pub namespace: String,

    /// Name of this replica in the leader Lease (a random suffix is added so a restarted pod
    /// counts as a new holder). Default: the hostname.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Boards each board uploads a model file to; 1 makes a pipelined chain, so the origin and
    /// every board send the file once.
    #[arg(long, env = "ROCKCHIP_LLAMA_FAN_OUT", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub fan_out: u16,

    /// ModelDeployments reconciled at the same time.
    #[arg(long, env = "ROCKCHIP_LLAMA_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Serve Prometheus metrics (/metrics) and /healthz on this address, e.g. 0.0.0.0:8080.
    #[arg(long, env = "ROCKCHIP_LLAMA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Reconcile (and route) only the ModelDeployments of this namespace; all namespaces when
    /// unset.
    #[arg(long, env = "ROCKCHIP_LLAMA_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Do not serve the gateway from this process.
    #[arg(long, env = "ROCKCHIP_LLAMA_NO_GATEWAY")]
    pub no_gateway: bool,

    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// Arguments of `gateway`.
#[derive(Debug, clap::Args)]
pub struct GatewayOnlyArgs {
    /// Namespace of the boards' Leases.
    #[arg(long, env = "POD_NAMESPACE", default_value = "rockchip-llama")]
    pub namespace: String,

    /// Route only the ModelDeployments of this namespace; all namespaces when unset.
    #[arg(long, env = "ROCKCHIP_LLAMA_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Name of this replica in its demand Lease (a random suffix is added). Default: the
    /// hostname.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// The gateway's flags (docs/gateway.md).
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// Where the gateway serves the OpenAI + Ollama APIs (11434: Ollama's port, clear of k3s
    /// Traefik's 80/443).
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_LISTEN", default_value = "0.0.0.0:11434")]
    pub gateway_listen: SocketAddr,

    /// File with the clients' API keys, one per line: `<key> [model,model]` or
    /// `sha256:<hex> [models]` (a Secret mounted as a file). No keys: no auth.
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// The same list given directly (a Secret as env); joined with the file's.
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,

    /// File holding the cluster token, sent to the agents on every request (agents started
    /// with --require-cluster-token refuse anyone else).
    #[arg(long, env = "ROCKCHIP_LLAMA_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,

    /// PrefixAffinity: requests a board may hold beyond its slots, so a conversation waits for the
    /// board that holds its cache. LeastLoad sends a board a request only into a free slot.
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_BOARD_QUEUE", default_value_t = 1)]
    pub board_queue: u32,

    /// Requests per model that may wait at the gateway for a free board; more get 429.
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_QUEUE_DEPTH", default_value_t = 256)]
    pub queue_depth: usize,

    /// Longest wait for a free board, then 429 with Retry-After (e.g. 30s, 2m).
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_QUEUE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub queue_timeout: std::time::Duration,

    /// Other boards tried when a board fails before the first byte.
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_RETRIES", default_value_t = 2)]
    pub retries: u32,

    /// Longest time spent on retries of one request.
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_RETRY_BUDGET", default_value = "15s", value_parser = parse_duration)]
    pub retry_budget: std::time::Duration,

    /// Consecutive failures (requests or load polls) that take a board out of routing.
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_EJECT_AFTER", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub eject_after: u32,

    /// How often each board's load is polled.
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_POLL_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub poll_interval: std::time::Duration,

    /// Threads serving the gateway, each a single-threaded runtime with its own listening
    /// socket (SO_REUSEPORT) and connections to the boards; 0: one per CPU.
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_WORKERS", default_value_t = 0)]
    pub gateway_workers: usize,

    /// Longest hold of a request for an autoscaled ModelDeployment with no Ready replica
    /// (scaled to zero, or starting), then 503 saying it is starting (e.g. 120s, 3m).
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_SCALE_FROM_ZERO_TIMEOUT", default_value = "120s",
          value_parser = parse_duration)]
    pub scale_from_zero_timeout: std::time::Duration,

    /// How often a held streaming request gets keep-alive bytes (an SSE comment, an empty
    /// Ollama chunk) until the board's first byte.
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_STREAM_KEEPALIVE_INTERVAL", default_value = "5s",
          value_parser = parse_duration)]
    pub stream_keepalive_interval: std::time::Duration,

    /// Base URL at which the leader reads this replica's demand counters (announced in its
    /// Lease). Default: `http://<listen ip>:<port>` when the listen address names one IP, else
    /// `http://$POD_IP:<port>`, else the host name.
    #[arg(long, env = "ROCKCHIP_LLAMA_GATEWAY_ADVERTISE_URL")]
    pub gateway_advertise_url: Option<String>,
}

/// `250ms`, `30s`, `2m`, `1h` (a bare number is seconds): the units the chart's values schema
/// allows for these flags, so a value `helm install` accepted never stops the operator.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration like 250ms, 30s or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("'{s}': unit must be ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("'{s}' is not a duration"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// The cluster token in `path` (a mounted Secret), trimmed; an empty file is an error.
fn read_cluster_token(path: &std::path::Path) -> anyhow::Result<String> {
    let token = fs::read_to_string(path).with_context(|| format!("reading the cluster token {}", path.display()))?;
    let token = token.trim();
    anyhow::ensure!(!token.is_empty(), "the cluster token file {} is empty", path.display());
    Ok(token.to_owned())
}

impl GatewayArgs {
    /// The gateway's configuration; reads the key and token files.
    pub fn config(
        self,
        lease_namespace: &str,
        watch_namespace: Option<String>,
        identity: String,
    ) -> anyhow::Result<gateway::Config> {
        let Self {
            gateway_listen,
            api_key_file,
            api_keys,
            cluster_token_file,
            board_queue,
            queue_depth,
            queue_timeout,
            retries,
            retry_budget,
            eject_after,
            poll_interval,
            gateway_workers,
            scale_from_zero_timeout,
            stream_keepalive_interval,
            gateway_advertise_url,
        } = self;
        let mut c = gateway::Config::new(gateway_listen, lease_namespace);
        c.watch_namespace = watch_namespace;
        let mut keys_text = String::new();
        if let Some(path) = &api_key_file {
            keys_text =
                fs::read_to_string(path).with_context(|| format!("reading API keys from {}", path.display()))?;
            keys_text.push('\n');
        }
        if let Some(k) = &api_keys {
            keys_text.push_str(k);
        }
        if api_key_file.is_some() || api_keys.is_some() {
            c.keys = Some(gateway::auth::ClientKeys::parse(&keys_text).context("gateway API keys")?);
        }
        c.cluster_token = cluster_token_file.as_deref().map(read_cluster_token).transpose()?;
        c.board_queue = board_queue;
        c.queue_depth = queue_depth;
        c.queue_timeout = queue_timeout;
        c.retries = retries;
        c.retry_budget = retry_budget;
        c.eject_after = eject_after;
        c.poll_interval = poll_interval;
        c.workers = gateway_workers;
        c.scale_from_zero_timeout = scale_from_zero_timeout;
        anyhow::ensure!(!stream_keepalive_interval.is_zero(), "--stream-keepalive-interval must be above 0");
        c.stream_keepalive = stream_keepalive_interval;
        c.identity = identity;
        c.advertise_url = gateway_advertise_url.map(|u| u.trim_end_matches('/').to_owned());
        Ok(c)
    }
}

/// Arguments of `crd`.
#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// Write `<crd name>.yaml` files into this directory instead of printing one YAML stream.
    #[arg(long, env = "ROCKCHIP_LLAMA_CRD_OUT_DIR")]
    pub out_dir: Option<PathBuf>,
}

impl Args {
    /// Runs the selected command.
    pub fn run(self) -> anyhow::Result<()> {
        let Self { log, command } = self;
        log.init()?;
        match command {
            Command::Crd(args) => args.run(),
            Command::Run(args) => args.run(),
            Command::Gateway(args) => args.run(),
            Command::Openapi => {
                let mut out = gateway::http::openapi_json();
                out.push('\n');
                io::stdout().lock().write_all(out.as_bytes()).context("writing the OpenAPI document")
            }
        }
    }
}

impl CrdArgs {
    fn run(self) -> anyhow::Result<()> {
        let Self { out_dir } = self;
        match out_dir {
            Some(dir) => write_crd_files(&dir),
            None => {
                let yaml = crds::render_all()?;
                io::stdout().lock().write_all(yaml.as_bytes()).context("writing CRDs to stdout")
            }
        }
    }
}

impl RunArgs {
    fn run(self) -> anyhow::Result<()> {
        let Self { namespace, identity, fan_out, concurrency, metrics_listen, watch_namespace, no_gateway, gateway } =
            self;
        // The autoscaler reads the other replicas' gateways with the token too, gateway or not.
        let cluster_token = gateway.cluster_token_file.as_deref().map(read_cluster_token).transpose()?;
        // One identity for the leader Lease and the gateway's demand Lease.
        let identity = controller::leader::identity(identity.as_deref());
        let gateway =
            (!no_gateway).then(|| gateway.config(&namespace, watch_namespace.clone(), identity.clone())).transpose()?;
        let mut config = controller::Config::new(namespace, identity);
        config.cluster_token = cluster_token;
        config.fan_out = usize::from(fan_out);
        config.concurrency = concurrency;
        config.metrics_listen = metrics_listen;
        config.watch_namespace = watch_namespace;
        runtime()?.block_on(async move {
            let client = client().await?;
            let stop = stop_on_signal();
            let served = async {
                match gateway {
                    Some(g) => gateway::run(client.clone(), g, stop.clone()).await.map_err(anyhow::Error::from),
                    None => Ok(()),
                }
            };
            let controlled = async {
                let result = controller::run(client.clone(), config, stop.clone().cancelled_owned()).await;
                // The controller stopping (an error) stops the gateway too: the pod restarts whole.
                stop.cancel();
                result.map_err(anyhow::Error::from)
            };
            tokio::try_join!(served, controlled)?;
            Ok(())
        })
    }
}

impl GatewayOnlyArgs {
    fn run(self) -> anyhow::Result<()> {
        let Self { namespace, watch_namespace, identity, gateway } = self;
        let config = gateway.config(&namespace, watch_namespace, controller::leader::identity(identity.as_deref()))?;
        runtime()?.block_on(async move {
            let client = client().await?;
            gateway::run(client, config, stop_on_signal()).await?;
            Ok(())
        })
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")
}

async fn client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default().await.context("no Kubernetes API: not in a cluster and no usable KUBECONFIG")
}

/// A token cancelled on SIGTERM or Ctrl-C.
fn stop_on_signal() -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        s.cancel();
    });
    stop
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

/// Writes one file per CRD into `dir`, creating it if needed.
pub fn write_crd_files(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for file in crds::crd_files()? {
        let path = dir.join(&file.file_name);
        fs::write(&path, &file.contents).with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "wrote CRD");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn every_flag_reads_an_env_var() {
        let missing = api_types::log::flags_without_env(&Args::command());
        assert!(missing.is_empty(), "flags without an env var: {missing:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), std::time::Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), std::time::Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), std::time::Duration::from_secs(120));
        assert_eq!(parse_duration("5").unwrap(), std::time::Duration::from_secs(5));
        assert_eq!(parse_duration("1h").unwrap(), std::time::Duration::from_secs(3600));
        assert!(parse_duration("5d").is_err() && parse_duration("fast").is_err());
    }

    #[test]
    fn crd_writes_one_file_per_kind() {
        let dir = std::env::temp_dir().join(format!("rl-crd-test-{}", std::process::id()));
        write_crd_files(&dir).expect("write");
        let mut names: Vec<_> = fs::read_dir(&dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        names.sort();
        assert_eq!(names, ["boards.rockchipllama.io.yaml", "modeldeployments.rockchipllama.io.yaml"]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
