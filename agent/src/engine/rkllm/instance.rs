//! One loaded RKLLM model: a dedicated OS thread owns the handle and runs the blocking
//! `rkllm_run` for one request (or one batch) at a time; a watcher thread calls `rkllm_abort`
//! when every client of the running request has gone, which also covers prefill, where the
//! runtime makes no callbacks. The handle is destroyed by the worker after its queue closes, so
//! it is never destroyed while a run is in flight.

use std::{
    ffi::CString,
    path::PathBuf,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc as std_mpsc,
    },
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::{
    conv::{self, Held, Setup, Start},
    domains::Booking,
    family::Family,
    pcache::PromptCacheDir,
    rt::{Handle, InferSpec, InputSpec, Keepalive, Mode, Runtime, Sampling},
    sink::{RunSink, Slot},
};
use crate::engine::{
    Embeddings, EngineError, Event, FinishReason, GenRequest, Instance, ModelFacts, Perf, PromptCacheUse,
    SamplingParams,
};

/// Everything a worker needs besides the handle.
pub struct Config {
    pub rt: Arc<Runtime>,
    pub name: String,
    pub path: PathBuf,
    pub n_ctx: u32,
    pub n_batch: usize,
    pub family: Option<Family>,
    pub prompt_cache: Option<PromptCacheDir>,
    /// How long a batch waits for more requests once the first arrived (`n_batch > 1`).
    pub batch_wait: Duration,
    /// Continue conversations held in the KV cache (`--prefix-cache`); off = every request
    /// starts from an empty cache (the runtime's own in-memory prefix reuse still applies).
    pub reuse: bool,
    /// Template parts from the model's settings, replacing the family's (and the file's).
    pub template: Option<crate::engine::TemplateParts>,
    pub facts: ModelFacts,
}

pub fn to_sampling(s: &SamplingParams) -> Sampling {
    Sampling {
        top_k: s.top_k,
        top_p: s.top_p,
        temperature: s.temperature,
        repeat_penalty: s.repeat_penalty,
        frequency_penalty: s.frequency_penalty,
        presence_penalty: s.presence_penalty,
    }
}

enum Job {
    Gen { req: Box<GenRequest>, tx: mpsc::UnboundedSender<Event>, queued: Instant },
    Embed { inputs: Vec<String>, tx: oneshot::Sender<Result<Embeddings, EngineError>> },
}

/// What the watcher sees of the running request.
#[derive(Default)]
struct Watch {
    clients: Vec<mpsc::UnboundedSender<Event>>,
    running: bool,
    aborted: bool,
    stop: bool,
}

struct Shared {
    watch: Mutex<Watch>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct RkllmInstance {
    tx: Mutex<Option<std_mpsc::Sender<Job>>>,
    facts: ModelFacts,
    busy: Arc<AtomicUsize>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The NPU memory this instance holds; released after `Drop` has joined the worker, that is
    /// after `rkllm_destroy`.
    booking: Booking,
}

impl RkllmInstance {
    fn send(&self, job: Job) -> Result<(), Job> {
        match self.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

/// Unloading waits for `rkllm_destroy`: the NPU memory must be free before the scheduler loads
/// the next model into the same domain. Only idle instances are dropped, so this is short.
impl Drop for RkllmInstance {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(w) = self.worker.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = w.join();
        }
    }
}

impl Instance for RkllmInstance {
    fn submit(&self, req: GenRequest) -> Result<mpsc::UnboundedReceiver<Event>, EngineError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let job = Job::Gen { req: Box::new(req), tx: tx.clone(), queued: Instant::now() };
        if self.send(job).is_err() {
            let _ = tx.send(Event::Error(EngineError::Stopped));
        }
        Ok(rx)
    }

    fn npu_domain(&self) -> Option<i32> {
        Some(self.booking.domain)
    }

    fn count_tokens(&self, _text: &str) -> Option<usize> {
        None
    }

    fn facts(&self) -> &ModelFacts {
        &self.facts
    }

    fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    fn renders_chat(&self) -> bool {
        true
    }

