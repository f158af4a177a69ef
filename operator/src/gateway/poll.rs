//! The load poller: every `poll_interval`, `GET /internal/v1/load` on each board in the table
//! (with the cluster token), all boards at once, each bounded by the interval or 1 s. A good
//! answer updates the board's load and health; a failure counts towards ejection; an ejected
//! board is polled again once its back-off is over, as its recovery probe.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use super::{Gateway, load::LoadReport};

/// Path of the agents' load endpoint.
pub const LOAD_PATH: &str = "/internal/v1/load";

async fn poll_one(gw: &Gateway, endpoint: &str, timeout: Duration) -> Result<LoadReport, String> {
    let mut req = gw.http.get(format!("{endpoint}{LOAD_PATH}")).timeout(timeout);
    if let Some(token) = &gw.config.cluster_token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    resp.json::<LoadReport>().await.map_err(|e| e.to_string())
}

/// Polls until `stop`.
pub async fn run(gw: Arc<Gateway>, stop: CancellationToken) {
    let interval = gw.config.poll_interval.max(Duration::from_millis(10));
    let timeout = interval.max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let table = gw.table();
        let now = Instant::now();
        let boards: BTreeMap<String, String> = {
            let loads = gw.loads();
            table
                .routes
                .values()
                .flat_map(|r| r.replicas.iter())
                .filter(|r| loads.boards.get(&r.board).is_none_or(|b| b.due(now)))
                .map(|r| (r.board.clone(), r.endpoint.clone()))
                .collect()
        };
        if boards.is_empty() {
            continue;
        }
        let sent = Instant::now();
        let results =
            join_all(boards.iter().map(|(b, e)| async { (b.clone(), poll_one(&gw, e, timeout).await) })).await;
        let now = Instant::now();
        for (board, result) in results {
            let mut loads = gw.loads();
            let b = loads.board(&board);
            match result {
                Ok(report) => {
                    if !b.routable() {
                        tracing::info!(%board, "gateway: board answers again; back in routing");
                    }
                    b.on_success();
                    b.on_report(&report, sent);
                }
                Err(error) => {
                    if b.on_failure(now, gw.config.eject_after) {
                        tracing::warn!(%board, %error, "gateway: board ejected (its load poll failed)");
                        gw.metrics.ejected(&board);
                    } else {
                        tracing::debug!(%board, %error, "gateway: load poll failed");
                    }
                }
            }
        }
        gw.wake_all();
    }
}
