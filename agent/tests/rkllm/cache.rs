//! What the KV cache and prompt-cache files reuse, and what `cached_tokens` says of it: a model
//! served from the content-addressed store.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;

fn ask(sys: &str, q: &str, max_tokens: u32) -> Value {
    json!({"model": QWEN, "max_tokens": max_tokens,
           "messages": [{"role": "system", "content": sys}, {"role": "user", "content": q}]})
}

fn cached(r: &Value) -> u64 {
    r["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap()
}

/// The model lives in the store as `blobs/sha256-<hex>` and is named in its index by the file
/// name it came as, exactly as `/api/pull` and cluster assignments leave it. Its chat-template
/// family must still be known: the system prompt goes into the template (not into the user
/// message) and stays in the KV cache for the next conversation that shares it.
#[tokio::test]
async fn a_model_in_the_store_keeps_its_family_and_its_system_prompt() {
    let sim = sim();
    let file = sim.model("Qwen3-0.6B-sim_w8a8_rk3588");
    let bytes = std::fs::read(&file).unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    let dir = temp_dir("agent");
    std::fs::create_dir_all(dir.join("models/blobs")).unwrap();
    std::fs::write(dir.join(format!("models/blobs/sha256-{sha}")), &bytes).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let index = json!({"files": {&name: {"sha256": sha, "size": bytes.len(), "file_name": name, "last_used": 0}}});
    std::fs::write(dir.join("models/index.json"), index.to_string()).unwrap();
    let n = npu_in(dir, &sim.lib13, &[], &[]).await;
    let a = &n.agent;
    let sys = "You are a sailor who answers in one sentence.";
    let (s, r1) = a.post("/v1/chat/completions", &ask(sys, "Name a boat", 80)).await;
    assert_eq!(s, 200, "{r1}");
    assert!(n.trace().iter().any(|l| l == "set_chat_template"), "the family's template is written: {:?}", n.trace());
    let (s, r2) = a.post("/v1/chat/completions", &ask(sys, "Name a harbour", 80)).await;
    assert_eq!(s, 200, "{r2}");
    let clear = n.trace().into_iter().rev().find(|l| l.starts_with("clear_kv_cache")).unwrap();
    assert_eq!(field(&clear, "keep_system_prompt"), Some("1"), "{clear}");
    assert!(cached(&r2) > 10, "the system prompt stayed in the KV cache: {r2}");
}
