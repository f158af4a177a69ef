//! The gateway's HTTP surface: the agent's OpenAI + Ollama routes, proxied or aggregated.
//!
//! ```text
//!  /v1/chat/completions /v1/completions /v1/embeddings     ─┐ proxied to one board (proxy.rs)
//!  /api/chat /api/generate /api/embed /api/show            ─┘
//!  /v1/models /v1/models/{model} /api/tags /api/ps          aggregated over the table / boards
//!  /api/version / /healthz /readyz /metrics /openapi.json  the gateway's own
//!  /overview                                                the status page's data (overview.rs)
//! ```
//!
//! `GET /` is Ollama's probe (`Ollama is running`) or, for `Accept: text/html`, the status page.
//!
//! Errors answer in the shape of the API the path belongs to (`/api/*` Ollama, else OpenAI).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use api_types::{
    ApiError, BODY_LIMIT,
    error::{ErrorShape, shape_for_path},
    request_id,
};
use axum::{
    Extension, Json, Router,
    body::to_bytes,
    extract::{DefaultBodyLimit, Path, Request, State},
    http::{HeaderMap, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::future::join_all;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use super::{Error, Gateway, auth::Grant, proxy, table::normalise};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "RockchipLlama gateway",
        description = "One OpenAI- and Ollama-compatible endpoint for a cluster of RockchipLlama boards: \
                       each request goes to a board that has its model loaded."
    ),
    paths(
        chat_completions,
        completions,
        embeddings,
        list_models,
        get_model,
        ollama_chat,
        ollama_generate,
        ollama_embed,
        ollama_show,
        tags,
        ps,
        version,
        healthz,
        readyz,
        metrics,
        root,
        overview,
        super::announce::demand,
    ),
    components(schemas(
        api_types::openai::ChatCompletionRequest,
        api_types::openai::CompletionRequest,
        api_types::openai::OaiSampling,
        api_types::openai::StreamOptions,
        api_types::openai::EmbeddingRequest,
        api_types::ollama::ChatRequest,
        api_types::ollama::GenerateRequest,
        api_types::ollama::Options,
        api_types::ollama::ShowRequest,
        api_types::ollama::EmbedRequest,
    ))
)]
pub struct ApiDoc;

/// The gateway's OpenAPI document, generated from the handlers' annotations.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Paths open without a key: probes, Ollama's `GET /` liveness check, and the demand counters
/// (the leader reads them with the cluster token, checked there).
fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/") || path == crate::demand::PATH
}

/// Checks the client's key (when keys are configured) and hands its grant to the handlers.
async fn authenticate(State(gw): State<Arc<Gateway>>, mut req: Request, next: Next) -> Response {
    let grant = match &gw.config.keys {
        None => Grant::everything(),
        Some(_) if is_open(req.uri().path()) => Grant::everything(),
        Some(keys) => match keys.check(req.headers()) {
            Some(g) => g,
            None => return ApiError::Unauthorized.into_response_as(shape_for_path(req.uri().path())),
        },
    };
    req.extensions_mut().insert(grant);
    next.run(req).await
}

/// The router.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*model}", get(get_model))
        .route("/api/chat", post(ollama_chat))
        .route("/api/generate", post(ollama_generate))
        .route("/api/embed", post(ollama_embed))
        .route("/api/show", post(ollama_show))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/version", get(version))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(api_types::overview::OVERVIEW_PATH, get(overview))
        .route(crate::demand::PATH, get(super::announce::demand))
        .route("/openapi.json", get(openapi))
        .route("/", get(root).head(root))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(gw.clone(), authenticate))
        .layer(middleware::from_fn(request_id::layer))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(gw)
}

/// Serves until `stop`; requests under way finish first.
pub async fn serve(listener: tokio::net::TcpListener, gw: Arc<Gateway>, stop: CancellationToken) -> Result<(), Error> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%addr, "gateway listening");
    // TCP_NODELAY: an answer streams as many small writes (one per SSE event or NDJSON line);
    // with Nagle's algorithm each waits for the client's delayed ACK (~40 ms on Linux).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "gateway: cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(gw))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .map_err(|source| Error::Listen { addr, source })
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    ApiError::NotFound(format!("no route for {} {path}", req.method())).into_response_as(shape_for_path(&path))
}

/// Reads the body and forwards the request to a board.
async fn proxied(gw: Arc<Gateway>, grant: Grant, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let (parts, body) = req.into_parts();
    match to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => proxy::forward(gw, path, parts.headers, bytes, grant).await,
        Err(_) => ApiError::PayloadTooLarge { limit: BODY_LIMIT }.into_response_as(shape_for_path(&path)),
    }
}

