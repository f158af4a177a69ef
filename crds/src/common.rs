//! Types used by both kinds: where a model file comes from, which engine runs it, and the runtime
//! and sampling parameters the controller copies from a ModelDeployment into each Board it picks.
//!
//! Doc comments on fields are the text of `kubectl explain`, so they are written for users.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the model file comes from and how to verify it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!(self.url.startsWith('https://') || self.url.startsWith('http://')) || has(self.sha256)"
).message(
    "source.sha256 is required when source.url is http:// or https://: give the file's SHA-256 \
     (64 hex characters, as printed by sha256sum)"
))]
pub struct ModelSource {
    /// Location of the model file: `https://` or `http://` (downloaded by each board, then
    /// verified against sha256), or `file:///path` (a file already on the board's disk).
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = Rule::new(
        "self.startsWith('https://') || self.startsWith('http://') || self.startsWith('file:///')"
    ).message("source.url must start with https://, http:// or file:/// (an absolute path on the board)"))]
    pub url: String,

    /// SHA-256 of the file, 64 lowercase hex characters. Required for network URLs: boards refuse a
    /// download whose digest differs, and the digest names the file in each board's model store so
    /// peers can serve it to each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-f]{64}$')")
        .message("source.sha256 must be 64 lowercase hex characters (the output of sha256sum)"))]
    pub sha256: Option<String>,

    /// Size of the file in bytes. Optional; when set, the controller only places replicas on
    /// boards whose model store has room before any download starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("source.sizeBytes must be positive"))]
    pub size_bytes: Option<i64>,
}

/// File format of a model, which selects the engine that runs it.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// A `.rkllm` file converted by rkllm-toolkit, run on the NPU by the vendor runtime.
    Rkllm,
    /// A GGUF file, run on the CPU by llama.cpp (boards without an NPU, or CPU-only models).
    Gguf,
}

/// Schema of an enum field as a plain string. Its CEL rule then does the checking: the API
/// server stops at a failed `enum` before running any CEL rule, and the rule's message names the
/// allowed values and what they mean, where the `enum` error would only list them.
pub(crate) fn plain_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string" })
}

impl ModelFormat {
    /// The spelling used in manifests and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rkllm => "rkllm",
            Self::Gguf => "gguf",
        }
    }
}

/// Engine parameters fixed when a model is loaded; changing them reloads the model.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeParams {
    /// Context window in tokens (prompt plus generated text). Must be a multiple of 32 and at
    /// most 131072; for `.rkllm` files it must also not exceed the context the file was
    /// converted with (e.g. 16384 for a `ctx16384` file), which the board reports when loading.
    #[serde(default = "default_max_context_len")]
    #[x_kube(validation = Rule::new("self >= 32 && self % 32 == 0")
        .message("runtime.maxContextLen must be a positive multiple of 32"))]
    #[x_kube(validation = Rule::new("self <= 131072")
        .message("runtime.maxContextLen must be at most 131072"))]
    pub max_context_len: i32,

    /// Upper bound on tokens generated per request when the request sets none. Unset: until
    /// the context is full or the model stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("runtime.maxNewTokens must be at least 1"))]
    pub max_new_tokens: Option<i32>,

    /// Requests decoded together in one engine instance (RKLLM `n_batch`, llama.cpp parallel
    /// sequences). 1 to 8: the vendor recommends at most 8 on the NPU.
    #[serde(default = "default_n_batch")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 8")
        .message("runtime.nBatch must be between 1 and 8"))]
    pub n_batch: i32,

    /// NPU cores one instance uses (RK3588 has 3). Unset: all cores of the board's NPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3")
        .message("runtime.npuCores must be between 1 and 3"))]
    pub npu_cores: Option<i32>,

    /// Read word embeddings from the model file instead of RAM (RKLLM `embed_flash`): saves
    /// memory on small boards at some speed cost. Ignored for GGUF models.
    #[serde(default)]
    pub embed_flash: bool,

    /// How long a loaded model stays in memory after its last request, as a duration such as
    /// `30s`, `5m` or `1h`; `0` unloads at once, `-1` keeps it loaded for ever (Ollama's
    /// `keep_alive`). Requests may override it.
    #[serde(default = "default_keep_alive")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self == '-1' || self == '0' || self.matches('^([0-9]+(ms|s|m|h))+$')")
        .message("runtime.keepAlive must be a duration like 30s, 5m or 1h, or 0, or -1"))]
    pub keep_alive: String,
}

fn default_max_context_len() -> i32 {
    4096
}

fn default_n_batch() -> i32 {
    1
}

fn default_keep_alive() -> String {
    "5m".to_owned()
}

impl Default for RuntimeParams {
    fn default() -> Self {
        Self {
            max_context_len: default_max_context_len(),
            max_new_tokens: None,
            n_batch: default_n_batch(),
            npu_cores: None,
            embed_flash: false,
            keep_alive: default_keep_alive(),
        }
    }
}

/// Default sampling for requests that do not set their own; unset fields use the engine's
/// defaults (for RKLLM the vendor's: temperature 0.8, topK 1, topP 0.9, repeatPenalty 1.1).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sampling {
    /// Randomness of sampling, 0 (greedy) to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 2.0")
        .message("sampling.temperature must be between 0 and 2"))]
    pub temperature: Option<f64>,

    /// Sample only among the K most likely tokens; 0 disables the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("sampling.topK must be 0 or more"))]
    pub top_k: Option<i32>,

    /// Nucleus sampling: sample among the most likely tokens whose probabilities sum to topP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0")
        .message("sampling.topP must be greater than 0 and at most 1"))]
    pub top_p: Option<f64>,

    /// Penalty for repeating recent tokens; 1 means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("sampling.repeatPenalty must be positive"))]
    pub repeat_penalty: Option<f64>,

    /// Penalty proportional to how often a token already appeared (OpenAI
    /// `frequency_penalty`), -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= -2.0 && self <= 2.0")
        .message("sampling.frequencyPenalty must be between -2 and 2"))]
    pub frequency_penalty: Option<f64>,

    /// Penalty for any token that already appeared (OpenAI `presence_penalty`), -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= -2.0 && self <= 2.0")
        .message("sampling.presencePenalty must be between -2 and 2"))]
    pub presence_penalty: Option<f64>,
}

/// Overrides the chat template that comes with the model (RKLLM `rkllm_set_chat_template`).
/// The prompt becomes `system` + `prefix` + user message + `postfix`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatTemplate {
    /// Text placed once before the conversation, including the model's system-turn markers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Text placed before each user message (e.g. `<|im_start|>user\n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Text placed after each user message (e.g. `<|im_end|>\n<|im_start|>assistant\n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postfix: Option<String>,
}

/// A prompt prefix whose prefill is computed once when the model loads and reused by every
/// request that starts with it (RKLLM prompt cache), which cuts time to first token for a long
/// shared system prompt.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromptCache {
    /// Name of this cache, unique within the list.
    pub name: String,
    /// The text to prefill, exactly as it appears at the start of requests.
    pub prompt: String,
}

/// Progress of one model on one board.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, JsonSchema)]
pub enum ModelPhase {
    /// Assigned, waiting for a download or load slot.
    Pending,
    /// The file is being fetched from the origin or a peer board.
    Downloading,
    /// The file is verified and in the store; not loaded (desired state `Cached`).
    Cached,
    /// The engine is loading the file into memory.
    Loading,
    /// Loaded and serving requests.
    Ready,
    /// Download, verification or load failed; the message says why.
    Failed,
}
