//! Downloading a blob into the store: in pieces, from an ordered list of sources (peers first,
//! then the origin), resuming at the current offset whenever a source fails or stalls.
//!
//! Pieces are fetched in order and appended, so the partial file is always a prefix of the blob:
//! that is what lets this board serve the blob onward while it is still arriving (a pipeline of
//! boards), and what lets one streaming sha256 cover the whole file. Each piece goes to the first
//! source not cooling down after a failure, so a slow or dead peer is replaced at the current
//! offset by the next peer or the origin, and taken back once its back-off has passed. The
//! whole-file digest is checked before the blob becomes visible; a mismatch deletes the bytes,
//! and if peers supplied any of them the blob is fetched once more from the origin alone.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::{
    fs,
    io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt},
    sync::watch,
};

use super::{Arrival, BlobStore, StoreError, io, sync_dir};

/// Where bytes can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Another board's blob endpoint (sent the cluster token).
    Peer,
    /// The file's origin: `http(s)://` or `file:///`.
    Origin,
}

/// One source of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub url: String,
    pub kind: SourceKind,
}

impl Source {
    /// The blob endpoint of a peer agent at `endpoint` (its base URL).
    pub fn peer(endpoint: &str, sha256: &str) -> Self {
        Self {
            url: format!("{}/internal/v1/blobs/sha256-{sha256}", endpoint.trim_end_matches('/')),
            kind: SourceKind::Peer,
        }
    }

    pub fn origin(url: &str) -> Self {
        Self { url: url.to_owned(), kind: SourceKind::Origin }
    }
}

/// How downloads behave.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// A source that sends nothing for this long is abandoned at the current offset.
    pub stall: Duration,
    /// Consecutive failed attempts without a new byte before the download gives up.
    pub max_failures: u32,
    /// Longest back-off before a failed source is tried again.
    pub backoff_max: Duration,
    /// Sent as a bearer token to peers.
    pub token: Option<String>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self { stall: Duration::from_secs(10), max_failures: 12, backoff_max: Duration::from_secs(5), token: None }
    }
}

/// Progress of a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchProgress {
    pub total: u64,
    pub completed: u64,
    /// URL of the source of the latest bytes.
    pub source: String,
}

/// Piece size for a blob of `total` bytes: about 500 pieces, a power of two from 4 to 64 MiB
/// (the rule Dragonfly uses): big enough that per-request overhead vanishes, small enough that
/// a failover loses little.
pub fn piece_size(total: u64) -> u64 {
    const MIN: u64 = 4 << 20;
    const MAX: u64 = 64 << 20;
    (total / 500).max(1).next_power_of_two().clamp(MIN, MAX)
}

/// State of one download in progress.
struct Transfer<'a> {
    store: &'a BlobStore,
    sha256: &'a str,
    total: u64,
    file: fs::File,
    hasher: Sha256,
    have: u64,
    written: watch::Sender<u64>,
    from_peers: bool,
    progress: &'a (dyn Fn(FetchProgress) + Send + Sync),
}

impl BlobStore {
    /// Makes sure the complete, verified blob `sha256` is in the store, fetching it from
    /// `sources` in order of preference; returns its path. `size`, when known, lets the disk
    /// check run before any request.
    pub async fn fetch(
        &self,
        sha256: &str,
        size: Option<u64>,
        sources: &[Source],
        progress: &(dyn Fn(FetchProgress) + Send + Sync),
    ) -> Result<PathBuf, StoreError> {
        let lock = Arc::clone(self.locks.lock().await.entry(sha256.to_owned()).or_default());
        let _held = lock.lock().await;
        if let Some(p) = self.complete(sha256) {
            return Ok(p);
        }
        let _permit = self.downloads.acquire().await.map_err(|_| StoreError::Invalid("store closed".into()))?;
        let result = self.fetch_locked(sha256, size, sources, progress).await;
        if result.is_err() {
            self.set_arrival(sha256, None);
        }
        result
    }

