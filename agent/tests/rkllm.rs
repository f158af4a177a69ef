//! The NPU engine end to end: the real agent binary drives rkllm-sim (an ABI-exact stand-in for
//! `librkllmrt.so`) through the real FFI path, once per runtime ABI where the ABI matters. What
//! the runtime was asked to do is read from the simulator's trace file (`RKLLM_SIM_TRACE`).

mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

const QWEN: &str = "qwen3-0.6b-sim";

struct Npu {
    agent: Agent,
    trace: PathBuf,
}

impl Npu {
    fn trace(&self) -> Vec<String> {
        trace_lines(&self.trace)
    }

    fn runs(&self) -> Vec<String> {
        self.trace().into_iter().filter(|l| l.starts_with("run ")).collect()
    }
}

/// An agent on `lib` serving `models`, with the simulator 20x faster than the vendor's speed.
async fn npu(lib: &Path, models: &[PathBuf], extra: &[&str], env: &[(&str, String)]) -> Npu {
    let trace = temp_dir("trace").join("trace.log");
    let lib = lib.display().to_string();
    let mut args = vec!["--engine", "rkllm", "--rkllm-lib", lib.as_str()];
    args.extend_from_slice(extra);
    let mut envs = vec![("RKLLM_SIM_SPEEDUP", "20".to_owned()), ("RKLLM_SIM_TRACE", trace.display().to_string())];
    envs.extend(env.iter().map(|(k, v)| (*k, v.clone())));
    Npu { agent: Agent::start_env(models, &args, &envs).await, trace }
}

