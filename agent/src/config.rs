//! The agent's config file (`--config`): per-model settings — every setting a ModelDeployment
//! carries, plus aliases, LoRA adapters and Jinja templates. YAML (JSON is accepted too, being
//! YAML). It produces the same `settings::ModelSettings` a Board entry does. Request fields
//! override these; these override the built-in defaults.
//!
//! ```yaml
//! defaults:
//!   context: 4096
//!   keep_alive: 5m
//!   sampling: { temperature: 0.7 }
//! models:
//!   smollm2-135m-instruct:
//!     aliases: [smol]
//!     context: 2048
//!     keep_alive: -1
//!     max_tokens: 256
//!     system: "You are terse."
//!     sampling: { temperature: 0.2, top_k: 20 }
//!   qwen3-0.6b:                      # an RKLLM model on the NPU
//!     n_batch: 4                     # sequences per rkllm_run (multi-batch)
//!     npu_cores: 3                   # the file must have been converted for 3 NPU cores
//!     thinking: true                 # reason unless a request says otherwise
//!     chat_template: { system: "<|im_start|>system\nBe brief.<|im_end|>\n",
//!                      prefix: "<|im_start|>user\n", postfix: "<|im_end|>\n<|im_start|>assistant\n" }
//!     prompt_caches: ["You are a ship expert."]   # prefilled once per load
//!     loras: { sql: qwen3-sql_lora.rkllm }   # selected as model "qwen3-0.6b:sql"
//! ```

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;

use crate::{
    engine::SamplingParams,
    keepalive::KeepAlive,
    settings::{ModelSettings, TemplateOverride},
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub defaults: ModelConfig,
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
}

/// Settings for one model (or for all, under `defaults`). Every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Context window per sequence, in tokens.
    pub context: Option<u32>,
    /// A duration (`5m`), seconds, or negative for forever.
    pub keep_alive: Option<serde_json::Value>,
    /// Default cap on generated tokens when a request sets none.
    pub max_tokens: Option<u32>,
    /// System prompt added when a chat has none.
    pub system: Option<String>,
    /// A chat template replacing the one in the model file: a Jinja string, or RKLLM's
    /// `{system, prefix, postfix}` parts.
    pub chat_template: Option<TemplateOverride>,
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// Sequences decoded together (1–8; RKLLM `n_batch`, llama.cpp parallel slots); overrides
    /// `--parallel` for this model, as a ModelDeployment's `runtime.nBatch` does.
    pub n_batch: Option<u32>,
    /// RKLLM: the NPU cores the file must have been converted for (checked at load).
    pub npu_cores: Option<u32>,
    /// RKLLM: keep word embeddings in the model file (overrides `--rkllm-embed-flash`).
    pub embed_flash: Option<bool>,
    /// Reason by default on models that can, unless a request says otherwise.
    pub thinking: Option<bool>,
    /// Prompt prefixes prefilled once per load: the rendered text for GGUF models, the system
    /// prompt for RKLLM models.
    #[serde(default)]
    pub prompt_caches: Vec<String>,
    /// RKLLM: LoRA adapters by name → file (relative to the models directory), selected with the
    /// model name `base:adapter`.
    #[serde(default)]
    pub loras: BTreeMap<String, std::path::PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    pub temperature: Option<f32>,
    pub top_k: Option<i32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<u32>,
}

impl SamplingConfig {
    pub fn apply(&self, p: &mut SamplingParams) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { p.$f = v; } )* };
        }
        set!(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty);
        if self.seed.is_some() {
            p.seed = self.seed;
        }
    }
}

