//! One ModelDeployment reconcile: read the stores, plan, write only the differences (Board
//! entries by server-side apply under the deployment's own field manager, then the status), and
//! publish Events for transitions. The decisions live in `plan` and `status`; this is the I/O.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use crds::{Board, BoardModel, ModelDeployment, ModelDeploymentStatus};
use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::ObjectReference},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
        finalizer::{Event as Finalizer, finalizer},
        reflector::{ObjectRef, Store},
    },
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    Config, FINALIZER, MANAGER,
    blind::Blind,
    boards::{BoardFacts, LeaseTimes, PendingWrite},
    error::Error,
    metrics::Metrics,
    plan::{self, Target},
    status,
};

/// Writes this controller made that the Board store has not shown yet, by board, then entry key.
pub(crate) type Pending = BTreeMap<String, BTreeMap<String, PendingWrite>>;

/// A pending write the store never reflects (someone else changed the entry) is forgotten after
/// this long; by then the watch has long delivered the write if it was going to.
const PENDING_TTL: Duration = Duration::from_secs(60);

/// How long after a failed reconcile it is retried. Not seconds: a fleet of deployments
/// retrying every second would hammer a struggling API server.
pub(crate) const ERROR_REQUEUE: Duration = Duration::from_secs(10);

/// How long after a lease's expiry its deployments are reconciled again (timers fire a little
/// late, never early, so a small margin suffices). Also the shortest requeue.
const EXPIRY_MARGIN: Duration = Duration::from_millis(100);

/// Shared by every reconcile.
pub(crate) struct Context {
    /// API client.
    pub client: Client,
    /// Flags.
    pub config: Config,
    /// All Boards, from a reflector.
    pub boards: Store<Board>,
    /// Leases in the operator namespace, from a reflector.
    pub leases: Store<Lease>,
    /// Whether the Lease watch has gone silent (read through [`lease_times`]).
    pub blind: Mutex<Blind>,
    /// Planned writes not yet in the Board store. Also the placement lock: plans are made one
    /// at a time under it, so two deployments never count the same free memory twice.
    pub pending: Mutex<Pending>,
    /// Deployments short of boards: any Board change may let them place, so Board events
    /// reconcile them too.
    pub unsatisfied: Arc<Mutex<HashSet<ObjectRef<ModelDeployment>>>>,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// The SSA field manager of one deployment's Board entries: each deployment owns its own entry,
/// so applying an empty list removes exactly that entry. Field managers are limited to 128
/// characters; longer keys are hashed.
pub fn field_manager(key: &str) -> String {
    let name = format!("{MANAGER}/{key}");
    if name.len() <= 128 {
        return name;
    }
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    format!("{MANAGER}/sha256-{}", &digest[..32])
}

/// Lease renewal times by lease (= board) name, as judged now: while the Lease watch is silent
/// (see [`Blind`]) leases that were fresh stay fresh, so a quiet API server does not look like
/// every board dying and move every replica.
pub(crate) fn lease_times(ctx: &Context, now: Timestamp) -> HashMap<String, LeaseTimes> {
    let leases = ctx.leases.state();
    let times: Vec<(String, LeaseTimes)> =
        leases.iter().filter_map(|l| Some((l.name_any(), LeaseTimes::from_lease(l)?))).collect();
    let mut blind = ctx.blind.lock().unwrap_or_else(PoisonError::into_inner);
    blind.observe(times.iter().map(|(_, t)| *t), now);
    times.into_iter().map(|(name, t)| (name, blind.judged(t, now))).collect()
}

/// Drops pending writes the store now shows (or that are too old to trust).
fn prune(pending: &mut Pending, boards: &Store<Board>) {
    pending.retain(|board, writes| {
        let stored = boards.get(&ObjectRef::new(board));
        writes.retain(|key, write| {
            let current = stored.as_ref().and_then(|b| b.spec.models.iter().find(|e| &e.key == key));
            let seen = match (&write.entry, current) {
                (Some(want), Some(have)) => want == have,
                (None, None) => true,
                _ => false,
            };
            !seen && write.since.elapsed() < PENDING_TTL
        });
        !writes.is_empty()
    });
}

fn facts<'a>(
    boards: &'a [Arc<Board>],
    leases: &HashMap<String, LeaseTimes>,
    pending: &Pending,
    now: Timestamp,
) -> Vec<BoardFacts<'a>> {
    boards
        .iter()
        .map(|b| {
            let name = b.metadata.name.as_deref().unwrap_or_default();
            BoardFacts::new(b, leases.get(name).copied(), pending.get(name), now)
        })
        .collect()
}

