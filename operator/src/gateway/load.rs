//! What the gateway knows about each board's load and health, pure bookkeeping (the poller and
//! the proxy in [`super::serve`] feed it; time comes in as an argument).
//!
//! Load per board and model = this gateway's own requests in flight there + the board's other
//! work. The board reports running + waiting per model on `GET /internal/v1/load` (polled every
//! 250 ms by default); that count includes this gateway's own requests, so "other work" is the
//! report minus what this gateway had in flight when the report came — other gateway replicas'
//! requests and clients that call the board directly. Requests sent since the last report count
//! at once, through the in-flight count, so a burst between two polls is spread out.
//!
//! A report can still count a request this gateway has already seen end: the board took its
//! snapshot before the request ended, or the board releases a slot a moment after the answer's
//! last byte. Counted as "other work", such a request would make its board look busy for a
//! whole poll interval, and a conversation's next turn would leave its warm board. So requests
//! that ended up to [`REPORT_LAG`] before the poll was sent are subtracted too.
//!
//! Health: consecutive failures (connect errors, cut connections, failed polls) eject a board
//! after `eject_after`; it stays out for a back-off (1 s, doubling per ejection in a row, at most
//! 32 s), then the next poll is its recovery probe: a good answer brings it back.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde::Deserialize;

/// The agent's `GET /internal/v1/load` answer.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct LoadReport {
    pub models: Vec<ModelLoad>,
}

/// One resident model's work on a board.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ModelLoad {
    pub name: String,
    pub running: u32,
    pub waiting: u32,
    #[serde(default)]
    pub slots: u32,
}

/// How long before a poll is sent a request may have ended and still be in the board's report.
pub const REPORT_LAG: Duration = Duration::from_millis(100);

/// Most end times kept per board and model between two polls.
const MAX_ENDED: usize = 4096;

/// Longest time out after an ejection.
const MAX_EJECTION: Duration = Duration::from_secs(32);

/// One board.
#[derive(Clone, Debug, Default)]
pub struct BoardLoad {
    /// This gateway's requests in flight, by model (the route's served name).
    in_flight: HashMap<String, u32>,
    /// Work on the board that is not this gateway's, by model, from the last report.
    others: HashMap<String, u32>,
    /// When this gateway's recent requests ended, by model (kept for [`REPORT_LAG`] past the
    /// last poll's sending).
    ended: HashMap<String, Vec<Instant>>,
    /// Failures in a row.
    failures: u32,
    /// Ejections in a row (reset by a success).
    ejections: u32,
    /// Out of routing until a probe succeeds; no probe before this instant.
    ejected_until: Option<Instant>,
}

impl BoardLoad {
    /// This gateway's requests in flight for `model`.
    pub fn in_flight(&self, model: &str) -> u32 {
        self.in_flight.get(model).copied().unwrap_or(0)
    }

    /// Work from elsewhere for `model`, as last reported.
    pub fn others(&self, model: &str) -> u32 {
        self.others.get(model).copied().unwrap_or(0)
    }

    /// Total requests in flight from this gateway, every model.
    pub fn total_in_flight(&self) -> u32 {
        self.in_flight.values().sum()
    }

    pub fn start(&mut self, model: &str) {
        *self.in_flight.entry(model.to_owned()).or_default() += 1;
    }

