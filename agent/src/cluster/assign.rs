//! Serving what the Board's spec assigns: one worker per assigned model fetches its blob (peers
//! first, then the origin), names it in the store index, registers it under the assignment's
//! model name and aliases with the assignment's settings, and loads it when `desired: Loaded`.
//! A model no longer assigned is unloaded and its blob kept, then evicted least recently used
//! beyond `--store-budget`.
//!
//! A worker is keyed by the ModelDeployment key and restarted when the entry changes (anything
//! but its peer list), so a new revision reloads the model with the new settings. After an agent
//! restart the same workers find verified blobs complete (no download) and partial ones resumed.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use crds::{BoardModel, BoardModelStatus, DesiredState, ModelFormat, ModelPhase};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Parts;
use crate::{
    keepalive::KeepAlive,
    models::{ModelEntry, describe},
    settings::ModelSettings,
    store::{FetchProgress, IndexEntry, Source, StoreError, index::now_secs, valid_sha},
};

/// State of every assigned or cached model, as the Board status reports it.
#[derive(Default)]
pub struct ModelStates {
    inner: Mutex<BTreeMap<String, BoardModelStatus>>,
    /// The name each key is served under (for the status page; the Board status has keys only).
    names: Mutex<BTreeMap<String, String>>,
    /// Fired on every change; the Board writer coalesces them.
    pub changed: Notify,
}

impl ModelStates {
    fn update(&self, key: &str, f: impl FnOnce(&mut BoardModelStatus)) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let s = m.entry(key.to_owned()).or_insert_with(|| BoardModelStatus {
            key: key.to_owned(),
            sha256: None,
            phase: ModelPhase::Pending,
            progress: None,
            loaded: false,
            bytes: None,
            message: None,
            revision: None,
        });
        let before = s.clone();
        f(s);
        // `loaded` means in memory and serving: only ever with phase Ready.
        if s.phase != ModelPhase::Ready {
            s.loaded = false;
        }
        if *s != before {
            drop(m);
            self.changed.notify_one();
        }
    }

    fn remove(&self, key: &str) {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        if self.inner.lock().unwrap_or_else(|e| e.into_inner()).remove(key).is_some() {
            self.changed.notify_one();
        }
    }

    /// Every model's state, by key.
    pub fn snapshot(&self) -> Vec<BoardModelStatus> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    fn set_name(&self, key: &str, model: &str) {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_owned(), model.to_owned());
    }

    /// The name the model of `key` is served under, once its worker started.
    pub fn name_of(&self, key: &str) -> Option<String> {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }
}

struct Worker {
    /// The entry without its peers: a change restarts the worker.
    signature: String,
    /// Name the model is served under, to unload it when the assignment goes.
    model: String,
    cancel: CancellationToken,
}

/// Reconciles the assigned models with what the agent holds.
pub struct Reconciler {
    parts: Parts,
    states: Arc<ModelStates>,
    budget: Option<u64>,
    workers: Mutex<HashMap<String, Worker>>,
}

/// Why a worker stopped trying (until its entry changes) or will retry.
enum Failure {
    /// Retrying cannot help: a digest mismatch, invalid settings, a load the engine refused.
    Final(String),
    /// Try again after a back-off: network trouble, no disk space yet, a busy engine.
    Retry(String),
}

fn signature(m: &BoardModel) -> String {
    let mut m = m.clone();
    m.peers.clear();
    serde_json::to_string(&m).unwrap_or_default()
}

/// The file name a blob is described by: the URL's, when it names a file of the right format,
/// else `<model>.<format>`.
fn file_name_of(m: &BoardModel) -> String {
    let ext = m.format.as_str();
    let last = m.source.url.split(['?', '#']).next().unwrap_or_default().rsplit('/').next().unwrap_or_default();
    if last.ends_with(&format!(".{ext}")) && !last.starts_with('.') {
        return last.to_owned();
    }
    let safe: String = m
        .model
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    format!("{safe}.{ext}")
}

impl Reconciler {
    pub fn new(parts: Parts, states: Arc<ModelStates>, budget: Option<u64>) -> Arc<Self> {
        Arc::new(Self { parts, states, budget, workers: Mutex::default() })
    }

