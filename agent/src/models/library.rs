//! The model library: the lifecycle of model files — pull, delete, rescan, and content digests —
//! in one service. HTTP handlers only translate its typed progress events ([`PullEvent`]) to
//! their API's shape; the scheduler is reached through [`Residency`] so a model is unloaded
//! before its file is deleted, without this module depending on the scheduler.
//!
//! ```text
//!  pull(name | url + sha256) ─► plan (catalog or URL) ─► BlobStore::fetch (pieces, resume, verify)
//!                                  ─► index.json: file name → blob ─► rescan ─► PullEvent::Success
//!  delete(name) ─► Residency::unload ─► index entry (and blob, if no other name uses it)
//!               or the dropped-in file (and its sidecar) ─► rescan
//!  fill_digests() ─► sha256 of dropped-in files without a known digest, cached beside each file
//! ```

use std::sync::Arc;

use futures::Stream;

use super::{Catalog, ModelEntry, Registry, digest};
pub use crate::store::PullEvent;
use crate::store::{self, BlobStore, IndexEntry, Source, StoreError, index::now_secs, valid_sha};

/// What the library needs of the scheduler: dropping a model from memory before its file goes.
pub trait Residency: Send + Sync {
    /// Unloads `name` now if idle, else when its last request ends; whether it was resident.
    fn unload(&self, name: &str) -> bool;
}

/// What to download and where to put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullPlan {
    pub url: String,
    pub sha256: String,
    pub file_name: String,
}

/// The model library over one registry and its store.
pub struct Library {
    registry: Arc<Registry>,
    store: Arc<BlobStore>,
    residency: Arc<dyn Residency>,
}

impl Library {
    pub fn new(registry: Arc<Registry>, store: Arc<BlobStore>, residency: Arc<dyn Residency>) -> Self {
        Self { registry, store, residency }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn store(&self) -> &Arc<BlobStore> {
        &self.store
    }

    /// Starts a pull of a catalog name, or of a URL (in `model` or `url`) with its sha256. A
    /// request that cannot be planned fails here, before any progress is sent. The download runs
    /// to completion in its own task even if the client leaves, so a later pull finds the most
    /// bytes (or the finished blob).
    pub fn pull(
        &self,
        model: &str,
        url: Option<&str>,
        sha256: Option<&str>,
    ) -> Result<impl Stream<Item = Result<PullEvent, StoreError>> + use<>, StoreError> {
        let plan = plan_pull(self.registry.catalog(), model, url, sha256)?;
        let store = Arc::clone(&self.store);
        let registry = Arc::clone(&self.registry);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<PullEvent, StoreError>>();
        tokio::spawn(async move {
            let send = |e| {
                let _ = tx.send(e);
            };
            send(Ok(PullEvent::Resolving));
            let r = pull_into(&store, &registry, &plan, &|e| send(Ok(e))).await;
            if let Err(e) = &r {
                tracing::warn!(url = %plan.url, error = %e, "pull failed");
            }
            send(r.map(|()| PullEvent::Success));
        });
        Ok(async_stream::stream! {
            while let Some(v) = rx.recv().await {
                yield v;
            }
        })
    }

    /// Unloads the model and deletes it: a pulled model's name (and its blob, unless another name
    /// or a cluster assignment uses it), or a dropped-in file and its cached digest.
    pub fn delete(&self, entry: &ModelEntry) -> Result<(), StoreError> {
        self.residency.unload(&entry.name);
        if entry.path.parent() == Some(self.store.blobs_dir().as_path()) {
            let sha = entry.sha256.clone().unwrap_or_default();
            let still_used = self.store.update_index(|idx| {
                idx.files.retain(|_, e| e.file_name != entry.file_name);
                idx.referenced(&sha)
            })?;
            if !still_used {
                self.store.remove_blob(&sha)?;
            }
        } else {
            store::delete(self.registry.dir(), &entry.path)?;
            digest::forget(&entry.path);
        }
        self.registry.rescan();
        Ok(())
    }

    /// Looks for files copied into the models directory.
    pub fn rescan(&self) {
        self.registry.rescan();
    }

    /// Computes and caches the digest of every scanned model file that has none yet, then
    /// rescans so entries carry it. Each file is hashed once: later scans read the sidecar.
    /// Blocking (reads whole files): run it on a blocking thread.
    pub fn fill_digests(&self) -> usize {
        let missing: Vec<_> = self.registry.list().into_iter().filter(|e| e.sha256.is_none()).collect();
        let mut done = 0;
        for e in &missing {
            match digest::compute(&e.path) {
                Ok(hex) => {
                    digest::remember(&e.path, &hex);
                    done += 1;
                }
                Err(err) => tracing::warn!(file = %e.path.display(), error = %err, "cannot hash model file"),
            }
        }
        if done > 0 {
            self.registry.rescan();
            tracing::info!(files = done, "model digests computed and cached");
        }
        done
    }
}

/// Fetches the plan's blob from its origin and names it in the index.
async fn pull_into(
    store: &BlobStore,
    registry: &Registry,
    plan: &PullPlan,
    send: &(dyn Fn(PullEvent) + Send + Sync),
) -> Result<(), StoreError> {
    // A dropped-in file of that name: the same bytes make the pull a no-op; other bytes are refused.
    let dropped = registry.dir().join(&plan.file_name);
    if dropped.is_file() {
        if store::sha256_file(&dropped).await? == plan.sha256 {
            send(PullEvent::Verifying);
            return Ok(());
        }
        return Err(StoreError::Invalid(format!("{} exists with different content; delete it first", plan.file_name)));
    }
    let sha = plan.sha256.clone();
    let last = std::sync::Mutex::new(0u64);
    let progress = |p: store::FetchProgress| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if p.completed - *last >= 4 << 20 || p.completed == p.total || *last == 0 {
            *last = p.completed.max(1);
            send(PullEvent::Downloading { sha256: sha.clone(), total: p.total, completed: p.completed });
        }
    };
    let path = store.fetch(&plan.sha256, None, &[Source::origin(&plan.url)], &progress).await?;
    send(PullEvent::Verifying);
    send(PullEvent::Writing);
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    store.update_index(|idx| {
        idx.files.insert(
            plan.file_name.clone(),
            IndexEntry { sha256: plan.sha256.clone(), size, file_name: plan.file_name.clone(), last_used: now_secs() },
        );
    })?;
    registry.rescan();
    Ok(())
}

