//! Cluster mode (`serve --cluster`): the agent registers its board with the Kubernetes API,
//! heartbeats a Lease, and serves what the controller assigns to its Board.
//!
//! ```text
//!   Board <node> (spec: controller) ──watch──► assign::Reconciler ─► worker per model:
//!        ▲                                     fetch blob (peers, then origin) ─► verify
//!        │ status (SSA, ≤ 1 write/s, on change)  ─► registry entry under model + aliases ─► load
//!   board::Writer ◄── model states, node facts, load, conditions (Ready / Draining)
//!   Lease <node> in --namespace ◄── lease::heartbeat (renew every duration/4)
//! ```
//!
//! Without `--cluster` none of this runs and the agent is the single-board server it always was.

mod assign;
mod board;
mod lease;

use std::{sync::Arc, time::Duration};

pub use assign::{ModelStates, Reconciler};
pub use board::{BoardWriter, watch_spec};
use clap::Args;
pub use lease::heartbeat;

use crate::size::Size;

/// Field manager of everything the agent writes (server-side apply).
pub const FIELD_MANAGER: &str = "rockchip-llama-agent";
/// Board label carrying the SoC, so placement selectors can use it.
pub const SOC_LABEL: &str = "rockchipllama.io/soc";

/// Flags of cluster mode.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Register with the Kubernetes API and serve what the controller assigns to this board.
    /// Also on when running in a pod (KUBERNETES_SERVICE_HOST is set); `--cluster=false` forces
    /// it off.
    #[arg(long, env = "ROCKCHIP_LLAMA_CLUSTER", num_args = 0..=1, default_missing_value = "true")]
    pub cluster: Option<bool>,
    /// Name of this board's Board and Lease: the node name (from the downward API in a pod).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Base URL the gateway and peers use to reach this agent. Default: http://$POD_IP:<port>,
    /// else the listen address when it is not a wildcard.
    #[arg(long, env = "ROCKCHIP_LLAMA_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Namespace of this board's Lease (the operator's namespace).
    #[arg(long, env = "ROCKCHIP_LLAMA_NAMESPACE", default_value = "rockchip-llama")]
    pub namespace: String,
    /// Lease duration in seconds; the lease is renewed every quarter of it. A board whose lease
    /// is not renewed for this long is NotReady and its models are placed elsewhere.
    #[arg(long, env = "ROCKCHIP_LLAMA_LEASE_DURATION", default_value_t = 40,
          value_parser = clap::value_parser!(u64).range(4..=3600))]
    pub lease_duration: u64,
    /// Bytes of cached model blobs kept once no longer assigned (e.g. `20GiB`); beyond it the
    /// least recently used unassigned blobs are deleted. Default: no limit (the store's reserve
    /// of free disk still applies to downloads).
    #[arg(long, env = "ROCKCHIP_LLAMA_STORE_BUDGET")]
    pub store_budget: Option<String>,
}

/// Cluster mode, resolved.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_name: String,
    pub advertise_url: String,
    pub namespace: String,
    pub lease_duration: Duration,
    pub store_budget: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster mode needs --node-name (env NODE_NAME): the name of this board's Board and Lease")]
    NoNodeName,
    #[error("cluster mode needs --advertise-url (or POD_IP): the listen address {0} is a wildcard peers cannot reach")]
    NoAdvertiseUrl(std::net::SocketAddr),
    #[error("--store-budget: {0}")]
    Budget(String),
    #[error("connecting to the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl ClusterArgs {
    /// `None` when cluster mode is off.
    pub fn resolve(&self, listen: std::net::SocketAddr) -> Result<Option<ClusterConfig>, ClusterError> {
        let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        if !self.cluster.unwrap_or(in_pod) {
            return Ok(None);
        }
        let node_name = self.node_name.clone().filter(|n| !n.is_empty()).ok_or(ClusterError::NoNodeName)?;
        let advertise_url = match (&self.advertise_url, std::env::var("POD_IP").ok().filter(|s| !s.is_empty())) {
            (Some(u), _) => u.trim_end_matches('/').to_owned(),
            (None, Some(ip)) if ip.contains(':') => format!("http://[{ip}]:{}", listen.port()),
            (None, Some(ip)) => format!("http://{ip}:{}", listen.port()),
            (None, None) if !listen.ip().is_unspecified() => format!("http://{listen}"),
            (None, None) => return Err(ClusterError::NoAdvertiseUrl(listen)),
        };
        let store_budget = self
            .store_budget
            .as_deref()
            .map(|s| Size::parse(s).map_err(|e| ClusterError::Budget(e.to_string())))
            .transpose()?
            .and_then(|s| match s {
                Size::Bytes(b) => Some(b),
                Size::Auto => None,
            });
        Ok(Some(ClusterConfig {
            node_name,
            advertise_url,
            namespace: self.namespace.clone(),
            lease_duration: Duration::from_secs(self.lease_duration),
            store_budget,
        }))
    }
}

/// The parts of the agent cluster mode works with.
#[derive(Clone)]
pub struct Parts {
    pub registry: Arc<crate::models::Registry>,
    pub library: Arc<crate::models::Library>,
    pub sched: Arc<crate::sched::Scheduler>,
    pub serve: Arc<crate::serve::Service>,
    pub node: Arc<crate::node::Node>,
    pub runtime: crate::status::RuntimeState,
}
