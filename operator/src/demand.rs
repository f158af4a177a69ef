//! Demand for each ModelDeployment as one gateway replica counts it, and how the leader finds
//! every replica's count. The autoscaler (`controller::autoscale`) needs the requests waiting
//! and in flight at *all* gateways, and must not cost an API server write per request: so each
//! gateway serves its own counters at [`PATH`] and announces where in a Lease of its own
//! (renewed like a board's, [`LEASE_PREFIX`] + its identity, labelled [`LEASE_LABEL`], the URL
//! in the [`URL_ANNOTATION`] annotation); the leader lists those Leases and reads each URL.
//!
//! ```text
//!   gateway replica ──renews──► Lease rockchip-llama-gateway-<identity>  (demand-url=http://ip:port)
//!          ▲                                       │
//!          └──── GET /internal/v1/demand ◄──────── leader (lists the Leases, sums the answers)
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a gateway serves its counters (cluster token required when one is configured).
pub const PATH: &str = "/internal/v1/demand";
/// Name prefix of the gateways' Leases, followed by the replica's identity.
pub const LEASE_PREFIX: &str = "rockchip-llama-gateway-";
/// Label on every gateway Lease, so the leader tells them from the boards' and its own.
pub const LEASE_LABEL: (&str, &str) = ("rockchipllama.io/role", "gateway");
/// Annotation of a gateway Lease: the base URL its counters are read from.
pub const URL_ANNOTATION: &str = "rockchipllama.io/demand-url";

/// One gateway's counters, by ModelDeployment key (`<namespace>/<name>`). Only deployments
/// with something waiting or in flight are listed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Demand {
    pub models: BTreeMap<String, ModelDemand>,
}

/// Requests for one deployment at one gateway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelDemand {
    /// Waiting for a board: all boards busy, or none Ready yet (a deployment scaled to zero
    /// holds its requests here while a replica starts).
    pub waiting: u64,
    /// Sent to a board and not finished.
    pub inflight: u64,
}

impl ModelDemand {
    /// Requests the deployment's replicas have to carry.
    pub fn total(&self) -> u64 {
        self.waiting + self.inflight
    }
}

impl Demand {
    /// Adds another gateway's counters to these.
    pub fn add(&mut self, other: &Demand) {
        for (key, d) in &other.models {
            let sum = self.models.entry(key.clone()).or_default();
            sum.waiting += d.waiting;
            sum.inflight += d.inflight;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demands_add_up_per_deployment() {
        let one = |key: &str, waiting, inflight| Demand {
            models: BTreeMap::from([(key.to_owned(), ModelDemand { waiting, inflight })]),
        };
        let mut sum = one("ns/a", 1, 2);
        sum.add(&one("ns/a", 3, 0));
        sum.add(&one("ns/b", 0, 1));
        assert_eq!(sum.models["ns/a"], ModelDemand { waiting: 4, inflight: 2 });
        assert_eq!(sum.models["ns/b"].total(), 1);
    }
}
