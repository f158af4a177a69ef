//! OpenAI request bodies (`/v1/*`), as clients send them. llama.cpp's server extensions
//! (`top_k`, `min_p`, `repeat_penalty`, `ignore_eos`, `timings`) are part of the shape because
//! llama.cpp users send them to any OpenAI-compatible server.

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

/// `stream_options`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a final chunk with `usage` and an empty `choices` list.
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling fields shared by chat and text completions. llama.cpp's extensions (`top_k`,
/// `min_p`, `repeat_penalty`, `ignore_eos`) are accepted too.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct OaiSampling {
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f32>,
    #[schema(minimum = 0, maximum = 1)]
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f32>,
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f32>,
    /// Same seed, same prompt, same settings → same text.
    pub seed: Option<i64>,
    /// A string or a list of up to 16 strings; generation stops before them.
    #[schema(schema_with = crate::schema::stop)]
    pub stop: Option<Value>,
    /// Number of choices; only 1 is supported.
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<u32>,
    /// Keep generating past end-of-generation tokens (llama.cpp extension, for benchmarks).
    pub ignore_eos: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Not supported; `true` is refused.
    pub logprobs: Option<bool>,
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 16}))]
pub struct ChatCompletionRequest {
    pub model: String,
    /// Messages with `role` (system, developer, user, assistant, tool) and `content` (a string
    /// or a list of `{"type": "text", "text": …}` parts).
    #[schema(schema_with = crate::schema::messages)]
    pub messages: Vec<Value>,
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    /// Preferred over `max_tokens` when both are set.
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<u32>,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": {"schema": …}}`.
    #[schema(schema_with = crate::schema::response_format)]
    pub response_format: Option<Value>,
    /// OpenAI function tools.
    #[schema(schema_with = crate::schema::tools)]
    pub tools: Option<Vec<Value>>,
    /// `"none"` disables the tools, `"auto"` lets the model choose, `"required"` or a named
    /// function forces a call (grammar-constrained).
    #[schema(schema_with = crate::schema::tool_choice)]
    pub tool_choice: Option<Value>,
    /// Ask a reasoning model to think first (`minimal`/`low`/`medium`/`high`; `none` = off).
    /// The reasoning comes back as `reasoning_content`.
    #[schema(value_type = Option<String>, example = "low")]
    pub reasoning_effort: Option<String>,
    /// The same switch under the name Rockchip's RKLLM server uses.
    pub enable_thinking: Option<bool>,
    #[serde(flatten)]
    pub sampling: OaiSampling,
}

/// `POST /v1/completions` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"model": "smollm2-135m-instruct", "prompt": "Once upon a time", "max_tokens": 8}))]
pub struct CompletionRequest {
    pub model: String,
    /// A string, or a list holding one string.
    #[schema(schema_with = crate::schema::prompt)]
    pub prompt: Value,
    /// Defaults to 16, as in OpenAI's API.
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    /// Prepend the prompt to the returned text.
    pub echo: Option<bool>,
    /// Not supported; refused when set.
    pub suffix: Option<String>,
    #[serde(flatten)]
    pub sampling: OaiSampling,
}

/// Body of the explicit residency routes.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ModelAction {
    pub model: String,
    /// For load: how long to stay resident when idle (`5m`, seconds, negative = forever).
    #[schema(schema_with = crate::schema::keep_alive)]
    pub keep_alive: Option<Value>,
}

/// `POST /v1/embeddings` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"model": "qwen3-0.6b", "input": ["first text", "second text"]}))]
pub struct EmbeddingRequest {
    pub model: String,
    /// A string or a list of strings (token arrays are not accepted).
    #[schema(value_type = Object)]
    pub input: Value,
    /// `float` (default) or `base64` (little-endian float32 bytes, what the official client asks for).
    pub encoding_format: Option<String>,
    /// Not supported: the model's own size is returned.
    pub dimensions: Option<u32>,
}
