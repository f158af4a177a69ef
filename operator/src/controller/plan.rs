//! The desired Board entries of one ModelDeployment: which replicas stay, which go, where new
//! ones go, which boards take a new revision now, and whom each board fetches the file from.
//! Pure, so the controller's decisions are tested without an API server; `reconcile` only
//! compares this plan with the Boards and writes the difference.
//!
//! Rules, in order:
//!
//! 1. An entry on a board whose Lease is not fresh is removed at once (its replica is placed
//!    elsewhere; when the board returns it gets nothing back, so nothing is duplicated).
//! 2. An entry on a board that is cordoned, draining, or no longer matches `socs`/`nodeSelector`
//!    is *leaving*: it stays until as many replicas as asked are Ready elsewhere, then goes.
//! 3. Healthy entries are kept (a healthy replica is never moved). Beyond `replicas`, the extra
//!    ones are removed, not-Ready ones first.
//! 4. New replicas fill the gap (`placement::choose`).
//! 5. A new revision goes to new and not-serving boards at once, and to a serving board only
//!    when every other board of the deployment is Ready at its revision (and, for 2 or more
//!    replicas, at least one other is Ready): one board at a time.
//! 6. `replicas: 0` keeps every live entry with desired `Cached`.

use std::collections::BTreeMap;

use crds::{BoardModel, DesiredState, ModelDeployment};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    boards::{BoardFacts, Liveness},
    distribution::{self, BlobState, MAX_PEERS, Member},
    error::Error,
    placement::{self, Request, Shortfall},
};

/// What a ModelDeployment asks for, ready to compare with Boards.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// `<namespace>/<name>`.
    pub key: String,
    /// spec.replicas, or the autoscaler's count while spec.autoscaling is set
    /// (`autoscale::effective_replicas`; negative values, which admission refuses, count as 0).
    pub replicas: usize,
    /// The entry every assigned board should end up with, without `peers`.
    pub entry: BoardModel,
    /// spec.socs.
    pub socs: Vec<String>,
    /// spec.placement.nodeSelector.
    pub node_selector: BTreeMap<String, String>,
    /// spec.placement.spreadBy.
    pub spread_by: Option<String>,
}

impl Target {
    /// Reads a ModelDeployment.
    pub fn from_md(md: &ModelDeployment) -> Result<Self, Error> {
        let name = md.metadata.name.as_deref().ok_or(Error::MissingField("metadata.name"))?;
        let namespace = md.metadata.namespace.as_deref().ok_or(Error::MissingField("metadata.namespace"))?;
        let spec = &md.spec;
        let replicas = usize::try_from(super::autoscale::effective_replicas(md)).unwrap_or(0);
        let entry = BoardModel {
            key: format!("{namespace}/{name}"),
            model: spec.model.clone().unwrap_or_else(|| name.to_owned()),
            aliases: spec.aliases.clone(),
            source: spec.source.clone(),
            peers: Vec::new(),
            format: spec.format,
            desired: if replicas == 0 { DesiredState::Cached } else { DesiredState::Loaded },
            runtime: spec.runtime.clone(),
            sampling: spec.sampling.clone(),
            chat_template: spec.chat_template.clone(),
            thinking: spec.thinking,
            prompt_caches: spec.prompt_caches.clone(),
            revision: Some(revision(md)?),
        };
        let placement = spec.placement.clone().unwrap_or_default();
        Ok(Self {
            key: entry.key.clone(),
            replicas,
            entry,
            socs: spec.socs.clone(),
            node_selector: placement.node_selector,
            spread_by: placement.spread_by,
        })
    }

    /// The placement request of this deployment.
    pub fn request(&self) -> Request<'_> {
        Request {
            key: &self.key,
            socs: &self.socs,
            node_selector: &self.node_selector,
            spread_by: self.spread_by.as_deref(),
            sha256: self.entry.source.sha256.as_deref(),
            size_bytes: self.entry.source.size_bytes,
            rkllm: self.entry.format == crds::ModelFormat::Rkllm,
        }
    }

    /// The revision every board should reach.
    pub fn revision(&self) -> Option<&str> {
        self.entry.revision.as_deref()
    }
}

/// Hex characters kept of the revision digest: 64 bits tell revisions of one deployment apart.
const REVISION_HEX: usize = 16;

