//! In-process tests of the whole agent but the engine: the HTTP layer, the serve layer and the scheduler on a mock engine
//! (`router().oneshot(...)`): the cases that need no real model. Engines themselves are tested
//! against llama.cpp and rkllm-sim in `agent/tests/`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{
    app::{Agent, AgentConfig, AgentError, EngineChoice},
    config::Config,
    engine::{EngineError, mock::MockEngine},
    keepalive::KeepAlive,
    models::{Format, ModelArgs, ModelEntry},
    node::{BoardArgs, TuneMode},
    npu::NpuArgs,
    sched::Engines,
    size::Size,
    status::RuntimeState,
};

const MODEL: &str = "mock-model";

struct Harness {
    agent: Agent,
    router: Router,
    dir: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn harness_with(engine: MockEngine, tweak: impl FnOnce(&mut AgentConfig)) -> Harness {
    try_harness_with(engine, tweak).unwrap()
}

/// The harness, or why the agent refused to start (its directory is removed either way).
fn try_harness_with(engine: MockEngine, tweak: impl FnOnce(&mut AgentConfig)) -> Result<Harness, AgentError> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("rl-api-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        models: ModelArgs { models_dir: dir.clone(), config: None, catalog: None },
        default_model: None,
        api_key_file: None,
        max_queue: 8,
        parallel: 1,
        memory_budget: Size::Bytes(1 << 30),
        engine: EngineChoice::Llama,
        threads: Some(1),
        prefix_cache: true,
        keep_alive: KeepAlive::For(Duration::from_secs(300)),
        shutdown_grace: Duration::from_secs(1),
        npu: <NpuOnly as clap::Parser>::parse_from(["npu"]).into(),
        board: BoardArgs {
            sysfs_root: dir.clone(),
            tune: TuneMode::Off,
            tune_gpu: false,
            tune_cpuidle: false,
            tune_idle_restore: "10m".into(),
        },
        store: crate::store::StoreOptions::default(),
        cluster_token: None,
        require_cluster_token: false,
        cluster: None,
    };
    tweak(&mut config);
    let size = engine.size_bytes;
    let engines = Engines { llama: Some(Arc::new(engine)), rkllm: Err("not in these tests".into()) };
    let info = board::BoardInfo::detect(&board::Sysfs::new(&config.board.sysfs_root));
    let runtime = RuntimeState { rkllm: None, reason: Some("mock".into()) };
    let agent = match Agent::with_engines(config, info, engines, runtime) {
        Ok(a) => a,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    for name in [MODEL, "other-model"] {
        let e = ModelEntry::unscanned(name, dir.join(format!("{name}.gguf")), Format::Gguf, size, &Config::default());
        agent.registry.insert(e);
    }
    let router = agent.router();
    Ok(Harness { agent, router, dir })
}

fn harness(engine: MockEngine) -> Harness {
    harness_with(engine, |_| {})
}

/// `NpuArgs` parsed from no flags: the defaults.
#[derive(clap::Parser)]
struct NpuOnly {
    #[command(flatten)]
    npu: NpuArgs,
}

impl From<NpuOnly> for NpuArgs {
    fn from(n: NpuOnly) -> Self {
        n.npu
    }
}

async fn call(router: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = to_bytes(resp.into_body(), 1 << 24).await.unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn post(path: &str, body: &Value) -> Request<Body> {
    Request::post(path).header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())).unwrap()
}

fn chat(stream: bool) -> Value {
    json!({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "Hi"}]})
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_owned).collect()
}

#[tokio::test]
async fn chat_answers_in_both_apis() {
    let h = harness(MockEngine::default());
    let (s, _, b) = call(&h.router, post("/v1/chat/completions", &chat(false))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the mock");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    let (s, _, b) = call(&h.router, post("/api/chat", &chat(false))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["message"]["content"], "Hello from the mock");
    assert_eq!((v["done"].as_bool(), v["eval_count"].as_u64()), (Some(true), Some(4)));
}

#[tokio::test]
async fn sse_ends_with_one_done_and_ndjson_with_done_true() {
    let h = harness(MockEngine::default());
    let (s, _, b) = call(&h.router, post("/v1/chat/completions", &chat(true))).await;
    assert_eq!(s, StatusCode::OK);
    let data = sse_data(&b);
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1, "{b}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Hello from the mock");
    let (_, _, b) = call(&h.router, post("/api/generate", &json!({"model": MODEL, "prompt": "Hi"}))).await;
    let lines: Vec<Value> = b.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.last().unwrap()["done"], true);
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));
}

