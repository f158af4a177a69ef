//! Generation metrics: latency and token counts per model, from the engines' own counts.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use crate::metrics::{ModelLabels, latency_histogram};

pub struct GenMetrics {
    pub ttft: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub inter_token: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub prompt_tokens: Family<ModelLabels, Counter>,
    pub cached_tokens: Family<ModelLabels, Counter>,
    pub generated_tokens: Family<ModelLabels, Counter>,
    /// RKLLM prompt-cache files loaded before a run / written by a run.
    pub prompt_cache_loads: Family<ModelLabels, Counter>,
    pub prompt_cache_creates: Family<ModelLabels, Counter>,
}

impl GenMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self {
            ttft: Family::new_with_constructor(latency_histogram),
            inter_token: Family::new_with_constructor(latency_histogram),
            prompt_tokens: Family::default(),
            cached_tokens: Family::default(),
            generated_tokens: Family::default(),
            prompt_cache_loads: Family::default(),
            prompt_cache_creates: Family::default(),
        };
        r.register("time_to_first_token_seconds", "Time from request to first token", m.ttft.clone());
        r.register("inter_token_seconds", "Time between streamed tokens", m.inter_token.clone());
        r.register("prompt_tokens", "Prompt tokens processed (engine counts)", m.prompt_tokens.clone());
        r.register("prompt_cached_tokens", "Prompt tokens reused from the KV cache", m.cached_tokens.clone());
        r.register("generated_tokens", "Tokens generated (engine counts)", m.generated_tokens.clone());
        r.register("prompt_cache_loads", "RKLLM prompt-cache files loaded before a run", m.prompt_cache_loads.clone());
        r.register("prompt_cache_creates", "RKLLM prompt-cache files written by a run", m.prompt_cache_creates.clone());
        m
    }
}