    /// Makes the workers match `spec` (the Board's spec.models).
    pub fn apply(self: &Arc<Self>, spec: &[BoardModel], cancel: &CancellationToken) {
        let wanted: HashMap<&str, &BoardModel> = spec.iter().map(|m| (m.key.as_str(), m)).collect();
        let mut gone = Vec::new();
        {
            let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            workers.retain(|key, w| {
                let keep = wanted.get(key.as_str()).is_some_and(|m| signature(m) == w.signature);
                if !keep {
                    w.cancel.cancel();
                    if !wanted.contains_key(key.as_str()) {
                        gone.push((key.clone(), w.model.clone()));
                    }
                }
                keep
            });
            for m in spec {
                if workers.contains_key(&m.key) {
                    continue;
                }
                let token = cancel.child_token();
                self.states.set_name(&m.key, &m.model);
                workers.insert(
                    m.key.clone(),
                    Worker { signature: signature(m), model: m.model.clone(), cancel: token.clone() },
                );
                let me = Arc::clone(self);
                let m = m.clone();
                tokio::spawn(async move { me.work(m, token).await });
            }
        }
        for (key, model) in gone {
            self.unassign(&key, &model);
        }
        self.report_cached(&wanted.keys().copied().collect());
        self.evict(spec);
    }

    /// A model left the spec: unload it, stop serving it, keep its blob (reported Cached).
    fn unassign(&self, key: &str, model: &str) {
        tracing::info!(key, model, "model no longer assigned; unloading, keeping the blob cached");
        self.parts.sched.unload(model);
        self.parts.registry.remove(model);
        let store = self.parts.library.store();
        let _ = store.update_index(|idx| {
            if let Some(e) = idx.cluster.get_mut(key) {
                e.last_used = now_secs();
            }
        });
    }

    /// Unassigned blobs still in the store are reported as Cached (so the controller prefers
    /// this board when it needs them again); keys with nothing left are dropped from status.
    fn report_cached(&self, assigned: &HashSet<&str>) {
        let store = self.parts.library.store();
        let idx = store.index();
        for (key, e) in &idx.cluster {
            if assigned.contains(key.as_str()) {
                continue;
            }
            if store.complete(&e.sha256).is_some() {
                self.states.update(key, |s| {
                    s.sha256 = Some(e.sha256.clone());
                    s.phase = ModelPhase::Cached;
                    s.loaded = false;
                    s.progress = None;
                    s.bytes = Some(e.size as i64);
                    s.message = Some("not assigned; kept in the store".into());
                });
            } else {
                self.states.remove(key);
            }
        }
        let known: Vec<String> = self.states.snapshot().into_iter().map(|s| s.key).collect();
        for key in known {
            if !assigned.contains(key.as_str()) && !idx.cluster.contains_key(&key) {
                self.states.remove(&key);
            }
        }
    }

    /// Deletes unassigned blobs, least recently used first, until the store fits its budget.
    fn evict(&self, spec: &[BoardModel]) {
        let Some(budget) = self.budget else { return };
        let store = self.parts.library.store();
        let keep: HashSet<String> = spec.iter().filter_map(|m| m.source.sha256.clone()).collect();
        let idx = store.index();
        let victims = idx.evictions(&store.blobs(), budget, &keep);
        for sha in &victims {
            match store.remove_blob(sha) {
                Ok(()) => tracing::info!(blob = %sha, budget, "evicted an unassigned blob beyond the store budget"),
                Err(e) => tracing::warn!(blob = %sha, error = %e, "cannot evict blob"),
            }
        }
        if !victims.is_empty() {
            let gone: HashSet<&String> = victims.iter().collect();
            let _ = store.update_index(|idx| idx.cluster.retain(|_, e| !gone.contains(&e.sha256)));
            let assigned: HashSet<&str> = spec.iter().map(|m| m.key.as_str()).collect();
            self.report_cached(&assigned);
        }
    }

