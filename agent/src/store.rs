//! Model downloads (`/api/pull`) and deletes for the models directory.
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
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::{
    fs,
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Mutex,
};

use crate::models::Catalog;

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

/// Serialises pulls per digest.
pub type PullLocks = Mutex<HashMap<String, Arc<Mutex<()>>>>;

fn valid_sha(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
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
pub fn plan_pull(
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

/// Runs a pull, yielding Ollama-style progress objects; the last is `{"status": "success"}` or
/// `{"error": …}`.
pub fn pull(http: reqwest::Client, dir: PathBuf, plan: PullPlan, locks: Arc<PullLocks>) -> impl Stream<Item = Value> {
    async_stream::stream! {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let task = tokio::spawn(async move {
            let lock = Arc::clone(locks.lock().await.entry(plan.sha256.clone()).or_default());
            let _held = lock.lock().await;
            match download(&http, &dir, &plan, &tx).await {
                Ok(()) => {
                    let _ = tx.send(json!({"status": "success"}));
                }
                Err(e) => {
                    tracing::warn!(url = %plan.url, error = %e, "pull failed");
                    let _ = tx.send(json!({"error": e.to_string()}));
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
    tx: &tokio::sync::mpsc::UnboundedSender<Value>,
) -> Result<(), StoreError> {
    let send = |v: Value| {
        let _ = tx.send(v);
    };
    send(json!({"status": "pulling manifest"}));
    let digest = format!("sha256:{}", plan.sha256);
    let target = dir.join(&plan.file_name);
    if fs::metadata(&target).await.is_ok() {
        if sha256_file(&target).await? == plan.sha256 {
            send(json!({"status": "verifying sha256 digest"}));
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
            send(
                json!({"status": format!("pulling {}", &plan.sha256[..12]), "digest": digest, "total": total, "completed": done}),
            );
        }
    }
    file.flush().await.map_err(io("flush", &part))?;
    file.sync_all().await.map_err(io("fsync", &part))?;
    drop(file);
    send(
        json!({"status": format!("pulling {}", &plan.sha256[..12]), "digest": digest, "total": total.max(done), "completed": done}),
    );
    send(json!({"status": "verifying sha256 digest"}));
    let actual = sha256_file(&part).await?;
    if actual != plan.sha256 {
        // A corrupt partial must not poison the next attempt.
        let _ = fs::remove_file(&part).await;
        return Err(StoreError::Digest { expected: plan.sha256.clone(), actual });
    }
    send(json!({"status": "writing manifest"}));
    fs::rename(&part, &target).await.map_err(io("rename", &target))?;
    if let Ok(d) = fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    Ok(())
}

/// Hex sha256 of a file, read in 1 MiB chunks.
pub async fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let mut f = fs::File::open(path).await.map_err(io("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await.map_err(io("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
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
