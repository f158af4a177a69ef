//! The gateway's Prometheus metrics (`/metrics` on the gateway's port), prefixed
//! `rockchip_llama_gateway_`. Labels are model names the table routes (a bounded set: unknown
//! names are counted as `unknown`), board names, status codes and fixed reason strings.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

type Labels = Vec<(&'static str, String)>;

fn latency() -> Histogram {
    // 5 ms .. ~80 s: TTFT on a board ranges from tens of ms (short prompt, warm) to many seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 15))
}

/// Everything the gateway counts.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    ttft: Family<Labels, Histogram, fn() -> Histogram>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    tokens: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    ejections: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    queue_wait: Family<Labels, Histogram, fn() -> Histogram>,
    queued: Family<Labels, Gauge>,
    disconnects: Family<Labels, Counter>,
    connections: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("rockchip_llama_gateway");
        let m = Self {
            requests: Family::default(),
            ttft: Family::new_with_constructor(latency),
            duration: Family::new_with_constructor(latency),
            tokens: Family::default(),
            retries: Family::default(),
            ejections: Family::default(),
            decisions: Family::default(),
            queue_wait: Family::new_with_constructor(latency),
            queued: Family::default(),
            disconnects: Family::default(),
            connections: Family::default(),
            registry: Registry::default(),
        };
        r.register("requests", "Proxied requests by model, board and HTTP status", m.requests.clone());
        r.register("time_to_first_byte_seconds", "Time to the first body byte from the board", m.ttft.clone());
        r.register("request_duration_seconds", "Time to the last body byte", m.duration.clone());
        r.register("tokens", "Tokens by kind (prompt, completion), from the boards' usage fields", m.tokens.clone());
        r.register("retries", "Requests sent to another board, by the failed board and cause", m.retries.clone());
        r.register("ejections", "Boards taken out of routing after consecutive failures", m.ejections.clone());
        r.register("routing_decisions", "Board choices by policy, model, board and reason", m.decisions.clone());
        r.register("queue_wait_seconds", "Time requests waited for a free board", m.queue_wait.clone());
        r.register("queued_requests", "Requests waiting for a free board now", m.queued.clone());
        r.register("client_disconnects", "Clients gone before the answer ended", m.disconnects.clone());
        r.register(
            "board_connections_opened",
            "Connections opened to a board for proxied requests (the rest reused a kept one)",
            m.connections.clone(),
        );
        Self { registry: r, ..m }
    }
}

fn l(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Metrics {
    pub fn request(&self, model: &str, board: &str, status: u16) {
        self.requests.get_or_create(&l(&[("model", model), ("board", board), ("status", &status.to_string())])).inc();
    }

    pub fn first_byte(&self, model: &str, board: &str, seconds: f64) {
        self.ttft.get_or_create(&l(&[("model", model), ("board", board)])).observe(seconds);
    }

    pub fn done(&self, model: &str, board: &str, seconds: f64) {
        self.duration.get_or_create(&l(&[("model", model), ("board", board)])).observe(seconds);
    }

    pub fn tokens(&self, model: &str, board: &str, kind: &str, n: u64) {
        self.tokens.get_or_create(&l(&[("model", model), ("board", board), ("kind", kind)])).inc_by(n);
    }

    pub fn retry(&self, model: &str, board: &str, cause: &str) {
        self.retries.get_or_create(&l(&[("model", model), ("board", board), ("cause", cause)])).inc();
    }

    pub fn ejected(&self, board: &str) {
        self.ejections.get_or_create(&l(&[("board", board)])).inc();
    }

    pub fn decision(&self, policy: &str, model: &str, board: &str, reason: &str) {
        self.decisions
            .get_or_create(&l(&[("policy", policy), ("model", model), ("board", board), ("reason", reason)]))
            .inc();
    }

    pub fn waited(&self, model: &str, seconds: f64) {
        self.queue_wait.get_or_create(&l(&[("model", model)])).observe(seconds);
    }

    pub fn queued(&self, model: &str, delta: i64) {
        self.queued.get_or_create(&l(&[("model", model)])).inc_by(delta);
    }

    pub fn disconnect(&self, model: &str, board: &str) {
        self.disconnects.get_or_create(&l(&[("model", model), ("board", board)])).inc();
    }

    pub fn connection_opened(&self, board: &str) {
        self.connections.get_or_create(&l(&[("board", board)])).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_prefix_and_labels() {
        let m = Metrics::default();
        m.request("smollm2", "b1", 200);
        m.decision("PrefixAffinity", "smollm2", "b1", "affinity_hit");
        m.first_byte("smollm2", "b1", 0.02);
        let text = m.render();
        assert!(
            text.contains("rockchip_llama_gateway_requests_total{model=\"smollm2\",board=\"b1\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("rockchip_llama_gateway_routing_decisions_total{policy=\"PrefixAffinity\""), "{text}");
        assert!(text.contains("rockchip_llama_gateway_time_to_first_byte_seconds_bucket"), "{text}");
    }
}
