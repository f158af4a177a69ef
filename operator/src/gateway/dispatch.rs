//! Choosing a board for one request, and holding it while the request runs.
//!
//! A board can take a request now when its load for the model is below its slots; for
//! PrefixAffinity also when it is below its slots plus `board_queue`, so a conversation may wait
//! on the board that holds its cache rather than recompute its prefix elsewhere. LeastLoad binds
//! late: a request waits at the gateway until a slot is free and then goes to whichever board
//! freed first. Queued on a board it could only wait behind whatever that board was given, a long
//! generation included, while another board freed up; on RK3588 a request holds a board for
//! seconds, far longer than the one round trip late binding costs. The policy picks among
//! every routable board; when its pick is full, LeastLoad and PrefixAffinity pick again among the
//! boards that are not; RoundRobin sends to its turn anyway (a plain rotation, the baseline the
//! others are measured against). When none can take it, the request waits in the model's queue:
//! bounded in length (`queue_depth`, then 429 at once) and in time (`queue_timeout`, then 429
//! with Retry-After), first come first served (`queue.rs`). Each finished request, board report
//! and table change wakes the first in line.
//!
//! A deployment with `spec.autoscaling` and no Ready replica (scaled to zero, or its first
//! replica still starting) holds its requests in the same queue instead of refusing them: there
//! they count as waiting demand (`GET /internal/v1/demand`), which is what makes the autoscaler
//! place a replica; the table change that brings the replica wakes them. After
//! `scale_from_zero_timeout` they get 503 saying the model is starting. Without autoscaling a
//! deployment with no Ready replica is refused at once.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    Gateway,
    policy::{self, Ask, Candidate, Reason},
    queue::Ticket,
    table::Route,
};
use api_types::ApiError;
use crds::RoutingStrategy;

/// A board taken for one request: counted in flight until dropped (when the answer has been
/// streamed to the end, or the client went away).
pub struct Slot {
    pub(super) gw: Arc<Gateway>,
    pub route_key: String,
    pub model: String,
    pub board: String,
    pub endpoint: String,
    pub reason: Reason,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gw.loads().board(&self.board).finish(&self.model, Instant::now());
        self.gw.count_inflight(&self.route_key, false);
        self.gw.wake(&self.route_key);
    }
}

/// What [`try_pick`] found.
enum Pick {
    Chosen {
        board: String,
        endpoint: String,
        reason: Reason,
    },
    /// Every routable board is at capacity.
    Full,
    /// No board can be tried: all ejected, or all already tried by this request.
    NoBoard,
}

fn strategy_name(s: RoutingStrategy) -> &'static str {
    match s {
        RoutingStrategy::LeastLoad => "LeastLoad",
        RoutingStrategy::PrefixAffinity => "PrefixAffinity",
        RoutingStrategy::RoundRobin => "RoundRobin",
    }
}

/// The metrics label of a routing policy.
pub fn policy_label(route: &Route) -> &'static str {
    strategy_name(route.strategy)
}

fn try_pick(gw: &Gateway, route: &Route, key: &str, tried: &[String]) -> Pick {
    let board_queue = match route.strategy {
        RoutingStrategy::PrefixAffinity => gw.config.board_queue,
        RoutingStrategy::LeastLoad | RoutingStrategy::RoundRobin => 0,
    };
    let mut loads = gw.loads();
    let candidates: Vec<Candidate> = route
        .replicas
        .iter()
        .filter(|r| !tried.contains(&r.board))
        .filter(|r| loads.boards.get(&r.board).is_none_or(|b| b.routable()))
        .map(|r| {
            let b = loads.boards.get(&r.board);
            Candidate {
                board: r.board.clone(),
                in_flight: b.map_or(0, |b| b.in_flight(&route.model)),
                queued: b.map_or(0, |b| b.others(&route.model)),
                slots: r.slots,
            }
        })
        .collect();
    if candidates.is_empty() {
        return Pick::NoBoard;
    }
    let open = |c: &Candidate| c.in_flight + c.queued < c.slots + board_queue;
    let turn = gw.next_turn(&route.key);
    let ask = Ask { key, turn };
    let mut random = || gw.random();
    let Some((i, reason)) = policy::pick(route.strategy, &candidates, ask, &mut random) else {
        return Pick::NoBoard;
    };
    // RoundRobin is the plain rotation a Service would do: its turn, full or not (the board
    // queues it; its own 429 then passes the request on). The load-aware policies hold requests
    // here instead of sending them to a full board.
    let rotate = route.strategy == RoutingStrategy::RoundRobin;
    let (board, reason) = if rotate || open(&candidates[i]) {
        (candidates[i].board.clone(), reason)
    } else {
        let free: Vec<Candidate> = candidates.iter().filter(|c| open(c)).cloned().collect();
        match policy::pick(route.strategy, &free, ask, &mut random) {
            Some((j, r)) => {
                let r = if route.strategy == RoutingStrategy::PrefixAffinity { Reason::SpillOver } else { r };
                (free[j].board.clone(), r)
            }
            None => return Pick::Full,
        }
    };
    loads.board(&board).start(&route.model);
    let endpoint = route.replicas.iter().find(|r| r.board == board).map(|r| r.endpoint.clone()).unwrap_or_default();
    Pick::Chosen { board, endpoint, reason }
}

