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

/// Serves `data` at any path with HTTP/1.1 `Range: bytes=N-` support; records Range headers.
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
                let start = head
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .and_then(|r| r.trim().trim_end_matches('-').parse::<usize>().ok());
                if let Some(s) = start {
                    seen.lock().unwrap().push(format!("bytes={s}-"));
                }
                let (status, body) = match start {
                    Some(s) if s < data.len() => ("206 Partial Content", &data[s..]),
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
    assert!(!models.join(FILE).exists());
    assert!(!models.join(".partial").join(format!("{}.part", "0".repeat(64))).exists());

    // Resume: a partial download of the first 10 MB is continued with a Range request.
    let partial = models.join(".partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join(format!("{SHA}.part")), &data[..10 << 20]).unwrap();
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
    assert_eq!(ranges.lock().unwrap().as_slice(), [format!("bytes={}-", 10 << 20)]);
    assert_eq!(std::fs::read(models.join(FILE)).unwrap().len(), data.len());

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
    assert!(!models.join(FILE).exists());
    assert_eq!(a.get("/api/tags").await.1["models"], json!([]));
    let r =
        a.client.delete(a.url("/api/delete")).json(&json!({"model": "smollm2-135m-instruct"})).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
