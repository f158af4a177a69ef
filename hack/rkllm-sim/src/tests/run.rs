//! `rkllm_run` and the callback protocol: token stream, FINISH perf, WAITING splits, pause,
//! abort, KV-cache bookkeeping, context overflow, async runs, batches and hidden states.

use std::{
    ffi::c_int,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use super::{Opts, Sim, fast_env, init, model};
use crate::{
    abi::{RKLLM_INFER_GET_LAST_HIDDEN_LAYER, RKLLM_RUN_ERROR, RKLLM_RUN_FINISH, RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING},
    env::SimEnv,
    rkllm_abort, rkllm_clear_kv_cache, rkllm_destroy, rkllm_is_running, rkllm_set_chat_template,
};

fn qwen2(test: &str) -> Sim {
    init(&model("Qwen2"), fast_env(test), |_| {}).expect("init")
}

#[test]
fn tokens_then_finish_with_perf() {
    let sim = qwen2("sequence");
    assert_eq!(sim.run(&[Some("Tell me about the board.")], &Opts::default()), 0);
    let events = sim.rec.events();
    let tokens = sim.rec.tokens();
    assert!(tokens.len() >= 12, "{events:?}");
    assert_eq!(events.len(), tokens.len() + 1, "only token callbacks, then one FINISH");
    assert!(tokens.iter().all(|e| e.slots[0].text.is_some() && e.slots[0].token_id >= 0));
    let fin = sim.rec.finish().slots[0].clone();
    assert!(fin.text.is_none());
    // ChatML around the prompt ("assistant" is two tokens: words split after 6 characters).
    let prompt_tokens =
        crate::tokenizer::count("<|im_start|>user\nTell me about the board.<|im_end|>\n<|im_start|>assistant\n");
    assert_eq!(prompt_tokens, 3 + 10 + 6);
    assert_eq!(fin.perf.prefill_tokens as usize, prompt_tokens);
    assert_eq!(fin.perf.generate_tokens as usize, tokens.len());
    assert!(fin.perf.prefill_time_ms > 0.0 && fin.perf.generate_time_ms > 0.0);
    assert!((fin.perf.memory_usage_mb - 669.56).abs() < 0.01);
    // Deterministic: the same single-turn prompt gives the same answer.
    let first = sim.rec.text();
    sim.rec.reset();
    assert_eq!(sim.run(&[Some("Tell me about the board.")], &Opts::default()), 0);
    assert_eq!(sim.rec.text(), first);
    let t = sim.trace();
    assert!(t.contains(&format!("input_tokens={prompt_tokens} reused=0 lora=-")), "{t}");
    assert!(t.contains(&format!("input_tokens={prompt_tokens} reused={prompt_tokens} lora=-")), "auto reuse: {t}");
    assert!(t.contains(&format!("reason=finish generated={}", tokens.len())), "{t}");
    assert_eq!(sim.kv_sizes(), [0], "single-turn runs leave the KV cache empty");
}

#[test]
fn waiting_pieces_join_into_valid_utf8() {
    let sim = qwen2("waiting");
    let mut found = false;
    for i in 0..40 {
        sim.rec.reset();
        assert_eq!(sim.run(&[Some(&format!("prompt number {i}"))], &Opts::default()), 0);
        let tokens = sim.rec.tokens();
        let waiting: Vec<_> = tokens.iter().filter(|e| e.state == RKLLM_RUN_WAITING).collect();
        if waiting.is_empty() {
            continue;
        }
        found = true;
        for w in waiting {
            assert!(std::str::from_utf8(w.slots[0].text.as_deref().unwrap()).is_err(), "WAITING is incomplete UTF-8");
        }
        let text = sim.rec.text();
        assert!(["café", "naïve", "東京", "über", "🙂"].iter().any(|w| text.contains(w)), "{text}");
        assert_eq!(sim.rec.finish().slots[0].perf.generate_tokens as usize, tokens.len());
        break;
    }
    assert!(found, "some prompt produces a multi-byte word");
}

#[test]
fn pause_keeps_the_kv_cache() {
    let mut sim = qwen2("pause");
    sim.rec.pause_at = Some(3);
    assert_eq!(sim.run(&[Some("Hello there")], &Opts::default()), 0);
    assert_eq!(sim.rec.tokens().len(), 3);
    let fin = sim.rec.finish().slots[0].clone();
    assert_eq!(fin.perf.generate_tokens, 3);
    let after_first = sim.kv_sizes()[0];
    assert_eq!(after_first, fin.perf.prefill_tokens + 3, "prompt + generated tokens kept");
    sim.rec.reset();
    assert_eq!(sim.run(&[Some("Go on")], &Opts::default()), 0);
    // Resumed without the system part; the second pause grows the cache further.
    assert!(sim.kv_sizes()[0] > after_first + 3);
    assert!(sim.trace().contains("reason=paused generated=3"));
    assert!(sim.trace().contains("pause handle="));
}

#[test]
fn abort_from_another_thread_ends_the_run() {
    // 20 ms per token at 1× speed: an answer of ≥12 tokens takes ≥240 ms.
    let env = SimEnv { speedup: 1.0, decode_tok_s: Some(50.0), prefill_ms_per_token: Some(0.0), ..fast_env("abort") };
    let sim = Arc::new(init(&model("Qwen2"), env, |_| {}).expect("init"));
    // SAFETY: a live handle.
    assert_eq!(unsafe { rkllm_is_running(sim.handle) }, 0);
    assert_eq!(unsafe { rkllm_abort(sim.handle) }, 0, "abort while idle is a no-op");
    let s = Arc::clone(&sim);
    let runner = thread::spawn(move || s.run(&[Some("Write a long story")], &Opts::default()));
    let start = Instant::now();
    while sim.rec.tokens().len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "run never started");
        thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: a live handle.
    unsafe {
        assert_eq!(rkllm_is_running(sim.handle), 1);
        assert_eq!(sim.run(&[Some("second")], &Opts::default()), -1, "one run per handle");
        assert_eq!(rkllm_destroy(sim.handle), -1, "no destroy under a running run");
        assert_eq!(rkllm_abort(sim.handle), 0);
    }
    assert_eq!(runner.join().unwrap(), 0);
    // SAFETY: a live handle.
    assert_eq!(unsafe { rkllm_is_running(sim.handle) }, 0);
    let fin = sim.rec.finish().slots[0].clone();
    assert!(fin.perf.generate_tokens < 12, "stopped early: {}", fin.perf.generate_tokens);
    let t = sim.trace();
    assert!(t.contains("abort handle=") && t.contains("reason=aborted"), "{t}");
    assert!(t.contains("destroy_refused"), "{t}");
    // The late abort does not leak into the next run.
    sim.rec.reset();
    assert_eq!(sim.run(&[Some("hi")], &Opts { ..Opts::default() }), 0);
    assert!(sim.trace().ends_with(&format!("reason=finish generated={}\n", sim.rec.tokens().len())));
}

