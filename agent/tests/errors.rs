//! Bad input gets the route family's error shape and the right status; auth (client keys and
//! the cluster token).

mod common;

use common::{Agent, primary, primary_name, rkllm, secondary, secondary_name, temp_dir};
use serde_json::json;

#[tokio::test]
async fn errors_have_the_right_status_and_shape() {
    // RKLLM: plus a model that does not reason, for the `think` check below.
    let models = if rkllm() { vec![primary(), secondary()] } else { vec![primary()] };
    let a = Agent::serve(&models, &[]).await;
    let post_raw = |path: &'static str, body: &'static str| {
        let c = a.client.clone();
        let url = a.url(path);
        async move {
            let r = c.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    // Invalid JSON: 400 in each family's shape.
    let (s, b) = post_raw("/v1/chat/completions", "{not json").await;
    assert_eq!(s, 400);
    assert!(b["error"]["message"].is_string() && b["error"]["type"] == "invalid_request_error", "{b}");
    let (s, b) = post_raw("/api/chat", "{not json").await;
    assert_eq!(s, 400);
    assert!(b["error"].is_string(), "{b}");
    // Wrong types are 400 too.
    let (s, _) = post_raw("/v1/chat/completions", r#"{"model": "x", "messages": [], "temperature": "hot"}"#).await;
    assert_eq!(s, 400);

    // Unknown model: 404 both ways.
    let (s, b) =
        a.post("/v1/chat/completions", &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("model_not_found")));
    let (s, b) = a.post("/api/generate", &json!({"model": "nope", "prompt": "x"})).await;
    assert_eq!(s, 404);
    assert!(b["error"].as_str().unwrap().contains("nope"));
    assert_eq!(a.get("/v1/models/nope").await.0, 404);
    assert_eq!(a.post("/api/show", &json!({"model": "nope"})).await.0, 404);

    // Unsupported values name the parameter.
    let chat = |extra: serde_json::Value| {
        let mut b = json!({"model": primary_name(), "messages": [{"role": "user", "content": "x"}], "max_tokens": 2});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    for (extra, param) in [
        (json!({"n": 2}), "n"),
        (json!({"top_p": 5}), "top_p"),
        (json!({"response_format": {"type": "xml"}}), "response_format"),
        (json!({"stop": 5}), "stop"),
        (json!({"logprobs": true}), "logprobs"),
    ] {
        let (s, b) = a.post("/v1/chat/completions", &chat(extra.clone())).await;
        assert_eq!(s, 400, "{extra}: {b}");
        assert_eq!(b["error"]["param"], param, "{extra}: {b}");
    }
    let (s, b) = a
        .post(
            "/v1/chat/completions",
            &json!({"model": primary_name(), "messages": [{"role": "robot", "content": "x"}]}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(b["error"]["message"].as_str().unwrap().contains("robot"));
    let (s, b) = a
        .post(
            "/api/chat",
            &json!({"model": primary_name(), "messages": [{"role": "user", "content": "x"}], "keep_alive": "soon"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().contains("keep_alive"));
    // `think` on a model that does not reason (the simulated Qwen3 does: ask the Qwen2 one).
    let no_think = if rkllm() { secondary_name() } else { primary_name() };
    let (s, b) = a.post("/api/generate", &json!({"model": no_think, "prompt": "x", "think": true})).await;
    assert_eq!(s, 400, "{b}");

    // Prompt longer than the context: 400 with both numbers. llama.cpp counts the tokens before
    // running; RKLLM has no tokenizer API, so the runtime refuses it during the run (docs/npu.md)
    // and the message names the window.
    let long = "hello ".repeat(6000);
    let (s, b) = a
        .post(
            "/v1/chat/completions",
            &json!({"model": primary_name(), "messages": [{"role": "user", "content": long}]}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.contains("4096") && msg.contains("context"), "{msg}");
    let (s, b) = a.post("/api/generate", &json!({"model": primary_name(), "prompt": long})).await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().contains("4096"));

    // Body over the limit: 413.
    let huge = format!(r#"{{"model": "{}", "prompt": "{}"}}"#, primary_name(), "a".repeat(5 << 20));
    // Its own connection: the server answers before reading the body and then closes it, and a
    // pooled connection would otherwise be picked up by the next request.
    let once = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let r =
        once.post(a.url("/v1/completions")).header("content-type", "application/json").body(huge).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let b: serde_json::Value = r.json().await.unwrap();
    assert!(b["error"]["message"].as_str().unwrap().contains("limit"));

    // Unknown routes: 404 in the family's shape.
    let (s, b) = a.get("/v1/nothing").await;
    assert_eq!(s, 404);
    assert!(b["error"]["message"].is_string());

    // Metrics saw all of this, by route template, plus one real generation.
    let (s, _) = a.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(s, 200);
    let (_, m) = a.get("/metrics").await;
    let m = m.as_str().unwrap();
    for name in [
        "rockchip_llama_http_requests_total",
        "rockchip_llama_http_request_duration_seconds",
        "rockchip_llama_time_to_first_token_seconds",
        "rockchip_llama_inter_token_seconds",
        "rockchip_llama_prompt_tokens_total",
        "rockchip_llama_generated_tokens_total",
        "rockchip_llama_queue_depth",
        "rockchip_llama_active_requests",
        "rockchip_llama_model_load_seconds",
        "rockchip_llama_loaded_models",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics");
    }
    assert!(m.contains(r#"route="/v1/chat/completions",status="400""#), "requests by route template and status");
    // The vLLM-named gauges routers and autoscalers scrape, for the resident model, and one
    // OpenMetrics document (a single # EOF, last).
    for name in ["vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"] {
        assert!(m.contains(&format!("{name}{{model_name=")), "{name} missing from /metrics:\n{m}");
    }
    assert_eq!(m.matches("# EOF").count(), 1);
    assert!(m.trim_end().ends_with("# EOF"));
    assert!(m.contains(r#"route="/v1/models/{*model}""#), "templates, never raw paths");
}

#[tokio::test]
async fn api_keys_guard_everything_but_health() {
    let dir = temp_dir("keys");
    let keys = dir.join("keys");
    std::fs::write(&keys, "# comment\nsk-one\n\nsk-two\n").unwrap();
    let a = Agent::serve(&[primary()], &["--api-key-file", keys.to_str().unwrap()]).await;
    assert_eq!(a.get("/healthz").await.0, 200);
    assert_eq!(a.get("/readyz").await.0, 200);
    assert_eq!(a.get("/").await.0, 200);
    let (s, b) = a.get("/v1/models").await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("invalid_api_key")));
    let (s, b) = a.get("/api/tags").await;
    assert_eq!(s, 401);
    assert!(b["error"].is_string());
    assert_eq!(a.get("/metrics").await.0, 401);
    let r = a.client.get(a.url("/v1/models")).bearer_auth("sk-two").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = a.client.get(a.url("/api/tags")).bearer_auth("sk-wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let _ = std::fs::remove_dir_all(dir);
}

/// The cluster token: with client keys it is one more key (the gateway proxies with it), and
/// `--require-cluster-token` (here through its environment variable) closes the API to all but
/// its holders, in each family's 401 shape, probes open.
#[tokio::test]
async fn the_cluster_token_is_a_key_and_can_be_required() {
    let dir = temp_dir("cluster-token");
    let (keys, token) = (dir.join("keys"), dir.join("token"));
    std::fs::write(&keys, "sk-one\n").unwrap();
    std::fs::write(&token, "cluster-secret\n").unwrap();
    let (keys, token) = (keys.to_str().unwrap(), token.to_str().unwrap());
    let as_key = |a: &Agent, path: &str, key: &str| a.client.get(a.url(path)).bearer_auth(key).send();

    let a = Agent::serve(&[primary()], &["--api-key-file", keys, "--cluster-token-file", token]).await;
    assert_eq!(a.get("/v1/models").await.0, 401);
    for key in ["sk-one", "cluster-secret"] {
        assert_eq!(as_key(&a, "/v1/models", key).await.unwrap().status(), 200, "{key}");
    }
    drop(a);

    let env = [("ROCKCHIP_LLAMA_REQUIRE_CLUSTER_TOKEN", "true".to_owned())];
    let a = Agent::serve_env(&[primary()], &["--cluster-token-file", token], &env).await;
    let (s, b) = a.get("/v1/models").await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("invalid_api_key")));
    let (s, b) = a.get("/api/tags").await;
    assert_eq!(s, 401);
    assert!(b["error"].is_string(), "{b}");
    assert_eq!(a.get("/internal/v1/load").await.0, 401);
    assert_eq!(as_key(&a, "/v1/models", "sk-one").await.unwrap().status(), 401, "no client keys here");
    for path in ["/v1/models", "/api/tags", "/internal/v1/load"] {
        assert_eq!(as_key(&a, path, "cluster-secret").await.unwrap().status(), 200, "{path}");
    }
    assert_eq!(a.get("/healthz").await.0, 200);
    drop(a);

    // Required but not given: a start-up error naming the missing flag.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rockchip-llama-agent"))
        .args(["serve", "--listen", "127.0.0.1:0", "--require-cluster-token", "--models-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--require-cluster-token needs a cluster token"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
