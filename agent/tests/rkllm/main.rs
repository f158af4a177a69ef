//! The NPU engine end to end: the real agent binary drives rkllm-sim (an ABI-exact stand-in for
//! `librkllmrt.so`) through the real FFI path, once per runtime ABI where the ABI matters. What
//! the runtime was asked to do is read from the simulator's trace file (`RKLLM_SIM_TRACE`).

mod cache;
#[path = "../common/mod.rs"]
mod common;
mod features;
mod settings;
mod tuning;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use common::*;
use serde_json::{Value, json};

pub const QWEN: &str = "qwen3-0.6b-sim";

pub struct Npu {
    pub agent: Agent,
    pub trace: PathBuf,
}

impl Npu {
    pub fn trace(&self) -> Vec<String> {
        trace_lines(&self.trace)
    }

    pub fn runs(&self) -> Vec<String> {
        self.trace().into_iter().filter(|l| l.starts_with("run ")).collect()
    }
}

/// An agent on `lib` serving `models`, with the simulator 20x faster than the vendor's speed.
pub async fn npu(lib: &Path, models: &[PathBuf], extra: &[&str], env: &[(&str, String)]) -> Npu {
    let dir = temp_dir("agent");
    std::fs::create_dir_all(dir.join("models")).unwrap();
    for m in models {
        std::os::unix::fs::symlink(m, dir.join("models").join(m.file_name().unwrap())).unwrap();
    }
    npu_in(dir, lib, extra, env).await
}

/// [`npu`] on a prepared directory (its `models/` subdirectory).
pub async fn npu_in(dir: PathBuf, lib: &Path, extra: &[&str], env: &[(&str, String)]) -> Npu {
    let trace = temp_dir("trace").join("trace.log");
    let lib = lib.display().to_string();
    let mut args = vec!["--engine", "rkllm", "--rkllm-lib", lib.as_str()];
    args.extend_from_slice(extra);
    let mut envs = vec![("RKLLM_SIM_SPEEDUP", "20".to_owned()), ("RKLLM_SIM_TRACE", trace.display().to_string())];
    envs.extend(env.iter().map(|(k, v)| (*k, v.clone())));
    Npu { agent: Agent::start_in_env(dir, &args, &envs).await, trace }
}

pub fn chat(model: &str, content: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0.3});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

pub fn text_of(r: &Value) -> String {
    r["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned()
}

pub fn stream_text(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect()
}

/// Runs the agent binary to completion (it exits at start-up on a bad runtime).
pub fn serve_exit(lib: &Path, extra: &[&str]) -> (Option<i32>, String) {
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
pub fn patched_lib(lib: &Path, from: &str, to: &str) -> PathBuf {
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
        // The slot is given back as the answer's last bytes go out, so the client can read the
        // gauge a moment before the release: wait for it, bounded.
        let t1 = Instant::now();
        while a.metric("rockchip_llama_engine_busy_slots", QWEN).await != 0.0 {
            assert!(t1.elapsed() < Duration::from_secs(5), "ABI {abi}: a slot stayed busy after the answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
    let files = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "prompt-cache")
            .count()
    };
    assert_eq!(files(), 1, "one file for the ships prompt");
    assert_eq!(a.metric("rockchip_llama_prompt_cache_creates_total", QWEN).await, 1.0);
    let (_, _) = a.post("/v1/chat/completions", &ask(long("trains"), "What is a bogie?")).await;
    assert_eq!(files(), 2);
    let (s, r3) = a.post("/v1/chat/completions", &ask(long("ships"), "What is a rudder?")).await;
    assert_eq!(s, 200, "{r3}");
    assert!(n.trace().iter().any(|l| l.starts_with("load_prompt_cache")), "{:?}", n.trace());
    assert_eq!(a.metric("rockchip_llama_prompt_cache_loads_total", QWEN).await, 1.0);
    let p1 = r1["timings"]["prompt_ms"].as_f64().unwrap();
    let p3 = r3["timings"]["prompt_ms"].as_f64().unwrap();
    assert!(p3 * 3.0 < p1, "prefill with the cached system prompt {p3} ms vs {p1} ms without");
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