    /// One assigned model, until its entry changes or goes.
    async fn work(self: Arc<Self>, m: BoardModel, cancel: CancellationToken) {
        let key = m.key.clone();
        let mut backoff = Duration::from_secs(2);
        loop {
            let outcome = tokio::select! {
                () = cancel.cancelled() => return,
                r = self.serve_model(&m) => r,
            };
            match outcome {
                Ok(()) => break,
                Err(Failure::Final(msg)) => {
                    tracing::warn!(key, error = %msg, "assigned model failed; waiting for a spec change");
                    self.fail(&key, &msg);
                    return;
                }
                Err(Failure::Retry(msg)) => {
                    tracing::warn!(key, error = %msg, retry_in_s = backoff.as_secs(), "assigned model failed; retrying");
                    self.fail(&key, &format!("{msg} (retrying in {} s)", backoff.as_secs()));
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(120));
                }
            }
        }
        // Loaded: keep it resident (reload after an eviction by another load).
        if m.desired != DesiredState::Loaded {
            return;
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            let resident = self.parts.sched.residents().iter().any(|r| r.entry.name == m.model);
            if !resident {
                tracing::info!(key, model = %m.model, "assigned model is not resident any more; loading it again");
                if let Err(Failure::Final(msg) | Failure::Retry(msg)) = self.load(&m).await {
                    self.fail(&key, &msg);
                }
            }
        }
    }

    fn fail(&self, key: &str, msg: &str) {
        self.states.update(key, |s| {
            s.phase = ModelPhase::Failed;
            s.loaded = false;
            s.progress = None;
            s.message = Some(msg.to_owned());
        });
    }

    async fn serve_model(&self, m: &BoardModel) -> Result<(), Failure> {
        let key = &m.key;
        self.states.update(key, |s| {
            s.phase = ModelPhase::Pending;
            s.revision = m.revision.clone();
            s.message = None;
        });
        let sha = self.digest_of(m).await?;
        let store = self.parts.library.store();
        let size = m.source.size_bytes.and_then(|s| u64::try_from(s).ok());
        if store.complete(&sha).is_none() {
            let (have, _) = store.have(&sha);
            self.states.update(key, |s| {
                s.sha256 = Some(sha.clone());
                s.phase = ModelPhase::Downloading;
                s.bytes = Some(have as i64);
                s.progress = size.filter(|&t| t > 0).map(|t| have as f64 / t as f64);
            });
            let mut sources: Vec<Source> = m.peers.iter().map(|p| Source::peer(p, &sha)).collect();
            sources.push(Source::origin(&m.source.url));
            let states = &self.states;
            let progress = |p: FetchProgress| {
                states.update(key, |s| {
                    s.bytes = Some(p.completed as i64);
                    // Two decimals: status changes (and writes) stay few.
                    s.progress = (p.total > 0).then(|| ((p.completed as f64 / p.total as f64) * 100.0).floor() / 100.0);
                });
            };
            tracing::info!(key, blob = %sha, sources = sources.len(), "fetching assigned model");
            store.fetch(&sha, size, &sources, &progress).await.map_err(|e| match e {
                StoreError::Digest { .. } | StoreError::Invalid(_) => Failure::Final(e.to_string()),
                _ => Failure::Retry(e.to_string()),
            })?;
        }
        let bytes = std::fs::metadata(store.blob_path(&sha)).map_or(0, |md| md.len());
        let file_name = file_name_of(m);
        store
            .update_index(|idx| {
                idx.cluster.insert(
                    key.clone(),
                    IndexEntry {
                        sha256: sha.clone(),
                        size: bytes,
                        file_name: file_name.clone(),
                        last_used: now_secs(),
                    },
                );
            })
            .map_err(|e| Failure::Retry(e.to_string()))?;
        self.states.update(key, |s| {
            s.sha256 = Some(sha.clone());
            s.phase = ModelPhase::Cached;
            s.bytes = Some(bytes as i64);
            s.progress = None;
            s.message = None;
        });
        match m.desired {
            DesiredState::Cached => {
                // Cached only: not served, not resident.
                self.parts.sched.unload(&m.model);
                self.parts.registry.remove(&m.model);
                Ok(())
            }
            DesiredState::Loaded => self.load(m).await,
        }
    }

    /// The blob's digest: the entry's, or for a `file://` source without one, the file's.
    async fn digest_of(&self, m: &BoardModel) -> Result<String, Failure> {
        if let Some(s) = m.source.sha256.as_deref() {
            return if valid_sha(s) {
                Ok(s.to_owned())
            } else {
                Err(Failure::Final(format!("source.sha256 {s:?} is not 64 lowercase hex characters")))
            };
        }
        let Some(path) = m.source.url.strip_prefix("file://") else {
            return Err(Failure::Final("source.sha256 is required for a network URL".into()));
        };
        crate::store::sha256_file(std::path::Path::new(path)).await.map_err(|e| Failure::Retry(e.to_string()))
    }

    /// Registers the model under its assignment's names and settings and loads it.
    async fn load(&self, m: &BoardModel) -> Result<(), Failure> {
        let key = &m.key;
        let settings = ModelSettings::from_board_model(m).map_err(|e| Failure::Final(e.to_string()))?;
        let store = self.parts.library.store();
        let sha = self.digest_of(m).await?;
        let path = store.blob_path(&sha);
        let reg = &self.parts.registry;
        let entry: ModelEntry = describe(&path, &file_name_of(m), reg.catalog(), reg.config())
            .ok_or_else(|| Failure::Final(format!("{} is not a readable {} file", path.display(), m.format.as_str())))?
            .assigned(&m.model, &m.aliases, settings, reg.catalog());
        if (entry.format == crate::models::Format::Rkllm) != (m.format == ModelFormat::Rkllm) {
            return Err(Failure::Final(format!("the file is not {}", m.format.as_str())));
        }
        // Loads run when a worker starts (a new or changed entry) or after an eviction: a model
        // still resident under this name has older settings, so it goes first.
        if self.parts.sched.residents().iter().any(|r| r.entry.name == m.model) {
            self.parts.sched.unload(&m.model);
            for _ in 0..600 {
                if !self.parts.sched.residents().iter().any(|r| r.entry.name == m.model) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let entry = reg.insert(entry);
        self.states.update(key, |s| {
            s.phase = ModelPhase::Loading;
            s.message = None;
        });
        tracing::info!(key, model = %m.model, "loading assigned model");
        match self.parts.serve.load(&entry, Some(KeepAlive::Forever)).await {
            Ok(_) => {
                self.states.update(key, |s| {
                    s.phase = ModelPhase::Ready;
                    s.loaded = true;
                    s.revision = m.revision.clone();
                    s.message = None;
                });
                Ok(())
            }
            Err(e) => {
                let msg = format!("load failed: {e}");
                // The engine said no (bad parameters, a file for another SoC): retrying will not help.
                if matches!(e, crate::serve::ServeError::Engine(crate::engine::EngineError::Load { .. })) {
                    Err(Failure::Final(msg))
                } else {
                    Err(Failure::Retry(msg))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str, format: ModelFormat) -> BoardModel {
        serde_json::from_value(serde_json::json!({
            "key": "ns/m", "model": "my model", "format": format, "source": { "url": url },
        }))
        .unwrap()
    }

    #[test]
    fn file_names_follow_the_url_or_the_model() {
        assert_eq!(file_name_of(&entry("http://o/x/SmolLM2.Q8.gguf?sig=1", ModelFormat::Gguf)), "SmolLM2.Q8.gguf");
        assert_eq!(file_name_of(&entry("http://o/blob/abc", ModelFormat::Rkllm)), "my_model.rkllm");
        assert_eq!(file_name_of(&entry("http://o/x.gguf", ModelFormat::Rkllm)), "my_model.rkllm");
    }

    #[test]
    fn peers_do_not_restart_a_worker() {
        let a = entry("http://o/x.gguf", ModelFormat::Gguf);
        let mut b = a.clone();
        b.peers = vec!["http://p:1".into()];
        assert_eq!(signature(&a), signature(&b));
        b.revision = Some("2".into());
        assert_ne!(signature(&a), signature(&b));
    }
}
