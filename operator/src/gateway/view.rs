//! The gateway's view of the cluster: reflectors on ModelDeployments, Boards and the boards'
//! Leases, rebuilt into a [`Table`](super::table::Table) after every change and every second (a
//! lease expiring makes no event). Every gateway replica runs its own watches: no leader, and a
//! replica whose watch is broken (or silent) keeps routing on its last table: while it cannot see
//! the Leases renewed, they do not expire in its eyes ([`Blind`]).

use std::{sync::Arc, time::Duration};

use crds::{Board, ModelDeployment};
use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::{
    api::coordination::v1::Lease,
    jiff::{SignedDuration, Timestamp},
};
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
use crate::controller::boards::LeaseTimes;

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

/// When the gateway's view of the Leases went stale: from the newest renewal it showed to the
/// moment it shows renewals again.
///
/// An API server restart (or any outage longer than a lease) would otherwise expire every
/// board's Lease in the gateway's eyes, and the gateway would refuse every request while every
/// board is fine. The watch need not fail for that: a stopping API server holds watches open and
/// silent. So staleness is read from the Leases themselves: every holder renews a quarter of the
/// way through its lease, so when no Lease at all was renewed for half the shortest lease the view
/// is stale, not every board dead. A Lease that was fresh at the newest renewal the view shows
/// stays fresh while the view is stale, and for one lease duration after it shows renewals again
/// (the agents, retrying every second or so, renew by then). A board that really died meanwhile
/// is still taken out of routing by the load poller's ejection. Found by `make soak`: a stopping
/// kube-apiserver kept the watches silent for ~30 s and the gateway answered 503 to everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blind {
    began: Option<Timestamp>,
    ended: Option<Timestamp>,
}

impl Blind {
    /// Looks at every Lease the view holds at `now`.
    pub fn observe(&mut self, leases: impl Iterator<Item = LeaseTimes>, now: Timestamp) {
        let (mut newest, mut shortest) = (None::<Timestamp>, None::<SignedDuration>);
        for l in leases {
            newest = newest.max(Some(l.renewed));
            shortest = Some(shortest.map_or(l.duration, |s| s.min(l.duration)));
        }
        let (Some(newest), Some(shortest)) = (newest, shortest) else { return };
        // Holders renew every quarter of their lease: no renewal at all for half the shortest
        // lease means the view, not every board, has stopped.
        let stale = newest.saturating_add(shortest / 2).is_ok_and(|until| until < now);
        let was_stale = self.began.is_some() && self.ended.is_none();
        if stale && !was_stale {
            tracing::warn!(newest_renewal = %newest, "gateway: no Lease renewed for half a lease; the view is stale, boards stay routable");
            *self = Self { began: Some(newest), ended: None };
        } else if !stale && was_stale {
            tracing::info!(since = %newest, "gateway: Leases renewed again");
            self.ended = Some(now);
        }
    }

    /// Whether a board with this Lease may be routed to at `now`.
    pub fn fresh(&self, lease: LeaseTimes, now: Timestamp) -> bool {
        let expires = lease.expires();
        if expires > now {
            return true;
        }
        let Some(began) = self.began else { return false };
        // Fresh when the view went stale, and not yet one lease duration past its return.
        expires > began && self.ended.is_none_or(|e| e.saturating_add(lease.duration).is_ok_and(|until| now < until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn lease(renewed: i64) -> LeaseTimes {
        LeaseTimes { renewed: at(renewed), duration: SignedDuration::from_secs(8) }
    }

    #[test]
    fn a_lease_does_not_expire_while_the_view_shows_no_renewals() {
        let mut b = Blind::default();
        // Three boards renewing every 2 s (8 s leases).
        let view = |renewed: [i64; 3], b: &mut Blind, now: i64| b.observe(renewed.into_iter().map(lease), at(now));
        view([0, 1, 2], &mut b, 3);
        assert!(b.fresh(lease(0), at(7)) && !b.fresh(lease(0), at(9)), "a live view: renew + duration");
        // The API server stops at 3 s and is back at 35 s: no renewal shows in between. The view
        // is stale from 6 s (the newest renewal, 2 s, + half the shortest lease).
        for now in 4..35 {
            view([0, 1, 2], &mut b, now);
        }
        assert!(b.fresh(lease(0), at(20)), "the outage must not expire a lease the gateway cannot see renewed");
        assert!(!b.fresh(lease(-10), at(20)), "a lease that had expired stays expired");
        // Back: one board has renewed, the others renew within a second or two.
        view([0, 36, 2], &mut b, 36);
        assert!(b.fresh(lease(0), at(40)), "one lease duration to renew after the view is back");
        assert!(!b.fresh(lease(0), at(45)), "an agent that did not renew by then is gone");
        assert!(b.fresh(lease(40), at(45)), "renewed: fresh as usual");
        // One board dies while the others renew: no staleness, its lease expires as usual.
        for now in 46..60 {
            view([44, now - 1, now - 1], &mut b, now);
        }
        assert!(!b.fresh(lease(44), at(59)), "a dead board among live ones expires");

        // A longer Lease in the namespace (the operator's, 30 s) does not delay noticing.
        let mut b = Blind::default();
        let long = |r: i64| LeaseTimes { renewed: at(r), duration: SignedDuration::from_secs(30) };
        for now in 3..20 {
            b.observe([lease(1), lease(2), long(0)].into_iter(), at(now));
        }
        assert!(b.fresh(lease(1), at(19)), "stale from 6 s, whatever the longest lease");
    }
}