/// Digest of everything that needs a reload when it changes: a short hex SHA-256 of the
/// canonical JSON (keys sorted, no spaces) of source, format, runtime, sampling, chatTemplate,
/// thinking and promptCaches. Canonical by construction, so it does not depend on whether
/// serde_json keeps insertion order in a given build.
pub fn revision(md: &ModelDeployment) -> Result<String, Error> {
    let spec = &md.spec;
    let value = serde_json::json!({
        "source": spec.source,
        "format": spec.format,
        "runtime": spec.runtime,
        "sampling": spec.sampling,
        "chatTemplate": spec.chat_template,
        "thinking": spec.thinking,
        "promptCaches": spec.prompt_caches,
    });
    let mut text = String::new();
    canonical_json(&value, &mut text)?;
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = hex::encode(digest);
    hex.truncate(REVISION_HEX);
    Ok(hex)
}

/// Writes `value` as JSON with object keys sorted.
fn canonical_json(value: &Value, out: &mut String) -> Result<(), Error> {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).map_err(Error::Json)?);
                out.push(':');
                canonical_json(&map[key], out)?;
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out)?;
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).map_err(Error::Json)?),
    }
    Ok(())
}

/// Whether an assigned board serves the deployment or is on its way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Kept or newly placed.
    Serving,
    /// Cordoned, draining or no longer matching: removed once replacements are Ready.
    Leaving,
}

/// The entry one board should have.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// Board name.
    pub board: String,
    /// The whole entry, peers included.
    pub entry: BoardModel,
    /// Serving or leaving.
    pub role: Role,
}

/// Progress of a revision change over the serving boards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// Serving boards whose entry has the target revision.
    pub updated: usize,
    /// Serving boards.
    pub total: usize,
}

/// Everything the controller should make true for one deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Boards that keep or get an entry, by name.
    pub assignments: Vec<Assignment>,
    /// Boards whose entry must go.
    pub removals: Vec<String>,
    /// Set when fewer boards qualified than replicas asked for.
    pub shortfall: Option<Shortfall>,
    /// Boards updated to the target revision so far.
    pub rollout: Rollout,
    /// The first instant an assigned board's Lease expires if not renewed: reconcile then.
    pub next_check: Option<Timestamp>,
}

