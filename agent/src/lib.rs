//! RockchipLlama node agent: serves the OpenAI and Ollama HTTP APIs from models in a local
//! directory, on RKLLM (the RK3588 NPU) for `.rkllm` files and llama.cpp (CPU) for `.gguf`.
//!
//! Layering (dependencies point down):
//! ```text
//!   cli, doctor ─► api (openai, ollama, embed, ops, error) ─► sched (residency, queues) ─► engine (llama, rkllm)
//!       │                 │                                     └─► models (discovery, names, catalog, gguf)
//!       │                 └─► store (pull/delete), template, tools, keepalive, config, metrics
//!       └─► npu (runtime flags), node (board facts, tuning, telemetry) ─► board crate (sysfs)
//! ```

pub mod api;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod engine;
pub mod keepalive;
pub mod metrics;
pub mod models;
pub mod node;
pub mod npu;
pub mod sched;
pub mod store;
pub mod template;
pub mod tools;
