//! The engine boundary (docs/architecture.md §2, "Engines").
//!
//! An [`Engine`] loads a model file and returns an [`Instance`]; an instance accepts generation
//! requests and answers each with a stream of [`Event`]s: zero or more `Token`s, then exactly one
//! `Done` or `Error`. Everything the HTTP layer reports about speed and token counts comes from the
//! [`Perf`] record in `Done`, never from an estimate.
//!
//! ```text
//!   serve ──GenRequest──► Instance::submit ──► engine thread (llama.cpp | RKLLM)
//!   serve ◄──Event stream (Token…, Done|Error) ◄──────┘
//! ```
//!
//! What differs between engines stays behind this boundary: how many sequences an instance
//! decodes together ([`Engine::slots`]), where its accelerator memory comes from (the RKLLM
//! engine packs instances into NPU memory domains and says [`EngineError::is_capacity`] when
//! evicting an idle instance would make room), and how a wanted output format is enforced (a
//! grammar on llama.cpp; nothing on RKLLM, whose output the caller checks).
//!
//! ```text
//! ```

pub mod llama;
#[cfg(test)]
pub mod mock;
pub mod rkllm;
pub mod sampling;
pub mod stop;

use std::{path::PathBuf, sync::Arc};

use serde::Deserialize;
use tokio::sync::mpsc;

pub use sampling::{SamplingError, SamplingParams};

/// Why a generation ended. Maps to OpenAI `finish_reason` and Ollama `done_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a request stop string.
    Stop,
    /// `max_tokens` / `num_predict` or the context window was reached.
    Length,
    /// The client went away; nobody reads this, but the engine records it.
    Cancelled,
}

/// Timings and counts measured by the engine for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Perf {
    /// Prompt tokens evaluated in this request (excludes the reused prefix).
    pub prompt_eval_tokens: u32,
    /// Total prompt tokens including the reused prefix.
    pub prompt_tokens: u32,
    /// Prompt tokens whose KV entries were reused from an earlier request.
    pub cached_tokens: u32,
    /// Wall time spent evaluating the prompt, up to the first sampled token.
    pub prefill_ms: f64,
    /// Tokens generated (sampled), including the one that ended generation when it was text.
    pub generated_tokens: u32,
    /// Wall time from the first sampled token to the end.
    pub generate_ms: f64,
    /// Time spent waiting in the queue before the engine picked the request up.
    pub queue_ms: f64,
    /// Peak memory the runtime reported for the run (RKLLM `memory_usage_mb`), when it reports one.
    pub memory_mb: Option<f32>,
    /// What happened with an on-disk prompt cache (RKLLM).
    pub prompt_cache: Option<PromptCacheUse>,
}

/// Use of an on-disk prompt-cache file by one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptCacheUse {
    /// An existing file was loaded before the run.
    Loaded,
    /// The run wrote a new file.
    Created,
}

/// A conversation for engines that apply the model's chat template themselves (RKLLM).
#[derive(Debug, Clone, Default)]
pub struct ChatInput {
    /// The system prompt ("" for none).
    pub system: String,
    /// Normalised messages without the system message.
    pub messages: Vec<serde_json::Value>,
    /// The OpenAI tool array, when the request offers tools.
    pub tools: Option<serde_json::Value>,
}

/// Output the client asked to be constrained to.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON matching this schema.
    Schema(serde_json::Value),
}

/// One generation request, already rendered to a prompt string by the serve layer (or carrying
/// the conversation for an engine that renders chat itself).
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// The full prompt text, special tokens included (templates render them as text).
    pub prompt: String,
    pub sampling: SamplingParams,
    /// Maximum tokens to generate; `None` = until the context is full.
    pub max_tokens: Option<u32>,
    /// Stop strings; generation ends before them and they are not emitted.
    pub stop: Vec<String>,
    /// The wanted output format. An engine that [constrains output](Instance::constrains_output)
    /// enforces it while decoding; the others ignore it and the caller checks the answer.
    pub format: Option<OutputFormat>,
    /// Keep generating past end-of-generation tokens (benchmarks only).
    pub ignore_eos: bool,
    /// The conversation, set when the instance [renders chat itself](Instance::renders_chat);
    /// `prompt` is then empty.
    pub chat: Option<ChatInput>,
    /// Reasoning asked for (Ollama `think`, OpenAI `reasoning_effort`, `enable_thinking`).
    pub think: bool,
    /// LoRA adapter selected with the model name `base:adapter`.
    pub adapter: Option<String>,
}

/// Sentence embeddings of a batch of inputs.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// One L2-normalised vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the engine evaluated, summed over the inputs.
    pub prompt_tokens: u32,
}

/// What an instance sends back for one request.
#[derive(Debug, Clone)]
pub enum Event {
    /// A piece of text, always valid UTF-8, never part of a stop string.
    Token {
        text: String,
        id: i32,
    },
    Done {
        reason: FinishReason,
        perf: Perf,
    },
    Error(EngineError),
}

/// Static facts about a loaded model that the API layer reports.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    /// Context window per sequence.
    pub n_ctx: u32,
    pub n_ctx_train: u32,
    pub n_params: u64,
    /// Bytes of the weights plus the KV cache as allocated.
    pub size_bytes: u64,
    /// Text of the BOS / EOS tokens, which chat templates may write.
    pub bos: String,
    pub eos: String,
    /// The model can reason in a `<think>` block on request.
    pub thinking: bool,
}

