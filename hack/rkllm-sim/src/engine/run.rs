//! `rkllm_run`: prefill, generation and the callback protocol.
//!
//! ```text
//!  claim (one run per handle) → snapshot state → assemble + tokenize each slot
//!    → context check ─✗→ ERROR callback, -1
//!    → prefill in 128-token chunks (sleep, abort check between chunks)
//!    → hidden mode: one callback with hidden states → FINISH
//!    → generate: one step per token (sleep, abort check, callback; return 1 = pause)
//!    → write KV back → save prompt cache → FINISH with perf → release claim
//! ```
//!
//! Timing is real wall-clock sleeping against absolute deadlines, so throughput measured by a
//! caller matches the configured model speed divided by `RKLLM_SIM_SPEEDUP`, without drift
//! from per-step overhead. The state lock is never held while a callback runs, so callbacks may
//! call any API function (abort, is_running, get_kv_cache_size) without deadlocking.

use std::{
    ffi::{CString, c_int},
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    thread,
    time::{Duration, Instant},
};

use super::{Handle, Sampling, Slot, UserData, next_id};
use crate::{
    abi::{RKLLM_RUN_ERROR, RKLLM_RUN_FINISH, RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING, RKLLMPerfStat, RKLLMResult},
    hidden::hidden_states,
    log, prompt_cache,
    template::{Role, TurnInput, assemble},
    textgen::{AnswerInput, answer},
    tokenizer::{token_id, tokenize},
};

/// Prefill is processed (and abort checked) in chunks of this many tokens.
const PREFILL_CHUNK: usize = 128;

/// One prompt of a run.
#[derive(Clone, Debug)]
pub(crate) struct SlotInput {
    pub role: Role,
    pub enable_thinking: bool,
    pub text: String,
}

/// `rkllm_run` arguments, copied out of the caller's structs so `run_async` can return at once.
#[derive(Debug)]
pub(crate) struct RunRequest {
    /// One entry per batch slot; `None` is a padding slot that finishes immediately.
    pub inputs: Vec<Option<SlotInput>>,
    pub hidden: bool,
    pub lora: Option<String>,
    /// `Some(path)` when the prefill should be saved as a prompt-cache file.
    pub save_cache: Option<PathBuf>,
    pub keep_history: bool,
    /// Effective sampling (1.3 per-run values when given, else init values).
    pub sampling: Sampling,
    /// Effective limit; ≤0 = bounded only by the context.
    pub max_new_tokens: i32,
    pub userdata: UserData,
}

/// The right to run on a handle, released on drop (also when a run panics).
pub(crate) struct RunClaim {
    handle: Arc<Handle>,
    id: u64,
}

impl Drop for RunClaim {
    fn drop(&mut self) {
        self.handle.current_run.store(0, Ordering::SeqCst);
    }
}

impl Handle {
    /// Claims the handle for one run, or logs the vendor's busy error.
    pub(crate) fn claim(self: &Arc<Self>) -> Option<RunClaim> {
        let id = next_id();
        match self.current_run.compare_exchange(0, id, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => Some(RunClaim { handle: Arc::clone(self), id }),
            Err(_) => {
                log::error("a task is already running");
                None
            }
        }
    }
}

/// A piece of output delivered by one callback.
struct Piece {
    bytes: Vec<u8>,
    state: c_int,
    /// What the piece adds to the KV cache (the whole token for the first half of a split).
    kv: String,
}

/// Per-slot working state of a run.
struct Work {
    input: Option<SlotInput>,
    slot: Slot,
    /// Tokens this run prefills (template text included).
    new_tokens: Vec<String>,
    system_tokens: usize,
    prompt_text: String,
    reused: usize,
    thinks: bool,
    pieces: Vec<Piece>,
    emitted: usize,
    finished_at: Option<Instant>,
}

impl Work {
    fn active(&self) -> bool {
        self.input.is_some() && self.finished_at.is_none()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Finish,
    Paused,
    Aborted,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            Self::Finish => "finish",
            Self::Paused => "paused",
            Self::Aborted => "aborted",
        }
    }
}

