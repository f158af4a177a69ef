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

use crate::controller;

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
    /// replicas may run). Reaches the API server in-cluster, or through KUBECONFIG.
    Run(RunArgs),
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

    /// Reconcile only the ModelDeployments of this namespace; all namespaces when unset.
    #[arg(long, env = "ROCKCHIP_LLAMA_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
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
        let Self { namespace, identity, fan_out, concurrency, metrics_listen, watch_namespace } = self;
        let mut config = controller::Config::new(namespace, controller::leader::identity(identity.as_deref()));
        config.fan_out = usize::from(fan_out);
        config.concurrency = concurrency;
        config.metrics_listen = metrics_listen;
        config.watch_namespace = watch_namespace;
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
        runtime.block_on(async move {
            let client = kube::Client::try_default()
                .await
                .context("no Kubernetes API: not in a cluster and no usable KUBECONFIG")?;
            controller::run(client, config, shutdown_signal()).await?;
            Ok(())
        })
    }
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
