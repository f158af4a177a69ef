//! Recent events for the status page: a bounded ring of the changes this gateway replica observed
//! in its own watches and polls — boards joining, leaving, changing state, ejected and back, a
//! model's phase changing on a board, ModelDeployments created, scaled and deleted. The view
//! compares what it sees at every rebuild (at least once a second) with the previous rebuild.
//!
//! Why not Kubernetes Events: the gateway's RBAC reads Boards, ModelDeployments and Leases only,
//! and the controller publishes Events for its own decisions, not for what the gateway sees
//! (an ejection is this replica's view). Each replica keeps its own ring, in memory: a restart
//! starts it empty, and two replicas can differ by what each saw. The diff is pure
//! ([`diff`]); [`Events`] holds the ring.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Mutex, PoisonError},
};

use api_types::overview::{BoardState, EventLevel, OverviewEvent, now_ms};

/// Events kept; the oldest go first. A page shows them all, so this bounds its size too.
pub const EVENTS_KEPT: usize = 100;

/// The ring.
#[derive(Debug, Default)]
pub struct Events(Mutex<VecDeque<OverviewEvent>>);

impl Events {
    pub fn push(&self, level: EventLevel, subject: &str, model: Option<&str>, message: impl Into<String>) {
        let e = OverviewEvent {
            time_ms: now_ms(),
            level,
            subject: subject.to_owned(),
            model: model.map(str::to_owned),
            message: message.into(),
        };
        let mut ring = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == EVENTS_KEPT {
            ring.pop_back();
        }
        ring.push_front(e);
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<OverviewEvent> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }
}

/// What the diff compares: the parts of the cluster worth an event, from one rebuild.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Board name → its state (`Ejected` included: this gateway's own verdict).
    pub boards: BTreeMap<String, BoardState>,
    /// (board, deployment key) → (served name, phase).
    pub phases: BTreeMap<(String, String), (String, String)>,
    /// Deployment key → (served name, desired replicas).
    pub deployments: BTreeMap<String, (String, i32)>,
}

/// One event to record: level, subject, model, message.
pub type Change = (EventLevel, String, Option<String>, String);

fn state_change(state: BoardState) -> (EventLevel, &'static str) {
    match state {
        BoardState::Ready => (EventLevel::Info, "Ready"),
        BoardState::Draining => (EventLevel::Warning, "draining: finishing its requests, taking no new ones"),
        BoardState::NotReady => (EventLevel::Warning, "not Ready"),
        BoardState::Ejected => (EventLevel::Warning, "ejected from routing after failed requests or polls"),
        BoardState::Offline => (EventLevel::Warning, "offline: its lease expired"),
    }
}

