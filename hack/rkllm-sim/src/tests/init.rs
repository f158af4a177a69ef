//! `rkllm_init` / `rkllm_destroy`: validation, domain memory, defaults, the embedded version.

use std::{ffi::CString, ptr};

use super::{Sim, fast_env, init, model, scratch};
use crate::{
    abi::LLMHandle, env::SimEnv, rkllm_abort, rkllm_createDefaultParam, rkllm_destroy, rkllm_get_kv_cache_size,
    rkllm_is_running, rkllm_release_prompt_cache, rkllm_run, rkllm_set_chat_template,
};

#[test]
fn default_params_are_the_documented_presets() {
    let p = rkllm_createDefaultParam();
    assert_eq!((p.top_k, p.top_p, p.temperature, p.repeat_penalty), (40, 0.9, 0.8, 1.1));
    assert_eq!((p.frequency_penalty, p.presence_penalty, p.mirostat), (0.0, 0.0, 0));
    assert_eq!((p.mirostat_tau, p.mirostat_eta), (5.0, 0.1));
    assert_eq!((p.max_context_len, p.max_new_tokens, p.n_keep, p.skip_special_token), (512, -1, -1, true));
    let e = p.extend_param;
    assert_eq!((e.base_domain_id, e.embed_flash, e.enabled_cpus_num, e.enabled_cpus_mask, e.n_batch), (0, 0, 4, 0, 1));
    assert!(p.model_path.is_null());
}

#[test]
fn version_tag_matches_the_abi() {
    let expected = if cfg!(feature = "abi13") { "1.3.0" } else { "1.2.3" };
    if option_env!("RKLLM_SIM_VERSION").is_none() {
        assert_eq!(crate::version_line(), format!("rkllm-runtime version: {expected}"));
    }
    assert_eq!(crate::VERSION_TAG.last(), Some(&0));
}

#[test]
fn context_limit_platform_batch_and_magic_are_checked() {
    let env = fast_env("init_checks");
    let trace = env.trace.clone().unwrap();
    // Over the model's limit of 4096.
    assert_eq!(init(&model("Qwen2"), env.clone(), |p| p.max_context_len = 8192).err(), Some(-1));
    // ≤0 means "the model's limit".
    let sim = init(&model("Qwen2"), env.clone(), |p| p.max_context_len = 0).expect("init");
    assert!(sim.trace().contains("init handle="), "{}", sim.trace());
    assert!(sim.trace().contains("ctx=4096 n_batch=1 cpus_mask=0x0 cpus_num=4"), "{}", sim.trace());
    drop(sim);
    // An RK3576 model on the (simulated) RK3588.
    assert!(init(&model("Qwen3-0.6B-sim_w8a8_rk3576"), env.clone(), |_| {}).is_err());
    // ...which is fine when the sim pretends to be an RK3576.
    let rk3576 = SimEnv { platform: "RK3576".into(), ..env.clone() };
    assert!(init(&model("Qwen3-0.6B-sim_w8a8_rk3576"), rk3576, |_| {}).is_ok());
    assert!(init(&model("Qwen2"), env.clone(), |p| p.extend_param.n_batch = 9).is_err());
    assert!(init(&model("Qwen2"), env.clone(), |p| p.extend_param.n_batch = 0).is_err());
    // A LoRA file is not a model; a file without the magic is not a model file at all.
    assert!(init(&model("Qwen3-0.6B-sim_lora"), env.clone(), |_| {}).is_err());
    let junk = scratch().join("junk.rkllm");
    std::fs::write(&junk, "GGUF\n").unwrap();
    assert!(init(&junk, env.clone(), |_| {}).is_err());
    assert!(init(&scratch().join("missing.rkllm"), env, |_| {}).is_err());
    let t = std::fs::read_to_string(trace).unwrap();
    for reason in ["max_context", "platform", "n_batch", "not_a_model", "bad_magic", "model_open"] {
        assert!(t.contains(&format!("init_failed reason={reason}")), "{reason}: {t}");
    }
}

