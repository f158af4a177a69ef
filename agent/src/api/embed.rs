//! Embeddings: OpenAI `POST /v1/embeddings` and Ollama `POST /api/embed`. The vectors come from
//! the engine (RKLLM: the last hidden layer, mean-pooled and L2-normalised); engines without
//! embeddings answer 400 in the API's own error shape.

use std::time::Instant;

use axum::{Json, extract::State, response::IntoResponse};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{
    AppState,
    error::{AppError, OaiError, OaiJson, OllamaError, OllamaJson},
    infer,
    ollama::parse_keep_alive,
};
use crate::engine::Embeddings;

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

fn inputs(v: &Value) -> Result<Vec<String>, AppError> {
    let list = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| AppError::bad("input", "input must be a string or a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(AppError::bad("input", "input must be a non-empty string or list of strings")),
    };
    if list.iter().any(String::is_empty) {
        return Err(AppError::bad("input", "input strings must not be empty"));
    }
    Ok(list)
}

async fn run(
    st: &AppState,
    model: &str,
    input: Vec<String>,
    keep_alive: Option<crate::keepalive::KeepAlive>,
) -> Result<(String, Embeddings, std::time::Duration), AppError> {
    let entry = infer::find_model(st, model)?;
    let was_resident = st.sched.resident(&entry.name).is_some();
    let lease = st.sched.acquire(&entry, st.sched.keep_alive_for(&entry, keep_alive)).await?;
    let load = if was_resident { std::time::Duration::ZERO } else { lease.resident.load_duration };
    let rx = lease.resident.instance.embed(input);
    let e = rx.await.map_err(|_| AppError::Internal("the engine dropped the embedding request".into()))??;
    Ok((entry.name.clone(), e, load))
}

#[utoipa::path(post, path = "/v1/embeddings", tag = "openai", request_body = EmbeddingRequest,
    responses((status = 200, description = "A list of embedding objects"), (status = 400, description = "Invalid request or the model has no embeddings"),
              (status = 404, description = "Unknown model")))]
pub async fn openai_embeddings(
    State(st): State<AppState>,
    OaiJson(req): OaiJson<EmbeddingRequest>,
) -> Result<impl IntoResponse, OaiError> {
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(
                AppError::bad("encoding_format", format!("encoding_format {other:?} is not float or base64")).into()
            );
        }
    };
    if req.dimensions.is_some() {
        return Err(AppError::bad("dimensions", "dimensions is not supported; vectors have the model's size").into());
    }
    let (model, e, _) = run(&st, &req.model, inputs(&req.input)?, None).await?;
    let data: Vec<Value> = e
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 { Value::String(to_base64(v)) } else { json!(v) };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens},
    })))
}

/// OpenAI's `base64` encoding: the vector's float32 values, little-endian, base64-encoded.
fn to_base64(v: &[f32]) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[utoipa::path(post, path = "/api/embed", tag = "ollama", request_body = EmbedRequest,
    responses((status = 200, description = "Embeddings"), (status = 400, description = "Invalid request or the model has no embeddings"),
              (status = 404, description = "Unknown model")))]
pub async fn ollama_embed(
    State(st): State<AppState>,
    OllamaJson(req): OllamaJson<EmbedRequest>,
) -> Result<impl IntoResponse, OllamaError> {
    let t0 = Instant::now();
    let ka = parse_keep_alive(req.keep_alive.as_ref())?;
    let (model, e, load) = run(&st, &req.model, inputs(&req.input)?, ka).await?;
    Ok(Json(json!({
        "model": model, "embeddings": e.vectors,
        "total_duration": t0.elapsed().as_nanos() as u64, "load_duration": load.as_nanos() as u64,
        "prompt_eval_count": e.prompt_tokens,
    })))
}