/// Why the config file could not be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let cfg: Self = serde_saphyr::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: shown.clone(), message: e.to_string() })?;
        cfg.validate().map_err(|message| ConfigError::Invalid { path: shown, message })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        for (name, m) in
            std::iter::once(("defaults", &self.defaults)).chain(self.models.iter().map(|(k, v)| (k.as_str(), v)))
        {
            if let Some(v) = &m.keep_alive {
                KeepAlive::from_json(v).map_err(|e| format!("{name}: {e}"))?;
            }
            let mut p = SamplingParams::default();
            m.sampling.apply(&mut p);
            p.validate().map_err(|e| format!("{name}.sampling: {e}"))?;
            if m.context == Some(0) {
                return Err(format!("{name}: context must be positive"));
            }
            if m.npu_cores.is_some_and(|n| !(1..=3).contains(&n)) {
                return Err(format!("{name}: npu_cores must be between 1 and 3 (RK3588 has 3)"));
            }
            if m.n_batch.is_some_and(|n| !(1..=8).contains(&n)) {
                return Err(format!("{name}: n_batch must be between 1 and 8 (the runtime's limit)"));
            }
            if let Some(bad) = m.loras.keys().find(|k| k.is_empty() || k.contains(':')) {
                return Err(format!("{name}: LoRA name {bad:?} must be non-empty and contain no ':'"));
            }
        }
        Ok(())
    }

    /// Settings for the model called `name` (its friendly name): its section over `defaults`.
    pub fn effective(&self, name: &str) -> ModelSettings {
        let own = self.models.get(name);
        let pick = |f: fn(&ModelConfig) -> Option<&serde_json::Value>| own.and_then(f).or(f(&self.defaults)).cloned();
        let mut sampling = SamplingParams::default();
        self.defaults.sampling.apply(&mut sampling);
        if let Some(m) = own {
            m.sampling.apply(&mut sampling);
        }
        let own_or = |f: fn(&ModelConfig) -> Option<u32>| own.and_then(f).or(f(&self.defaults));
        let own_or_bool = |f: fn(&ModelConfig) -> Option<bool>| own.and_then(f).or(f(&self.defaults));
        ModelSettings {
            aliases: own.map(|m| m.aliases.clone()).unwrap_or_default(),
            context: own.and_then(|m| m.context).or(self.defaults.context),
            keep_alive: pick(|m| m.keep_alive.as_ref()).and_then(|v| KeepAlive::from_json(&v).ok()),
            max_tokens: own.and_then(|m| m.max_tokens).or(self.defaults.max_tokens),
            system: own.and_then(|m| m.system.clone()).or_else(|| self.defaults.system.clone()),
            chat_template: own.and_then(|m| m.chat_template.clone()).or_else(|| self.defaults.chat_template.clone()),
            sampling,
            n_batch: own_or(|m| m.n_batch),
            npu_cores: own_or(|m| m.npu_cores),
            embed_flash: own_or_bool(|m| m.embed_flash),
            thinking: own_or_bool(|m| m.thinking),
            prompt_caches: own
                .map(|m| m.prompt_caches.clone())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| self.defaults.prompt_caches.clone()),
            loras: own.map(|m| m.loras.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_section_overrides_defaults() {
        let cfg: Config = serde_saphyr::from_str(
            "defaults:\n  context: 4096\n  keep_alive: 5m\n  sampling: {temperature: 0.7}\nmodels:\n  a:\n    context: 2048\n    keep_alive: -1\n    sampling: {top_k: 5}\n",
        )
        .unwrap();
        cfg.validate().unwrap();
        let a = cfg.effective("a");
        assert_eq!(a.context, Some(2048));
        assert_eq!(a.keep_alive, Some(KeepAlive::Forever));
        assert_eq!((a.sampling.temperature, a.sampling.top_k), (0.7, 5));
        let b = cfg.effective("b");
        assert_eq!(b.context, Some(4096));
        assert_eq!(b.keep_alive, Some(KeepAlive::For(std::time::Duration::from_secs(300))));
    }

    #[test]
    fn bad_values_are_rejected_with_their_place() {
        let cfg: Config = serde_saphyr::from_str("models:\n  a:\n    sampling: {top_p: 3}\n").unwrap();
        assert!(cfg.validate().unwrap_err().contains("a.sampling: top_p"));
        assert!(serde_saphyr::from_str::<Config>("defaults:\n  nonsense: 1\n").is_err());
    }
}
