//! The HTTP surface: route table, shared state, middleware. HTTP only: handlers parse their
//! API's request into the serve layer's terms and turn what comes back into their API's shape;
//! every decision is made below, in `serve` and `sched`.
//!
//! ```text
//!  /v1/*  OpenAI shape errors ─┐
//!  /api/* Ollama shape errors ─┼─ request id ─ auth (Bearer, constant-time) ─ metrics (route template) ─ handlers
//!  /healthz /readyz /metrics / ┘  (no auth for health and GET|HEAD /)
//! ```
//!
//! `GET /` answers Ollama's probe text, or the status page to a browser (`Accept: text/html`);
//! the page's data (`/overview`) needs a key wherever the API does.
//!
//! Auth accepts the client keys (`--api-key-file`) and the cluster token, which the cluster
//! gateway sends on every request it proxies; with neither keys nor `--require-cluster-token`
//! the API is open. Blob routes check the cluster token themselves.

pub mod blobs;
pub mod embed;
pub mod error;
pub mod ollama;
pub mod openai;
pub mod ops;
pub mod overview;
pub mod params;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use api_types::{
    ApiError, BODY_LIMIT,
    auth::{self, ApiKeys},
    error::shape_for_path,
    request_id,
};
use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::{
    metrics::request_histogram,
    models::Library,
    node::{BoardMetrics, Node},
    serve::Service,
    status::RuntimeState,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    pub route: String,
}

/// HTTP metrics, by route template (never by raw path).
pub struct HttpMetrics {
    pub requests: Family<RouteLabels, Counter>,
    pub request_duration: Family<RouteOnly, Histogram, fn() -> Histogram>,
}

impl HttpMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self { requests: Family::default(), request_duration: Family::new_with_constructor(request_histogram) };
        r.register("http_requests", "HTTP requests by route template and status", m.requests.clone());
        r.register("http_request_duration_seconds", "HTTP request duration", m.request_duration.clone());
        m
    }
}

/// State shared by every handler: handles on the services below, owned by `app::Agent`.
#[derive(Clone)]
pub struct AppState {
    pub serve: Arc<Service>,
    pub http_metrics: Arc<HttpMetrics>,
    pub board_metrics: Arc<BoardMetrics>,
    /// The process's metrics registry, encoded on `/metrics`.
    pub registry: Arc<Registry>,
    /// Accepted API keys; `None` = no auth.
    pub keys: Option<Arc<ApiKeys>>,
    /// Pull, delete, rescan.
    pub library: Arc<Library>,
    /// False until start-up work (default model load) is done, and again while shutting down.
    pub ready: Arc<AtomicBool>,
    /// The board: facts, tuning, telemetry.
    pub node: Arc<Node>,
    /// The RKLLM runtime opened at start, or why none.
    pub runtime: RuntimeState,
    /// The cluster token peers present for blobs; `None`: blobs are not served.
    pub cluster_token: Option<Arc<ApiKeys>>,
    /// Queue gauges under vLLM's names, for routers and autoscalers built for vLLM.
    pub vllm: Arc<crate::metrics::VllmGauges>,
    /// Cluster mode's Board name, endpoint and model states, for `/overview`; unset alone.
    pub cluster_view: crate::api::overview::ClusterView,
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
        ops::load,
        ops::root,
        ops::overview,
    ),
    components(schemas(
        api_types::openai::ChatCompletionRequest,
        api_types::openai::CompletionRequest,
        api_types::openai::OaiSampling,
        api_types::openai::StreamOptions,
        api_types::openai::ModelAction,
        api_types::ollama::ChatRequest,
        api_types::ollama::GenerateRequest,
        api_types::ollama::Options,
        api_types::ollama::ShowRequest,
        api_types::ollama::DeleteRequest,
        api_types::ollama::PullRequest,
        api_types::openai::EmbeddingRequest,
        api_types::ollama::EmbedRequest,
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
        .route("/internal/v1/load", get(ops::load))
        .route("/internal/v1/blobs/{name}", get(blobs::blob).head(blobs::blob))
        .route(api_types::overview::OVERVIEW_PATH, get(ops::overview))
        .route("/openapi.json", get(ops::openapi))
        .route("/", get(ops::root).head(ops::root))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.keys.clone(), auth::require_key))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(middleware::from_fn(request_id::layer))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    ApiError::NotFound(format!("no route for {} {path}", req.method())).into_response_as(shape_for_path(&path))
}

/// Counts requests and their duration by route template (never by raw path), and logs one access
/// line per API request.
async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "<unmatched>".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().to_string();
    let t0 = Instant::now();
    let resp = next.run(req).await;
    // One access line per API request, with the request id the gateway also logs (probes and
    // the gateway's 250 ms load polls would drown the log: left out).
    if !matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics" | "/internal/v1/load") {
        let id = request_id::current().map(|i| i.to_string()).unwrap_or_default();
        tracing::info!(request_id = %id, %method, %route, status = resp.status().as_u16(),
                       ms = t0.elapsed().as_millis() as u64, "request");
    }
    let m = &st.http_metrics;
    m.requests.get_or_create(&RouteLabels { method, route: route.clone(), status: resp.status().as_u16() }).inc();
    m.request_duration.get_or_create(&RouteOnly { route }).observe(t0.elapsed().as_secs_f64());
    resp
}

impl AppState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

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
            "/internal/v1/load",
            "/overview",
        ] {
            assert!(doc.contains(&format!("\"{p}\"")), "{p} missing");
        }
    }
}
