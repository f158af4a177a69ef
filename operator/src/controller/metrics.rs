//! Prometheus metrics of the controller, served on `--metrics-listen` (`/metrics`, `/healthz`).
//! Labels come from small fixed sets (a result, a write kind, an error variant).

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

use super::error::Error;

type Labels = Vec<(&'static str, &'static str)>;

/// Counters and gauges the controller updates.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by result (`ok` or an error label).
    reconciles: Family<Labels, Counter>,
    /// API writes by kind (`board_spec`, `board_status`, `md_status`).
    writes: Family<Labels, Counter>,
    /// 1 while this replica leads.
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rockchip_llama_operator");
        let reconciles = Family::<Labels, Counter>::default();
        registry.register("reconciles", "ModelDeployment reconciles by result", reconciles.clone());
        let writes = Family::<Labels, Counter>::default();
        registry.register("writes", "API writes by kind", writes.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica is the leader", leader.clone());
        Self { registry, reconciles, writes, leader }
    }
}

impl Metrics {
    /// Counts one reconcile.
    pub fn reconciled(&self, result: &'static str) {
        self.reconciles.get_or_create(&vec![("result", result)]).inc();
    }

    /// Counts one write.
    pub fn wrote(&self, kind: &'static str) {
        self.writes.get_or_create(&vec![("kind", kind)]).inc();
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

async fn render_metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.render())
}

/// Opens the metrics listener (before anything else, so a taken port fails at start).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr: addr.to_string(), source })
}

/// Serves `/metrics` and `/healthz` until `stop` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%addr, "serving metrics");
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .map_err(|source| Error::Listen { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.reconciled("ok");
        m.wrote("board_spec");
        m.set_leader(true);
        let text = m.render();
        assert!(text.contains("rockchip_llama_operator_reconciles_total{result=\"ok\"} 1"), "{text}");
        assert!(text.contains("rockchip_llama_operator_leader 1"), "{text}");
    }
}
