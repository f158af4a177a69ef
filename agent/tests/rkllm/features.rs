//! NPU features: tools, thinking, batching, memory domains, load errors, embeddings, LoRA, JSON.

use serde_json::{Value, json};

use super::*;

#[tokio::test]
async fn tools_and_thinking_are_mapped_to_both_apis() {
    let sim = sim();
    for (abi, lib) in sim.libs() {
        let n = npu(&lib, &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")], &[], &[]).await;
        let a = &n.agent;
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
        let q = json!({"role": "user", "content": "What is the weather in Paris?"});
        let (s, r) = a.post("/v1/chat/completions", &json!({"model": QWEN, "messages": [q], "tools": tools})).await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["choices"][0]["finish_reason"], "tool_calls", "ABI {abi}: {r}");
        let call = &r["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        let follow = json!({"model": QWEN, "tools": tools, "messages": [q, r["choices"][0]["message"],
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp_c\": 21}"}]});
        let (s, r2) = a.post("/v1/chat/completions", &follow).await;
        assert_eq!(s, 200, "{r2}");
        let run = n.runs().pop().unwrap();
        assert_eq!((field(&run, "role"), field(&run, "keep_history")), (Some("tool"), Some("1")), "{run}");
        assert!(text_of(&r2).starts_with("The tool returned"), "{r2}");
        let (s, o) = a
            .post(
                "/api/chat",
                &json!({"model": QWEN, "stream": false, "tools": tools,
                                      "messages": [{"role": "user", "content": "Weather in Oslo please"}]}),
            )
            .await;
        assert_eq!(s, 200, "{o}");
        assert_eq!(o["message"]["tool_calls"][0]["function"]["name"], "get_weather", "{o}");
        assert_eq!(o["message"]["tool_calls"][0]["function"]["arguments"]["city"], "Oslo");
        // Thinking: off by default, on with reasoning_effort / think.
        let (_, plain) = a.post("/v1/chat/completions", &chat(QWEN, "Why is the sky blue?", json!({}))).await;
        assert!(plain["choices"][0]["message"].get("reasoning_content").is_none(), "{plain}");
        let (_, t) = a
            .post("/v1/chat/completions", &chat(QWEN, "Why is the sky blue?", json!({"reasoning_effort": "low"})))
            .await;
        let m = &t["choices"][0]["message"];
        assert!(!m["reasoning_content"].as_str().unwrap_or_default().is_empty(), "ABI {abi}: {t}");
        assert!(!m["content"].as_str().unwrap().contains("<think>"), "{t}");
        let (_, o) = a
            .post(
                "/api/chat",
                &json!({"model": QWEN, "stream": false, "think": true,
                                      "messages": [{"role": "user", "content": "Why is the sky blue?"}]}),
            )
            .await;
        assert!(!o["message"]["thinking"].as_str().unwrap_or_default().is_empty(), "{o}");
        let ev = a
            .ndjson(
                "/api/chat",
                &json!({"model": QWEN, "think": true, "messages": [{"role": "user", "content": "Why?"}]}),
            )
            .await;
        assert!(ev.iter().any(|e| e["message"]["thinking"].as_str().is_some_and(|t| !t.is_empty())), "{ev:?}");
    }
}

#[tokio::test]
async fn four_concurrent_requests_with_n_batch_4_run_as_one_batch() {
    let sim = sim();
    let dir = temp_dir("batch");
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, format!("models:\n  {QWEN}:\n    n_batch: 4\n")).unwrap();
    let cfg = cfg.display().to_string();
    let n = npu(
        &sim.lib13,
        &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")],
        &["--config", &cfg, "--rkllm-batch-wait-ms", "500"],
        &[],
    )
    .await;
    let a = &n.agent;
    let q = |i: usize| chat(QWEN, &format!("Question number {i} about rivers"), json!({"max_tokens": 12}));
    let (q0, q1, q2, q3) = (q(0), q(1), q(2), q(3));
    let (r0, r1, r2, r3) = tokio::join!(
        a.post("/v1/chat/completions", &q0),
        a.post("/v1/chat/completions", &q1),
        a.post("/v1/chat/completions", &q2),
        a.post("/v1/chat/completions", &q3),
    );
    let answers: Vec<String> = [r0, r1, r2, r3]
        .into_iter()
        .map(|(s, r)| {
            assert_eq!(s, 200, "{r}");
            text_of(&r)
        })
        .collect();
    assert!(answers.iter().all(|t| !t.is_empty()));
    let runs = n.runs();
    assert_eq!(runs.len(), 1, "one rkllm_run for the four requests: {runs:?}");
    assert_eq!(field(&runs[0], "active"), Some("4"), "{}", runs[0]);
    assert!(answers[0] != answers[1] || answers[1] != answers[2], "each slot answers its own prompt");
}

