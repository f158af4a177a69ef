//! `rockchip-llama-agent`: see `agent::cli`. The only place the process's exit code is decided.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = agent::cli::Cli::parse();
    if let Err(e) = cli.log.init() {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    match cli.run().await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