    async fn fetch_locked(
        &self,
        sha256: &str,
        size: Option<u64>,
        sources: &[Source],
        progress: &(dyn Fn(FetchProgress) + Send + Sync),
    ) -> Result<PathBuf, StoreError> {
        if sources.is_empty() {
            return Err(StoreError::Invalid(format!("no source for sha256-{sha256}")));
        }
        let total = match size {
            Some(s) => s,
            None => self.probe_size(sources).await?,
        };
        let dir = self.blobs_dir();
        fs::create_dir_all(&dir).await.map_err(io("create", &dir))?;
        let part = self.partial_path(sha256);
        let mut have = fs::metadata(&part).await.map_or(0, |m| m.len());
        if have > total {
            have = 0; // not a prefix of this blob
        }
        if let Err(e) = self.admit(sha256, total - have) {
            let _ = fs::remove_file(&part).await;
            return Err(e);
        }
        let mut file = fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&part)
            .await
            .map_err(io("open", &part))?;
        file.set_len(have).await.map_err(io("truncate", &part))?;
        // The streaming digest covers the bytes already there (a resumed download) first.
        let mut hasher = Sha256::new();
        if have > 0 {
            let mut buf = vec![0u8; 1 << 20];
            let mut left = have;
            while left > 0 {
                let n = file.read(&mut buf[..left.min(1 << 20) as usize]).await.map_err(io("read", &part))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            tracing::info!(blob = %sha256, resumed_at = have, total, "resuming a partial download");
        }
        file.seek(std::io::SeekFrom::Start(have)).await.map_err(io("seek", &part))?;
        let (tx, rx) = watch::channel(have);
        self.set_arrival(sha256, Some(Arc::new(Arrival { total, written: rx })));
        let mut t =
            Transfer { store: self, sha256, total, file, hasher, have, written: tx, from_peers: false, progress };
        let outcome = t.run(sources).await;
        let Transfer { file, hasher, from_peers, written, .. } = t;
        if let Err(e) = outcome {
            // Keep the prefix for a resume, unless the disk filled up (then free it).
            if matches!(&e, StoreError::Io { source, .. } if source.raw_os_error() == Some(28)) {
                let _ = fs::remove_file(&part).await;
            }
            return Err(e);
        }
        file.sync_all().await.map_err(io("fsync", &part))?;
        drop(file);
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            let _ = fs::remove_file(&part).await;
            drop(written);
            self.set_arrival(sha256, None);
            tracing::warn!(blob = %sha256, %actual, from_peers, "downloaded bytes do not match the digest; deleted");
            let origins: Vec<Source> = sources.iter().filter(|s| s.kind == SourceKind::Origin).cloned().collect();
            if from_peers && !origins.is_empty() {
                tracing::info!(blob = %sha256, "fetching once more from the origin only");
                return Box::pin(self.fetch_locked(sha256, Some(total), &origins, progress)).await;
            }
            return Err(StoreError::Digest { expected: sha256.to_owned(), actual });
        }
        let target = self.blob_path(sha256);
        fs::rename(&part, &target).await.map_err(io("rename", &target))?;
        sync_dir(&dir).await;
        // Readers waiting on `written` see the sender go and find the blob complete.
        drop(written);
        self.set_arrival(sha256, None);
        Ok(target)
    }

    /// The blob's size from the first source that says (HEAD, or the file's length).
    async fn probe_size(&self, sources: &[Source]) -> Result<u64, StoreError> {
        let mut last = String::new();
        for s in sources {
            if let Some(path) = s.url.strip_prefix("file://") {
                match fs::metadata(path).await {
                    Ok(m) => return Ok(m.len()),
                    Err(e) => last = format!("{}: {e}", s.url),
                }
                continue;
            }
            let mut req = self.http.head(&s.url).timeout(self.opts.fetch.stall);
            if let (SourceKind::Peer, Some(t)) = (s.kind, &self.opts.fetch.token) {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    if let Some(n) =
                        r.headers().get(reqwest::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok())
                    {
                        return Ok(n);
                    }
                    last = format!("{} sent no Content-Length", s.url);
                }
                Ok(r) => last = format!("{} answered {}", s.url, r.status()),
                Err(e) => last = format!("{}: {e}", s.url),
            }
        }
        Err(StoreError::Http(format!("cannot learn the size of the file: {last}")))
    }
}

