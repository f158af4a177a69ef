//! OpenAI request bodies (`/v1/*`), as clients send them. llama.cpp's server extensions
//! (`top_k`, `min_p`, `repeat_penalty`, `ignore_eos`, `timings`) are part of the shape because
//! llama.cpp users send them to any OpenAI-compatible server.

use serde::{Deserialize, Serialize};
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

// === Responses ===
//
// What the agent answers and the gateway aggregates. Optional fields are left out when unset,
// except where OpenAI's own API sends `null` (`content` next to tool calls, `finish_reason` of a
// streamed chunk, `logprobs`).

/// Token counts of one request, from the engine's own counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose KV entries were reused.
    pub cached_tokens: u32,
}

/// llama.cpp server's `timings` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub cache_n: u32,
    pub prompt_n: u32,
    pub prompt_ms: f64,
    pub prompt_per_token_ms: f64,
    pub prompt_per_second: f64,
    pub predicted_n: u32,
    pub predicted_ms: f64,
    pub predicted_per_token_ms: f64,
    pub predicted_per_second: f64,
}

/// A function call the model asked for; `arguments` is a JSON text, as OpenAI sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Position in a streamed `tool_calls` delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

/// The assistant's message of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// `null` when the answer is only tool calls.
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ChatMessage,
    pub finish_reason: String,
    pub logprobs: Option<Value>,
}

/// `POST /v1/chat/completions` answer (`object: "chat.completion"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

/// What one streamed chunk adds to the message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: ChatDelta,
    pub finish_reason: Option<String>,
    pub logprobs: Option<Value>,
}

/// One SSE chunk of a streamed chat completion (`object: "chat.completion.chunk"`); the usage
/// chunk has no choices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub finish_reason: Option<String>,
    pub logprobs: Option<Value>,
}

/// `POST /v1/completions` answer, and each of its streamed chunks (`object: "text_completion"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

/// What the agent adds to OpenAI's model object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub file: String,
    pub format: String,
    pub context_length: u32,
    pub size: u64,
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    pub meta: ModelMeta,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}

/// A vector as `encoding_format` asked: floats, or base64 of little-endian float32.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    pub object: String,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingList {
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

/// One resident model (`GET /v1/models/loaded`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadedModel {
    pub id: String,
    pub engine: String,
    pub context_length: u32,
    pub size: u64,
    pub in_use: usize,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadedList {
    pub object: String,
    pub data: Vec<LoadedModel>,
}

/// `POST /v1/models/load`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    pub model: String,
    pub loaded: bool,
    pub load_duration_ms: f64,
}

/// `POST /v1/models/unload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnloadResult {
    pub model: String,
    pub was_loaded: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn content_is_null_next_to_tool_calls_and_chunks_omit_what_is_unset() {
        let m = ChatMessage {
            role: "assistant".into(),
            content: None,
            reasoning_content: None,
            tool_calls: Some(vec![ToolCall {
                index: None,
                id: "call_1".into(),
                kind: "function".into(),
                function: FunctionCall { name: "f".into(), arguments: "{}".into() },
            }]),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["content"], Value::Null);
        assert_eq!(v["tool_calls"][0]["type"], "function");
        assert!(v["tool_calls"][0].get("index").is_none());
        let d = ChatDelta { content: Some("x".into()), ..ChatDelta::default() };
        assert_eq!(serde_json::to_value(&d).unwrap(), json!({"content": "x"}));
        let c = ChunkChoice { index: 0, delta: d, finish_reason: None, logprobs: None };
        let v = serde_json::to_value(&c).unwrap();
        assert!(v["finish_reason"].is_null() && v.get("finish_reason").is_some(), "OpenAI sends null: {v}");
    }
}
