//! The routing table, pure: from the ModelDeployments and Boards the gateway's reflectors hold,
//! which boards serve which name right now. A board serves a deployment's model when its lease
//! is fresh, its agent is Ready (not draining), it advertises an endpoint, and its
//! `status.models[key]` is Ready and loaded. Names are the served name and every alias; a name
//! claimed by two deployments goes to the older one (by namespace/name order when equally old),
//! and the clash is reported so the gateway can log it.

use std::collections::BTreeMap;

use crds::{Board, ModelDeployment, ModelPhase, RoutingStrategy};

/// One board serving one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub board: String,
    /// The agent's base URL.
    pub endpoint: String,
    /// Sequences it generates at once for this model (the entry's `nBatch`).
    pub slots: u32,
}

/// Where requests for one deployment go.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// `<namespace>/<name>` of the ModelDeployment.
    pub key: String,
    /// The name the boards serve it under (what the gateway sends as `model`).
    pub model: String,
    pub strategy: RoutingStrategy,
    pub prefix_chars: usize,
    /// Replicas the controller places (`controller::autoscale::effective_replicas`: the
    /// autoscaler's decision with autoscaling, else `spec.replicas`); 0 means scaled to zero.
    pub desired: i32,
    /// `spec.autoscaling` is set: with no Ready replica, requests are held while one starts
    /// (`dispatch::acquire`) instead of refused.
    pub autoscaled: bool,
    /// When the deployment was created, Unix seconds (OpenAI's `created` of the model).
    pub created: i64,
    pub replicas: Vec<Replica>,
}

/// Every route by every name it answers to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub routes: BTreeMap<String, Route>,
    /// Names claimed by more than one deployment: (name, winner key, loser key).
    pub clashes: Vec<(String, String, String)>,
}

/// What the gateway knows about a board beyond its object: whether its Lease is fresh.
pub struct BoardView<'a> {
    pub board: &'a Board,
    pub lease_fresh: bool,
}

fn key_of(md: &ModelDeployment) -> String {
    format!(
        "{}/{}",
        md.metadata.namespace.as_deref().unwrap_or_default(),
        md.metadata.name.as_deref().unwrap_or_default()
    )
}

fn agent_ready(b: &Board) -> bool {
    b.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready")).is_some_and(|c| c.status == "True")
}

/// Builds the table.
pub fn build(deployments: &[ModelDeployment], boards: &[BoardView<'_>]) -> Table {
    let mut mds: Vec<&ModelDeployment> =
        deployments.iter().filter(|m| m.metadata.deletion_timestamp.is_none()).collect();
    // Older first, so an older deployment keeps a name a newer one also claims.
    mds.sort_by(|a, b| {
        let t = |m: &ModelDeployment| m.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b)).then_with(|| key_of(a).cmp(&key_of(b)))
    });
    let mut table = Table::default();
    for md in mds {
        let Some(model) = md.served_name() else { continue };
        let key = key_of(md);
        let replicas = boards
            .iter()
            .filter(|v| v.lease_fresh && agent_ready(v.board))
            .filter_map(|v| {
                let b = v.board;
                let status = b.status.as_ref()?;
                let endpoint = status.endpoint.clone()?;
                let ready = status.models.iter().any(|m| m.key == key && m.phase == ModelPhase::Ready && m.loaded);
                let entry = b.spec.models.iter().find(|e| e.key == key)?;
                ready.then(|| Replica {
                    board: b.metadata.name.clone().unwrap_or_default(),
                    endpoint,
                    slots: u32::try_from(entry.runtime.n_batch).unwrap_or(1).max(1),
                })
            })
            .collect();
        let route = Route {
            key: key.clone(),
            model: model.to_owned(),
            strategy: md.spec.routing.strategy,
            prefix_chars: usize::try_from(md.spec.routing.prefix_chars).unwrap_or(1).max(1),
            desired: crate::controller::autoscale::effective_replicas(md),
            autoscaled: md.spec.autoscaling.is_some(),
            created: md.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
            replicas,
        };
        for name in std::iter::once(model).chain(md.spec.aliases.iter().map(String::as_str)) {
            let name = normalise(name);
            match table.routes.get(&name) {
                Some(existing) => table.clashes.push((name, existing.key.clone(), key.clone())),
                None => {
                    table.routes.insert(name, route.clone());
                }
            }
        }
    }
    table
}