/// The changes from `before` to `now`; the first observation is summed up in one event.
pub fn diff(before: Option<&Observed>, now: &Observed) -> Vec<Change> {
    let Some(before) = before else {
        let ready = now.boards.values().filter(|s| **s == BoardState::Ready).count();
        return vec![(
            EventLevel::Info,
            "gateway".to_owned(),
            None,
            format!(
                "watching {} boards ({ready} Ready) and {} ModelDeployments",
                now.boards.len(),
                now.deployments.len()
            ),
        )];
    };
    let mut out = Vec::new();
    for (name, state) in &now.boards {
        match before.boards.get(name) {
            None => {
                let (level, what) = state_change(*state);
                out.push((level, name.clone(), None, format!("joined; {what}")));
            }
            Some(old) if old != state => {
                let (level, what) = state_change(*state);
                out.push((level, name.clone(), None, what.to_owned()));
            }
            Some(_) => {}
        }
    }
    for name in before.boards.keys().filter(|n| !now.boards.contains_key(*n)) {
        out.push((EventLevel::Warning, name.clone(), None, "left: its Board was deleted".to_owned()));
    }
    for ((board, key), (model, phase)) in &now.phases {
        let old = before.phases.get(&(board.clone(), key.clone())).map(|(_, p)| p.as_str());
        if old != Some(phase.as_str()) {
            let level = if phase == "Failed" { EventLevel::Warning } else { EventLevel::Info };
            out.push((level, board.clone(), Some(model.clone()), format!("{model}: {phase}")));
        }
    }
    for ((board, key), (model, _)) in &before.phases {
        if now.boards.contains_key(board) && !now.phases.contains_key(&(board.clone(), key.clone())) {
            out.push((EventLevel::Info, board.clone(), Some(model.clone()), format!("{model}: removed")));
        }
    }
    for (key, (model, desired)) in &now.deployments {
        match before.deployments.get(key) {
            None => out.push((
                EventLevel::Info,
                key.clone(),
                Some(model.clone()),
                format!("created: {model}, {desired} replicas"),
            )),
            Some((_, old)) if old != desired => out.push((
                EventLevel::Info,
                key.clone(),
                Some(model.clone()),
                format!("scaled from {old} to {desired} replicas"),
            )),
            Some(_) => {}
        }
    }
    for (key, (model, _)) in before.deployments.iter().filter(|(k, _)| !now.deployments.contains_key(*k)) {
        out.push((EventLevel::Info, key.clone(), Some(model.clone()), "deleted".to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(boards: &[(&str, BoardState)], phases: &[(&str, &str)], deployments: &[(&str, i32)]) -> Observed {
        Observed {
            boards: boards.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect(),
            phases: phases
                .iter()
                .map(|(b, p)| (((*b).to_owned(), "ns/smol".to_owned()), ("smollm2".to_owned(), (*p).to_owned())))
                .collect(),
            deployments: deployments.iter().map(|(k, d)| ((*k).to_owned(), ("smollm2".to_owned(), *d))).collect(),
        }
    }

    fn messages(changes: &[Change]) -> Vec<String> {
        changes.iter().map(|(_, s, _, m)| format!("{s} {m}")).collect()
    }

    #[test]
    fn first_sight_is_one_summary() {
        let now = observed(&[("b1", BoardState::Ready), ("b2", BoardState::Offline)], &[], &[("ns/smol", 1)]);
        assert_eq!(messages(&diff(None, &now)), ["gateway watching 2 boards (1 Ready) and 1 ModelDeployments"]);
        assert!(diff(Some(&now), &now).is_empty(), "nothing changed, nothing recorded");
    }

    #[test]
    fn boards_models_and_deployments_changing() {
        let before = observed(&[("b1", BoardState::Ready), ("b2", BoardState::Ready)], &[("b1", "Downloading")], &[]);
        let now = observed(
            &[("b1", BoardState::Ready), ("b3", BoardState::Ready), ("b2", BoardState::Offline)],
            &[("b1", "Ready"), ("b3", "Failed")],
            &[("ns/smol", 2)],
        );
        let changes = diff(Some(&before), &now);
        assert_eq!(
            messages(&changes),
            [
                "b2 offline: its lease expired",
                "b3 joined; Ready",
                "b1 smollm2: Ready",
                "b3 smollm2: Failed",
                "ns/smol created: smollm2, 2 replicas",
            ]
        );
        let levels: Vec<EventLevel> = changes.iter().map(|c| c.0).collect();
        assert_eq!(levels[0], EventLevel::Warning);
        assert_eq!(levels[3], EventLevel::Warning, "a failure needs attention");
        let later = observed(&[("b1", BoardState::Ready)], &[], &[("ns/smol", 0)]);
        assert_eq!(
            messages(&diff(Some(&now), &later)),
            [
                "b2 left: its Board was deleted",
                "b3 left: its Board was deleted",
                "b1 smollm2: removed",
                "ns/smol scaled from 2 to 0 replicas"
            ]
        );
        assert_eq!(
            messages(&diff(Some(&later), &Observed::default())),
            ["b1 left: its Board was deleted", "ns/smol deleted"]
        );
    }

    #[test]
    fn the_ring_is_bounded_and_newest_first() {
        let ring = Events::default();
        for i in 0..EVENTS_KEPT + 5 {
            ring.push(EventLevel::Info, "b", None, format!("{i}"));
        }
        let recent = ring.recent();
        assert_eq!(recent.len(), EVENTS_KEPT);
        assert_eq!(recent[0].message, format!("{}", EVENTS_KEPT + 4));
        assert_eq!(recent.last().map(|e| e.message.as_str()), Some("5"));
    }
}
