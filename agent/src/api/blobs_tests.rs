//! The store against real loopback HTTP: an origin that can be slow, cut connections or send bad
//! bytes, and peers serving blobs through the agent's own blob handler. Here, not in `store/`,
//! because they need both the store and this HTTP handler (api → store, never the reverse).

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use api_types::auth::ApiKeys;
use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, Method},
    routing::get,
};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::store::*;

const TOKEN: &str = "cluster-secret";
const MIB: usize = 1 << 20;

fn data(len: usize) -> Arc<Vec<u8>> {
    // Deterministic, not compressible by accident, different per position.
    Arc::new((0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect())
}

fn sha_of(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

fn tempdir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "rl-store-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn store(name: &str, tweak: impl FnOnce(&mut StoreOptions)) -> Arc<BlobStore> {
    let mut opts = StoreOptions { reserve: 0, ..StoreOptions::default() };
    opts.fetch.token = Some(TOKEN.into());
    opts.fetch.stall = Duration::from_secs(2);
    opts.fetch.backoff_max = Duration::from_millis(500);
    tweak(&mut opts);
    Arc::new(BlobStore::new(tempdir(name), reqwest::Client::new(), opts))
}

/// How the test origin misbehaves.
#[derive(Default, Clone)]
struct Behaviour {
    /// Bytes per second per connection (None: as fast as possible).
    rate: Option<usize>,
    /// Connections to cut after `cut_after` body bytes.
    cuts: Arc<AtomicU32>,
    cut_after: usize,
    /// Send bytes up to this file offset, then hang (a dead peer that keeps the socket open).
    hang_at: Option<usize>,
    /// Answer every request with the whole file and 200, as servers without Range support do.
    ignore_range: bool,
}

/// A raw HTTP/1.1 file server with `Range: bytes=a-[b]`; counts body bytes served.
async fn origin(data: Arc<Vec<u8>>, b: Behaviour) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&served);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (data, b, count) = (Arc::clone(&data), b.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req).to_ascii_lowercase();
                let range = head.lines().find_map(|l| l.strip_prefix("range: bytes=")).and_then(|r| {
                    let (a, e) = r.trim().split_once('-')?;
                    Some((a.parse::<usize>().ok()?, e.parse::<usize>().map_or(data.len(), |e| (e + 1).min(data.len()))))
                });
                let range = range.filter(|_| !b.ignore_range);
                let (status, start, body) = match range {
                    Some((s, e)) if s < e => ("206 Partial Content", s, &data[s..e]),
                    _ => ("200 OK", 0, &data[..]),
                };
                let hdr = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                if sock.write_all(hdr.as_bytes()).await.is_err() || head.starts_with("head ") {
                    return;
                }
                let cut = b.cuts.load(Ordering::SeqCst) > 0 && b.cuts.fetch_sub(1, Ordering::SeqCst) > 0;
                let limit = match (cut, b.hang_at) {
                    (true, _) => b.cut_after.min(body.len()),
                    (false, Some(h)) => h.saturating_sub(start).min(body.len()),
                    (false, None) => body.len(),
                };
                for chunk in body[..limit].chunks(64 << 10) {
                    if sock.write_all(chunk).await.is_err() {
                        return;
                    }
                    count.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    if let Some(rate) = b.rate {
                        tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / rate as f64)).await;
                    }
                }
                if limit < body.len() && !cut {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            });
        }
    });
    (format!("http://{addr}/files/model.gguf"), served)
}

