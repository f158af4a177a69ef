//! `GET /overview` on the gateway: every board and ModelDeployment in the status page's shape
//! ([`api_types::overview`]), plus the recent [`events`](super::events).
//!
//! ```text
//!  view (reflectors, every rebuild) ──observe──► Snapshot (Boards + leases, ModelDeployments)
//!                                        └─────► events::diff ──► Events ring
//!  GET /overview ─► Snapshot + Table (routed boards) + Loads (ejected) + queues
//!                 └► each board's own GET /overview (live telemetry), cached LIVE_TTL
//! ```
//!
//! The Board objects carry what the agents write at most once a second (phases, load, the hottest
//! zone); NPU load, every zone and current clocks are only on the board itself, so the gateway
//! reads each reachable board's `/overview` (with the cluster token) when someone looks, at most
//! once per [`LIVE_TTL`] however many pages are open. A board that does not answer within
//! [`LIVE_TIMEOUT`] is shown from its Board object, marked not live.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use api_types::overview::{
    BoardOverview, BoardState, Clock, DeploymentOverview, MemoryOverview, ModelOverview, OVERVIEW_PATH, Overview,
    OverviewSource, PlacementOverview, now_ms,
};
use crds::{Board, ModelDeployment};
use futures::future::join_all;
use kube::ResourceExt;

use super::{
    Gateway,
    auth::Grant,
    events::{Events, Observed, diff},
};

/// How long a board's live part is reused.
const LIVE_TTL: Duration = Duration::from_secs(1);
/// How long the gateway waits for a board's `/overview`: a page poll should not hang on one board.
const LIVE_TIMEOUT: Duration = Duration::from_millis(1500);

/// What the reflectors held at the last rebuild.
#[derive(Default)]
pub struct Snapshot {
    /// Every Board, with whether its Lease is fresh.
    pub boards: Vec<(Arc<Board>, bool)>,
    pub deployments: Vec<Arc<ModelDeployment>>,
}

/// The status page's state in the gateway.
#[derive(Default)]
pub struct StatusState {
    snapshot: RwLock<Arc<Snapshot>>,
    observed: Mutex<Option<Observed>>,
    pub events: Events,
    /// Board name → when its live part was read, and what came back.
    live: Mutex<HashMap<String, (Instant, Option<BoardOverview>)>>,
}

impl StatusState {
    /// Called by the view after every rebuild (at least once a second): keeps the snapshot,
    /// records what changed. `ejected`: the boards this gateway keeps out of routing now.
    pub fn observe(
        &self,
        boards: Vec<(Arc<Board>, bool)>,
        deployments: Vec<Arc<ModelDeployment>>,
        ejected: &HashSet<String>,
    ) {
        let now = observed(&boards, &deployments, ejected);
        {
            let mut before = self.observed.lock().unwrap_or_else(PoisonError::into_inner);
            if before.as_ref() != Some(&now) {
                for (level, subject, model, message) in diff(before.as_ref(), &now) {
                    self.events.push(level, &subject, model.as_deref(), message);
                }
                *before = Some(now);
            }
        }
        *self.snapshot.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Snapshot { boards, deployments });
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn key_of(md: &ModelDeployment) -> String {
    format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any())
}

/// A board's state from its object and lease; `ejected` is this gateway's own verdict.
fn board_state(b: &Board, lease_fresh: bool, ejected: bool) -> (BoardState, Option<String>) {
    let ready = b.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    match ready {
        _ if !lease_fresh => (BoardState::Offline, Some("its lease expired: the agent stopped heartbeating".into())),
        None => (BoardState::NotReady, Some("its agent has not reported Ready yet".into())),
        Some(c) if c.status != "True" && c.reason == "Draining" => (BoardState::Draining, Some(c.message.clone())),
        Some(c) if c.status != "True" => (BoardState::NotReady, Some(c.message.clone())),
        Some(_) if ejected => {
            (BoardState::Ejected, Some("out of routing after failed requests or polls; probed until it answers".into()))
        }
        Some(_) => (BoardState::Ready, None),
    }
}