/// Names compare as Ollama clients send them: `name:latest` is `name`.
pub fn normalise(name: &str) -> String {
    name.strip_suffix(":latest").unwrap_or(name).to_owned()
}

impl Table {
    /// The route for a requested model name.
    pub fn lookup(&self, name: &str) -> Option<&Route> {
        self.routes.get(&normalise(name))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn md(name: &str, created: &str, spec: serde_json::Value) -> ModelDeployment {
        let mut spec = spec;
        spec["source"] = json!({"url": "http://o/m.gguf", "sha256": "a".repeat(64)});
        spec["format"] = json!("gguf");
        serde_json::from_value(json!({
            "apiVersion": "rockchipllama.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
            "spec": spec,
        }))
        .unwrap()
    }

    fn board(name: &str, ready: &str, models: serde_json::Value, n_batch: i32) -> Board {
        let entries: Vec<serde_json::Value> = models
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                json!({"key": m["key"], "model": "x", "format": "gguf",
                            "source": {"url": "http://o/m.gguf"}, "runtime": {"nBatch": n_batch}})
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "rockchipllama.io/v1alpha1", "kind": "Board",
            "metadata": {"name": name},
            "spec": {"models": entries},
            "status": {"endpoint": format!("http://{name}:8080"), "models": models,
                       "conditions": [{"type": "Ready", "status": ready, "reason": "r", "message": "",
                                       "lastTransitionTime": "2026-11-27T00:00:00Z"}]},
        }))
        .unwrap()
    }

    #[test]
    fn only_ready_loaded_replicas_on_live_boards_are_routed_to() {
        let m =
            md("smol", "2026-11-27T00:00:00Z", json!({"model": "smollm2", "aliases": ["smol:135m"], "replicas": 3}));
        let ready = json!([{"key": "ns/smol", "phase": "Ready", "loaded": true}]);
        let loading = json!([{"key": "ns/smol", "phase": "Loading", "loaded": false}]);
        let boards = [
            board("b1", "True", ready.clone(), 2),
            board("b2", "True", loading, 1),
            board("b3", "False", ready.clone(), 1), // draining
            board("b4", "True", ready, 1),          // lease expired below
        ];
        let views: Vec<BoardView<'_>> =
            boards.iter().enumerate().map(|(i, b)| BoardView { board: b, lease_fresh: i != 3 }).collect();
        let t = build(&[m], &views);
        let r = t.lookup("smollm2").unwrap();
        assert_eq!(r.replicas, [Replica { board: "b1".into(), endpoint: "http://b1:8080".into(), slots: 2 }]);
        assert_eq!(t.lookup("smol:135m").unwrap().key, "ns/smol", "aliases route too");
        assert_eq!(t.lookup("smollm2:latest").unwrap().key, "ns/smol", ":latest is the bare name");
        assert!(t.lookup("other").is_none());
        assert_eq!(r.desired, 3);
        assert!(!r.autoscaled);
    }

    #[test]
    fn an_autoscaled_deployment_is_marked_and_its_desired_count_is_the_autoscalers() {
        let mut m = md(
            "auto",
            "2026-11-27T00:00:00Z",
            json!({"model": "auto", "replicas": 2, "autoscaling": {"minReplicas": 0, "maxReplicas": 3}}),
        );
        let t = build(std::slice::from_ref(&m), &[]);
        let r = t.lookup("auto").unwrap();
        assert!(r.autoscaled && r.replicas.is_empty());
        assert_eq!(r.desired, 2, "no decision yet: spec.replicas");
        m.status = Some(serde_json::from_value(json!({"autoscaling": {"desiredReplicas": 0}})).unwrap());
        assert_eq!(build(&[m], &[]).lookup("auto").unwrap().desired, 0);
    }

    #[test]
    fn a_name_claimed_twice_goes_to_the_older_deployment() {
        let old = md("a", "2026-11-01T00:00:00Z", json!({"model": "shared"}));
        let new = md("b", "2026-11-20T00:00:00Z", json!({"model": "b-model", "aliases": ["shared"]}));
        let t = build(&[new, old], &[]);
        assert_eq!(t.lookup("shared").unwrap().key, "ns/a");
        assert_eq!(t.lookup("b-model").unwrap().key, "ns/b");
        assert_eq!(t.clashes, [("shared".to_owned(), "ns/a".to_owned(), "ns/b".to_owned())]);
    }
}
