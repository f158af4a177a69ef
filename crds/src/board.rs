//! `Board`: one per node agent, named after its node.
//!
//! Two writers, split by subresource so neither can overwrite the other: the controller owns
//! `spec` (which models this board should hold), the agent owns `status` (what the board is and
//! what it actually holds). Lists are `list-type: map` so server-side apply merges by key.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ChatTemplate, ModelFormat, ModelPhase, ModelSource, PromptCache, RuntimeParams, Sampling};

/// A board running the node agent. The controller writes spec (the models assigned to it);
/// the agent writes status (hardware, runtime, models, load, health).
// Each printcolumn(...) repeats `type_ = "string"`, which clippy mistakes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq, KubeSchema)]
#[kube(
    group = "rockchipllama.io",
    version = "v1alpha1",
    kind = "Board",
    category = "rockchip-llama",
    status = "BoardStatus",
    derive = "PartialEq",
    doc = "A board running the node agent. The controller writes spec (the models assigned to \
           it); the agent writes status (hardware, runtime, models, load, health).",
    printcolumn(
        name = "SoC",
        type_ = "string",
        json_path = ".status.soc",
        description = "System on chip, e.g. rk3588"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "The agent heartbeats and can serve"
    ),
    printcolumn(
        name = "Models",
        type_ = "integer",
        json_path = ".status.loadedModels",
        description = "Models loaded and serving"
    ),
    printcolumn(
        name = "Temp",
        type_ = "number",
        json_path = ".status.thermal.maxCelsius",
        description = "Hottest thermal zone, degrees Celsius"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BoardSpec {
    /// Models assigned to this board by the controller, keyed by `<namespace>/<name>` of their
    /// ModelDeployment. At most 64: more than a board could hold, and a bound lets the API
    /// server accept the CEL rules inside each entry (their cost is estimated per item).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["key".to_owned()]))]
    pub models: Vec<BoardModel>,

    /// When true the controller places no new replicas here (existing ones are moved away), e.g.
    /// before maintenance.
    #[serde(default)]
    pub cordoned: bool,
}

/// A model the board should hold, copied from its ModelDeployment by the controller so the agent
/// needs nothing else to fetch, load and serve it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardModel {
    /// `<namespace>/<name>` of the ModelDeployment this entry comes from.
    pub key: String,
    /// Name clients send as `model`.
    pub model: String,
    /// Other accepted names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Origin of the file and its digest.
    pub source: ModelSource,
    /// Agent endpoints of other boards that already hold the file, tried before the origin so
    /// the file crosses the uplink once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// rkllm (NPU) or gguf (CPU).
    pub format: ModelFormat,
    /// `Loaded`: download, verify and keep in memory. `Cached`: download and verify only, so a
    /// later load or a peer download is fast.
    #[serde(default)]
    pub desired: DesiredState,
    /// Engine parameters fixed at load time.
    #[serde(default)]
    pub runtime: RuntimeParams,
    /// Default sampling for requests that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
    /// Replaces the chat template that comes with the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<ChatTemplate>,
    /// Default for the model's thinking mode; unset uses the model's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<bool>,
    /// Prompt prefixes prefilled once per load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_caches: Vec<PromptCache>,
    /// Digest of everything above that needs a reload when it changes (source, format, runtime,
    /// sampling, template, thinking, prompt caches), set by the controller. The agent reports the
    /// revision it has loaded in status, which is how the controller rolls a change out one
    /// board at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// What the agent should do with an assigned model.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, JsonSchema)]
pub enum DesiredState {
    /// Download, verify and load into memory.
    #[default]
    Loaded,
    /// Download and verify only.
    Cached,
}

/// What the board is and holds, written by its agent.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardStatus {
    /// System on chip detected by the agent, e.g. `rk3588`; `cpu` on machines without a
    /// supported NPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soc: Option<String>,
    /// Base URL of the agent's HTTP API, used by the gateway and by peers fetching model files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// NPU driver and runtime found on the board; absent without an NPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub npu: Option<NpuInfo>,
    /// System memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<BoardMemory>,
    /// The agent's model store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreInfo>,
    /// Frequency and governor settings the agent applied at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<Tuning>,
    /// Temperatures and throttling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thermal: Option<Thermal>,
    /// Number of models loaded and serving (the Models column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_models: Option<i32>,
    /// State of every model in spec.models, plus any other model the store holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["key".to_owned()]))]
    pub models: Vec<BoardModelStatus>,
    /// Current request load, summed over models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<BoardLoad>,
    /// `Ready` (heartbeating, able to serve) and others set by the agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_owned()]))]
    pub conditions: Vec<Condition>,
}

/// NPU driver and runtime of a board.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NpuInfo {
    /// Kernel driver version (from /sys/kernel/debug/rknpu/version or the module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// Version of librkllmrt.so, e.g. `1.2.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    /// The runtime ABI the agent binds to (one per family of runtime versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi: Option<String>,
    /// Number of NPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<i32>,
    /// NPU memory domains the agent packs `.rkllm` models into (each model lives in one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<i32>,
    /// Bytes of NPU memory per domain; a `.rkllm` model needs about its file size in one domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_memory_bytes: Option<i64>,
}

/// System memory of a board.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardMemory {
    /// Total RAM in bytes.
    pub total_bytes: i64,
    /// RAM available for new allocations in bytes (MemAvailable).
    pub available_bytes: i64,
}

/// The agent's content-addressed model store.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreInfo {
    /// Size of the filesystem holding the store, in bytes.
    pub total_bytes: i64,
    /// Free bytes on that filesystem.
    pub free_bytes: i64,
}

/// Performance settings the agent applied at start.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tuning {
    /// True when every setting was applied; false when some were not permitted or absent.
    pub applied: bool,
    /// CPU frequency governor of the big cores, e.g. `performance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_governor: Option<String>,
    /// NPU frequency in Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub npu_freq_hz: Option<i64>,
    /// DDR frequency in Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ddr_freq_hz: Option<i64>,
    /// What could not be applied and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Temperatures of a board.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Thermal {
    /// Hottest thermal zone, degrees Celsius.
    pub max_celsius: f64,
    /// True while the kernel throttles CPU or NPU frequency because of heat.
    #[serde(default)]
    pub throttling: bool,
}

/// State of one model on the board.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardModelStatus {
    /// `<namespace>/<name>` of the ModelDeployment, matching spec.models[].key.
    pub key: String,
    /// SHA-256 of the file in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Pending, Downloading, Cached, Loading, Ready or Failed.
    pub phase: ModelPhase,
    /// Download or load progress from 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// True while the model is in memory and serving.
    #[serde(default)]
    pub loaded: bool,
    /// Bytes of the file in the store so far (the whole size once Cached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// spec.models[].revision of the entry the agent is serving (or fetching) now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Human-readable detail, e.g. why the phase is Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Request load of a board.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardLoad {
    /// Requests being generated now.
    pub active: i32,
    /// Requests waiting for a slot.
    pub queued: i32,
    /// Generated tokens per second over the last minute.
    #[serde(default)]
    pub tokens_per_second: f64,
}