#[tokio::test]
async fn npu_domain_exhaustion_is_a_clean_503_and_idle_models_make_room() {
    let sim = sim();
    let models = [sim.model("Qwen3-0.6B-sim_w8a8_rk3588"), sim.model("Phi3-3.8B-sim_w8a8_rk3588")];
    let n = npu(&sim.lib12, &models, &[], &[("RKLLM_SIM_DOMAIN_MB", "1000".into())]).await;
    let (s, r) = n.agent.post("/v1/chat/completions", &chat("phi3-3.8b-sim", "Hi", json!({"max_tokens": 4}))).await;
    assert_eq!(s, 503, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("NPU memory"), "{r}");
    let (s, _) = n.agent.post("/v1/chat/completions", &chat(QWEN, "Hi", json!({"max_tokens": 4}))).await;
    assert_eq!(s, 200, "the agent still serves after a domain error");
    // One 4 GiB domain: the idle Qwen3 is unloaded to make room for Phi3, then Phi3 loads.
    let n = npu(&sim.lib12, &models, &["--npu-domains", "1"], &[]).await;
    let (s, _) = n.agent.post("/v1/chat/completions", &chat(QWEN, "Hi", json!({"max_tokens": 4}))).await;
    assert_eq!(s, 200);
    let (s, r) = n.agent.post("/v1/chat/completions", &chat("phi3-3.8b-sim", "Hi", json!({"max_tokens": 4}))).await;
    assert_eq!(s, 200, "{r}\n{}", n.agent.log_text());
    assert!(n.trace().iter().any(|l| l.starts_with("init_failed")), "{:?}", n.trace());
    assert!(n.trace().iter().any(|l| l.starts_with("destroy")));
}

#[tokio::test]
async fn npu_domain_budget_is_checked_before_init() {
    // RKLLM 1.3.0 crashes when an init overflows a domain (rknn-llm #522), so the agent checks its
    // own per-domain budget (model ≈ file size) first. The sim's files are ~200 bytes: a 300-byte
    // domain holds one model.
    let sim = sim();
    let models = [sim.model("Qwen3-0.6B-sim_w8a8_rk3588"), sim.model("Phi3-3.8B-sim_w8a8_rk3588")];
    let slow = [("RKLLM_SIM_DECODE_TOK_S", "1".to_owned())];
    let n = npu(&sim.lib13, &models, &["--npu-domains", "1", "--npu-domain-memory", "300"], &slow).await;
    let a = &n.agent;
    let (s, _) = a.post("/v1/chat/completions", &chat(QWEN, "Hi", json!({"max_tokens": 2}))).await;
    assert_eq!(s, 200);
    // Idle Qwen3 is unloaded for Phi3 without the runtime ever being asked to overflow.
    let (s, r) = a.post("/v1/chat/completions", &chat("phi3-3.8b-sim", "Hi", json!({"max_tokens": 2}))).await;
    assert_eq!(s, 200, "{r}");
    assert!(!n.trace().iter().any(|l| l.starts_with("init_failed")), "{:?}", n.trace());
    // While Phi3 is busy, Qwen3 cannot get NPU memory: a 503, not an init.
    let long = chat("phi3-3.8b-sim", "Tell a long story", json!({"max_tokens": 40, "stream": true}));
    let mut busy = a.client.post(a.url("/v1/chat/completions")).json(&long).send().await.unwrap();
    let _ = busy.chunk().await.unwrap();
    let inits = n.trace().iter().filter(|l| l.starts_with("init ")).count();
    let (s, r) = a.post("/v1/chat/completions", &chat(QWEN, "Hi", json!({"max_tokens": 2}))).await;
    assert_eq!(s, 503, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("NPU memory is full"), "{r}");
    assert_eq!(n.trace().iter().filter(|l| l.starts_with("init ")).count(), inits, "no init attempted");
    drop(busy);
}

