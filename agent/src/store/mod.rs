//! Model downloads and deletes for the models directory: the I/O under `models::Library`.
//!
//! A download goes to `<models-dir>/.partial/<sha256>.part`, resumes from there with an HTTP
//! `Range` request, is verified against the pinned sha256, fsynced, and renamed into place, so
//! a model file is either absent or complete and verified. Pulls of the same digest are
//! serialised; the second finds the file already there.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::{Stream, StreamExt};
use tokio::{fs, io::AsyncWriteExt, sync::Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(String),
    #[error("model '{0}' is not in the catalog")]
    NotFound(String),
    #[error("download failed: {0}")]
    Http(String),
    #[error("sha256 mismatch: expected {expected}, got {actual}")]
    Digest { expected: String, actual: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.display().to_string(), source }
}

/// What to download and where to put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullPlan {
    pub url: String,
    pub sha256: String,
    pub file_name: String,
}

/// Progress of one pull, in order; the stream ends after [`PullEvent::Success`] or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// Resolving what to fetch (Ollama: "pulling manifest").
    Resolving,
    Downloading {
        sha256: String,
        total: u64,
        completed: u64,
    },
    Verifying,
    /// Moving the verified file into place (Ollama: "writing manifest").
    Writing,
    Success,
}

/// Serialises pulls per digest.
pub type PullLocks = Mutex<HashMap<String, Arc<Mutex<()>>>>;

/// Runs a pull; the last item is `Ok(Success)` or an error.
pub fn pull(
    http: reqwest::Client,
    dir: PathBuf,
    plan: PullPlan,
    locks: Arc<PullLocks>,
) -> impl Stream<Item = Result<PullEvent, StoreError>> {
    async_stream::stream! {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<PullEvent, StoreError>>();
        let task = tokio::spawn(async move {
            let lock = Arc::clone(locks.lock().await.entry(plan.sha256.clone()).or_default());
            let _held = lock.lock().await;
            match download(&http, &dir, &plan, &tx).await {
                Ok(()) => {
                    let _ = tx.send(Ok(PullEvent::Success));
                }
                Err(e) => {
                    tracing::warn!(url = %plan.url, error = %e, "pull failed");
                    let _ = tx.send(Err(e));
                }
            }
        });
        while let Some(v) = rx.recv().await {
            yield v;
        }
        // The download runs to completion in its task even if the client leaves, so a pull
        // resumed later finds the most bytes.
        let _ = task.await;
    }
}

async fn download(
    http: &reqwest::Client,
    dir: &Path,
    plan: &PullPlan,
    tx: &tokio::sync::mpsc::UnboundedSender<Result<PullEvent, StoreError>>,
) -> Result<(), StoreError> {
    let send = |e: PullEvent| {
        let _ = tx.send(Ok(e));
    };
    send(PullEvent::Resolving);
    let target = dir.join(&plan.file_name);
    if fs::metadata(&target).await.is_ok() {
        if sha256_file(&target).await? == plan.sha256 {
            send(PullEvent::Verifying);
            return Ok(());
        }
        return Err(StoreError::Invalid(format!("{} exists with different content; delete it first", plan.file_name)));
    }
    let partial_dir = dir.join(".partial");
    fs::create_dir_all(&partial_dir).await.map_err(io("create", &partial_dir))?;
    let part = partial_dir.join(format!("{}.part", plan.sha256));
    let mut have = fs::metadata(&part).await.map(|m| m.len()).unwrap_or(0);
    let mut req = http.get(&plan.url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resp = req.send().await.map_err(|e| StoreError::Http(e.to_string()))?;
    let status = resp.status();
    if !(status.is_success()) {
        return Err(StoreError::Http(format!("{} answered {status}", plan.url)));
    }
    if status != reqwest::StatusCode::PARTIAL_CONTENT {
        have = 0; // the server ignored the range: start over
    }
    let total = have + resp.content_length().unwrap_or(0);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(have > 0)
        .truncate(have == 0)
        .open(&part)
        .await
        .map_err(io("open", &part))?;
    let mut done = have;
    let mut last_report = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StoreError::Http(e.to_string()))?;
        file.write_all(&chunk).await.map_err(io("write", &part))?;
        done += chunk.len() as u64;
        if done - last_report >= 4 << 20 || done == total {
            last_report = done;
            send(PullEvent::Downloading { sha256: plan.sha256.clone(), total, completed: done });
        }
    }
    file.flush().await.map_err(io("flush", &part))?;
    file.sync_all().await.map_err(io("fsync", &part))?;
    drop(file);
    send(PullEvent::Downloading { sha256: plan.sha256.clone(), total: total.max(done), completed: done });
    send(PullEvent::Verifying);
    let actual = sha256_file(&part).await?;
    if actual != plan.sha256 {
        // A corrupt partial must not poison the next attempt.
        let _ = fs::remove_file(&part).await;
        return Err(StoreError::Digest { expected: plan.sha256.clone(), actual });
    }
    send(PullEvent::Writing);
    fs::rename(&part, &target).await.map_err(io("rename", &target))?;
    if let Ok(d) = fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    Ok(())
}

/// The sha256 of a file, read in 1 MiB chunks (blocking; `models::digest` caches it).
pub fn sha256_blocking(path: &Path) -> std::io::Result<String> {
    use std::io::Read;

    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Hex sha256 of a file, hashed on a blocking thread.
pub async fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || sha256_blocking(&owned))
        .await
        .map_err(|e| StoreError::Io { op: "hash", path: path.display().to_string(), source: std::io::Error::other(e) })?
        .map_err(io("read", path))
}

/// Deletes a model file, refusing paths outside the models directory.
pub fn delete(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let dir_c = dir.canonicalize().map_err(io("resolve", dir))?;
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let parent_c = parent.canonicalize().map_err(io("resolve", &parent))?;
    if parent_c != dir_c {
        return Err(StoreError::Invalid(format!("{} is not in the models directory", path.display())));
    }
    std::fs::remove_file(path).map_err(io("remove", path))
}
