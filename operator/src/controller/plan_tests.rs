//! Tests of `plan`: placement of a new deployment, stability, lease expiry, draining, rollout one
//! board at a time, scaling, `replicas: 0`, and the peers written.

use crds::{Board, BoardModel, ModelDeployment};
use serde_json::{Value, json};

use super::{
    super::boards::tests::{at, board, lease},
    *,
};

const SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA2: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn md(replicas: i32, extra: Value) -> ModelDeployment {
    let mut value = json!({
        "apiVersion": "rockchipllama.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": { "name": "m", "namespace": "ns", "generation": 1 },
        "spec": {
            "format": "gguf",
            "replicas": replicas,
            "source": { "url": "http://origin/m.gguf", "sha256": SHA, "sizeBytes": 1_i64 << 30 }
        }
    });
    if let (Some(spec), Value::Object(extra)) = (value["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    serde_json::from_value(value).expect("md")
}

fn target(md: &ModelDeployment) -> Target {
    Target::from_md(md).expect("target")
}

/// A board holding `t`'s entry (with `revision`) and reporting `phase` for it.
fn with_entry(mut b: Board, t: &Target, revision: &str, phase: &str) -> Board {
    let mut entry = t.entry.clone();
    entry.revision = Some(revision.to_owned());
    b.spec.models.push(entry);
    report(b, &t.key, revision, phase, SHA)
}

fn report(mut b: Board, key: &str, revision: &str, phase: &str, sha: &str) -> Board {
    if let Some(s) = b.status.as_mut() {
        s.models.retain(|m| m.key != key);
        s.models.push(
            serde_json::from_value(json!({
                "key": key, "sha256": sha, "phase": phase, "loaded": phase == "Ready", "revision": revision
            }))
            .expect("model"),
        );
    }
    b
}

fn run(t: &Target, boards: &[Board], now: i64) -> Plan {
    let leases: Vec<_> = boards
        .iter()
        .map(|b| if b.metadata.annotations.is_some() { lease(-100, 40) } else { lease(now - 1, 40) })
        .collect();
    let facts: Vec<_> = boards.iter().zip(leases).map(|(b, l)| BoardFacts::new(b, l, None, at(now))).collect();
    plan(t, &facts, 1)
}

/// Marks a board's lease stale in `run` (an annotation is the test's flag).
fn dead(mut b: Board) -> Board {
    b.metadata.annotations = Some(Default::default());
    b
}

fn boards_of(p: &Plan) -> Vec<&str> {
    p.assignments.iter().map(|a| a.board.as_str()).collect()
}

fn entry<'a>(p: &'a Plan, board: &str) -> &'a BoardModel {
    &p.assignments.iter().find(|a| a.board == board).expect("assigned").entry
}

#[test]
fn new_deployment_gets_a_chain() {
    let t = target(&md(2, json!({})));
    let p = run(&t, &[board("b1"), board("b2"), board("b3")], 0);
    assert_eq!(boards_of(&p), ["b1", "b2"]);
    assert_eq!(entry(&p, "b1").peers, Vec::<String>::new(), "first fetches from the origin");
    assert_eq!(entry(&p, "b2").peers, ["http://b1:8080"]);
    assert_eq!(entry(&p, "b1").key, "ns/m");
    assert_eq!(entry(&p, "b1").model, "m", "served name defaults to metadata.name");
    assert_eq!(entry(&p, "b1").desired, DesiredState::Loaded);
    assert!(p.removals.is_empty() && p.shortfall.is_none());
    assert_eq!(p.rollout, Rollout { updated: 2, total: 2 });
    assert_eq!(p.next_check, Some(at(39)));
}

#[test]
fn healthy_replicas_are_never_moved() {
    let t = target(&md(1, json!({})));
    let rev = t.revision().unwrap_or_default().to_owned();
    // b1 would be preferred now (it holds the blob), but b3 serves already.
    let b1 = report(board("b1"), "other/x", "r", "Cached", SHA);
    let p = run(&t, &[b1, board("b2"), with_entry(board("b3"), &t, &rev, "Downloading")], 0);
    assert_eq!(boards_of(&p), ["b3"]);
    assert!(p.removals.is_empty());
}

#[test]
fn expired_lease_moves_the_replica_and_nothing_duplicates() {
    let t = target(&md(1, json!({})));
    let rev = t.revision().unwrap_or_default().to_owned();
    let gone = dead(with_entry(board("b1"), &t, &rev, "Ready"));
    let p = run(&t, &[gone, board("b2")], 0);
    assert_eq!(p.removals, ["b1"]);
    assert_eq!(boards_of(&p), ["b2"]);
    // The board returns with its entry already removed: it stays without one.
    let p =
        run(&t, &[report(board("b1"), "ns/m", &rev, "Ready", SHA), with_entry(board("b2"), &t, &rev, "Loading")], 0);
    assert_eq!(boards_of(&p), ["b2"]);
}

