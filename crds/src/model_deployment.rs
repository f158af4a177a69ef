//! `ModelDeployment`: what a user asks for — serve this model file, this many times, this way.
//!
//! The controller turns it into entries of `Board.spec.models` and reports back in its status;
//! the gateway reads `model`, `aliases` and `routing` to route requests.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ChatTemplate, ModelFormat, ModelPhase, ModelSource, PromptCache, RuntimeParams, Sampling};

/// A model served by the cluster: its file, engine, replica count, runtime parameters and
/// routing. Each replica is the model loaded on one board.
// Each printcolumn(...) repeats `type_ = "string"`, which clippy mistakes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, PartialEq, KubeSchema)]
#[kube(
    group = "rockchipllama.io",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    shortname = "md",
    category = "rockchip-llama",
    status = "ModelDeploymentStatus",
    // `kubectl scale md <name> --replicas=N` writes spec.replicas; status.replicas is what the
    // controller has assigned.
    scale(spec_replicas_path = ".spec.replicas", status_replicas_path = ".status.replicas"),
    derive = "PartialEq",
    doc = "A model served by the cluster: its file, engine, replica count, runtime parameters \
           and routing. Each replica is the model loaded on one board.",
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".spec.model",
        description = "Name clients send as `model`"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Replicas loaded and serving"
    ),
    printcolumn(
        name = "Format",
        type_ = "string",
        json_path = ".spec.format",
        description = "rkllm (NPU) or gguf (CPU)"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// The name clients send as `model` in OpenAI and Ollama requests. Defaults to the
    /// ModelDeployment's metadata.name; must be unique in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub model: Option<String>,

    /// Other names accepted for this model, e.g. Ollama-style tags such as `qwen3:0.6b`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub aliases: Vec<String>,

    /// Where the model file comes from and how it is verified.
    pub source: ModelSource,

    /// File format, which selects the engine: `rkllm` (NPU, vendor runtime) or `gguf` (CPU,
    /// llama.cpp).
    #[schemars(schema_with = "crate::common::plain_string")]
    #[x_kube(validation = Rule::new("self == 'rkllm' || self == 'gguf'")
        .message("format must be rkllm (NPU) or gguf (CPU)"))]
    pub format: ModelFormat,

    /// SoCs the file was converted for (e.g. `rk3588`); replicas are placed only on boards with
    /// one of these SoCs. `.rkllm` files only run on the SoC they were converted for. Empty: any
    /// board (usual for GGUF).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub socs: Vec<String>,

    /// Number of boards that load the model. 0 keeps the deployment but unloads it everywhere.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0").message("replicas must be 0 or more"))]
    pub replicas: i32,

    /// Which boards may run replicas and how replicas spread over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,

    /// Engine parameters fixed at load time.
    #[serde(default)]
    pub runtime: RuntimeParams,

    /// Default sampling for requests that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,

    /// Replaces the chat template that comes with the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<ChatTemplate>,

    /// Default for models with a thinking mode (e.g. Qwen3): true lets the model reason before
    /// answering, false asks it not to. Requests may override it. Unset: the model's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<bool>,

    /// Prompt prefixes prefilled once per load and reused by requests that start with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".to_owned()]))]
    pub prompt_caches: Vec<PromptCache>,

    /// How the gateway picks a replica for each request.
    #[serde(default)]
    pub routing: Routing,

    /// Replicas follow demand (requests queued and in flight at the gateways) between
    /// `minReplicas` and `maxReplicas`, down to zero when `minReplicas` is 0. While set, the
    /// controller decides the count and `replicas` (and `kubectl scale`) is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
}

/// Demand-driven replica count (`spec.autoscaling`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct Autoscaling {
    /// Fewest replicas, also with no demand. 0 lets an idle model give its NPU back: it is
    /// unloaded (its file stays cached on the boards) and the first request brings it back.
    /// Default 1.
    #[serde(default = "default_min_replicas")]
    #[x_kube(validation = Rule::new("self >= 0").message("autoscaling.minReplicas must be 0 or more"))]
    pub min_replicas: i32,

    /// Most replicas, however high the demand.
    #[x_kube(validation = Rule::new("self >= 1").message("autoscaling.maxReplicas must be at least 1"))]
    pub max_replicas: i32,

    /// Requests (queued plus running) one replica should carry; replicas = demand divided by
    /// this, rounded up. Unset: the replica's slots (`runtime.nBatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1")
        .message("autoscaling.targetActivePerReplica must be at least 1"))]
    pub target_active_per_replica: Option<i32>,

    /// How long demand must stay below what the current count needs before replicas are
    /// removed (scaling up is immediate), as `<n>s`, `<n>m` or `<n>h`. Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(s|m|h)$')")
        .message("autoscaling.scaleDownDelay must be a number followed by s, m or h, e.g. 10m"))]
    pub scale_down_delay: Option<String>,
}

