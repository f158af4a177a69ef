//! Tests of the status a deployment gets and the Events its changes send.

use crds::{Board, ModelDeployment};
use serde_json::json;

use super::{
    super::{
        boards::tests::{at, board, lease},
        plan::{self, Target},
    },
    *,
};

const SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn md(replicas: i32) -> ModelDeployment {
    serde_json::from_value(json!({
        "apiVersion": "rockchipllama.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": { "name": "m", "namespace": "ns", "generation": 3 },
        "spec": {
            "format": "gguf",
            "replicas": replicas,
            "source": { "url": "http://origin/m.gguf", "sha256": SHA, "sizeBytes": 1_i64 << 30 }
        }
    }))
    .expect("md")
}

/// Board `name` with the deployment's entry at the target revision, reporting `phase`.
fn assigned(name: &str, t: &Target, phase: &str, message: Option<&str>) -> Board {
    let mut b = board(name);
    b.spec.models.push(t.entry.clone());
    if let Some(s) = b.status.as_mut() {
        s.models.push(
            serde_json::from_value(json!({
                "key": t.key, "sha256": SHA, "phase": phase, "loaded": phase == "Ready",
                "revision": t.entry.revision, "progress": 0.4, "message": message
            }))
            .expect("model"),
        );
    }
    b
}

fn status_of(m: &ModelDeployment, boards: &[Board]) -> ModelDeploymentStatus {
    let t = Target::from_md(m).expect("target");
    let facts: Vec<_> = boards.iter().map(|b| BoardFacts::new(b, lease(0, 40), None, at(1))).collect();
    let p = plan::plan(&t, &facts, 1);
    compute(m, &t, &p, &facts, at(1))
}