/// Longest common prefix of two token lists.
fn lcp(a: &[String], b: &[String]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        thread::sleep(deadline - now);
    }
}

fn ms(d: Duration) -> f32 {
    (d.as_secs_f64() * 1000.0) as f32
}

/// Splits a token inside its first multi-byte character, as a byte-level decoder would when a
/// character spans two BPE tokens: the first part is an incomplete UTF-8 sequence (WAITING).
fn pieces_of(token: String, allow_split: bool) -> Vec<Piece> {
    let split = token.char_indices().find(|(_, c)| c.len_utf8() > 1).map(|(i, _)| i + 1);
    match split.filter(|_| allow_split) {
        Some(at) => {
            let bytes = token.as_bytes();
            vec![
                Piece { bytes: bytes[..at].to_vec(), state: RKLLM_RUN_WAITING, kv: token.clone() },
                Piece { bytes: bytes[at..].to_vec(), state: RKLLM_RUN_NORMAL, kv: String::new() },
            ]
        }
        None => vec![Piece { bytes: token.clone().into_bytes(), state: RKLLM_RUN_NORMAL, kv: token }],
    }
}

impl RunClaim {
    fn handle(&self) -> &Handle {
        &self.handle
    }

    fn aborted(&self) -> bool {
        self.handle.abort_run.load(Ordering::SeqCst) == self.id
    }

    /// Cost multiplier of a step with `n` active sequences (`RKLLM_SIM_BATCH_FACTOR`).
    fn batch_cost(&self, n: usize) -> f64 {
        1.0 + self.handle.env.batch_factor * n.saturating_sub(1) as f64
    }

    fn scaled(&self, ms: f64) -> Duration {
        Duration::try_from_secs_f64(ms / 1000.0 / self.handle.env.speedup).unwrap_or(Duration::ZERO)
    }

    /// Calls the caller's callback with `results` (one entry, or `n_batch` entries).
    fn deliver(&self, results: &mut [RKLLMResult], state: c_int, userdata: UserData) -> c_int {
        // SAFETY: `callback` was checked non-NULL at init and has the header's signature;
        // `results` outlives the call, and text pointers in it point into CStrings the caller
        // of `deliver` keeps alive until after this returns.
        unsafe { (self.handle.callback)(results.as_mut_ptr(), userdata.0, state) }
    }

