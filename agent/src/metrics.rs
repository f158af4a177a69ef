//! Prometheus plumbing shared by the subsystems. Each subsystem owns a metrics struct that
//! registers itself (`api::HttpMetrics`, `sched::SchedMetrics`, `serve::GenMetrics`,
//! `node::BoardMetrics`); the composition root makes one registry with the `rockchip_llama`
//! prefix and hands each its part. Labels come only from small fixed sets: route templates,
//! status codes, and the names of models on disk.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::histogram::{Histogram, exponential_buckets},
    registry::Registry,
};

/// The prefix of every metric the agent exports.
pub const PREFIX: &str = "rockchip_llama";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

pub fn model(name: &str) -> ModelLabels {
    ModelLabels { model: name.to_owned() }
}

/// 1 ms … ~33 s: covers a token on a fast CPU up to a long prefill on a board.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// 5 ms … ~20 min: whole requests, including long generations.
pub fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 18))
}

/// Label of the vLLM-named gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VllmLabels {
    pub model_name: String,
}

/// Gauges under the names the Kubernetes inference-routing ecosystem scrapes (llm-d's endpoint
/// picker, KEDA scalers, dashboards built for vLLM), so those tools can read a board as they read
/// a vLLM server: `vllm:num_requests_waiting`, `vllm:num_requests_running` and
/// `vllm:kv_cache_usage_perc` (0–1), per `model_name`. Unprefixed, hence their own registry.
/// KV usage here is the share of the model's slots in use: each slot holds one sequence's KV
/// cache (on the NPU the runtime keeps it per slot), so a full board reads 1.0.
pub struct VllmGauges {
    registry: Registry,
    pub waiting: prometheus_client::metrics::family::Family<VllmLabels, prometheus_client::metrics::gauge::Gauge>,
    pub running: prometheus_client::metrics::family::Family<VllmLabels, prometheus_client::metrics::gauge::Gauge>,
    pub kv_usage: prometheus_client::metrics::family::Family<
        VllmLabels,
        prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
    >,
}

impl Default for VllmGauges {
    fn default() -> Self {
        let mut g = Self {
            registry: Registry::default(),
            waiting: Default::default(),
            running: Default::default(),
            kv_usage: Default::default(),
        };
        g.registry.register("vllm:num_requests_waiting", "Requests waiting for a slot", g.waiting.clone());
        g.registry.register("vllm:num_requests_running", "Requests being generated", g.running.clone());
        g.registry.register(
            "vllm:kv_cache_usage_perc",
            "Share of the model's slots in use, 0 to 1",
            g.kv_usage.clone(),
        );
        g
    }
}

impl VllmGauges {
    /// Sets one model's values; `clear` first drops models no longer resident.
    pub fn set(&self, model: &str, waiting: usize, running: usize, slots: usize) {
        let l = VllmLabels { model_name: model.to_owned() };
        self.waiting.get_or_create(&l).set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.running.get_or_create(&l).set(i64::try_from(running).unwrap_or(i64::MAX));
        self.kv_usage.get_or_create(&l).set(running as f64 / slots.max(1) as f64);
    }

    pub fn clear(&self) {
        self.waiting.clear();
        self.running.clear();
        self.kv_usage.clear();
    }
}

/// The agent's registry followed by the vLLM-named gauges, as one OpenMetrics document (one
/// `# EOF`, at the end).
pub fn encode_with_vllm(registry: &Registry, vllm: &VllmGauges) -> String {
    let mut out = encode_registry(registry);
    if out.ends_with("# EOF\n") {
        out.truncate(out.len() - "# EOF\n".len());
    }
    let _ = encode(&mut out, &vllm.registry);
    out
}

/// The process's registry, in Prometheus text format.
pub fn encode_registry(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}