/// Keeps the characters model names use (`a-z0-9._:-`); anything else becomes `_`.
fn safe_name(n: &str) -> String {
    n.trim_end_matches(":latest")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') { c } else { '_' })
        .collect()
}

fn valid_file_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('.')
        && !n.contains(['/', '\\', '\0'])
        && (n.ends_with(".gguf") || n.ends_with(".rkllm"))
}

/// Resolves a pull request: a catalog name, or a URL (in `model` or `url`) with its sha256.
pub(crate) fn plan_pull(
    catalog: &Catalog,
    model: &str,
    url: Option<&str>,
    sha256: Option<&str>,
) -> Result<PullPlan, StoreError> {
    let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
    let direct = url.filter(|u| is_url(u)).or(Some(model).filter(|m| is_url(m)));
    if let Some(u) = direct {
        let sha = sha256
            .map(|s| s.trim_start_matches("sha256:").to_ascii_lowercase())
            .filter(|s| valid_sha(s))
            .ok_or_else(|| StoreError::Invalid("a URL pull needs \"sha256\": 64 hex digits".into()))?;
        let from_url = u.split(['?', '#']).next().unwrap_or(u).rsplit('/').next().unwrap_or_default().to_owned();
        let ext = if from_url.ends_with(".rkllm") { "rkllm" } else { "gguf" };
        // `{"model": "<name>", "url": …}` stores the file under that name, so the model answers to it.
        let named = (url.is_some() && !is_url(model)).then(|| format!("{}.{ext}", safe_name(model)));
        let file_name = match named {
            Some(n) if valid_file_name(&n) => n,
            _ if valid_file_name(&from_url) => from_url,
            _ => format!("{}.{ext}", &sha[..12]),
        };
        return Ok(PullPlan { url: u.to_owned(), sha256: sha, file_name });
    }
    if let Some(u) = url {
        return Err(StoreError::Invalid(format!("url must be http(s), got {u:?}")));
    }
    let entry = catalog.by_name(model).ok_or_else(|| StoreError::NotFound(model.to_owned()))?;
    let file =
        entry.files.iter().find(|f| f.url.is_some() && f.known_sha256().is_some()).ok_or_else(|| {
            StoreError::Invalid(format!("the catalog has no verified download URL for '{}'", entry.name))
        })?;
    Ok(PullPlan {
        url: file.url.clone().unwrap_or_default(),
        sha256: file.known_sha256().unwrap_or_default().to_ascii_lowercase(),
        file_name: file.file.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_pulls_need_a_digest_and_get_a_safe_file_name() {
        let c = Catalog::default();
        let sha = "a".repeat(64);
        let p = plan_pull(&c, "http://h/x/m.gguf?sig=1", None, Some(&sha)).unwrap();
        assert_eq!(p.file_name, "m.gguf");
        let p = plan_pull(&c, "mine:v1", Some("https://h/download"), Some(&format!("sha256:{sha}"))).unwrap();
        assert_eq!(p.file_name, "mine:v1.gguf");
        let p = plan_pull(&c, "../../etc", Some("https://h/x.rkllm"), Some(&sha)).unwrap();
        assert_eq!(p.file_name, "x.rkllm", "a name that would be a hidden or escaping file is not used");
        let p = plan_pull(&c, "https://h/download", None, Some(&sha)).unwrap();
        assert_eq!(p.file_name, "aaaaaaaaaaaa.gguf");
        assert!(plan_pull(&c, "http://h/m.gguf", None, None).is_err());
        assert!(plan_pull(&c, "http://h/m.gguf", None, Some("xyz")).is_err());
        assert!(plan_pull(&c, "mine", Some("ftp://h/m.gguf"), Some(&sha)).is_err());
        assert!(matches!(plan_pull(&c, "nope", None, None), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn catalog_entries_without_urls_are_refused() {
        let c = Catalog::parse(crate::models::catalog::EMBEDDED).unwrap();
        let e = plan_pull(&c, "smollm2-135m-instruct", None, None).unwrap_err();
        assert!(e.to_string().contains("no verified download URL"));
    }

    #[test]
    fn file_names_cannot_escape() {
        assert!(!valid_file_name("../x.gguf"));
        assert!(!valid_file_name(".hidden.gguf"));
        assert!(!valid_file_name("x.bin"));
        assert!(valid_file_name("x.rkllm"));
    }
}
