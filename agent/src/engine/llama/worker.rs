//! The worker thread of one loaded model: owns the `LlamaContext` (llama.cpp contexts are not
//! thread-safe) and runs a small continuous-batching loop in the style of llama.cpp's server:
//! `parallel` slots, each a KV-cache sequence; every step decodes one batch holding the next
//! token of each generating slot plus prompt chunks of slots still prefilling.
//!
//! Prefix reuse: a slot remembers the tokens its sequence holds. A new request goes to the free
//! slot sharing the longest prefix with its prompt; only the tail after that prefix is evaluated.
//! Cancellation: a request whose event receiver was dropped is finished at the next step, so its
//! slot is free within one token.

use std::{
    collections::{VecDeque, hash_map::RandomState},
    hash::BuildHasher,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc as std_mpsc,
    },
    time::Instant,
};

use llama_cpp_2::{
    context::{LlamaContext, params::LlamaContextParams},
    llama_backend::LlamaBackend,
    llama_batch::LlamaBatch,
    model::LlamaModel,
    sampling::LlamaSampler,
    token::{LlamaToken, data::LlamaTokenData, data_array::LlamaTokenDataArray},
};
use tokio::sync::mpsc;

use super::backend::tokenize;
use crate::engine::{
    EngineError, Event, FinishReason, GenRequest, LoadSpec, ModelFacts, Perf,
    stop::{StopMatcher, StopOutcome, take_utf8},
};

/// Tokens evaluated per `llama_decode` call (llama.cpp server default).
const N_BATCH: u32 = 512;

/// A request travelling to the worker thread.
pub(super) struct Job {
    pub req: GenRequest,
    /// The GBNF grammar for the request's wanted format, built when it was submitted.
    pub grammar: Option<String>,
    /// The prompt's tokens, computed once on the worker thread when the job is first considered.
    pub tokens: Option<Vec<LlamaToken>>,
    pub tx: mpsc::UnboundedSender<Event>,
    pub submitted: Instant,
}

/// State of one KV-cache sequence.
struct Slot {
    seq: i32,
    /// Tokens whose KV entries sequence `seq` holds, in position order.
    cache: Vec<LlamaToken>,
    active: Option<Active>,
}

/// A request being served by a slot.
struct Active {
    tx: mpsc::UnboundedSender<Event>,
    prompt: Vec<LlamaToken>,
    /// Index into `prompt` of the next token to evaluate.
    next_prompt: usize,
    sampler: LlamaSampler,
    /// Grammar constraint, kept out of the chain: see [`sample`].
    grammar: Option<LlamaSampler>,
    matcher: StopMatcher,
    /// Bytes of a UTF-8 sequence split across tokens.
    utf8: Vec<u8>,
    max_tokens: Option<u32>,
    ignore_eos: bool,
    generated: u32,
    /// Sampled but not yet evaluated; fed in the next batch.
    pending: Option<LlamaToken>,
    /// Position in the current batch whose logits belong to this slot.
    logits_at: Option<i32>,
    started: Instant,
    first_token: Option<Instant>,
    perf: Perf,
}