fn observed(
    boards: &[(Arc<Board>, bool)],
    deployments: &[Arc<ModelDeployment>],
    ejected: &HashSet<String>,
) -> Observed {
    let mut o = Observed::default();
    for (b, fresh) in boards {
        let name = b.name_any();
        o.boards.insert(name.clone(), board_state(b, *fresh, ejected.contains(&name)).0);
        for m in b.status.iter().flat_map(|s| &s.models) {
            let model =
                b.spec.models.iter().find(|e| e.key == m.key).map_or_else(|| m.key.clone(), |e| e.model.clone());
            o.phases.insert((name.clone(), m.key.clone()), (model, format!("{:?}", m.phase)));
        }
    }
    for md in deployments.iter().filter(|m| m.metadata.deletion_timestamp.is_none()) {
        if let Some(model) = md.served_name() {
            o.deployments.insert(key_of(md), (model.to_owned(), md.spec.replicas));
        }
    }
    o
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A board from its object only (not reachable, or not yet read).
fn from_object(b: &Board) -> BoardOverview {
    let status = b.status.clone().unwrap_or_default();
    let tuning = status.tuning.unwrap_or_default();
    let clocks = [("npu", tuning.npu_freq_hz), ("ddr", tuning.ddr_freq_hz)]
        .into_iter()
        .filter_map(|(name, hz)| hz.map(|hz| Clock { name: name.into(), hz: Some(unsigned(hz)), governor: None }))
        .collect();
    let load = status.load.unwrap_or_default();
    BoardOverview {
        soc: status.soc,
        endpoint: status.endpoint,
        live: false,
        max_celsius: status.thermal.map(|t| t.max_celsius),
        clocks,
        memory: status.memory.map(|m| MemoryOverview {
            total_bytes: unsigned(m.total_bytes),
            available_bytes: unsigned(m.available_bytes),
        }),
        active: u32::try_from(load.active).unwrap_or(0),
        queued: u32::try_from(load.queued).unwrap_or(0),
        models: status
            .models
            .iter()
            .map(|m| ModelOverview {
                name: b.spec.models.iter().find(|e| e.key == m.key).map_or_else(|| m.key.clone(), |e| e.model.clone()),
                deployment: Some(m.key.clone()),
                phase: format!("{:?}", m.phase),
                progress: m.progress,
                loaded: m.loaded,
                message: m.message.clone(),
                ..ModelOverview::default()
            })
            .collect(),
        ..BoardOverview::default()
    }
}

fn board_overview(b: &Board, fresh: bool, ejected: bool, live: Option<&BoardOverview>, grant: &Grant) -> BoardOverview {
    let (state, message) = board_state(b, fresh, ejected);
    let object = from_object(b);
    let mut o = match live {
        // The board's own view of itself, under the gateway's verdict and the Board's identity.
        Some(l) => BoardOverview { soc: object.soc.or_else(|| l.soc.clone()), endpoint: object.endpoint, ..l.clone() },
        None => object,
    };
    o.name = b.name_any();
    o.state = state;
    o.message = message;
    o.models.retain(|m| grant.allows(&m.name));
    o
}

fn deployment_overview(gw: &Gateway, md: &ModelDeployment, table: &super::table::Table) -> Option<DeploymentOverview> {
    let key = key_of(md);
    let model = md.served_name()?.to_owned();
    let status = md.status.clone().unwrap_or_default();
    Some(DeploymentOverview {
        routed: table
            .lookup(&model)
            .filter(|r| r.key == key)
            .map(|r| {
                let mut boards: Vec<String> = r.replicas.iter().map(|x| x.board.clone()).collect();
                boards.sort();
                boards
            })
            .unwrap_or_default(),
        queued: u32::try_from(gw.queued(&key)).unwrap_or(u32::MAX),
        aliases: md.spec.aliases.clone(),
        format: md.spec.format.as_str().to_owned(),
        desired: md.spec.replicas,
        ready: status.ready_replicas.unwrap_or(0),
        routing: format!("{:?}", md.spec.routing.strategy),
        placements: status
            .placements
            .iter()
            .map(|p| PlacementOverview {
                board: p.board.clone(),
                phase: format!("{:?}", p.phase),
                progress: p.progress,
                message: p.message.clone(),
            })
            .collect(),
        message: status.conditions.iter().find(|c| c.type_ == "Ready" && c.status != "True").map(|c| c.message.clone()),
        key,
        model,
    })
}

async fn fetch_one(gw: &Gateway, endpoint: &str) -> Option<BoardOverview> {
    let mut req = super::workers::client(gw).get(format!("{endpoint}{OVERVIEW_PATH}")).timeout(LIVE_TIMEOUT);
    if let Some(t) = &gw.config.cluster_token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => match r.json::<Overview>().await {
            Ok(o) => o.boards.into_iter().next(),
            Err(error) => {
                tracing::debug!(%endpoint, %error, "gateway: a board's overview did not parse");
                None
            }
        },
        Ok(r) => {
            tracing::debug!(%endpoint, status = %r.status(), "gateway: a board refused its overview");
            None
        }
        Err(error) => {
            tracing::debug!(%endpoint, %error, "gateway: a board's overview is unreachable");
            None
        }
    }
}

