//! The gateway against a real kube-apiserver, started in-process: its demand Lease (created with
//! the gateway label and the URL annotation, renewed, deleted on a clean stop) and, read the way
//! the leader reads it (the annotation's URL + `/internal/v1/demand` with the cluster token), a
//! request held for an autoscaled ModelDeployment that has no replica, seen through the real
//! watches.
//!
//! Needs the control plane of `hack/testcluster.sh` with the CRDs installed, so plain `cargo
//! test` skips it (`#[ignore]`); `make test-k8s` runs it with ROCKCHIP_LLAMA_TEST_KUBECONFIG.

use std::{future::Future, time::Duration};

use anyhow::{Context, bail};
use crds::ModelDeployment;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Namespace};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams},
};
use rockchip_llama_operator::{
    demand::{self, Demand, ModelDemand},
    gateway::{self, announce},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

mod common;
use common::{client, unique};

/// Upper bound for each wait (2 shared CI cores).
const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "cluster-token-for-the-test";

/// Polls `check` until it yields a value, for at most `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = check().await;
        if let Ok(Some(v)) = last {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: not within {within:?} (last: {:?})", last.err());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run `make test-k8s`"]
async fn gateway_announces_its_demand_in_a_lease() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = unique("rl-gateway");
    let namespace: Namespace = serde_json::from_value(json!({ "metadata": { "name": ns } }))?;
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await?;
    let result = scenario(&client, &ns).await;
    Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await?;
    result
}

async fn scenario(client: &Client, ns: &str) -> anyhow::Result<()> {
    let mut config = gateway::Config::new("127.0.0.1:0".parse()?, ns);
    config.watch_namespace = Some(ns.to_owned());
    config.cluster_token = Some(TOKEN.to_owned());
    config.identity = unique("gw");
    config.workers = 1;
    let lease_name = announce::lease_name(&config.identity);
    let stop = CancellationToken::new();
    let served = tokio::spawn(gateway::run(client.clone(), config, stop.clone()));
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);

    // Created, labelled, and naming where the counters are (the listen address: 127.0.0.1).
    let lease = eventually("the gateway's Lease", WAIT, || async { Ok(leases.get_opt(&lease_name).await?) }).await?;
    let (label, value) = demand::LEASE_LABEL;
    assert_eq!(lease.labels().get(label).map(String::as_str), Some(value), "{lease:?}");
    let url = lease.annotations().get(demand::URL_ANNOTATION).cloned().context("no URL annotation")?;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let spec = lease.spec.clone().context("no spec")?;
    assert_eq!(spec.lease_duration_seconds, Some(30));
    let first_renewal = spec.renew_time.context("no renewTime")?.0;

    // Read as the leader reads it: the token is required.
    let http = reqwest::Client::new();
    let read = |token: &'static str| http.get(format!("{url}{}", demand::PATH)).bearer_auth(token).send();
    assert_eq!(read("wrong").await?.status(), 401);
    let idle: Demand = read(TOKEN).await?.error_for_status()?.json().await?;
    assert!(idle.models.is_empty(), "{idle:?}");

    // An autoscaled deployment with no replica: a request is held, and counted as waiting.
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let md: ModelDeployment = serde_json::from_value(json!({
        "apiVersion": "rockchipllama.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": { "name": "cold" },
        "spec": { "model": "cold-model", "format": "gguf", "replicas": 0,
                  "source": { "url": "http://origin.test/m.gguf", "sha256": "a".repeat(64) },
                  "autoscaling": { "minReplicas": 0, "maxReplicas": 1 } }
    }))?;
    mds.create(&PostParams::default(), &md).await?;
    let key = format!("{ns}/cold");
    let body = json!({"model": "cold-model", "messages": [{"role": "user", "content": "hi"}]});
    // The watch may not have the deployment yet (404): send until it is held.
    let held = eventually("a held request", WAIT, || {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            let mut sent =
                tokio::spawn(async move { http.post(format!("{url}/v1/chat/completions")).json(&body).send().await });
            match tokio::time::timeout(Duration::from_millis(500), &mut sent).await {
                Ok(done) => bail!("answered at once: {:?}", done?.map(|r| r.status())),
                Err(_) => Ok(Some(sent)),
            }
        }
    })
    .await?;
    let counted = eventually("the held request in the demand", WAIT, || async {
        let d: Demand = read(TOKEN).await?.json().await?;
        Ok(d.models.get(&key).copied().filter(|m| m.waiting == 1))
    })
    .await?;
    assert_eq!(counted, ModelDemand { waiting: 1, inflight: 0 });
    held.abort();

    // Renewed every 10 s.
    eventually("a renewal", Duration::from_secs(25), || async {
        let l = leases.get(&lease_name).await?;
        Ok(l.spec.and_then(|s| s.renew_time).filter(|t| t.0 > first_renewal))
    })
    .await?;

    // A clean stop deletes it.
    stop.cancel();
    tokio::time::timeout(WAIT, served).await.context("the gateway did not stop")???;
    assert!(leases.get_opt(&lease_name).await?.is_none(), "the Lease outlived the gateway");
    Ok(())
}