pub(super) fn worker(
    backend: &LlamaBackend,
    model: &LlamaModel,
    spec: &LoadSpec,
    rx: &std_mpsc::Receiver<Job>,
    ready: &std_mpsc::Sender<Result<ModelFacts, EngineError>>,
    busy: &AtomicUsize,
) {
    // Before llama.cpp starts its compute threads, which inherit this thread's affinity.
    if !spec.cpus.is_empty() {
        match board::pin_current_thread(&spec.cpus) {
            Ok(cpus) => tracing::info!(?cpus, "llama.cpp threads pinned to the big cores"),
            Err(e) => tracing::warn!(error = %e, "llama.cpp threads not pinned"),
        }
    }
    let parallel = spec.parallel.max(1);
    let threads = i32::try_from(spec.threads.max(1)).unwrap_or(1);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(spec.n_ctx * parallel))
        .with_n_batch(N_BATCH)
        .with_n_ubatch(N_BATCH)
        .with_n_seq_max(parallel)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        // Sliding-window layers (Gemma 3) can only drop a suffix of a sequence when they keep
        // the full window history; prefix reuse needs that.
        .with_swa_full(spec.prefix_cache);
    let mut ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(EngineError::Load {
                path: spec.path.display().to_string(),
                reason: format!("cannot create context: {e}"),
            }));
            return;
        }
    };
    let n_ctx_seq = ctx.n_ctx() / parallel;
    let kv_bytes = kv_cache_bytes(model, ctx.n_ctx());
    let vocab = model.vocab();
    let piece = |t| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
    let facts = ModelFacts {
        bos: piece(vocab.bos()),
        eos: piece(vocab.eos()),
        n_ctx: n_ctx_seq,
        n_ctx_train: model.n_ctx_train(),
        n_params: model.n_params(),
        size_bytes: model.size() + kv_bytes,
        thinking: false,
    };
    if ready.send(Ok(facts)).is_err() {
        return;
    }
    let mut slots: Vec<Slot> = (0..parallel).map(|i| Slot { seq: i as i32, cache: Vec::new(), active: None }).collect();
    warm(model, &mut ctx, &mut slots, &spec.prompt_caches, n_ctx_seq);
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut batch: LlamaBatch<'_> = LlamaBatch::new(N_BATCH as usize, 1);
    let mut open = true;

    while open || !queue.is_empty() || slots.iter().any(|s| s.active.is_some()) {
        let idle = queue.is_empty() && slots.iter().all(|s| s.active.is_none());
        if idle {
            match rx.recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => break,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(job) => queue.push_back(job),
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Drop queued requests whose client already left.
        queue.retain(|j| !j.tx.is_closed());
        while let Some(free) = pick_slot(&slots, queue.front_mut(), model, spec.prefix_cache) {
            let Some(job) = queue.pop_front() else { break };
            start(model, &mut ctx, &mut slots[free], job, n_ctx_seq, spec.prefix_cache);
        }
        step(model, &mut ctx, &mut batch, &mut slots, n_ctx_seq);
        busy.store(slots.iter().filter(|s| s.active.is_some()).count(), Ordering::Relaxed);
    }
    busy.store(0, Ordering::Relaxed);
    tracing::debug!(model = %spec.path.display(), "engine thread stopped");
}

/// Prefills each configured prompt prefix into its own slot's KV cache (slot `i` gets prefix
/// `i`; extra prefixes beyond the slots are skipped with a warning), so the first request
/// starting with one reuses it like any cached prefix.
fn warm(model: &LlamaModel, ctx: &mut LlamaContext<'_>, slots: &mut [Slot], prefixes: &[String], n_ctx: u32) {
    if prefixes.len() > slots.len() {
        tracing::warn!(
            prefixes = prefixes.len(),
            slots = slots.len(),
            "more prompt caches than slots; the rest are not prefilled"
        );
    }
    let mut batch = LlamaBatch::new(N_BATCH as usize, 1);
    for (slot, text) in slots.iter_mut().zip(prefixes) {
        let toks = tokenize(model, text);
        if toks.is_empty() || toks.len() as u32 >= n_ctx {
            tracing::warn!(
                tokens = toks.len(),
                context = n_ctx,
                "prompt cache empty or longer than the context; skipped"
            );
            continue;
        }
        let mut ok = true;
        for (i, chunk) in toks.chunks(N_BATCH as usize).enumerate() {
            batch.clear();
            for (j, t) in chunk.iter().enumerate() {
                let pos = (i * N_BATCH as usize + j) as i32;
                ok &= batch.add(*t, pos, &[slot.seq], false).is_ok();
            }
            ok = ok && ctx.decode(&mut batch).is_ok();
            if !ok {
                break;
            }
        }
        if ok {
            slot.cache = toks;
            tracing::info!(seq = slot.seq, tokens = slot.cache.len(), "prompt cache prefilled");
        } else {
            let _ = ctx.kv_cache_seq_rm(slot.seq, None, None);
            tracing::warn!(seq = slot.seq, "prompt cache prefill failed; the slot starts empty");
        }
    }
}