impl Transfer<'_> {
    async fn run(&mut self, sources: &[Source]) -> Result<(), StoreError> {
        let piece = piece_size(self.total);
        let opts = &self.store.opts.fetch;
        let mut ready_at = vec![Instant::now(); sources.len()];
        let mut failures = vec![0u32; sources.len()];
        let mut in_a_row = 0u32;
        // A peer the controller named may not have started its own download yet (404): it is
        // waited for a little before the origin is asked, so the file still crosses the uplink once.
        let mut not_yet = vec![0u32; sources.len()];
        while self.have < self.total {
            let now = Instant::now();
            let Some(i) = (0..sources.len()).find(|&i| ready_at[i] <= now) else {
                let next = ready_at.iter().min().copied().unwrap_or(now);
                tokio::time::sleep_until(next.into()).await;
                continue;
            };
            let src = &sources[i];
            let end = (self.have + piece).min(self.total);
            let before = self.have;
            let r = if src.url.starts_with("file://") {
                self.from_file(src, end).await
            } else {
                self.from_http(src, end, opts).await
            };
            if src.kind == SourceKind::Peer && self.have > before {
                self.from_peers = true;
            }
            match r {
                Ok(()) => {
                    failures[i] = 0;
                    in_a_row = 0;
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::NotYet) if not_yet[i] < PEER_WAIT_TRIES => {
                    not_yet[i] += 1;
                    tokio::time::sleep(PEER_WAIT_STEP).await;
                }
                Err(Attempt::NotYet) => {
                    failures[i] += 1;
                    in_a_row += 1;
                    ready_at[i] = Instant::now() + opts.backoff_max;
                    tracing::info!(blob = %self.sha256, source = %src.url, "peer does not have the blob; using the next source");
                }
                Err(Attempt::Retry(why)) => {
                    // A source that made progress before failing (a cut connection) is retried
                    // at once; one that gives nothing backs off exponentially.
                    if self.have > before {
                        failures[i] = 0;
                        in_a_row = 0;
                    } else {
                        failures[i] += 1;
                        in_a_row += 1;
                    }
                    let backoff = Duration::from_millis(250u64 << failures[i].min(8)).min(opts.backoff_max);
                    ready_at[i] = Instant::now() + backoff;
                    tracing::warn!(blob = %self.sha256, source = %src.url, offset = self.have, error = %why,
                                   retry_in_ms = backoff.as_millis() as u64, "source failed; continuing from the next one");
                    if in_a_row >= opts.max_failures {
                        return Err(StoreError::Http(format!(
                            "gave up after {in_a_row} failed attempts in a row; last: {}: {why}",
                            src.url
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    async fn append(&mut self, data: &[u8], src: &Source) -> Result<(), Attempt> {
        let part = self.store.partial_path(self.sha256);
        self.file.write_all(data).await.map_err(|e| Attempt::Fatal(io("write", &part)(e)))?;
        // tokio's File finishes writes in the background: flush so the bytes are in the file
        // before readers of the arriving blob are told they are.
        self.file.flush().await.map_err(|e| Attempt::Fatal(io("write", &part)(e)))?;
        self.hasher.update(data);
        self.have += data.len() as u64;
        self.written.send_replace(self.have);
        (self.progress)(FetchProgress { total: self.total, completed: self.have, source: src.url.clone() });
        Ok(())
    }

    async fn from_file(&mut self, src: &Source, end: u64) -> Result<(), Attempt> {
        let path = src.url.trim_start_matches("file://");
        let mut f = fs::File::open(path).await.map_err(|e| Attempt::Retry(e.to_string()))?;
        f.seek(std::io::SeekFrom::Start(self.have)).await.map_err(|e| Attempt::Retry(e.to_string()))?;
        let mut buf = vec![0u8; 1 << 20];
        while self.have < end {
            let want = (end - self.have).min(buf.len() as u64) as usize;
            let n = f.read(&mut buf[..want]).await.map_err(|e| Attempt::Retry(e.to_string()))?;
            if n == 0 {
                return Err(Attempt::Retry(format!("{path} is shorter than {} bytes", self.total)));
            }
            let chunk = buf[..n].to_vec();
            self.append(&chunk, src).await?;
        }
        Ok(())
    }

    async fn from_http(&mut self, src: &Source, end: u64, opts: &FetchOptions) -> Result<(), Attempt> {
        let start = self.have;
        let mut req =
            self.store.http.get(&src.url).header(reqwest::header::RANGE, format!("bytes={start}-{}", end - 1));
        if let (SourceKind::Peer, Some(t)) = (src.kind, &opts.token) {
            req = req.bearer_auth(t);
        }
        let resp = tokio::time::timeout(opts.stall, req.send())
            .await
            .map_err(|_| Attempt::Retry("no response".into()))?
            .map_err(|e| Attempt::Retry(e.to_string()))?;
        let status = resp.status();
        if src.kind == SourceKind::Peer && status == reqwest::StatusCode::NOT_FOUND {
            return Err(Attempt::NotYet);
        }
        let whole = status == reqwest::StatusCode::OK && start == 0;
        if status != reqwest::StatusCode::PARTIAL_CONTENT && !whole {
            return Err(Attempt::Retry(format!("answered {status}")));
        }
        let mut body = resp.bytes_stream();
        while self.have < end {
            let chunk = match tokio::time::timeout(opts.stall, body.next()).await {
                Err(_) => return Err(Attempt::Retry(format!("stalled for {} s", opts.stall.as_secs_f32()))),
                Ok(None) => return Err(Attempt::Retry("connection closed before the piece ended".into())),
                Ok(Some(Err(e))) => return Err(Attempt::Retry(e.to_string())),
                Ok(Some(Ok(c))) => c,
            };
            let take = chunk.len().min((end - self.have) as usize);
            self.append(&chunk[..take], src).await?;
        }
        Ok(())
    }
}

/// How one attempt at a piece ended.
enum Attempt {
    /// Try again (this source later, another one now).
    Retry(String),
    /// Local trouble (disk): stop.
    Fatal(StoreError),
    /// A peer does not hold the blob (yet).
    NotYet,
}

/// How long a peer without the blob is waited for: tries × step.
const PEER_WAIT_TRIES: u32 = 20;
const PEER_WAIT_STEP: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_4_to_64_mib_powers_of_two() {
        assert_eq!(piece_size(1), 4 << 20);
        assert_eq!(piece_size(100 << 20), 4 << 20);
        assert_eq!(piece_size(4 << 30), 16 << 20);
        assert_eq!(piece_size(100 << 30), 64 << 20);
        assert!(piece_size(3 << 30).is_power_of_two());
    }

    #[test]
    fn peer_source_url() {
        let s = Source::peer("http://10.0.0.2:8080/", "ab");
        assert_eq!(s.url, "http://10.0.0.2:8080/internal/v1/blobs/sha256-ab");
        assert_eq!(s.kind, SourceKind::Peer);
    }
}