/// Serves `store`'s blobs like an agent does (same handler), with the test token.
async fn peer(store: Arc<BlobStore>) -> String {
    let keys = Arc::new(ApiKeys::parse(TOKEN).unwrap());
    let app = Router::new().route(
        "/internal/v1/blobs/{name}",
        get(move |method: Method, Path(name): Path<String>, headers: HeaderMap| {
            let (store, keys) = (Arc::clone(&store), Arc::clone(&keys));
            async move { crate::api::blobs::respond(&store, Some(&keys), &method, &name, &headers) }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Records the URL of every source bytes came from, in order, without repeats.
#[derive(Default)]
struct Sources(Mutex<Vec<String>>);

impl Sources {
    fn record(&self, p: FetchProgress) {
        let mut v = self.0.lock().unwrap();
        if v.last() != Some(&p.source) {
            v.push(p.source);
        }
    }
    fn list(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_relay_forwards_while_arriving_so_the_origin_sends_one_copy() {
    let d = data(24 * MIB);
    let sha = sha_of(&d);
    // ~1.5 s for the whole file: the second board starts well before the first one finishes.
    let (url, served) = origin(Arc::clone(&d), Behaviour { rate: Some(16 * MIB), ..Behaviour::default() }).await;
    let a = store("relay-a", |_| {});
    let b = store("relay-b", |_| {});
    let a_url = peer(Arc::clone(&a)).await;
    let a2 = Arc::clone(&a);
    let (u, s) = (url.clone(), sha.clone());
    let first = tokio::spawn(async move { a2.fetch(&s, None, &[Source::origin(&u)], &|_| {}).await });
    // Wait until A has bytes but not all of them.
    for _ in 0..200 {
        if a.have(&sha).0 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (have, complete) = a.have(&sha);
    assert!(have > 0 && !complete, "A should be mid-download: {have} bytes, complete {complete}");
    let seen = Sources::default();
    let sources = [Source::peer(&a_url, &sha), Source::origin(&url)];
    let path = b.fetch(&sha, Some(d.len() as u64), &sources, &|p| seen.record(p)).await.unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(sha256_blocking(&path).unwrap(), sha);
    assert_eq!(seen.list(), [sources[0].url.clone()], "every byte came from the peer");
    assert_eq!(served.load(Ordering::SeqCst), d.len() as u64, "the origin sent the file once");
    assert!(b.partial_path(&sha).metadata().is_err(), "no partial left");
}

#[tokio::test]
async fn a_peer_that_dies_mid_relay_is_replaced_by_the_origin_at_the_same_offset() {
    let d = data(12 * MIB);
    let sha = sha_of(&d);
    let (url, served) = origin(Arc::clone(&d), Behaviour::default()).await;
    // A "peer" that sends 5 MiB of the right bytes and then hangs.
    let (dead, _) = origin(Arc::clone(&d), Behaviour { hang_at: Some(5 * MIB), ..Behaviour::default() }).await;
    let b = store("dead-peer", |o| o.fetch.stall = Duration::from_millis(500));
    let seen = Sources::default();
    let sources = [Source { url: dead.clone(), kind: SourceKind::Peer }, Source::origin(&url)];
    let path = b.fetch(&sha, Some(d.len() as u64), &sources, &|p| seen.record(p)).await.unwrap();
    assert_eq!(sha256_blocking(&path).unwrap(), sha);
    let list = seen.list();
    assert_eq!(list.first(), Some(&dead), "{list:?}");
    assert!(list.contains(&url), "{list:?}");
    // The origin sent what the dead peer had not (plus at most the dead peer's later 5 MiB
    // pieces when its back-off expired): never the whole file twice.
    assert!(served.load(Ordering::SeqCst) < d.len() as u64, "{}", served.load(Ordering::SeqCst));
}

#[tokio::test]
async fn an_origin_without_range_support_resumes_by_skipping_what_is_here() {
    let d = data(10 * MIB);
    let sha = sha_of(&d);
    let (url, served) = origin(Arc::clone(&d), Behaviour { ignore_range: true, ..Behaviour::default() }).await;
    let s = store("no-range", |_| {});
    std::fs::create_dir_all(s.blobs_dir()).unwrap();
    std::fs::write(s.partial_path(&sha), &d[..3 * MIB]).unwrap();
    let path = s.fetch(&sha, Some(d.len() as u64), &[Source::origin(&url)], &|_| {}).await.unwrap();
    assert_eq!(sha256_blocking(&path).unwrap(), sha);
    assert_eq!(served.load(Ordering::SeqCst), d.len() as u64, "one response, not one per piece");
}

#[tokio::test]
async fn twenty_cut_connections_still_end_in_the_right_blob() {
    let d = data(10 * MIB);
    let sha = sha_of(&d);
    let cuts = Arc::new(AtomicU32::new(20));
    let b = Behaviour { cuts: Arc::clone(&cuts), cut_after: 300 << 10, ..Behaviour::default() };
    let (url, _) = origin(Arc::clone(&d), b).await;
    let s = store("cuts", |o| o.fetch.backoff_max = Duration::from_millis(50));
    let path = s.fetch(&sha, None, &[Source::origin(&url)], &|_| {}).await.unwrap();
    assert_eq!(cuts.load(Ordering::SeqCst), 0, "all 20 cuts happened");
    assert_eq!(sha256_blocking(&path).unwrap(), sha);
}

#[tokio::test]
async fn a_corrupt_origin_is_refused_and_its_bytes_deleted() {
    let d = data(6 * MIB);
    let sha = sha_of(&d);
    let mut bad = (*d).clone();
    bad[5 * MIB] ^= 0xff;
    let (url, _) = origin(Arc::new(bad), Behaviour::default()).await;
    let s = store("corrupt", |_| {});
    let e = s.fetch(&sha, None, &[Source::origin(&url)], &|_| {}).await.unwrap_err();
    assert!(matches!(e, StoreError::Digest { .. }), "{e}");
    assert!(e.to_string().contains("deleted"), "{e}");
    assert_eq!(s.have(&sha), (0, false), "neither blob nor partial");
}

#[tokio::test]
async fn bad_bytes_from_a_peer_are_fetched_again_from_the_origin() {
    let d = data(6 * MIB);
    let sha = sha_of(&d);
    let mut bad = (*d).clone();
    bad[MIB] ^= 0xff;
    let (liar, _) = origin(Arc::new(bad), Behaviour::default()).await;
    let (url, served) = origin(Arc::clone(&d), Behaviour::default()).await;
    let s = store("liar", |_| {});
    let sources = [Source { url: liar, kind: SourceKind::Peer }, Source::origin(&url)];
    let path = s.fetch(&sha, None, &sources, &|_| {}).await.unwrap();
    assert_eq!(sha256_blocking(&path).unwrap(), sha);
    assert_eq!(served.load(Ordering::SeqCst), d.len() as u64, "one clean copy from the origin");
}

#[tokio::test]
async fn no_room_is_refused_before_any_byte_is_written() {
    let d = data(MIB);
    let sha = sha_of(&d);
    let (url, served) = origin(Arc::clone(&d), Behaviour::default()).await;
    let s = store("full", |o| o.reserve = u64::MAX / 2);
    let e = s.fetch(&sha, None, &[Source::origin(&url)], &|_| {}).await.unwrap_err();
    assert!(matches!(e, StoreError::NoSpace { .. }), "{e}");
    assert!(e.to_string().contains("not enough disk space"), "{e}");
    assert_eq!(served.load(Ordering::SeqCst), 0);
    assert_eq!(s.have(&sha), (0, false));
}

#[tokio::test]
async fn the_blob_endpoint_checks_the_token_and_honours_ranges() {
    let d = data(MIB);
    let sha = sha_of(&d);
    let (url, _) = origin(Arc::clone(&d), Behaviour::default()).await;
    let s = store("endpoint", |_| {});
    s.fetch(&sha, None, &[Source::origin(&url)], &|_| {}).await.unwrap();
    let base = peer(Arc::clone(&s)).await;
    let http = reqwest::Client::new();
    let blob = format!("{base}/internal/v1/blobs/sha256-{sha}");
    assert_eq!(http.get(&blob).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&blob).bearer_auth("wrong").send().await.unwrap().status(), 401);
    let r = http.get(&blob).bearer_auth(TOKEN).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], format!("bytes 10-19/{}", d.len()));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &d[10..20]);
    let r = http.head(&blob).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], d.len().to_string());
    assert_eq!(r.headers()["x-blob-complete"], "true");
    let r = http.get(&blob).bearer_auth(TOKEN).header("range", format!("bytes={}-", d.len())).send().await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], format!("bytes */{}", d.len()));
    let other = format!("{base}/internal/v1/blobs/sha256-{}", "0".repeat(64));
    assert_eq!(http.get(&other).bearer_auth(TOKEN).send().await.unwrap().status(), 404);
    let r = http.get(format!("{base}/internal/v1/blobs/../../etc/passwd")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// A store on a real tmpfs too small for the blob (needs root to mount; skipped, and said so,
/// without it): refused before a byte is written, no partial left, and the error says why.
#[tokio::test]
async fn a_store_on_a_small_tmpfs_refuses_a_blob_that_does_not_fit() {
    let dir = tempdir("tmpfs");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    }
    let d = data(6 * MIB);
    let sha = sha_of(&d);
    let (url, served) = origin(Arc::clone(&d), Behaviour::default()).await;
    let mut opts = StoreOptions { reserve: 0, ..StoreOptions::default() };
    opts.fetch.stall = Duration::from_secs(2);
    let s = BlobStore::new(dir.clone(), reqwest::Client::new(), opts);
    let e = s.fetch(&sha, None, &[Source::origin(&url)], &|_| {}).await.unwrap_err();
    let partial_left = s.partial_path(&sha).exists();
    let _ = std::process::Command::new("umount").arg(&dir).status();
    assert!(matches!(e, StoreError::NoSpace { .. }), "{e}");
    assert_eq!(served.load(Ordering::SeqCst), 0, "nothing downloaded");
    assert!(!partial_left, "no partial file");
    let _ = std::fs::remove_dir_all(&dir);
}
