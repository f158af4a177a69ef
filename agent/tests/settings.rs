//! Per-model settings on the CPU engine: prompt caches prefilled at load, RKLLM-style template
//! parts rendered for a GGUF model. llama.cpp only (SmolLM2); the NPU engine's are tested in
//! `tests/rkllm/settings.rs`.

mod common;

use common::{Agent, SMOL, smollm2, temp_dir};
use serde_json::json;

async fn agent_with(config: &str) -> Agent {
    let dir = temp_dir("settings");
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::os::unix::fs::symlink(smollm2(), dir.join("models").join(smollm2().file_name().unwrap())).unwrap();
    let cfg = dir.join("agent.yaml");
    std::fs::write(&cfg, format!("models:\n  {SMOL}:\n{config}")).unwrap();
    Agent::serve_in_env(dir, &["--engine", "llama", "--config", cfg.to_str().unwrap()], &[]).await
}

fn pirate() -> serde_json::Value {
    json!({"model": SMOL, "max_tokens": 2, "messages": [
        {"role": "system", "content": "You are a pirate who answers every question about the sea."},
        {"role": "user", "content": "Hi"}]})
}

#[tokio::test]
async fn a_prompt_cache_is_prefilled_at_load_and_reused_by_the_first_request() {
    // The rendered system block, exactly as SmolLM2's template writes it at the start of a chat.
    let prefix = "<|im_start|>system\\nYou are a pirate who answers every question about the sea.<|im_end|>\\n";
    let a = agent_with(&format!("    prompt_caches: [\"{prefix}\"]\n")).await;
    let (s, r) = a.post("/v1/chat/completions", &pirate()).await;
    assert_eq!(s, 200, "{r}");
    let cached = r["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(cached >= 10, "the first request reuses the prefilled prefix: {r}");
    // Without the setting the first request starts cold.
    let b = agent_with("    context: 2048\n").await;
    let (_, r) = b.post("/v1/chat/completions", &pirate()).await;
    assert_eq!(r["usage"]["prompt_tokens_details"]["cached_tokens"], 0, "{r}");
}

#[tokio::test]
async fn template_parts_are_rendered_for_a_gguf_model() {
    let a = agent_with(
        "    chat_template: {system: \"<|im_start|>system\\nAnswer in one word.<|im_end|>\\n\", \
         prefix: \"<|im_start|>user\\n\", postfix: \"<|im_end|>\\n<|im_start|>assistant\\n\"}\n",
    )
    .await;
    let (s, r) = a
        .post(
            "/v1/chat/completions",
            &json!({"model": SMOL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    // The parts replaced SmolLM2's template, whose default system prompt costs 30+ tokens.
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() < 25, "{r}");
    let (_, show) = a.post("/api/show", &json!({"model": SMOL})).await;
    assert!(show["template"].as_str().unwrap().contains("{{ .Prompt }}"), "{show}");
}
