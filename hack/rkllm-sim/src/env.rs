//! Runtime knobs from the environment, read once per `rkllm_init` and kept by the handle.
//!
//! Reading at init (not per call) gives every handle a stable configuration for its lifetime,
//! like the vendor runtime, which reads `RKLLM_LOG_LEVEL` once. Unit tests run in parallel
//! threads of one process, so instead of mutating the process environment they install a
//! per-thread override ([`set_thread_override`]) that `rkllm_init` on that thread picks up.

use std::{path::PathBuf, str::FromStr};

/// Default cost factor of one extra active sequence in a batched step: a step with `n` active
/// sequences costs `t1 × (1 + f·(n−1))`. 0.12 models the NPU being mostly weight-bandwidth bound
/// at small batch sizes (the same weights serve every sequence), so batching is nearly free.
pub(crate) const DEFAULT_BATCH_FACTOR: f64 = 0.12;
/// Default NPU memory per `base_domain_id`, in MB (~4 GB per domain is what users observe,
/// rknn-llm #437).
pub(crate) const DEFAULT_DOMAIN_MB: f64 = 4096.0;
/// Smallest accepted speed-up; anything below is clamped so a typo cannot stall a test for hours.
const MIN_SPEEDUP: f64 = 1e-3;

#[derive(Clone, Debug)]
pub(crate) struct SimEnv {
    /// `RKLLM_SIM_SPEEDUP`: every simulated duration is divided by this.
    pub speedup: f64,
    /// `RKLLM_SIM_PREFILL_MS_PER_TOKEN`: overrides the model's `ttft_ms_128 / 128`.
    pub prefill_ms_per_token: Option<f64>,
    /// `RKLLM_SIM_DECODE_TOK_S`: overrides the model's `decode_tok_s`.
    pub decode_tok_s: Option<f64>,
    /// `RKLLM_SIM_BATCH_FACTOR`, see [`DEFAULT_BATCH_FACTOR`].
    pub batch_factor: f64,
    /// `RKLLM_SIM_DOMAIN_MB`: NPU memory budget of each `base_domain_id`.
    pub domain_mb: f64,
    /// `RKLLM_SIM_LOAD_MB_S`: how fast `rkllm_init` reads a model, MB/s; `rkllm_init` takes
    /// `memory_mb / load_mb_s` seconds (÷ speed-up). 0 (the default) loads at once, which keeps
    /// the test suites fast. The vendor publishes no load time for `.rkllm` files, so a caller
    /// that wants one picks the speed (e.g. the board's storage read speed) and says so.
    pub load_mb_s: f64,
    /// `RKLLM_SIM_PLATFORM`: the chip the sim pretends to be.
    pub platform: String,
    /// `RKLLM_SIM_TRACE`: file that receives one line per API event.
    pub trace: Option<PathBuf>,
    /// `RKLLM_LOG_LEVEL`: ≥1 prints the perf table after each run.
    pub log_level: i32,
}

impl Default for SimEnv {
    fn default() -> Self {
        Self {
            speedup: 1.0,
            prefill_ms_per_token: None,
            decode_tok_s: None,
            batch_factor: DEFAULT_BATCH_FACTOR,
            domain_mb: DEFAULT_DOMAIN_MB,
            load_mb_s: 0.0,
            platform: "RK3588".to_owned(),
            trace: None,
            log_level: 0,
        }
    }
}

#[cfg(test)]
thread_local! {
    static OVERRIDE: std::cell::RefCell<Option<SimEnv>> = const { std::cell::RefCell::new(None) };
}

/// Makes `rkllm_init` on the current thread use `env` instead of the process environment.
#[cfg(test)]
pub(crate) fn set_thread_override(env: Option<SimEnv>) {
    OVERRIDE.with(|o| *o.borrow_mut() = env);
}

impl SimEnv {
    /// How long `rkllm_init` takes to read a model of `memory_mb` MB: zero when
    /// `RKLLM_SIM_LOAD_MB_S` is 0 (unset), else `memory_mb / load_mb_s` seconds ÷ speed-up.
    pub(crate) fn load_time(&self, memory_mb: f64) -> std::time::Duration {
        if self.load_mb_s <= 0.0 || !self.load_mb_s.is_finite() {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::try_from_secs_f64(memory_mb.max(0.0) / self.load_mb_s / self.speedup)
            .unwrap_or(std::time::Duration::ZERO)
    }

    /// The current configuration: the test override if one is set, else the environment.
    /// Unparsable values fall back to the default (with a warning) rather than failing init,
    /// because a sim that refuses to start hides the bug the test was written for.
    pub(crate) fn current() -> Self {
        #[cfg(test)]
        if let Some(env) = OVERRIDE.with(|o| o.borrow().clone()) {
            return env;
        }
        let d = Self::default();
        let speedup = parse("RKLLM_SIM_SPEEDUP").unwrap_or(d.speedup);
        Self {
            speedup: if speedup.is_nan() { d.speedup } else { speedup.max(MIN_SPEEDUP) },
            prefill_ms_per_token: parse::<f64>("RKLLM_SIM_PREFILL_MS_PER_TOKEN").filter(|v| *v >= 0.0),
            decode_tok_s: parse::<f64>("RKLLM_SIM_DECODE_TOK_S").filter(|v| *v > 0.0),
            batch_factor: parse::<f64>("RKLLM_SIM_BATCH_FACTOR").filter(|v| *v >= 0.0).unwrap_or(d.batch_factor),
            domain_mb: parse::<f64>("RKLLM_SIM_DOMAIN_MB").filter(|v| *v >= 0.0).unwrap_or(d.domain_mb),
            load_mb_s: parse::<f64>("RKLLM_SIM_LOAD_MB_S").filter(|v| *v >= 0.0).unwrap_or(d.load_mb_s),
            platform: std::env::var("RKLLM_SIM_PLATFORM").ok().filter(|p| !p.is_empty()).unwrap_or(d.platform),
            trace: std::env::var_os("RKLLM_SIM_TRACE").filter(|p| !p.is_empty()).map(PathBuf::from),
            log_level: parse("RKLLM_LOG_LEVEL").unwrap_or(d.log_level),
        }
    }
}

fn parse<T: FromStr>(key: &str) -> Option<T> {
    let raw = std::env::var(key).ok()?;
    let parsed = raw.trim().parse().ok();
    if parsed.is_none() {
        crate::log::warn(&format!("ignoring {key}={raw:?}: not a number"));
    }
    parsed
}
