//! Requests held while an autoscaled deployment has no Ready replica, and the demand endpoint
//! that shows them, against fake boards in process (no Kubernetes: the test installs the table a
//! replica's arrival would produce). Held streams are read byte for byte, and by the official
//! openai and ollama Python clients when the test venv is there (`hack/pyenv.sh`;
//! `ROCKCHIP_LLAMA_TEST_PYTHON` names another interpreter).

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    response::{IntoResponse, Response},
    routing::post,
};
use crds::RoutingStrategy;
use futures::StreamExt;
use rockchip_llama_operator::{
    demand::{self, Demand, ModelDemand},
    gateway::{
        self,
        auth::ClientKeys,
        table::{Replica, Route, Table},
    },
};
use serde_json::{Value, json};

#[path = "common/gateway.rs"]
mod harness;
use harness::{Harness, dead_endpoint};

const TOKEN: &str = "cluster-secret";

/// A board that answers in the shape asked: SSE or JSON on the OpenAI routes, NDJSON or JSON
/// on Ollama's; `hang` makes it never answer.
async fn board(hang: bool) -> String {
    async fn answer(path: &'static str, hang: bool, body: Bytes) -> Response {
        if hang {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        let stream = v["stream"].as_bool();
        let chunks: Vec<String> = match path {
            "/v1/chat/completions" if stream == Some(true) => vec![
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hel\"},\"finish_reason\":null}]}\n\n".into(),
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n".into(),
                "data: [DONE]\n\n".into(),
            ],
            "/v1/chat/completions" => {
                return axum::Json(json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]}))
                .into_response();
            }
            "/api/chat" if stream != Some(false) => vec![
                "{\"model\":\"m\",\"created_at\":\"2026-11-28T10:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"hel\"},\"done\":false}\n".into(),
                "{\"model\":\"m\",\"created_at\":\"2026-11-28T10:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"lo\"},\"done\":true,\"done_reason\":\"stop\"}\n".into(),
            ],
            "/api/generate" if stream != Some(false) => vec![
                "{\"model\":\"m\",\"created_at\":\"2026-11-28T10:00:00Z\",\"response\":\"hel\",\"done\":false}\n".into(),
                "{\"model\":\"m\",\"created_at\":\"2026-11-28T10:00:00Z\",\"response\":\"lo\",\"done\":true}\n".into(),
            ],
            _ => {
                return axum::Json(json!({"model": "m", "created_at": "2026-11-28T10:00:00Z",
                    "message": {"role": "assistant", "content": "hello"}, "response": "hello", "done": true}))
                .into_response();
            }
        };
        let s = futures::stream::iter(chunks).then(|c| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, std::io::Error>(Bytes::from(c))
        });
        Response::new(Body::from_stream(s))
    }
    let app = Router::new()
        .route("/v1/chat/completions", post(move |b: Bytes| answer("/v1/chat/completions", hang, b)))
        .route("/api/chat", post(move |b: Bytes| answer("/api/chat", hang, b)))
        .route("/api/generate", post(move |b: Bytes| answer("/api/generate", hang, b)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A port nothing listens on.
fn route(endpoints: &[&str]) -> Route {
    Route {
        key: "ns/m".into(),
        model: "m".into(),
        strategy: RoutingStrategy::LeastLoad,
        prefix_chars: 64,
        desired: 0,
        autoscaled: true,
        created: 0,
        replicas: endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| Replica { board: format!("b{i}"), endpoint: (*e).into(), slots: 1 })
            .collect(),
    }
}

fn config() -> gateway::Config {
    let mut c = gateway::Config::new("127.0.0.1:0".parse::<SocketAddr>().unwrap(), "ns");
    c.poll_interval = Duration::from_millis(50);
    c.stream_keepalive = Duration::from_millis(100);
    c.scale_from_zero_timeout = Duration::from_secs(20);
    c.cluster_token = Some(TOKEN.into());
    c
}

async fn start(config: gateway::Config) -> Harness {
    harness::serve(config, table(&[]), false).await
}

/// The table with the deployment served by `endpoints` (none: scaled to zero).
fn table(endpoints: &[&str]) -> Table {
    let mut t = Table::default();
    t.routes.insert("m".into(), route(endpoints));
    t
}

impl Harness {
    /// Installs the table with the deployment served by `endpoints` (none: scaled to zero).
    fn serve_table(&self, endpoints: &[&str]) {
        self.gw.set_table(table(endpoints));
    }

    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.url)).json(&body)
    }

    async fn demand(&self) -> ModelDemand {
        let r = self.client.get(format!("{}{}", self.url, demand::PATH)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Demand>().await.unwrap().models.get("ns/m").copied().unwrap_or_default()
    }

    /// Waits until the demand endpoint shows `want`.
    async fn demand_becomes(&self, want: ModelDemand) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = self.demand().await;
        while seen != want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen = self.demand().await;
        }
        assert_eq!(seen, want);
    }
}

