//! Residency and queueing: which models are loaded, for how long, and who runs next.
//!
//! ```text
//!  acquire(entry) ──► resident? ──no──► plan::make_room (evict idle LRU) ──► Engine::load
//!                         │ yes              ▲  engine out of device memory:
//!                         ▼                  └─ evict its LRU idle model, retry (plan::lru_idle_of)
//!            bounded FIFO wait for one of the instance's slots ──► Ticket
//!  Ticket dropped ──► idle ──► expires after keep_alive ──► reaper unloads (plan::expired)
//! ```
//!
//! A resident model is never unloaded while a ticket on it exists (queued or running), so a
//! request that got a ticket cannot lose its model. Loads happen one at a time: two loads racing
//! for the same memory would both pass the budget check. What differs per engine (slots per
//! instance, device-memory packing) is asked of the engine; the decisions themselves are the
//! pure functions in [`plan`].

mod metrics;
pub mod plan;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub use self::metrics::SchedMetrics;
use self::plan::{Candidate, NoRoom};
use crate::{
    engine::{Engine, EngineError, Instance, LoadSpec},
    keepalive::{self, KeepAlive},
    metrics::model as labels,
    models::{Format, ModelEntry, Registry},
    settings::TemplateOverride,
    template::{self, ChatTemplate},
};

/// Scheduler settings from the command line.
#[derive(Debug, Clone)]
pub struct SchedOptions {
    /// Sequences decoded together per model.
    pub parallel: u32,
    /// Requests allowed to wait per model beyond those running.
    pub max_queue: usize,
    /// Bytes all resident models may use together.
    pub memory_budget: u64,
    pub threads: u32,
    pub prefix_cache: bool,
    pub default_keep_alive: KeepAlive,
    /// The board's big cores, for llama.cpp thread affinity (empty = not pinned).
    pub big_cores: Vec<usize>,
}

/// The engines this agent has. RKLLM is absent when its runtime did not load; the reason is
/// kept so a request for an `.rkllm` model can say why it cannot be served.
pub struct Engines {
    pub llama: Option<Arc<dyn Engine>>,
    pub rkllm: Result<Arc<dyn Engine>, String>,
}

impl Engines {
    /// The engine serving files of `format`, or why there is none.
    fn for_format(&self, format: Format) -> Result<Arc<dyn Engine>, SchedError> {
        match format {
            Format::Gguf => self.llama.clone().ok_or_else(|| SchedError::NoEngine {
                format: "gguf",
                why: "--engine rkllm serves only .rkllm files".into(),
            }),
            Format::Rkllm => {
                self.rkllm.clone().map_err(|why| SchedError::NoEngine { format: "rkllm", why: why.clone() })
            }
        }
    }
}

/// Why a request could not get a model.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("model '{model}' is busy: {waiting} requests already waiting")]
    QueueFull { model: String, waiting: usize },
    #[error("model '{model}' needs {need} bytes but the memory budget is {budget} bytes")]
    TooLarge { model: String, need: u64, budget: u64 },
    #[error("not enough memory for model '{model}' while other models are in use; retry later")]
    Busy { model: String },
    #[error("no engine for {format} models on this agent: {why}")]
    NoEngine { format: &'static str, why: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Mutable residency state of a loaded model.
#[derive(Debug)]
struct Life {
    keep_alive: KeepAlive,
    /// When an idle model may be unloaded; `None` = never (or in use).
    expires_at: Option<Instant>,
    last_used: Instant,
}

/// A loaded model.
pub struct Resident {
    pub entry: Arc<ModelEntry>,
    pub instance: Arc<dyn Instance>,
    pub template: ChatTemplate,
    pub engine: &'static str,
    pub loaded_at: SystemTime,
    pub load_duration: Duration,
    slots: Arc<Semaphore>,
    slot_count: usize,
    waiting: AtomicUsize,
    /// Tickets outstanding, queued or running.
    users: AtomicUsize,
    life: Mutex<Life>,
}

impl Resident {
    fn life(&self) -> std::sync::MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wall-clock expiry for `/api/ps`; far future for "forever".
    pub fn expires_at(&self) -> Option<SystemTime> {
        let life = self.life();
        if self.users.load(Ordering::SeqCst) > 0 {
            return match life.keep_alive {
                KeepAlive::Forever => None,
                KeepAlive::For(d) => Some(SystemTime::now() + d),
            };
        }
        life.expires_at.map(|at| SystemTime::now() + at.saturating_duration_since(Instant::now()))
    }

    pub fn memory(&self) -> u64 {
        self.instance.facts().size_bytes
    }

    pub fn in_use(&self) -> usize {
        self.users.load(Ordering::SeqCst)
    }

    /// Sequences this model generates at once.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Requests holding a slot now (being generated).
    pub fn running(&self) -> usize {
        self.slot_count.saturating_sub(self.slots.available_permits())
    }

    /// Requests queued for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// A snapshot for the pure decisions in [`plan`].
    fn candidate(&self) -> Candidate {
        let life = self.life();
        Candidate {
            name: self.entry.name.clone(),
            engine: self.engine,
            bytes: self.memory(),
            users: self.users.load(Ordering::SeqCst),
            last_used: life.last_used,
            expires_at: life.expires_at,
        }
    }
}

/// The right to run one request on a resident model (a queue place, then a slot). Dropping it
/// frees the slot and starts the keep-alive clock once the model is idle.
pub struct Ticket {
    pub resident: Arc<Resident>,
    permit: Option<OwnedSemaphorePermit>,
    wake: Arc<Notify>,
    metrics: Arc<SchedMetrics>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            self.metrics.active_requests.get_or_create(&labels(&self.resident.entry.name)).dec();
        }
        let r = &self.resident;
        let mut life = r.life();
        life.last_used = Instant::now();
        if r.users.fetch_sub(1, Ordering::SeqCst) == 1 {
            life.expires_at = match life.keep_alive {
                KeepAlive::Forever => None,
                KeepAlive::For(d) => Some(Instant::now() + d),
            };
            self.wake.notify_one();
        }
    }
}

