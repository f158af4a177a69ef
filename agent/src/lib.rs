//! RockchipLlama node agent: serves the OpenAI and Ollama HTTP APIs from models in a local
//! directory, on llama.cpp (CPU) today and RKLLM (NPU) on RK3588 boards.
//!
//! Layering (dependencies point down):
//! ```text
//!   cli ─► api (openai, ollama, ops, error) ─► sched (residency, queues) ─► engine (llama, …)
//!                 │                               └─► models (discovery, names, catalog, gguf)
//!                 └─► store (pull/delete), template, tools, keepalive, config, metrics
//! ```

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
pub mod keepalive;
pub mod metrics;
pub mod models;
pub mod sched;
pub mod store;
pub mod template;
pub mod tools;
