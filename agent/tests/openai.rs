//! OpenAI routes over real TCP against the engine under test (`common::engine`): SmolLM2 on
//! llama.cpp, or the simulated Qwen3 0.6B on RKLLM (rkllm-sim).

mod common;

use common::{Agent, primary, primary_name, rkllm};
use serde_json::{Value, json};

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({"model": primary_name(), "messages": [{"role": "user", "content": content}], "max_tokens": 24, "temperature": 0});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

fn stream_text(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"].get(0)?.get("delta")?.get("content")?.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn chat_models_stream_usage_stop_seed_json() {
    let a = Agent::serve(&[primary()], &[]).await;

    // Model listing.
    let (s, models) = a.get("/v1/models").await;
    assert_eq!(s, 200);
    assert_eq!(models["object"], "list");
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == primary_name()), "{models}");
    let (s, m) = a.get(&format!("/v1/models/{}", primary_name())).await;
    assert_eq!((s, m["id"].as_str()), (200, Some(primary_name())));
    let file = primary().file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(a.get(&format!("/v1/models/{file}")).await.0, 200, "lookup by file name");

    // Non-streaming chat: usage comes from the engine.
    let (s, r) = a.post("/v1/chat/completions", &chat("What is 2+2?", json!({}))).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    let text = r["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert!(!text.is_empty());
    let finish = r["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length", "{finish}");
    let u = &r["usage"];
    // SmolLM2's template adds its default system prompt: far more than the 7 words sent. The
    // RKLLM runtime counts its template's tokens too (ChatML plus Qwen3's empty think block).
    let min_prompt = if rkllm() { 10 } else { 20 };
    assert!(u["prompt_tokens"].as_u64().unwrap() > min_prompt, "{u}");
    let completion = u["completion_tokens"].as_u64().unwrap();
    assert!(completion > 0 && completion <= 24, "{u}");
    assert_eq!(u["total_tokens"].as_u64().unwrap(), u["prompt_tokens"].as_u64().unwrap() + completion);
    assert_eq!(r["timings"]["predicted_n"].as_u64().unwrap(), completion);
    if finish == "length" {
        assert_eq!(completion, 24);
    }

    // Streaming with include_usage: role first, same text as non-streaming at temperature 0,
    // a usage chunk with no choices, then [DONE] exactly once.
    let ev = a
        .sse(
            "/v1/chat/completions",
            &chat("What is 2+2?", json!({"stream": true, "stream_options": {"include_usage": true}})),
        )
        .await;
    assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(stream_text(&ev), text);
    assert_eq!(ev.iter().filter(|e| *e == &json!("[DONE]")).count(), 1);
    assert_eq!(ev.last().unwrap(), &json!("[DONE]"));
    let usage = &ev[ev.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], r["usage"]["prompt_tokens"]);
    assert_eq!(usage["usage"]["completion_tokens"], r["usage"]["completion_tokens"]);
    let finish_chunk = &ev[ev.len() - 3];
    assert_eq!(finish_chunk["choices"][0]["finish_reason"], r["choices"][0]["finish_reason"]);
    // Without include_usage there is no usage chunk.
    let ev = a.sse("/v1/chat/completions", &chat("What is 2+2?", json!({"stream": true}))).await;
    assert!(ev.iter().all(|e| e.get("usage").is_none()));

    // Stop strings end the text before them and are not leaked.
    let long = a.post("/v1/chat/completions", &chat("Name three colors.", json!({"max_tokens": 40}))).await.1;
    let full = long["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() >= 3, "need a few words to pick a stop from: {full:?}");
    let stop = words[words.len() / 2];
    let cut =
        a.post("/v1/chat/completions", &chat("Name three colors.", json!({"max_tokens": 40, "stop": [stop]}))).await.1;
    let got = cut["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(got, &full[..full.find(stop).unwrap()], "stop {stop:?} in {full:?}");
    assert!(!got.contains(stop));
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    // Streaming honours it too.
    let ev = a
        .sse(
            "/v1/chat/completions",
            &chat("Name three colors.", json!({"max_tokens": 40, "stop": stop, "stream": true})),
        )
        .await;
    assert_eq!(stream_text(&ev), got);

    // Same seed, same text, even when sampling.
    let sampled = |seed: u64| {
        chat("Write a short poem about the sea.", json!({"temperature": 0.9, "seed": seed, "max_tokens": 20}))
    };
    let a1 = a.post("/v1/chat/completions", &sampled(42)).await.1;
    let a2 = a.post("/v1/chat/completions", &sampled(42)).await.1;
    assert_eq!(a1["choices"][0]["message"]["content"], a2["choices"][0]["message"]["content"]);

    // JSON schema → valid JSON matching it.
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]});
    let body = chat(
        "What is 2+2? Answer in JSON.",
        json!({"max_tokens": 40, "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}}),
    );
    let (s, r) = a.post("/v1/chat/completions", &body).await;
    assert_eq!(s, 200, "{r}");
    let out: Value = serde_json::from_str(r["choices"][0]["message"]["content"].as_str().unwrap()).expect("valid JSON");
    assert!(out["answer"].is_i64(), "{out}");
    let (s, r) = a
        .post(
            "/v1/chat/completions",
            &chat("List two fruits as JSON.", json!({"max_tokens": 60, "response_format": {"type": "json_object"}})),
        )
        .await;
    assert_eq!(s, 200);
    let content = r["choices"][0]["message"]["content"].as_str().unwrap();
    if r["choices"][0]["finish_reason"] == "stop" {
        assert!(serde_json::from_str::<Value>(content).unwrap().is_object(), "{content}");
    } else {
        assert!(content.trim_start().starts_with('{'), "{content}");
    }

    // Content as a list of text parts and max_completion_tokens.
    let body = json!({"model": primary_name(), "messages": [{"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]}],
                      "max_completion_tokens": 24, "temperature": 0});
    let (s, r2) = a.post("/v1/chat/completions", &body).await;
    assert_eq!(s, 200);
    assert_eq!(r2["choices"][0]["message"]["content"].as_str().unwrap(), text);
}

#[tokio::test]
async fn completions_and_prefix_reuse() {
    let a = Agent::serve(&[primary()], &[]).await;
    let (s, r) = a
        .post(
            "/v1/completions",
            &json!({"model": primary_name(), "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["object"], "text_completion");
    assert!(!r["choices"][0]["text"].as_str().unwrap().is_empty());
    assert_eq!(r["usage"]["completion_tokens"].as_u64().unwrap(), 8, "no EOS this early: max_tokens ends it");
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    let ev = a
        .sse(
            "/v1/completions",
            &json!({"model": primary_name(), "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "stream": true,
              "stream_options": {"include_usage": true}}),
        )
        .await;
    let streamed: String =
        ev.iter().filter_map(|e| e["choices"].get(0)?.get("text")?.as_str().map(str::to_owned)).collect();
    assert_eq!(streamed, r["choices"][0]["text"].as_str().unwrap());
    assert_eq!(ev[ev.len() - 2]["usage"]["completion_tokens"], 8);

    // The next turn of a chat reuses the KV entries of the previous turn. RKLLM continues the
    // conversation its KV cache holds (keep_history) only after a turn the model ended itself,
    // so it gets room for the whole answer (the simulator answers in at most ~94 tokens).
    let first = json!([{"role": "user", "content": "Tell me about the moon."}]);
    let first_max = if rkllm() { 128 } else { 16 };
    let (_, r1) = a
        .post(
            "/v1/chat/completions",
            &json!({"model": primary_name(), "messages": first, "max_tokens": first_max, "temperature": 0}),
        )
        .await;
    let p1 = r1["usage"]["prompt_tokens"].as_u64().unwrap();
    let answer = r1["choices"][0]["message"]["content"].as_str().unwrap();
    let second = json!([{"role": "user", "content": "Tell me about the moon."}, {"role": "assistant", "content": answer},
                        {"role": "user", "content": "And the sun?"}]);
    let (_, r2) = a
        .post(
            "/v1/chat/completions",
            &json!({"model": primary_name(), "messages": second, "max_tokens": 8, "temperature": 0}),
        )
        .await;
    let cached = r2["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(cached >= p1, "cached {cached} < first prompt {p1}: {r2}");
    assert_eq!(r2["timings"]["cache_n"].as_u64().unwrap(), cached);
    assert!(a.metric("rockchip_llama_prompt_cached_tokens_total", primary_name()).await >= cached as f64);
}

#[tokio::test]
async fn prefix_reuse_can_be_disabled() {
    let a = Agent::serve(&[primary()], &["--prefix-cache=false"]).await;
    let body = json!({"model": primary_name(), "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0});
    a.post("/v1/chat/completions", &body).await;
    let (_, r) = a.post("/v1/chat/completions", &body).await;
    assert_eq!(r["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn vector(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[tokio::test]
async fn embeddings_on_both_apis() {
    let a = Agent::serve(&[primary()], &[]).await;
    let inputs = json!(["the cat sat on the mat", "the cat sat on a mat today", "quantum chromodynamics on a lattice"]);
    let (s, r) = a.post("/v1/embeddings", &json!({"model": primary_name(), "input": inputs})).await;
    assert_eq!(s, 200, "{r}");
    let vecs: Vec<Vec<f64>> = r["data"].as_array().unwrap().iter().map(|d| vector(&d["embedding"])).collect();
    assert_eq!(vecs.len(), 3);
    for v in &vecs {
        assert!(v.len() >= 64 && v.len() == vecs[0].len(), "model-sized vectors");
        assert!((cosine(v, v) - 1.0).abs() < 1e-3, "L2-normalised");
    }
    assert!(cosine(&vecs[0], &vecs[1]) > cosine(&vecs[0], &vecs[2]), "shared words are closer");
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{r}");
    let (s, o) = a.post("/api/embed", &json!({"model": primary_name(), "input": "the cat sat on the mat"})).await;
    assert_eq!(s, 200, "{o}");
    assert!((cosine(&vector(&o["embeddings"][0]), &vecs[0]) - 1.0).abs() < 1e-4, "same text, same vector");
    let (s, e) = a.post("/v1/embeddings", &json!({"model": primary_name(), "input": ""})).await;
    assert_eq!(s, 400, "{e}");
    // The official client asks for base64: little-endian float32.
    let (s, b) = a
        .post(
            "/v1/embeddings",
            &json!({"model": primary_name(), "input": "the cat sat on the mat", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let bytes = base64_decode(b["data"][0]["embedding"].as_str().unwrap());
    let floats: Vec<f64> =
        bytes.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect();
    assert!((cosine(&floats, &vecs[0]) - 1.0).abs() < 1e-4);
}

/// Standard base64 without padding checks (test helper; the agent uses the base64 crate).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | (u32::from(val(c)) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