#[test]
fn keep_history_accumulates_and_clear_works_both_ways() {
    let sim = qwen2("history");
    let (sys, pre, post) =
        (c"<|im_start|>system\nBe brief.<|im_end|>\n", c"<|im_start|>user\n", c"<|im_end|>\n<|im_start|>assistant\n");
    // SAFETY: live handle and strings.
    assert_eq!(unsafe { rkllm_set_chat_template(sim.handle, sys.as_ptr(), pre.as_ptr(), post.as_ptr()) }, 0);
    let system_tokens = crate::tokenizer::count(sys.to_str().unwrap()) as c_int;
    let multi = Opts { keep_history: true, ..Opts::default() };
    assert_eq!(sim.run(&[Some("First question")], &multi), 0);
    let first = sim.rec.finish().slots[0].perf;
    assert_eq!(sim.kv_sizes()[0], first.prefill_tokens + first.generate_tokens);
    sim.rec.reset();
    assert_eq!(sim.run(&[Some("Second question")], &multi), 0);
    let second = sim.rec.finish().slots[0].perf;
    assert!(second.prefill_tokens < first.prefill_tokens, "no system part on the second turn");
    let total = first.prefill_tokens + first.generate_tokens + second.prefill_tokens + second.generate_tokens;
    assert_eq!(sim.kv_sizes()[0], total);

    // SAFETY: live handle; ranges have n_batch (1) entries.
    unsafe {
        let (mut s, mut e) = (2, 5);
        assert_eq!(rkllm_clear_kv_cache(sim.handle, 0, &mut s, &mut e), 0);
        assert_eq!(sim.kv_sizes()[0], total - 3);
        assert_eq!(rkllm_clear_kv_cache(sim.handle, 0, &mut s, std::ptr::null_mut()), -1);
        assert_eq!(rkllm_clear_kv_cache(sim.handle, 1, std::ptr::null_mut(), std::ptr::null_mut()), 0);
        assert_eq!(sim.kv_sizes()[0], system_tokens - 3, "only the (ranged-cut) system part is left");
        assert_eq!(rkllm_clear_kv_cache(sim.handle, 0, std::ptr::null_mut(), std::ptr::null_mut()), 0);
    }
    assert_eq!(sim.kv_sizes()[0], 0);
    let t = sim.trace();
    assert!(t.contains("clear_kv_cache handle=") && t.contains("keep_system_prompt=1 ranged=0"), "{t}");
    assert!(t.contains("keep_system_prompt=0 ranged=1"), "{t}");
}

