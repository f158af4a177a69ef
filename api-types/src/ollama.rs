//! Ollama request bodies (`/api/*`), as Ollama's clients send them. Ollama's older spellings
//! (`name` for `model`) are accepted where its server accepts them.

use serde::Deserialize;
use serde_json::Value;
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
