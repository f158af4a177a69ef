//! `rockchip-llama-operator`: see `rockchip_llama_operator::cli` for the commands.

use clap::Parser;
use rockchip_llama_operator::cli::Args;

fn main() -> anyhow::Result<()> {
    Args::parse().run()
}