/// A request's place in its model's line, with the queue metrics it moves.
struct Waiting<'a> {
    gw: &'a Gateway,
    ticket: Ticket,
    model: String,
    since: Instant,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.gw.metrics.queued(&self.model, -1);
        self.gw.metrics.waited(&self.model, self.since.elapsed().as_secs_f64());
    }
}

/// Why no replica can serve a route: the 503 message.
pub fn no_replica_message(name: &str, route: &Route) -> String {
    if route.desired == 0 {
        format!("model '{name}' is scaled to zero ({} has replicas: 0)", route.key)
    } else {
        format!(
            "model '{name}' has no Ready replica yet ({} wants {}); `kubectl describe modeldeployment -n {}` says why",
            route.key,
            route.desired,
            route.key.replace('/', " ")
        )
    }
}

/// The 503 message of a request held for an autoscaled deployment that got no Ready replica in
/// time.
pub fn starting_message(name: &str, route: &Route, waited: Duration) -> String {
    let secs = waited.as_secs_f64();
    let secs = if secs.fract() == 0.0 { format!("{secs:.0}") } else { format!("{secs:.1}") };
    format!(
        "model '{name}' is starting (scaled from zero) and was not Ready within {secs} s; retry shortly \
         (`kubectl describe modeldeployment -n {}` shows its progress)",
        route.key.replace('/', " ")
    )
}

/// A board for the request for `name` that arrived at `started`, waiting in the model's queue
/// if every board is busy (until `queue_timeout` after it arrived, or after its deployment's
/// first replica appeared if it was held for one) or if an autoscaled deployment has no Ready
/// replica (until `scale_from_zero_timeout` after it arrived). `tried` are the boards this
/// request already failed on.
pub async fn acquire(
    gw: &Arc<Gateway>,
    name: &str,
    key: &str,
    tried: &[String],
    started: Instant,
) -> Result<Slot, ApiError> {
    let mut waiting: Option<Waiting<'_>> = None;
    // A retry was admitted once: it may take a board ahead of the line, and is not refused for
    // the line's length.
    let retry = !tried.is_empty();
    let mut deadline = started + gw.config.queue_timeout;
    let cold_deadline = started + gw.config.scale_from_zero_timeout;
    let mut held = false;
    loop {
        let table = gw.table();
        let route = table.lookup(name).ok_or_else(|| ApiError::ModelNotFound(name.to_owned()))?;
        let cold = route.replicas.is_empty();
        if cold && !route.autoscaled {
            return Err(ApiError::Unavailable(no_replica_message(name, route)));
        }
        if cold {
            held = true;
        } else if held {
            // A replica came: the wait for a free board starts now, not at arrival.
            held = false;
            deadline = deadline.max(Instant::now() + gw.config.queue_timeout);
        }
        let queue = gw.queue(&route.key);
        // First come, first served: a newcomer looks only when no one waits, a waiter only
        // when it is first in line.
        let may_pick = match &waiting {
            Some(w) => w.ticket.is_first(),
            None => retry || queue.is_empty(),
        };
        let pick = if may_pick && !cold { try_pick(gw, route, key, tried) } else { Pick::Full };
        match pick {
            Pick::Chosen { board, endpoint, reason } => {
                // Leaving the line wakes the next, who may find room too.
                drop(waiting);
                gw.count_inflight(&route.key, true);
                return Ok(Slot {
                    gw: gw.clone(),
                    route_key: route.key.clone(),
                    model: route.model.clone(),
                    board,
                    endpoint,
                    reason,
                });
            }
            Pick::NoBoard if !cold && route.replicas.iter().all(|r| tried.contains(&r.board)) => {
                return Err(ApiError::Unavailable(format!(
                    "every board serving '{name}' failed this request ({})",
                    tried.join(", ")
                )));
            }
            Pick::NoBoard | Pick::Full => {}
        }
        if waiting.is_none() {
            let depth = queue.len();
            if !retry && depth >= gw.config.queue_depth {
                let why = if cold { "is starting" } else { "has every board busy" };
                return Err(ApiError::Overloaded(format!(
                    "model '{name}' {why} and {depth} requests already wait for it"
                )));
            }
            gw.metrics.queued(&route.model, 1);
            waiting =
                Some(Waiting { gw, ticket: queue.join(retry), model: route.model.clone(), since: Instant::now() });
            // Look again as a member of the line before sleeping: a board freed between the
            // look above and joining woke no one.
            continue;
        }
        let now = Instant::now();
        if cold && now >= cold_deadline {
            return Err(ApiError::Unavailable(starting_message(name, route, gw.config.scale_from_zero_timeout)));
        }
        let until = if cold { cold_deadline } else { deadline };
        if now >= until {
            return Err(match pick {
                Pick::NoBoard => ApiError::Unavailable(format!(
                    "no healthy board serves '{name}' now: its boards failed and are being probed"
                )),
                _ => ApiError::Overloaded(format!(
                    "every board serving '{name}' stayed busy for {} s",
                    gw.config.queue_timeout.as_secs()
                )),
            });
        }
        // Woken by a finished request, a report or a table change; the timer is a backstop.
        let nap = (until - now).min(gw.config.poll_interval.max(Duration::from_millis(50)));
        let ticket = &waiting.as_ref().expect("joined above").ticket;
        tokio::select! {
            () = ticket.woken() => {}
            () = tokio::time::sleep(nap) => {}
        }
    }
}
