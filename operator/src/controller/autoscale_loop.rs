//! The leader's autoscaler loop: every [`INTERVAL`], for the ModelDeployments with
//! `spec.autoscaling`, sums the demand every gateway replica reports (`demand.rs`: the gateways'
//! Leases say where to read it), runs the pure decision (`autoscale::decide`) and writes
//! `status.autoscaling` under its own field manager when the decision changed in a way that
//! matters (`autoscale::worth_writing`). The status write wakes the deployment's reconcile,
//! which places the new count like any `replicas` change. Nothing is written per request, and
//! nothing is polled while no deployment autoscales.

use std::{sync::Arc, time::Duration};

use crds::{AutoscalingStatus, ModelDeployment};
use futures::future::join_all;
use k8s_openapi::{
    api::coordination::v1::Lease,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{events::Event, events::EventType, reflector::Store},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{
    autoscale::{self, Measured},
    boards::LeaseTimes,
    reconcile::Context,
};
use crate::demand::{self, Demand};

/// How often demand is read and decided on. A request held for a deployment scaled to zero
/// waits at most this long before the controller knows of it.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Longest time `lastActiveTime` in status may lag while the count holds (a new leader's
/// scale-down delay starts from it).
const REFRESH: SignedDuration = SignedDuration::from_secs(60);
/// Field manager of `status.autoscaling` (the reconcile's status manager never sets it).
pub const FIELD_MANAGER: &str = "rockchip-llama-autoscaler";
/// How long one gateway may take to answer.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs until `term` is cancelled.
pub(crate) async fn run(ctx: Arc<Context>, mds: Store<ModelDeployment>, term: CancellationToken) {
    let http = match reqwest::Client::builder().timeout(READ_TIMEOUT).build() {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "autoscaler: no HTTP client; autoscaling is off");
            return;
        }
    };
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = term.cancelled() => return,
            _ = tick.tick() => {}
        }
        let scope = ctx.config.watch_namespace.as_deref();
        let autoscaled: Vec<Arc<ModelDeployment>> = mds
            .state()
            .into_iter()
            .filter(|md| md.spec.autoscaling.is_some() && md.metadata.deletion_timestamp.is_none())
            .filter(|md| scope.is_none_or(|ns| md.namespace().as_deref() == Some(ns)))
            .collect();
        if autoscaled.is_empty() {
            continue;
        }
        let urls = gateway_urls(&ctx.leases.state(), Timestamp::now());
        let (sum, answered) = read_all(&http, &urls, ctx.config.cluster_token.as_deref()).await;
        let now = Timestamp::now();
        for md in autoscaled {
            let key = format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any());
            let measured = Measured { demand: sum.models.get(&key).map_or(0, |d| d.total()), gateways: answered };
            let Some(next) = autoscale::decide(&md, measured, now) else { continue };
            let prev = md.status.as_ref().and_then(|s| s.autoscaling.as_ref());
            if !autoscale::worth_writing(prev, &next, REFRESH) {
                continue;
            }
            let before = autoscale::effective_replicas(&md);
            if let Err(error) = write(&ctx, &md, &next).await {
                tracing::warn!(md = %key, %error, "autoscaler: writing status.autoscaling");
                continue;
            }
            ctx.metrics.wrote("md_autoscaling");
            if next.desired_replicas != before {
                let reason = next.reason.clone().unwrap_or_default();
                tracing::info!(md = %key, from = before, to = next.desired_replicas, %reason, "autoscaled");
                publish(&ctx, &md, before, &next).await;
            }
        }
    }
}

/// Base URLs of the gateways whose Lease is fresh at `now`.
pub fn gateway_urls(leases: &[Arc<Lease>], now: Timestamp) -> Vec<String> {
    let (label, value) = demand::LEASE_LABEL;
    let mut urls: Vec<String> = leases
        .iter()
        .filter(|l| l.labels().get(label).map(String::as_str) == Some(value))
        .filter(|l| LeaseTimes::from_lease(l).is_some_and(|t| t.expires() > now))
        .filter_map(|l| l.annotations().get(demand::URL_ANNOTATION).cloned())
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// Every gateway's demand summed, and how many answered.
async fn read_all(http: &reqwest::Client, urls: &[String], token: Option<&str>) -> (Demand, u32) {
    let reads = urls.iter().map(|base| async move {
        let url = format!("{}{}", base.trim_end_matches('/'), demand::PATH);
        let mut req = http.get(&url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let result = async { req.send().await?.error_for_status()?.json::<Demand>().await }.await;
        result.map_err(|error| tracing::debug!(%url, %error, "autoscaler: reading a gateway's demand")).ok()
    });
    let mut sum = Demand::default();
    let mut answered = 0;
    for demand in join_all(reads).await.into_iter().flatten() {
        sum.add(&demand);
        answered += 1;
    }
    (sum, answered)
}

async fn write(ctx: &Context, md: &ModelDeployment, next: &AutoscalingStatus) -> Result<(), kube::Error> {
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), md.namespace().as_deref().unwrap_or_default());
    let patch = json!({
        "apiVersion": "rockchipllama.io/v1alpha1",
        "kind": "ModelDeployment",
        "status": { "autoscaling": next },
    });
    api.patch_status(&md.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch)).await?;
    Ok(())
}

async fn publish(ctx: &Context, md: &ModelDeployment, from: i32, next: &AutoscalingStatus) {
    let reason = match next.desired_replicas {
        0 => "ScaledToZero",
        n if n > from => "ScaledUp",
        _ => "ScaledDown",
    };
    let event = Event {
        type_: EventType::Normal,
        reason: reason.to_owned(),
        note: Some(format!(
            "replicas {from} → {}: {}",
            next.desired_replicas,
            next.reason.as_deref().unwrap_or_default()
        )),
        action: "Autoscale".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &md.object_ref(&())).await {
        tracing::warn!(md = %md.name_any(), %error, "publishing an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str, gateway: bool, url: Option<&str>, renewed: &str) -> Arc<Lease> {
        let mut l: Lease = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "holderIdentity": name, "leaseDurationSeconds": 30, "renewTime": renewed }
        }))
        .expect("lease");
        if gateway {
            l.labels_mut().insert(demand::LEASE_LABEL.0.to_owned(), demand::LEASE_LABEL.1.to_owned());
        }
        if let Some(u) = url {
            l.annotations_mut().insert(demand::URL_ANNOTATION.to_owned(), u.to_owned());
        }
        Arc::new(l)
    }

    #[test]
    fn only_fresh_gateway_leases_with_a_url_are_read() {
        let now: Timestamp = "2026-11-28T10:00:20Z".parse().expect("time");
        let leases = vec![
            lease("rockchip-llama-gateway-a", true, Some("http://10.0.0.1:11434"), "2026-11-28T10:00:10.000000Z"),
            // expired (renewed 40 s ago, 30 s duration)
            lease("rockchip-llama-gateway-b", true, Some("http://10.0.0.2:11434"), "2026-11-28T09:59:40.000000Z"),
            // a board's lease
            lease("board-1", false, Some("http://10.0.0.3:8080"), "2026-11-28T10:00:10.000000Z"),
            // no URL
            lease("rockchip-llama-gateway-c", true, None, "2026-11-28T10:00:10.000000Z"),
        ];
        assert_eq!(gateway_urls(&leases, now), vec!["http://10.0.0.1:11434".to_owned()]);
    }
}