/// Approximate KV-cache size (f16 K and V for every layer) used for memory accounting.
fn kv_cache_bytes(model: &LlamaModel, n_ctx: u32) -> u64 {
    let n_head = u64::from(model.n_head().max(1));
    let head_dim = u64::try_from(model.n_embd()).unwrap_or(0) / n_head;
    let kv_dim = head_dim * u64::from(model.n_head_kv());
    2 * 2 * u64::from(model.n_layer()) * u64::from(n_ctx) * kv_dim
}

/// The free slot whose cached tokens share the longest prefix with the next request's prompt.
fn pick_slot(slots: &[Slot], next: Option<&mut Job>, model: &LlamaModel, reuse: bool) -> Option<usize> {
    let job = next?;
    let free = slots.iter().enumerate().filter(|(_, s)| s.active.is_none());
    if !reuse {
        return free.map(|(i, _)| i).next();
    }
    let prompt = job.tokens.get_or_insert_with(|| tokenize(model, &job.req.prompt));
    free.max_by_key(|(i, s)| (common_prefix(&s.cache, prompt), std::cmp::Reverse(*i))).map(|(i, _)| i)
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Assigns a job to a slot: tokenizes, trims the sequence to the reusable prefix, builds the
/// sampler. Errors are sent to the client and leave the slot free.
fn start(model: &LlamaModel, ctx: &mut LlamaContext<'_>, slot: &mut Slot, job: Job, n_ctx: u32, reuse: bool) {
    let Job { req, grammar, tokens, tx, submitted } = job;
    let started = Instant::now();
    let prompt = tokens.unwrap_or_else(|| tokenize(model, &req.prompt));
    if prompt.is_empty() {
        let _ = tx.send(Event::Error(EngineError::Decode("empty prompt".into())));
        return;
    }
    let prompt_len = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
    if prompt_len >= n_ctx {
        let _ = tx.send(Event::Error(EngineError::PromptTooLong { prompt: prompt_len, context: n_ctx }));
        return;
    }
    let grammar = match grammar.as_deref().map(|g| LlamaSampler::grammar(model, g, "root")).transpose() {
        Ok(g) => g,
        Err(e) => {
            let _ = tx.send(Event::Error(EngineError::Grammar(e.to_string())));
            return;
        }
    };
    let sampler = build_sampler(model, &req);
    // Keep at least the last prompt token to evaluate: its logits give the first sample.
    let mut keep = if reuse { common_prefix(&slot.cache, &prompt).min(prompt.len() - 1) } else { 0 };
    if ctx.kv_cache_seq_rm(slot.seq, Some(keep as u32), None).is_err() {
        // The memory type cannot drop a suffix (e.g. recurrent state): start the sequence over.
        let _ = ctx.kv_cache_seq_rm(slot.seq, None, None);
        keep = 0;
    }
    slot.cache.truncate(keep);
    let perf = Perf {
        prompt_tokens: prompt_len,
        cached_tokens: keep as u32,
        prompt_eval_tokens: prompt_len - keep as u32,
        queue_ms: started.duration_since(submitted).as_secs_f64() * 1e3,
        ..Perf::default()
    };
    slot.active = Some(Active {
        tx,
        prompt,
        next_prompt: keep,
        sampler,
        grammar,
        matcher: StopMatcher::new(&req.stop),
        utf8: Vec::new(),
        max_tokens: req.max_tokens,
        ignore_eos: req.ignore_eos,
        generated: 0,
        pending: None,
        logits_at: None,
        started,
        first_token: None,
        perf,
    });
}

/// Sampler chain in llama.cpp's common order: penalties, top-k, top-p, min-p, temperature,
/// then a seeded draw (or greedy at temperature 0). The grammar is applied separately.
fn build_sampler(model: &LlamaModel, req: &GenRequest) -> LlamaSampler {
    let p = &req.sampling;
    let mut chain = Vec::new();
    if p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        let last_n = if p.repeat_last_n < 0 { i32::MAX } else { p.repeat_last_n };
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            last_n,
            p.repeat_penalty,
            p.frequency_penalty,
            p.presence_penalty,
        ));
    }
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if p.top_k > 0 {
            chain.push(LlamaSampler::top_k(p.top_k));
        }
        if p.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(p.top_p, 1));
        }
        if p.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(p.min_p, 1));
        }
        chain.push(LlamaSampler::temp(p.temperature));
        let seed = p.seed.unwrap_or_else(|| RandomState::new().hash_one(Instant::now()) as u32);
        chain.push(LlamaSampler::dist(seed));
    }
    LlamaSampler::chain_simple(chain)
}

