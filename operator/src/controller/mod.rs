//! The controller: places each ModelDeployment's replicas on Boards and reports back.
//!
//! ```text
//!          Lease rockchip-llama-operator (leader election: only the leader runs what is below)
//!
//!   ModelDeployment ──watch──► Controller ──reconcile──► plan (pure) ──► Board.spec.models[key]
//!        ▲                       ▲      ▲                                (SSA, manager per MD)
//!        │ status (SSA)          │      └── Lease events (a board coming back)
//!        └───────────────────────┴── Board events (agent status, cordon, labels)
//!
//!   every 5 s: a board whose Lease expired gets Ready=False/LeaseExpired in its status
//! ```
//!
//! Boards and Leases are watched once each, through reflectors whose stores every reconcile
//! reads; a reconcile makes no API calls unless something must change. A lease expiring makes no
//! watch event, so each reconcile is requeued for just after the first lease of its boards
//! would expire, and at the latest after `resync`.

pub mod autoscale;
mod autoscale_loop;
pub mod blind;
pub mod boards;
pub mod distribution;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod placement;
pub mod plan;
mod reconcile;
pub mod status;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    hash::{DefaultHasher, Hash, Hasher},
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use crds::{Board, CONDITION_READY, ModelDeployment};
use futures::{StreamExt, stream};
use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef},
        watcher,
    },
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use self::{
    boards::{LeaseTimes, REASON_LEASE_EXPIRED, needs_lease_expired_mark},
    leader::Elector,
    metrics::Metrics,
    reconcile::{Context, error_policy, lease_times},
};
pub use self::{error::Error, reconcile::field_manager};

/// Finalizer that removes a deleted deployment's Board entries before it goes.
pub const FINALIZER: &str = "rockchipllama.io/cleanup";
/// Field manager of the controller's status writes (ModelDeployment status, Board conditions)
/// and the prefix of the per-deployment managers of Board entries.
pub const MANAGER: &str = "rockchip-llama-operator";
/// Longest wait between two reconciles of one deployment.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(30);
/// How often the leader looks for boards whose Lease expired.
pub const LEASE_SWEEP: Duration = Duration::from_secs(5);

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespace of the boards' Leases and of the leader Lease.
    pub namespace: String,
    /// holderIdentity in the leader Lease (see `leader::identity`).
    pub identity: String,
    /// Boards each board uploads a model file to (1: chains).
    pub fan_out: usize,
    /// Longest wait between two reconciles of one deployment.
    pub resync: Duration,
    /// Deployments reconciled at the same time.
    pub concurrency: u16,
    /// Where to serve /metrics; none when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Reconcile only the ModelDeployments of this namespace (all namespaces when unset), e.g.
    /// for a test next to other deployments, or one controller per team.
    pub watch_namespace: Option<String>,
    /// Bearer token for reading the gateways' demand (`demand::PATH`), when they require one.
    pub cluster_token: Option<String>,
}

impl Config {
    /// Defaults for everything but the namespace and identity.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            identity: identity.into(),
            fan_out: distribution::DEFAULT_FAN_OUT,
            resync: DEFAULT_RESYNC,
            concurrency: 8,
            metrics_listen: None,
            watch_namespace: None,
            cluster_token: None,
        }
    }
}

/// Runs until `shutdown` resolves: competes for leadership, and while leading, reconciles. On
/// shutdown the leader finishes the reconciles under way and releases the lease.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let metrics = Arc::new(Metrics::default());
    let server = match config.metrics_listen {
        Some(addr) => Some(tokio::spawn(metrics::serve(metrics::bind(addr).await?, metrics.clone(), stop.clone()))),
        None => None,
    };
    let elector = Elector::new(client.clone(), &config.namespace, config.identity.clone());
    tracing::info!(identity = elector.identity(), namespace = %config.namespace, "waiting to lead");
    while elector.acquire(&stop).await {
        metrics.set_leader(true);
        let term = stop.child_token();
        let holder = tokio::spawn({
            let (elector, term) = (elector.clone(), term.clone());
            async move { elector.hold(term).await }
        });
        lead(&client, &config, metrics.clone(), term.clone()).await;
        term.cancel();
        if let Err(e) = holder.await {
            tracing::warn!(error = %e, "the lease renewal task failed");
        }
        metrics.set_leader(false);
        if stop.is_cancelled() {
            elector.release().await;
            break;
        }
        tracing::warn!("not leading any more; waiting to lead again");
    }
    if let Some(server) = server {
        match server.await {
            Ok(result) => result?,
            Err(e) => tracing::warn!(error = %e, "the metrics server task failed"),
        }
    }
    Ok(())
}

