//! The gateway's status page and its data, in process and without Kubernetes: the reflectors'
//! snapshot is handed to the gateway directly, one board is a fake agent serving `/overview`
//! behind the cluster token, the other is offline. The browser test is tests/ui (make test-ui).

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use api_types::overview::{BoardOverview, BoardState, ModelOverview, Overview, OverviewSource};
use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use crds::{Board, ModelDeployment};
use rockchip_llama_operator::gateway::{self, Gateway, auth::ClientKeys};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "cluster-tok";

/// A fake agent's `/overview`: one board with two resident models, behind the cluster token.
async fn fake_overview(State(hits): State<Arc<AtomicUsize>>, headers: HeaderMap) -> Response {
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let model = |name: &str| ModelOverview {
        name: name.into(),
        phase: "Ready".into(),
        loaded: true,
        slots: 1,
        generated_tokens: 42,
        ..ModelOverview::default()
    };
    Json(Overview {
        source: OverviewSource::Agent,
        version: "0".into(),
        time_ms: 0,
        boards: vec![BoardOverview {
            name: "the-agent's-host-name".into(),
            live: true,
            npu_load_percent: vec![12, 0, 7],
            generated_tokens: Some(84),
            models: vec![model("smollm2"), model("secret")],
            ..BoardOverview::default()
        }],
        deployments: vec![],
        events: vec![],
    })
    .into_response()
}

fn board(name: &str, endpoint: &str) -> Arc<Board> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "rockchipllama.io/v1alpha1", "kind": "Board", "metadata": {"name": name},
            "spec": {"models": [{"key": "ns/smol", "model": "smollm2", "format": "gguf", "source": {"url": "http://o/m"}}]},
            "status": {"soc": "rk3588", "endpoint": endpoint,
                       "models": [{"key": "ns/smol", "phase": "Downloading", "progress": 0.25}],
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "message": "",
                                       "lastTransitionTime": "2026-11-27T00:00:00Z"}]},
        }))
        .unwrap(),
    )
}

fn deployment(name: &str, model: &str) -> Arc<ModelDeployment> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "rockchipllama.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"model": model, "format": "gguf", "replicas": 2,
                     "source": {"url": "http://o/m.gguf", "sha256": "a".repeat(64)}},
            "status": {"readyReplicas": 1, "placements": [{"board": "b1", "phase": "Ready"},
                                                          {"board": "b2", "phase": "Downloading", "progress": 0.5}]},
        }))
        .unwrap(),
    )
}

struct Harness {
    gw: Arc<Gateway>,
    url: String,
    stop: CancellationToken,
    hits: Arc<AtomicUsize>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start() -> Harness {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route("/overview", get(fake_overview)).with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let board_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut config = gateway::Config::new("127.0.0.1:0".parse::<SocketAddr>().unwrap(), "ns");
    config.keys = Some(ClientKeys::parse("all-models\nonly-smol smollm2").unwrap());
    config.cluster_token = Some(TOKEN.into());
    let gw = Gateway::new(config).unwrap();
    gw.status.observe(
        vec![(board("b1", &board_url), true), (board("b2", "http://127.0.0.1:9"), false)],
        vec![],
        &HashSet::new(),
    );
    gw.status.observe(
        vec![(board("b1", &board_url), true), (board("b2", "http://127.0.0.1:9"), false)],
        vec![deployment("smol", "smollm2"), deployment("sec", "secret")],
        &HashSet::new(),
    );
    gw.set_synced();
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gateway::http::serve(listener, gw.clone(), stop.clone()));
    Harness { gw, url, stop, hits }
}

#[tokio::test]
async fn get_root_is_ollamas_text_unless_a_browser_asks_for_html() {
    let h = start().await;
    let c = reqwest::Client::new();
    for accept in [None, Some("*/*"), Some("application/json")] {
        let mut req = c.get(format!("{}/", h.url));
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "Ollama is running", "Accept {accept:?}");
    }
    let r = c
        .get(format!("{}/", h.url))
        .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the page needs no key");
    assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("<title>RockchipLlama status</title>"));
    assert_eq!(c.head(format!("{}/", h.url)).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn overview_needs_a_key_and_shows_what_it_may() {
    let h = start().await;
    let c = reqwest::Client::new();
    let get = |key: Option<&str>| {
        let mut req = c.get(format!("{}/overview", h.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some("wrong")).await.unwrap().status(), 401);

    let o: Overview = get(Some("all-models")).await.unwrap().json().await.unwrap();
    assert_eq!(o.source, OverviewSource::Gateway);
    let names: Vec<(&str, BoardState, bool)> = o.boards.iter().map(|b| (b.name.as_str(), b.state, b.live)).collect();
    assert_eq!(names, [("b1", BoardState::Ready, true), ("b2", BoardState::Offline, false)]);
    let b1 = &o.boards[0];
    assert_eq!((b1.soc.as_deref(), b1.npu_load_percent.as_slice()), (Some("rk3588"), &[12, 0, 7][..]));
    assert_eq!(b1.models.len(), 2);
    assert_eq!(o.boards[1].models[0].phase, "Downloading", "an unreachable board shows its Board status");
    let deps: Vec<(&str, &str, i32, i32)> =
        o.deployments.iter().map(|d| (d.key.as_str(), d.model.as_str(), d.ready, d.desired)).collect();
    assert_eq!(deps, [("ns/sec", "secret", 1, 2), ("ns/smol", "smollm2", 1, 2)]);
    assert_eq!(o.deployments[1].placements[1].progress, Some(0.5));
    let events: Vec<&str> = o.events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        events,
        [
            "created: smollm2, 2 replicas",
            "created: secret, 2 replicas",
            "watching 2 boards (1 Ready) and 0 ModelDeployments"
        ]
    );

    let limited: Overview = get(Some("only-smol")).await.unwrap().json().await.unwrap();
    assert_eq!(limited.boards.len(), 2, "every key sees the boards");
    let models: Vec<&str> = limited.boards[0].models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(models, ["smollm2"], "but only its models");
    assert_eq!(limited.deployments.len(), 1);
    assert!(limited.events.iter().all(|e| e.model.as_deref() != Some("secret")));
    assert_eq!(h.hits.load(Ordering::SeqCst), 1, "the board's live part is read once per second at most");
    assert!(h.gw.synced());
}

#[test]
fn the_openapi_document_lists_the_overview() {
    let doc = gateway::http::openapi_json();
    for needle in ["\"/overview\"", "\"Overview\"", "\"BoardOverview\"", "\"DeploymentOverview\"", "text/html"] {
        assert!(doc.contains(needle), "{needle} missing");
    }
}
