//! The config file and the `models` subcommand, against the real binary on the engine under test
//! (`common::engine`).

mod common;

use common::{Agent, primary, primary_name, rkllm, temp_dir};
use serde_json::json;

#[tokio::test]
async fn config_sets_context_aliases_system_prompt_and_keep_alive() {
    let dir = temp_dir("config");
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::os::unix::fs::symlink(primary(), dir.join("models").join(primary().file_name().unwrap())).unwrap();
    let cfg = dir.join("agent.yaml");
    std::fs::write(
        &cfg,
        format!(
            "defaults:\n  keep_alive: 10m\nmodels:\n  {}:\n    aliases: [smol]\n    context: 1024\n    keep_alive: -1\n    max_tokens: 3\n    system: \"Answer with one word.\"\n    sampling: {{temperature: 0}}\n",
            primary_name()
        ),
    )
    .unwrap();
    let a = Agent::serve_in_env(dir, &["--config", cfg.to_str().unwrap()], &[]).await;
    // The alias resolves; max_tokens and the context come from the config.
    let (s, r) = a
        .post("/v1/chat/completions", &json!({"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["model"], primary_name());
    assert!(r["usage"]["completion_tokens"].as_u64().unwrap() <= 3);
    // The configured system prompt replaced SmolLM2's default one: fewer prompt tokens than the
    // 30+ the default system prompt costs. (The simulated Qwen3 has no default system prompt.)
    if !rkllm() {
        assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() < 25, "{r}");
    }
    let ps = a.get("/api/ps").await.1;
    assert_eq!(ps["models"][0]["context_length"], 1024);
    assert!(ps["models"][0]["expires_at"].as_str().unwrap().starts_with("9999"), "keep_alive -1 from the config: {ps}");
    // Prompts are checked against the configured window.
    let (s, b) =
        a.post("/api/generate", &json!({"model": "smol", "prompt": "word ".repeat(1500), "stream": false})).await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().contains("1024"), "{b}");
}

#[test]
fn bad_config_is_refused_at_start_naming_the_place() {
    let dir = temp_dir("badcfg");
    let cfg = dir.join("agent.yaml");
    std::fs::write(&cfg, "models:\n  m:\n    sampling: {top_p: 7}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rockchip-llama-agent"))
        .args(["serve", "--listen", "127.0.0.1:0", "--models-dir"])
        .arg(&dir)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("m.sampling: top_p"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn models_subcommand_lists_friendly_names() {
    let dir = temp_dir("list");
    std::os::unix::fs::symlink(primary(), dir.join(primary().file_name().unwrap())).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rockchip-llama-agent"))
        .args(["models", "--models-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(primary_name()) && text.contains("4096"), "{text}");
    // The catalog's aliases (the simulated models have no catalog entry).
    assert!(rkllm() || text.contains("smollm2:135m"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}
