//! Prometheus metrics: one registry per process, one struct per subsystem. Labels come only from
//! small fixed sets: route templates, status codes, and the names of models on disk.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~33 s: covers a token on a fast CPU up to a long prefill on a board.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn request_histogram() -> Histogram {
    // 5 ms … ~20 min: whole requests, including long generations.
    Histogram::new(exponential_buckets(0.005, 2.0, 18))
}

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteLabels, Counter>,
    pub request_duration: Family<RouteOnly, Histogram, fn() -> Histogram>,
    pub ttft: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub inter_token: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub prompt_tokens: Family<ModelLabels, Counter>,
    pub cached_tokens: Family<ModelLabels, Counter>,
    pub generated_tokens: Family<ModelLabels, Counter>,
    pub queue_depth: Family<ModelLabels, Gauge>,
    pub active_requests: Family<ModelLabels, Gauge>,
    pub load_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub loaded_models: Gauge,
    /// Set at scrape time from each engine's own count.
    pub engine_busy: Family<ModelLabels, Gauge>,
    pub rejected: Family<ModelLabels, Counter>,
    /// RKLLM prompt-cache files loaded before a run / written by a run.
    pub prompt_cache_loads: Family<ModelLabels, Counter>,
    pub prompt_cache_creates: Family<ModelLabels, Counter>,
    /// Board telemetry, set at scrape time: °C per thermal zone, NPU load % per core, Hz per clock.
    pub temperature: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub npu_load: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub frequency: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 while the board's clocks are pinned by the agent.
    pub tuned: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rockchip_llama");
        let m = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(request_histogram),
            ttft: Family::new_with_constructor(latency_histogram),
            inter_token: Family::new_with_constructor(latency_histogram),
            prompt_tokens: Family::default(),
            cached_tokens: Family::default(),
            generated_tokens: Family::default(),
            queue_depth: Family::default(),
            active_requests: Family::default(),
            load_seconds: Family::new_with_constructor(latency_histogram),
            loaded_models: Gauge::default(),
            engine_busy: Family::default(),
            rejected: Family::default(),
            prompt_cache_loads: Family::default(),
            prompt_cache_creates: Family::default(),
            temperature: Family::default(),
            npu_load: Family::default(),
            frequency: Family::default(),
            tuned: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("http_requests", "HTTP requests by route template and status", m.requests.clone());
        r.register("http_request_duration_seconds", "HTTP request duration", m.request_duration.clone());
        r.register("time_to_first_token_seconds", "Time from request to first token", m.ttft.clone());
        r.register("inter_token_seconds", "Time between streamed tokens", m.inter_token.clone());
        r.register("prompt_tokens", "Prompt tokens processed (engine counts)", m.prompt_tokens.clone());
        r.register("prompt_cached_tokens", "Prompt tokens reused from the KV cache", m.cached_tokens.clone());
        r.register("generated_tokens", "Tokens generated (engine counts)", m.generated_tokens.clone());
        r.register("queue_depth", "Requests waiting for a slot", m.queue_depth.clone());
        r.register("active_requests", "Requests being generated", m.active_requests.clone());
        r.register("model_load_seconds", "Model load time", m.load_seconds.clone());
        r.register("loaded_models", "Models resident in memory", m.loaded_models.clone());
        r.register(
            "engine_busy_slots",
            "Requests the engine is generating for, by its own count",
            m.engine_busy.clone(),
        );
        r.register("rejected_requests", "Requests refused because the queue was full", m.rejected.clone());
        r.register("prompt_cache_loads", "RKLLM prompt-cache files loaded before a run", m.prompt_cache_loads.clone());
        r.register("prompt_cache_creates", "RKLLM prompt-cache files written by a run", m.prompt_cache_creates.clone());
        r.register("board_temperature_celsius", "Thermal zone temperature", m.temperature.clone());
        r.register("npu_load_percent", "NPU load per core", m.npu_load.clone());
        r.register("clock_frequency_hertz", "Current CPU policy, NPU, DDR and GPU clock", m.frequency.clone());
        r.register("board_tuned", "1 while the agent pins the board's clocks", m.tuned.clone());
        Self { registry, ..m }
    }

    pub fn model(name: &str) -> ModelLabels {
        ModelLabels { model: name.to_owned() }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