#[tokio::test]
async fn context_above_the_model_limit_fails_at_load_with_the_reason() {
    let sim = sim();
    let dir = temp_dir("ctx");
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, format!("models:\n  {QWEN}:\n    context: 8192\n")).unwrap();
    let cfg = cfg.display().to_string();
    let n = npu(&sim.lib13, &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")], &["--config", &cfg], &[]).await;
    let (s, r) = n.agent.post("/v1/chat/completions", &chat(QWEN, "Hi", json!({}))).await;
    assert_eq!(s, 500, "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("max_context_limit 4096") && msg.contains("8192"), "{msg}");
    assert!(
        n.agent
            .log_with("must be less than the model's max_context_limit[4096]")
            .await
            .contains("must be less than the model's max_context_limit[4096]"),
        "vendor line passed through"
    );
    let (s, r) = n.agent.post("/api/generate", &json!({"model": QWEN, "prompt": "Hi", "stream": false})).await;
    assert_eq!(s, 500);
    assert!(r["error"].as_str().unwrap().contains("max_context_limit"), "{r}");
}

fn cos(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn embeddings_are_pooled_and_normalised_on_both_apis() {
    let sim = sim();
    let n = npu(&sim.lib13, &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")], &[], &[]).await;
    let a = &n.agent;
    let inputs = json!(["the cat sat on the mat", "the cat sat on a mat today", "quantum chromodynamics on a lattice"]);
    let (s, r) = a.post("/v1/embeddings", &json!({"model": QWEN, "input": inputs})).await;
    assert_eq!(s, 200, "{r}");
    let vecs: Vec<Vec<f64>> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    assert_eq!(vecs.len(), 3);
    for v in &vecs {
        assert_eq!(v.len(), 1024);
        assert!((cos(v, v) - 1.0).abs() < 1e-3, "L2-normalised");
    }
    assert!(cos(&vecs[0], &vecs[1]) > cos(&vecs[0], &vecs[2]), "shared words are closer");
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let (s, o) = a.post("/api/embed", &json!({"model": QWEN, "input": "the cat sat on the mat"})).await;
    assert_eq!(s, 200, "{o}");
    let v: Vec<f64> = o["embeddings"][0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!((cos(&v, &vecs[0]) - 1.0).abs() < 1e-4, "same text, same vector");
    let (s, e) = a.post("/v1/embeddings", &json!({"model": QWEN, "input": [1, 2]})).await;
    assert_eq!(s, 400, "{e}");
    let (_, show) = a.post("/api/show", &json!({"model": QWEN})).await;
    let caps = show["capabilities"].as_array().unwrap();
    assert!(caps.contains(&json!("embedding")) && caps.contains(&json!("thinking")), "{show}");
}

#[tokio::test]
async fn lora_adapter_selected_by_model_name_and_json_is_checked() {
    let sim = sim();
    let lora = sim.model("Qwen3-0.6B-sim_lora");
    let dir = temp_dir("lora");
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, format!("models:\n  {QWEN}:\n    loras:\n      sql: {}\n", lora.display())).unwrap();
    let cfg = cfg.display().to_string();
    let n = npu(&sim.lib12, &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")], &["--config", &cfg], &[]).await;
    let a = &n.agent;
    let (_, base) = a.post("/v1/chat/completions", &chat(QWEN, "List the tables", json!({"max_tokens": 20}))).await;
    let (s, tuned) = a
        .post("/v1/chat/completions", &chat(&format!("{QWEN}:sql"), "List the tables", json!({"max_tokens": 20})))
        .await;
    assert_eq!(s, 200, "{tuned}");
    assert_ne!(text_of(&base), text_of(&tuned), "the adapter changes the answer");
    assert!(n.trace().iter().any(|l| l.starts_with("load_lora") && field(l, "name") == Some("sql")));
    assert_eq!(field(&n.runs().pop().unwrap(), "lora"), Some("sql"));
    let (s, _) = a.post("/v1/chat/completions", &chat(&format!("{QWEN}:nope"), "x", json!({}))).await;
    assert_eq!(s, 404);
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]});
    let (s, r) = a
        .post(
            "/v1/chat/completions",
            &chat(
                QWEN,
                "What is 6 times 7?",
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let out: Value = serde_json::from_str(&text_of(&r)).unwrap();
    assert!(out["answer"].is_i64(), "{out}");
    // An answer cut at max_tokens cannot be complete JSON: passed on as it is with
    // finish_reason length (as OpenAI does), not checked, retried and failed.
    let runs = n.runs().len();
    let (s, r) = a
        .post(
            "/v1/chat/completions",
            &chat(QWEN, "Give me the data", json!({"max_tokens": 3, "response_format": {"type": "json_object"}})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "length", "{r}");
    assert_eq!(n.runs().len(), runs + 1, "no retry for a cut answer");
}