#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body = api_types::openai::ChatCompletionRequest,
    responses((status = 200, description = "The board's answer (JSON, or SSE when stream=true)"),
              (status = 404, description = "No deployment serves the model"),
              (status = 429, description = "Every board is busy and the queue is full or the wait too long"),
              (status = 503, description = "The model has no Ready replica")))]
pub async fn chat_completions(
    State(gw): State<Arc<Gateway>>,
    Extension(g): Extension<Grant>,
    req: Request,
) -> Response {
    proxied(gw, g, req).await
}

#[utoipa::path(post, path = "/v1/completions", tag = "openai",
    request_body = api_types::openai::CompletionRequest,
    responses((status = 200, description = "The board's answer (JSON, or SSE when stream=true)")))]
pub async fn completions(State(gw): State<Arc<Gateway>>, Extension(g): Extension<Grant>, req: Request) -> Response {
    proxied(gw, g, req).await
}

#[utoipa::path(post, path = "/v1/embeddings", tag = "openai",
    request_body = api_types::openai::EmbeddingRequest,
    responses((status = 200, description = "Embeddings from one board")))]
pub async fn embeddings(State(gw): State<Arc<Gateway>>, Extension(g): Extension<Grant>, req: Request) -> Response {
    proxied(gw, g, req).await
}

#[utoipa::path(post, path = "/api/chat", tag = "ollama", request_body = api_types::ollama::ChatRequest,
    responses((status = 200, description = "The board's answer (NDJSON unless stream=false)")))]
pub async fn ollama_chat(State(gw): State<Arc<Gateway>>, Extension(g): Extension<Grant>, req: Request) -> Response {
    proxied(gw, g, req).await
}

#[utoipa::path(post, path = "/api/generate", tag = "ollama", request_body = api_types::ollama::GenerateRequest,
    responses((status = 200, description = "The board's answer (NDJSON unless stream=false)")))]
pub async fn ollama_generate(State(gw): State<Arc<Gateway>>, Extension(g): Extension<Grant>, req: Request) -> Response {
    proxied(gw, g, req).await
}

#[utoipa::path(post, path = "/api/embed", tag = "ollama", request_body = api_types::ollama::EmbedRequest,
    responses((status = 200, description = "Embeddings from one board")))]
pub async fn ollama_embed(State(gw): State<Arc<Gateway>>, Extension(g): Extension<Grant>, req: Request) -> Response {
    proxied(gw, g, req).await
}

#[utoipa::path(post, path = "/api/show", tag = "ollama", request_body = api_types::ollama::ShowRequest,
    responses((status = 200, description = "The model's details, from a board that serves it")))]
pub async fn ollama_show(State(gw): State<Arc<Gateway>>, Extension(g): Extension<Grant>, req: Request) -> Response {
    proxied(gw, g, req).await
}

/// One entry per served name and alias the key may use: (name, route).
fn visible(gw: &Gateway, grant: &Grant) -> Vec<(String, super::table::Route)> {
    gw.table().routes.iter().filter(|(n, _)| grant.allows(n)).map(|(n, r)| (n.clone(), r.clone())).collect()
}

fn model_object(name: &str, r: &super::table::Route) -> Value {
    json!({
        "id": name,
        "object": "model",
        "created": r.created,
        "owned_by": "rockchip-llama",
        "meta": {
            "deployment": r.key,
            "served_name": r.model,
            "alias": name != normalise(&r.model),
            "routing": dispatch_label(r),
            "desired_replicas": r.desired,
            "ready_replicas": r.replicas.len(),
            "boards": r.replicas.iter().map(|x| x.board.clone()).collect::<Vec<_>>(),
        },
    })
}

fn dispatch_label(r: &super::table::Route) -> &'static str {
    super::dispatch::policy_label(r)
}

#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, description = "Every served name and alias, with its boards in `meta`")))]
pub async fn list_models(State(gw): State<Arc<Gateway>>, Extension(grant): Extension<Grant>) -> Json<Value> {
    let data: Vec<Value> = visible(&gw, &grant).iter().map(|(n, r)| model_object(n, r)).collect();
    Json(json!({"object": "list", "data": data}))
}

#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai",
    params(("model" = String, Path, description = "Served name or alias")),
    responses((status = 200, description = "The model"), (status = 404, description = "Not served")))]
pub async fn get_model(
    State(gw): State<Arc<Gateway>>,
    Extension(grant): Extension<Grant>,
    Path(model): Path<String>,
) -> Response {
    let table = gw.table();
    match table.lookup(&model).filter(|_| grant.allows(&model)) {
        Some(r) => Json(model_object(&normalise(&model), r)).into_response(),
        None => ApiError::ModelNotFound(model).into_response_as(ErrorShape::OpenAi),
    }
}

