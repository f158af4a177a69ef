//! Where models come from, as flags: shared by `serve`, `models` and `doctor`.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{Catalog, Registry};
use crate::config::Config;

/// Where models come from.
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

/// The catalog or the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("loading the catalog: {0}")]
    Catalog(#[from] super::catalog::CatalogError),
    #[error("loading the config file: {0}")]
    Config(#[from] crate::config::ConfigError),
}

fn default_models_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from("models"), |h| Path::new(&h).join(".cache/rockchip-llama/models"))
}

impl ModelArgs {
    /// The registry these flags describe, scanned once.
    pub fn open(&self) -> Result<Registry, OpenError> {
        let catalog = Catalog::load(self.catalog.as_deref())?;
        let config = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        Ok(Registry::new(self.models_dir.clone(), catalog, config))
    }
}
