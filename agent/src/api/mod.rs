//! The HTTP surface: route table, shared state, auth and metrics middleware.
//!
//! ```text
//!  /v1/*  OpenAI shape errors ─┐
//!  /api/* Ollama shape errors ─┼─ auth (Bearer, constant-time) ─ metrics (route template) ─ handlers
//!  /healthz /readyz /metrics / ┘  (no auth for health and GET|HEAD /)
//! ```

pub mod embed;
pub mod error;
pub mod infer;
pub mod jsoncheck;
pub mod ollama;
pub mod openai;
pub mod ops;
pub mod schema;
pub mod think;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderMap, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use subtle::ConstantTimeEq;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use self::error::{AppError, OaiError, OllamaError};
use crate::{metrics::Metrics, sched::Scheduler, store::PullLocks};

/// Largest request body accepted (bytes). Chat histories of a few thousand tokens are tens of
/// kilobytes; this leaves room for long documents while bounding memory per request.
pub const BODY_LIMIT: usize = 4 << 20;

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub sched: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
    /// Accepted API keys; `None` = no auth.
    pub keys: Option<Arc<Vec<String>>>,
    /// Client for `/api/pull` downloads.
    pub http: reqwest::Client,
    pub pulls: Arc<PullLocks>,
    /// Model used when a request names none (`--default-model`).
    pub default_model: Option<String>,
    /// False until start-up work (default model load) is done, and again while shutting down.
    pub ready: Arc<AtomicBool>,
    /// The board: facts, tuning, telemetry.
    pub node: Option<Arc<crate::node::Node>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "RockchipLlama agent",
        description = "OpenAI- and Ollama-compatible LLM server for RK3588 boards and CPUs."
    ),
    paths(
        openai::chat_completions,
        openai::completions,
        openai::list_models,
        openai::get_model,
        openai::load_model,
        openai::unload_model,
        openai::loaded_models,
        embed::openai_embeddings,
        ollama::chat,
        ollama::generate,
        ollama::tags,
        ollama::show,
        ollama::ps,
        ollama::version,
        ollama::delete,
        ollama::pull,
        embed::ollama_embed,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::status,
        ops::root,
    ),
    components(schemas(
        openai::ChatCompletionRequest,
        openai::CompletionRequest,
        openai::OaiSampling,
        openai::StreamOptions,
        openai::ModelAction,
        ollama::ChatRequest,
        ollama::GenerateRequest,
        ollama::Options,
        ollama::ShowRequest,
        ollama::DeleteRequest,
        ollama::PullRequest,
        embed::EmbeddingRequest,
        embed::EmbedRequest,
    ))
)]
pub struct ApiDoc;

/// The OpenAPI document, generated from the handlers' annotations.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(embed::openai_embeddings))
        .route("/api/embed", post(embed::ollama_embed))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/loaded", get(openai::loaded_models))
        .route("/v1/models/load", post(openai::load_model))
        .route("/v1/models/unload", post(openai::unload_model))
        .route("/v1/models/{*model}", get(openai::get_model))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/version", get(ollama::version))
        .route("/api/delete", axum::routing::delete(ollama::delete))
        .route("/api/pull", post(ollama::pull))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/internal/v1/status", get(ops::status))
        .route("/openapi.json", get(ops::openapi))
        .route("/", get(ops::root).head(ops::root))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Is this an Ollama route (errors in Ollama's shape)?
fn ollama_path(path: &str) -> bool {
    path.starts_with("/api/")
}

fn error_for(path: &str, e: AppError) -> Response {
    if ollama_path(path) { OllamaError(e).into_response() } else { OaiError(e).into_response() }
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    error_for(&path, AppError::NotFound(format!("no route for {} {path}", req.method())))
}

/// Bearer-token check. Health probes and `GET|HEAD /` stay open so load balancers and Ollama
/// clients' liveness checks work without a key.
async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(keys) = &st.keys else { return next.run(req).await };
    let path = req.uri().path();
    if matches!(path, "/healthz" | "/readyz" | "/") {
        return next.run(req).await;
    }
    if key_ok(req.headers(), keys) { next.run(req).await } else { error_for(path, AppError::Unauthorized) }
}

fn key_ok(headers: &HeaderMap, keys: &[String]) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
    else {
        return false;
    };
    // Compare against every key without stopping early, each in constant time.
    let mut ok = 0u8;
    for k in keys {
        ok |= u8::from(bool::from(k.as_bytes().ct_eq(given.trim().as_bytes())));
    }
    ok == 1
}

/// Counts requests and their duration by route template (never by raw path).
async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "<unmatched>".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().to_string();
    let t0 = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .requests
        .get_or_create(&crate::metrics::RouteLabels { method, route: route.clone(), status: resp.status().as_u16() })
        .inc();
    st.metrics.request_duration.get_or_create(&crate::metrics::RouteOnly { route }).observe(t0.elapsed().as_secs_f64());
    resp
}

impl AppState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_keys() {
        let keys = vec!["k1".to_owned(), "secret".to_owned()];
        let mut h = HeaderMap::new();
        assert!(!key_ok(&h, &keys));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        assert!(key_ok(&h, &keys));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secre"));
        assert!(!key_ok(&h, &keys));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic secret"));
        assert!(!key_ok(&h, &keys));
    }

    #[test]
    fn openapi_lists_every_public_route() {
        let doc = openapi_json();
        for p in [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/models",
            "/api/chat",
            "/api/generate",
            "/api/pull",
            "/healthz",
        ] {
            assert!(doc.contains(&format!("\"{p}\"")), "{p} missing");
        }
    }
}