    /// Runs the request to completion; returns `rkllm_run`'s result.
    pub(crate) fn execute(self, req: RunRequest) -> c_int {
        let h = self.handle();
        let userdata = if req.userdata.0.is_null() { h.default_userdata } else { req.userdata };
        let batch = req.inputs.len() > 1;
        let keep_history = req.keep_history && !batch;

        let (template, tools, slots, cache) = {
            let st = h.lock();
            if let Some(name) = &req.lora
                && !st.loras.contains(name)
            {
                log::error(&format!("lora adapter {name} is not loaded"));
                return -1;
            }
            (st.template.clone(), st.tools.clone(), st.slots.clone(), st.prompt_cache.clone())
        };

        let mut work: Vec<Work> = req
            .inputs
            .into_iter()
            .zip(slots)
            .map(|(input, slot)| {
                let mut w = Work {
                    input,
                    slot,
                    new_tokens: Vec::new(),
                    system_tokens: 0,
                    prompt_text: String::new(),
                    reused: 0,
                    thinks: false,
                    pieces: Vec::new(),
                    emitted: 0,
                    finished_at: None,
                };
                let Some(inp) = &w.input else { return w };
                if req.hidden {
                    // Embedding use: the text as given, no template, no KV involvement.
                    w.new_tokens = tokenize(&inp.text).into_iter().map(str::to_owned).collect();
                    w.prompt_text = inp.text.clone();
                    return w;
                }
                let turn = TurnInput { role: inp.role, text: &inp.text, enable_thinking: inp.enable_thinking };
                let a = assemble(&template, tools.as_ref(), w.slot.kv.is_empty(), h.model.thinking, &turn);
                let sys: Vec<String> = tokenize(&a.system).into_iter().map(str::to_owned).collect();
                w.system_tokens = sys.len();
                w.new_tokens = sys;
                w.new_tokens.extend(tokenize(&a.turn).into_iter().map(str::to_owned));
                w.prompt_text = a.text();
                w.thinks = h.model.thinking && !w.prompt_text.ends_with("</think>\n\n");
                let kv_len = w.slot.kv.len();
                let full: Vec<String> = w.slot.kv.iter().chain(&w.new_tokens).cloned().collect();
                let known = lcp(&full, &w.slot.last_prompt).max(cache.as_deref().map_or(0, |c| lcp(&full, c)));
                w.reused = known.saturating_sub(kv_len).min(w.new_tokens.len());
                w
            })
            .collect();

        let first = work.iter().find_map(|w| w.input.as_ref());
        h.trace.event(&format!(
            "run handle={} n_batch={} active={} keep_history={} mode={} role={} thinking={} input_tokens={} reused={} \
             lora={} top_k={} top_p={} temperature={} max_new_tokens={}",
            h.id,
            work.len(),
            work.iter().filter(|w| w.input.is_some()).count(),
            u8::from(keep_history),
            if req.hidden { "hidden" } else { "generate" },
            first.map_or("-", |i| i.role.as_str()),
            u8::from(first.is_some_and(|i| i.enable_thinking)),
            work.iter().map(|w| w.new_tokens.len()).sum::<usize>(),
            work.iter().map(|w| w.reused).sum::<usize>(),
            req.lora.as_deref().unwrap_or("-"),
            req.sampling.top_k,
            req.sampling.top_p,
            req.sampling.temperature,
            req.max_new_tokens,
        ));

        let ctx = h.max_context_len as usize;
        let kv_of = |w: &Work| if req.hidden { 0 } else { w.slot.kv.len() };
        if let Some(w) = work.iter().find(|w| w.input.is_some() && kv_of(w) + w.new_tokens.len() >= ctx) {
            log::error(&format!("input tokens({}) exceed max_context({ctx})", kv_of(w) + w.new_tokens.len()));
            let mut results = vec![RKLLMResult::EMPTY; work.len()];
            self.deliver(&mut results, RKLLM_RUN_ERROR, userdata);
            h.trace.event(&format!("run_end handle={} reason=error generated=0", h.id));
            return -1;
        }

        // Prefill: the batch advances together, paced by its longest prompt.
        let prefill_start = Instant::now();
        let per_token = h.env.prefill_ms_per_token.unwrap_or(h.model.ttft_ms_128 / 128.0);
        let prefilling = work.iter().filter(|w| w.input.is_some()).count();
        let longest = work.iter().map(|w| w.new_tokens.len() - w.reused).max().unwrap_or(0);
        let mut deadline = prefill_start;
        let mut done = 0;
        let mut end = End::Finish;
        while done < longest {
            if self.aborted() {
                end = End::Aborted;
                break;
            }
            let chunk = PREFILL_CHUNK.min(longest - done);
            deadline += self.scaled(chunk as f64 * per_token * self.batch_cost(prefilling));
            sleep_until(deadline);
            done += chunk;
        }
        let prefill_ms = ms(prefill_start.elapsed());
        let decode_start = Instant::now();
        // An abort during prefill leaves the KV cache as it was before the run.
        let prefilled = end == End::Finish && !req.hidden;

        if end == End::Finish && req.hidden {
            self.deliver_hidden(&work, userdata);
        } else if prefilled {
            end = self.generate(
                &mut work,
                req.lora.as_deref(),
                tools.as_ref(),
                req.max_new_tokens,
                decode_start,
                userdata,
            );
        }

        if prefilled {
            let mut st = h.lock();
            for (w, slot) in work.iter_mut().zip(st.slots.iter_mut()) {
                if w.input.is_none() {
                    continue;
                }
                if !(keep_history || end == End::Paused) {
                    w.slot.kv.clear();
                    w.slot.system_len = 0;
                }
                *slot = w.slot.clone();
            }
        }
        if end == End::Paused {
            let kept = work.iter().map(|w| w.slot.kv.len()).max().unwrap_or(0);
            h.trace.event(&format!("pause handle={} tokens={kept}", h.id));
        }
        if prefilled && let Some(path) = &req.save_cache {
            self.save_cache(path, &work);
        }

        let mut results: Vec<RKLLMResult> = work
            .iter()
            .map(|w| {
                let mut r = RKLLMResult::EMPTY;
                r.perf = RKLLMPerfStat {
                    prefill_time_ms: prefill_ms,
                    prefill_tokens: w.new_tokens.len() as c_int,
                    generate_time_ms: ms(w.finished_at.unwrap_or_else(Instant::now) - decode_start),
                    generate_tokens: w.emitted as c_int,
                    memory_usage_mb: h.memory_mb as f32,
                };
                r
            })
            .collect();
        let generated: usize = work.iter().map(|w| w.emitted).sum();
        h.trace.event(&format!("run_end handle={} reason={} generated={generated}", h.id, end.as_str()));
        if h.env.log_level >= 1 {
            log_perf(&results, h.memory_mb);
        }
        self.deliver(&mut results, RKLLM_RUN_FINISH, userdata);
        0
    }

