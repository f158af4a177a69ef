//! Both kinds against a real kube-apiserver: create, get, status through server-side apply,
//! watch, and admission (CEL) through the typed client.
//!
//! These need the control plane of `hack/testcluster.sh` with the CRDs installed, so plain
//! `cargo test` skips them (`#[ignore]`). `make test-k8s` starts the cluster, installs the CRDs
//! and runs them with `--ignored` and `ROCKCHIP_LLAMA_TEST_KUBECONFIG` set. Each test works in
//! its own namespace or on its own uniquely named Board, so they run in parallel.

use std::time::Duration;

use anyhow::{Context, bail};
use crds::{Board, DesiredState, ModelDeployment, ModelFormat, ModelPhase, RoutingStrategy};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use kube_runtime::{WatchStreamExt, watcher};
use serde_json::json;

mod common;
use common::{client, unique};

/// Field managers, as the operator and an agent will use them.
const OPERATOR: &str = "rockchip-llama-operator";
/// Upper bound for any wait on the API server (2 shared CI cores).
const WAIT: Duration = Duration::from_secs(30);

async fn create_namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let name = unique(prefix);
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } }))?;
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    Ok(name)
}

async fn delete_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    Api::<Namespace>::all(client.clone()).delete(name, &DeleteParams::default()).await?;
    Ok(())
}