    fn constrains_output(&self) -> bool {
        false
    }

    fn embed(&self, inputs: Vec<String>) -> oneshot::Receiver<Result<Embeddings, EngineError>> {
        let (tx, rx) = oneshot::channel();
        if let Err(Job::Embed { tx, .. }) = self.send(Job::Embed { inputs, tx }) {
            let _ = tx.send(Err(EngineError::Stopped));
        }
        rx
    }
}

/// Starts the worker and watcher threads for an initialised handle.
pub fn spawn(cfg: Config, h: Handle, keep: Keepalive, booking: Booking) -> Arc<RkllmInstance> {
    let (tx, rx) = std_mpsc::channel();
    let busy = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(Shared { watch: Mutex::new(Watch::default()), cv: Condvar::new() });
    let facts = cfg.facts.clone();
    {
        let (rt, shared) = (Arc::clone(&cfg.rt), Arc::clone(&shared));
        std::thread::Builder::new()
            .name("rkllm-watch".into())
            .spawn(move || watch(&rt, h, &shared))
            .expect("spawning a thread");
    }
    let w = Worker {
        cfg,
        h,
        _keep: keep,
        held: None,
        kv_setup: None,
        applied: Applied::default(),
        shared,
        busy: Arc::clone(&busy),
    };
    let worker =
        std::thread::Builder::new().name("rkllm-worker".into()).spawn(move || w.serve(rx)).expect("spawning a thread");
    Arc::new(RkllmInstance { tx: Mutex::new(Some(tx)), facts, busy, worker: Mutex::new(Some(worker)), booking })
}

/// Aborts the running request once all its clients are gone.
fn watch(rt: &Runtime, h: Handle, shared: &Shared) {
    let mut g = shared.lock();
    loop {
        if g.stop {
            return;
        }
        if !g.running {
            g = shared.cv.wait(g).unwrap_or_else(std::sync::PoisonError::into_inner);
            continue;
        }
        if !g.aborted && !g.clients.is_empty() && g.clients.iter().all(mpsc::UnboundedSender::is_closed) {
            g.aborted = true;
            let rc = rt.abort(h);
            tracing::info!(rc, "client gone: rkllm_abort");
        }
        g = shared.cv.wait_timeout(g, Duration::from_millis(10)).unwrap_or_else(std::sync::PoisonError::into_inner).0;
    }
}

/// What the handle has been configured with.
#[derive(Default)]
struct Applied {
    /// The template override, once one was set (the built-in one cannot be restored).
    template: Option<(String, String, String)>,
    /// `(system, tools)` given to `rkllm_set_function_tools`.
    tools: Option<(String, String)>,
    cache_loaded: Option<PathBuf>,
}

struct Worker {
    cfg: Config,
    h: Handle,
    _keep: Keepalive,
    /// The conversation the KV cache holds, when a request may continue it.
    held: Option<Held>,
    /// The setup whose system part starts the KV cache (also after a turn that is not kept), so
    /// its length can be measured before the cache is cleared completely.
    kv_setup: Option<Setup>,
    applied: Applied,
    shared: Arc<Shared>,
    busy: Arc<AtomicUsize>,
}

/// A finished slot turned into its last event.
struct Outcome {
    reason: FinishReason,
    perf: Perf,
}