fn chat(stream: Option<bool>) -> Value {
    let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    if let Some(s) = stream {
        v["stream"] = json!(s);
    }
    v
}

const HELD: ModelDemand = ModelDemand { waiting: 1, inflight: 0 };
const NONE: ModelDemand = ModelDemand { waiting: 0, inflight: 0 };

#[tokio::test]
async fn a_held_request_is_served_once_a_replica_appears() {
    let h = Arc::new(start(config()).await);
    let e = board(false).await;
    let sent = tokio::spawn({
        let h = h.clone();
        async move { h.post("/v1/chat/completions", chat(None)).send().await.unwrap() }
    });
    h.demand_becomes(HELD).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sent.is_finished(), "held, not refused");
    h.serve_table(&[&e]);
    let r = sent.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["choices"][0]["message"]["content"], "hello");
    h.demand_becomes(NONE).await;
}

/// The chunks of a streamed answer as they arrive: (bytes, instant).
async fn chunks(r: reqwest::Response) -> Vec<(Bytes, Instant)> {
    let mut out = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(c) = tokio::time::timeout(Duration::from_secs(10), s.next()).await.expect("never a hang") {
        out.push((c.expect("the stream ends cleanly"), Instant::now()));
    }
    out
}

#[tokio::test]
async fn a_held_sse_stream_gets_comments_then_the_answer() {
    let h = Arc::new(start(config()).await);
    let e = board(false).await;
    let r = h.post("/v1/chat/completions", chat(Some(true))).send().await.unwrap();
    // Headers at once, before any replica exists.
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let read = tokio::spawn(chunks(r));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let added = Instant::now();
    h.serve_table(&[&e]);
    let got = read.await.unwrap();
    let before: String =
        got.iter().filter(|(_, t)| *t < added).map(|(c, _)| String::from_utf8_lossy(c).into_owned()).collect();
    assert!(before.matches(": waiting for model 'm' to start\n\n").count() >= 3, "{before:?}");
    assert_eq!(before.replace(": waiting for model 'm' to start\n\n", ""), "", "only comments while held");
    // As an SSE client reads it: comments skipped, every data line JSON until [DONE].
    let text: String = got.iter().map(|(c, _)| String::from_utf8_lossy(c).into_owned()).collect();
    let data: Vec<&str> = text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let content: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(content, "hello");
    h.demand_becomes(NONE).await;
}