/// The three parts of an RKLLM-style chat template (`rkllm_set_chat_template`): `system` once
/// before the conversation, `prefix` before and `postfix` after each user message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateParts {
    #[serde(default)]
    pub system: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub postfix: String,
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub path: PathBuf,
    /// Context window per parallel sequence.
    pub n_ctx: u32,
    /// Sequences decoded together (slots; RKLLM `n_batch`).
    pub parallel: u32,
    pub threads: u32,
    /// Reuse KV entries of a sequence for a prompt that extends what it already holds.
    pub prefix_cache: bool,
    /// The model's catalog family (chooses an RKLLM chat-template override).
    pub family: Option<String>,
    /// Names the model is known by, most telling first: the file name it was dropped in, pulled
    /// or assigned as, then the served name and aliases. `path` alone may say nothing about the
    /// model: in the store it is `blobs/sha256-<hex>`. RKLLM detects the template family here.
    pub names: Vec<String>,
    /// Sampling fixed at load (RKLLM ABI 1.2 has no per-run sampling).
    pub sampling: SamplingParams,
    /// RKLLM-style template parts replacing the model's (`rkllm_set_chat_template`); GGUF
    /// models get theirs rendered by the serve layer instead.
    pub chat_template: Option<TemplateParts>,
    /// NPU cores the `.rkllm` file must have been converted for; a mismatch fails the load.
    pub npu_cores: Option<u32>,
    /// Keep word embeddings in the model file (RKLLM); `None` = the engine's default.
    pub embed_flash: Option<bool>,
    /// Prompt prefixes to prefill once per load: llama.cpp evaluates each (as text) into a slot's
    /// KV cache. RKLLM does not read them: its prompt-cache file for a system prompt is written by
    /// the first conversation with it (eager creation at load is not implemented; docs/configuration.md).
    pub prompt_caches: Vec<String>,
    /// LoRA adapters to load: `(name, file)`.
    pub loras: Vec<(String, PathBuf)>,
    /// CPUs the engine's threads run on (the board's big cores); empty = no pinning.
    pub cpus: Vec<usize>,
}

/// Errors an engine reports. One enum for the crate's engines; mapped to HTTP in `api::error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("failed to load model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("prompt is {prompt} tokens but the context window is {context} tokens")]
    PromptTooLong { prompt: u32, context: u32 },
    #[error("invalid grammar: {0}")]
    Grammar(String),
    #[error("decode failed: {0}")]
    Decode(String),
    #[error("the model instance has stopped")]
    Stopped,
    /// The engine cannot do this for this model (embeddings on llama.cpp, an unknown adapter).
    #[error("{0}")]
    Unsupported(String),
    /// The runtime reported NPU memory exhausted while loading (rknn-llm #437).
    #[error("NPU memory exhausted: {0}")]
    NpuMemory(String),
    /// No NPU memory domain has room for the model while other NPU models are loaded; checked
    /// before `rkllm_init`, which RKLLM 1.3.0 does not survive on overflow (rknn-llm #522).
    #[error("NPU memory is full: the model needs {need} bytes and the NPU models loaded leave no domain with room")]
    NpuFull { need: u64 },
    /// The model is larger than one NPU memory domain holds; it cannot load on this board.
    #[error("the model needs {need} bytes of NPU memory but a domain holds {budget} (--npu-domain-memory)")]
    NpuTooLarge { need: u64, budget: u64 },
    /// The runtime rejected the input during a run (for example more tokens than the context).
    #[error("{0}")]
    Input(String),
}

impl EngineError {
    /// Whether unloading an idle instance of the same engine may make this load succeed: the
    /// scheduler evicts one and retries while there is one to evict.
    pub fn is_capacity(&self) -> bool {
        matches!(self, Self::NpuFull { .. } | Self::NpuMemory(_))
    }
}

/// A loaded model. Cheap to clone; the engine thread stops when the last clone is dropped and
/// in-flight requests have ended.
pub trait Instance: Send + Sync {
    /// Queue a request. The returned receiver yields the events; dropping it cancels the request
    /// within one decode step. A request the engine can refuse up front (a schema it cannot turn
    /// into a grammar) is refused here, before any response has started.
    fn submit(&self, req: GenRequest) -> Result<mpsc::UnboundedReceiver<Event>, EngineError>;
    /// Count the tokens of `text` as the model's tokenizer would (special tokens parsed);
    /// `None` when the engine has no tokenizer of its own to ask (RKLLM tokenizes inside `run`).
    fn count_tokens(&self, text: &str) -> Option<usize>;
    /// Whether the engine applies the model's chat template itself and wants
    /// [`GenRequest::chat`] instead of a rendered prompt.
    fn renders_chat(&self) -> bool {
        false
    }
    /// Whether a grammar can constrain decoding; without it JSON output is validated afterwards.
    fn constrains_output(&self) -> bool {
        true
    }
    /// Mean-pooled, L2-normalised embeddings of `inputs`.
    fn embed(&self, inputs: Vec<String>) -> tokio::sync::oneshot::Receiver<Result<Embeddings, EngineError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = inputs;
        let _ = tx.send(Err(EngineError::Unsupported("this model's engine does not produce embeddings".into())));
        rx
    }
    fn facts(&self) -> &ModelFacts;
    /// The NPU memory domain the instance occupies (RKLLM), for status.
    fn npu_domain(&self) -> Option<i32> {
        None
    }
    /// Requests the engine is generating for right now (its own view, after cancellations).
    fn busy(&self) -> usize;
}

/// Loads model files into instances.
pub trait Engine: Send + Sync {
    /// Short name for logs and `/api/ps` (`llama.cpp`, `rkllm`).
    fn name(&self) -> &'static str;
    /// Sequences one instance decodes together when `requested` are asked for (the model's
    /// `n_batch`, else `--parallel`); the runtime's own limits apply here.
    fn slots(&self, requested: u32) -> u32 {
        requested.max(1)
    }
    /// Load synchronously; callers run this on a blocking thread.
    fn load(&self, spec: &LoadSpec) -> Result<Arc<dyn Instance>, EngineError>;
}