impl Worker {
    fn serve(mut self, rx: std_mpsc::Receiver<Job>) {
        let mut deferred = None;
        loop {
            let job = match deferred.take() {
                Some(j) => j,
                None => match rx.recv() {
                    Ok(j) => j,
                    Err(_) => break,
                },
            };
            match job {
                Job::Embed { inputs, tx } => {
                    let _ = tx.send(self.embed(&inputs));
                }
                Job::Gen { req, tx, queued } => {
                    let mut jobs = vec![(*req, tx, queued)];
                    if self.cfg.n_batch > 1 && !has_tools(&jobs[0].0) {
                        let deadline = Instant::now() + self.cfg.batch_wait;
                        while jobs.len() < self.cfg.n_batch {
                            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                                Ok(Job::Gen { req, tx, queued }) if !has_tools(&req) => jobs.push((*req, tx, queued)),
                                Ok(other) => {
                                    deferred = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    self.busy.fetch_add(jobs.len(), Ordering::SeqCst);
                    let n = jobs.len();
                    if self.cfg.n_batch > 1 {
                        self.run_batch(jobs);
                    } else if let Some((req, tx, queued)) = jobs.pop() {
                        self.run_single(req, tx, queued);
                    }
                    self.busy.fetch_sub(n, Ordering::SeqCst);
                }
            }
        }
        // The queue is closed and no run is in flight: safe to destroy.
        {
            let mut g = self.shared.lock();
            g.stop = true;
            self.shared.cv.notify_all();
        }
        // This thread made every run and none is in flight; the runtime's own view is checked
        // anyway, because destroying a running handle is undefined (docs/rkllm-abi.md §5).
        if self.cfg.rt.is_running(self.h) {
            tracing::warn!(model = %self.cfg.name, "runtime reports a run in flight at unload; aborting it first");
            self.cfg.rt.abort(self.h);
            let t0 = Instant::now();
            while self.cfg.rt.is_running(self.h) && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let rc = self.cfg.rt.destroy(self.h);
        tracing::info!(model = %self.cfg.name, rc, "rkllm_destroy");
    }

    fn kv_size(&self) -> u32 {
        self.cfg.rt.kv_cache_sizes(self.h, self.cfg.n_batch).ok().and_then(|v| v.first().copied()).unwrap_or(0).max(0)
            as u32
    }

    /// The prompt-cache file of `setup`, when files are on and `setup` has a system part.
    fn cache_file(&self, setup: &Setup) -> Option<(&PromptCacheDir, PathBuf)> {
        let pc = self.cfg.prompt_cache.as_ref()?;
        (!setup.system.is_empty() || setup.tools.is_some())
            .then(|| (pc, pc.path_for(&self.cfg.path, &setup.system, setup.tools.as_deref())))
    }

    /// Records `n` tokens as the system part of `setup`'s prompt-cache file, if it has one.
    fn note_system_tokens(&self, setup: &Setup, n: u32) {
        if let Some((pc, file)) = self.cache_file(setup)
            && n > 0
            && file.exists()
            && pc.system_tokens(&file) != Some(n)
        {
            pc.set_system_tokens(&file, n);
        }
    }

    /// Called before the KV cache is cleared completely: when the system part in it belongs to a
    /// prompt-cache file of unknown length, measures it the one way the runtime tells —
    /// `rkllm_clear_kv_cache(keep_system_prompt=1)`, then the cache's size — so a later load of the
    /// file can report the tokens it supplies as cached. Once per file; the cache is being cleared
    /// anyway, so nothing is lost.
    fn learn_system_tokens(&mut self) {
        self.held = None;
        let Some(setup) = self.kv_setup.take() else { return };
        let Some((pc, file)) = self.cache_file(&setup) else { return };
        if !file.exists() || pc.system_tokens(&file).is_some() {
            return;
        }
        self.cfg.rt.clear_kv_cache(self.h, true);
        let n = self.kv_size();
        self.note_system_tokens(&setup, n);
        tracing::debug!(model = %self.cfg.name, file = %file.display(), tokens = n, "prompt-cache length measured");
    }

    /// Sets the system prompt, tools and thinking marker the request needs.
    fn configure(&mut self, setup: &Setup, think: bool, batch: bool) -> Result<(), EngineError> {
        let rt = &self.cfg.rt;
        let cs = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
        let want_tools = setup.tools.as_ref().map(|t| (setup.system.clone(), t.clone()));
        if want_tools != self.applied.tools {
            let (sys, tools) = want_tools.clone().unwrap_or_else(|| (String::new(), "[]".into()));
            let rc = rt.set_function_tools(self.h, &cs(&sys), &cs(&tools), c"tool_response");
            if rc != 0 {
                return Err(EngineError::Decode(format!("rkllm_set_function_tools returned {rc}")));
            }
            self.applied.tools = want_tools;
        }
        // With tools the runtime writes the system block from set_function_tools' prompt.
        let system = if setup.tools.is_some() || batch { "" } else { setup.system.as_str() };
        let want = match (&self.cfg.template, self.cfg.family) {
            (Some(p), _) => Some((p.system.clone(), p.prefix.clone(), p.postfix.clone())),
            (None, Some(f)) if !system.is_empty() || self.applied.template.is_some() => Some(f.template(system, think)),
            _ => None,
        };
        if want.is_some() && want != self.applied.template {
            let (s, p, q) = want.clone().unwrap_or_default();
            let rc = rt.set_chat_template(self.h, &cs(&s), &cs(&p), &cs(&q));
            if rc != 0 {
                return Err(EngineError::Decode(format!("rkllm_set_chat_template returned {rc}")));
            }
            self.applied.template = want;
        }
        Ok(())
    }

    /// Messages and setup of a request; a system prompt the template cannot carry is folded
    /// into the first user message.
    fn request_view(&self, req: &GenRequest) -> (Setup, Vec<serde_json::Value>) {
        let Some(chat) = &req.chat else {
            return (Setup::default(), vec![json!({"role": "user", "content": req.prompt})]);
        };
        let mut setup = Setup { system: chat.system.clone(), tools: chat.tools.as_ref().map(|t| t.to_string()) };
        let mut messages = chat.messages.clone();
        // A fixed template (none for the family, or the settings' own) cannot carry a request's
        // system prompt: it joins the first user message.
        let fixed = self.cfg.family.is_none() || self.cfg.template.is_some();
        if fixed && setup.tools.is_none() && !setup.system.is_empty() {
            if let Some(m) = messages.iter_mut().find(|m| m["role"] == "user") {
                let c = m["content"].as_str().unwrap_or_default();
                m["content"] = json!(format!("{}\n\n{c}", setup.system));
            }
            setup.system.clear();
        }
        (setup, messages)
    }

    fn begin_watch(&self, clients: Vec<mpsc::UnboundedSender<Event>>) {
        let mut g = self.shared.lock();
        *g = Watch { clients, running: true, aborted: false, stop: false };
        self.shared.cv.notify_all();
    }

    fn end_watch(&self) -> bool {
        let mut g = self.shared.lock();
        g.running = false;
        g.clients.clear();
        g.aborted
    }

    fn run_single(&mut self, req: GenRequest, tx: mpsc::UnboundedSender<Event>, queued: Instant) {
        let queue_ms = queued.elapsed().as_secs_f64() * 1e3;
        if tx.is_closed() {
            return;
        }
        let (setup, messages) = self.request_view(&req);
        let mut plan = conv::plan(if self.cfg.reuse { self.held.as_ref() } else { None }, setup, &messages);
        if !self.cfg.reuse {
            plan.start = Start::Fresh { keep_system: false };
        }
        if plan.start == (Start::Fresh { keep_system: false }) {
            self.learn_system_tokens();
        }
        if let Err(e) = self.configure(&plan.setup, req.think, false) {
            self.held = None;
            let _ = tx.send(Event::Error(e));
            return;
        }
        let mut cache_use = None;
        let mut save = None;
        // Prompt tokens a loaded prompt-cache file supplies (its system part).
        let mut from_file = 0;
        let kv_before = match plan.start {
            Start::Continue => self.kv_size(),
            Start::Fresh { keep_system: true } => {
                self.cfg.rt.clear_kv_cache(self.h, true);
                self.held = None;
                let n = self.kv_size();
                self.note_system_tokens(&plan.setup, n);
                n
            }
            Start::Fresh { keep_system: false } => {
                self.cfg.rt.clear_kv_cache(self.h, false);
                self.held = None;
                self.kv_setup = None;
                (cache_use, save) = self.prompt_cache_for(&plan.setup);
                if cache_use == Some(PromptCacheUse::Loaded) {
                    from_file = self.cache_file(&plan.setup).and_then(|(pc, f)| pc.system_tokens(&f)).unwrap_or(0);
                }
                0
            }
        };
        let role = CString::new(plan.role).unwrap_or_default();
        let text = CString::new(plan.text.replace('\0', "")).unwrap_or_default();
        let lora = req.adapter.as_deref().and_then(|a| CString::new(a).ok());
        let save_c = save.as_ref().and_then(|p: &PathBuf| CString::new(p.to_string_lossy().as_bytes()).ok());
        let infer = InferSpec {
            mode: Mode::Generate,
            lora: lora.as_deref(),
            save_cache: save_c.as_deref(),
            keep_history: true,
            sampling: Some(to_sampling(&req.sampling)),
            max_new_tokens: req.max_tokens.map_or(0, |m| i32::try_from(m).unwrap_or(i32::MAX)),
        };
        let sink = RunSink::new(vec![Slot::new(tx.clone(), &req.stop, req.max_tokens)]);
        self.begin_watch(vec![tx.clone()]);
        let t0 = Instant::now();
        let rc = self.cfg.rt.run(
            self.h,
            &[InputSpec { role: &role, thinking: req.think, prompt: Some(&text) }],
            &infer,
            &sink,
        );
        let wall = t0.elapsed();
        let aborted = self.end_watch();
        let (mut slots, err) = sink.into_slots();
        let mut slot = slots.remove(0);
        if let Some(p) = &save
            && p.exists()
        {
            cache_use = Some(PromptCacheUse::Created);
            if let Some(pc) = &self.cfg.prompt_cache {
                pc.prune();
            }
        }
        if rc != 0 || err.is_some() {
            self.held = None;
            self.kv_setup = None;
            let msg = err.unwrap_or_else(|| format!("rkllm_run returned {rc}"));
            let _ = tx.send(Event::Error(EngineError::Input(format!(
                "{msg} (context window {} tokens, {kv_before} already in the conversation cache)",
                self.cfg.n_ctx
            ))));
            return;
        }
        slot.flush();
        let out = outcome(&slot, req.max_tokens, aborted, (kv_before, from_file), queue_ms, cache_use, wall);
        // Keep the conversation when the turn ended as the client saw it: by the runtime, or
        // paused at `max_tokens` (the runtime keeps a paused run's KV cache — docs/rkllm-abi.md
        // §8 — and the client gets every token, so its next turn sends back what the cache
        // holds). A stop string leaves text in the cache the client never got; a client that
        // left sends nothing back.
        let kept = !aborted && matches!(slot.ended, None | Some(FinishReason::Length));
        self.held = kept.then(|| conv::after(&plan, &slot.raw));
        self.kv_setup = (!aborted).then(|| plan.setup.clone());
        let _ = tx.send(Event::Done { reason: out.reason, perf: out.perf });
    }

    /// The prompt-cache file to load or create for a new conversation with this setup.
    fn prompt_cache_for(&mut self, setup: &Setup) -> (Option<PromptCacheUse>, Option<PathBuf>) {
        let Some(pc) = &self.cfg.prompt_cache else { return (None, None) };
        if setup.system.is_empty() && setup.tools.is_none() {
            return (None, None);
        }
        let path = pc.path_for(&self.cfg.path, &setup.system, setup.tools.as_deref());
        if self.applied.cache_loaded.as_ref() == Some(&path) {
            pc.touch(&path);
            return (Some(PromptCacheUse::Loaded), None);
        }
        if self.applied.cache_loaded.take().is_some() {
            self.cfg.rt.release_prompt_cache(self.h);
        }
        if path.exists() {
            let c = CString::new(path.to_string_lossy().as_bytes()).unwrap_or_default();
            let rc = self.cfg.rt.load_prompt_cache(self.h, &c);
            if rc == 0 {
                pc.touch(&path);
                self.applied.cache_loaded = Some(path);
                return (Some(PromptCacheUse::Loaded), None);
            }
            tracing::warn!(file = %path.display(), rc, "rkllm_load_prompt_cache failed; recreating the file");
            let _ = std::fs::remove_file(&path);
        }
        if let Err(e) = std::fs::create_dir_all(&pc.dir) {
            tracing::warn!(dir = %pc.dir.display(), error = %e, "prompt-cache directory unavailable");
            return (None, None);
        }
        (None, Some(path))
    }

    fn run_batch(&mut self, jobs: Vec<(GenRequest, mpsc::UnboundedSender<Event>, Instant)>) {
        let n = self.cfg.n_batch;
        let first = &jobs[0].0;
        let tools = first.chat.as_ref().and_then(|c| c.tools.as_ref()).map(|t| t.to_string());
        let setup = Setup { system: first.chat.as_ref().map(|c| c.system.clone()).unwrap_or_default(), tools };
        if let Err(e) = self.configure(&setup, first.think, true) {
            for (_, tx, _) in &jobs {
                let _ = tx.send(Event::Error(e.clone()));
            }
            return;
        }
        // Batched runs are single-turn: each slot carries its whole conversation.
        self.learn_system_tokens();
        self.cfg.rt.clear_kv_cache(self.h, false);
        let texts: Vec<(CString, bool)> = jobs
            .iter()
            .map(|(req, _, _)| {
                let (setup, messages) = self.request_view(req);
                let p = conv::plan(None, setup.clone(), &messages);
                let text = if setup.system.is_empty() || setup.tools.is_some() {
                    p.text
                } else {
                    format!("{}\n\n{}", setup.system, p.text)
                };
                (CString::new(text.replace('\0', "")).unwrap_or_default(), req.think)
            })
            .collect();
        let mut slots: Vec<Slot> = jobs.iter().map(|(r, tx, _)| Slot::new(tx.clone(), &r.stop, r.max_tokens)).collect();
        slots.resize_with(n, Slot::padding);
        let mut inputs: Vec<InputSpec<'_>> =
            texts.iter().map(|(t, think)| InputSpec { role: c"user", thinking: *think, prompt: Some(t) }).collect();
        while inputs.len() < n {
            inputs.push(InputSpec { role: c"user", thinking: false, prompt: None });
        }
        let max_new =
            jobs.iter().map(|(r, _, _)| r.max_tokens).collect::<Option<Vec<u32>>>().and_then(|v| v.into_iter().max());
        let infer = InferSpec {
            mode: Mode::Generate,
            lora: None,
            save_cache: None,
            keep_history: false,
            sampling: Some(to_sampling(&first.sampling)),
            max_new_tokens: max_new.map_or(0, |m| i32::try_from(m).unwrap_or(i32::MAX)),
        };
        let sink = RunSink::new(slots);
        self.begin_watch(jobs.iter().map(|(_, tx, _)| tx.clone()).collect());
        let t0 = Instant::now();
        let rc = self.cfg.rt.run(self.h, &inputs, &infer, &sink);
        let wall = t0.elapsed();
        let aborted = self.end_watch();
        let (slots, err) = sink.into_slots();
        for ((req, tx, queued), mut slot) in jobs.into_iter().zip(slots) {
            if rc != 0 || err.is_some() {
                let msg = err.clone().unwrap_or_else(|| format!("rkllm_run returned {rc}"));
                let _ = tx.send(Event::Error(EngineError::Input(msg)));
                continue;
            }
            slot.flush();
            let queue_ms = (t0 - queued).as_secs_f64() * 1e3;
            let out = outcome(&slot, req.max_tokens, aborted, (0, 0), queue_ms, None, wall);
            let _ = tx.send(Event::Done { reason: out.reason, perf: out.perf });
        }
    }

    fn embed(&mut self, inputs: &[String]) -> Result<Embeddings, EngineError> {
        self.learn_system_tokens();
        let mut vectors = Vec::with_capacity(inputs.len());
        let mut tokens = 0u32;
        for text in inputs {
            self.cfg.rt.clear_kv_cache(self.h, false);
            let c = CString::new(text.replace('\0', "")).unwrap_or_default();
            let mut ins = vec![InputSpec { role: c"user", thinking: false, prompt: Some(&c) }];
            while ins.len() < self.cfg.n_batch {
                ins.push(InputSpec { role: c"user", thinking: false, prompt: None });
            }
            let infer = InferSpec {
                mode: Mode::LastHiddenLayer,
                lora: None,
                save_cache: None,
                keep_history: false,
                sampling: None,
                max_new_tokens: 0,
            };
            let mut slots = vec![Slot::padding()];
            slots.resize_with(self.cfg.n_batch, Slot::padding);
            let sink = RunSink::new(slots);
            let rc = self.cfg.rt.run(self.h, &ins, &infer, &sink);
            let (slots, err) = sink.into_slots();
            if rc != 0 || err.is_some() {
                return Err(EngineError::Input(err.unwrap_or_else(|| format!("rkllm_run returned {rc}"))));
            }
            let slot = &slots[0];
            let (hidden, embd) = slot
                .hidden
                .clone()
                .ok_or_else(|| EngineError::Decode("the runtime returned no hidden states".into()))?;
            tokens += slot.perf.map_or((hidden.len() / embd.max(1)) as u32, |p| p.prefill_tokens.max(0) as u32);
            vectors.push(pool(&hidden, embd));
        }
        Ok(Embeddings { vectors, prompt_tokens: tokens })
    }
}

fn has_tools(req: &GenRequest) -> bool {
    req.chat.as_ref().is_some_and(|c| c.tools.is_some())
}

/// Mean over tokens, then L2-normalised.
pub fn pool(hidden: &[f32], embd: usize) -> Vec<f32> {
    let embd = embd.max(1);
    let rows = hidden.len() / embd;
    let mut v = vec![0f32; embd];
    for row in hidden.chunks_exact(embd) {
        for (a, b) in v.iter_mut().zip(row) {
            *a += b;
        }
    }
    let n = rows.max(1) as f32;
    v.iter_mut().for_each(|x| *x /= n);
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// `(kv_before, from_file)`: prompt tokens already in the KV cache before the run (a continued
/// conversation, a kept system part), and those of this run's input a loaded prompt-cache file
/// supplied. The runtime's `prefill_tokens` counts the run's whole input, so the file's part is
/// in it and is not recomputed.
fn outcome(
    slot: &Slot,
    max_tokens: Option<u32>,
    aborted: bool,
    (kv_before, from_file): (u32, u32),
    queue_ms: f64,
    prompt_cache: Option<PromptCacheUse>,
    wall: Duration,
) -> Outcome {
    let perf = match slot.perf {
        Some(p) => {
            let prefill = p.prefill_tokens.max(0) as u32;
            let from_file = from_file.min(prefill);
            Perf {
                prompt_eval_tokens: prefill - from_file,
                prompt_tokens: kv_before + prefill,
                cached_tokens: kv_before + from_file,
                prefill_ms: f64::from(p.prefill_time_ms),
                generated_tokens: p.generate_tokens.max(0) as u32,
                generate_ms: f64::from(p.generate_time_ms),
                queue_ms,
                memory_mb: Some(p.memory_usage_mb),
                prompt_cache,
            }
        }
        // No FINISH record (a runtime that skips it after pause/abort): count what was seen.
        None => Perf {
            generated_tokens: slot.tokens,
            generate_ms: wall.as_secs_f64() * 1e3,
            cached_tokens: kv_before,
            prompt_tokens: kv_before,
            queue_ms,
            prompt_cache,
            ..Perf::default()
        },
    };
    let reason = match slot.ended {
        Some(r) => r,
        None if aborted => FinishReason::Cancelled,
        None if max_tokens.is_some_and(|m| perf.generated_tokens >= m) => FinishReason::Length,
        None => FinishReason::Stop,
    };
    Outcome { reason, perf }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_normalises() {
        let v = pool(&[1.0, 0.0, 3.0, 0.0], 2);
        assert!((v[0] - 1.0).abs() < 1e-6 && v[1] == 0.0);
        let v = pool(&[3.0, 4.0], 2);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