#[tokio::test]
async fn held_ollama_streams_get_empty_chunks_of_their_shape_then_the_answer() {
    let h = Arc::new(start(config()).await);
    let e = board(false).await;
    for (path, field) in [("/api/chat", "/message/content"), ("/api/generate", "/response")] {
        h.serve_table(&[]);
        // No `stream`: Ollama streams by default.
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi"});
        let r = h.post(path, body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/x-ndjson");
        let read = tokio::spawn(chunks(r));
        tokio::time::sleep(Duration::from_millis(350)).await;
        h.serve_table(&[&e]);
        let text: String = read.await.unwrap().iter().map(|(c, _)| String::from_utf8_lossy(c).into_owned()).collect();
        // Every line is a JSON object of the endpoint's shape (what the ollama client parses).
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
        let empty = lines.iter().take_while(|v| v.pointer(field) == Some(&json!(""))).count();
        assert!(empty >= 2, "{path}: keep-alive chunks first: {text}");
        assert!(lines[..empty].iter().all(|v| v["done"] == false && v["model"] == "m"), "{text}");
        let answer: String =
            lines.iter().map(|v| v.pointer(field).and_then(Value::as_str).unwrap().to_owned()).collect();
        assert_eq!(answer, "hello", "{path}");
        assert_eq!(lines.last().unwrap()["done"], true);
    }
}

#[tokio::test]
async fn too_long_a_hold_is_a_503_saying_the_model_is_starting() {
    let mut c = config();
    c.scale_from_zero_timeout = Duration::from_millis(600);
    let h = start(c).await;
    for (path, stream) in [("/v1/chat/completions", None), ("/api/chat", Some(false))] {
        let t = Instant::now();
        let r = h.post(path, chat(stream)).send().await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(550), "held first: {:?}", t.elapsed());
        assert_eq!(r.status(), 503, "{path}");
        assert!(r.headers().contains_key("retry-after"));
        let e: Value = r.json().await.unwrap();
        let message = if path == "/api/chat" { &e["error"] } else { &e["error"]["message"] };
        let message = message.as_str().unwrap_or_else(|| panic!("{path} shape: {e}"));
        assert!(message.contains("is starting (scaled from zero)") && message.contains("within 0.6 s"), "{message}");
    }
    // Streams: headers went out, so the failure comes in the stream, then it ends.
    let r = h.post("/v1/chat/completions", chat(Some(true))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text: String = chunks(r).await.iter().map(|(c, _)| String::from_utf8_lossy(c).into_owned()).collect();
    let error = text.split("\n\n").find_map(|e| e.strip_prefix("data: {")).expect("an error event");
    let v: Value = serde_json::from_str(&format!("{{{error}")).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("is starting"), "{v}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let r = h.post("/api/generate", json!({"model": "m", "prompt": "hi"})).send().await.unwrap();
    let text: String = chunks(r).await.iter().map(|(c, _)| String::from_utf8_lossy(c).into_owned()).collect();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(last["error"].as_str().unwrap().contains("is starting"), "{text}");
    h.demand_becomes(NONE).await;
}

#[tokio::test]
async fn a_board_failing_before_its_first_byte_is_retried_or_reported_in_the_stream() {
    let h = Arc::new(start(config()).await);
    let (dead, live) = (dead_endpoint().await, board(false).await);
    // A dead replica and a live one: the retry still happens behind the keep-alives.
    let r = h.post("/api/chat", chat(None)).send().await.unwrap();
    let read = tokio::spawn(chunks(r));
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.serve_table(&[&dead, &live]);
    let text: String = read.await.unwrap().iter().map(|(c, _)| String::from_utf8_lossy(c).into_owned()).collect();
    assert!(text.contains("\"content\":\"lo\""), "answered by the live board: {text}");
    // Only a dead replica: the failure in Ollama's shape, and the stream ends.
    h.serve_table(&[]);
    let r = h.post("/api/chat", chat(None)).send().await.unwrap();
    let read = tokio::spawn(chunks(r));
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.serve_table(&[&dead]);
    let text: String = read.await.unwrap().iter().map(|(c, _)| String::from_utf8_lossy(c).into_owned()).collect();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(last["error"].as_str().unwrap().contains("failed before answering"), "{text}");
}

#[tokio::test]
async fn a_client_leaving_while_held_leaves_the_queue_at_once() {
    let h = Arc::new(start(config()).await);
    // Not streaming: the client gives up on the request.
    let sent = tokio::spawn({
        let h = h.clone();
        async move { h.post("/v1/chat/completions", chat(None)).send().await }
    });
    h.demand_becomes(HELD).await;
    sent.abort();
    h.demand_becomes(NONE).await;
    // Streaming: the client read a keep-alive, then closed.
    let r = h.post("/v1/chat/completions", chat(Some(true))).send().await.unwrap();
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    h.demand_becomes(HELD).await;
    drop(s);
    h.demand_becomes(NONE).await;
    assert_eq!(h.gw.queued("ns/m"), 0);
}

#[tokio::test]
async fn demand_counts_waiting_and_inflight_and_wants_the_cluster_token() {
    let mut c = config();
    c.board_queue = 0;
    // Client keys do not open it, and are not needed: the leader has only the cluster token.
    c.keys = Some(ClientKeys::parse("client-key").unwrap());
    let h = Arc::new(start(c).await);
    let get = |token: Option<&str>| {
        let r = h.client.get(format!("{}{}", h.url, demand::PATH));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
        .send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some("client-key")).await.unwrap().status(), 401);
    let r = get(Some("wrong")).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "authentication_error");
    let idle: Demand = get(Some(TOKEN)).await.unwrap().json().await.unwrap();
    assert!(idle.models.is_empty(), "nothing listed while idle: {idle:?}");
    // Two held; a replica with one slot comes: one in flight (it hangs), one waits for it.
    let send = || {
        let h = h.clone();
        tokio::spawn(async move { h.post("/v1/chat/completions", chat(None)).bearer_auth("client-key").send().await })
    };
    let sent = [send(), send()];
    h.demand_becomes(ModelDemand { waiting: 2, inflight: 0 }).await;
    let hanging = board(true).await;
    h.serve_table(&[&hanging]);
    h.demand_becomes(ModelDemand { waiting: 1, inflight: 1 }).await;
    for s in sent {
        s.abort();
    }
    h.demand_becomes(NONE).await;
}