#[test]
fn cordoned_board_is_drained_after_the_replacement_is_ready() {
    let t = target(&md(1, json!({})));
    let rev = t.revision().unwrap_or_default().to_owned();
    let mut old = with_entry(board("b1"), &t, &rev, "Ready");
    old.spec.cordoned = true;
    let p = run(&t, &[old.clone(), board("b2")], 0);
    assert_eq!(boards_of(&p), ["b1", "b2"], "keeps serving on b1 while b2 starts");
    assert_eq!(p.assignments[0].role, Role::Leaving);
    assert!(p.removals.is_empty());
    // b1 holds the file complete, so b2 fetches from it.
    assert_eq!(entry(&p, "b2").peers, ["http://b1:8080"]);
    let p = run(&t, &[old.clone(), with_entry(board("b2"), &t, &rev, "Loading")], 0);
    assert!(p.removals.is_empty(), "not ready yet");
    let p = run(&t, &[old, with_entry(board("b2"), &t, &rev, "Ready")], 0);
    assert_eq!(p.removals, ["b1"]);
    assert_eq!(boards_of(&p), ["b2"]);
}

#[test]
fn draining_agent_and_changed_selector_also_drain() {
    let t = target(&md(1, json!({ "socs": ["rk3566"] })));
    let rev = t.revision().unwrap_or_default().to_owned();
    let p = run(&t, &[with_entry(board("b1"), &t, &rev, "Ready")], 0);
    assert_eq!(p.assignments[0].role, Role::Leaving, "b1 is rk3588 now excluded by socs");
    assert!(p.shortfall.is_some());
}

#[test]
fn revision_rolls_out_one_board_at_a_time() {
    let t = target(&md(3, json!({})));
    let new = t.revision().unwrap_or_default().to_owned();
    let boards = |states: [(&str, &str); 3]| -> Vec<Board> {
        ["b1", "b2", "b3"].iter().zip(states).map(|(n, (rev, phase))| with_entry(board(n), &t, rev, phase)).collect()
    };
    // All three serve "old": only b1 takes the new revision.
    let p = run(&t, &boards([("old", "Ready"), ("old", "Ready"), ("old", "Ready")]), 0);
    let revs: Vec<_> = p.assignments.iter().map(|a| a.entry.revision.clone().unwrap_or_default()).collect();
    assert_eq!(revs, [new.clone(), "old".into(), "old".into()]);
    assert_eq!(p.rollout, Rollout { updated: 1, total: 3 });
    // b1 is reloading: nothing else changes.
    let p = run(&t, &boards([(&new, "Loading"), ("old", "Ready"), ("old", "Ready")]), 0);
    assert_eq!(p.rollout.updated, 1);
    // b1 is Ready at the new revision: b2 next.
    let p = run(&t, &boards([(&new, "Ready"), ("old", "Ready"), ("old", "Ready")]), 0);
    assert_eq!(entry(&p, "b2").revision.as_deref(), Some(new.as_str()));
    assert_eq!(entry(&p, "b3").revision.as_deref(), Some("old"));
}

#[test]
fn not_serving_boards_take_the_new_revision_at_once() {
    let t = target(&md(2, json!({})));
    let new = t.revision().unwrap_or_default().to_owned();
    // b2 failed on the old spec (the reason for the change): it is updated at once, and b1
    // waits until b2 is Ready.
    let p = run(&t, &[with_entry(board("b1"), &t, "old", "Ready"), with_entry(board("b2"), &t, "old", "Failed")], 0);
    assert_eq!(entry(&p, "b1").revision.as_deref(), Some("old"));
    assert_eq!(entry(&p, "b2").revision.as_deref(), Some(new.as_str()));
}

#[test]
fn single_replica_updates_at_once() {
    let t = target(&md(1, json!({})));
    let p = run(&t, &[with_entry(board("b1"), &t, "old", "Ready")], 0);
    assert_eq!(entry(&p, "b1").revision, t.entry.revision);
}

#[test]
fn two_replicas_need_another_ready_one() {
    let t = target(&md(2, json!({})));
    // Only one board exists: the second replica cannot be placed, so b1 keeps the old revision.
    let p = run(&t, &[with_entry(board("b1"), &t, "old", "Ready")], 0);
    assert_eq!(entry(&p, "b1").revision.as_deref(), Some("old"));
    assert!(p.shortfall.is_some());
}