/// The live part of every board with a fresh lease and an endpoint, from the cache or read now.
async fn live_parts(gw: &Gateway, snap: &Snapshot) -> HashMap<String, BoardOverview> {
    let now = Instant::now();
    let wanted: Vec<(String, String)> = snap
        .boards
        .iter()
        .filter(|(_, fresh)| *fresh)
        .filter_map(|(b, _)| Some((b.name_any(), b.status.as_ref()?.endpoint.clone()?)))
        .collect();
    let stale: Vec<&(String, String)> = {
        let cache = gw.status.live.lock().unwrap_or_else(PoisonError::into_inner);
        wanted.iter().filter(|(n, _)| cache.get(n).is_none_or(|(at, _)| now.duration_since(*at) >= LIVE_TTL)).collect()
    };
    let read = join_all(stale.iter().map(|(n, e)| async move { (n.clone(), fetch_one(gw, e).await) })).await;
    let mut cache = gw.status.live.lock().unwrap_or_else(PoisonError::into_inner);
    for (name, part) in read {
        cache.insert(name, (Instant::now(), part));
    }
    let names: HashSet<&String> = wanted.iter().map(|(n, _)| n).collect();
    cache.retain(|n, _| names.contains(n));
    cache.iter().filter_map(|(n, (_, part))| Some((n.clone(), part.clone()?))).collect()
}

/// The boards this gateway keeps out of routing now.
pub fn ejected(gw: &Gateway) -> HashSet<String> {
    gw.loads().boards.iter().filter(|(_, b)| !b.routable()).map(|(n, _)| n.clone()).collect()
}

