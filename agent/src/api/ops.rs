//! Operational routes: health, readiness, metrics, the OpenAPI document, and Ollama's `GET /`.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};

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
    st.metrics.engine_busy.clear();
    for r in st.sched.residents() {
        st.metrics
            .engine_busy
            .get_or_create(&crate::metrics::Metrics::model(&r.entry.name))
            .set(r.instance.busy() as i64);
    }
    if let Some(node) = &st.node {
        node.update_metrics(&st.metrics);
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], st.metrics.encode())
}

/// The board (SoC, driver, topology, telemetry, tuning), the runtime and the resident models:
/// what the operator's Board status is built from.
#[utoipa::path(get, path = "/internal/v1/status", tag = "ops", responses((status = 200, description = "Node status JSON")))]
pub async fn status(State(st): State<AppState>) -> impl IntoResponse {
    let residents: Vec<serde_json::Value> = st
        .sched
        .residents()
        .iter()
        .map(|r| {
            serde_json::json!({"model": r.entry.name, "engine": r.engine, "npu_domain": r.domain,
                               "busy": r.instance.busy(), "file": r.entry.file_name})
        })
        .collect();
    let mut v = st.node.as_ref().map_or_else(|| serde_json::json!({}), |n| n.status());
    v["loaded"] = serde_json::Value::Array(residents);
    axum::Json(v)
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], super::openapi_json())
}

/// Ollama clients probe `GET /` (and `HEAD /`) for this exact text.
#[utoipa::path(get, path = "/", tag = "ops", responses((status = 200, description = "Ollama is running")))]
pub async fn root() -> &'static str {
    "Ollama is running"
}
