//! Operational routes: health, readiness, metrics, status, load, the OpenAPI document, the status
//! page's data, and `GET /` (Ollama's probe, or the status page for browsers).

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};

use serde::Serialize;

use super::AppState;

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "The process is serving")))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "Ready for traffic"), (status = 503, description = "Starting or shutting down")))]
pub async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    if st.is_ready() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let sched = st.serve.sched();
    let busy = &sched.metrics().engine_busy;
    busy.clear();
    st.vllm.clear();
    for r in sched.residents() {
        busy.get_or_create(&crate::metrics::model(&r.entry.name)).set(r.instance.busy() as i64);
        st.vllm.set(&r.entry.name, r.waiting(), r.running(), r.slot_count());
    }
    st.node.update_metrics(&st.board_metrics);
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        crate::metrics::encode_with_vllm(&st.registry, &st.vllm),
    )
}

/// The board (SoC, driver, topology, telemetry, tuning), the runtime and the resident models:
/// what the operator's Board status is built from.
#[utoipa::path(get, path = "/internal/v1/status", tag = "ops", responses((status = 200, description = "Node status JSON")))]
pub async fn status(State(st): State<AppState>) -> impl IntoResponse {
    let sched = st.serve.sched();
    let rate = st.serve.metrics().tokens_per_second();
    Json(crate::status::report(&st.node, &st.runtime, sched, sched.registry().dir(), rate))
}

/// `GET /internal/v1/load`: what the cluster gateway routes on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoadReport {
    /// One entry per resident model; a model that is not loaded is absent.
    pub models: Vec<ModelLoad>,
}

/// One resident model's queue.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelLoad {
    /// The model's name (its friendly name, as `/v1/models` lists it).
    pub name: String,
    /// Requests holding a slot (being generated).
    pub running: usize,
    /// Requests queued for a slot.
    pub waiting: usize,
    /// Sequences the model generates at once (`--parallel`, or an RKLLM model's `n_batch`).
    pub slots: usize,
}

/// Running, waiting and slots per resident model: what the cluster gateway routes on.
///
/// The gateway polls every board several times a second, so unlike `/metrics` and
/// `/internal/v1/status` this reads the scheduler's counters only: no sysfs, no registry.
#[utoipa::path(get, path = "/internal/v1/load", tag = "ops",
    responses((status = 200, description = "Running, waiting and slots per resident model", body = LoadReport)))]
pub async fn load(State(st): State<AppState>) -> Json<LoadReport> {
    let models = st
        .serve
        .sched()
        .residents()
        .iter()
        .map(|r| ModelLoad {
            name: r.entry.name.clone(),
            running: r.running(),
            waiting: r.waiting(),
            slots: r.slot_count(),
        })
        .collect();
    Json(LoadReport { models })
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], super::openapi_json())
}

/// Ollama clients probe `GET /` (and `HEAD /`) for `Ollama is running`; a browser (`Accept:
/// text/html`) gets the status page instead.
#[utoipa::path(get, path = "/", tag = "ops", responses(
    (status = 200, description = "`Ollama is running` (text/plain), or the status page for `Accept: text/html`",
     content(("text/plain"), ("text/html")))))]
pub async fn root(headers: HeaderMap) -> Response {
    api_types::overview::root(&headers)
}

/// This board as the status page shows it: telemetry, clocks, resident (and in cluster mode
/// assigned) models with their queues and token totals. Needs a key where the API does.
#[utoipa::path(get, path = "/overview", tag = "ops",
    responses((status = 200, description = "This board, in the status page's shape", body = api_types::overview::Overview),
              (status = 401, description = "Keys are configured and none was given")))]
pub async fn overview(State(st): State<AppState>) -> Json<api_types::overview::Overview> {
    Json(crate::api::overview::build(&st))
}
