//! `rockchip-llama-agent store fetch`: one blob into a models directory's store, through the same
//! code a cluster board uses (pieces, peers in order then the origin, failover at the current
//! offset, the whole-file digest), optionally serving the blob to other boards while it arrives.
//!
//! ```text
//!   origin ──▶ board 1 ──▶ board 2 ──▶ board 3 ...     each: store fetch --serve IP:PORT
//!                 └────────────────────▶ (--peer 1, 2, ... nearest first, then --origin)
//! ```
//!
//! It exists so a board's store can be pre-seeded without a running agent or Kubernetes, and so
//! the distribution path (chains of boards relaying a file while it downloads) can be measured on
//! its own (`hack/bench/p7_distribution.py`). The result is one JSON line on stdout; logs go to
//! stderr.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use api_types::auth::ApiKeys;
use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, Method},
    routing::get,
};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::store::{BlobStore, FetchOptions, FetchProgress, Source, StoreOptions, valid_sha};

/// Store maintenance without a running agent.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Fetch one blob into the store (peers first, then the origin), optionally serving it to
    /// other boards while it arrives; prints {"sha256","bytes","seconds","sources"} as JSON.
    Fetch(FetchArgs),
}

impl StoreCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Fetch(args) => {
                let (report, linger) = args.run().await?;
                // Printed before the linger, so a script learns the result as soon as it exists.
                println!("{}", serde_json::to_string(&report)?);
                if let Some(linger) = linger {
                    tracing::info!(
                        seconds = linger.as_secs_f64(),
                        "serving the blob a while longer for boards reading from this one"
                    );
                    tokio::time::sleep(linger).await;
                }
                Ok(())
            }
        }
    }
}

/// What to fetch, from where, and whether to serve it onward meanwhile.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Models directory whose store (`blobs/`) receives the blob.
    #[arg(long, env = "ROCKCHIP_LLAMA_MODELS_DIR")]
    pub models_dir: PathBuf,
    /// The blob's sha256 (64 hex digits); the download is checked against it before it becomes visible.
    #[arg(long, env = "ROCKCHIP_LLAMA_STORE_FETCH_SHA256")]
    pub sha256: String,
    /// The blob's size in bytes; without it the first source that answers a HEAD says.
    #[arg(long, env = "ROCKCHIP_LLAMA_STORE_FETCH_SIZE")]
    pub size: Option<u64>,
    /// Base URL of a peer agent (`http://10.0.0.2:8080`), repeatable, nearest first: its blob
    /// endpoint is tried before the origin, even while the peer is still downloading.
    #[arg(long = "peer", env = "ROCKCHIP_LLAMA_STORE_FETCH_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// The file's origin (`http(s)://` with Range support, or `file:///`), used after the peers.
    #[arg(long, env = "ROCKCHIP_LLAMA_STORE_FETCH_ORIGIN")]
    pub origin: String,
    /// Serve `/internal/v1/blobs/{name}` on this address while fetching and lingering, so other
    /// boards can read the blob as it arrives (needs --cluster-token-file).
    #[arg(long, env = "ROCKCHIP_LLAMA_STORE_FETCH_SERVE")]
    pub serve: Option<SocketAddr>,
    /// File holding the cluster token: sent to peers, and required from readers of --serve.
    #[arg(long, env = "ROCKCHIP_LLAMA_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
    /// Seconds a source may send nothing before the download continues from the next source at
    /// the same offset.
    #[arg(long, env = "ROCKCHIP_LLAMA_FETCH_STALL_TIMEOUT", default_value_t = 10.0)]
    pub fetch_stall_timeout: f64,
    /// Seconds to keep serving after the blob is complete, so boards reading from this one finish.
    #[arg(long, env = "ROCKCHIP_LLAMA_STORE_FETCH_LINGER", default_value_t = 0.0)]
    pub linger: f64,
}

/// The outcome of one fetch, printed as a JSON line.
#[derive(Debug, Serialize)]
pub struct FetchReport {
    pub sha256: String,
    /// Size of the complete blob.
    pub bytes: u64,
    /// Wall time of the fetch (not of the linger), 0 when the blob was already there.
    pub seconds: f64,
    /// URLs bytes came from, in the order they did (a source appears again after a failover back).
    pub sources: Vec<String>,
}

/// Per-source and 10 %-step progress, fed by the fetch's progress callback.
#[derive(Default)]
struct Seen {
    sources: Vec<String>,
    /// Last 10 % step logged.
    step: u64,
}

impl Seen {
    fn record(&mut self, p: &FetchProgress) {
        if self.sources.last() != Some(&p.source) {
            tracing::info!(source = %p.source, completed = p.completed, "bytes now come from this source");
            self.sources.push(p.source.clone());
        }
        let step = (p.completed * 10).checked_div(p.total).unwrap_or(10);
        if step > self.step {
            self.step = step;
            tracing::info!(completed = p.completed, total = p.total, "fetched {} %", step * 10);
        }
    }
}

