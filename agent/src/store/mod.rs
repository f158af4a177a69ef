//! The model store: content-addressed blobs under the models directory, the downloads that fill
//! it, and reads of blobs that are still arriving (so boards relay a file to each other while it
//! downloads).
//!
//! ```text
//!  <models-dir>/
//!    *.gguf, *.rkllm            files a user dropped in (the single-board habit); scanned as is
//!    index.json                 name index: file names pulled with /api/pull, cluster keys → sha256
//!    blobs/sha256-<hex>         complete, verified blobs (written once, renamed into place)
//!    blobs/sha256-<hex>.partial bytes arriving, always a prefix of the blob
//! ```
//!
//! A blob becomes visible under its final name only after its whole-file sha256 matched and it
//! was fsynced, so an engine never sees a partial or unverified file. `fetch` does the download
//! (pieces, Range resume, sources in order, retries); `read` streams a blob, waiting for bytes
//! that have not arrived yet.

mod fetch;
pub mod index;
mod read;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex as StdMutex},
};

pub use fetch::{FetchOptions, FetchProgress, Source, SourceKind, piece_size};
pub use index::{Index, IndexEntry};
pub use read::{BlobRead, ReadError};
use tokio::sync::{Mutex, Semaphore, watch};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(String),
    #[error("model '{0}' is not in the catalog")]
    NotFound(String),
    #[error("download failed: {0}")]
    Http(String),
    #[error("sha256 mismatch: expected {expected}, got {actual}; the downloaded bytes were deleted")]
    Digest { expected: String, actual: String },
    #[error(
        "not enough disk space for sha256-{sha256}: {need} more bytes needed, {free} free after the \
         {reserve}-byte reserve on the store's filesystem"
    )]
    NoSpace { sha256: String, need: u64, free: u64, reserve: u64 },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.display().to_string(), source }
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

/// A blob being written now: readers wait on `written` for more bytes.
#[derive(Debug)]
pub(crate) struct Arrival {
    pub total: u64,
    /// Bytes on disk so far; the sender is dropped when the download ends either way.
    pub written: watch::Receiver<u64>,
}

/// Limits of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Bytes kept free on the store's filesystem: a download that would eat into it is refused
    /// before it starts.
    pub reserve: u64,
    /// Downloads running at once; more wait.
    pub max_downloads: usize,
    /// Blob uploads to peers at once; more get 503 and try another source.
    pub max_uploads: usize,
    /// Download behaviour (stall timeout, retries).
    pub fetch: FetchOptions,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { reserve: 256 << 20, max_downloads: 2, max_uploads: 4, fetch: FetchOptions::default() }
    }
}

/// The content-addressed store of one models directory.
pub struct BlobStore {
    dir: PathBuf,
    opts: StoreOptions,
    http: reqwest::Client,
    /// One download per digest at a time; the second caller finds the blob complete.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    arrivals: StdMutex<HashMap<String, Arc<Arrival>>>,
    downloads: Semaphore,
    uploads: Arc<Semaphore>,
    index: StdMutex<()>,
}

