//! Scheduler behaviour over real TCP: cancellation, queue limits, parallel slots, memory-budget
//! eviction, graceful shutdown; on the engine under test (`common::engine`).

mod common;

use std::{
    io::{Read, Write},
    time::Duration,
};

use common::{Agent, primary, primary_name, rkllm, secondary, secondary_name};
use futures::StreamExt;
use serde_json::{Value, json};

/// A generation that runs until the 4096-token context is full if nothing stops it: ~4000
/// tokens, far more than SmolLM2 can produce in the 10 s the tests allow for a cancellation.
/// RKLLM has no `ignore_eos` (docs/npu.md): there the prompt is one the simulator answers at
/// length (44 tokens) and [`long_runs`] slows its decoding.
fn endless(stream: bool) -> Value {
    let prompt = if rkllm() { "Count to one million." } else { "Count to ten thousand." };
    json!({"model": primary_name(), "messages": [{"role": "user", "content": prompt}],
           "ignore_eos": true, "temperature": 0, "stream": stream})
}

/// Environment for agents serving [`endless`]: rkllm-sim decoding at 100 ms per token (0.5
/// tokens/s at 20x), so its 44 tokens take over 4 s.
fn long_runs() -> Vec<(&'static str, String)> {
    if rkllm() { vec![("RKLLM_SIM_DECODE_TOK_S", "0.5".to_owned())] } else { Vec::new() }
}