impl FetchArgs {
    /// Fetches the blob (serving it meanwhile when asked) and reports, with how long to keep
    /// serving afterwards (`None`: not serving, or no linger); the blob server runs until the
    /// process ends.
    pub async fn run(self) -> anyhow::Result<(FetchReport, Option<Duration>)> {
        let Self { models_dir, sha256, size, peers, origin, serve, cluster_token_file, fetch_stall_timeout, linger } =
            self;
        let sha256 = sha256.trim().to_ascii_lowercase();
        anyhow::ensure!(valid_sha(&sha256), "--sha256 must be 64 hex digits, got {sha256:?}");
        let stall = super::stall_timeout(fetch_stall_timeout)?;
        anyhow::ensure!(linger >= 0.0 && linger.is_finite(), "--linger must be a number of seconds >= 0");
        let token = super::read_token(cluster_token_file.as_deref())?;
        let opts = StoreOptions {
            fetch: FetchOptions { stall, token: token.clone(), ..FetchOptions::default() },
            ..StoreOptions::default()
        };
        // The same client settings as `serve`: no overall timeout (pieces are bounded by the stall
        // timeout instead), a connect timeout so a dead peer address fails over.
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(30)).build()?;
        let store = Arc::new(BlobStore::new(models_dir, http, opts));
        if let Some(addr) = serve {
            let keys = token.as_deref().and_then(ApiKeys::parse).context(
                "--serve needs --cluster-token-file: peers must prove they belong to the cluster to read blobs",
            )?;
            serve_blobs(Arc::clone(&store), keys, addr).await?;
        }
        let sources = sources(&peers, &origin, &sha256);
        let seen = Mutex::new(Seen::default());
        tracing::info!(blob = %sha256, sources = ?sources.iter().map(|s| &s.url).collect::<Vec<_>>(), "fetching");
        let started = Instant::now();
        let path = store
            .fetch(&sha256, size, &sources, &|p| seen.lock().unwrap_or_else(|e| e.into_inner()).record(&p))
            .await
            .with_context(|| format!("fetching sha256-{sha256}"))?;
        let seconds = started.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&path).with_context(|| format!("stat {}", path.display()))?.len();
        tracing::info!(blob = %sha256, bytes, seconds, path = %path.display(), "blob complete and verified");
        let sources = seen.into_inner().unwrap_or_else(|e| e.into_inner()).sources;
        let report = FetchReport { sha256, bytes, seconds: if sources.is_empty() { 0.0 } else { seconds }, sources };
        Ok((report, (serve.is_some() && linger > 0.0).then(|| Duration::from_secs_f64(linger))))
    }
}

/// The sources in the order the cluster uses them: each peer's blob endpoint, nearest first, then
/// the origin (which also supplies a second, clean copy if peers sent bad bytes).
fn sources(peers: &[String], origin: &str, sha256: &str) -> Vec<Source> {
    peers
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| Source::peer(p.trim(), sha256))
        .chain([Source::origin(origin)])
        .collect()
}

/// Serves the store's blobs on `addr` through the agent's own handler (same token check, upload
/// limit and reads of arriving blobs); the task ends with the process.
async fn serve_blobs(store: Arc<BlobStore>, keys: ApiKeys, addr: SocketAddr) -> anyhow::Result<()> {
    let keys = Arc::new(keys);
    // axum answers HEAD through the GET route; `respond` leaves the body out for it.
    let app = Router::new().route(
        "/internal/v1/blobs/{name}",
        get(move |method: Method, Path(name): Path<String>, headers: HeaderMap| {
            let (store, keys) = (Arc::clone(&store), Arc::clone(&keys));
            async move { crate::api::blobs::respond(&store, Some(&keys), &method, &name, &headers) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--serve {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving blobs to peers");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "blob server stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn peers_come_first_in_order_then_the_origin() {
        let s = sources(&["http://a:1/".into(), " ".into(), "http://b:2".into()], "http://o/f", "ab");
        let urls: Vec<&str> = s.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(
            urls,
            ["http://a:1/internal/v1/blobs/sha256-ab", "http://b:2/internal/v1/blobs/sha256-ab", "http://o/f"]
        );
    }

    fn args(dir: PathBuf, sha256: String, origin: String) -> FetchArgs {
        FetchArgs {
            models_dir: dir,
            sha256,
            size: None,
            peers: Vec::new(),
            origin,
            serve: None,
            cluster_token_file: None,
            fetch_stall_timeout: 2.0,
            linger: 0.0,
        }
    }

    #[tokio::test]
    async fn fetches_from_a_file_origin_and_reports_it() {
        let dir = std::env::temp_dir().join(format!("rl-store-cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("origin.bin");
        let data: Vec<u8> = (0..(3 << 20) as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let sha = hex::encode(Sha256::digest(&data));
        let origin = format!("file://{}", src.display());
        let (r, linger) = args(dir.join("store"), sha.to_uppercase(), origin.clone()).run().await.unwrap();
        assert_eq!(linger, None);
        assert_eq!(
            (r.sha256.as_str(), r.bytes, r.sources.as_slice()),
            (sha.as_str(), data.len() as u64, [origin.clone()].as_slice())
        );
        assert!(dir.join("store/blobs").join(format!("sha256-{sha}")).is_file());
        // Already there: nothing fetched.
        let (again, _) = args(dir.join("store"), sha.clone(), origin.clone()).run().await.unwrap();
        assert!(again.sources.is_empty() && again.seconds == 0.0, "{again:?}");
        // Serving without a token is refused before anything is fetched.
        let mut a = args(dir.join("other"), sha, origin);
        a.serve = Some("127.0.0.1:0".parse().unwrap());
        assert!(a.run().await.unwrap_err().to_string().contains("--cluster-token-file"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