    pub fn finish(&mut self, model: &str, now: Instant) {
        if let Some(n) = self.in_flight.get_mut(model) {
            let ended = self.ended.entry(model.to_owned()).or_default();
            // Polls prune this; a board no poll reaches (none due) must not make it grow.
            if ended.len() >= MAX_ENDED {
                ended.drain(..MAX_ENDED / 2);
            }
            ended.push(now);
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(model);
            }
        }
    }

    /// A fresh report, from a poll sent at `sent`: the board's work minus this gateway's own
    /// share (in flight now, or ended so recently that the report may still count it).
    pub fn on_report(&mut self, report: &LoadReport, sent: Instant) {
        let since = sent.checked_sub(REPORT_LAG).unwrap_or(sent);
        for times in self.ended.values_mut() {
            times.retain(|t| *t >= since);
        }
        self.ended.retain(|_, times| !times.is_empty());
        let own = |name: &str| {
            let ended = self.ended.get(name).map_or(0, Vec::len);
            self.in_flight(name) + u32::try_from(ended).unwrap_or(u32::MAX)
        };
        self.others = report
            .models
            .iter()
            .map(|m| (m.name.clone(), (m.running + m.waiting).saturating_sub(own(&m.name))))
            .collect();
    }

    /// A request or poll got an answer: the board is healthy.
    pub fn on_success(&mut self) {
        self.failures = 0;
        self.ejections = 0;
        self.ejected_until = None;
    }

    /// A request or poll failed. Returns true when this failure ejects the board.
    pub fn on_failure(&mut self, now: Instant, eject_after: u32) -> bool {
        self.failures += 1;
        if self.ejected_until.is_some() {
            // A failed recovery probe: out again, for longer.
            self.ejections += 1;
            self.ejected_until = Some(now + backoff(self.ejections));
            return false;
        }
        if self.failures >= eject_after.max(1) {
            self.ejections += 1;
            self.ejected_until = Some(now + backoff(self.ejections));
            return true;
        }
        false
    }

    /// Whether requests may go to this board.
    pub fn routable(&self) -> bool {
        self.ejected_until.is_none()
    }

    /// Whether the poller should poll now: always when routable, else once the back-off is over
    /// (that poll is the recovery probe).
    pub fn due(&self, now: Instant) -> bool {
        self.ejected_until.is_none_or(|t| now >= t)
    }
}

fn backoff(ejections: u32) -> Duration {
    Duration::from_secs(1u64 << ejections.saturating_sub(1).min(5)).min(MAX_EJECTION)
}

/// Every board, by name.
#[derive(Debug, Default)]
pub struct Loads {
    pub boards: HashMap<String, BoardLoad>,
}

impl Loads {
    pub fn board(&mut self, name: &str) -> &mut BoardLoad {
        self.boards.entry(name.to_owned()).or_default()
    }

    /// Forgets boards no longer in the table (their counts would be stale if they came back).
    /// A board with requests still in flight is kept until they finish.
    pub fn retain(&mut self, live: &dyn Fn(&str) -> bool) {
        self.boards.retain(|name, b| live(name) || b.total_in_flight() > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, running: u32, waiting: u32) -> LoadReport {
        LoadReport { models: vec![ModelLoad { name: name.into(), running, waiting, slots: 1 }] }
    }

    #[test]
    fn own_requests_are_not_counted_twice() {
        let mut b = BoardLoad::default();
        b.start("m");
        b.start("m");
        // The board sees our 2 and 1 from elsewhere.
        let t0 = Instant::now();
        b.on_report(&report("m", 1, 2), t0);
        assert_eq!((b.in_flight("m"), b.others("m")), (2, 1));
        b.finish("m", t0);
        b.finish("m", t0);
        b.finish("m", t0);
        assert_eq!(b.in_flight("m"), 0, "never below zero");
        b.on_report(&report("m", 0, 0), t0);
        assert_eq!(b.others("m"), 0);
        assert_eq!(b.others("unknown"), 0);
    }

    /// A request that ended just before (or while) the board was polled may still be in its
    /// report; it is not someone else's work. Long enough before the poll, it is gone.
    #[test]
    fn a_request_that_just_ended_is_not_other_work() {
        let mut b = BoardLoad::default();
        let t0 = Instant::now();
        b.start("m");
        b.finish("m", t0);
        b.on_report(&report("m", 1, 0), t0 + REPORT_LAG / 2);
        assert_eq!(b.others("m"), 0, "the board had not released our slot yet");
        b.on_report(&report("m", 1, 0), t0 + REPORT_LAG * 2);
        assert_eq!(b.others("m"), 1, "long after our request: someone else's");
    }

    #[test]
    fn ejection_after_consecutive_failures_and_recovery_by_probe() {
        let t0 = Instant::now();
        let mut b = BoardLoad::default();
        assert!(!b.on_failure(t0, 2));
        b.on_success();
        assert!(!b.on_failure(t0, 2), "a success resets the count");
        assert!(b.on_failure(t0, 2), "the second failure in a row ejects");
        assert!(!b.routable());
        assert!(!b.due(t0), "no probe during the back-off");
        assert!(b.due(t0 + Duration::from_secs(1)));
        // The probe fails: out for 2 s more.
        let t1 = t0 + Duration::from_secs(1);
        assert!(!b.on_failure(t1, 2), "already ejected: not counted as a new ejection");
        assert!(!b.due(t1 + Duration::from_millis(1999)));
        assert!(b.due(t1 + Duration::from_secs(2)));
        b.on_success();
        assert!(b.routable() && b.due(t1));
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), MAX_EJECTION);
    }
}