/// One term as leader: watches, the Controller and the lease sweep, until `term` is cancelled.
async fn lead(client: &Client, config: &Config, metrics: Arc<Metrics>, term: CancellationToken) {
    let (boards, board_writer) = reflector::store::<Board>();
    let (leases, lease_writer) = reflector::store::<Lease>();
    // managedFields hold one entry per deployment on every Board (each has its own field
    // manager) and are never read here: dropped before they reach the store.
    let board_watch = watcher(Api::<Board>::all(client.clone()), watcher::Config::default())
        .modify(|b| b.managed_fields_mut().clear());
    let board_events = reflector::reflector(board_writer, board_watch).default_backoff().touched_objects();
    let lease_events = reflector::reflector(
        lease_writer,
        watcher(Api::<Lease>::namespaced(client.clone(), &config.namespace), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let unsatisfied: Arc<Mutex<HashSet<ObjectRef<ModelDeployment>>>> = Arc::default();
    let reporter = Reporter { controller: MANAGER.to_owned(), instance: Some(config.identity.clone()) };
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: config.clone(),
        boards: boards.clone(),
        leases: leases.clone(),
        blind: Mutex::default(),
        pending: Mutex::default(),
        unsatisfied: unsatisfied.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
    });

    let board_triggers = {
        let unsatisfied = unsatisfied.clone();
        let mut seen: HashMap<String, u64> = HashMap::new();
        board_events.flat_map(move |event| {
            let refs = match event {
                Ok(board) => {
                    let print = fingerprint(&board);
                    let changed = seen.insert(board.name_any(), print) != Some(print);
                    deployments_on(&board, changed.then_some(&unsatisfied))
                }
                Err(error) => {
                    tracing::warn!(%error, "Board watch");
                    Vec::new()
                }
            };
            stream::iter(refs)
        })
    };
    let lease_triggers = {
        let boards = boards.clone();
        let mut expiries: HashMap<String, Timestamp> = HashMap::new();
        lease_events.flat_map(move |event| {
            let refs = match event {
                Ok(lease) => {
                    // Only a board coming back matters here: renewals change nothing, and an
                    // expiry makes no event (reconciles are timed for it).
                    let now = Timestamp::now();
                    let expires = LeaseTimes::from_lease(&lease).map(|t| t.expires());
                    let before = match expires {
                        Some(e) => expiries.insert(lease.name_any(), e),
                        None => expiries.remove(&lease.name_any()),
                    };
                    let back = expires.is_some_and(|e| e > now) && before.is_none_or(|b| b <= now);
                    match boards.get(&ObjectRef::new(&lease.name_any())) {
                        Some(board) if back => deployments_on(&board, Some(&unsatisfied)),
                        _ => Vec::new(),
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "Lease watch");
                    Vec::new()
                }
            };
            stream::iter(refs)
        })
    };

    let mds: Api<ModelDeployment> = match &config.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let in_scope = {
        let scope = config.watch_namespace.clone();
        move |r: &ObjectRef<ModelDeployment>| scope.is_none() || r.namespace == scope
    };
    // The reflectors run in their own tasks and hand their triggers over a channel: the stores
    // must fill before any reconcile reads them, and a store's readiness may be awaited by one
    // task only (kube-runtime's DelayedInit wakes a single waiter), which is this one.
    let (trigger_tx, trigger_rx) = futures::channel::mpsc::unbounded::<ObjectRef<ModelDeployment>>();
    let drive = |triggers: stream::BoxStream<'static, ObjectRef<ModelDeployment>>| {
        let (tx, in_scope) = (trigger_tx.clone(), in_scope.clone());
        tokio::spawn(triggers.for_each(move |r| {
            if in_scope(&r) {
                // Fails only once the controller is gone, when triggers no longer matter.
                let _ = tx.unbounded_send(r);
            }
            std::future::ready(())
        }))
    };
    let drivers = [drive(board_triggers.boxed()), drive(lease_triggers.boxed())];
    drop(trigger_tx);
    let ready = async { boards.wait_until_ready().await.is_ok() && leases.wait_until_ready().await.is_ok() };
    let ready = tokio::select! {
        () = term.cancelled() => false,
        ready = ready => ready,
    };
    if ready {
        let controller = Controller::new(mds, watcher::Config::default())
            .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency));
        let md_store = controller.store();
        let controller = controller
            .reconcile_on(trigger_rx)
            .graceful_shutdown_on(term.clone().cancelled_owned())
            .run(reconcile::reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "controller");
                }
            });
        tracing::info!(boards = boards.len(), "leading: reconciling ModelDeployments");
        tokio::join!(controller, sweep_leases(ctx.clone(), term.clone()), autoscale_loop::run(ctx, md_store, term));
    }
    for driver in drivers {
        driver.abort();
    }
}

