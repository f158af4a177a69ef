//! Downloading a blob into the store: in pieces, from an ordered list of sources (peers first,
//! then the origin), resuming at the current offset whenever a source fails or stalls.
//!
//! Pieces are fetched in order and appended, so the partial file is always a prefix of the blob:
//! that is what lets this board serve the blob onward while it is still arriving (a pipeline of
//! boards), and what lets one streaming sha256 cover the whole file. Each piece goes to the first
//! source not cooling down after a failure, so a slow or dead peer is replaced at the current
//! offset by the next peer or the origin, and taken back once its back-off has passed. A peer that
//! delivers but slowly (a bad link: not a stall, so no failover) is compared with the next peer up
//! the chain and skipped once that one is far ahead of it ([`SlowPeers`]): otherwise one slow board
//! would throttle every board chained behind it. The whole-file digest is checked before
//! the blob becomes visible; a mismatch deletes the bytes, and if peers supplied any of them the
//! blob is fetched once more from the origin alone.

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
    /// Bytes per second below which a peer is suspected of being slow and compared with the next
    /// peer (0: never). Only a trigger: a peer is skipped only once the next one is far ahead of it.
    pub slow_peer_rate: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            stall: Duration::from_secs(10),
            max_failures: 12,
            backoff_max: Duration::from_secs(5),
            token: None,
            // ~34 Mbit/s: a board on a healthy LAN (100 Mbit/s and up) stays above it, so the
            // check costs nothing there; a 10 Mbit/s link (a bad cable, a port renegotiated
            // down) falls well below it.
            slow_peer_rate: 4 << 20,
        }
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
        let mut slow = SlowPeers::new(sources, opts.slow_peer_rate as f64);
        while self.have < self.total {
            let now = Instant::now();
            let Some(i) = slow.pick(|i| ready_at[i] <= now) else {
                let next = ready_at.iter().min().copied().unwrap_or(now);
                tokio::time::sleep_until(next.into()).await;
                continue;
            };
            let src = &sources[i];
            let end = (self.have + piece).min(self.total);
            let before = self.have;
            let floor = slow.cut_below(i, |j| ready_at[j] <= now, now);
            let started = Instant::now();
            let r = if src.url.starts_with("file://") {
                self.read_file(src, end).await
            } else {
                self.read_http(src, end, opts, floor).await
            };
            if src.kind == SourceKind::Peer && self.have > before {
                self.from_peers = true;
            }
            let rate = SlowPeers::rate(self.have - before, started.elapsed());
            let now = Instant::now();
            if let Some(j) = slow.suspect(i, rate, |j| ready_at[j] <= now, now) {
                let (ours, theirs) = tokio::join!(self.available(src, opts), self.available(&sources[j], opts));
                if slow.overtakes(i, self.have, ours, theirs, piece) {
                    tracing::info!(blob = %self.sha256, slow = %src.url, ahead = %sources[j].url, offset = self.have,
                                   slow_holds = ?ours, ahead_holds = ?theirs, bytes_per_s = rate.unwrap_or(0.0) as u64,
                                   "a slow peer fell behind the next one up the chain; reading from that one");
                }
            }
            match r {
                Ok(()) | Err(Attempt::Slow) => {
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
                    tracing::info!(blob = %self.sha256, source = %src.url, "peer does not have the blob or does not answer; using the next source");
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

    /// Bytes a peer holds of the blob now (`X-Blob-Available`, or all of it when complete);
    /// `None` when it does not say.
    async fn available(&self, src: &Source, opts: &FetchOptions) -> Option<u64> {
        let mut req = self.store.http.head(&src.url).timeout(opts.stall);
        if let Some(t) = &opts.token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.ok().filter(|r| r.status().is_success())?;
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if header("x-blob-complete").as_deref() == Some("true") {
            return Some(self.total);
        }
        header("x-blob-available")?.parse().ok()
    }

    async fn read_file(&mut self, src: &Source, end: u64) -> Result<(), Attempt> {
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

    /// One piece over HTTP. With `floor` (bytes/s), a piece running below it after
    /// [`SLOW_WINDOW`] is cut short ([`Attempt::Slow`]) so [`SlowPeers`] can compare sources.
    async fn read_http(
        &mut self,
        src: &Source,
        end: u64,
        opts: &FetchOptions,
        floor: Option<f64>,
    ) -> Result<(), Attempt> {
        let asked = Instant::now();
        let start = self.have;
        let mut req =
            self.store.http.get(&src.url).header(reqwest::header::RANGE, format!("bytes={start}-{}", end - 1));
        if let (SourceKind::Peer, Some(t)) = (src.kind, &opts.token) {
            req = req.bearer_auth(t);
        }
        let resp = tokio::time::timeout(opts.stall, req.send())
            .await
            .map_err(|_| Attempt::Retry("no response".into()))?
            .map_err(|e| {
                // A peer refusing the connection is starting (or restarting) its agent: like a
                // 404, waited for a little before the next source is used.
                if src.kind == SourceKind::Peer && e.is_connect() {
                    Attempt::NotYet
                } else {
                    Attempt::Retry(e.to_string())
                }
            })?;
        let status = resp.status();
        if src.kind == SourceKind::Peer && status == reqwest::StatusCode::NOT_FOUND {
            return Err(Attempt::NotYet);
        }
        // A server that ignores Range (plain static servers do) sends the whole file with 200:
        // the bytes already here are skipped and the rest is taken from this one response, rather
        // than asking again per piece and getting the whole file each time.
        let ignores_range = status == reqwest::StatusCode::OK;
        if status != reqwest::StatusCode::PARTIAL_CONTENT && !ignores_range {
            return Err(Attempt::Retry(format!("answered {status}")));
        }
        let (end, mut skip) = if ignores_range { (self.total, start) } else { (end, 0) };
        let mut body = resp.bytes_stream();
        while self.have < end {
            let chunk = match tokio::time::timeout(opts.stall, body.next()).await {
                Err(_) => return Err(Attempt::Retry(format!("stalled for {} s", opts.stall.as_secs_f32()))),
                Ok(None) => return Err(Attempt::Retry("connection closed before the piece ended".into())),
                Ok(Some(Err(e))) => return Err(Attempt::Retry(e.to_string())),
                Ok(Some(Ok(c))) => c,
            };
            let skipped = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
            skip -= skipped as u64;
            let data = &chunk[skipped..];
            let take = data.len().min((end - self.have) as usize);
            if take == 0 {
                continue;
            }
            self.append(&data[..take], src).await?;
            let spent = asked.elapsed();
            if let Some(floor) = floor
                && spent >= SLOW_WINDOW
                && self.have < end
                && ((self.have - start) as f64) < floor * spent.as_secs_f64()
            {
                return Err(Attempt::Slow);
            }
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
    /// A peer does not hold the blob (yet), or does not listen (yet).
    NotYet,
    /// Cut short because the source sends below the slow-peer rate (the bytes so far are kept).
    Slow,
}

/// How long a peer without the blob is waited for: tries × step.
const PEER_WAIT_TRIES: u32 = 20;
const PEER_WAIT_STEP: Duration = Duration::from_millis(250);

/// How long a piece runs before its rate is judged: long enough to cover the request and a
/// peer's wait for its own next bytes, short against a piece at a slow rate (4 MiB at 10 Mbit/s ≈ 3.4 s).
const SLOW_WINDOW: Duration = Duration::from_secs(2);
/// A slow peer is not compared again for this long. A check costs two HEADs and cuts a piece
/// short (its bytes are kept), so it may be frequent.
const RECHECK: Duration = Duration::from_secs(5);
/// Attempts that moved fewer bytes say nothing about a rate.
const MIN_MEASURED: u64 = 256 << 10;

/// The slow-peer policy. A peer whose piece runs below the `floor` rate is suspected, and
/// compared with the next peer up the chain by what each holds beyond our offset (their
/// `X-Blob-Available`, asked with HEAD). A board with a slow link falls further behind its own
/// upstream every second, so when the next peer holds at least a piece more and twice the suspect's
/// lead, the suspect is skipped for the rest of the download (used again only when every other
/// source is backing off). A peer that is slow only because everything upstream is (a slow
/// origin) or only for a moment (a chain starting up) holds about what its upstream holds, and
/// stays. Slowness never sends a piece to the origin. A stall or a dead peer is not this policy's
/// business: `run` fails those over.
struct SlowPeers {
    kinds: Vec<SourceKind>,
    floor: f64,
    skipped: Vec<bool>,
    checked_at: Vec<Option<Instant>>,
}

impl SlowPeers {
    fn new(sources: &[Source], floor: f64) -> Self {
        let n = sources.len();
        Self {
            kinds: sources.iter().map(|s| s.kind).collect(),
            floor,
            skipped: vec![false; n],
            checked_at: vec![None; n],
        }
    }

    /// Bytes per second of an attempt, when it moved enough bytes to tell.
    fn rate(bytes: u64, took: Duration) -> Option<f64> {
        (bytes >= MIN_MEASURED).then(|| bytes as f64 / took.as_secs_f64().max(1e-3))
    }

    /// The source for the next piece: the first ready one not skipped, else the first ready one.
    fn pick(&self, ready: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.kinds.len();
        (0..n).find(|&i| ready(i) && !self.skipped[i]).or_else(|| (0..n).find(|&i| ready(i)))
    }

    /// The peer after `i` that `i` would be compared with, if `i` may be checked now.
    fn candidate(&self, i: usize, ready: impl Fn(usize) -> bool, now: Instant) -> Option<usize> {
        let may = self.floor > 0.0
            && self.kinds[i] == SourceKind::Peer
            && self.checked_at[i].is_none_or(|t| now.duration_since(t) >= RECHECK);
        may.then(|| {
            (i + 1..self.kinds.len()).find(|&j| self.kinds[j] == SourceKind::Peer && !self.skipped[j] && ready(j))
        })
        .flatten()
    }

    /// The rate below which a piece from `i` is cut short: only when a check could follow.
    fn cut_below(&self, i: usize, ready: impl Fn(usize) -> bool, now: Instant) -> Option<f64> {
        self.candidate(i, ready, now).map(|_| self.floor)
    }

    /// Takes the rate of an attempt at `i`; returns the peer to compare it with when it was slow.
    fn suspect(&mut self, i: usize, rate: Option<f64>, ready: impl Fn(usize) -> bool, now: Instant) -> Option<usize> {
        let j = rate.filter(|&r| r < self.floor).and_then(|_| self.candidate(i, ready, now))?;
        self.checked_at[i] = Some(now);
        Some(j)
    }

    /// Whether `j`, holding `theirs` bytes, has left the suspect `i`, holding `slow`, behind: at
    /// least a `piece` more than it beyond our offset `have`, and twice its lead. Skips `i` if so.
    fn overtakes(&mut self, i: usize, have: u64, slow: Option<u64>, theirs: Option<u64>, piece: u64) -> bool {
        let lead = |a: Option<u64>| a.unwrap_or(have).saturating_sub(have);
        let (ours, better) = (lead(slow), lead(theirs));
        let yes = better >= piece.saturating_add(ours) && better >= ours.saturating_mul(2);
        self.skipped[i] |= yes;
        yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn chain() -> Vec<Source> {
        vec![Source::peer("http://b3", "ab"), Source::peer("http://b2", "ab"), Source::origin("http://o/f")]
    }

    #[test]
    fn a_slow_peer_left_behind_by_the_next_one_is_skipped() {
        let mut p = SlowPeers::new(&chain(), 4.0 * MIB as f64);
        let (now, all) = (Instant::now(), |_| true);
        assert_eq!(p.cut_below(0, all, now), Some(4.0 * MIB as f64));
        assert_eq!(p.suspect(0, Some(1.2 * MIB as f64), all, now), Some(1), "compared with b2, never the origin");
        // b3 holds 1 MiB beyond our 10, b2 holds 30 MiB beyond it.
        assert!(p.overtakes(0, 10 * MIB, Some(11 * MIB), Some(40 * MIB), 4 * MIB));
        assert_eq!(p.pick(all), Some(1));
        assert_eq!(p.pick(|i| i != 1), Some(2), "the origin before the skipped peer");
        assert_eq!(p.pick(|i| i == 0), Some(0), "a skipped peer is still better than nothing");
    }

    #[test]
    fn a_peer_slow_because_everything_upstream_is_stays() {
        let mut p = SlowPeers::new(&chain(), 4.0 * MIB as f64);
        let (now, all) = (Instant::now(), |_| true);
        assert_eq!(p.suspect(0, Some(2.0 * MIB as f64), all, now), Some(1));
        // Both at the frontier (a slow origin, or a chain starting up): about the same lead.
        assert!(!p.overtakes(0, 10 * MIB, Some(11 * MIB), Some(13 * MIB), 4 * MIB));
        assert_eq!(p.pick(all), Some(0));
        // A peer far ahead but not twice the suspect's lead does not win either.
        assert!(!p.overtakes(0, 0, Some(100 * MIB), Some(150 * MIB), 4 * MIB));
        // Not checked again (so no piece is cut short) until RECHECK has passed.
        assert_eq!(p.cut_below(0, all, now), None);
        assert_eq!(p.suspect(0, Some(MIB as f64), all, now), None);
        assert!(p.cut_below(0, all, now + RECHECK).is_some());
    }

    #[test]
    fn fast_peers_the_origin_and_a_last_peer_are_never_checked() {
        let (now, all) = (Instant::now(), |_| true);
        let mut p = SlowPeers::new(&chain(), 4.0 * MIB as f64);
        assert_eq!(p.suspect(0, Some(11.0 * MIB as f64), all, now), None, "fast");
        assert_eq!(p.cut_below(1, all, now), None, "b2 has only the origin after it");
        assert_eq!(p.suspect(1, Some(MIB as f64), all, now), None);
        assert_eq!(p.cut_below(2, all, now), None, "the origin");
        assert_eq!(p.cut_below(0, |i| i != 1, now), None, "b2 backing off: nothing to compare with");
        assert_eq!(SlowPeers::rate(1000, Duration::from_secs(1)), None, "too few bytes to measure");
        let off = SlowPeers::new(&chain(), 0.0);
        assert_eq!(off.cut_below(0, all, now), None, "slow_peer_rate 0 turns the policy off");
    }

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