/// Plans one deployment over `boards` (fan-out: see `distribution`).
pub fn plan(target: &Target, boards: &[BoardFacts<'_>], fan_out: usize) -> Plan {
    let key = target.key.as_str();
    let req = target.request();
    let want = target.replicas;
    let mut removals = Vec::new();
    let mut kept: Vec<&BoardFacts<'_>> = Vec::new();
    let mut leaving: Vec<&BoardFacts<'_>> = Vec::new();
    for board in boards.iter().filter(|b| b.entry(key).is_some()) {
        if !board.liveness.is_fresh() {
            removals.push(board.name.to_owned());
        } else if board.cordoned || board.draining || placement::eligible(&req, board).is_err() {
            leaving.push(board);
        } else {
            kept.push(board);
        }
    }
    if want > 0 && kept.len() > want {
        // Keep the best: Ready at their revision, then holding the file, then by name.
        kept.sort_by_key(|b| (!b.ready_at_entry(key), !req.sha256.is_some_and(|s| b.holds_blob(s)), b.name));
        removals.extend(kept.split_off(want).into_iter().map(|b| b.name.to_owned()));
    }
    let kept_names: Vec<&str> = kept.iter().map(|b| b.name).collect();
    let occupied: Vec<&str> = boards.iter().filter(|b| b.entry(key).is_some()).map(|b| b.name).collect();
    let choice = placement::choose(&req, boards, &kept_names, &occupied, want.saturating_sub(kept.len()));
    let chosen: Vec<&BoardFacts<'_>> =
        choice.chosen.iter().filter_map(|name| boards.iter().find(|b| b.name == name)).collect();
    let serving: Vec<&BoardFacts<'_>> = {
        let mut s: Vec<_> = kept.iter().chain(&chosen).copied().collect();
        s.sort_by_key(|b| b.name);
        s
    };

    // Rule 2: leaving entries go once enough replicas are Ready elsewhere (at once for 0).
    let ready_elsewhere = serving.iter().filter(|b| b.ready_at_entry(key)).count();
    let mut assignments = Vec::new();
    for board in &leaving {
        if want == 0 || ready_elsewhere >= want {
            removals.push(board.name.to_owned());
        } else if let Some(entry) = board.entry(key) {
            assignments.push(Assignment { board: board.name.to_owned(), entry: entry.clone(), role: Role::Leaving });
        }
    }

    // Rule 5: which serving boards take the target revision now.
    let target_rev = target.revision();
    let at_target = |b: &BoardFacts<'_>| b.entry(key).is_some_and(|e| e.revision.as_deref() == target_rev);
    let mut update: Vec<&str> = Vec::new();
    let mut serving_old: Vec<&BoardFacts<'_>> = Vec::new();
    for board in &serving {
        if at_target(board) || board.entry(key).is_none() || want == 0 || !board.ready_at_entry(key) {
            update.push(board.name);
        } else {
            serving_old.push(board);
        }
    }
    if let Some(first) = serving_old.first() {
        let others_ready = serving
            .iter()
            .filter(|b| b.name != first.name)
            .all(|b| if at_target(b) { b.ready_at(key, target_rev) } else { b.ready_at_entry(key) });
        let others = serving.len() - 1;
        if others_ready && (want < 2 || others >= 1) {
            update.push(first.name);
        }
    }

    // Distribution among the boards that will fetch the target file, plus a few live boards
    // outside the deployment that already hold it.
    let sha = req.sha256;
    let state = |b: &BoardFacts<'_>| match sha {
        Some(sha) if b.holds_blob(sha) => BlobState::Complete,
        Some(sha) if b.fetching_blob(sha) => BlobState::InProgress,
        _ => BlobState::Missing,
    };
    let mut members: Vec<Member<'_>> = serving
        .iter()
        .filter(|b| update.contains(&b.name))
        .map(|b| Member { board: b.name, endpoint: b.endpoint, state: state(b) })
        .collect();
    if let Some(sha) = sha {
        // Boards kept on the old revision (or leaving) may hold the same file: sources too.
        members.extend(
            serving_old
                .iter()
                .chain(&leaving)
                .filter(|b| !update.contains(&b.name) && b.holds_blob(sha))
                .map(|b| Member { board: b.name, endpoint: b.endpoint, state: BlobState::Complete }),
        );
        members.extend(
            boards
                .iter()
                .filter(|b| b.entry(key).is_none() && !chosen.iter().any(|c| c.name == b.name))
                .filter(|b| b.liveness.is_fresh() && b.endpoint.is_some() && b.holds_blob(sha))
                .take(MAX_PEERS)
                .map(|b| Member { board: b.name, endpoint: b.endpoint, state: BlobState::Complete }),
        );
    }
    let peers = if sha.is_some() { distribution::peers(&members, fan_out) } else { BTreeMap::new() };

    let mut updated = 0;
    for board in &serving {
        let current = board.entry(key);
        let entry = if update.contains(&board.name) {
            updated += 1;
            let mut entry = target.entry.clone();
            entry.peers = match current {
                // A board that already has the file keeps the peers it had: no rewrite when
                // others move along the line.
                Some(cur) if cur.revision == entry.revision && state(board) == BlobState::Complete => cur.peers.clone(),
                _ => peers.get(board.name).cloned().unwrap_or_default(),
            };
            entry
        } else if let Some(cur) = current {
            cur.clone()
        } else {
            continue;
        };
        assignments.push(Assignment { board: board.name.to_owned(), entry, role: Role::Serving });
    }
    assignments.sort_by(|a, b| a.board.cmp(&b.board));
    removals.sort();
    let next_check = serving
        .iter()
        .chain(&leaving)
        .filter_map(|b| match b.liveness {
            Liveness::Fresh { until } => Some(until),
            _ => None,
        })
        .min();
    Plan {
        assignments,
        removals,
        shortfall: choice.shortfall,
        rollout: Rollout { updated, total: serving.len() },
        next_check,
    }
}

/// The API writes that make the Boards match a plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Writes {
    /// Boards whose entry must be (re)applied, with the entry.
    pub apply: Vec<(String, BoardModel)>,
    /// Boards whose entry must go.
    pub remove: Vec<String>,
    /// Boards that get an entry for the first time (for Events).
    pub added: Vec<String>,
}

/// Compares a plan with the Boards' current entries: only differences become writes, so a
/// steady cluster costs no API calls.
pub fn writes(plan: &Plan, boards: &[BoardFacts<'_>], key: &str) -> Writes {
    let current = |name: &str| boards.iter().find(|b| b.name == name).and_then(|b| b.entry(key));
    let mut out = Writes::default();
    for a in &plan.assignments {
        match current(&a.board) {
            Some(cur) if *cur == a.entry => {}
            Some(_) => out.apply.push((a.board.clone(), a.entry.clone())),
            None => {
                out.added.push(a.board.clone());
                out.apply.push((a.board.clone(), a.entry.clone()));
            }
        }
    }
    out.remove = plan.removals.iter().filter(|b| current(b).is_some()).cloned().collect();
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
