//! Ollama request bodies (`/api/*`), as Ollama's clients send them. Ollama's older spellings
//! (`name` for `model`) are accepted where its server accepts them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Modelfile `options` the agent honours; others are accepted and ignored (see docs/api.md).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct Options {
    /// Tokens to generate; -1 = until the context is full.
    pub num_predict: Option<i64>,
    /// Caps prompt plus generation within the model's loaded context window.
    pub num_ctx: Option<u32>,
    pub temperature: Option<f32>,
    pub top_k: Option<i32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    #[schema(schema_with = crate::schema::stop)]
    pub stop: Option<Value>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
}

/// `POST /api/chat` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}], "stream": false, "options": {"num_predict": 8}}))]
pub struct ChatRequest {
    pub model: String,
    #[serde(default)]
    #[schema(schema_with = crate::schema::ollama_messages, required = false)]
    pub messages: Vec<Value>,
    #[schema(schema_with = crate::schema::tools)]
    pub tools: Option<Vec<Value>>,
    /// `"json"` or a JSON schema.
    #[schema(schema_with = crate::schema::format)]
    pub format: Option<Value>,
    pub options: Option<Options>,
    /// Defaults to true.
    pub stream: Option<bool>,
    /// A duration (`"5m"`), seconds, negative = forever, 0 = unload after this request.
    #[schema(schema_with = crate::schema::keep_alive)]
    pub keep_alive: Option<Value>,
    /// Thinking is not supported by the CPU test models; `true` is refused.
    #[schema(schema_with = crate::schema::think)]
    pub think: Option<Value>,
}

/// `POST /api/generate` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"model": "smollm2-135m-instruct", "prompt": "Why is the sky blue?", "stream": false, "options": {"num_predict": 8}}))]
pub struct GenerateRequest {
    pub model: String,
    #[serde(default)]
    #[schema(required = false)]
    pub prompt: String,
    pub system: Option<String>,
    /// Send the prompt without the chat template.
    pub raw: Option<bool>,
    /// Not supported; refused when non-empty.
    pub suffix: Option<String>,
    /// Go templates are not supported; refused when non-empty.
    pub template: Option<String>,
    #[schema(schema_with = crate::schema::format)]
    pub format: Option<Value>,
    pub options: Option<Options>,
    pub stream: Option<bool>,
    #[schema(schema_with = crate::schema::keep_alive)]
    pub keep_alive: Option<Value>,
    #[schema(schema_with = crate::schema::images)]
    pub images: Option<Vec<Value>>,
    #[schema(schema_with = crate::schema::think)]
    pub think: Option<Value>,
}

/// `POST /api/show` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ShowRequest {
    /// `name` is accepted as an older spelling.
    #[serde(alias = "name")]
    pub model: String,
    #[serde(default)]
    pub verbose: bool,
}

/// `DELETE /api/delete` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeleteRequest {
    #[serde(alias = "name")]
    pub model: String,
}

/// `POST /api/pull` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PullRequest {
    /// A catalog name, or an http(s) URL of the file.
    #[serde(alias = "name")]
    pub model: String,
    /// URL of the file when `model` is the name to store it as.
    pub url: Option<String>,
    /// Required for URLs the catalog does not pin.
    pub sha256: Option<String>,
    pub stream: Option<bool>,
    /// Accepted for compatibility; TLS is always verified.
    pub insecure: Option<bool>,
}

/// `POST /api/embed` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"model": "qwen3-0.6b", "input": "Why is the sky blue?"}))]
pub struct EmbedRequest {
    pub model: String,
    /// A string or a list of strings.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Accepted; inputs longer than the context fail instead of being truncated.
    pub truncate: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub keep_alive: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub options: Option<Value>,
}

// === Responses ===

/// A call the model asked for; Ollama sends `arguments` as an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub function: ToolFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolFunction {
    pub index: usize,
    pub name: String,
    pub arguments: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// Durations (nanoseconds) and counts of a finished request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: u32,
    pub prompt_eval_duration: u64,
    pub eval_count: u32,
    pub eval_duration: u64,
}

/// One NDJSON line of `/api/chat`, or its whole answer (`done: true` carries the stats).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub model: String,
    pub created_at: String,
    pub message: Message,
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
}

/// One NDJSON line of `/api/generate`, or its whole answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateResponse {
    pub model: String,
    pub created_at: String,
    pub response: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Details {
    pub parent_model: String,
    pub format: String,
    pub family: String,
    pub families: Option<Vec<String>>,
    pub parameter_size: String,
    pub quantization_level: String,
}

/// One model of `GET /api/tags`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagModel {
    pub name: String,
    pub model: String,
    pub modified_at: String,
    pub size: u64,
    pub digest: String,
    pub details: Details,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tags {
    pub models: Vec<TagModel>,
}

/// One resident model of `GET /api/ps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PsModel {
    pub name: String,
    pub model: String,
    pub size: u64,
    pub digest: String,
    pub details: Details,
    pub expires_at: String,
    pub size_vram: u64,
    pub context_length: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ps {
    pub models: Vec<PsModel>,
}

/// `POST /api/show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Show {
    pub modelfile: String,
    pub parameters: String,
    pub template: String,
    pub system: String,
    pub license: String,
    pub details: Details,
    pub model_info: Map<String, Value>,
    pub capabilities: Vec<String>,
    pub modified_at: String,
}

/// `GET /api/version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: String,
}

/// One NDJSON line of `/api/pull`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
}

/// `POST /api/embed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedResponse {
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: u32,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pieces_leave_out_what_is_unset_and_the_last_carries_stats() {
        let mut r = ChatResponse {
            model: "m:latest".into(),
            created_at: "t".into(),
            message: Message { role: "assistant".into(), content: "Hi".into(), thinking: None, tool_calls: None },
            done: false,
            done_reason: None,
            stats: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"model": "m:latest", "created_at": "t", "done": false, "message": {"role": "assistant", "content": "Hi"}})
        );
        (r.done, r.done_reason, r.stats) =
            (true, Some("stop".into()), Some(Stats { eval_count: 3, ..Stats::default() }));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!((v["eval_count"].as_u64(), v["done_reason"].as_str()), (Some(3), Some("stop")), "flattened: {v}");
        let back: ChatResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, r, "the gateway reads what the agent writes");
    }
}
