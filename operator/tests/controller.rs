//! The controller against a real kube-apiserver, started in-process, with this test acting as
//! three boards' agents (it writes their status and renews their Leases).
//!
//! Placement with a pipelined peer chain, status from the boards' reports, scale up through the
//! scale subresource (the new board lists holders as peers), scale down, a board whose Lease
//! expires (marked not Ready, its replica moves to the spare board), delete (entries removed,
//! finalizer gone), and the leader Lease released on shutdown.
//!
//! Needs the control plane of `hack/testcluster.sh` with the CRDs installed, so plain `cargo
//! test` skips it (`#[ignore]`); `make test-k8s` runs it with ROCKCHIP_LLAMA_TEST_KUBECONFIG.

use std::{
    collections::HashSet,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use crds::{Board, BoardModel, CONDITION_READY, DesiredState, ModelDeployment};
use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Namespace},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use rockchip_llama_operator::controller::{self, leader};
use serde_json::{Value, json};

mod common;
use common::{client, unique};

/// Upper bound for each wait on the controller (2 shared CI cores).
const WAIT: Duration = Duration::from_secs(30);
/// Field manager of the boards' agents.
const AGENT: &str = "rockchip-llama-agent";
const SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Polls `check` until it yields a value, for at most WAIT.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("not within {WAIT:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The test's stand-in for the boards' agents.
struct Agents {
    boards: Api<Board>,
    leases: Api<Lease>,
    /// Boards whose Lease the background task keeps renewing.
    alive: Arc<Mutex<HashSet<String>>>,
}

impl Agents {
    fn endpoint(board: &str) -> String {
        format!("http://{board}.boards.test:8080")
    }

    /// Creates the Board and its Lease, as an agent does at start.
    async fn start(&self, board: &str) -> anyhow::Result<()> {
        let b: Board = serde_json::from_value(json!({
            "apiVersion": "rockchipllama.io/v1alpha1", "kind": "Board",
            "metadata": { "name": board, "labels": { "rockchipllama.io/soc": "rk3588" } },
            "spec": {}
        }))?;
        self.boards.create(&PostParams::default(), &b).await?;
        self.report(board, json!([])).await?;
        let lease: Lease = serde_json::from_value(json!({
            "metadata": { "name": board },
            "spec": { "holderIdentity": board, "leaseDurationSeconds": 40, "renewTime": now_micro(0) }
        }))?;
        self.leases.create(&PostParams::default(), &lease).await?;
        self.alive.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert(board.to_owned());
        Ok(())
    }

    /// Writes the whole status, as the agent's forced apply does.
    async fn report(&self, board: &str, models: Value) -> anyhow::Result<()> {
        let status = json!({
            "apiVersion": "rockchipllama.io/v1alpha1", "kind": "Board",
            "status": {
                "soc": "rk3588",
                "endpoint": Self::endpoint(board),
                "memory": { "totalBytes": 8_i64 << 30, "availableBytes": 7_i64 << 30 },
                "store": { "totalBytes": 64_i64 << 30, "freeBytes": 60_i64 << 30 },
                "models": models,
                "conditions": [{ "type": "Ready", "status": "True", "reason": "Heartbeating",
                                 "message": "", "lastTransitionTime": now_micro(0).replace(".000000", "") }]
            }
        });
        self.boards.patch_status(board, &PatchParams::apply(AGENT).force(), &Patch::Apply(status)).await?;
        Ok(())
    }

    /// Reports the entry `key` Ready at its revision.
    async fn ready(&self, board: &str, entry: &BoardModel) -> anyhow::Result<()> {
        self.report(
            board,
            json!([{ "key": entry.key, "sha256": SHA, "phase": "Ready", "loaded": true,
                     "bytes": 104_857_600, "progress": 1.0, "revision": entry.revision }]),
        )
        .await
    }

    /// Stops renewing the board's Lease and backdates it past its duration.
    async fn kill(&self, board: &str) -> anyhow::Result<()> {
        self.alive.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.remove(board);
        let patch = json!({ "spec": { "renewTime": now_micro(-60) } });
        self.leases.patch(board, &PatchParams::default(), &Patch::Merge(patch)).await?;
        Ok(())
    }
}

/// RFC 3339 with microseconds, `offset` seconds from now (the Lease's MicroTime format).
fn now_micro(offset: i64) -> String {
    let t = Timestamp::now().saturating_add(SignedDuration::from_secs(offset)).unwrap_or_else(|_| Timestamp::now());
    let t = Timestamp::from_second(t.as_second()).unwrap_or(t);
    t.strftime("%Y-%m-%dT%H:%M:%S.000000Z").to_string()
}

/// Renews every alive board's Lease every 5 s, as agents do every 10 s.
fn renew_leases(leases: Api<Lease>, alive: Arc<Mutex<HashSet<String>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let names: Vec<String> = alive.lock().map(|a| a.iter().cloned().collect()).unwrap_or_default();
            for name in names {
                let patch = json!({ "spec": { "renewTime": now_micro(0) } });
                if let Err(e) = leases.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
                    eprintln!("renewing lease {name}: {e}");
                }
            }
        }
    })
}