/// ModelDeployments with an entry (or a reported model) on `board`, plus the ones short of
/// boards when `unsatisfied` is given.
fn deployments_on(
    board: &Board,
    unsatisfied: Option<&Arc<Mutex<HashSet<ObjectRef<ModelDeployment>>>>>,
) -> Vec<ObjectRef<ModelDeployment>> {
    let reported = board.status.iter().flat_map(|s| s.models.iter().map(|m| m.key.as_str()));
    let mut refs: Vec<ObjectRef<ModelDeployment>> = board
        .spec
        .models
        .iter()
        .map(|e| e.key.as_str())
        .chain(reported)
        .filter_map(|key| key.split_once('/'))
        .map(|(ns, name)| ObjectRef::new(name).within(ns))
        .collect();
    if let Some(unsatisfied) = unsatisfied {
        refs.extend(unsatisfied.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned());
    }
    refs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    refs.dedup();
    refs
}

/// What about a Board can let a deployment short of boards place a replica: a change of any of
/// these reconciles those deployments too. Download progress (store bytes) is left out so a
/// busy board does not reconcile them continuously; free store space counts in whole GiB.
fn fingerprint(board: &Board) -> u64 {
    let mut h = DefaultHasher::new();
    board.spec.cordoned.hash(&mut h);
    board.metadata.labels.hash(&mut h);
    for entry in &board.spec.models {
        (&entry.key, entry.desired == crds::DesiredState::Loaded).hash(&mut h);
    }
    if let Some(status) = &board.status {
        (&status.soc, &status.endpoint).hash(&mut h);
        status.memory.as_ref().map(|m| m.total_bytes).hash(&mut h);
        status.store.as_ref().map(|s| s.free_bytes >> 30).hash(&mut h);
        for c in status.conditions.iter().filter(|c| c.type_ == CONDITION_READY) {
            (&c.status, &c.reason).hash(&mut h);
        }
    }
    h.finish()
}

/// Every LEASE_SWEEP, marks boards whose Lease expired as not Ready. Only the transition is
/// written; the agent takes the condition back with its own forced apply when it returns.
async fn sweep_leases(ctx: Arc<Context>, term: CancellationToken) {
    let mut tick = tokio::time::interval(LEASE_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = term.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Timestamp::now();
        let leases = lease_times(&ctx, now);
        for board in ctx.boards.state() {
            let name = board.name_any();
            let lease = leases.get(&name).copied();
            if !needs_lease_expired_mark(&board, lease, now) {
                continue;
            }
            match mark_lease_expired(&ctx, &name, lease, now).await {
                Ok(()) => {
                    ctx.metrics.wrote("board_status");
                    tracing::warn!(board = %name, "lease expired: marked not Ready");
                }
                Err(error) => tracing::warn!(board = %name, %error, "marking a board not Ready"),
            }
        }
    }
}

async fn mark_lease_expired(
    ctx: &Context,
    board: &str,
    lease: Option<LeaseTimes>,
    now: Timestamp,
) -> Result<(), Error> {
    let message = match lease {
        Some(t) => format!("Lease {}/{board} not renewed since {}", ctx.config.namespace, t.renewed),
        None => format!("no Lease {}/{board}: the agent has not heartbeated", ctx.config.namespace),
    };
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let patch = json!({
        "apiVersion": "rockchipllama.io/v1alpha1",
        "kind": "Board",
        "metadata": { "name": board },
        "status": { "conditions": [{
            "type": CONDITION_READY,
            "status": "False",
            "reason": REASON_LEASE_EXPIRED,
            "message": message,
            "lastTransitionTime": now.to_string(),
        }] },
    });
    let api: Api<Board> = Api::all(ctx.client.clone());
    api.patch_status(board, &PatchParams::apply(MANAGER).force(), &Patch::Apply(patch))
        .await
        .map_err(Error::kube("marking Board not Ready", board))?;
    Ok(())
}
