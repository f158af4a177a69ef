//! The custom resources the agent and the operator speak, and the CRD YAML generated from them.
//!
//! ```text
//!   user ──kubectl apply──► ModelDeployment (namespaced, `md`)
//!                                 │ controller places replicas
//!                                 ▼
//!                           Board.spec.models[]  (cluster-scoped, one per board, name = node)
//!                                 │ agent fetches, verifies, loads
//!                                 ▼
//!                           Board.status ──► controller ──► ModelDeployment.status
//! ```
//!
//! Everything an admission check can decide is a schema constraint or a CEL rule on these types,
//! so a bad manifest is refused by `kubectl apply` with a message rather than discovered later by
//! the controller. The YAML under `crds/yaml/` and the chart's `crds/` is generated from this
//! crate (`make generate-crds`) and never edited by hand; `make check-crds` fails on drift.

mod board;
mod common;
mod model_deployment;
mod yaml;

pub use board::{
    Board, BoardLoad, BoardMemory, BoardModel, BoardModelStatus, BoardSpec, BoardStatus, DesiredState, NpuInfo,
    StoreInfo, Thermal, Tuning,
};
pub use common::{ChatTemplate, ModelFormat, ModelPhase, ModelSource, PromptCache, RuntimeParams, Sampling};
pub use model_deployment::{
    Autoscaling, AutoscalingStatus, ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus, Placement,
    PlacementStatus, Routing, RoutingStrategy,
};
pub use yaml::{CrdFile, Error, crd_files, crds, render_all};

/// API group of every resource in this crate.
pub const GROUP: &str = "rockchipllama.io";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Label the agent puts on its Board with the SoC it detected (e.g. `rk3588`), so placement and
/// `kubectl get boards -l` can select by SoC without reading status.
pub const LABEL_SOC: &str = "rockchipllama.io/soc";

/// Condition type that summarises a resource: `True` when it serves requests.
pub const CONDITION_READY: &str = "Ready";
/// Condition type for a rollout or download still in progress.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type for a resource that serves, but with fewer replicas or worse than asked.
pub const CONDITION_DEGRADED: &str = "Degraded";
