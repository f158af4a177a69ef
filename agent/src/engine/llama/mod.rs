//! CPU engine: llama.cpp through `llama-cpp-2`.
//!
//! Each loaded model owns one OS thread that owns the `LlamaContext` ([`worker`]); embeddings use
//! short-lived contexts of their own on the same weights ([`embed`]); a request's wanted output
//! format becomes a grammar here ([`grammar`]), not in the caller.
//!
//! ```text
//!  submit() ──Cmd──► worker thread ──► slots[0..parallel] ──► one llama_decode per step
//!                                        │  cache: tokens whose KV the sequence holds
//!                                        └─ a new prompt keeps the longest common prefix
//! ```
//!
//! Prefix reuse: a slot remembers the tokens its sequence holds. A new request goes to the free
//! slot sharing the longest prefix with its prompt; only the tail after that prefix is evaluated.
//! Cancellation: a request whose event receiver was dropped is finished at the next step, so its
//! slot is free within one token.

mod backend;
mod embed;
mod grammar;
mod worker;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc as std_mpsc,
    },
    time::Instant,
};

use llama_cpp_2::model::{LlamaModel, params::LlamaModelParams};
use tokio::sync::mpsc;

use self::{
    backend::{backend, tokenize},
    worker::{Job, worker},
};
use super::{Embeddings, Engine, EngineError, Event, GenRequest, Instance, LoadSpec, ModelFacts};

/// The llama.cpp engine; stateless, instances carry the state.
#[derive(Debug, Default)]
pub struct LlamaEngine;

impl Engine for LlamaEngine {
    fn name(&self) -> &'static str {
        "llama.cpp"
    }

    fn load(&self, spec: &LoadSpec) -> Result<Arc<dyn Instance>, EngineError> {
        let backend = backend()?;
        let load_err = |reason: String| EngineError::Load { path: spec.path.display().to_string(), reason };
        let model = LlamaModel::load_from_file(backend, &spec.path, &LlamaModelParams::default())
            .map_err(|e| load_err(e.to_string()))?;
        let model = Arc::new(model);
        let (cmd_tx, cmd_rx) = std_mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<ModelFacts, EngineError>>();
        let worker_model = Arc::clone(&model);
        let worker_spec = spec.clone();
        let busy = Arc::new(AtomicUsize::new(0));
        let worker_busy = Arc::clone(&busy);
        let name = spec.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        std::thread::Builder::new()
            .name(format!("llama:{}", name.chars().take(10).collect::<String>()))
            .spawn(move || worker(backend, &worker_model, &worker_spec, &cmd_rx, &ready_tx, &worker_busy))
            .map_err(|e| load_err(format!("cannot start engine thread: {e}")))?;
        let facts = ready_rx.recv().map_err(|_| load_err("engine thread exited during load".into()))??;
        Ok(Arc::new(LlamaInstance { model, tx: cmd_tx, facts, threads: spec.threads, cpus: spec.cpus.clone(), busy }))
    }
}

struct LlamaInstance {
    model: Arc<LlamaModel>,
    tx: std_mpsc::Sender<Job>,
    facts: ModelFacts,
    /// Threads and CPUs for embedding contexts (the generation thread's settings).
    threads: u32,
    cpus: Vec<usize>,
    /// Slots with a request, as the worker thread last counted them.
    busy: Arc<AtomicUsize>,
}

impl Instance for LlamaInstance {
    fn submit(&self, req: GenRequest) -> Result<mpsc::UnboundedReceiver<Event>, EngineError> {
        let grammar = req.format.as_ref().map(grammar::for_format).transpose()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let job = Job { req, grammar, tokens: None, tx, submitted: Instant::now() };
        if let Err(std_mpsc::SendError(job)) = self.tx.send(job) {
            let _ = job.tx.send(Event::Error(EngineError::Stopped));
        }
        Ok(rx)
    }

    fn count_tokens(&self, text: &str) -> Option<usize> {
        Some(tokenize(&self.model, text).len())
    }

    fn facts(&self) -> &ModelFacts {
        &self.facts
    }

    fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    fn embed(&self, inputs: Vec<String>) -> tokio::sync::oneshot::Receiver<Result<Embeddings, EngineError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (model, threads, cpus, context) =
            (Arc::clone(&self.model), self.threads, self.cpus.clone(), self.facts.n_ctx);
        let spawned = std::thread::Builder::new().name("llama-embed".into()).spawn(move || {
            if !cpus.is_empty() {
                let _ = board::pin_current_thread(&cpus);
            }
            let _ = tx.send(embed::embed(&model, &inputs, threads, context));
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start an embedding thread");
        }
        rx
    }
}