/// `GET path` on every board that serves something, at once, each bounded to 2 s; boards that
/// fail are left out (the answer is about what can be reached now).
async fn from_boards(gw: &Gateway, path: &str) -> Vec<(String, Value)> {
    let boards: BTreeMap<String, String> = gw
        .table()
        .routes
        .values()
        .flat_map(|r| r.replicas.iter().map(|x| (x.board.clone(), x.endpoint.clone())))
        .collect();
    let calls = boards.into_iter().map(|(board, endpoint)| async move {
        let mut req = super::workers::client(gw).get(format!("{endpoint}{path}")).timeout(Duration::from_secs(2));
        if let Some(t) = &gw.config.cluster_token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok().map(|v| (board, v)),
            Ok(r) => {
                tracing::debug!(%board, status = %r.status(), path, "gateway: board refused an aggregate read");
                None
            }
            Err(error) => {
                tracing::debug!(%board, %error, path, "gateway: board unreachable for an aggregate read");
                None
            }
        }
    });
    join_all(calls).await.into_iter().flatten().collect()
}

fn entries(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("models").and_then(Value::as_array).into_iter().flatten()
}

fn entry_name(e: &Value) -> String {
    normalise(e.get("name").or_else(|| e.get("model")).and_then(Value::as_str).unwrap_or_default())
}

#[utoipa::path(get, path = "/api/tags", tag = "ollama",
    responses((status = 200, description = "Every served name and alias, with details from a board that has it")))]
pub async fn tags(State(gw): State<Arc<Gateway>>, Extension(grant): Extension<Grant>) -> Json<Value> {
    let boards = from_boards(&gw, "/api/tags").await;
    let models: Vec<Value> = visible(&gw, &grant)
        .iter()
        .map(|(name, r)| {
            let served = normalise(&r.model);
            let found = boards
                .iter()
                .filter(|(b, _)| r.replicas.iter().any(|x| &x.board == b))
                .flat_map(|(_, v)| entries(v))
                .find(|e| entry_name(e) == *name || entry_name(e) == served);
            let mut e = found.cloned().unwrap_or_else(
                || json!({"modified_at": "1970-01-01T00:00:00Z", "size": 0, "digest": "", "details": {}}),
            );
            e["name"] = json!(name);
            e["model"] = json!(name);
            e
        })
        .collect();
    Json(json!({"models": models}))
}

#[utoipa::path(get, path = "/api/ps", tag = "ollama",
    responses((status = 200, description = "What is resident on which board (`board` on each entry)")))]
pub async fn ps(State(gw): State<Arc<Gateway>>, Extension(grant): Extension<Grant>) -> Json<Value> {
    let mut models = Vec::new();
    for (board, v) in from_boards(&gw, "/api/ps").await {
        for e in entries(&v).filter(|e| grant.allows(&entry_name(e))) {
            let mut e = e.clone();
            e["board"] = json!(board);
            models.push(e);
        }
    }
    Json(json!({"models": models}))
}

#[utoipa::path(get, path = "/api/version", tag = "ollama", responses((status = 200, description = "Version")))]
pub async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "The cluster has been listed"), (status = 503, description = "Not yet")))]
pub async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.synced() {
        "ready".into_response()
    } else {
        ApiError::Unavailable("the gateway has not listed the cluster yet".into()).into_response_as(ErrorShape::OpenAi)
    }
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], gw.metrics.render())
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

/// Ollama clients probe `GET /` (and `HEAD /`) for `Ollama is running`; a browser (`Accept:
/// text/html`) gets the status page instead. Open without a key: the page holds no data.
#[utoipa::path(get, path = "/", tag = "ops", responses(
    (status = 200, description = "`Ollama is running` (text/plain), or the status page for `Accept: text/html`",
     content(("text/plain"), ("text/html")))))]
pub async fn root(headers: HeaderMap) -> Response {
    api_types::overview::root(&headers)
}

/// Every board, ModelDeployment and recent event, as the status page shows them. Needs a key
/// when keys are configured; a key limited to some models sees only those models.
#[utoipa::path(get, path = "/overview", tag = "ops",
    responses((status = 200, description = "The cluster, in the status page's shape", body = api_types::overview::Overview),
              (status = 401, description = "Keys are configured and none was given")))]
pub async fn overview(
    State(gw): State<Arc<Gateway>>,
    Extension(grant): Extension<Grant>,
) -> Json<api_types::overview::Overview> {
    Json(super::overview::build(&gw, &grant).await)
}
