//! A ModelDeployment's status from its plan and what the boards' agents report, and the Events
//! worth sending when it changes. Pure.
//!
//! Conditions (reasons are CamelCase as the API requires; the message carries the numbers):
//!
//! | type        | True when                                   | reasons                                   |
//! |-------------|---------------------------------------------|-------------------------------------------|
//! | Ready       | readyReplicas ≥ min(1, replicas)            | ReplicasReady, ScaledToZero / NoReplicaReady |
//! | Progressing | a download, load, rollout or drain is under way | RollingOut, Draining, Downloading, Loading, Pending / Complete |
//! | Degraded    | fewer Ready than asked, or a Failed replica | ReplicaFailed, NotEnoughBoards, ReplicasNotReady / AsRequested |
//!
//! `lastTransitionTime` is carried over while a condition keeps its status, so a status that did
//! not change compares equal and is not written again.

use crds::{
    CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY, DesiredState, ModelDeployment, ModelDeploymentStatus,
    ModelPhase, PlacementStatus,
};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use super::{
    boards::BoardFacts,
    plan::{Plan, Role, Target},
};

/// Longest condition message written (the API allows 32768; `kubectl describe` readers less).
const MAX_MESSAGE: usize = 1024;

/// The status the deployment should have now.
pub fn compute(
    md: &ModelDeployment,
    target: &Target,
    plan: &Plan,
    boards: &[BoardFacts<'_>],
    now: Timestamp,
) -> ModelDeploymentStatus {
    let key = target.key.as_str();
    let find = |name: &str| boards.iter().find(|b| b.name == name);
    let mut placements = Vec::new();
    let mut ready = 0;
    let mut replicas: usize = 0;
    let mut failed = Vec::new();
    let mut busy = Vec::new();
    let mut busy_phases = Vec::new();
    let mut leaving = Vec::new();
    for a in &plan.assignments {
        let facts = find(&a.board);
        let reported = facts.and_then(|b| b.reported(key));
        let loaded = a.entry.desired == DesiredState::Loaded;
        if loaded {
            replicas += 1;
            if facts.is_some_and(|b| b.ready_at(key, a.entry.revision.as_deref())) {
                ready += 1;
            }
        }
        let (phase, progress, mut message) = match reported {
            Some(m) => (m.phase, m.progress, m.message.clone()),
            None => (ModelPhase::Pending, None, Some(format!("waiting for the agent on {} to report", a.board))),
        };
        if a.role == Role::Leaving {
            let why = facts.map_or("leaving", |b| {
                if b.cordoned {
                    "cordoned"
                } else if b.draining {
                    "the agent is draining"
                } else {
                    "no longer matches socs or nodeSelector"
                }
            });
            leaving.push(format!("{} ({why})", a.board));
            message = Some(format!("{why}: removed once a replacement is Ready"));
        }
        match phase {
            ModelPhase::Failed => {
                failed.push(format!("{}: {}", a.board, message.as_deref().unwrap_or("failed, no message")))
            }
            ModelPhase::Pending | ModelPhase::Downloading | ModelPhase::Loading => {
                busy.push(progress_note(&a.board, phase, progress));
                busy_phases.push(phase);
            }
            ModelPhase::Cached | ModelPhase::Ready => {}
        }
        placements.push(PlacementStatus { board: a.board.clone(), phase, progress, message });
    }
    let want = target.replicas;
    let old = md.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = md.metadata.generation;
    let cond = |type_: &str, ok: bool, reason: &str, message: String| {
        condition(old, generation, now, type_, ok, reason, message)
    };

    let ratio = format!("{ready}/{want} replicas ready");
    let degraded = if !failed.is_empty() {
        Some(("ReplicaFailed", failed.join("; ")))
    } else if ready >= want {
        None
    } else if let Some(shortfall) = &plan.shortfall {
        Some(("NotEnoughBoards", shortfall.to_string()))
    } else if busy.is_empty() {
        Some(("ReplicasNotReady", ratio.clone()))
    } else {
        Some(("ReplicasNotReady", format!("{ratio}: {}", busy.join(", "))))
    };
    let ready_cond = if want == 0 {
        cond(
            CONDITION_READY,
            true,
            "ScaledToZero",
            match md.spec.autoscaling {
                Some(_) => format!(
                    "autoscaled to zero (idle for scaleDownDelay): cached on {} boards, loaded on none; \
                     the next request brings a replica back",
                    plan.assignments.len()
                ),
                None => format!("replicas is 0: cached on {} boards, loaded on none", plan.assignments.len()),
            },
        )
    } else if ready >= 1 {
        cond(CONDITION_READY, true, "ReplicasReady", ratio.clone())
    } else {
        let detail = match &degraded {
            Some((_, m)) if m.starts_with(&ratio) => m.clone(),
            Some((_, m)) => format!("{ratio}: {m}"),
            None => ratio.clone(),
        };
        cond(CONDITION_READY, false, "NoReplicaReady", detail)
    };
    let rollout = plan.rollout;
    let revision = target.revision().unwrap_or_default();
    let progressing = if rollout.updated < rollout.total {
        Some(("RollingOut", format!("revision {revision}: {}/{} boards updated", rollout.updated, rollout.total)))
    } else if !leaving.is_empty() {
        Some((
            "Draining",
            format!("leaving {}; each goes once {want} replicas are Ready elsewhere", leaving.join(", ")),
        ))
    } else if busy.is_empty() {
        None
    } else {
        let reason = if busy_phases.contains(&ModelPhase::Downloading) {
            "Downloading"
        } else if busy_phases.contains(&ModelPhase::Loading) {
            "Loading"
        } else {
            "Pending"
        };
        Some((reason, busy.join(", ")))
    };
    let conditions = vec![
        ready_cond,
        match progressing {
            Some((reason, message)) => cond(CONDITION_PROGRESSING, true, reason, message),
            None if plan.assignments.is_empty() => {
                cond(CONDITION_PROGRESSING, false, "Complete", "no replica is placed".to_owned())
            }
            None => cond(CONDITION_PROGRESSING, false, "Complete", format!("every replica is at revision {revision}")),
        },
        match degraded {
            Some((reason, message)) => cond(CONDITION_DEGRADED, true, reason, message),
            None if want == 0 && md.spec.autoscaling.is_some() => {
                cond(CONDITION_DEGRADED, false, "ScaledToZero", "autoscaled to zero".to_owned())
            }
            None if want == 0 => cond(CONDITION_DEGRADED, false, "ScaledToZero", "replicas is 0".to_owned()),
            None => cond(CONDITION_DEGRADED, false, "AsRequested", ratio),
        },
    ];
    ModelDeploymentStatus {
        observed_generation: generation,
        replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
        ready_replicas: Some(i32::try_from(ready).unwrap_or(i32::MAX)),
        conditions,
        placements,
        // The autoscaler's, written under its own field manager (controller/autoscale.rs).
        autoscaling: None,
    }
}

/// `b2 Downloading 40%`, `b3 Loading`.
fn progress_note(board: &str, phase: ModelPhase, progress: Option<f64>) -> String {
    let phase = match phase {
        ModelPhase::Pending => "Pending",
        ModelPhase::Downloading => "Downloading",
        ModelPhase::Loading => "Loading",
        ModelPhase::Cached => "Cached",
        ModelPhase::Ready => "Ready",
        ModelPhase::Failed => "Failed",
    };
    match progress {
        Some(p) if (0.0..=1.0).contains(&p) => format!("{board} {phase} {:.0}%", p * 100.0),
        _ => format!("{board} {phase}"),
    }
}

/// A condition that keeps its lastTransitionTime while its status stays the same.
fn condition(
    old: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
    type_: &str,
    ok: bool,
    reason: &str,
    mut message: String,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// An Event to publish on the ModelDeployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning rather than Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Text for people.
    pub note: String,
    /// The Board the Event is also about (`related` in the Event), if any.
    pub board: Option<String>,
}

/// Events for what changed between two statuses and by the writes of this reconcile: only
/// transitions, so a steady deployment sends none.
pub fn transitions(
    old: Option<&ModelDeploymentStatus>,
    new: &ModelDeploymentStatus,
    added: &[String],
    removed: &[String],
) -> Vec<Note> {
    let mut notes = Vec::new();
    // One Event per board, related to the Board: Events with the same reason and related
    // object are merged into a series, so a per-board Event keeps each board's name visible.
    for board in added {
        let note = format!("assigned to board {board}");
        notes.push(Note { warning: false, reason: "Assigned", note, board: Some(board.clone()) });
    }
    for board in removed {
        let note = format!("removed from board {board}");
        notes.push(Note { warning: false, reason: "Unassigned", note, board: Some(board.clone()) });
    }
    let find = |s: Option<&ModelDeploymentStatus>, t: &str| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == t)).map(|c| (c.status.clone(), c.reason.clone()))
    };
    let message = |t: &str| new.conditions.iter().find(|c| c.type_ == t).map(|c| c.message.clone()).unwrap_or_default();
    let (was, now) = (find(old, CONDITION_READY), find(Some(new), CONDITION_READY));
    if was.as_ref().map(|w| &w.0) != now.as_ref().map(|n| &n.0) {
        let ready = now.as_ref().is_some_and(|n| n.0 == "True");
        // A brand-new deployment is not "NotReady" news: it has never been ready.
        if ready || was.is_some() {
            let reason = if ready { "Ready" } else { "NotReady" };
            notes.push(Note { warning: !ready, reason, note: message(CONDITION_READY), board: None });
        }
    }
    let (was, now) = (find(old, CONDITION_DEGRADED), find(Some(new), CONDITION_DEGRADED));
    if let Some((status, reason)) = &now
        && status == "True"
        && was.as_ref() != now.as_ref()
    {
        let reason = match reason.as_str() {
            "ReplicaFailed" => Some("ReplicaFailed"),
            "NotEnoughBoards" => Some("NotEnoughBoards"),
            // Replicas on their way up are not worth a warning; Progressing says it.
            _ => None,
        };
        if let Some(reason) = reason {
            notes.push(Note { warning: true, reason, note: message(CONDITION_DEGRADED), board: None });
        }
    }
    let (was, now) = (find(old, CONDITION_PROGRESSING), find(Some(new), CONDITION_PROGRESSING));
    if now.as_ref().is_some_and(|n| n.1 == "RollingOut") && was.as_ref().is_none_or(|w| w.1 != "RollingOut") {
        notes.push(Note { warning: false, reason: "RollingOut", note: message(CONDITION_PROGRESSING), board: None });
    }
    notes
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
