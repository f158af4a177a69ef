//! The board's heartbeat: a `coordination.k8s.io/v1` Lease named after the node in the operator's
//! namespace, renewed every quarter of its duration. The controller treats a lease not renewed
//! for `leaseDurationSeconds` as a dead board.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use tokio_util::sync::CancellationToken;

use super::{ClusterConfig, FIELD_MANAGER};

/// The Lease as applied at `now`.
pub fn lease(cfg: &ClusterConfig, acquired: Timestamp, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta { name: Some(cfg.node_name.clone()), ..ObjectMeta::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some(cfg.node_name.clone()),
            lease_duration_seconds: Some(i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX)),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// Renews the lease until cancelled; a failed renewal is logged and retried sooner.
pub async fn heartbeat(client: Client, cfg: ClusterConfig, cancel: CancellationToken) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let renew = cfg.lease_duration / 4;
    let acquired = Timestamp::now();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    loop {
        let wait = match api.patch(&cfg.node_name, &pp, &Patch::Apply(lease(&cfg, acquired, Timestamp::now()))).await {
            Ok(_) => renew,
            Err(e) => {
                tracing::warn!(namespace = %cfg.namespace, lease = %cfg.node_name, error = %e, "cannot renew the Lease");
                (renew / 4).max(Duration::from_secs(1))
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