/// Decrements the waiting count however the wait ends (granted, or the client went away).
struct Waiting<'a> {
    r: &'a Resident,
    metrics: &'a SchedMetrics,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.r.waiting.fetch_sub(1, Ordering::SeqCst);
        self.metrics.queue_depth.get_or_create(&labels(&self.r.entry.name)).dec();
    }
}

pub struct Scheduler {
    registry: Arc<Registry>,
    engines: Engines,
    opts: SchedOptions,
    metrics: Arc<SchedMetrics>,
    residents: Mutex<HashMap<String, Arc<Resident>>>,
    load_lock: tokio::sync::Mutex<()>,
    wake: Arc<Notify>,
    /// Runs before every load (board tuning pins the clocks).
    before_load: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl Scheduler {
    pub fn new(registry: Arc<Registry>, engines: Engines, opts: SchedOptions, metrics: SchedMetrics) -> Arc<Self> {
        let metrics = Arc::new(metrics);
        Arc::new(Self {
            registry,
            engines,
            opts,
            metrics,
            residents: Mutex::new(HashMap::new()),
            load_lock: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            before_load: Mutex::new(None),
        })
    }

    pub fn set_before_load(&self, f: Box<dyn Fn() + Send + Sync>) {
        *self.before_load.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(f);
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn options(&self) -> &SchedOptions {
        &self.opts
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Resident>>> {
        self.residents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resident models, most recently loaded first.
    pub fn residents(&self) -> Vec<Arc<Resident>> {
        let mut v: Vec<_> = self.map().values().cloned().collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.loaded_at));
        v
    }

    pub fn resident(&self, name: &str) -> Option<Arc<Resident>> {
        self.map().get(name).cloned()
    }

    /// The keep-alive a request gets: its own, else the model's configured one, else the server's.
    pub fn keep_alive_for(&self, entry: &ModelEntry, requested: Option<KeepAlive>) -> KeepAlive {
        requested.or(entry.settings.keep_alive).unwrap_or(self.opts.default_keep_alive)
    }

    /// Loads `entry` if needed and waits for a slot. The wait is FIFO; a full queue is refused
    /// at once so clients can back off.
    pub async fn acquire(&self, entry: &Arc<ModelEntry>, keep_alive: KeepAlive) -> Result<Ticket, SchedError> {
        let resident = self.ensure_loaded(entry).await?;
        resident.life().keep_alive = keep_alive;
        let mut ticket =
            Ticket { resident, permit: None, wake: Arc::clone(&self.wake), metrics: Arc::clone(&self.metrics) };
        let r = Arc::clone(&ticket.resident);
        let labels = labels(&entry.name);
        if r.slots.available_permits() == 0 {
            let waiting = r.waiting.load(Ordering::SeqCst);
            if waiting >= self.opts.max_queue {
                self.metrics.rejected.get_or_create(&labels).inc();
                return Err(SchedError::QueueFull { model: entry.name.clone(), waiting });
            }
        }
        r.waiting.fetch_add(1, Ordering::SeqCst);
        self.metrics.queue_depth.get_or_create(&labels).inc();
        let guard = Waiting { r: &r, metrics: &self.metrics };
        let permit = Arc::clone(&r.slots).acquire_owned().await.map_err(|_| EngineError::Stopped)?;
        drop(guard);
        self.metrics.active_requests.get_or_create(&labels).inc();
        ticket.permit = Some(permit);
        Ok(ticket)
    }

    /// Makes `entry` resident (explicit load, Ollama's empty prompt) and starts its keep-alive.
    pub async fn load(&self, entry: &Arc<ModelEntry>, keep_alive: KeepAlive) -> Result<Arc<Resident>, SchedError> {
        let r = self.ensure_loaded(entry).await?;
        r.life().keep_alive = keep_alive;
        drop(Ticket {
            resident: Arc::clone(&r),
            permit: None,
            wake: Arc::clone(&self.wake),
            metrics: Arc::clone(&self.metrics),
        });
        Ok(r)
    }

    /// Unloads `name` now if idle, else as soon as its last request ends. Returns whether it was
    /// resident.
    pub fn unload(&self, name: &str) -> bool {
        let mut map = self.map();
        let Some(r) = map.get(name).cloned() else { return false };
        let mut life = r.life();
        life.keep_alive = KeepAlive::For(Duration::ZERO);
        life.expires_at = Some(Instant::now());
        if r.users.load(Ordering::SeqCst) == 0 {
            drop(life);
            let gone = map.remove(name);
            self.metrics.loaded_models.set(map.len() as i64);
            drop(map);
            // Dropped outside the lock: destroying an instance can take a moment (RKLLM joins
            // its worker, which calls rkllm_destroy).
            drop(gone);
            tracing::info!(model = name, "unloaded");
        }
        true
    }

    /// Removes `names` from the resident map (they must be idle) and drops them outside the lock.
    fn evict(&self, names: &[String], why: &'static str) {
        let mut gone = Vec::new();
        {
            let mut map = self.map();
            for n in names {
                if let Some(r) = map.get(n)
                    && r.users.load(Ordering::SeqCst) == 0
                {
                    tracing::info!(evicted = %n, why, "unloading idle model");
                    gone.extend(map.remove(n));
                }
            }
            self.metrics.loaded_models.set(map.len() as i64);
        }
        drop(gone);
    }

    fn candidates(&self) -> Vec<Candidate> {
        self.map().values().map(|r| r.candidate()).collect()
    }

    /// Drops every idle model (shutdown, after in-flight requests have finished).
    pub fn unload_all(&self) {
        let names: Vec<String> = self.map().keys().cloned().collect();
        for n in names {
            self.unload(&n);
        }
    }

    /// Resident model for `entry`, loading it (after evicting idle models) when needed. The
    /// returned model counts one more user; the caller turns that into a [`Ticket`].
    async fn ensure_loaded(&self, entry: &Arc<ModelEntry>) -> Result<Arc<Resident>, SchedError> {
        if let Some(r) = self.claim(entry) {
            return Ok(r);
        }
        let _one_load_at_a_time = self.load_lock.lock().await;
        if let Some(r) = self.claim(entry) {
            return Ok(r);
        }
        let engine = self.engines.for_format(entry.format)?;
        let slots = engine.slots(entry.settings.n_batch.unwrap_or(self.opts.parallel));
        self.make_room(&entry.name, entry.memory_estimate(slots))?;
        let spec = self.load_spec(entry, slots);
        if let Some(f) = self.before_load.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            f();
        }
        tracing::info!(model = %entry.name, file = %entry.path.display(), context = entry.context, "loading");
        let t0 = Instant::now();
        let instance = loop {
            match Self::load_blocking(&engine, &spec).await {
                Err(SchedError::Engine(e)) if e.is_capacity() => {
                    // The engine's device memory is full: unload its least recently used idle
                    // model and try again. Bounded: each round removes one resident.
                    let Some(victim) = plan::lru_idle_of(&self.candidates(), engine.name()) else {
                        return Err(e.into());
                    };
                    tracing::warn!(model = %entry.name, error = %e, %victim, "device memory full; evicting and retrying");
                    self.evict(&[victim], "device memory full");
                }
                other => break other,
            }
        };
        let instance = instance?;
        let load_duration = t0.elapsed();
        self.metrics.load_seconds.get_or_create(&labels(&entry.name)).observe(load_duration.as_secs_f64());
        let template = compile_template(entry);
        let r = Arc::new(Resident {
            entry: Arc::clone(entry),
            instance,
            template,
            engine: engine.name(),
            loaded_at: SystemTime::now(),
            load_duration,
            slots: Arc::new(Semaphore::new(slots.max(1) as usize)),
            slot_count: slots.max(1) as usize,
            waiting: AtomicUsize::new(0),
            users: AtomicUsize::new(1),
            life: Mutex::new(Life { keep_alive: keepalive::DEFAULT, expires_at: None, last_used: Instant::now() }),
        });
        let mut map = self.map();
        map.insert(entry.name.clone(), Arc::clone(&r));
        self.metrics.loaded_models.set(map.len() as i64);
        tracing::info!(model = %entry.name, seconds = load_duration.as_secs_f64(), "loaded");
        Ok(r)
    }

    async fn load_blocking(engine: &Arc<dyn Engine>, spec: &LoadSpec) -> Result<Arc<dyn Instance>, SchedError> {
        let (engine, spec2) = (Arc::clone(engine), spec.clone());
        tokio::task::spawn_blocking(move || engine.load(&spec2))
            .await
            .map_err(|e| EngineError::Load { path: spec.path.display().to_string(), reason: e.to_string() })?
            .map_err(SchedError::from)
    }

    /// How to load `entry` with `slots` sequences: the one place a model's settings and the
    /// agent's options meet.
    fn load_spec(&self, entry: &ModelEntry, slots: u32) -> LoadSpec {
        let loras = entry
            .settings
            .loras
            .iter()
            .map(|(n, p)| (n.clone(), if p.is_absolute() { p.clone() } else { self.registry.dir().join(p) }))
            .collect();
        LoadSpec {
            path: entry.path.clone(),
            n_ctx: entry.context,
            parallel: slots,
            threads: self.opts.threads,
            prefix_cache: self.opts.prefix_cache,
            family: entry.family.clone(),
            names: entry.known_as().into_iter().map(str::to_owned).collect(),
            sampling: entry.settings.sampling.clone(),
            chat_template: match &entry.settings.chat_template {
                Some(TemplateOverride::Parts(p)) => Some(p.clone()),
                _ => None,
            },
            npu_cores: entry.settings.npu_cores,
            embed_flash: entry.settings.embed_flash,
            prompt_caches: entry.settings.prompt_caches.clone(),
            loras,
            cpus: self.opts.big_cores.clone(),
        }
    }

    /// The resident model for `entry` with one more user, if it is loaded from the same file.
    fn claim(&self, entry: &ModelEntry) -> Option<Arc<Resident>> {
        let map = self.map();
        let r = map.get(&entry.name).filter(|r| r.entry.path == entry.path)?;
        let mut life = r.life();
        r.users.fetch_add(1, Ordering::SeqCst);
        life.expires_at = None;
        Some(Arc::clone(r))
    }

    /// Evicts idle models, least recently used first, until `need` more bytes fit the budget.
    fn make_room(&self, model: &str, need: u64) -> Result<(), SchedError> {
        match plan::make_room(&self.candidates(), need, self.opts.memory_budget) {
            Ok(victims) => {
                self.evict(&victims, "memory budget");
                Ok(())
            }
            Err(NoRoom::TooLarge { need, budget }) => {
                Err(SchedError::TooLarge { model: model.to_owned(), need, budget })
            }
            Err(NoRoom::Busy) => Err(SchedError::Busy { model: model.to_owned() }),
        }
    }

    /// Unloads idle models whose keep-alive has run out, until `cancel` fires.
    pub async fn reap_until(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let (gone, next) = plan::expired(&self.candidates(), Instant::now());
            self.evict(&gone, "keep_alive expired");
            let wait = next.map_or(Duration::from_secs(3600), |at| at.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
            }
        }
    }

