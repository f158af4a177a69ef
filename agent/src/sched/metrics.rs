//! Scheduler metrics: queues, slots, residency.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::metrics::{ModelLabels, latency_histogram};

pub struct SchedMetrics {
    pub queue_depth: Family<ModelLabels, Gauge>,
    pub active_requests: Family<ModelLabels, Gauge>,
    pub load_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub loaded_models: Gauge,
    /// Set at scrape time from each engine's own count.
    pub engine_busy: Family<ModelLabels, Gauge>,
    pub rejected: Family<ModelLabels, Counter>,
}

impl SchedMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self {
            queue_depth: Family::default(),
            active_requests: Family::default(),
            load_seconds: Family::new_with_constructor(latency_histogram),
            loaded_models: Gauge::default(),
            engine_busy: Family::default(),
            rejected: Family::default(),
        };
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
        m
    }
}