/// The whole overview, as `grant` may see it: boards are shown to every key, models and
/// deployments only where the key may use the model.
pub async fn build(gw: &Gateway, grant: &Grant) -> Overview {
    let snap = gw.status.snapshot();
    let live = live_parts(gw, &snap).await;
    let ejected = ejected(gw);
    let mut boards: Vec<BoardOverview> = snap
        .boards
        .iter()
        .map(|(b, fresh)| {
            let name = b.name_any();
            board_overview(b, *fresh, ejected.contains(&name), live.get(&name), grant)
        })
        .collect();
    boards.sort_by(|a, b| a.name.cmp(&b.name));
    let table = gw.table();
    let mut deployments: Vec<DeploymentOverview> = snap
        .deployments
        .iter()
        .filter(|md| md.metadata.deletion_timestamp.is_none())
        .filter_map(|md| deployment_overview(gw, md, &table))
        .filter(|d| grant.allows(&d.model))
        .collect();
    deployments.sort_by(|a, b| a.key.cmp(&b.key));
    let events =
        gw.status.events.recent().into_iter().filter(|e| e.model.as_deref().is_none_or(|m| grant.allows(m))).collect();
    Overview {
        source: OverviewSource::Gateway,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        time_ms: now_ms(),
        boards,
        deployments,
        events,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn board(ready: &str, reason: &str) -> Board {
        serde_json::from_value(json!({
            "apiVersion": "rockchipllama.io/v1alpha1", "kind": "Board",
            "metadata": {"name": "b1"},
            "spec": {"models": [{"key": "ns/smol", "model": "smollm2", "format": "gguf",
                                  "source": {"url": "http://o/m.gguf"}}]},
            "status": {"soc": "rk3588", "endpoint": "http://b1:8080",
                       "thermal": {"maxCelsius": 51.5}, "tuning": {"applied": true, "npuFreqHz": 1_000_000_000_i64},
                       "load": {"active": 1, "queued": 2},
                       "models": [{"key": "ns/smol", "phase": "Downloading", "progress": 0.5},
                                  {"key": "other/m", "phase": "Ready", "loaded": true}],
                       "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": "m",
                                       "lastTransitionTime": "2026-11-27T00:00:00Z"}]},
        }))
        .unwrap()
    }

    #[test]
    fn board_state_from_lease_condition_and_ejection() {
        let ready = board("True", "Serving");
        assert_eq!(board_state(&ready, true, false).0, BoardState::Ready);
        assert_eq!(board_state(&ready, true, true).0, BoardState::Ejected);
        assert_eq!(board_state(&ready, false, true).0, BoardState::Offline, "a dead lease says more");
        assert_eq!(board_state(&board("False", "Draining"), true, false).0, BoardState::Draining);
        assert_eq!(board_state(&board("False", "Other"), true, false).0, BoardState::NotReady);
    }

    #[test]
    fn a_board_from_its_object_and_from_itself() {
        let b = board("True", "Serving");
        let o = board_overview(&b, true, false, None, &Grant::everything());
        assert_eq!((o.name.as_str(), o.soc.as_deref(), o.live), ("b1", Some("rk3588"), false));
        assert_eq!((o.max_celsius, o.active, o.queued), (Some(51.5), 1, 2));
        assert_eq!(o.clocks, [Clock { name: "npu".into(), hz: Some(1_000_000_000), governor: None }]);
        let names: Vec<(&str, &str, Option<f64>)> =
            o.models.iter().map(|m| (m.name.as_str(), m.phase.as_str(), m.progress)).collect();
        assert_eq!(names, [("smollm2", "Downloading", Some(0.5)), ("other/m", "Ready", None)], "unknown keys by key");
        let live = BoardOverview {
            name: "agent-host".into(),
            live: true,
            npu_load_percent: vec![10, 20, 30],
            models: vec![ModelOverview { name: "smollm2".into(), phase: "Ready".into(), ..ModelOverview::default() }],
            ..BoardOverview::default()
        };
        let o = board_overview(&b, false, false, Some(&live), &Grant::everything());
        assert_eq!(
            (o.name.as_str(), o.state, o.live),
            ("b1", BoardState::Offline, true),
            "the gateway's name and verdict"
        );
        assert_eq!(o.npu_load_percent, [10, 20, 30]);
        assert_eq!(o.endpoint.as_deref(), Some("http://b1:8080"));
    }

    #[test]
    fn observed_names_models_by_their_served_name() {
        let o = observed(&[(Arc::new(board("True", "Serving")), true)], &[], &HashSet::new());
        assert_eq!(o.boards["b1"], BoardState::Ready);
        assert_eq!(
            o.phases[&("b1".to_owned(), "ns/smol".to_owned())],
            ("smollm2".to_owned(), "Downloading".to_owned())
        );
    }
}