#[test]
fn prompt_over_the_context_is_an_error_callback() {
    let sim = init(&model("Qwen2"), fast_env("overflow"), |p| p.max_context_len = 32).expect("init");
    let long = "word ".repeat(40);
    assert_eq!(sim.run(&[Some(&long)], &Opts::default()), -1);
    let events = sim.rec.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state, RKLLM_RUN_ERROR);
    assert!(sim.trace().contains("reason=error"));
    // Generation stops at the context end instead of overflowing.
    sim.rec.reset();
    assert_eq!(sim.run(&[Some("short")], &Opts::default()), 0);
    let fin = sim.rec.finish().slots[0].perf;
    assert!(fin.prefill_tokens + fin.generate_tokens <= 32);
}

#[test]
fn run_async_returns_at_once() {
    let env = SimEnv { speedup: 10.0, ..fast_env("async") };
    let sim = init(&model("Qwen2"), env, |_| {}).expect("init");
    let prompt = c"async please";
    // SAFETY: all-zero input/infer structs are valid; the prompt outlives only the call, which
    // is enough because run_async copies its arguments.
    unsafe {
        let mut inp: crate::abi::active::RKLLMInput = std::mem::zeroed();
        inp.input.prompt_input = prompt.as_ptr();
        let mut ip: crate::abi::active::RKLLMInferParam = std::mem::zeroed();
        assert_eq!(crate::rkllm_run_async(sim.handle, &mut inp, &mut ip, sim.userdata()), 0);
        assert_eq!(rkllm_is_running(sim.handle), 1);
    }
    let start = Instant::now();
    while sim.rec.events().last().is_none_or(|e| e.state != RKLLM_RUN_FINISH) {
        assert!(start.elapsed() < Duration::from_secs(20));
        thread::sleep(Duration::from_millis(5));
    }
    while unsafe { rkllm_is_running(sim.handle) } == 1 {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(sim.rec.tokens().len() >= 12);
}

#[test]
fn batch_of_four_delivers_arrays() {
    let env = fast_env("batch");
    let sim = init(&model("Qwen3-0.6B-sim_w8a8_rk3588"), env, |p| p.extend_param.n_batch = 4).expect("init");
    let prompts = [Some("first conversation"), Some("second one"), Some(""), Some("fourth, with café")];
    assert_eq!(sim.run(&prompts, &Opts { thinking: true, ..Opts::default() }), 0);
    let events = sim.rec.events();
    assert!(events.iter().all(|e| e.slots.len() == 4));
    assert!(events.iter().all(|e| e.state == RKLLM_RUN_NORMAL || e.state == RKLLM_RUN_FINISH), "no WAITING in batch");
    // The padded slot finished immediately.
    assert!(events.iter().all(|e| e.slots[2].token_id == -1 && e.slots[2].text.is_none()));
    for i in [0, 1, 3] {
        let text = String::from_utf8(sim.rec.bytes(i)).expect("whole characters in batch mode");
        assert!(text.starts_with("<think>\n"), "slot {i}: {text}");
    }
    let fin = sim.rec.finish();
    for (i, s) in fin.slots.iter().enumerate() {
        let emitted = sim.rec.tokens().iter().filter(|e| e.slots[i].token_id >= 0).count();
        assert_eq!(s.perf.generate_tokens as usize, emitted, "slot {i}");
        assert!((s.perf.memory_usage_mb - 791.11 * 1.3).abs() < 0.1);
    }
    assert_eq!(fin.slots[2].perf.prefill_tokens, 0);
    assert_eq!(sim.kv_sizes(), [0, 0, 0, 0], "keep_history is ignored in batch mode");
    // Slots finish at different steps: some step has both live and finished slots.
    assert!(
        sim.rec.tokens().iter().any(|e| e.slots[0].token_id < 0 || e.slots[1].token_id < 0 || e.slots[3].token_id < 0)
    );
}

#[test]
fn hidden_layer_mode() {
    let sim = qwen2("hidden");
    let hidden = Opts { mode: RKLLM_INFER_GET_LAST_HIDDEN_LAYER, ..Opts::default() };
    assert_eq!(sim.run(&[Some("embed this text")], &hidden), 0);
    let events = sim.rec.events();
    assert_eq!(events.len(), 2);
    let (v, dim, n) = events[0].slots[0].hidden.clone().expect("hidden states");
    assert_eq!(dim, 896);
    assert_eq!(n as usize, crate::tokenizer::count("embed this text"));
    assert_eq!(v.len(), (dim * n) as usize);
    assert_eq!(sim.rec.finish().slots[0].perf.generate_tokens, 0);
    sim.rec.reset();
    assert_eq!(sim.run(&[Some("embed this text")], &hidden), 0);
    assert_eq!(sim.rec.events()[0].slots[0].hidden.as_ref().unwrap().0, v, "deterministic");
    assert!(sim.trace().contains("mode=hidden"));
    assert_eq!(sim.kv_sizes(), [0]);
}
