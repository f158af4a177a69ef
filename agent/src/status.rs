//! What the agent reports about itself at `GET /internal/v1/status`: the typed `Board` status
//! pieces cluster mode writes to its Board (`crds::BoardStatus`), plus the board details an
//! operator debugging one board wants (hardware facts, telemetry, tuning, runtime, loaded
//! models). Every part is a typed struct; nothing here is ad-hoc JSON.

use std::path::Path;

use board::{BoardInfo, DiskSpace, NofileOutcome, Telemetry};
use serde::Serialize;

use crate::{node::TuningState, sched::Scheduler};

/// The RKLLM runtime the agent opened, or why none.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeState {
    pub rkllm: Option<RkllmRuntime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RkllmRuntime {
    pub lib: std::path::PathBuf,
    pub version: Option<String>,
    pub abi: String,
    /// NPU memory domains and bytes per domain the engine packs models into.
    pub domains: u32,
    pub domain_memory_bytes: u64,
}

/// One resident model.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedModel {
    pub model: String,
    pub engine: &'static str,
    pub npu_domain: Option<i32>,
    pub busy: usize,
    pub file: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    /// Exactly what cluster mode writes to its Board's status.
    pub board: crds::BoardStatus,
    pub hardware: BoardInfo,
    pub big_core_mask: String,
    pub telemetry: Telemetry,
    pub tuning: TuningState,
    pub open_files: NofileOutcome,
    pub runtime: RuntimeState,
    pub loaded: Vec<LoadedModel>,
}

/// Builds the report from the parts the agent holds; `tokens_per_second` is the generated-token
/// rate over the last minute (`GenMetrics::tokens_per_second`).
pub fn report(
    node: &crate::node::Node,
    runtime: &RuntimeState,
    sched: &Scheduler,
    store_dir: &Path,
    tokens_per_second: f64,
) -> AgentStatus {
    let telemetry = Telemetry::read(&node.fs);
    let residents = sched.residents();
    let loaded: Vec<LoadedModel> = residents
        .iter()
        .map(|r| LoadedModel {
            model: r.entry.name.clone(),
            engine: r.engine,
            npu_domain: r.instance.npu_domain(),
            busy: r.instance.busy(),
            file: r.entry.file_name.clone(),
        })
        .collect();
    let tuning = node.tuning_state();
    let host = node.host();
    let i64_of = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let board = crds::BoardStatus {
        soc: Some(node.info.soc.as_ref().map_or_else(|| "cpu".to_owned(), |s| s.id().to_ascii_lowercase())),
        npu: node.info.soc.as_ref().map(|_| crds::NpuInfo {
            driver_version: node.info.npu_driver.as_ref().map(|d| d.version.to_string()),
            runtime_version: runtime.rkllm.as_ref().and_then(|r| r.version.clone()),
            abi: runtime.rkllm.as_ref().map(|r| r.abi.clone()),
            cores: None,
            domains: runtime.rkllm.as_ref().map(|r| i32::try_from(r.domains).unwrap_or(i32::MAX)),
            domain_memory_bytes: runtime.rkllm.as_ref().map(|r| i64_of(r.domain_memory_bytes)),
        }),
        memory: (host.mem_total_bytes > 0).then(|| crds::BoardMemory {
            total_bytes: i64_of(host.mem_total_bytes),
            available_bytes: i64_of(host.mem_available_bytes),
        }),
        store: DiskSpace::of(store_dir)
            .map(|d| crds::StoreInfo { total_bytes: i64_of(d.total_bytes), free_bytes: i64_of(d.available_bytes) }),
        tuning: tuning
            .enabled
            .then(|| crds::Tuning { applied: tuning.applied == Some(true), ..crds::Tuning::default() }),
        thermal: telemetry
            .thermal
            .iter()
            .map(|z| z.celsius)
            .reduce(f64::max)
            .map(|max_celsius| crds::Thermal { max_celsius, throttling: telemetry.throttling() }),
        loaded_models: Some(i32::try_from(loaded.len()).unwrap_or(i32::MAX)),
        load: Some(crds::BoardLoad {
            active: residents.iter().map(|r| r.instance.busy()).sum::<usize>() as i32,
            queued: residents.iter().map(|r| r.waiting()).sum::<usize>() as i32,
            tokens_per_second,
        }),
        ..crds::BoardStatus::default()
    };
    AgentStatus {
        board,
        hardware: node.info.clone(),
        big_core_mask: format!("{:#x}", node.info.big_core_mask()),
        telemetry,
        tuning,
        open_files: node.nofile,
        runtime: runtime.clone(),
        loaded,
    }
}