fn cond<'a>(s: &'a ModelDeploymentStatus, t: &str) -> (&'a str, &'a str, &'a str) {
    let c = s.conditions.iter().find(|c| c.type_ == t).expect("condition");
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

#[test]
fn all_ready() {
    let m = md(2);
    let t = Target::from_md(&m).expect("target");
    let s = status_of(&m, &[assigned("b1", &t, "Ready", None), assigned("b2", &t, "Ready", None)]);
    assert_eq!((s.replicas, s.ready_replicas, s.observed_generation), (Some(2), Some(2), Some(3)));
    assert_eq!(cond(&s, "Ready"), ("True", "ReplicasReady", "2/2 replicas ready"));
    assert_eq!(cond(&s, "Progressing").0, "False");
    assert_eq!(cond(&s, "Degraded"), ("False", "AsRequested", "2/2 replicas ready"));
    assert_eq!(s.placements.len(), 2);
    assert!(s.conditions.iter().all(|c| c.observed_generation == Some(3)));
}

#[test]
fn partly_ready_is_ready_degraded_and_progressing() {
    let m = md(3);
    let t = Target::from_md(&m).expect("target");
    let s = status_of(
        &m,
        &[
            assigned("b1", &t, "Ready", None),
            assigned("b2", &t, "Ready", None),
            assigned("b3", &t, "Downloading", None),
        ],
    );
    assert_eq!(cond(&s, "Ready"), ("True", "ReplicasReady", "2/3 replicas ready"));
    assert_eq!(cond(&s, "Progressing"), ("True", "Downloading", "b3 Downloading 40%"));
    assert_eq!(cond(&s, "Degraded"), ("True", "ReplicasNotReady", "2/3 replicas ready: b3 Downloading 40%"));
}

#[test]
fn failed_replica_carries_the_board_message() {
    let m = md(1);
    let t = Target::from_md(&m).expect("target");
    let s = status_of(&m, &[assigned("b1", &t, "Failed", Some("sha256 mismatch"))]);
    assert_eq!(cond(&s, "Ready"), ("False", "NoReplicaReady", "0/1 replicas ready: b1: sha256 mismatch"));
    let loading = status_of(&m, &[assigned("b1", &t, "Loading", None)]);
    assert_eq!(cond(&loading, "Ready").2, "0/1 replicas ready: b1 Loading 40%", "the ratio once");
    assert_eq!(cond(&s, "Degraded"), ("True", "ReplicaFailed", "b1: sha256 mismatch"));
    assert_eq!(s.placements[0].phase, ModelPhase::Failed);
}

#[test]
fn not_enough_boards_is_actionable() {
    let m = md(2);
    let mut cordoned = board("b2");
    cordoned.spec.cordoned = true;
    let s = status_of(&m, &[board("b1"), cordoned]);
    assert_eq!(s.replicas, Some(1));
    let (status, reason, message) = cond(&s, "Degraded");
    assert_eq!((status, reason), ("True", "NotEnoughBoards"));
    assert_eq!(message, "placed 1 of 2 replicas: no other board has 1.2 GiB free: b2 cordoned");
    let p = &s.placements[0];
    assert_eq!((p.board.as_str(), p.phase), ("b1", ModelPhase::Pending));
    assert_eq!(p.message.as_deref(), Some("waiting for the agent on b1 to report"));
}

#[test]
fn zero_replicas_is_ready_and_cached() {
    let m = md(0);
    let t = Target::from_md(&m).expect("target");
    let s = status_of(&m, &[assigned("b1", &t, "Cached", None)]);
    assert_eq!((s.replicas, s.ready_replicas), (Some(0), Some(0)));
    assert_eq!(cond(&s, "Ready"), ("True", "ScaledToZero", "replicas is 0: cached on 1 boards, loaded on none"));
    assert_eq!(cond(&s, "Degraded").0, "False");
}

#[test]
fn draining_is_progress() {
    let m = md(1);
    let t = Target::from_md(&m).expect("target");
    let mut old = assigned("b1", &t, "Ready", None);
    old.spec.cordoned = true;
    let s = status_of(&m, &[old, board("b2")]);
    let (status, reason, message) = cond(&s, "Progressing");
    assert_eq!((status, reason), ("True", "Draining"));
    assert!(message.starts_with("leaving b1 (cordoned)"), "{message}");
    assert_eq!(s.ready_replicas, Some(1), "the leaving replica still serves");
}

#[test]
fn transition_time_is_kept_while_status_holds() {
    let mut m = md(1);
    let t = Target::from_md(&m).expect("target");
    let boards = [assigned("b1", &t, "Ready", None)];
    let first = status_of(&m, &boards);
    let mut older = first.clone();
    for c in &mut older.conditions {
        c.last_transition_time = Time(at(-500));
    }
    m.status = Some(older.clone());
    let again = status_of(&m, &boards);
    assert_eq!(again, older, "same status: nothing to write");
}

#[test]
fn events_only_on_transitions() {
    let m = md(1);
    let t = Target::from_md(&m).expect("target");
    let loading = status_of(&m, &[assigned("b1", &t, "Loading", None)]);
    let ready = status_of(&m, &[assigned("b1", &t, "Ready", None)]);
    let notes = transitions(None, &loading, &["b1".into()], &[]);
    assert_eq!(notes.iter().map(|n| n.reason).collect::<Vec<_>>(), ["Assigned"], "no NotReady for a new one");
    assert_eq!(notes[0].board.as_deref(), Some("b1"));
    let notes = transitions(Some(&loading), &ready, &[], &[]);
    assert_eq!(notes, [Note { warning: false, reason: "Ready", note: "1/1 replicas ready".into(), board: None }]);
    assert!(transitions(Some(&ready), &ready, &[], &[]).is_empty());
    let failed = status_of(&m, &[assigned("b1", &t, "Failed", Some("out of memory"))]);
    let reasons: Vec<_> = transitions(Some(&ready), &failed, &[], &[]).iter().map(|n| n.reason).collect();
    assert_eq!(reasons, ["NotReady", "ReplicaFailed"]);
}
