//! The gateway's view of the cluster: reflectors on ModelDeployments, Boards and the boards'
//! Leases, rebuilt into a [`Table`](super::table::Table) after every change and every second (a
//! lease expiring makes no event). Every gateway replica runs its own watches: no leader, and a
//! replica whose watch is broken (or silent) keeps routing on its last table: while it cannot see
//! the Leases renewed, they do not expire in its eyes ([`Blind`](crate::controller::blind::Blind)).

use std::{sync::Arc, time::Duration};

use crds::{Board, ModelDeployment};
use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    Gateway,
    table::{self, BoardView},
};
use crate::controller::{blind::Blind, boards::LeaseTimes};

/// Longest time between two rebuilds.
const REBUILD_EVERY: Duration = Duration::from_secs(1);

fn drive<K: Send + 'static>(
    events: BoxStream<'static, Result<K, watcher::Error>>,
    changed: Arc<Notify>,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(events.for_each(move |e| {
        if let Err(error) = e {
            tracing::warn!(%error, "gateway: {what} watch");
        }
        changed.notify_one();
        futures::future::ready(())
    }))
}

/// Runs the watches and keeps the gateway's table current until `stop`.
pub async fn watch(client: Client, gw: Arc<Gateway>, stop: CancellationToken) {
    let (mds, md_writer) = reflector::store::<ModelDeployment>();
    let (boards, board_writer) = reflector::store::<Board>();
    let (leases, lease_writer) = reflector::store::<Lease>();
    let md_api: Api<ModelDeployment> = match &gw.config.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let changed = Arc::new(Notify::new());
    let tasks = [
        drive(
            reflector::reflector(
                md_writer,
                watcher(md_api, watcher::Config::default()).modify(|m| m.managed_fields_mut().clear()),
            )
            .default_backoff()
            .touched_objects()
            .map(|r| r.map(|_| ()))
            .boxed(),
            changed.clone(),
            "ModelDeployment",
        ),
        drive(
            reflector::reflector(
                board_writer,
                watcher(Api::<Board>::all(client.clone()), watcher::Config::default())
                    .modify(|b| b.managed_fields_mut().clear()),
            )
            .default_backoff()
            .touched_objects()
            .map(|r| r.map(|_| ()))
            .boxed(),
            changed.clone(),
            "Board",
        ),
        drive(
            reflector::reflector(
                lease_writer,
                watcher(
                    Api::<Lease>::namespaced(client.clone(), &gw.config.lease_namespace),
                    watcher::Config::default(),
                ),
            )
            .default_backoff()
            .touched_objects()
            .map(|r| r.map(|_| ()))
            .boxed(),
            changed.clone(),
            "Lease",
        ),
    ];
    let ready = async {
        let _ = mds.wait_until_ready().await;
        let _ = boards.wait_until_ready().await;
        let _ = leases.wait_until_ready().await;
    };
    tokio::select! {
        () = ready => {}
        () = stop.cancelled() => {}
    }
    let mut blind = Blind::default();
    while !stop.is_cancelled() {
        rebuild(&gw, &mds, &boards, &leases, &mut blind);
        gw.set_synced();
        tokio::select! {
            () = changed.notified() => {
                // Coalesce a burst of events (a list, many boards reporting at once).
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            () = tokio::time::sleep(REBUILD_EVERY) => {}
            () = stop.cancelled() => {}
        }
    }
    for t in tasks {
        t.abort();
    }
}

fn rebuild(
    gw: &Gateway,
    mds: &reflector::Store<ModelDeployment>,
    boards: &reflector::Store<Board>,
    leases: &reflector::Store<Lease>,
    blind: &mut Blind,
) {
    let now = Timestamp::now();
    let leases = leases.state();
    blind.observe(leases.iter().filter_map(|l| LeaseTimes::from_lease(l)), now);
    let fresh = |name: &str| {
        leases
            .iter()
            .find(|l| l.name_any() == name)
            .and_then(|l| LeaseTimes::from_lease(l))
            .is_some_and(|t| blind.fresh(t, now))
    };
    let boards = boards.state();
    let views: Vec<BoardView<'_>> =
        boards.iter().map(|b| BoardView { board: b, lease_fresh: fresh(&b.name_any()) }).collect();
    let md_state = mds.state();
    let deployments: Vec<ModelDeployment> = md_state.iter().map(|m| (**m).clone()).collect();
    let table = table::build(&deployments, &views);
    let ejected = super::overview::ejected(gw);
    gw.status.observe(boards.iter().zip(&views).map(|(b, v)| (b.clone(), v.lease_fresh)).collect(), md_state, &ejected);
    let clashes = table.clashes.clone();
    let live: std::collections::HashSet<String> =
        table.routes.values().flat_map(|r| r.replicas.iter().map(|x| x.board.clone())).collect();
    if gw.set_table(table) {
        for (name, winner, loser) in clashes {
            tracing::warn!(%name, %winner, %loser, "two ModelDeployments serve one name; the older one gets it");
        }
        gw.loads().retain(&|b| live.contains(b));
        gw.wake_all();
    }
}
