//! Embeddings: OpenAI `POST /v1/embeddings` and Ollama `POST /api/embed`. The vectors come from
//! the engine (RKLLM: the last hidden layer, mean-pooled and L2-normalised); engines without
//! embeddings answer 400 in the API's own error shape.

use std::time::Instant;

use api_types::{
    ApiError, OllamaError, OllamaJson, OpenAiError, OpenAiJson,
    ollama::{EmbedRequest, EmbedResponse},
    openai::{Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage, EmbeddingVector},
};
use axum::{Json, extract::State, response::IntoResponse};
use serde_json::Value;

use super::{AppState, params};

fn inputs(v: &Value) -> Result<Vec<String>, ApiError> {
    let list = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad("input", "input must be a string or a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(ApiError::bad("input", "input must be a non-empty string or list of strings")),
    };
    if list.iter().any(String::is_empty) {
        return Err(ApiError::bad("input", "input strings must not be empty"));
    }
    Ok(list)
}

#[utoipa::path(post, path = "/v1/embeddings", tag = "openai", request_body = EmbeddingRequest,
    responses((status = 200, description = "A list of embedding objects"), (status = 400, description = "Invalid request or the model has no embeddings"),
              (status = 404, description = "Unknown model")))]
pub async fn openai_embeddings(
    State(st): State<AppState>,
    OpenAiJson(req): OpenAiJson<EmbeddingRequest>,
) -> Result<impl IntoResponse, OpenAiError> {
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(
                ApiError::bad("encoding_format", format!("encoding_format {other:?} is not float or base64")).into()
            );
        }
    };
    if req.dimensions.is_some() {
        return Err(ApiError::bad("dimensions", "dimensions is not supported; vectors have the model's size").into());
    }
    let out = st.serve.embed(&req.model, inputs(&req.input)?, None).await?;
    let (model, e) = (out.model, out.embeddings);
    let data = e
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| Embedding {
            object: "embedding".into(),
            index,
            embedding: if base64 { EmbeddingVector::Base64(to_base64(&v)) } else { EmbeddingVector::Float(v) },
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list".into(),
        data,
        model,
        usage: EmbeddingUsage { prompt_tokens: e.prompt_tokens, total_tokens: e.prompt_tokens },
    }))
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
    let ka = params::keep_alive(req.keep_alive.as_ref())?;
    let out = st.serve.embed(&req.model, inputs(&req.input)?, ka).await?;
    let (model, e, load) = (out.model, out.embeddings, out.load_duration);
    Ok(Json(EmbedResponse {
        model,
        embeddings: e.vectors,
        total_duration: t0.elapsed().as_nanos() as u64,
        load_duration: load.as_nanos() as u64,
        prompt_eval_count: e.prompt_tokens,
    }))
}
