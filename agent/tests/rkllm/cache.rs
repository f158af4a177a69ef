//! What the KV cache and prompt-cache files reuse, and what `cached_tokens` says of it: a model
//! served from the content-addressed store, prompt-cache loads, turns cut at `max_tokens`.

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

/// A long system prompt on `topic`, so its part of the cache is much longer than a turn's.
fn long(topic: &str) -> String {
    format!("You are an expert on {topic}. {}", "Answer carefully and cite the rules. ".repeat(40))
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

/// A new conversation whose system prompt has a prompt-cache file reports the tokens the file
/// supplied as cached, also after a restart; prompt_tokens stays the whole prompt.
#[tokio::test]
async fn tokens_from_a_prompt_cache_file_count_as_cached() {
    let sim = sim();
    let qwen = sim.model("Qwen3-0.6B-sim_w8a8_rk3588");
    let pc = temp_dir("pcache");
    let flags = ["--prompt-cache-dir", pc.to_str().unwrap()];
    // Files are keyed by the model's path: both agents serve it from the same directory.
    let dir = temp_dir("agent");
    let start = || async {
        std::fs::create_dir_all(dir.join("models")).unwrap();
        std::os::unix::fs::symlink(&qwen, dir.join("models").join(qwen.file_name().unwrap())).unwrap();
        npu_in(dir.clone(), &sim.lib13, &flags, &[]).await
    };
    let n = start().await;
    let a = &n.agent;
    let (_, r1) = a.post("/v1/chat/completions", &ask(&long("ships"), "Name a keel part", 4)).await;
    assert_eq!(cached(&r1), 0, "the first use creates the file: {r1}");
    let (_, _) = a.post("/v1/chat/completions", &ask(&long("trains"), "Name a bogie part", 4)).await;
    let (s, r3) = a.post("/v1/chat/completions", &ask(&long("ships"), "Tell me about rudders", 4)).await;
    assert_eq!(s, 200, "{r3}");
    let run = n.runs().pop().unwrap();
    assert!(n.trace().iter().any(|l| l.starts_with("load_prompt_cache")), "{:?}", n.trace());
    let reused: u64 = field(&run, "reused").unwrap().parse().unwrap();
    let input: u64 = field(&run, "input_tokens").unwrap().parse().unwrap();
    // The runtime also reuses the user turn's template prefix (`<|im_start|>user\n`, 3 tokens in
    // the simulator) beyond the system part; no runtime API tells how much of that it found.
    let c = cached(&r3);
    assert!(c <= reused && c + 3 >= reused, "cached {c}, the runtime reused {reused}: {r3}");
    assert_eq!(r3["usage"]["prompt_tokens"].as_u64(), Some(input), "{r3}");
    assert_eq!(r3["timings"]["prompt_n"].as_u64(), Some(input - c), "evaluated = the rest: {r3}");
    drop(n);
    // Another agent on the same prompt-cache directory knows the file's length from the start.
    let n = start().await;
    let (s, r4) = n.agent.post("/v1/chat/completions", &ask(&long("trains"), "Tell me about wheels", 4)).await;
    assert_eq!(s, 200, "{r4}");
    assert!(n.trace().iter().any(|l| l.starts_with("load_prompt_cache")), "{:?}", n.trace());
    assert!(cached(&r4) > 100, "{r4}");
    let _ = std::fs::remove_dir_all(&pc);
}

/// A turn cut at `max_tokens` is paused by the agent's callback on ABI 1.2 (the runtime has no
/// per-run limit there) and the runtime keeps its KV cache; the client's next turn, with the cut
/// answer sent back, continues it like any other turn.
#[tokio::test]
async fn a_turn_cut_at_max_tokens_is_continued() {
    let sim = sim();
    for (abi, lib) in sim.libs() {
        let n = npu(&lib, &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")], &[], &[]).await;
        let a = &n.agent;
        let u1 = json!({"role": "user", "content": "Name a boat"});
        let (_, r1) = a.post("/v1/chat/completions", &json!({"model": QWEN, "messages": [u1], "max_tokens": 5})).await;
        assert_eq!(r1["choices"][0]["finish_reason"], "length", "ABI {abi}: {r1}");
        let turn2 = json!({"model": QWEN, "max_tokens": 5, "messages": [u1, r1["choices"][0]["message"],
                                                                          {"role": "user", "content": "And another"}]});
        let (s, r2) = a.post("/v1/chat/completions", &turn2).await;
        assert_eq!(s, 200, "{r2}");
        let run = n.runs().pop().unwrap();
        assert!(cached(&r2) > 5, "ABI {abi}: the cut turn stayed in the KV cache: {r2}");
        assert!(
            field(&run, "input_tokens").unwrap().parse::<u32>().unwrap() < 20,
            "ABI {abi}: only the new turn: {run}"
        );
    }
}