/// A valid lowercase hex sha256.
pub fn valid_sha(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl BlobStore {
    pub fn new(dir: PathBuf, http: reqwest::Client, opts: StoreOptions) -> Self {
        let uploads = Arc::new(Semaphore::new(opts.max_uploads.max(1)));
        let downloads = Semaphore::new(opts.max_downloads.max(1));
        Self {
            dir,
            opts,
            http,
            locks: Mutex::default(),
            arrivals: StdMutex::default(),
            downloads,
            uploads,
            index: StdMutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs")
    }

    /// Where the complete blob lives (whether or not it exists).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.blobs_dir().join(format!("sha256-{sha256}"))
    }

    pub fn partial_path(&self, sha256: &str) -> PathBuf {
        self.blobs_dir().join(format!("sha256-{sha256}.partial"))
    }

    /// The complete, verified blob, if present.
    pub fn complete(&self, sha256: &str) -> Option<PathBuf> {
        let p = self.blob_path(sha256);
        p.is_file().then_some(p)
    }

    /// Bytes of `sha256` on disk now (complete or partial) and whether it is complete.
    pub fn have(&self, sha256: &str) -> (u64, bool) {
        if let Ok(m) = std::fs::metadata(self.blob_path(sha256)) {
            return (m.len(), true);
        }
        (std::fs::metadata(self.partial_path(sha256)).map_or(0, |m| m.len()), false)
    }

    pub(crate) fn arrival(&self, sha256: &str) -> Option<Arc<Arrival>> {
        self.arrivals.lock().unwrap_or_else(|e| e.into_inner()).get(sha256).cloned()
    }

    pub(crate) fn set_arrival(&self, sha256: &str, a: Option<Arc<Arrival>>) {
        let mut m = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        match a {
            Some(a) => m.insert(sha256.to_owned(), a),
            None => m.remove(sha256),
        };
    }

    /// The uploads semaphore: blob reads for peers hold one permit each.
    pub fn upload_slots(&self) -> &Arc<Semaphore> {
        &self.uploads
    }

    /// Free bytes on the store's filesystem (statvfs, what an unprivileged writer may use).
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        std::fs::create_dir_all(self.blobs_dir())?;
        let s = rustix::fs::statvfs(self.blobs_dir()).map_err(std::io::Error::from)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// Refuses a download of `need` more bytes when it would eat into the reserve.
    pub fn admit(&self, sha256: &str, need: u64) -> Result<(), StoreError> {
        let free = self.free_bytes().map_err(io("statvfs", &self.dir))?;
        let reserve = self.opts.reserve;
        if need.saturating_add(reserve) > free {
            return Err(StoreError::NoSpace {
                sha256: sha256.to_owned(),
                need,
                free: free.saturating_sub(reserve),
                reserve,
            });
        }
        Ok(())
    }

    /// Reads the name index (empty when absent or unreadable, which is logged).
    pub fn index(&self) -> Index {
        Index::read(&self.dir)
    }

    /// Changes the name index under one lock and writes it atomically.
    pub fn update_index<R>(&self, f: impl FnOnce(&mut Index) -> R) -> Result<R, StoreError> {
        let _held = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let mut idx = Index::read(&self.dir);
        let r = f(&mut idx);
        idx.write(&self.dir).map_err(io("write", &self.dir.join(index::FILE)))?;
        Ok(r)
    }

    /// Total bytes of complete blobs, and each one with its size.
    pub fn blobs(&self) -> Vec<(String, u64)> {
        let Ok(rd) = std::fs::read_dir(self.blobs_dir()) else { return Vec::new() };
        rd.filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let sha = name.strip_prefix("sha256-")?;
                valid_sha(sha).then(|| (sha.to_owned(), e.metadata().map_or(0, |m| m.len())))
            })
            .collect()
    }

    /// Removes a blob and any partial of it; refuses while it is being downloaded.
    pub fn remove_blob(&self, sha256: &str) -> Result<(), StoreError> {
        if self.arrival(sha256).is_some() {
            return Err(StoreError::Invalid(format!("sha256-{sha256} is being downloaded")));
        }
        for p in [self.blob_path(sha256), self.partial_path(sha256)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", &p)(e)),
            }
        }
        Ok(())
    }
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

/// Deletes a dropped-in model file, refusing paths outside the models directory.
pub fn delete(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let dir_c = dir.canonicalize().map_err(io("resolve", dir))?;
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let parent_c = parent.canonicalize().map_err(io("resolve", &parent))?;
    if parent_c != dir_c {
        return Err(StoreError::Invalid(format!("{} is not in the models directory", path.display())));
    }
    std::fs::remove_file(path).map_err(io("remove", path))
}

/// fsyncs a directory so a rename in it survives a crash.
pub(crate) async fn sync_dir(dir: &Path) {
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
}
