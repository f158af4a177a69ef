//! The agent's own Board: created by server-side apply, its status written on change and at most
//! once a second (never per request), its spec watched and handed to the [`Reconciler`].
//!
//! What changes often (free memory, temperatures, load) is refreshed at most every
//! [`REFRESH`]; anything else that changes (a model's phase, a condition) is written within a
//! second.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crds::{Board, BoardStatus};
use futures::StreamExt;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use kube_runtime::watcher;
use serde_json::json;
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{ClusterConfig, FIELD_MANAGER, ModelStates, Parts, Reconciler, SOC_LABEL};

/// Minimum time between two status writes.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Telemetry-only changes are written at most this often.
pub const REFRESH: Duration = Duration::from_secs(30);

/// Writes this board's Board status.
pub struct BoardWriter {
    api: Api<Board>,
    cfg: ClusterConfig,
    parts: Parts,
    states: Arc<ModelStates>,
    draining: AtomicBool,
    wake: Notify,
}

/// The status with the fields that change all the time blanked, for "did anything change?".
fn stable_part(s: &BoardStatus) -> BoardStatus {
    BoardStatus { memory: None, store: None, thermal: None, load: None, ..s.clone() }
}

/// The Ready condition, keeping the transition time while the status stays the same.
fn ready_condition(draining: bool, previous: Option<&Condition>, now: Timestamp) -> Condition {
    let (status, reason, message) = if draining {
        ("False", "Draining", "the agent is shutting down: finishing in-flight requests, taking no new ones")
    } else {
        ("True", "Serving", "the agent is up and heartbeating")
    };
    let since = previous.filter(|c| c.status == status).map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: since,
        observed_generation: None,
    }
}

impl BoardWriter {
    pub fn new(client: Client, cfg: ClusterConfig, parts: Parts, states: Arc<ModelStates>) -> Arc<Self> {
        Arc::new(Self {
            api: Api::all(client),
            cfg,
            parts,
            states,
            draining: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// The full status as it would be written now.
    fn compose(&self, previous: Option<&BoardStatus>) -> BoardStatus {
        let p = &self.parts;
        let rate = p.serve.metrics().tokens_per_second();
        let report = crate::status::report(&p.node, &p.runtime, &p.sched, p.registry.dir(), rate);
        let mut s = report.board;
        s.endpoint = Some(self.cfg.advertise_url.clone());
        s.models = self.states.snapshot();
        let prev_ready = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == "Ready"));
        s.conditions = vec![ready_condition(self.draining.load(Ordering::SeqCst), prev_ready, Timestamp::now())];
        s
    }

    /// Creates the Board if needed (name and SoC label only: the spec is the controller's).
    async fn ensure_board(&self) -> Result<(), kube::Error> {
        let soc = self.compose(None).soc.unwrap_or_else(|| "cpu".into());
        let board = json!({
            "apiVersion": "rockchipllama.io/v1alpha1",
            "kind": "Board",
            "metadata": { "name": self.cfg.node_name, "labels": { SOC_LABEL: soc } },
            // Required by the schema; empty, so the agent owns no field of it.
            "spec": {},
        });
        self.api.patch(&self.cfg.node_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(board)).await?;
        Ok(())
    }

    async fn write(&self, status: &BoardStatus) -> Result<(), kube::Error> {
        let body = json!({ "apiVersion": "rockchipllama.io/v1alpha1", "kind": "Board", "status": status });
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        match self.api.patch_status(&self.cfg.node_name, &pp, &Patch::Apply(&body)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                self.ensure_board().await?;
                self.api.patch_status(&self.cfg.node_name, &pp, &Patch::Apply(&body)).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Writes status whenever it changes, at most once per [`MIN_INTERVAL`], until cancelled.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        while let Err(e) = self.ensure_board().await {
            tracing::warn!(board = %self.cfg.node_name, error = %e, "cannot create the Board; retrying");
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        tracing::info!(board = %self.cfg.node_name, endpoint = %self.cfg.advertise_url, "registered the Board");
        let mut last: Option<BoardStatus> = None;
        let mut last_write = Instant::now() - REFRESH;
        loop {
            let now = self.compose(last.as_ref());
            let changed = last.as_ref().is_none_or(|l| stable_part(l) != stable_part(&now));
            let stale = last_write.elapsed() >= REFRESH && last.as_ref() != Some(&now);
            if changed || stale {
                match self.write(&now).await {
                    Ok(()) => {
                        last = Some(now);
                        last_write = Instant::now();
                    }
                    Err(e) => tracing::warn!(board = %self.cfg.node_name, error = %e, "cannot write Board status"),
                }
            }
            // Coalesce: whatever happens in the next second goes into one write.
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(MIN_INTERVAL) => {}
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.states.changed.notified() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(REFRESH) => {}
            }
        }
    }

    /// Marks the board Ready=False/Draining and writes it now (bounded), before the server stops.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let status = self.compose(None);
        match tokio::time::timeout(Duration::from_secs(5), self.write(&status)).await {
            Ok(Ok(())) => tracing::info!(board = %self.cfg.node_name, "Board marked Draining"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot mark the Board Draining"),
            Err(_) => tracing::warn!("marking the Board Draining timed out"),
        }
        self.wake.notify_one();
    }
}

/// Watches this board's Board and hands every spec to the reconciler, until cancelled.
pub async fn watch_spec(client: Client, node: String, reconciler: Arc<Reconciler>, cancel: CancellationToken) {
    let api: Api<Board> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = std::pin::pin!(kube_runtime::WatchStreamExt::default_backoff(watcher(api, cfg)));
    let mut last: Option<Vec<crds::BoardModel>> = None;
    loop {
        let ev = tokio::select! {
            () = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        let spec = match ev {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "watching the Board");
                continue;
            }
            Some(Ok(watcher::Event::Apply(b) | watcher::Event::InitApply(b))) => b.spec.models,
            // Deleted (the writer re-creates it): nothing is assigned any more.
            Some(Ok(watcher::Event::Delete(_))) => Vec::new(),
            // No Board yet: nothing is assigned (cached blobs are still reported).
            Some(Ok(watcher::Event::InitDone)) if last.is_none() => Vec::new(),
            Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => continue,
        };
        if last.as_ref() != Some(&spec) {
            tracing::info!(board = %node, models = spec.len(), "Board spec changed");
            reconciler.apply(&spec, &cancel);
            last = Some(spec);
        }
    }
}