/// Each board's entry for `key`, by board name (absent boards are skipped).
async fn entries(api: &Api<Board>, names: &[String], key: &str) -> anyhow::Result<Vec<(String, BoardModel)>> {
    let mut out = Vec::new();
    for name in names {
        if let Some(board) = api.get_opt(name).await?
            && let Some(entry) = board.spec.models.iter().find(|e| e.key == key)
        {
            out.push((name.clone(), entry.clone()));
        }
    }
    Ok(out)
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run `make test-k8s`"]
async fn controller_places_rolls_and_cleans_up() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = unique("rl-controller");
    let namespace: Namespace = serde_json::from_value(json!({ "metadata": { "name": ns } }))?;
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await?;
    let result = scenario(&client, &ns).await;
    Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await?;
    result
}

async fn scenario(client: &Client, ns: &str) -> anyhow::Result<()> {
    let boards_api: Api<Board> = Api::all(client.clone());
    let leases_api: Api<Lease> = Api::namespaced(client.clone(), ns);
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let agents = Agents { boards: boards_api.clone(), leases: leases_api.clone(), alive: Arc::default() };
    let renewer = renew_leases(leases_api.clone(), agents.alive.clone());
    // Names sort as a < b < c, which is the order placement breaks ties in.
    let prefix = unique("brd");
    let names: Vec<String> = ["a", "b", "c"].iter().map(|s| format!("{prefix}-{s}")).collect();
    for name in &names {
        agents.start(name).await?;
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut config = controller::Config::new(ns, leader::identity(Some("controller-test")));
    config.resync = Duration::from_secs(10);
    // Deployments other tests leave in their namespaces are not this controller's business.
    config.watch_namespace = Some(ns.to_owned());
    let identity = config.identity.clone();
    let running = tokio::spawn(controller::run(client.clone(), config, async move {
        let _ = stop_rx.await;
    }));

    let outcome = steps(client, &agents, &mds, &names).await;

    let _ = stop_tx.send(());
    let stopped = tokio::time::timeout(WAIT, running).await;
    renewer.abort();
    if outcome.is_err() {
        // With the controller gone, a finalizer left behind would keep the namespace forever.
        let patch = json!({ "metadata": { "finalizers": null } });
        let _ = mds.patch("smollm", &PatchParams::default(), &Patch::Merge(patch)).await;
    }
    for name in &names {
        let _ = boards_api.delete(name, &DeleteParams::default()).await;
    }
    outcome?;
    stopped.context("controller did not stop")?.context("controller task")??;
    // The leader cleared its identity on the way out.
    let lease = leases_api.get(leader::LEASE_NAME).await?;
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "{identity} should have released the lease");
    Ok(())
}

