//! `rockchip-llama-agent`: see `agent::cli`.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::{EnvFilter, fmt};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = agent::cli::Cli::parse();
    let filter = EnvFilter::try_from_env("ROCKCHIP_LLAMA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        agent::cli::LogFormat::Json => builder.json().init(),
        agent::cli::LogFormat::Text => builder.init(),
    }
    match cli.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