    /// Hidden-layer mode: one callback carrying `num_tokens × embd_size` floats per slot.
    fn deliver_hidden(&self, work: &[Work], userdata: UserData) {
        let dim = self.handle().model.embd_size;
        let buffers: Vec<Vec<f32>> = work
            .iter()
            .map(|w| hidden_states(&w.new_tokens.iter().map(String::as_str).collect::<Vec<_>>(), dim))
            .collect();
        let mut results: Vec<RKLLMResult> = work
            .iter()
            .zip(&buffers)
            .map(|(w, buf)| {
                let mut r = RKLLMResult::EMPTY;
                if w.input.is_some() {
                    r.token_id = 0;
                    r.last_hidden_layer.hidden_states = buf.as_ptr();
                    r.last_hidden_layer.embd_size = dim as c_int;
                    r.last_hidden_layer.num_tokens = w.new_tokens.len() as c_int;
                }
                r
            })
            .collect();
        self.deliver(&mut results, RKLLM_RUN_NORMAL, userdata);
    }

    /// The decode loop: one step per output piece for every active slot.
    fn generate(
        &self,
        work: &mut [Work],
        lora: Option<&str>,
        tools: Option<&crate::template::Tools>,
        max_new_tokens: i32,
        decode_start: Instant,
        userdata: UserData,
    ) -> End {
        let h = self.handle();
        let batch = work.len() > 1;
        for w in work.iter_mut() {
            let Some(inp) = &w.input else { continue };
            w.slot.kv.extend(w.new_tokens.iter().cloned());
            if w.slot.kv.len() == w.new_tokens.len() {
                w.slot.system_len = w.system_tokens;
            }
            w.slot.last_prompt = w.slot.kv.clone();
            let kv_text = w.slot.kv.concat();
            let tokens = answer(&AnswerInput {
                kv_text: &kv_text,
                lora,
                tools,
                role: inp.role,
                user_text: &inp.text,
                prompt: &w.prompt_text,
                thinks: w.thinks,
            });
            w.pieces = tokens.into_iter().flat_map(|t| pieces_of(t, !batch)).collect();
        }
        for w in work.iter_mut().filter(|w| w.input.is_none()) {
            w.finished_at = Some(decode_start);
        }
        let limit = if max_new_tokens > 0 { max_new_tokens as usize } else { usize::MAX };
        let ctx = h.max_context_len as usize;
        let step_ms = 1000.0 / h.env.decode_tok_s.unwrap_or(h.model.decode_tok_s);
        let mut deadline = decode_start;
        loop {
            // A slot is done when its answer is out, its limit is hit or its context is full.
            for w in work.iter_mut().filter(|w| w.active()) {
                if w.emitted >= w.pieces.len() || w.emitted >= limit || w.slot.kv.len() >= ctx {
                    w.finished_at = Some(Instant::now());
                }
            }
            let active = work.iter().filter(|w| w.active()).count();
            if active == 0 {
                return End::Finish;
            }
            if self.aborted() {
                return End::Aborted;
            }
            deadline += self.scaled(step_ms * self.batch_cost(active));
            sleep_until(deadline);

            let mut texts = Vec::with_capacity(work.len());
            let mut results = vec![RKLLMResult::EMPTY; work.len()];
            let mut state = RKLLM_RUN_NORMAL;
            for (w, r) in work.iter().zip(results.iter_mut()) {
                if !w.active() {
                    continue;
                }
                let piece = &w.pieces[w.emitted];
                // Output bytes come from C strings and the vocabulary, so they hold no NUL.
                let text = CString::new(piece.bytes.clone()).unwrap_or_default();
                r.text = text.as_ptr();
                r.token_id = token_id(&piece.bytes);
                state = piece.state;
                texts.push(text);
            }
            let ret = self.deliver(&mut results, if batch { RKLLM_RUN_NORMAL } else { state }, userdata);
            drop(texts);
            for w in work.iter_mut().filter(|w| w.active()) {
                let kv = std::mem::take(&mut w.pieces[w.emitted].kv);
                w.slot.kv.push(kv);
                w.emitted += 1;
            }
            // 1 pauses; 2 (1.3 "release the buffer") and anything else continue.
            if ret == 1 {
                let now = Instant::now();
                work.iter_mut().filter(|w| w.active()).for_each(|w| w.finished_at = Some(now));
                return End::Paused;
            }
        }
    }

