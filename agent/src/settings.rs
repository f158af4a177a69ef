//! One settings model per loaded model: everything a ModelDeployment can say about a model
//! (`runtime`, `sampling`, `chatTemplate`, `thinking`, `promptCaches`) and what the config file
//! adds (aliases, LoRA adapters, a Jinja template). Both sources produce a [`ModelSettings`]:
//! the config file through `config::Config::effective`, a Board entry through
//! [`ModelSettings::from_board_model`]. The scheduler turns it into the engine's `LoadSpec` in
//! one place (`sched::Scheduler::load_spec`); request defaults (sampling, max tokens, thinking,
//! keep-alive) are read from it by the serve layer.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

pub use crate::engine::TemplateParts;
use crate::{engine::SamplingParams, keepalive::KeepAlive};

/// A chat template replacing the model's own.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TemplateOverride {
    /// A Jinja template (GGUF models; rendered by the agent).
    Jinja(String),
    /// RKLLM's three parts (`rkllm_set_chat_template`): `system` once before the conversation,
    /// `prefix` before and `postfix` after each user message. On a GGUF model the agent renders
    /// the same shape itself (assistant turns end with the model's end-of-sequence token).
    Parts(TemplateParts),
}

/// Settings of one model, merged from its sources.
#[derive(Debug, Clone, Default)]
pub struct ModelSettings {
    pub aliases: Vec<String>,
    /// Context window per sequence (`runtime.maxContextLen`).
    pub context: Option<u32>,
    pub keep_alive: Option<KeepAlive>,
    /// Default cap on generated tokens (`runtime.maxNewTokens`).
    pub max_tokens: Option<u32>,
    /// System prompt added when a chat has none.
    pub system: Option<String>,
    pub chat_template: Option<TemplateOverride>,
    pub sampling: SamplingParams,
    /// Sequences decoded together (`runtime.nBatch`; RKLLM `n_batch`, llama.cpp slots).
    pub n_batch: Option<u32>,
    /// NPU cores the `.rkllm` file must have been converted for (`runtime.npuCores`).
    pub npu_cores: Option<u32>,
    /// Keep word embeddings in the model file (`runtime.embedFlash`); `None` = the agent's flag.
    pub embed_flash: Option<bool>,
    /// Default for reasoning when a request does not say (`thinking`), on models that can.
    pub thinking: Option<bool>,
    /// Prompt prefixes prefilled once per load (`promptCaches`).
    pub prompt_caches: Vec<String>,
    /// LoRA adapters by name → file (relative to the models directory).
    pub loras: BTreeMap<String, PathBuf>,
}

/// A Board entry's settings that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SettingsError {
    pub field: &'static str,
    pub message: String,
}

impl ModelSettings {
    /// The settings a Board entry (copied from its ModelDeployment) asks for.
    pub fn from_board_model(m: &crds::BoardModel) -> Result<Self, SettingsError> {
        let bad = |field, message: String| SettingsError { field, message };
        let positive = |field, v: i32| {
            u32::try_from(v).ok().filter(|&n| n > 0).ok_or_else(|| bad(field, format!("{v} is not positive")))
        };
        let rt = &m.runtime;
        let mut sampling = SamplingParams::default();
        if let Some(s) = &m.sampling {
            macro_rules! set {
                ($($f:ident),*) => { $( if let Some(v) = s.$f { sampling.$f = v as f32; } )* };
            }
            set!(temperature, top_p, repeat_penalty, frequency_penalty, presence_penalty);
            if let Some(k) = s.top_k {
                sampling.top_k = k;
            }
        }
        sampling.validate().map_err(|e| bad("sampling", e.to_string()))?;
        let keep_alive = KeepAlive::parse(&rt.keep_alive).map_err(|e| bad("runtime.keepAlive", e.to_string()))?;
        let chat_template = m.chat_template.as_ref().map(|t| {
            TemplateOverride::Parts(TemplateParts {
                system: t.system.clone().unwrap_or_default(),
                prefix: t.prefix.clone().unwrap_or_default(),
                postfix: t.postfix.clone().unwrap_or_default(),
            })
        });
        Ok(Self {
            aliases: m.aliases.clone(),
            context: Some(positive("runtime.maxContextLen", rt.max_context_len)?),
            keep_alive: Some(keep_alive),
            max_tokens: rt.max_new_tokens.map(|n| positive("runtime.maxNewTokens", n)).transpose()?,
            system: None,
            chat_template,
            sampling,
            n_batch: Some(positive("runtime.nBatch", rt.n_batch)?),
            npu_cores: rt.npu_cores.map(|n| positive("runtime.npuCores", n)).transpose()?,
            embed_flash: Some(rt.embed_flash),
            thinking: m.thinking,
            prompt_caches: m.prompt_caches.iter().map(|p| p.prompt.clone()).collect(),
            loras: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board_model(yaml: &str) -> crds::BoardModel {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn a_board_entry_carries_every_setting() {
        let m = board_model(
            "key: default/qwen\nmodel: qwen3\naliases: [q]\nsource: {url: 'file:///m/q.rkllm'}\nformat: rkllm\n\
             runtime: {maxContextLen: 8192, maxNewTokens: 256, nBatch: 4, npuCores: 3, embedFlash: true, keepAlive: 10m}\n\
             sampling: {temperature: 0.2, topK: 5}\n\
             chatTemplate: {system: '<s>', prefix: '<u>', postfix: '<a>'}\nthinking: true\n\
             promptCaches: [{name: ships, prompt: 'You are a ship expert.'}]\n",
        );
        let s = ModelSettings::from_board_model(&m).unwrap();
        assert_eq!((s.context, s.max_tokens, s.n_batch, s.npu_cores), (Some(8192), Some(256), Some(4), Some(3)));
        assert_eq!((s.embed_flash, s.thinking), (Some(true), Some(true)));
        assert_eq!(s.keep_alive, Some(KeepAlive::For(std::time::Duration::from_secs(600))));
        assert_eq!((s.sampling.temperature, s.sampling.top_k), (0.2, 5));
        assert_eq!(
            s.chat_template,
            Some(TemplateOverride::Parts(TemplateParts {
                system: "<s>".into(),
                prefix: "<u>".into(),
                postfix: "<a>".into()
            }))
        );
        assert_eq!(s.prompt_caches, ["You are a ship expert."]);
        assert_eq!(s.aliases, ["q"]);
    }

    #[test]
    fn template_overrides_parse_from_both_shapes() {
        let j: TemplateOverride = serde_saphyr::from_str("'{{ messages }}'").unwrap();
        assert_eq!(j, TemplateOverride::Jinja("{{ messages }}".into()));
        let p: TemplateOverride = serde_saphyr::from_str("{prefix: 'U:', postfix: 'A:'}").unwrap();
        assert!(matches!(p, TemplateOverride::Parts(TemplateParts { ref prefix, .. }) if prefix == "U:"));
    }
}