fn question() -> Value {
    json!({"model": primary_name(), "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16, "temperature": 0})
}

/// Polls a metric until it has the wanted value (bounded: ~10 s).
async fn wait_metric(a: &Agent, name: &str, want: f64) {
    for _ in 0..200 {
        if a.metric(name, primary_name()).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {want}");
}

#[tokio::test]
async fn disconnect_cancels_and_next_answer_is_clean() {
    let a = Agent::serve_env(&[primary()], &[], &long_runs()).await;
    let (_, reference) = a.post("/v1/chat/completions", &question()).await;
    let reference = reference["choices"][0]["message"]["content"].as_str().unwrap().to_owned();

    // Streaming: read a few chunks, then drop the connection.
    let resp = a.client.post(a.url("/v1/chat/completions")).json(&endless(true)).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = 0;
    while let Some(chunk) = body.next().await {
        seen += chunk.unwrap().len();
        if seen > 600 {
            break;
        }
    }
    drop(body);
    // The engine itself stops generating (its own count), and the next answer is exactly the
    // reference: no text of the cancelled request leaks into it.
    wait_metric(&a, "rockchip_llama_active_requests", 0.0).await;
    wait_metric(&a, "rockchip_llama_engine_busy_slots", 0.0).await;
    let (_, next) = a.post("/v1/chat/completions", &question()).await;
    assert_eq!(next["choices"][0]["message"]["content"].as_str().unwrap(), reference);

    // Non-streaming: send the request on a raw socket and close it without reading.
    let addr = a.base.trim_start_matches("http://").to_owned();
    let body = endless(false).to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        sock,
        "POST /api/chat HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    wait_metric(&a, "rockchip_llama_engine_busy_slots", 1.0).await;
    drop(sock);
    wait_metric(&a, "rockchip_llama_active_requests", 0.0).await;
    wait_metric(&a, "rockchip_llama_engine_busy_slots", 0.0).await;
    let (_, next) = a.post("/v1/chat/completions", &question()).await;
    assert_eq!(next["choices"][0]["message"]["content"].as_str().unwrap(), reference);
}

#[tokio::test]
async fn full_queue_is_refused_with_429() {
    let a = Agent::serve_env(&[primary()], &["--parallel", "1", "--max-queue", "1"], &long_runs()).await;
    // One running (streaming keeps it busy), one waiting.
    let running = a.client.post(a.url("/v1/chat/completions")).json(&endless(true)).send().await.unwrap();
    wait_metric(&a, "rockchip_llama_active_requests", 1.0).await;
    let c = a.client.clone();
    let url = a.url("/v1/chat/completions");
    let waiting = tokio::spawn(async move { c.post(url).json(&question()).send().await.map(|r| r.status().as_u16()) });
    wait_metric(&a, "rockchip_llama_queue_depth", 1.0).await;
    let r = a.client.post(a.url("/v1/chat/completions")).json(&question()).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "rate_limit_error");
    let (s, b) = a.post("/api/generate", &json!({"model": primary_name(), "prompt": "x", "stream": false})).await;
    assert_eq!(s, 429);
    assert!(b["error"].is_string());
    assert!(a.metric("rockchip_llama_rejected_requests_total", primary_name()).await >= 2.0);
    // Freeing the running slot lets the queued request through.
    drop(running);
    assert_eq!(tokio::time::timeout(Duration::from_secs(60), waiting).await.unwrap().unwrap().unwrap(), 200);
}

#[tokio::test]
async fn parallel_slots_serve_concurrent_requests_correctly() {
    let a = Agent::serve(&[primary()], &["--parallel", "2"]).await;
    let q1 = question();
    let q2 = json!({"model": primary_name(), "messages": [{"role": "user", "content": "Name three colors."}], "max_tokens": 16, "temperature": 0});
    let (_, r1) = a.post("/v1/chat/completions", &q1).await;
    let (_, r2) = a.post("/v1/chat/completions", &q2).await;
    let (c1, c2) = tokio::join!(a.post("/v1/chat/completions", &q1), a.post("/v1/chat/completions", &q2));
    assert_eq!(c1.1["choices"][0]["message"]["content"], r1["choices"][0]["message"]["content"]);
    assert_eq!(c2.1["choices"][0]["message"]["content"], r2["choices"][0]["message"]["content"]);
}

/// `/internal/v1/load`, what the cluster gateway polls: the streaming request shows as running
/// while it generates, and the count is back to 0 once its client has gone.
#[tokio::test]
async fn load_shows_a_generating_request_until_it_ends() {
    let a = Agent::serve_env(&[primary()], &[], &long_runs()).await;
    assert_eq!(a.get("/internal/v1/load").await.1, json!({"models": []}), "nothing resident yet");
    let resp = a.client.post(a.url("/v1/chat/completions")).json(&endless(true)).send().await.unwrap();
    let mut body = resp.bytes_stream();
    assert!(!body.next().await.unwrap().unwrap().is_empty());
    let (s, load) = a.get("/internal/v1/load").await;
    assert_eq!(s, 200);
    let m = &load["models"][0];
    assert_eq!(
        (m["name"].as_str(), m["running"].as_u64(), m["waiting"].as_u64()),
        (Some(primary_name()), Some(1), Some(0)),
        "{load}"
    );
    assert!(m["slots"].as_u64().unwrap() >= 1, "{load}");
    drop(body);
    for _ in 0..200 {
        if a.get("/internal/v1/load").await.1["models"][0]["running"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cancelled request still counts as running: {}", a.get("/internal/v1/load").await.1);
}

#[tokio::test]
async fn memory_budget_evicts_the_idle_model() {
    // Room for either model, not both: SmolLM2 ≈ 98 MB + KV, Gemma ≈ 253 MB + KV. A .rkllm
    // file's estimate is its size (the runtime's NPU allocation is not known before init), and
    // the simulated files are a few hundred bytes: the budget is the larger file plus half the
    // smaller one.
    let (either, too_small) = if rkllm() {
        let (p, s) = (file_size(&primary()), file_size(&secondary()));
        (format!("{}", p.max(s) + p.min(s) / 2), format!("{}", s / 2))
    } else {
        ("420MiB".to_owned(), "64MiB".to_owned())
    };
    let a = Agent::serve(&[primary(), secondary()], &["--memory-budget", &either]).await;
    let (s, _) = a
        .post(
            "/api/generate",
            &json!({"model": primary_name(), "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, r) = a
        .post(
            "/api/generate",
            &json!({"model": secondary_name(), "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
        )
        .await;
    assert_eq!(s, 200, "a load that eviction allows never fails: {r}");
    let ps = a.get("/api/ps").await.1;
    let names: Vec<&str> = ps["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec![format!("{}:latest", secondary_name())], "the primary model should have been evicted");
    // A model that cannot fit even alone is refused clearly.
    let b = Agent::serve(&[secondary()], &["--memory-budget", &too_small]).await;
    let (s, r) = b.post("/api/generate", &json!({"model": secondary_name(), "prompt": "Hi", "stream": false})).await;
    assert_eq!(s, 400);
    assert!(r["error"].as_str().unwrap().contains("memory budget"), "{r}");
}

fn file_size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    // A long grace period: the point is that in-flight work finishes, not how fast a loaded CI
    // machine generates.
    let mut a = Agent::serve(&[primary()], &["--shutdown-grace", "600"]).await;
    let body = json!({"model": primary_name(), "messages": [{"role": "user", "content": "Count to fifty."}], "max_tokens": 12,
                      "ignore_eos": true, "temperature": 0, "stream": true});
    let resp = a.client.post(a.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let status = std::process::Command::new("kill").args(["-TERM", &a.pid().to_string()]).status().unwrap();
    assert!(status.success());
    // The in-flight stream still completes.
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(text.contains("[DONE]"), "stream was cut: {text}");
    assert!(text.contains("\"finish_reason\":\"length\""));
    assert_eq!(a.wait_exit(Duration::from_secs(60)), Some(0), "log:\n{}", a.log_text());
    // No new connections after that.
    let addr = a.base.trim_start_matches("http://").to_owned();
    let refused = std::net::TcpStream::connect(&addr).map(|mut s| {
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut buf = [0u8; 16];
        s.read(&mut buf).unwrap_or(0)
    });
    assert!(refused.is_err() || matches!(refused, Ok(0)));
}