    /// Writes the prompt tokens of the first non-empty slot (whole conversation prefix).
    fn save_cache(&self, path: &std::path::Path, work: &[Work]) {
        let h = self.handle();
        let Some(w) = work.iter().find(|w| w.input.is_some()) else { return };
        match prompt_cache::save(path, &h.model.name, &w.slot.last_prompt) {
            Ok(()) => {
                h.trace.event(&format!("save_prompt_cache path={} tokens={}", path.display(), w.slot.last_prompt.len()))
            }
            Err(e) => log::error(&format!("failed to save prompt cache {}: {e}", path.display())),
        }
    }
}

/// The `RKLLM_LOG_LEVEL=1` table: totals over all slots.
fn log_perf(results: &[RKLLMResult], memory_mb: f64) {
    let prefill_ms = results.first().map_or(0.0, |r| r.perf.prefill_time_ms);
    let prefill_tokens: c_int = results.iter().map(|r| r.perf.prefill_tokens).sum();
    let gen_ms = results.iter().map(|r| r.perf.generate_time_ms).fold(0.0, f32::max);
    let gen_tokens: c_int = results.iter().map(|r| r.perf.generate_tokens).sum();
    let row = |stage: &str, total: f32, tokens: c_int| {
        let per = if tokens > 0 { total / tokens as f32 } else { 0.0 };
        let rate = if total > 0.0 { tokens as f32 * 1000.0 / total } else { 0.0 };
        format!(" {stage:<12}{total:>16.2}{tokens:>10}{per:>22.2}{rate:>22.2}")
    };
    let rule = "-".repeat(84);
    for line in [
        rule.clone(),
        format!(
            " {:<12}{:>16}{:>10}{:>22}{:>22}",
            "Stage", "Total Time (ms)", "Tokens", "Time per Token (ms)", "Tokens per Second"
        ),
        rule.clone(),
        row("Prefill", prefill_ms, prefill_tokens),
        row("Generate", gen_ms, gen_tokens),
        rule.clone(),
        format!(" Peak Memory Usage (GB): {:.2}", memory_mb / 1024.0),
        rule,
    ] {
        log::info(&line);
    }
}