fn chat(model: &str, content: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0.3});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn text_of(r: &Value) -> String {
    r["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned()
}

fn stream_text(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect()
}

/// Runs the agent binary to completion (it exits at start-up on a bad runtime).
fn serve_exit(lib: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let dir = temp_dir("refuse");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rockchip-llama-agent"))
        .args(["serve", "--listen", "127.0.0.1:0", "--engine", "rkllm", "--rkllm-lib"])
        .arg(lib)
        .arg("--models-dir")
        .arg(&dir)
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A copy of a library with its embedded version text replaced (same length).
fn patched_lib(lib: &Path, from: &str, to: &str) -> PathBuf {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(lib).unwrap();
    let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).expect("version text in the library");
    bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
    let out = temp_dir("lib").join("librkllmrt.so");
    std::fs::write(&out, bytes).unwrap();
    out
}

#[tokio::test]
async fn abi_is_detected_per_build_and_a_wrong_override_is_refused() {
    let sim = sim();
    let qwen = sim.model("Qwen3-0.6B-sim_w8a8_rk3588");
    for (abi, lib) in sim.libs() {
        let n = npu(&lib, std::slice::from_ref(&qwen), &[], &[]).await;
        let (_, st) = n.agent.get("/internal/v1/status").await;
        assert_eq!(st["runtime"]["rkllm"]["abi"], abi, "{st}");
        let (s, r) = n.agent.post("/v1/chat/completions", &chat(QWEN, "Hello there", json!({"max_tokens": 6}))).await;
        assert_eq!(s, 200, "ABI {abi}: {r}\n{}", n.agent.log_text());
    }
    let (code, err) = serve_exit(&sim.lib12, &["--rkllm-abi", "1.3"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("contradicts") && err.contains("1.2.3"), "{err}");
    let (code, err) = serve_exit(&sim.lib13, &["--rkllm-abi", "1.2"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("contradicts") && err.contains("1.3.0"), "{err}");
    let old = patched_lib(&sim.lib12, "rkllm-runtime version: 1.2.3", "rkllm-runtime version: 1.1.4");
    let (code, err) = serve_exit(&old, &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("1.1.4") && err.contains("supports"), "{err}");
    let unknown = patched_lib(&sim.lib12, "rkllm-runtime version: 1.2.3", "rkllm-runtime versiox: 1.2.3");
    let (code, err) = serve_exit(&unknown, &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--rkllm-abi"), "{err}");
}

#[tokio::test]
async fn chat_stream_usage_and_sampling_per_abi() {
    let sim = sim();
    let qwen = sim.model("Qwen3-0.6B-sim_w8a8_rk3588");
    for (abi, lib) in sim.libs() {
        let n = npu(&lib, std::slice::from_ref(&qwen), &[], &[]).await;
        let a = &n.agent;
        let (s, r) =
            a.post("/v1/chat/completions", &chat(QWEN, "Tell me about the sea", json!({"max_tokens": 40}))).await;
        assert_eq!(s, 200, "{r}");
        let text = text_of(&r);
        assert!(!text.is_empty());
        let u = &r["usage"];
        assert!(u["prompt_tokens"].as_u64().unwrap() > 3, "{u}");
        assert_eq!(u["completion_tokens"], r["timings"]["predicted_n"], "usage from the runtime's perf record");
        let run = n.runs().pop().unwrap();
        // 1.3 takes per-run sampling; 1.2 only has the values given at init.
        let want_t = if abi == "1.3" { "0.3" } else { "0.8" };
        assert_eq!(field(&run, "temperature"), Some(want_t), "ABI {abi}: {run}");
        let ev = a
            .sse(
                "/v1/chat/completions",
                &chat(QWEN, "Tell me about the sea", json!({"max_tokens": 40, "stream": true})),
            )
            .await;
        assert_eq!(stream_text(&ev), text, "ABI {abi}: stream and non-stream agree");
        let (s, r) =
            a.post("/v1/chat/completions", &chat(QWEN, "Tell me about the sea", json!({"max_tokens": 5}))).await;
        assert_eq!(s, 200);
        assert_eq!(
            (r["usage"]["completion_tokens"].as_u64(), r["choices"][0]["finish_reason"].as_str()),
            (Some(5), Some("length"))
        );
        let (s, r) = a
            .post("/api/chat", &json!({"model": QWEN, "stream": false, "messages": [{"role": "user", "content": "Tell me about the sea"}]}))
            .await;
        assert_eq!(s, 200, "{r}");
        assert!(r["eval_count"].as_u64().unwrap() > 0 && r["prompt_eval_duration"].as_u64().unwrap() > 0, "{r}");
    }
}

#[tokio::test]
async fn client_disconnect_reaches_rkllm_abort_and_the_next_answer_is_clean() {
    let sim = sim();
    let qwen = sim.model("Qwen3-0.6B-sim_w8a8_rk3588");
    for (abi, lib) in sim.libs() {
        // Vendor speed (~30 ms per token) so the stream is still running when the client leaves.
        let n = npu(&lib, std::slice::from_ref(&qwen), &[], &[("RKLLM_SIM_SPEEDUP", "1".into())]).await;
        let a = &n.agent;
        let body = chat(QWEN, "Write a long story about boats", json!({"max_tokens": 30}));
        let (_, reference) = a.post("/v1/chat/completions", &body).await;
        let mut long = chat(QWEN, "Write a long story about boats", json!({"max_tokens": 400, "stream": true}));
        long["stream"] = json!(true);
        let mut resp = a.client.post(a.url("/v1/chat/completions")).json(&long).send().await.unwrap();
        let _first = resp.chunk().await.unwrap();
        drop(resp);
        let t0 = Instant::now();
        while !n.trace().iter().any(|l| l.starts_with("abort")) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "ABI {abi}: no rkllm_abort after the disconnect: {:?}",
                n.trace()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The run ends after the abort: wait for its run_end.
        let ended = |t: &[String]| {
            let at = t.iter().position(|l| l.starts_with("abort")).unwrap();
            t[at..].iter().find(|l| l.starts_with("run_end")).cloned()
        };
        let end = loop {
            if let Some(e) = ended(&n.trace()) {
                break e;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "ABI {abi}: run did not end: {:?}", n.trace());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(field(&end, "reason"), Some("aborted"), "{:?}", n.trace());
        let (s, again) = a.post("/v1/chat/completions", &body).await;
        assert_eq!(s, 200);
        assert_eq!(text_of(&again), text_of(&reference), "ABI {abi}: answer after an abort");
        assert_eq!(a.metric("rockchip_llama_engine_busy_slots", QWEN).await, 0.0);
    }
}

#[tokio::test]
async fn multi_turn_reuses_the_kv_cache_and_clears_it_on_divergence() {
    let sim = sim();
    let n = npu(&sim.lib13, &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")], &[], &[]).await;
    let a = &n.agent;
    let sys = json!({"role": "system", "content": "You are a sailor."});
    let u1 = json!({"role": "user", "content": "Name a boat"});
    let (_, r1) =
        a.post("/v1/chat/completions", &json!({"model": QWEN, "messages": [sys, u1], "max_tokens": 60})).await;
    let a1 = text_of(&r1);
    let turn2 = json!({"model": QWEN, "max_tokens": 60, "messages": [sys, u1, {"role": "assistant", "content": a1},
                                                                      {"role": "user", "content": "And another"}]});
    let (s, r2) = a.post("/v1/chat/completions", &turn2).await;
    assert_eq!(s, 200, "{r2}");
    let run = n.runs().pop().unwrap();
    assert_eq!(field(&run, "keep_history"), Some("1"), "{run}");
    let cached = r2["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(cached > 10, "the first turn stays in the KV cache: {r2}");
    assert!(field(&run, "input_tokens").unwrap().parse::<u32>().unwrap() < 20, "only the new turn is sent: {run}");
    let clears = n.trace().iter().filter(|l| l.starts_with("clear_kv_cache")).count();
    let edited = json!({"model": QWEN, "max_tokens": 20, "messages": [sys, u1, {"role": "assistant", "content": "an edited answer"},
                                                                      {"role": "user", "content": "And another"}]});
    let (s, r3) = a.post("/v1/chat/completions", &edited).await;
    assert_eq!(s, 200, "{r3}");
    let trace = n.trace();
    assert!(trace.iter().filter(|l| l.starts_with("clear_kv_cache")).count() > clears, "divergence clears the cache");
    let clear = trace.iter().rev().find(|l| l.starts_with("clear_kv_cache")).unwrap();
    assert_eq!(field(clear, "keep_system_prompt"), Some("1"), "same system prompt is kept: {clear}");
}

#[tokio::test]
async fn stop_string_pauses_the_run_and_the_handle_goes_on() {
    let sim = sim();
    for (abi, lib) in sim.libs() {
        let n = npu(&lib, &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")], &[], &[]).await;
        let a = &n.agent;
        let body = chat(QWEN, "Describe the harbour", json!({"max_tokens": 40}));
        let (_, full) = a.post("/v1/chat/completions", &body).await;
        let full = text_of(&full);
        let words: Vec<&str> = full.split_whitespace().collect();
        let stop = words[words.len() / 2];
        let (s, cut) = a
            .post(
                "/v1/chat/completions",
                &chat(QWEN, "Describe the harbour", json!({"max_tokens": 40, "stop": [stop]})),
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(text_of(&cut), full[..full.find(stop).unwrap()], "ABI {abi}");
        assert_eq!(cut["choices"][0]["finish_reason"], "stop");
        assert!(n.trace().iter().any(|l| l.starts_with("pause")), "ABI {abi}: callback returned 1: {:?}", n.trace());
        let (s, again) = a.post("/v1/chat/completions", &body).await;
        assert_eq!((s, text_of(&again)), (200, full.clone()), "ABI {abi}: the next run after a pause");
    }
}

#[tokio::test]
async fn prompt_cache_file_is_created_then_reused_with_shorter_prefill() {
    let sim = sim();
    let n = npu(&sim.lib13, &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")], &[], &[]).await;
    let a = &n.agent;
    let long =
        |topic: &str| format!("You are an expert on {topic}. {}", "Answer carefully and cite the rules. ".repeat(120));
    let ask = |sys: String, q: &str| json!({"model": QWEN, "max_tokens": 4, "messages": [{"role": "system", "content": sys}, {"role": "user", "content": q}]});
    let (s, r1) = a.post("/v1/chat/completions", &ask(long("ships"), "What is a keel?")).await;
    assert_eq!(s, 200, "{r1}");
    let dir = models_dir(a).join(".prompt-cache");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "one file for the ships prompt");
    assert_eq!(a.metric("rockchip_llama_prompt_cache_creates_total", QWEN).await, 1.0);
    let (_, _) = a.post("/v1/chat/completions", &ask(long("trains"), "What is a bogie?")).await;
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    let (s, r3) = a.post("/v1/chat/completions", &ask(long("ships"), "What is a rudder?")).await;
    assert_eq!(s, 200, "{r3}");
    assert!(n.trace().iter().any(|l| l.starts_with("load_prompt_cache")), "{:?}", n.trace());
    assert_eq!(a.metric("rockchip_llama_prompt_cache_loads_total", QWEN).await, 1.0);
    let p1 = r1["timings"]["prompt_ms"].as_f64().unwrap();
    let p3 = r3["timings"]["prompt_ms"].as_f64().unwrap();
    assert!(p3 * 3.0 < p1, "prefill with the cached system prompt {p3} ms vs {p1} ms without");
}

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
        n.agent.log_text().contains("must be less than the model's max_context_limit[4096]"),
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
    // A truncated answer is not JSON: checked, retried once, then a clean error.
    let runs = n.runs().len();
    let (s, r) = a
        .post(
            "/v1/chat/completions",
            &chat(QWEN, "Give me the data", json!({"max_tokens": 3, "response_format": {"type": "json_object"}})),
        )
        .await;
    assert_eq!(s, 500, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("after one retry"), "{r}");
    assert_eq!(n.runs().len(), runs + 2, "the first answer and one retry");
}

fn tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().strip_prefix(root).unwrap().to_owned(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn tuning_is_applied_on_load_restored_when_idle_and_at_shutdown_with_telemetry() {
    let sim = sim();
    let fx = board::fixture::FixtureCopy::rk3588().unwrap();
    let before = tree(fx.root());
    let root = fx.root().display().to_string();
    let mut n = npu(
        &sim.lib13,
        &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")],
        &["--sysfs-root", &root, "--tune", "on", "--tune-idle-restore", "1s"],
        &[],
    )
    .await;
    let gov = |p: &str| std::fs::read_to_string(fx.root().join(p)).unwrap().trim().to_owned();
    assert_eq!(tree(fx.root()), before, "nothing is written before a model loads");
    let (s, _) = n.agent.post("/v1/chat/completions", &chat(QWEN, "Hi", json!({"max_tokens": 4}))).await;
    assert_eq!(s, 200);
    assert_eq!(gov("sys/devices/system/cpu/cpufreq/policy4/scaling_governor"), "userspace");
    assert_eq!(gov("sys/devices/system/cpu/cpufreq/policy4/scaling_setspeed"), "2352000");
    assert_eq!(gov("sys/class/devfreq/fdab0000.npu/userspace/set_freq"), "1000000000");
    assert_eq!(gov("sys/class/devfreq/dmc/userspace/set_freq"), "2112000000");
    let m = n.agent.get("/metrics").await.1.as_str().unwrap().to_owned();
    assert!(m.contains("rockchip_llama_board_temperature_celsius{zone=\"npu-thermal\"}"), "{m}");
    assert!(m.contains("rockchip_llama_npu_load_percent{core=\"2\"}"), "{m}");
    assert!(m.contains("rockchip_llama_board_tuned 1"), "{m}");
    let (_, st) = n.agent.get("/internal/v1/status").await;
    assert_eq!((st["board"]["soc"].as_str(), st["big_core_mask"].as_str()), (Some("rk3588"), Some("0xf0")), "{st}");
    assert_eq!(st["tuning"]["applied"], true);
    assert_eq!(st["loaded"][0]["engine"], "rkllm");
    // Unload; after the idle period the clocks are restored byte for byte.
    let (s, _) = n.agent.post("/api/generate", &json!({"model": QWEN, "keep_alive": 0})).await;
    assert_eq!(s, 200);
    let t0 = Instant::now();
    while tree(fx.root()) != before {
        assert!(t0.elapsed() < Duration::from_secs(15), "clocks not restored after idle:\n{}", n.agent.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Re-pinned by the next load, restored by SIGTERM.
    let (s, _) = n.agent.post("/v1/chat/completions", &chat(QWEN, "Hi", json!({"max_tokens": 4}))).await;
    assert_eq!(s, 200);
    assert_eq!(gov("sys/devices/system/cpu/cpufreq/policy0/scaling_governor"), "userspace");
    let pid = n.agent.pid().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert_eq!(n.agent.wait_exit(Duration::from_secs(30)), Some(0));
    assert_eq!(tree(fx.root()), before, "SIGTERM restores the clocks");
}

#[tokio::test]
async fn doctor_reports_on_the_fixture_board() {
    let sim = sim();
    let fx = board::fixture::FixtureCopy::rk3588().unwrap();
    let dir = temp_dir("doctor");
    for m in [sim.model("Qwen3-0.6B-sim_w8a8_rk3588"), sim.model("Qwen3-0.6B-sim_w8a8_rk3576")] {
        std::os::unix::fs::symlink(&m, dir.join(m.file_name().unwrap())).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rockchip-llama-agent"))
        .arg("doctor")
        .arg("--sysfs-root")
        .arg(fx.root())
        .arg("--rkllm-lib")
        .arg(&sim.lib13)
        .arg("--models-dir")
        .arg(&dir)
        .args(["--probe-models", "true"])
        .env("RKLLM_SIM_SPEEDUP", "20")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    for want in ["RK3588", "0.9.8", "RKLLM 1.3.0, ABI 1.3", "0xf0", "7 zones", "loaded with context 4096"] {
        assert!(report.contains(want), "doctor report lacks {want:?}:\n{report}");
    }
    let rk3576 = report.lines().find(|l| l.contains("rk3576")).unwrap_or_default();
    assert!(rk3576.contains("FAIL"), "a model converted for another SoC blocks: {report}");
    assert_eq!(out.status.code(), Some(1), "a FAIL line means exit 1:\n{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn prefix_cache_off_starts_every_request_from_an_empty_cache() {
    let sim = sim();
    let n = npu(&sim.lib13, &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")], &["--prefix-cache", "false"], &[]).await;
    let a = &n.agent;
    let u1 = json!({"role": "user", "content": "Name a boat"});
    let (_, r1) = a.post("/v1/chat/completions", &json!({"model": QWEN, "messages": [u1], "max_tokens": 60})).await;
    let turn2 = json!({"model": QWEN, "max_tokens": 20, "messages": [u1, {"role": "assistant", "content": text_of(&r1)},
                                                                      {"role": "user", "content": "And another"}]});
    let (s, r2) = a.post("/v1/chat/completions", &turn2).await;
    assert_eq!(s, 200, "{r2}");
    assert_eq!(r2["usage"]["prompt_tokens_details"]["cached_tokens"], 0, "{r2}");
    let clear = n.trace().into_iter().rev().find(|l| l.starts_with("clear_kv_cache")).unwrap();
    assert_eq!(field(&clear, "keep_system_prompt"), Some("0"), "{clear}");
}
