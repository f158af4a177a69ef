//! Per-model settings a ModelDeployment carries, from the config file, honoured by the NPU
//! engine: `npu_cores` checked against the file, RKLLM-style template parts, thinking by default.

use serde_json::json;

use super::*;

fn config(dir: &Path, body: &str) -> String {
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, format!("models:\n  {QWEN}:\n{body}")).unwrap();
    cfg.display().to_string()
}

#[tokio::test]
async fn npu_cores_must_match_what_the_file_was_converted_for() {
    let sim = sim();
    let qwen = sim.model("Qwen3-0.6B-sim_w8a8_rk3588");
    let dir = temp_dir("npu-cores");
    let cfg = config(&dir, "    npu_cores: 2\n");
    let n = npu(&sim.lib13, std::slice::from_ref(&qwen), &["--config", &cfg], &[]).await;
    let (s, r) = n.agent.post("/v1/chat/completions", &chat(QWEN, "Hi", json!({"max_tokens": 4}))).await;
    assert_eq!(s, 500, "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("converted for 3 NPU cores") && msg.contains("npuCores is 2"), "{msg}");
    assert!(n.trace().iter().any(|l| l.starts_with("destroy ")), "the handle is released");
    let cfg = config(&dir, "    npu_cores: 3\n");
    let n = npu(&sim.lib13, &[qwen], &["--config", &cfg], &[]).await;
    let (s, r) = n.agent.post("/v1/chat/completions", &chat(QWEN, "Hi", json!({"max_tokens": 4}))).await;
    assert_eq!(s, 200, "{r}");
}

#[tokio::test]
async fn template_parts_replace_the_family_template_and_thinking_is_on_by_default() {
    let sim = sim();
    let dir = temp_dir("parts");
    let cfg = config(
        &dir,
        "    thinking: true\n    chat_template: {system: \"<|im_start|>system\\nBe brief.<|im_end|>\\n\", \
         prefix: \"<|im_start|>user\\n\", postfix: \"<|im_end|>\\n<|im_start|>assistant\\n\"}\n",
    );
    let n = npu(&sim.lib13, &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")], &["--config", &cfg], &[]).await;
    let (s, r) = n.agent.post("/v1/chat/completions", &chat(QWEN, "Hi", json!({"max_tokens": 8}))).await;
    assert_eq!(s, 200, "{r}");
    assert!(n.trace().iter().any(|l| l == "set_chat_template"), "the settings' parts were set");
    assert_eq!(field(&n.runs().pop().unwrap(), "thinking"), Some("1"), "thinking by default");
    let (s, r) = n
        .agent
        .post("/v1/chat/completions", &chat(QWEN, "Hi again", json!({"max_tokens": 8, "enable_thinking": false})))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(field(&n.runs().pop().unwrap(), "thinking"), Some("0"), "a request overrides the default");
}