#[tokio::test]
async fn without_autoscaling_no_replica_is_still_refused_at_once() {
    let h = start(config()).await;
    let mut t = Table::default();
    t.routes.insert("m".into(), Route { autoscaled: false, ..route(&[]) });
    h.gw.set_table(t);
    let t0 = Instant::now();
    let r = h.post("/v1/chat/completions", chat(Some(true))).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("scaled to zero"));
}

/// The test venv's interpreter with the openai and ollama clients, if there is one.
fn python() -> Option<PathBuf> {
    let py = std::env::var_os("ROCKCHIP_LLAMA_TEST_PYTHON").map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("ROCKCHIP_LLAMA_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rockchip-llama")))?;
        Some(cache.join("venv/bin/python"))
    })?;
    let ok = std::process::Command::new(&py).args(["-c", "import openai, ollama"]).output().ok()?.status.success();
    ok.then_some(py)
}

/// Each official client streams one chat; both must see "hello" and ignore the keep-alives.
const OPENAI: &str = r#"
import sys, openai
oai = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="x", max_retries=0)
stream = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
text = "".join(c.choices[0].delta.content or "" for c in stream)
assert text == "hello", text
print("ok")
"#;
const OLLAMA: &str = r#"
import sys, ollama
chunks = list(ollama.Client(host=sys.argv[1]).chat(model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
assert "".join(c.message.content for c in chunks) == "hello", chunks
assert sum(1 for c in chunks if c.message.content == "") >= 2, chunks
print("ok")
"#;

#[tokio::test]
async fn the_official_clients_read_a_held_stream() {
    let Some(py) = python() else {
        eprintln!("no test venv with the openai and ollama clients (hack/pyenv.sh): byte-level checks only");
        return;
    };
    let h = start(config()).await;
    let e = board(false).await;
    for script in [OPENAI, OLLAMA] {
        h.serve_table(&[]);
        let child = tokio::process::Command::new(&py)
            .args(["-c", script, &h.url])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Held until the replica appears, keep-alives flowing.
        h.demand_becomes(HELD).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.serve_table(&[&e]);
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && stdout.trim() == "ok", "stdout: {stdout}\nstderr: {stderr}");
    }
}