#[tokio::test]
async fn errors_come_in_each_apis_shape() {
    let h = harness(MockEngine::default());
    let (s, _, b) = call(&h.router, post("/v1/chat/completions", &json!({"model": MODEL, "messages": []}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["error"]["param"], "messages");
    let (s, _, b) = call(
        &h.router,
        post("/v1/chat/completions", &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!((v["error"]["code"].as_str(), v["error"]["param"].as_str()), (Some("model_not_found"), Some("model")));
    let (s, _, b) =
        call(&h.router, post("/api/chat", &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]})))
            .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap(), json!({"error": "model 'nope' not found"}));
    let bad = Request::post("/api/chat").body(Body::from("{not json")).unwrap();
    let (s, _, b) = call(&h.router, bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b.starts_with("{\"error\":\"invalid JSON body"), "{b}");
}

#[tokio::test]
async fn internal_errors_are_logged_not_shown_and_name_the_request_id() {
    let engine = MockEngine::default();
    engine.fail_loads.lock().unwrap().push(EngineError::Decode("/very/secret/path.c:42: disk on fire".into()));
    let h = harness(engine);
    let req = Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", "trace-42")
        .body(Body::from(chat(false).to_string()))
        .unwrap();
    let (s, headers, b) = call(&h.router, req).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(headers["x-request-id"], "trace-42", "an incoming id is kept");
    assert!(!b.contains("secret") && !b.contains("fire"), "{b}");
    assert!(b.contains("trace-42"), "{b}");
    // The next request loads fine and gets an id of its own.
    let (s, headers, _) = call(&h.router, post("/v1/chat/completions", &chat(false))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["x-request-id"].len(), 16);
}

#[tokio::test]
async fn api_keys_guard_everything_but_health() {
    let h = harness_with(MockEngine::default(), |c| {
        let f = c.models.models_dir.join("keys");
        std::fs::write(&f, "k1\n").unwrap();
        c.api_key_file = Some(f);
    });
    let (s, headers, b) = call(&h.router, post("/api/chat", &chat(false))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["error"], "invalid or missing API key");
    let mut ok = post("/api/chat", &chat(false));
    ok.headers_mut().insert(header::AUTHORIZATION, "Bearer k1".parse().unwrap());
    assert_eq!(call(&h.router, ok).await.0, StatusCode::OK);
    for open in ["/healthz", "/"] {
        assert_eq!(call(&h.router, Request::get(open).body(Body::empty()).unwrap()).await.0, StatusCode::OK);
    }
}

fn get_as(path: &str, key: Option<&str>) -> Request<Body> {
    let mut req = Request::get(path);
    if let Some(k) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    req.body(Body::empty()).unwrap()
}

