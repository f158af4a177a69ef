//! Templates, tools, thinking, JSON mode, prompt caches, LoRA and rejected inputs.

use std::ffi::{CString, c_int};

use super::{Opts, Sim, fast_env, init, model, scratch};
use crate::{
    abi::{RKLLM_INFER_GET_LOGITS, RKLLM_INPUT_EMBED, RKLLMLoraAdapter},
    env::SimEnv,
    rkllm_load_lora, rkllm_load_prompt_cache, rkllm_release_prompt_cache, rkllm_set_cross_attn_params,
    rkllm_set_function_tools,
};

const TOOLS: &str = r#"[{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
 "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
 "required": ["city"]}}}]"#;

fn set_tools(sim: &Sim, json: &str) -> c_int {
    let (sys, tools) = (CString::new("You are helpful.").unwrap(), CString::new(json).unwrap());
    // SAFETY: live handle and strings; NULL tag = default "tool_response".
    unsafe { rkllm_set_function_tools(sim.handle, sys.as_ptr(), tools.as_ptr(), std::ptr::null()) }
}

#[test]
fn tools_produce_a_tool_call_and_tool_results_are_echoed() {
    let sim = init(&model("Qwen2"), fast_env("tools"), |_| {}).expect("init");
    assert_eq!(set_tools(&sim, "not json"), -1);
    assert_eq!(set_tools(&sim, TOOLS), 0);
    assert_eq!(sim.run(&[Some("What's the weather like in Paris today?")], &Opts::default()), 0);
    assert_eq!(
        sim.rec.text(),
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
    );
    sim.rec.reset();
    let tool = Opts { role: Some("tool"), ..Opts::default() };
    assert_eq!(sim.run(&[Some(r#"[{"temperature": 21, "sky": "clear"}]"#)], &tool), 0);
    assert!(
        sim.rec.text().starts_with(r#"The tool returned [{"temperature": 21, "sky": "clear"}] "#),
        "{}",
        sim.rec.text()
    );
    // Unrelated questions get plain words.
    sim.rec.reset();
    assert_eq!(sim.run(&[Some("Tell me a story")], &Opts::default()), 0);
    assert!(!sim.rec.text().contains("<tool_call>"));
    assert!(sim.trace().contains("set_function_tools n=1"));
    assert_eq!(sim.run(&[Some("x")], &Opts { role: Some("system"), ..Opts::default() }), -1, "unknown role");
}

#[test]
fn thinking_model_honours_enable_thinking() {
    let sim = init(&model("Qwen3-0.6B-sim_w8a8_rk3588"), fast_env("thinking"), |_| {}).expect("init");
    assert_eq!(sim.run(&[Some("Why is the sky blue?")], &Opts { thinking: true, ..Opts::default() }), 0);
    let text = sim.rec.text();
    assert!(text.starts_with("<think>\n") && text.contains("\n</think>\n\n"), "{text}");
    assert!(sim.trace().contains("thinking=1"));
    sim.rec.reset();
    assert_eq!(sim.run(&[Some("Why is the sky blue?")], &Opts::default()), 0);
    assert!(!sim.rec.text().contains("<think>"), "{}", sim.rec.text());
}

#[test]
fn json_prompts_get_json_filled_from_the_schema() {
    let sim = init(&model("Qwen2"), fast_env("json"), |_| {}).expect("init");
    let prompt = r#"Reply with JSON matching {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}"#;
    assert_eq!(sim.run(&[Some(prompt)], &Opts::default()), 0);
    assert_eq!(sim.rec.text(), r#"{"age": 42, "name": "sim"}"#);
    // Truncated by max_new_tokens like any text (1.3 per run, 1.2 at init).
    let short = if cfg!(feature = "abi13") {
        sim
    } else {
        drop(sim);
        init(&model("Qwen2"), fast_env("json"), |p| p.max_new_tokens = 3).expect("init")
    };
    short.rec.reset();
    assert_eq!(short.run(&[Some(prompt)], &Opts { max_new_tokens: 3, ..Opts::default() }), 0);
    assert_eq!(short.rec.text(), r#"{"age"#);
    assert!(short.trace().contains("max_new_tokens=3"), "{}", short.trace());
}

#[test]
fn prompt_cache_save_then_load_shortens_prefill() {
    // 1 ms per prefill token at 1× speed, near-instant decode, one output token.
    let env =
        SimEnv { speedup: 1.0, prefill_ms_per_token: Some(1.0), decode_tok_s: Some(1e6), ..fast_env("prompt_cache") };
    let path = scratch().join("cache.bin");
    let prompt = "background ".repeat(60) + "question?";
    let first = init(&model("Qwen2"), env.clone(), |p| p.max_new_tokens = 1).expect("init");
    assert_eq!(first.run(&[Some(&prompt)], &Opts { save_cache: Some(&path), max_new_tokens: 1, ..Opts::default() }), 0);
    let cold = first.rec.finish().slots[0].perf;
    assert!(std::fs::read_to_string(&path).unwrap().starts_with(crate::prompt_cache::MAGIC));
    assert!(first.trace().contains(&format!(
        "save_prompt_cache path={} tokens={}",
        path.display(),
        cold.prefill_tokens
    )));
    drop(first);

    // A fresh handle has no in-memory reuse; only the loaded file can shorten its prefill.
    let second = init(&model("Qwen2"), env, |p| p.max_new_tokens = 1).expect("init");
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    let junk = CString::new(model("Qwen2").to_str().unwrap()).unwrap();
    // SAFETY: live handle and strings.
    unsafe {
        assert_eq!(rkllm_load_prompt_cache(second.handle, junk.as_ptr()), -1, "bad magic");
        assert_eq!(rkllm_load_prompt_cache(second.handle, c_path.as_ptr()), 0);
    }
    let tail = prompt.replace("question?", "another one?");
    assert_eq!(second.run(&[Some(&tail)], &Opts { max_new_tokens: 1, ..Opts::default() }), 0);
    let warm = second.rec.finish().slots[0].perf;
    assert!(
        warm.prefill_time_ms * 3.0 < cold.prefill_time_ms,
        "cold {} ms, warm {} ms",
        cold.prefill_time_ms,
        warm.prefill_time_ms
    );
    // SAFETY: live handle.
    assert_eq!(unsafe { rkllm_release_prompt_cache(second.handle) }, 0);
    let t = second.trace();
    assert!(t.contains("load_prompt_cache path=") && t.contains("release_prompt_cache"), "{t}");
}

#[test]
fn lora_changes_the_output_and_must_be_loaded() {
    let sim = init(&model("Qwen3-0.6B-sim_w8a8_rk3588"), fast_env("lora"), |_| {}).expect("init");
    let load = |path: &std::path::Path, name: &str| {
        let (p, n) = (CString::new(path.to_str().unwrap()).unwrap(), CString::new(name).unwrap());
        let mut a = RKLLMLoraAdapter { lora_adapter_path: p.as_ptr(), lora_adapter_name: n.as_ptr(), scale: 1.0 };
        // SAFETY: live handle and adapter.
        unsafe { rkllm_load_lora(sim.handle, &mut a) }
    };
    assert_eq!(load(&model("Qwen2"), "wrong"), -1, "a model is not an adapter");
    assert_eq!(load(&model("Qwen3-0.6B-sim_lora"), "style"), 0);
    let with = Opts { lora: Some("style"), ..Opts::default() };
    assert_eq!(sim.run(&[Some("Say something")], &Opts::default()), 0);
    let base = sim.rec.text();
    sim.rec.reset();
    assert_eq!(sim.run(&[Some("Say something")], &with), 0);
    assert_ne!(sim.rec.text(), base);
    assert_eq!(sim.run(&[Some("Say something")], &Opts { lora: Some("nope"), ..Opts::default() }), -1);
    let t = sim.trace();
    assert!(t.contains("load_lora name=style") && t.contains("lora=style"), "{t}");
    // The Qwen2 model is not this adapter's base.
    let other = init(&model("Qwen2"), fast_env("lora_base"), |_| {}).expect("init");
    let (p, n) = (CString::new(model("Qwen3-0.6B-sim_lora").to_str().unwrap()).unwrap(), c"x");
    let mut a = RKLLMLoraAdapter { lora_adapter_path: p.as_ptr(), lora_adapter_name: n.as_ptr(), scale: 1.0 };
    // SAFETY: live handle and adapter.
    assert_eq!(unsafe { rkllm_load_lora(other.handle, &mut a) }, -1);
}

#[test]
fn unsupported_inputs_and_modes_are_rejected() {
    let sim = init(&model("Qwen2"), fast_env("rejects"), |_| {}).expect("init");
    assert_eq!(sim.run(&[Some("x")], &Opts { mode: RKLLM_INFER_GET_LOGITS, ..Opts::default() }), -1);
    assert_eq!(sim.run(&[None], &Opts::default()), -1, "NULL prompt outside a batch");
    // SAFETY: all-zero structs are valid; the embed input has no data and must be refused.
    unsafe {
        let mut inp: crate::abi::active::RKLLMInput = std::mem::zeroed();
        inp.input_type = RKLLM_INPUT_EMBED;
        let mut ip: crate::abi::active::RKLLMInferParam = std::mem::zeroed();
        assert_eq!(crate::rkllm_run(sim.handle, &mut inp, &mut ip, sim.userdata()), -1);
        assert_eq!(rkllm_set_cross_attn_params(sim.handle, std::ptr::null_mut()), -1);
        let mut ca: crate::abi::RKLLMCrossAttnParam = std::mem::zeroed();
        assert_eq!(rkllm_set_cross_attn_params(sim.handle, &mut ca), 0);
    }
    assert!(sim.rec.events().is_empty(), "rejected runs make no callbacks");
}

#[cfg(feature = "abi13")]
#[test]
fn per_run_sampling_overrides_init_values() {
    let sim = init(&model("Qwen2"), fast_env("sampling"), |p| p.top_k = 7).expect("init");
    let mut s = crate::abi::v1_3::RKLLMSamplingParam {
        top_k: 1,
        top_p: 0.5,
        temperature: 0.25,
        repeat_penalty: 1.0,
        frequency_penalty: 0.0,
        presence_penalty: 0.0,
        mirostat: 0,
        mirostat_tau: 5.0,
        mirostat_eta: 0.1,
    };
    let prompt = c"hi";
    // SAFETY: all-zero structs are valid; pointers to live values.
    unsafe {
        let mut inp: crate::abi::active::RKLLMInput = std::mem::zeroed();
        inp.input.prompt_input = prompt.as_ptr();
        let mut ip: crate::abi::active::RKLLMInferParam = std::mem::zeroed();
        assert_eq!(crate::rkllm_run(sim.handle, &mut inp, &mut ip, std::ptr::null_mut()), 0);
        ip.sampling_params = &mut s;
        assert_eq!(crate::rkllm_run(sim.handle, &mut inp, &mut ip, std::ptr::null_mut()), 0);
    }
    let t = sim.trace();
    assert!(t.contains("top_k=7 top_p=0.9 temperature=0.8 max_new_tokens=-1"), "{t}");
    assert!(t.contains("top_k=1 top_p=0.5 temperature=0.25"), "{t}");
}