/// Samples the next token. With a grammar, llama.cpp's common sampler trick: sample freely,
/// check only the chosen token against the grammar, and constrain the whole vocabulary only when
/// it was rejected. Checking 49k–262k tokens against a grammar every step is ~10× slower.
fn sample(model: &LlamaModel, a: &mut Active, ctx: &LlamaContext<'_>, idx: i32) -> LlamaToken {
    let Some(grammar) = a.grammar.as_mut() else {
        // `sample` applies and accepts.
        return a.sampler.sample(ctx, idx);
    };
    let mut cur = ctx.token_data_array_ith(idx);
    cur.apply_sampler(&mut a.sampler);
    let free = cur.selected_token();
    let allowed = free.is_some_and(|t| {
        let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(t, 1.0, 0.0)], false);
        one.apply_sampler(grammar);
        one.data[0].logit().is_finite()
    });
    let tok = match free {
        Some(t) if allowed => t,
        _ => {
            let mut cur = ctx.token_data_array_ith(idx);
            cur.apply_sampler(grammar);
            cur.apply_sampler(&mut a.sampler);
            // The grammar leaves at least end-of-generation allowed, so a token is selected.
            cur.selected_token().unwrap_or_else(|| model.vocab().eos())
        }
    };
    grammar.accept(tok);
    a.sampler.accept(tok);
    tok
}

/// One decode step over every active slot.
fn step(model: &LlamaModel, ctx: &mut LlamaContext<'_>, batch: &mut LlamaBatch<'_>, slots: &mut [Slot], n_ctx: u32) {
    batch.clear();
    // Generating slots first: one token each keeps their inter-token latency flat.
    for slot in slots.iter_mut() {
        let Some(a) = slot.active.as_mut() else { continue };
        if a.tx.is_closed() {
            finish(slot, FinishReason::Cancelled);
            continue;
        }
        a.logits_at = None;
        if let Some(tok) = a.pending.take() {
            let pos = slot.cache.len() as i32;
            if batch.add(tok, pos, &[slot.seq], true).is_ok() {
                slot.cache.push(tok);
                a.logits_at = Some(batch.n_tokens() - 1);
            } else {
                a.pending = Some(tok);
            }
        }
    }
    for slot in slots.iter_mut() {
        let Some(a) = slot.active.as_mut() else { continue };
        while a.next_prompt < a.prompt.len() && (batch.n_tokens() as u32) < N_BATCH {
            let tok = a.prompt[a.next_prompt];
            let last = a.next_prompt + 1 == a.prompt.len();
            let pos = slot.cache.len() as i32;
            if batch.add(tok, pos, &[slot.seq], last).is_err() {
                break;
            }
            slot.cache.push(tok);
            a.next_prompt += 1;
            if last {
                a.logits_at = Some(batch.n_tokens() - 1);
            }
        }
    }
    if batch.n_tokens() == 0 {
        return;
    }
    if let Err(e) = ctx.decode(batch) {
        // A failed decode leaves the sequences in an unknown state: fail their requests and
        // forget what they held.
        for slot in slots.iter_mut() {
            if let Some(a) = slot.active.take() {
                let _ = a.tx.send(Event::Error(EngineError::Decode(e.to_string())));
            }
            let _ = ctx.kv_cache_seq_rm(slot.seq, None, None);
            slot.cache.clear();
        }
        return;
    }
    for slot in slots.iter_mut() {
        let Some(a) = slot.active.as_mut() else { continue };
        let Some(idx) = a.logits_at else { continue };
        let tok = sample(model, a, ctx, idx);
        if let Some(reason) = on_token(model, a, tok, slot.cache.len() as u32, n_ctx) {
            finish(slot, reason);
        }
    }
}

