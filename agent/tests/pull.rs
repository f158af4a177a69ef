//! `/api/pull` (verified, resumable, atomic) and `/api/delete`, against a loopback file server
//! started by the test.

mod common;

use std::sync::{Arc, Mutex};

use common::{Agent, smollm2};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Serves `data` at any path with HTTP/1.1 `Range: bytes=N-[M]` support; records the start of
/// each range as `bytes=N-`.
async fn file_server(data: Arc<Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ranges);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let data = Arc::clone(&data);
            let seen = Arc::clone(&seen);
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
                    let (a, b) = r.trim().split_once('-')?;
                    let end = b.parse::<usize>().map_or(data.len(), |e| (e + 1).min(data.len()));
                    Some((a.parse::<usize>().ok()?, end))
                });
                if let Some((s, _)) = range {
                    seen.lock().unwrap().push(format!("bytes={s}-"));
                }
                let (status, body) = match range {
                    Some((s, e)) if s < e => ("206 Partial Content", &data[s..e]),
                    _ => ("200 OK", &data[..]),
                };
                let hdr = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = sock.write_all(hdr.as_bytes()).await;
                let _ = sock.write_all(body).await;
            });
        }
    });
    (format!("http://{addr}"), ranges)
}

async fn pull_lines(a: &Agent, body: &Value) -> Vec<Value> {
    a.ndjson("/api/pull", body).await
}

#[tokio::test]
async fn pull_by_url_verifies_resumes_and_deletes() {
    let data = Arc::new(std::fs::read(smollm2()).unwrap());
    let (base, ranges) = file_server(Arc::clone(&data)).await;
    let a = Agent::start(&[], &[]).await;
    let models = a.dir.join("models");
    let url = format!("{base}/files/{FILE}");

    // A wrong digest: error, nothing installed, no partial left behind.
    let lines = pull_lines(&a, &json!({"model": url, "sha256": "0".repeat(64)})).await;
    assert!(lines.last().unwrap()["error"].as_str().unwrap().contains("sha256 mismatch"), "{lines:?}");
    let blobs = models.join("blobs");
    assert!(!blobs.join(format!("sha256-{}", "0".repeat(64))).exists());
    assert!(!blobs.join(format!("sha256-{}.partial", "0".repeat(64))).exists());

    // Resume: a partial download of the first 10 MB is continued with a Range request.
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("sha256-{SHA}.partial")), &data[..10 << 20]).unwrap();
    ranges.lock().unwrap().clear();
    let lines = pull_lines(&a, &json!({"model": url, "sha256": SHA})).await;
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert_eq!(statuses.first(), Some(&"pulling manifest"));
    assert_eq!(statuses.last(), Some(&"success"), "{lines:?}");
    assert!(statuses.contains(&"verifying sha256 digest"));
    let progress: Vec<&Value> = lines.iter().filter(|l| l.get("completed").is_some()).collect();
    assert!(!progress.is_empty());
    assert_eq!(progress.last().unwrap()["completed"].as_u64().unwrap(), data.len() as u64);
    assert_eq!(progress[0]["total"].as_u64().unwrap(), data.len() as u64);
    assert_eq!(progress[0]["digest"], format!("sha256:{SHA}"));
    // Fetched in pieces from where the partial ended; nothing from the start again.
    let seen = ranges.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&format!("bytes={}-", 10 << 20)), "{seen:?}");
    assert!(!seen.contains(&"bytes=0-".to_owned()), "{seen:?}");
    // Content-addressed: the blob under its digest, named in the index by the file name.
    assert_eq!(std::fs::read(blobs.join(format!("sha256-{SHA}"))).unwrap().len(), data.len());
    assert!(!blobs.join(format!("sha256-{SHA}.partial")).exists());
    let index: Value = serde_json::from_slice(&std::fs::read(models.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["files"][FILE]["sha256"], SHA);

    // It is now a model, usable at once.
    let tags = a.get("/api/tags").await.1;
    assert_eq!(tags["models"][0]["name"], "smollm2-135m-instruct:latest");
    let (s, r) = a
        .post(
            "/api/generate",
            &json!({"model": "smollm2-135m-instruct", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
        )
        .await;
    assert_eq!(s, 200, "{r}");

    // Pulling again is a verified no-op; stream false gives one object.
    let (s, r) = a.post("/api/pull", &json!({"model": url, "sha256": SHA, "stream": false})).await;
    assert_eq!((s, r["status"].as_str()), (200, Some("success")));
    // A URL without a digest is refused; an unknown catalog name is 404.
    assert_eq!(a.post("/api/pull", &json!({"model": url})).await.0, 400);
    assert_eq!(a.post("/api/pull", &json!({"model": "no-such-model"})).await.0, 404);

    // Delete unloads and removes the file.
    let r =
        a.client.delete(a.url("/api/delete")).json(&json!({"model": "smollm2-135m-instruct"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!blobs.join(format!("sha256-{SHA}")).exists(), "no other name used the blob");
    assert_eq!(a.get("/api/tags").await.1["models"], json!([]));
    let r =
        a.client.delete(a.url("/api/delete")).json(&json!({"model": "smollm2-135m-instruct"})).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