#[test]
fn zero_replicas_cache_everywhere() {
    let t = target(&md(0, json!({})));
    let rev = t.revision().unwrap_or_default().to_owned();
    let mut b1 = with_entry(board("b1"), &t, &rev, "Ready");
    b1.spec.models[0].desired = DesiredState::Loaded;
    let b2 = with_entry(board("b2"), &t, "old", "Ready");
    let p = run(&t, &[b1, b2, board("b3")], 0);
    assert_eq!(boards_of(&p), ["b1", "b2"], "kept, nothing new placed");
    assert!(p.assignments.iter().all(|a| a.entry.desired == DesiredState::Cached));
    assert!(p.assignments.iter().all(|a| a.entry.revision == t.entry.revision));
    assert!(p.removals.is_empty() && p.shortfall.is_none());
}

#[test]
fn scale_down_removes_not_ready_replicas_first() {
    let t = target(&md(1, json!({})));
    let rev = t.revision().unwrap_or_default().to_owned();
    let p = run(&t, &[with_entry(board("b1"), &t, &rev, "Downloading"), with_entry(board("b2"), &t, &rev, "Ready")], 0);
    assert_eq!(boards_of(&p), ["b2"]);
    assert_eq!(p.removals, ["b1"]);
}

#[test]
fn scale_up_lists_holders_as_peers() {
    let t = target(&md(3, json!({})));
    let rev = t.revision().unwrap_or_default().to_owned();
    let p = run(
        &t,
        &[with_entry(board("b1"), &t, &rev, "Ready"), with_entry(board("b2"), &t, &rev, "Ready"), board("b3")],
        0,
    );
    assert_eq!(entry(&p, "b3").peers, ["http://b2:8080", "http://b1:8080"]);
    // Holders keep the peers they had (empty here): no rewrite of finished boards.
    assert_eq!(entry(&p, "b1").peers, Vec::<String>::new());
}

#[test]
fn boards_outside_the_deployment_that_hold_the_file_are_sources() {
    let t = target(&md(1, json!({ "socs": ["rk3566"] })));
    let mut small = board("small");
    if let Some(s) = small.status.as_mut() {
        s.soc = Some("rk3566".into());
    }
    let holder = report(board("big"), "other/x", "r", "Ready", SHA);
    let p = run(&t, &[holder, small], 0);
    assert_eq!(boards_of(&p), ["small"]);
    assert_eq!(entry(&p, "small").peers, ["http://big:8080"]);
}

#[test]
fn other_blobs_are_not_sources() {
    let t = target(&md(1, json!({})));
    let holder = report(board("b0"), "other/x", "r", "Ready", SHA2);
    let mut cordoned = holder.clone();
    cordoned.spec.cordoned = true;
    cordoned.metadata.name = Some("b0".into());
    let p = run(&t, &[cordoned, board("b1")], 0);
    assert_eq!(entry(&p, "b1").peers, Vec::<String>::new());
}

#[test]
fn revision_covers_what_needs_a_reload_only() {
    let base = target(&md(1, json!({}))).entry.revision;
    let same = |extra: Value| target(&md(3, extra)).entry.revision;
    assert_eq!(same(json!({ "aliases": ["x"], "model": "other" })), base);
    assert_eq!(same(json!({ "placement": { "spreadBy": "zone" } })), base);
    assert_ne!(same(json!({ "runtime": { "maxContextLen": 8192 } })), base);
    assert_ne!(same(json!({ "thinking": false })), base);
    assert_ne!(same(json!({ "sampling": { "temperature": 0.5 } })), base);
    assert_eq!(base.as_ref().map(String::len), Some(16));
}

#[test]
fn missing_namespace_is_an_error() {
    let mut m = md(1, json!({}));
    m.metadata.namespace = None;
    assert!(matches!(Target::from_md(&m), Err(Error::MissingField("metadata.namespace"))));
}

#[test]
fn writes_only_what_differs() {
    let t = target(&md(2, json!({})));
    let rev = t.revision().unwrap_or_default().to_owned();
    let boards = [with_entry(board("b1"), &t, &rev, "Ready"), board("b2")];
    let facts: Vec<_> = boards.iter().map(|b| BoardFacts::new(b, lease(0, 40), None, at(1))).collect();
    let p = plan(&t, &facts, 1);
    let w = writes(&p, &facts, &t.key);
    assert_eq!(w.added, ["b2"]);
    assert_eq!(w.apply.len(), 1, "b1 already has its entry: {w:?}");
    assert!(w.remove.is_empty());
}