/// `--require-cluster-token`: only the token (the gateway's and peers') gets in, refused callers
/// get a 401 in their API's shape, and the probes stay open.
#[tokio::test]
async fn the_cluster_token_can_be_required() {
    let h = harness_with(MockEngine::default(), |c| {
        c.cluster_token = Some("tok".into());
        c.require_cluster_token = true;
    });
    for key in [None, Some("wrong")] {
        let (s, _, b) = call(&h.router, get_as("/v1/models", key)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["error"]["code"], "invalid_api_key", "{b}");
        let (s, _, b) = call(&h.router, get_as("/api/tags", key)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(serde_json::from_str::<Value>(&b).unwrap()["error"].is_string(), "Ollama's shape: {b}");
        assert_eq!(call(&h.router, get_as("/internal/v1/load", key)).await.0, StatusCode::UNAUTHORIZED);
    }
    for path in ["/v1/models", "/api/tags", "/internal/v1/load"] {
        assert_eq!(call(&h.router, get_as(path, Some("tok"))).await.0, StatusCode::OK, "{path}");
    }
    for open in ["/healthz", "/"] {
        assert_eq!(call(&h.router, get_as(open, None)).await.0, StatusCode::OK, "{open}");
    }
    assert_ne!(call(&h.router, get_as("/readyz", None)).await.0, StatusCode::UNAUTHORIZED);
}

/// With client keys the cluster token is one more key; without either flag a token alone
/// leaves the API open (it only guards blobs).
#[tokio::test]
async fn the_cluster_token_passes_where_client_keys_do() {
    let h = harness_with(MockEngine::default(), |c| {
        let f = c.models.models_dir.join("keys");
        std::fs::write(&f, "k1\n").unwrap();
        c.api_key_file = Some(f);
        c.cluster_token = Some("tok".into());
    });
    for (key, want) in [(None, 401), (Some("nope"), 401), (Some("k1"), 200), (Some("tok"), 200)] {
        assert_eq!(call(&h.router, get_as("/v1/models", key)).await.0.as_u16(), want, "{key:?}");
    }
    let open = harness_with(MockEngine::default(), |c| c.cluster_token = Some("tok".into()));
    assert_eq!(call(&open.router, get_as("/v1/models", None)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn requiring_the_cluster_token_without_one_is_a_start_up_error() {
    let Err(e) = try_harness_with(MockEngine::default(), |c| c.require_cluster_token = true) else {
        panic!("started without a cluster token");
    };
    assert!(matches!(e, AgentError::NoClusterToken), "{e}");
    assert!(e.to_string().contains("--cluster-token-file"), "{e}");
}

/// `/internal/v1/load`, the gateway's poll: a generating request shows as running, and is gone
/// once it ends.
#[tokio::test]
async fn load_reports_running_requests_per_resident_model() {
    let mut engine = MockEngine::replying(&["a"; 2000]);
    engine.per_token = Duration::from_millis(20);
    let h = harness_with(engine, |c| c.parallel = 2);
    let load = || async {
        let (s, _, b) = call(&h.router, get_as("/internal/v1/load", None)).await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_str::<Value>(&b).unwrap()
    };
    assert_eq!(load().await, json!({"models": []}), "nothing resident yet");
    let resp = h.router.clone().oneshot(post("/v1/chat/completions", &chat(true))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(load().await, json!({"models": [{"name": MODEL, "running": 1, "waiting": 0, "slots": 2}]}));
    drop(resp);
    let t0 = std::time::Instant::now();
    while load().await["models"][0]["running"] != 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the request never stopped running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(load().await, json!({"models": [{"name": MODEL, "running": 0, "waiting": 0, "slots": 2}]}));
}

const CALL: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
}

/// With tools offered, text streams as generated; only the call block is held and parsed.
#[tokio::test]
async fn tool_calls_stream_text_first_and_hold_only_the_call() {
    let h = harness(MockEngine::replying(&["Let me", " check. ", CALL]));
    let mut req = chat(true);
    req["tools"] = weather_tools();
    let (s, _, b) = call(&h.router, post("/v1/chat/completions", &req)).await;
    assert_eq!(s, StatusCode::OK);
    let chunks: Vec<Value> = sse_data(&b).iter().filter_map(|d| serde_json::from_str(d).ok()).collect();
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(deltas[1]["content"], "Let me", "the first text piece is sent as it comes: {b}");
    assert_eq!(deltas[2]["content"], " check. ");
    let call_at = deltas.iter().position(|d| d.get("tool_calls").is_some()).expect("a tool_calls chunk");
    assert!(call_at > 2);
    assert_eq!(deltas[call_at]["tool_calls"][0]["function"]["name"], "get_weather");
    assert!(!b.contains("<tool_call>"), "the block itself never reaches the client: {b}");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
    // Ollama: the same, as NDJSON.
    let mut req = chat(true);
    req["tools"] = weather_tools();
    let (_, _, b) = call(&h.router, post("/api/chat", &req)).await;
    let lines: Vec<Value> = b.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["message"]["content"], "Let me");
    let with_call = lines.iter().find(|l| l["message"].get("tool_calls").is_some()).expect("a call line");
    assert_eq!(with_call["message"]["tool_calls"][0]["function"]["arguments"]["city"], "Paris");
    // Not streamed: one message with the text around the call, trimmed, and the call.
    let mut req = chat(false);
    req["tools"] = weather_tools();
    let (_, _, b) = call(&h.router, post("/v1/chat/completions", &req)).await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Let me check.");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn unconstrained_json_is_checked_and_retried_once() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let mut engine = MockEngine::scripted(move |_| {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        vec![if n == 0 { "not json".into() } else { "{\"a\": 1}".into() }]
    });
    engine.constrains = false;
    let h = harness(engine);
    let mut req = chat(false);
    req["response_format"] = json!({"type": "json_object"});
    let (s, _, b) = call(&h.router, post("/v1/chat/completions", &req)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["choices"][0]["message"]["content"], "{\"a\": 1}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2, "one retry");

    let mut engine = MockEngine::replying(&["never json"]);
    engine.constrains = false;
    let h = harness(engine);
    let (s, _, b) = call(&h.router, post("/v1/chat/completions", &req)).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{b}");
    assert!(b.contains("did not produce the requested JSON"), "the reason is about the model, so it is shown: {b}");
}

#[tokio::test]
async fn json_cut_at_max_tokens_is_passed_on_with_finish_reason_length() {
    // Found by schemathesis on the gateway (make soak): an 8-token cap cut the JSON, the check
    // failed twice and the client got a 500 for its own limit.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let mut engine = MockEngine::scripted(move |_| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        vec!["{\"a\": ".into(), "\"long".into(), " text\"}".into()]
    });
    engine.constrains = false;
    let h = harness(engine);
    let mut req = chat(false);
    req["response_format"] = json!({"type": "json_object"});
    req["max_tokens"] = json!(2);
    let (s, _, b) = call(&h.router, post("/v1/chat/completions", &req)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{b}");
    assert_eq!(v["choices"][0]["message"]["content"], "{\"a\": \"long", "{b}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "no retry: it would be cut as well");
}

#[tokio::test]
async fn a_full_queue_is_refused_and_a_client_that_leaves_frees_its_slot() {
    let mut engine = MockEngine::replying(&["a"; 2000]);
    engine.per_token = Duration::from_millis(20);
    let counters = Arc::clone(&engine.counters);
    let h = harness_with(engine, |c| c.max_queue = 0);
    // A streaming request holds the only slot; dropping its body is the client going away.
    let resp = h.router.clone().oneshot(post("/v1/chat/completions", &chat(true))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, headers, b) = call(&h.router, post("/v1/chat/completions", &chat(false))).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    drop(resp);
    let t0 = std::time::Instant::now();
    while counters.cancelled.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the engine never saw the client leave");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = h.agent.sched.resident(MODEL).unwrap();
    let t0 = std::time::Instant::now();
    while r.in_use() != 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the ticket was not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let m = crate::metrics::encode_registry(&h.agent_metrics());
    assert!(m.contains("rockchip_llama_active_requests{model=\"mock-model\"} 0"), "{m}");
    assert!(m.contains("rockchip_llama_rejected_requests_total{model=\"mock-model\"} 1"), "{m}");
}

#[tokio::test]
async fn the_memory_budget_evicts_the_idle_model() {
    let engine = MockEngine { size_bytes: 600 << 20, ..MockEngine::default() };
    let h = harness_with(engine, |c| c.memory_budget = Size::Bytes(1 << 30));
    for m in [MODEL, "other-model"] {
        let (s, _, b) = call(
            &h.router,
            post("/api/chat", &json!({"model": m, "stream": false, "messages": [{"role": "user", "content": "x"}]})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (_, _, b) = call(&h.router, Request::get("/api/ps").body(Body::empty()).unwrap()).await;
    let names: Vec<String> = serde_json::from_str::<Value>(&b).unwrap()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["other-model:latest"], "two 600 MiB models do not fit 1 GiB: {b}");
}

impl Harness {
    fn agent_metrics(&self) -> Arc<prometheus_client::registry::Registry> {
        self.agent.metrics_registry()
    }
}

/// `--sysfs-root` covers memory too: a simulated board reports its own RAM, not the host's, and
/// `--memory-budget auto` is 80 % of it.
#[tokio::test]
async fn status_reports_the_boards_own_memory_under_a_fixture_root() {
    let fx = board::fixture::FixtureCopy::rk3588().unwrap();
    let root = fx.root().to_path_buf();
    let h = harness_with(MockEngine::default(), |c| {
        c.board.sysfs_root = root;
        c.memory_budget = Size::Auto;
    });
    let (s, _, b) = call(&h.router, Request::get("/internal/v1/status").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&b).unwrap();
    let total = 16_106_128u64 * 1024;
    assert_eq!(v["board"]["soc"], "rk3588", "{v}");
    assert_eq!(v["board"]["memory"]["totalBytes"], total, "{v}");
    assert_eq!(v["big_core_mask"], "0xf0");
    assert_eq!(h.agent.sched.options().memory_budget, total / 10 * 8);
}

/// `board.load.tokensPerSecond` is the generated-token rate over the last minute: 0 before any
/// answer, above 0 once tokens were generated (a second of history needed first).
#[tokio::test]
async fn status_reports_the_generated_token_rate() {
    let h = harness(MockEngine::default());
    let rate = |b: &str| serde_json::from_str::<Value>(b).unwrap()["board"]["load"]["tokensPerSecond"].as_f64();
    let status = || Request::get("/internal/v1/status").body(Body::empty()).unwrap();
    let (_, _, b) = call(&h.router, status()).await;
    assert_eq!(rate(&b), Some(0.0), "{b}");
    let (s, _, b) = call(&h.router, post("/v1/chat/completions", &chat(false))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (_, _, b) = call(&h.router, status()).await;
    assert!(rate(&b).is_some_and(|r| r > 0.0), "{b}");
}

/// A file copied into the models directory gets a digest: hashed once in the background,
/// cached beside it, then read by every scan.
#[tokio::test]
async fn dropped_in_files_get_a_cached_digest() {
    let h = harness(MockEngine::default());
    std::fs::write(h.dir.join("dropped-model.rkllm"), b"abc").unwrap();
    h.agent.library.rescan();
    let tags = |b: &str| -> Value {
        serde_json::from_str::<Value>(b).unwrap()["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "dropped-model:latest")
            .cloned()
            .unwrap()
    };
    let (_, _, b) = call(&h.router, Request::get("/api/tags").body(Body::empty()).unwrap()).await;
    assert_eq!(tags(&b)["digest"], "", "unknown until hashed: {b}");
    assert_eq!(h.agent.library.fill_digests(), 1);
    let (_, _, b) = call(&h.router, Request::get("/api/tags").body(Body::empty()).unwrap()).await;
    let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(tags(&b)["digest"], sha);
    assert!(h.dir.join("dropped-model.rkllm.sha256").exists());
    assert_eq!(h.agent.library.fill_digests(), 0, "hashed once: the next scan reads the sidecar");
}

/// Models can be added and removed at run time (cluster mode assigns them this way); a rescan
/// keeps them.
#[tokio::test]
async fn run_time_entries_survive_rescans_and_can_be_removed() {
    let h = harness(MockEngine::default());
    let e = ModelEntry::unscanned("assigned", h.dir.join("blobs/sha256-x"), Format::Gguf, 1, &Config::default());
    h.agent.registry.insert(e);
    h.agent.library.rescan();
    assert!(h.agent.registry.lookup("assigned").is_some());
    assert!(h.agent.registry.remove("assigned"));
    assert!(h.agent.registry.lookup("assigned").is_none());
    assert!(!h.agent.registry.remove("assigned"), "already gone");
}

/// `GET /`: Ollama's text unless a browser asks for HTML, then the status page, with no key;
/// the page's data (`/overview`) needs a key where the API does, and shows the resident model.
#[tokio::test]
async fn the_status_page_and_its_data() {
    let h = harness_with(MockEngine::default(), |c| {
        let f = c.models.models_dir.join("keys");
        std::fs::write(&f, "k1\n").unwrap();
        c.api_key_file = Some(f);
    });
    let get = |accept: Option<&str>| {
        let mut r = Request::get("/");
        if let Some(a) = accept {
            r = r.header(header::ACCEPT, a);
        }
        r.body(Body::empty()).unwrap()
    };
    for accept in [None, Some("*/*")] {
        let (s, _, b) = call(&h.router, get(accept)).await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, "Ollama is running"), "{accept:?}");
    }
    let (s, headers, b) = call(&h.router, get(Some("text/html,*/*;q=0.8"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(b.contains("<title>RockchipLlama status</title>"));

    assert_eq!(call(&h.router, get_as("/overview", None)).await.0, StatusCode::UNAUTHORIZED);
    let mut chat_req = post("/v1/chat/completions", &chat(false));
    chat_req.headers_mut().insert(header::AUTHORIZATION, "Bearer k1".parse().unwrap());
    assert_eq!(call(&h.router, chat_req).await.0, StatusCode::OK);
    let (s, _, b) = call(&h.router, get_as("/overview", Some("k1"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let o: api_types::overview::Overview = serde_json::from_str(&b).unwrap();
    assert_eq!(o.source, api_types::overview::OverviewSource::Agent);
    assert!(o.deployments.is_empty() && o.events.is_empty());
    let [board] = o.boards.as_slice() else { panic!("one board: {b}") };
    assert!(board.live);
    let m = board.models.iter().find(|m| m.name == MODEL).expect("the resident model");
    assert_eq!((m.phase.as_str(), m.loaded, m.slots), ("Ready", true, 1));
    assert!(m.generated_tokens > 0, "its token total: {b}");
    assert_eq!(board.generated_tokens, Some(m.generated_tokens));
}