/// Handles a sampled token; returns why the generation ends, if it does.
fn on_token(model: &LlamaModel, a: &mut Active, tok: LlamaToken, used: u32, n_ctx: u32) -> Option<FinishReason> {
    let now = Instant::now();
    if a.first_token.is_none() {
        a.first_token = Some(now);
        a.perf.prefill_ms = now.duration_since(a.started).as_secs_f64() * 1e3;
    }
    let vocab = model.vocab();
    if vocab.is_eog(tok) && !a.ignore_eos {
        return Some(FinishReason::Stop);
    }
    a.generated += 1;
    a.utf8.extend_from_slice(&vocab.token_to_piece(tok, false, None));
    let text = take_utf8(&mut a.utf8);
    if !text.is_empty() {
        match a.matcher.push(&text) {
            StopOutcome::Continue(t) => send_text(a, t, tok),
            StopOutcome::Stopped(t) => {
                send_text(a, t, tok);
                return Some(FinishReason::Stop);
            }
        }
    }
    if a.max_tokens.is_some_and(|m| a.generated >= m) || used + 1 >= n_ctx {
        return Some(FinishReason::Length);
    }
    a.pending = Some(tok);
    None
}

fn send_text(a: &Active, text: String, tok: LlamaToken) {
    if !text.is_empty() {
        let _ = a.tx.send(Event::Token { text, id: tok.0 });
    }
}

/// Ends the slot's request: flushes held text, sends `Done` with the perf record.
fn finish(slot: &mut Slot, reason: FinishReason) {
    let Some(mut a) = slot.active.take() else { return };
    let now = Instant::now();
    if reason == FinishReason::Cancelled {
        tracing::debug!(seq = slot.seq, generated = a.generated, "request cancelled: client went away");
    }
    if reason != FinishReason::Cancelled {
        let mut rest = take_utf8(&mut a.utf8);
        rest.push_str(&a.matcher.flush());
        if !rest.is_empty() {
            let _ = a.tx.send(Event::Token { text: rest, id: -1 });
        }
    }
    let mut perf = a.perf;
    match a.first_token {
        Some(t) => perf.generate_ms = now.duration_since(t).as_secs_f64() * 1e3,
        None => perf.prefill_ms = now.duration_since(a.started).as_secs_f64() * 1e3,
    }
    perf.generated_tokens = a.generated;
    let _ = a.tx.send(Event::Done { reason, perf });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_is_joined() {
        let mut buf = "é".as_bytes()[..1].to_vec();
        assert_eq!(take_utf8(&mut buf), "");
        buf.extend_from_slice(&"é".as_bytes()[1..]);
        buf.extend_from_slice(b"x");
        assert_eq!(take_utf8(&mut buf), "éx");
        assert!(buf.is_empty());
    }

    #[test]
    fn invalid_bytes_are_not_held_forever() {
        let mut buf = vec![0xff, b'a'];
        assert_eq!(take_utf8(&mut buf), "\u{fffd}a");
    }
}
