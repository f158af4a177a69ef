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

/// The process's registry, in Prometheus text format.
pub fn encode_registry(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}