async fn steps(client: &Client, agents: &Agents, mds: &Api<ModelDeployment>, names: &[String]) -> anyhow::Result<()> {
    let boards = &agents.boards;
    let ns = mds.namespace().context("namespaced api")?;
    let name = "smollm";
    let key = format!("{ns}/{name}");
    let (a, b, c) = (&names[0], &names[1], &names[2]);

    // 1. Two replicas: boards a and b, b fetching from a, a from the origin.
    mds.patch(
        name,
        &PatchParams::apply("test-user"),
        &Patch::Apply(json!({
            "apiVersion": "rockchipllama.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": { "name": name },
            "spec": {
                "format": "gguf", "replicas": 2,
                "source": { "url": "http://models.test/smollm.gguf", "sha256": SHA, "sizeBytes": 104_857_600 }
            }
        })),
    )
    .await?;
    let placed = eventually("entries on two boards", || async {
        let e = entries(boards, names, &key).await?;
        Ok((e.len() == 2).then_some(e))
    })
    .await?;
    assert_eq!(placed[0].0, *a);
    assert_eq!(placed[1].0, *b);
    assert!(placed[0].1.peers.is_empty(), "the first board fetches from the origin: {:?}", placed[0].1.peers);
    assert_eq!(placed[1].1.peers, [Agents::endpoint(a)]);
    assert_eq!(placed[0].1.desired, DesiredState::Loaded);
    let revision = placed[0].1.revision.clone().context("entry revision")?;
    eventually("status.replicas = 2", || async {
        let md = mds.get(name).await?;
        Ok(md.status.filter(|s| s.replicas == Some(2) && s.placements.len() == 2).map(drop))
    })
    .await?;
    let md = mds.get(name).await?;
    assert!(md.metadata.finalizers.unwrap_or_default().contains(&controller::FINALIZER.to_owned()));

    // 2. Both agents report Ready at the revision: readyReplicas 2, Ready condition.
    for (board, entry) in &placed {
        agents.ready(board, entry).await?;
    }
    let status = eventually("readyReplicas = 2", || async {
        let md = mds.get(name).await?;
        Ok(md.status.filter(|s| s.ready_replicas == Some(2)))
    })
    .await?;
    let ready = status.conditions.iter().find(|c| c.type_ == CONDITION_READY).context("Ready condition")?;
    assert_eq!((ready.status.as_str(), ready.message.as_str()), ("True", "2/2 replicas ready"));

    // Steady state: nothing is rewritten (the Boards' generations stay put over a resync).
    let generations = |list: Vec<Board>| list.iter().map(|b| b.metadata.generation).collect::<Vec<_>>();
    let before = generations(futures::future::try_join_all(names.iter().map(|n| boards.get(n))).await?);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = generations(futures::future::try_join_all(names.iter().map(|n| boards.get(n))).await?);
    assert_eq!(before, after, "a steady deployment must not rewrite its Board entries");

    // 3. Scale to 3 through the scale subresource: c fetches from the holders, nearest first.
    mds.patch_scale(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": 3 } }))).await?;
    let on_c = eventually("entry on the third board", || async {
        let e = entries(boards, names, &key).await?;
        Ok(e.into_iter().find(|(n, _)| n == c).map(|(_, e)| e))
    })
    .await?;
    assert_eq!(on_c.peers, [Agents::endpoint(b), Agents::endpoint(a)]);
    assert_eq!(on_c.revision.as_deref(), Some(revision.as_str()));

    // 4. Back to 2: the replica that is not Ready (c) goes.
    mds.patch_scale(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": 2 } }))).await?;
    eventually("c's entry removed", || async {
        let e = entries(boards, names, &key).await?;
        Ok((e.len() == 2 && e.iter().all(|(n, _)| n != c)).then_some(()))
    })
    .await?;

    // 5. a's agent dies: a is marked not Ready and its replica moves to c, fetching from b.
    agents.kill(a).await?;
    let marked = eventually("a marked LeaseExpired", || async {
        let board = boards.get(a).await?;
        let cond = board.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == CONDITION_READY));
        Ok(cond.filter(|c| c.status == "False" && c.reason == "LeaseExpired"))
    })
    .await?;
    assert!(marked.message.contains("not renewed"), "{}", marked.message);
    let moved = eventually("replica moved from a to c", || async {
        let e = entries(boards, names, &key).await?;
        let on: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        Ok((on == [b.as_str(), c.as_str()]).then_some(e))
    })
    .await?;
    assert_eq!(moved[1].1.peers, [Agents::endpoint(b)]);

    // 6. Delete: every entry removed, then the finalizer lets the object go.
    mds.delete(name, &DeleteParams::default()).await?;
    eventually("deployment gone", || async { Ok(mds.get_opt(name).await?.is_none().then_some(())) }).await?;
    let left = entries(boards, names, &key).await?;
    assert!(left.is_empty(), "entries left after delete: {left:?}");
    let _ = client;
    Ok(())
}
