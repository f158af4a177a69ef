//! The gateway's proxy against fake boards, in process and without Kubernetes: the table is set
//! directly (the watches are tested in the cluster tier, tests/cluster/gateway.py). Each fake
//! board is a real HTTP server on 127.0.0.1 whose behaviour the test switches: answer, refuse
//! with 429, cut the stream after its first chunk, stream slowly forever, hang.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use crds::RoutingStrategy;
use futures::StreamExt;
use rockchip_llama_operator::gateway::{
    self,
    auth::ClientKeys,
    table::{Replica, Route, Table},
};
use serde_json::{Value, json};

#[path = "common/gateway.rs"]
mod harness;
use harness::{Harness, dead_endpoint};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Answer,
    Busy,
    CutAfterFirst,
    SlowForever,
    Hang,
    /// Records the request's content, then answers only when the test releases it.
    Gated,
}

struct Fake {
    name: &'static str,
    mode: Mutex<Mode>,
    hits: AtomicUsize,
    /// Set when a slow stream's body was dropped (the gateway closed the connection).
    dropped: Arc<AtomicBool>,
    /// `Gated`: the requests' contents in the order they reached the board, and the gate.
    order: Mutex<Vec<String>>,
    gate: tokio::sync::Semaphore,
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn load() -> axum::Json<Value> {
    axum::Json(json!({"models": [{"name": "m", "running": 0, "waiting": 0, "slots": 1}]}))
}

async fn chat(State(f): State<Arc<Fake>>, body: Bytes) -> Response {
    f.hits.fetch_add(1, Ordering::SeqCst);
    let mode = *f.mode.lock().unwrap();
    match mode {
        Mode::Gated => {
            let v: Value = serde_json::from_slice(&body).unwrap();
            f.order.lock().unwrap().push(v["messages"][0]["content"].as_str().unwrap_or_default().to_owned());
            f.gate.acquire().await.unwrap().forget();
            axum::Json(json!({"choices": [{"message": {"role": "assistant", "content": "ok"}}]})).into_response()
        }
        Mode::Answer => axum::Json(json!({
            "choices": [{"message": {"role": "assistant", "content": format!("from {}", f.name)}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }))
        .into_response(),
        Mode::Busy => {
            (StatusCode::TOO_MANY_REQUESTS, axum::Json(json!({"error": {"message": "full"}}))).into_response()
        }
        Mode::CutAfterFirst => {
            // The first chunk, then (after it has been flushed) the board dies.
            let s = futures::stream::unfold(0u8, |n| async move {
                match n {
                    0 => Some((Ok(Bytes::from_static(b"data: {\"first\":true}\n\n")), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some((Err(std::io::Error::other("board died")), 2))
                    }
                    _ => None,
                }
            });
            Response::new(Body::from_stream(s))
        }
        Mode::SlowForever => {
            let flag = DropFlag(f.dropped.clone());
            let s = futures::stream::unfold((0u64, flag), |(n, flag)| async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some((Ok::<_, std::io::Error>(Bytes::from(format!("data: {n}\n\n"))), (n + 1, flag)))
            });
            Response::new(Body::from_stream(s))
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late".into_response()
        }
    }
}

async fn fake_board(name: &'static str, mode: Mode) -> (Arc<Fake>, String) {
    let f = Arc::new(Fake {
        name,
        mode: Mutex::new(mode),
        hits: AtomicUsize::new(0),
        dropped: Arc::default(),
        order: Mutex::default(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let app = Router::new()
        .route("/internal/v1/load", get(load))
        .route("/v1/chat/completions", post(chat))
        .route("/api/chat", post(chat))
        .with_state(f.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (f, format!("http://{addr}"))
}

/// A port nothing listens on.
fn route(model: &str, strategy: RoutingStrategy, replicas: &[(&str, &str)], desired: i32) -> Route {
    Route {
        key: format!("ns/{model}"),
        model: model.into(),
        strategy,
        prefix_chars: 64,
        desired,
        autoscaled: false,
        created: 0,
        replicas: replicas
            .iter()
            .map(|(b, e)| Replica { board: (*b).into(), endpoint: (*e).into(), slots: 1 })
            .collect(),
    }
}

async fn start(mut config: gateway::Config, routes: Vec<Route>) -> Harness {
    config.poll_interval = Duration::from_millis(50);
    let mut table = Table::default();
    for r in routes {
        table.routes.insert(r.model.clone(), r);
    }
    harness::serve(config, table, true).await
}

fn config() -> gateway::Config {
    gateway::Config::new("127.0.0.1:0".parse::<SocketAddr>().unwrap(), "ns")
}

fn body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

impl Harness {
    async fn chat(&self, model: &str) -> reqwest::Response {
        self.client.post(format!("{}/v1/chat/completions", self.url)).json(&body(model)).send().await.unwrap()
    }

    fn metrics(&self) -> String {
        self.gw.metrics.render()
    }
}

fn board_of(r: &reqwest::Response) -> String {
    r.headers().get("x-rockchip-llama-board").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn a_dead_board_is_retried_around_and_ejected() {
    let (b, e) = fake_board("b", Mode::Answer).await;
    let dead = dead_endpoint().await;
    let h = start(config(), vec![route("m", RoutingStrategy::RoundRobin, &[("a", &dead), ("b", &e)], 2)]).await;
    for _ in 0..6 {
        let r = h.chat("m").await;
        assert_eq!(r.status(), 200);
        assert_eq!(board_of(&r), "b", "every request ends on the live board");
    }
    assert_eq!(b.hits.load(Ordering::SeqCst), 6);
    let m = h.metrics();
    assert!(m.contains("rockchip_llama_gateway_ejections_total{board=\"a\"}"), "{m}");
    assert!(m.contains("cause=\"connect\""), "{m}");
    assert!(m.contains("reason=\"retry\""), "{m}");
}

#[tokio::test]
async fn a_complete_non_streamed_answer_is_counted_as_done_not_as_a_disconnect() {
    let (_b, e) = fake_board("b", Mode::Answer).await;
    let h = start(config(), vec![route("m", RoutingStrategy::RoundRobin, &[("b", &e)], 1)]).await;
    for _ in 0..3 {
        let r = h.chat("m").await;
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body");
    }
    let m = h.metrics();
    assert!(m.contains("rockchip_llama_gateway_request_duration_seconds_count{model=\"m\",board=\"b\"} 3"), "{m}");
    assert!(!m.contains("rockchip_llama_gateway_client_disconnects_total{"), "{m}");
}

#[tokio::test]
async fn a_busy_board_passes_the_request_on_and_the_last_refusal_is_returned() {
    let (a, ea) = fake_board("a", Mode::Busy).await;
    let (b, eb) = fake_board("b", Mode::Answer).await;
    let h = start(config(), vec![route("m", RoutingStrategy::RoundRobin, &[("a", &ea), ("b", &eb)], 2)]).await;
    for _ in 0..4 {
        let r = h.chat("m").await;
        assert_eq!((r.status().as_u16(), board_of(&r)), (200, "b".to_owned()));
    }
    assert!(a.hits.load(Ordering::SeqCst) >= 1);
    *b.mode.lock().unwrap() = Mode::Busy;
    let r = h.chat("m").await;
    assert_eq!(r.status(), 429, "both refuse: the board's own 429 reaches the client");
    assert!(h.metrics().contains("cause=\"busy\""));
}

#[tokio::test]
async fn boards_failing_everywhere_is_a_502() {
    let (d1, d2) = (dead_endpoint().await, dead_endpoint().await);
    let h = start(config(), vec![route("m", RoutingStrategy::LeastLoad, &[("a", &d1), ("b", &d2)], 2)]).await;
    let r = h.chat("m").await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("failed before answering"), "{e}");
}

#[tokio::test]
async fn never_a_retry_once_a_byte_was_sent() {
    let (a, ea) = fake_board("a", Mode::CutAfterFirst).await;
    let (b, eb) = fake_board("b", Mode::CutAfterFirst).await;
    let h = start(config(), vec![route("m", RoutingStrategy::RoundRobin, &[("a", &ea), ("b", &eb)], 2)]).await;
    let r = h.chat("m").await;
    assert_eq!(r.status(), 200);
    let mut s = r.bytes_stream();
    let first = s.next().await.expect("first chunk").expect("first chunk ok");
    assert!(first.starts_with(b"data: {\"first\":true}"));
    // The rest is an error (the cut), not a second board's answer.
    let mut rest_ok = Vec::new();
    let mut errored = false;
    while let Some(c) = s.next().await {
        match c {
            Ok(c) => rest_ok.extend_from_slice(&c),
            Err(_) => errored = true,
        }
    }
    assert!(errored || rest_ok.is_empty(), "the cut reaches the client: {rest_ok:?}");
    assert_eq!(a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst), 1, "one board, once");
}

#[tokio::test]
async fn a_client_leaving_closes_the_boards_stream() {
    let (a, ea) = fake_board("a", Mode::SlowForever).await;
    let h = start(config(), vec![route("m", RoutingStrategy::LeastLoad, &[("a", &ea)], 1)]).await;
    let r = h.chat("m").await;
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    s.next().await.unwrap().unwrap();
    assert!(!a.dropped.load(Ordering::SeqCst));
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !a.dropped.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.dropped.load(Ordering::SeqCst), "the board's stream was not dropped");
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.gw.loads().board("a").in_flight("m") != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.gw.loads().board("a").in_flight("m"), 0, "the slot is given back");
    assert!(h.metrics().contains("rockchip_llama_gateway_client_disconnects_total{model=\"m\",board=\"a\"} 1"));
}

#[tokio::test]
async fn a_full_model_queues_boundedly_then_429s() {
    let (_a, ea) = fake_board("a", Mode::Hang).await;
    let mut c = config();
    c.board_queue = 0;
    c.queue_depth = 1;
    c.queue_timeout = Duration::from_millis(600);
    let h = Arc::new(start(c, vec![route("m", RoutingStrategy::LeastLoad, &[("a", &ea)], 1)]).await);
    // 1: takes the board's only slot and hangs there.
    let first = tokio::spawn({
        let h = h.clone();
        async move { h.chat("m").await.status() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 2: waits in the queue; 3: the queue is full → 429 at once.
    let second = tokio::spawn({
        let h = h.clone();
        async move {
            let t = Instant::now();
            let r = h.chat("m").await;
            (r.status(), t.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let r = h.client.post(format!("{}/api/chat", h.url)).json(&body("m")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(t.elapsed() < Duration::from_millis(500), "refused at once");
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("already wait"), "Ollama shape: {e}");
    let (status, waited) = second.await.unwrap();
    assert_eq!(status, 429, "the queued request gives up after --queue-timeout");
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    first.abort();
}

// Several threads: waiters woken together race for a freed slot there, as in the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_requests_are_served_in_arrival_order() {
    let (a, ea) = fake_board("a", Mode::Gated).await;
    let mut c = config();
    c.board_queue = 0;
    let h = Arc::new(start(c, vec![route("m", RoutingStrategy::LeastLoad, &[("a", &ea)], 1)]).await);
    let send = |n: usize| {
        let h = h.clone();
        tokio::spawn(async move {
            let body = json!({"model": "m", "messages": [{"role": "user", "content": n.to_string()}]});
            h.client.post(format!("{}/v1/chat/completions", h.url)).json(&body).send().await.unwrap().status()
        })
    };
    // 0 takes the board's only slot; 1..=12 queue at the gateway, one after the other.
    let mut sent = vec![send(0)];
    for n in 1..=12 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        sent.push(send(n));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.order.lock().unwrap().len(), 1, "only one request on the board at a time");
    // Each release frees the slot; the first in line must take it, not whichever wakes first.
    for _ in 0..=12 {
        a.gate.add_permits(1);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for s in sent {
        assert_eq!(s.await.unwrap(), 200);
    }
    let order: Vec<String> = a.order.lock().unwrap().clone();
    assert_eq!(order, (0..=12).map(|n| n.to_string()).collect::<Vec<_>>(), "first come, first served");
}

// The default config (`board_queue` 1): LeastLoad still sends a board a request only into a free
// slot, so a waiting request goes to whichever board frees first; PrefixAffinity lets one more
// wait on the board that holds its prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_load_binds_late_and_prefix_affinity_may_wait_on_its_board() {
    let (a, ea) = fake_board("a", Mode::Gated).await;
    let (b, eb) = fake_board("b", Mode::Gated).await;
    let h = Arc::new(
        start(
            config(),
            vec![
                route("m", RoutingStrategy::LeastLoad, &[("a", &ea), ("b", &eb)], 2),
                route("p", RoutingStrategy::PrefixAffinity, &[("a", &ea)], 1),
            ],
        )
        .await,
    );
    let send = |model: &'static str, n: usize| {
        let h = h.clone();
        tokio::spawn(async move {
            let body = json!({"model": model, "messages": [{"role": "user", "content": n.to_string()}]});
            h.client.post(format!("{}/v1/chat/completions", h.url)).json(&body).send().await.unwrap().status()
        })
    };
    let on = |f: &Fake| f.order.lock().unwrap().clone();
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push(send("m", n));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(on(&a).len() + on(&b).len(), 2, "a third request waits at the gateway: {:?} {:?}", on(&a), on(&b));
    // Free the board that took request 1: request 2 must go there, not queue behind request 0.
    let (freed, other) = if on(&a) == ["1"] { (&a, &b) } else { (&b, &a) };
    freed.gate.add_permits(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(on(freed), ["1", "2"], "the waiting request went to the board that freed first");
    assert_eq!(on(other), ["0"]);
    freed.gate.add_permits(1);
    other.gate.add_permits(1);
    for s in sent.drain(..) {
        assert_eq!(s.await.unwrap(), 200);
    }

    // PrefixAffinity, one board with one slot: the second request waits on the board itself.
    let before = on(&a).len();
    sent.push(send("p", 7));
    tokio::time::sleep(Duration::from_millis(100)).await;
    sent.push(send("p", 7));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(on(&a).len() - before, 2, "--board-queue 1 lets one more wait on the board");
    a.gate.add_permits(2);
    for s in sent {
        assert_eq!(s.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn unknown_unplaced_unauthorised_and_forbidden_in_each_shape() {
    let (_a, ea) = fake_board("a", Mode::Answer).await;
    let mut c = config();
    c.keys = Some(ClientKeys::parse("all-models\nonly-m m").unwrap());
    let h = start(
        c,
        vec![
            route("m", RoutingStrategy::LeastLoad, &[("a", &ea)], 1),
            route("zero", RoutingStrategy::LeastLoad, &[], 0),
            route("pending", RoutingStrategy::LeastLoad, &[], 2),
        ],
    )
    .await;
    let post = |path: &str, key: &str, model: &str| {
        h.client.post(format!("{}{path}", h.url)).bearer_auth(key).json(&body(model)).send()
    };
    let r = post("/v1/chat/completions", "all-models", "nope").await.unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "model_not_found");
    assert!(e["error"]["message"].as_str().unwrap().contains("nope"));
    let r = post("/api/chat", "all-models", "nope").await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("nope"));
    let r = post("/v1/chat/completions", "all-models", "zero").await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("scaled to zero"));
    let r = post("/api/chat", "all-models", "pending").await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("no Ready replica"));
    let r = post("/v1/chat/completions", "wrong", "m").await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "authentication_error");
    let r = post("/api/chat", "only-m", "zero").await.unwrap();
    assert_eq!(r.status(), 403);
    let r = post("/api/chat", "only-m", "m").await.unwrap();
    assert_eq!(r.status(), 200);
    let models: Value =
        h.client.get(format!("{}/v1/models", h.url)).bearer_auth("only-m").send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m"], "a limited key sees only its models");
    let r = h.client.get(format!("{}/", h.url)).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "Ollama is running", "GET / needs no key");
    let r = h
        .client
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth("all-models")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn least_load_spreads_a_burst_before_any_report() {
    let (a, ea) = fake_board("a", Mode::Hang).await;
    let (b, eb) = fake_board("b", Mode::Hang).await;
    let (c, ec) = fake_board("c", Mode::Hang).await;
    let h = Arc::new(
        start(config(), vec![route("m", RoutingStrategy::LeastLoad, &[("a", &ea), ("b", &eb), ("c", &ec)], 3)]).await,
    );
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.chat("m").await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let hits = || [&a, &b, &c].map(|f| f.hits.load(Ordering::SeqCst));
    while hits().iter().sum::<usize>() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hits(), [1, 1, 1], "three requests at once: one per board, from the gateway's own counts");
    for t in tasks {
        t.abort();
    }
}
