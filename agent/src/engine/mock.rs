//! A test double for the engine boundary: answers with a scripted text, token by token, with an
//! optional delay per token, and counts what it was asked. It lets the HTTP layer, the serve
//! layer and the scheduler be tested in-process in milliseconds; everything that needs a real
//! model (templates, sampling, speed) is tested against llama.cpp and rkllm-sim instead.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;

use super::{Engine, EngineError, Event, FinishReason, GenRequest, Instance, LoadSpec, ModelFacts, Perf};

/// What a mock instance answers.
pub type Script = Arc<dyn Fn(&GenRequest) -> Vec<String> + Send + Sync>;

/// Shared counters a test reads.
#[derive(Debug, Default)]
pub struct Counters {
    pub loads: AtomicUsize,
    pub submitted: AtomicUsize,
    /// Requests whose client went away before the answer ended.
    pub cancelled: AtomicUsize,
    /// Requests running right now.
    pub running: AtomicUsize,
    pub loaded_paths: Mutex<Vec<PathBuf>>,
}

/// The engine; clone it to keep a handle on its counters.
#[derive(Clone)]
pub struct MockEngine {
    pub script: Script,
    pub per_token: Duration,
    /// Bytes each instance reports as its size (memory accounting).
    pub size_bytes: u64,
    pub n_ctx: u32,
    /// Whether the engine claims to enforce output formats (false exercises the JSON check).
    pub constrains: bool,
    pub counters: Arc<Counters>,
    /// Makes loads fail with this error, once per entry.
    pub fail_loads: Arc<Mutex<Vec<EngineError>>>,
}

impl Default for MockEngine {
    fn default() -> Self {
        Self::replying(&["Hello", " from", " the", " mock"])
    }
}

impl MockEngine {
    /// Always answers these pieces.
    pub fn replying(pieces: &[&str]) -> Self {
        let pieces: Vec<String> = pieces.iter().map(|s| (*s).to_owned()).collect();
        Self::scripted(move |_| pieces.clone())
    }

    pub fn scripted(f: impl Fn(&GenRequest) -> Vec<String> + Send + Sync + 'static) -> Self {
        Self {
            script: Arc::new(f),
            per_token: Duration::ZERO,
            size_bytes: 1 << 20,
            n_ctx: 2048,
            constrains: true,
            counters: Arc::default(),
            fail_loads: Arc::default(),
        }
    }
}

impl Engine for MockEngine {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn load(&self, spec: &LoadSpec) -> Result<Arc<dyn Instance>, EngineError> {
        if let Some(e) = self.fail_loads.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop() {
            return Err(e);
        }
        self.counters.loads.fetch_add(1, Ordering::SeqCst);
        self.counters.loaded_paths.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(spec.path.clone());
        let facts = ModelFacts {
            n_ctx: self.n_ctx,
            n_ctx_train: self.n_ctx,
            n_params: 0,
            size_bytes: self.size_bytes,
            bos: String::new(),
            eos: String::new(),
            thinking: false,
        };
        Ok(Arc::new(MockInstance { engine: self.clone(), facts }))
    }
}

struct MockInstance {
    engine: MockEngine,
    facts: ModelFacts,
}

impl Instance for MockInstance {
    fn submit(&self, req: GenRequest) -> Result<mpsc::UnboundedReceiver<Event>, EngineError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let e = self.engine.clone();
        e.counters.submitted.fetch_add(1, Ordering::SeqCst);
        let pieces = (e.script)(&req);
        let prompt_tokens = self.count_tokens(&req.prompt).unwrap_or(0) as u32;
        tokio::spawn(async move {
            e.counters.running.fetch_add(1, Ordering::SeqCst);
            let mut sent = 0u32;
            let mut reason = FinishReason::Stop;
            for p in pieces {
                if req.max_tokens.is_some_and(|m| sent >= m) {
                    reason = FinishReason::Length;
                    break;
                }
                if !e.per_token.is_zero() {
                    tokio::time::sleep(e.per_token).await;
                }
                if tx.send(Event::Token { text: p, id: sent as i32 }).is_err() || tx.is_closed() {
                    reason = FinishReason::Cancelled;
                    break;
                }
                sent += 1;
            }
            if reason == FinishReason::Cancelled {
                e.counters.cancelled.fetch_add(1, Ordering::SeqCst);
            }
            let perf = Perf {
                prompt_tokens,
                prompt_eval_tokens: prompt_tokens,
                generated_tokens: sent,
                prefill_ms: 1.0,
                generate_ms: f64::from(sent),
                ..Perf::default()
            };
            let _ = tx.send(Event::Done { reason, perf });
            e.counters.running.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(rx)
    }

    fn count_tokens(&self, text: &str) -> Option<usize> {
        Some(text.split_whitespace().count())
    }

    fn constrains_output(&self) -> bool {
        self.engine.constrains
    }

    fn facts(&self) -> &ModelFacts {
        &self.facts
    }

    fn busy(&self) -> usize {
        self.engine.counters.running.load(Ordering::SeqCst)
    }
}