fn default_min_replicas() -> i32 {
    1
}

impl Autoscaling {
    /// `scaleDownDelay` as a duration; the default (10 minutes) when unset or unreadable
    /// (admission refuses unreadable values, so that only happens for objects written before).
    pub fn scale_down_delay(&self) -> std::time::Duration {
        const DEFAULT: std::time::Duration = std::time::Duration::from_secs(600);
        let Some(text) = self.scale_down_delay.as_deref() else { return DEFAULT };
        let (digits, unit) = text.split_at(text.len().saturating_sub(1));
        let factor = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return DEFAULT,
        };
        digits.parse::<u64>().ok().and_then(|n| n.checked_mul(factor)).map_or(DEFAULT, std::time::Duration::from_secs)
    }
}

fn default_replicas() -> i32 {
    1
}

/// Which boards may run replicas and how replicas spread over them.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Only boards whose labels include all of these key/value pairs receive replicas.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// A Board label key (e.g. `topology.kubernetes.io/zone`); replicas are spread as evenly as
    /// possible over the label's values. Unset: spread over boards only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by: Option<String>,
}

/// How the gateway picks a replica for each request.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// `LeastLoad` sends each request to the replica with the fewest queued and running
    /// requests; `PrefixAffinity` sends requests sharing a prompt prefix to the same replica so
    /// its KV cache is reused; `RoundRobin` takes replicas in turn.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::plain_string")]
    #[x_kube(validation = Rule::new("self in ['LeastLoad', 'PrefixAffinity', 'RoundRobin']")
        .message("routing.strategy must be one of LeastLoad, PrefixAffinity, RoundRobin"))]
    pub strategy: RoutingStrategy,

    /// For `PrefixAffinity`: how many leading characters of the rendered prompt identify a
    /// prefix. Longer values separate conversations better; shorter ones group more requests.
    #[serde(default = "default_prefix_chars")]
    #[x_kube(validation = Rule::new("self >= 1").message("routing.prefixChars must be at least 1"))]
    pub prefix_chars: i32,
}

fn default_prefix_chars() -> i32 {
    1024
}

impl Default for Routing {
    fn default() -> Self {
        Self { strategy: RoutingStrategy::default(), prefix_chars: default_prefix_chars() }
    }
}

/// Replica selection policy of the gateway.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, JsonSchema)]
pub enum RoutingStrategy {
    /// The replica with the fewest queued and running requests.
    #[default]
    LeastLoad,
    /// The replica that served the same prompt prefix before, unless it is much busier.
    PrefixAffinity,
    /// Replicas in turn.
    RoundRobin,
}

/// Observed state, written by the controller.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The metadata.generation this status describes; older means the controller has not yet
    /// acted on the latest spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Boards the model is assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Boards where the model is loaded and serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// `Ready` (serving on at least one board), `Progressing` (downloads or loads under way),
    /// `Degraded` (fewer ready replicas than asked, or failures).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_owned()]))]
    pub conditions: Vec<Condition>,

    /// One entry per board the model is assigned to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["board".to_owned()]))]
    pub placements: Vec<PlacementStatus>,

    /// What the autoscaler decided and why, while `spec.autoscaling` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
}

/// The autoscaler's state, kept in status so a new leader continues where the last one was.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// The replica count the controller places now (takes the place of `spec.replicas`).
    pub desired_replicas: i32,
    /// Requests queued and in flight at the gateways when last measured.
    #[serde(default)]
    pub demand: i64,
    /// Gateways whose demand was read.
    #[serde(default)]
    pub gateways: i32,
    /// Last time demand needed the current count (RFC 3339); scaling down waits
    /// `scaleDownDelay` from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<String>,
    /// Last time `desiredReplicas` changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Why the count is what it is, e.g. `demand 3 / 1 per replica`, `idle for 10m: scaled to zero`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The model on one board.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// Name of the Board.
    pub board: String,
    /// Pending, Downloading, Cached, Loading, Ready or Failed.
    pub phase: ModelPhase,
    /// Download or load progress from 0 to 1, while Downloading or Loading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// Human-readable detail, e.g. why the phase is Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ModelDeployment {
    /// The name clients use: `spec.model`, or the object's name when that is unset.
    pub fn served_name(&self) -> Option<&str> {
        self.spec.model.as_deref().or(self.metadata.name.as_deref())
    }
}