/// Waits until the watch stream yields an object for which `done` holds.
async fn wait_for<K, S>(stream: S, what: &str, done: impl Fn(&K) -> bool) -> anyhow::Result<K>
where
    S: futures::Stream<Item = Result<K, watcher::Error>>,
{
    let found = tokio::time::timeout(WAIT, async {
        let mut stream = std::pin::pin!(stream);
        while let Some(obj) = stream.try_next().await? {
            if done(&obj) {
                return Ok(obj);
            }
        }
        bail!("watch ended before {what}")
    })
    .await
    .with_context(|| format!("no watch event with {what} within {WAIT:?}"))??;
    Ok(found)
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run `make test-k8s`"]
async fn model_deployment_round_trip() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = create_namespace(&client, "md-round-trip").await?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns);
    let name = "tiny";

    // Watch from the start, so the spec change below must arrive as an event.
    let events =
        watcher(api.clone(), watcher::Config::default().fields(&format!("metadata.name={name}"))).applied_objects();

    // A minimal manifest through server-side apply: every default comes from the API server.
    let applied = api
        .patch(
            name,
            &PatchParams::apply("test-user"),
            &Patch::Apply(json!({
                "apiVersion": "rockchipllama.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": { "name": name },
                "spec": {
                    "format": "gguf",
                    "source": {
                        "url": "http://models.lan/SmolLM2-135M-Instruct.Q4_1.gguf",
                        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
                    }
                }
            })),
        )
        .await?;
    assert_eq!(applied.metadata.generation, Some(1));
    assert_eq!(applied.spec.format, ModelFormat::Gguf);
    assert_eq!(applied.spec.replicas, 1, "replicas default");
    assert_eq!(applied.spec.runtime.max_context_len, 4096, "maxContextLen default");
    assert_eq!(applied.spec.runtime.n_batch, 1, "nBatch default");
    assert_eq!(applied.spec.runtime.keep_alive, "5m", "keepAlive default");
    assert_eq!(applied.spec.routing.strategy, RoutingStrategy::LeastLoad, "strategy default");
    assert_eq!(applied.served_name(), Some(name));

    // The controller's status, through the status subresource with server-side apply.
    let status = |conditions: serde_json::Value| {
        json!({
            "apiVersion": "rockchipllama.io/v1alpha1",
            "kind": "ModelDeployment",
            "status": {
                "observedGeneration": 1,
                "replicas": 1,
                "readyReplicas": 1,
                "conditions": conditions,
                "placements": [{ "board": "board-a", "phase": "Ready" }]
            }
        })
    };
    let ready = json!([{
        "type": "Ready", "status": "True", "reason": "Serving",
        "message": "1 of 1 replicas ready", "lastTransitionTime": "2026-01-01T00:00:00Z"
    }]);
    api.patch_status(name, &PatchParams::apply(OPERATOR).force(), &Patch::Apply(status(ready))).await?;
    let got = api.get(name).await?;
    let st = got.status.as_ref().context("status after patch")?;
    assert_eq!(st.ready_replicas, Some(1));
    assert_eq!(st.placements[0].phase, ModelPhase::Ready);
    assert_eq!(got.metadata.generation, Some(1), "status writes must not bump generation");

    // conditions is a list-map on type: another manager's condition is merged, not replacing.
    api.patch_status(
        name,
        &PatchParams::apply("another-writer").force(),
        &Patch::Apply(json!({
            "apiVersion": "rockchipllama.io/v1alpha1",
            "kind": "ModelDeployment",
            "status": { "conditions": [{
                "type": "Degraded", "status": "False", "reason": "AllReady",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"
            }] }
        })),
    )
    .await?;
    let got = api.get(name).await?;
    let mut types: Vec<_> = got.status.iter().flat_map(|s| s.conditions.iter().map(|c| c.type_.clone())).collect();
    types.sort();
    assert_eq!(types, ["Degraded", "Ready"]);

    // A spec change bumps the generation and reaches the watcher.
    api.patch(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": 2 } }))).await?;
    let seen = wait_for(events, "spec.replicas = 2", |md: &ModelDeployment| md.spec.replicas == 2).await?;
    assert_eq!(seen.metadata.generation, Some(2));
    assert_eq!(seen.status.and_then(|s| s.ready_replicas), Some(1), "status kept");

    api.delete(name, &DeleteParams::default()).await?;
    delete_namespace(&client, &ns).await
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run `make test-k8s`"]
async fn board_round_trip() -> anyhow::Result<()> {
    let client = client().await?;
    let api: Api<Board> = Api::all(client);
    let name = unique("board");
    let events =
        watcher(api.clone(), watcher::Config::default().fields(&format!("metadata.name={name}"))).applied_objects();

    // The controller owns spec: it assigns a model.
    let spec = api
        .patch(
            &name,
            &PatchParams::apply(OPERATOR).force(),
            &Patch::Apply(json!({
                "apiVersion": "rockchipllama.io/v1alpha1",
                "kind": "Board",
                "metadata": { "name": name },
                "spec": { "models": [{
                    "key": "default/qwen3-0.6b",
                    "model": "qwen3-0.6b",
                    "format": "rkllm",
                    "source": { "url": "file:///var/lib/rockchip-llama/models/q.rkllm" }
                }] }
            })),
        )
        .await?;
    assert_eq!(spec.metadata.generation, Some(1));
    let model = &spec.spec.models[0];
    assert_eq!(model.desired, DesiredState::Loaded, "desired default");
    assert_eq!(model.runtime.max_context_len, 4096, "runtime defaults inside list items");
    assert!(!spec.spec.cordoned);

    // The agent owns status, under its own field manager.
    let agent = format!("rockchip-llama-agent-{name}");
    api.patch_status(
        &name,
        &PatchParams::apply(&agent).force(),
        &Patch::Apply(json!({
            "apiVersion": "rockchipllama.io/v1alpha1",
            "kind": "Board",
            "status": {
                "soc": "rk3588",
                "endpoint": "http://127.0.0.1:11434",
                "npu": { "runtimeVersion": "1.2.3", "abi": "rkllm-1.2", "cores": 3 },
                "memory": { "totalBytes": 17179869184_i64, "availableBytes": 12884901888_i64 },
                "thermal": { "maxCelsius": 48.5 },
                "loadedModels": 1,
                "models": [{ "key": "default/qwen3-0.6b", "phase": "Ready", "loaded": true }],
                "load": { "active": 0, "queued": 0, "tokensPerSecond": 0.0 },
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Heartbeating",
                    "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"
                }]
            }
        })),
    )
    .await?;
    let got = api.get(&name).await?;
    assert_eq!(got.metadata.generation, Some(1), "status writes must not bump generation");
    let st = got.status.as_ref().context("board status")?;
    assert_eq!(st.soc.as_deref(), Some("rk3588"));
    assert_eq!(st.models[0].phase, ModelPhase::Ready);
    let managers: Vec<_> = got.managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.contains(&agent) && managers.contains(&OPERATOR.to_owned()), "{managers:?}");

    // Cordoning is a spec change: generation 2, seen by the watch, status untouched.
    api.patch(
        &name,
        &PatchParams::apply(OPERATOR).force(),
        &Patch::Apply(json!({
            "apiVersion": "rockchipllama.io/v1alpha1",
            "kind": "Board",
            "spec": { "cordoned": true, "models": spec.spec.models }
        })),
    )
    .await?;
    let seen = wait_for(events, "spec.cordoned", |b: &Board| b.spec.cordoned).await?;
    assert_eq!(seen.metadata.generation, Some(2));
    assert_eq!(seen.status.and_then(|s| s.loaded_models), Some(1));

    api.delete(&name, &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run `make test-k8s`"]
async fn admission_rejects_with_the_rule_message() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = create_namespace(&client, "md-admission").await?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns);
    let result = api
        .patch(
            "bad",
            &PatchParams::apply("test-user"),
            &Patch::Apply(json!({
                "apiVersion": "rockchipllama.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": { "name": "bad" },
                "spec": {
                    "format": "rkllm",
                    "source": { "url": "https://models.lan/q.rkllm" },
                    "replicas": -1,
                    "runtime": { "maxContextLen": 1000, "nBatch": 9 }
                }
            })),
        )
        .await;
    let Err(kube::Error::Api(status)) = result else {
        bail!("expected the API server to reject the manifest, got {result:?}");
    };
    assert_eq!(status.code, 422, "{status:?}");
    // Every failed rule is reported at once, each with its own message.
    for message in [
        "source.sha256 is required when source.url is http:// or https://",
        "replicas must be 0 or more",
        "runtime.maxContextLen must be a positive multiple of 32",
        "runtime.nBatch must be between 1 and 8",
    ] {
        assert!(status.message.contains(message), "missing {message:?} in {}", status.message);
    }
    delete_namespace(&client, &ns).await
}