#[test]
fn null_arguments_fail_cleanly() {
    let mut p = rkllm_createDefaultParam();
    let path = CString::new(model("Qwen2").to_str().unwrap()).unwrap();
    p.model_path = path.as_ptr();
    let mut h: LLMHandle = ptr::null_mut();
    // SAFETY: deliberately NULL arguments; the sim must reject them.
    unsafe {
        #[cfg(not(feature = "abi13"))]
        {
            assert_eq!(crate::rkllm_init(&mut h, &mut p, None), -1);
            assert_eq!(crate::rkllm_init(ptr::null_mut(), &mut p, Some(super::record)), -1);
            assert_eq!(crate::rkllm_init(&mut h, ptr::null_mut(), Some(super::record)), -1);
        }
        #[cfg(feature = "abi13")]
        {
            assert_eq!(crate::rkllm_init(&mut h, &mut p, ptr::null_mut()), -1);
            let mut cb: crate::abi::v1_3::RKLLMCallback = std::mem::zeroed();
            assert_eq!(crate::rkllm_init(&mut h, &mut p, &mut cb), -1, "result_callback is required");
        }
        assert!(h.is_null());
        let bogus = 0x1000 as LLMHandle;
        for handle in [ptr::null_mut(), bogus] {
            assert_eq!(rkllm_destroy(handle), -1);
            assert_eq!(rkllm_abort(handle), -1);
            assert_eq!(rkllm_is_running(handle), -1);
            assert_eq!(rkllm_release_prompt_cache(handle), -1);
            assert_eq!(rkllm_run(handle, ptr::null_mut(), ptr::null_mut(), ptr::null_mut()), -1);
            assert_eq!(rkllm_get_kv_cache_size(handle, ptr::null_mut()), -1);
            assert_eq!(rkllm_set_chat_template(handle, ptr::null(), ptr::null(), ptr::null()), -1);
        }
    }
}

#[test]
fn domain_memory_is_exhausted_and_freed_on_destroy() {
    // Qwen3 takes 791.11 MB; a 1000 MB domain holds one instance. Domain 7001 is this test's.
    let env = SimEnv { domain_mb: 1000.0, ..fast_env("domain") };
    let in_domain = |p: &mut crate::abi::active::RKLLMParam| p.extend_param.base_domain_id = 7001;
    let first: Sim = init(&model("Qwen3-0.6B-sim_w8a8_rk3588"), env.clone(), in_domain).expect("first fits");
    assert!(init(&model("Qwen3-0.6B-sim_w8a8_rk3588"), env.clone(), in_domain).is_err(), "second must not fit");
    // Another domain has its own budget.
    let other = init(&model("Qwen3-0.6B-sim_w8a8_rk3588"), env.clone(), |p| p.extend_param.base_domain_id = 7002);
    assert!(other.is_ok());
    // Batch slots cost extra memory: 791.11 × 1.3 does not fit 1000 MB.
    let batch4 = |p: &mut crate::abi::active::RKLLMParam| {
        p.extend_param.base_domain_id = 7003;
        p.extend_param.n_batch = 4;
    };
    assert!(init(&model("Qwen3-0.6B-sim_w8a8_rk3588"), env.clone(), batch4).is_err());
    drop(first);
    let again = init(&model("Qwen3-0.6B-sim_w8a8_rk3588"), env, in_domain).expect("fits after destroy");
    let t = again.trace();
    assert!(t.contains("init_failed reason=npu_memory"), "{t}");
    assert!(t.contains("domain=7001"), "{t}");
    assert!(t.contains("destroy handle="), "{t}");
}

#[test]
fn load_speed_knob_makes_init_take_memory_over_speed() {
    // Qwen2 is 669.56 MB: at 669.56 MB/s it loads in 1 s, ÷ speed-up 4 = 250 ms.
    let model_mb = 669.56;
    let env = SimEnv { speedup: 4.0, load_mb_s: model_mb, ..fast_env("load_speed") };
    let expected = std::time::Duration::from_millis(250);
    assert_eq!(env.load_time(model_mb), expected);
    let t0 = std::time::Instant::now();
    let sim = init(&model("Qwen2"), env, |_| {}).expect("init");
    let took = t0.elapsed();
    assert!(took >= expected, "init took {took:?}, expected at least {expected:?}");
    assert!(sim.trace().contains("load model=Qwen2-0.5B-sim mb=669.56 ms=250"), "{}", sim.trace());
    drop(sim);
    // The default (0) loads at once and traces no load.
    let instant = fast_env("load_instant");
    assert_eq!(instant.load_time(model_mb), std::time::Duration::ZERO);
    let t0 = std::time::Instant::now();
    let sim = init(&model("Qwen2"), instant, |_| {}).expect("init");
    assert!(t0.elapsed() < expected, "an instant load took {:?}", t0.elapsed());
    assert!(!sim.trace().contains("load model="), "{}", sim.trace());
    // A load that cannot fit its domain fails at once instead of reading first.
    let full = SimEnv { domain_mb: 100.0, speedup: 4.0, load_mb_s: model_mb, ..fast_env("load_full") };
    let t0 = std::time::Instant::now();
    assert!(init(&model("Qwen2"), full, |p| p.extend_param.base_domain_id = 7010).is_err());
    assert!(t0.elapsed() < expected, "a failed load took {:?}", t0.elapsed());
}
