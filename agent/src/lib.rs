//! RockchipLlama node agent: serves the OpenAI and Ollama HTTP APIs from models in a local
//! directory, on RKLLM (the RK3588 NPU) for `.rkllm` files and llama.cpp (CPU) for `.gguf`.
//!
//! Layering (dependencies point down; `tests/architecture.rs` fails on an import cycle):
//! ```text
//!   main ─► cli ─► app (composition root) ─► api (HTTP only) ─► serve (generation) ─► sched ─► engine
//!            └─► doctor                        │                   │                  │
//!                                              ├─► store           ├─► template, tools └─► models ─► config
//!                                              └─► node, status ─► board crate          (names, catalog, gguf)
//!   leaves: keepalive, size, metrics, npu (RKLLM flags)
//! ```
//! docs/architecture.md walks through the layers and where each kind of change goes.

pub mod api;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod deviceplugin;
pub mod doctor;
pub mod engine;
pub mod keepalive;
pub mod metrics;
pub mod models;
pub mod node;
pub mod npu;
#[cfg(test)]
mod router_tests;
pub mod sched;
pub mod serve;
pub mod settings;
pub mod size;
pub mod status;
pub mod store;
pub mod template;
pub mod tools;