fn record(pending: &mut Pending, board: &str, key: &str, entry: Option<BoardModel>) {
    let write = PendingWrite { entry, since: Instant::now() };
    pending.entry(board.to_owned()).or_default().insert(key.to_owned(), write);
}

/// Applies (or with `None` removes) this deployment's entry on one Board.
async fn apply_entry(client: &Client, board: &str, key: &str, entry: Option<&BoardModel>) -> Result<(), Error> {
    let api: Api<Board> = Api::all(client.clone());
    let models: Vec<&BoardModel> = entry.into_iter().collect();
    let patch = json!({
        "apiVersion": "rockchipllama.io/v1alpha1",
        "kind": "Board",
        "metadata": { "name": board },
        "spec": { "models": models },
    });
    let params = PatchParams::apply(&field_manager(key)).force();
    api.patch(board, &params, &Patch::Apply(patch))
        .await
        .map_err(Error::kube("applying spec.models of Board", board))?;
    Ok(())
}

/// Entry point from the Controller: the finalizer wraps apply and cleanup.
pub(crate) async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The stores are ready: `lead` starts the Controller only once they are.
    tracing::debug!(md = %md.name_any(), namespace = ?md.namespace(), "reconciling");
    let namespace = md.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, md, |event| async {
        match event {
            Finalizer::Apply(md) => apply(&md, &ctx).await,
            Finalizer::Cleanup(md) => cleanup(&md, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled(result.as_ref().map_or_else(Error::metric_label, |_| "ok"));
    result
}

/// Requeues failures after a pause.
pub(crate) fn error_policy(md: Arc<ModelDeployment>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(md = %md.name_any(), namespace = ?md.namespace(), %error, "reconcile failed");
    Action::requeue(ERROR_REQUEUE)
}

async fn apply(md: &ModelDeployment, ctx: &Context) -> Result<Action, Error> {
    let target = Target::from_md(md)?;
    let key = target.key.clone();
    let now = Timestamp::now();
    // Status times in whole seconds, as the API server stores them, so a status read back
    // compares equal to the one computed.
    let now_s = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let leases = lease_times(ctx, now);
    let (writes, status, next_check, short) = {
        let mut pending = ctx.pending.lock().unwrap_or_else(PoisonError::into_inner);
        prune(&mut pending, &ctx.boards);
        let boards = ctx.boards.state();
        let facts = facts(&boards, &leases, &pending, now);
        let plan = plan::plan(&target, &facts, ctx.config.fan_out);
        let writes = plan::writes(&plan, &facts, &key);
        let status = status::compute(md, &target, &plan, &facts, now_s);
        drop(facts);
        for (board, entry) in &writes.apply {
            record(&mut pending, board, &key, Some(entry.clone()));
        }
        for board in &writes.remove {
            record(&mut pending, board, &key, None);
        }
        (writes, status, plan.next_check, plan.shortfall.is_some())
    };
    {
        let mut unsatisfied = ctx.unsatisfied.lock().unwrap_or_else(PoisonError::into_inner);
        let me = ObjectRef::from_obj(md);
        if short {
            unsatisfied.insert(me);
        } else {
            unsatisfied.remove(&me);
        }
    }

    let board_writes =
        writes.apply.iter().map(|(b, e)| (b.as_str(), Some(e))).chain(writes.remove.iter().map(|b| (b.as_str(), None)));
    for (board, entry) in board_writes {
        if let Err(e) = apply_entry(&ctx.client, board, &key, entry).await {
            // Forget the write so the next plan sees the Board as it is.
            let mut pending = ctx.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(writes) = pending.get_mut(board) {
                writes.remove(&key);
            }
            return Err(e);
        }
        ctx.metrics.wrote("board_spec");
        tracing::info!(md = %key, %board, change = if entry.is_some() { "applied" } else { "removed" }, "board entry");
    }

    // status.autoscaling belongs to the autoscaler's field manager: neither compared nor
    // applied here, so this apply never puts back a value the autoscaler has since replaced.
    let current = md.status.as_ref().map(|s| ModelDeploymentStatus { autoscaling: None, ..s.clone() });
    if current.as_ref() != Some(&status) {
        let api: Api<ModelDeployment> =
            Api::namespaced(ctx.client.clone(), md.namespace().as_deref().unwrap_or_default());
        let patch = json!({
            "apiVersion": "rockchipllama.io/v1alpha1",
            "kind": "ModelDeployment",
            "status": status,
        });
        api.patch_status(&md.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(patch))
            .await
            .map_err(Error::kube("applying status of ModelDeployment", key.clone()))?;
        ctx.metrics.wrote("md_status");
    }

    for note in status::transitions(md.status.as_ref(), &status, &writes.added, &writes.remove) {
        publish(ctx, md, note).await;
    }

    let mut after = ctx.config.resync;
    if let Some(expiry) = next_check {
        // Just after the first assigned board's lease would expire, so a dead board's replicas
        // move within moments of its lease running out, not a second later.
        let until = Duration::try_from(expiry.duration_since(now)).unwrap_or_default();
        after = after.min(until + EXPIRY_MARGIN);
    }
    Ok(Action::requeue(after.max(EXPIRY_MARGIN)))
}

/// Removes this deployment's entry from every Board that has it; the finalizer goes after.
async fn cleanup(md: &ModelDeployment, ctx: &Context) -> Result<Action, Error> {
    let target = Target::from_md(md)?;
    let key = target.key;
    let now = Timestamp::now();
    let leases = lease_times(ctx, now);
    let holders: Vec<String> = {
        let mut pending = ctx.pending.lock().unwrap_or_else(PoisonError::into_inner);
        prune(&mut pending, &ctx.boards);
        let boards = ctx.boards.state();
        let facts = facts(&boards, &leases, &pending, now);
        let holders: Vec<String> =
            facts.iter().filter(|b| b.entry(&key).is_some()).map(|b| b.name.to_owned()).collect();
        drop(facts);
        for board in &holders {
            record(&mut pending, board, &key, None);
        }
        holders
    };
    ctx.unsatisfied.lock().unwrap_or_else(PoisonError::into_inner).remove(&ObjectRef::from_obj(md));
    for board in &holders {
        apply_entry(&ctx.client, board, &key, None).await?;
        ctx.metrics.wrote("board_spec");
    }
    if !holders.is_empty() {
        tracing::info!(md = %key, boards = ?holders, "deleted: entries removed");
    }
    Ok(Action::await_change())
}

async fn publish(ctx: &Context, md: &ModelDeployment, note: status::Note) {
    let event = Event {
        type_: if note.warning { EventType::Warning } else { EventType::Normal },
        reason: note.reason.to_owned(),
        note: Some(note.note),
        action: "Reconcile".to_owned(),
        secondary: note.board.map(|name| ObjectReference {
            api_version: Some(format!("{}/{}", crds::GROUP, crds::VERSION)),
            kind: Some("Board".to_owned()),
            name: Some(name),
            ..ObjectReference::default()
        }),
    };
    if let Err(error) = ctx.recorder.publish(&event, &md.object_ref(&())).await {
        tracing::warn!(md = %md.name_any(), %error, "publishing an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_managers_fit_the_limit() {
        assert_eq!(field_manager("ns/m"), "rockchip-llama-operator/ns/m");
        let long = format!("{}/{}", "n".repeat(63), "m".repeat(100));
        let manager = field_manager(&long);
        assert!(manager.len() <= 128, "{manager}");
        assert!(manager.starts_with("rockchip-llama-operator/sha256-"));
        assert_ne!(manager, field_manager(&format!("{long}x")));
    }
}
