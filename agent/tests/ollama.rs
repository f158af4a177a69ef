//! Ollama routes over real TCP against the engine under test (`common::engine`): SmolLM2 on
//! llama.cpp, or the simulated Qwen3 0.6B on RKLLM (rkllm-sim).

mod common;

use common::{Agent, primary, primary_name, rkllm};
use serde_json::json;

#[tokio::test]
async fn chat_generate_tags_show_ps_version_load_unload() {
    let a = Agent::serve(&[primary()], &[]).await;
    let tagged = format!("{}:latest", primary_name());

    // Root probe, GET and HEAD.
    assert_eq!(a.get("/").await, (200, json!("Ollama is running")));
    let head = a.client.head(a.url("/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(a.get("/api/version").await.0, 200);

    let (s, tags) = a.get("/api/tags").await;
    assert_eq!(s, 200);
    let m = &tags["models"][0];
    assert_eq!(m["name"], tagged.as_str());
    if rkllm() {
        // The quantisation comes from the vendor's file-name convention; the simulated files
        // have no catalog entry, hence no digest.
        assert_eq!(m["details"]["format"], "rkllm");
        assert_eq!(m["details"]["quantization_level"], "W8A8");
    } else {
        assert_eq!(m["details"]["format"], "gguf");
        assert_eq!(m["details"]["family"], "llama");
        assert_eq!(m["details"]["quantization_level"], "Q4_1");
        assert_eq!(m["digest"].as_str().unwrap().len(), 64, "catalog sha256 for the pinned file");
    }
    assert_eq!(m["size"].as_u64().unwrap(), std::fs::metadata(primary()).unwrap().len());

    // Nothing loaded yet; an empty prompt loads.
    assert_eq!(a.get("/api/ps").await.1["models"], json!([]));
    let (s, r) = a.post("/api/generate", &json!({"model": primary_name(), "prompt": ""})).await;
    assert_eq!((s, r["done_reason"].as_str()), (200, Some("load")), "{r}");
    let ps = a.get("/api/ps").await.1;
    assert_eq!(ps["models"][0]["name"], tagged.as_str());
    assert_eq!(ps["models"][0]["context_length"], 4096);

    // Non-streaming chat with options.
    let body = json!({"model": tagged, "messages": [{"role": "user", "content": "What is 2+2?"}], "stream": false,
                      "options": {"num_predict": 16, "temperature": 0, "seed": 7, "top_k": 10, "top_p": 0.9, "repeat_penalty": 1.1}});
    let (s, r) = a.post("/api/chat", &body).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["done"], true);
    assert_eq!(r["message"]["role"], "assistant");
    let text = r["message"]["content"].as_str().unwrap().to_owned();
    assert!(!text.is_empty());
    assert!(["stop", "length"].contains(&r["done_reason"].as_str().unwrap()));
    // SmolLM2's default system prompt; on RKLLM the runtime's template tokens.
    let min_prompt = if rkllm() { 10 } else { 20 };
    assert!(r["prompt_eval_count"].as_u64().unwrap() > min_prompt, "{r}");
    let evals = r["eval_count"].as_u64().unwrap();
    assert!(evals > 0 && evals <= 16);
    assert!(r["eval_duration"].as_u64().unwrap() > 0 && r["total_duration"].as_u64().unwrap() > 0);
    assert_eq!(r["load_duration"], 0, "already loaded");

    // Streaming (the default): same text, the last line done with counts.
    let mut streamed = body.clone();
    streamed.as_object_mut().unwrap().remove("stream");
    let lines = a.ndjson("/api/chat", &streamed).await;
    let joined: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    assert_eq!(joined, text);
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true);
    assert_eq!(last["eval_count"].as_u64().unwrap(), evals);
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));

    // Generate, with a stop option.
    let g = json!({"model": primary_name(), "prompt": "Name three colors.", "stream": false, "options": {"num_predict": 32, "temperature": 0}});
    let (s, full) = a.post("/api/generate", &g).await;
    assert_eq!(s, 200, "{full}");
    let full = full["response"].as_str().unwrap().to_owned();
    let stop = full.split_whitespace().nth(1).expect("two words").to_owned();
    let mut gs = g.clone();
    gs["options"]["stop"] = json!([stop]);
    let (_, cut) = a.post("/api/generate", &gs).await;
    assert_eq!(cut["response"].as_str().unwrap(), &full[..full.find(&stop).unwrap()]);
    assert_eq!(cut["done_reason"], "stop");
    // num_predict ends with done_reason length; raw mode skips the template.
    let (_, raw) = a
        .post(
            "/api/generate",
            &json!({"model": primary_name(), "prompt": "Once upon a time", "raw": true, "stream": false,
                                                     "options": {"num_predict": 5, "temperature": 0}}),
        )
        .await;
    assert_eq!((raw["done_reason"].as_str(), raw["eval_count"].as_u64()), (Some("length"), Some(5)));
    // The RKLLM runtime templates every text input, raw or not (docs/npu.md, multi-turn).
    if !rkllm() {
        assert!(raw["prompt_eval_count"].as_u64().unwrap() < 10, "raw prompt has no template: {raw}");
    }
    // format json gives JSON.
    let (_, js) = a.post("/api/generate", &json!({"model": primary_name(), "prompt": "Give a JSON object with a key named color.", "format": "json",
                                                     "stream": false, "options": {"num_predict": 40, "temperature": 0}})).await;
    let out = js["response"].as_str().unwrap();
    if js["done_reason"] == "stop" {
        assert!(serde_json::from_str::<serde_json::Value>(out).unwrap().is_object(), "{out}");
    } else {
        assert!(out.trim_start().starts_with('{'), "{out}");
    }

    // Show; like Ollama, the body is JSON whatever the content type (`curl -d` sends a form type).
    let r = a
        .client
        .post(a.url("/api/show"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(json!({"model": primary_name()}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, show) = a.post("/api/show", &json!({"model": primary_name()})).await;
    assert_eq!(s, 200);
    if rkllm() {
        // A .rkllm file's metadata and chat template are inside the runtime, which has no API
        // to read them: only the engine is reported.
        assert_eq!(show["model_info"]["general.architecture"], "rkllm");
        assert_eq!(show["details"]["format"], "rkllm");
    } else {
        assert_eq!(show["model_info"]["general.architecture"], "llama");
        assert_eq!(show["model_info"]["llama.context_length"], 8192);
        assert!(show["template"].as_str().unwrap().contains("<|im_start|>"));
    }
    assert!(show["capabilities"].as_array().unwrap().contains(&json!("completion")));

    // keep_alive 0 with an empty prompt unloads.
    let (s, r) = a.post("/api/chat", &json!({"model": primary_name(), "messages": [], "keep_alive": 0})).await;
    assert_eq!((s, r["done_reason"].as_str()), (200, Some("unload")));
    assert_eq!(a.get("/api/ps").await.1["models"], json!([]));
}

#[tokio::test]
async fn keep_alive_expiry_and_explicit_residency_routes() {
    let a = Agent::serve(&[primary()], &[]).await;
    let (s, r) = a.post("/v1/models/load", &json!({"model": primary_name(), "keep_alive": "1s"})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(a.get("/v1/models/loaded").await.1["data"][0]["id"], primary_name());
    // Expires after one idle second (bounded wait).
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if a.get("/api/ps").await.1["models"] == json!([]) {
            gone = true;
            break;
        }
    }
    assert!(gone, "model still loaded after keep_alive expired");
    // A request with keep_alive -1 stays; unload removes it.
    a.post(
        "/api/generate",
        &json!({"model": primary_name(), "prompt": "Hi", "keep_alive": -1, "stream": false, "options": {"num_predict": 2}}),
    )
    .await;
    let ps = a.get("/api/ps").await.1;
    assert!(ps["models"][0]["expires_at"].as_str().unwrap().starts_with("9999"), "{ps}");
    let (_, r) = a.post("/v1/models/unload", &json!({"model": primary_name()})).await;
    assert_eq!(r["was_loaded"], true);
    assert_eq!(a.get("/v1/models/loaded").await.1["data"], json!([]));
}
