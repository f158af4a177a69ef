//! Command line. Every flag also reads an environment variable, because the chart configures the
//! operator through env.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::Context;
use api_types::log::LogArgs;
use clap::{Parser, Subcommand};

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