    pub fn metrics(&self) -> &SchedMetrics {
        &self.metrics
    }
}

impl crate::models::Residency for Scheduler {
    fn unload(&self, name: &str) -> bool {
        Scheduler::unload(self, name)
    }
}

/// The chat template for a model: the settings' override (Jinja, or RKLLM-style parts rendered
/// the same way), the file's own, or a built-in one. A template minijinja cannot compile falls
/// back to the built-in with a warning, so an exotic template never makes a model unusable.
fn compile_template(entry: &ModelEntry) -> ChatTemplate {
    let builtin = template::builtin_for(entry.meta.architecture.as_deref());
    let compiled = match &entry.settings.chat_template {
        Some(TemplateOverride::Parts(p)) => ChatTemplate::from_parts(&p.system, &p.prefix, &p.postfix),
        Some(TemplateOverride::Jinja(j)) => ChatTemplate::new(j),
        None => ChatTemplate::new(entry.meta.chat_template.as_deref().unwrap_or(builtin)),
    };
    compiled.unwrap_or_else(|e| {
        tracing::warn!(model = %entry.name, error = %e, "chat template not usable; using the built-in one");
        ChatTemplate::new(builtin).unwrap_or_else(|_| unreachable_template())
    })
}

/// The built-in templates are constants covered by unit tests; compiling one cannot fail.
fn unreachable_template() -> ChatTemplate {
    ChatTemplate::new(template::CHATML).unwrap_or_else(|e| panic!("built-in ChatML template is invalid: {e}"))
}
