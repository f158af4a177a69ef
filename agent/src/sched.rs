//! Residency and queueing: which models are loaded, for how long, and who runs next.
//!
//! ```text
//!  acquire(name) ──► Registry::lookup ──► resident? ──no──► make_room (evict idle LRU) ──► load
//!                                             │ yes
//!                                             ▼
//!                               bounded FIFO wait for one of `parallel` slots ──► Lease
//!  Lease dropped ──► idle ──► expires after keep_alive ──► reaper unloads
//! ```
//!
//! A resident model is never unloaded while a lease on it exists (queued or running), so a
//! request that got a lease cannot lose its model. Loads happen one at a time: two loads racing
//! for the same memory would both pass the budget check.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::{
    engine::{Engine, EngineError, Instance, LoadSpec},
    keepalive::{self, KeepAlive},
    metrics::Metrics,
    models::{Format, ModelEntry, Registry},
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
    /// NPU memory domains (`base_domain_id` 0..n) RKLLM instances are spread over.
    pub npu_domains: u32,
    /// Bytes of NPU memory one domain holds.
    pub npu_domain_bytes: u64,
    /// The board's big cores, for llama.cpp thread affinity (empty = not pinned).
    pub big_cores: Vec<usize>,
}

/// The engines this agent has. RKLLM is absent when its runtime did not load; the reason is
/// kept so a request for an `.rkllm` model can say why it cannot be served.
pub struct Engines {
    pub llama: Option<Arc<dyn Engine>>,
    pub rkllm: Result<Arc<dyn Engine>, String>,
}

/// Why a request could not get a model.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("model '{0}' not found")]
    NotFound(String),
    #[error("model '{model}' is busy: {waiting} requests already waiting")]
    QueueFull { model: String, waiting: usize },
    #[error("model '{model}' needs {need} bytes but the memory budget is {budget} bytes")]
    TooLarge { model: String, need: u64, budget: u64 },
    #[error("not enough memory for model '{model}' while other models are in use; retry later")]
    Busy { model: String },
    #[error("model '{model}' needs {need} bytes of NPU memory but a domain holds {budget} (--npu-domain-memory)")]
    NpuTooLarge { model: String, need: u64, budget: u64 },
    #[error(
        "NPU memory is full: model '{model}' needs {need} bytes and the NPU models in use leave no domain with room; retry later"
    )]
    NpuFull { model: String, need: u64 },
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
    /// NPU memory domain of an RKLLM instance.
    pub domain: Option<i32>,
    pub loaded_at: SystemTime,
    pub load_duration: Duration,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Leases outstanding, queued or running.
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
}

/// The right to run one request on a resident model. Dropping it frees the slot and starts the
/// keep-alive clock once the model is idle.
pub struct Lease {
    pub resident: Arc<Resident>,
    permit: Option<OwnedSemaphorePermit>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            self.metrics.active_requests.get_or_create(&Metrics::model(&self.resident.entry.name)).dec();
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
    metrics: &'a Metrics,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.r.waiting.fetch_sub(1, Ordering::SeqCst);
        self.metrics.queue_depth.get_or_create(&Metrics::model(&self.r.entry.name)).dec();
    }
}

pub struct Scheduler {
    registry: Arc<Registry>,
    engines: Engines,
    opts: SchedOptions,
    metrics: Arc<Metrics>,
    residents: Mutex<HashMap<String, Arc<Resident>>>,
    load_lock: tokio::sync::Mutex<()>,
    wake: Arc<Notify>,
    /// Runs before every load (board tuning pins the clocks).
    before_load: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl Scheduler {
    pub fn new(registry: Arc<Registry>, engines: Engines, opts: SchedOptions, metrics: Arc<Metrics>) -> Arc<Self> {
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
    pub async fn acquire(&self, entry: &Arc<ModelEntry>, keep_alive: KeepAlive) -> Result<Lease, SchedError> {
        let resident = self.ensure_loaded(entry).await?;
        resident.life().keep_alive = keep_alive;
        let mut lease =
            Lease { resident, permit: None, wake: Arc::clone(&self.wake), metrics: Arc::clone(&self.metrics) };
        let r = Arc::clone(&lease.resident);
        let labels = Metrics::model(&entry.name);
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
        lease.permit = Some(permit);
        Ok(lease)
    }

    /// Makes `entry` resident (explicit load, Ollama's empty prompt) and starts its keep-alive.
    pub async fn load(&self, entry: &Arc<ModelEntry>, keep_alive: KeepAlive) -> Result<Arc<Resident>, SchedError> {
        let r = self.ensure_loaded(entry).await?;
        r.life().keep_alive = keep_alive;
        drop(Lease {
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
            map.remove(name);
            self.metrics.loaded_models.set(map.len() as i64);
            tracing::info!(model = name, "unloaded");
        }
        true
    }

    /// Drops every idle model (shutdown, after in-flight requests have finished).
    pub fn unload_all(&self) {
        let names: Vec<String> = self.map().keys().cloned().collect();
        for n in names {
            self.unload(&n);
        }
    }

    /// Resident model for `entry`, loading it (after evicting idle models) when needed. The
    /// returned model counts one more user; the caller turns that into a [`Lease`].
    async fn ensure_loaded(&self, entry: &Arc<ModelEntry>) -> Result<Arc<Resident>, SchedError> {
        if let Some(r) = self.claim(entry) {
            return Ok(r);
        }
        let _one_load_at_a_time = self.load_lock.lock().await;
        if let Some(r) = self.claim(entry) {
            return Ok(r);
        }
        let engine = match entry.format {
            Format::Gguf => self.engines.llama.clone().ok_or_else(|| SchedError::NoEngine {
                format: "gguf",
                why: "--engine rkllm serves only .rkllm files".into(),
            })?,
            Format::Rkllm => {
                self.engines.rkllm.clone().map_err(|why| SchedError::NoEngine { format: "rkllm", why: why.clone() })?
            }
        };
        let rkllm = entry.format == Format::Rkllm;
        // RKLLM: one sequence per batch slot; `parallel` is the model's n_batch.
        let parallel =
            if rkllm { entry.settings.n_batch.unwrap_or(self.opts.parallel).clamp(1, 8) } else { self.opts.parallel };
        let need = entry.memory_estimate(parallel);
        self.make_room(&entry.name, need)?;
        let loras = entry
            .settings
            .loras
            .iter()
            .map(|(n, p)| (n.clone(), if p.is_absolute() { p.clone() } else { self.registry.dir().join(p) }))
            .collect();
        let mut spec = LoadSpec {
            path: entry.path.clone(),
            n_ctx: entry.context,
            parallel,
            threads: self.opts.threads,
            prefix_cache: self.opts.prefix_cache,
            family: entry.family.clone(),
            sampling: entry.settings.sampling.clone(),
            domain: if rkllm { self.pick_domain(&entry.name, entry.size)? } else { 0 },
            loras,
            cpus: self.opts.big_cores.clone(),
        };
        if let Some(f) = self.before_load.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            f();
        }
        tracing::info!(model = %entry.name, file = %entry.path.display(), context = entry.context, "loading");
        let t0 = Instant::now();
        let mut instance = Self::load_blocking(&engine, &spec).await;
        if let Err(SchedError::Engine(EngineError::NpuMemory(why))) = &instance {
            // The domain is full: unload idle NPU models and try once more.
            if self.evict_idle_npu() > 0 {
                tracing::warn!(model = %entry.name, %why, "NPU memory full; evicted idle NPU models, retrying once");
                spec.domain = self.pick_domain(&entry.name, entry.size)?;
                instance = Self::load_blocking(&engine, &spec).await;
            }
        }
        let instance = instance?;
        let load_duration = t0.elapsed();
        self.metrics.load_seconds.get_or_create(&Metrics::model(&entry.name)).observe(load_duration.as_secs_f64());
        let template = compile_template(entry);
        let r = Arc::new(Resident {
            entry: Arc::clone(entry),
            instance,
            template,
            engine: engine.name(),
            domain: rkllm.then_some(spec.domain),
            loaded_at: SystemTime::now(),
            load_duration,
            slots: Arc::new(Semaphore::new(parallel.max(1) as usize)),
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

    /// The NPU memory domain for a model of `need` bytes (its file: the weights the runtime maps
    /// into NPU memory), the least used one with room. Checked before `rkllm_init` because
    /// RKLLM 1.3.0 crashes instead of failing when a domain is full (rknn-llm #522). Idle NPU
    /// models are unloaded, least recently used first, when no domain has room.
    fn pick_domain(&self, model: &str, need: u64) -> Result<i32, SchedError> {
        let budget = self.opts.npu_domain_bytes;
        if need > budget {
            return Err(SchedError::NpuTooLarge { model: model.to_owned(), need, budget });
        }
        let n = self.opts.npu_domains.max(1) as i32;
        let mut map = self.map();
        loop {
            let used = |d: i32| map.values().filter(|r| r.domain == Some(d)).map(|r| r.entry.size).sum::<u64>();
            let count = |d: i32| map.values().filter(|r| r.domain == Some(d)).count();
            if let Some(d) = (0..n).filter(|&d| used(d) + need <= budget).min_by_key(|&d| (count(d), d)) {
                return Ok(d);
            }
            let victim = map
                .values()
                .filter(|r| r.domain.is_some() && r.users.load(Ordering::SeqCst) == 0)
                .min_by_key(|r| r.life().last_used)
                .map(|r| r.entry.name.clone());
            let Some(victim) = victim else {
                return Err(SchedError::NpuFull { model: model.to_owned(), need });
            };
            tracing::info!(evicted = %victim, for_model = model, "unloading idle NPU model to make room in NPU memory");
            map.remove(&victim);
            self.metrics.loaded_models.set(map.len() as i64);
        }
    }

    /// Unloads every idle RKLLM instance; returns how many.
    fn evict_idle_npu(&self) -> usize {
        let mut map = self.map();
        let before = map.len();
        map.retain(|name, r| {
            let keep = r.domain.is_none() || r.users.load(Ordering::SeqCst) > 0;
            if !keep {
                tracing::info!(evicted = %name, "unloading idle NPU model to free NPU memory");
            }
            keep
        });
        self.metrics.loaded_models.set(map.len() as i64);
        before - map.len()
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
        let budget = self.opts.memory_budget;
        if need > budget {
            return Err(SchedError::TooLarge { model: model.to_owned(), need, budget });
        }
        let mut map = self.map();
        loop {
            let used: u64 = map.values().map(|r| r.memory()).sum();
            if used + need <= budget {
                return Ok(());
            }
            let victim = map
                .values()
                .filter(|r| r.users.load(Ordering::SeqCst) == 0)
                .min_by_key(|r| r.life().last_used)
                .map(|r| r.entry.name.clone());
            let Some(victim) = victim else {
                return Err(SchedError::Busy { model: model.to_owned() });
            };
            tracing::info!(evicted = %victim, for_model = model, "evicting idle model to fit the memory budget");
            map.remove(&victim);
            self.metrics.loaded_models.set(map.len() as i64);
        }
    }

    /// Unloads idle models whose keep-alive has run out. Runs until the process ends.
    pub async fn reap_forever(self: Arc<Self>) {
        loop {
            let next = self.reap_once();
            let wait = next.map_or(Duration::from_secs(3600), |at| at.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
            }
        }
    }

    /// One pass; returns the earliest future expiry.
    fn reap_once(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut map = self.map();
        let mut next: Option<Instant> = None;
        map.retain(|name, r| {
            if r.users.load(Ordering::SeqCst) > 0 {
                return true;
            }
            match r.life().expires_at {
                Some(at) if at <= now => {
                    tracing::info!(model = %name, "keep_alive expired; unloaded");
                    false
                }
                Some(at) => {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    true
                }
                None => true,
            }
        });
        self.metrics.loaded_models.set(map.len() as i64);
        next
    }
}

/// The chat template for a model: the config's override, the file's own, or a built-in one.
/// A file template minijinja cannot compile falls back to the built-in with a warning, so an
/// exotic template never makes a model unusable.
fn compile_template(entry: &ModelEntry) -> ChatTemplate {
    let builtin = template::builtin_for(entry.meta.architecture.as_deref());
    let source = entry.settings.chat_template.as_deref().or(entry.meta.chat_template.as_deref()).unwrap_or(builtin);
    ChatTemplate::new(source).unwrap_or_else(|e| {
        tracing::warn!(model = %entry.name, error = %e, "chat template not usable; using the built-in one");
        ChatTemplate::new(builtin).unwrap_or_else(|_| unreachable_template())
    })
}

/// The built-in templates are constants covered by unit tests; compiling one cannot fail.
fn unreachable_template() -> ChatTemplate {
    ChatTemplate::new(template::CHATML).unwrap_or_else(|e| panic!("built-in ChatML template is invalid: {e}"))
}

/// `--memory-budget`: `auto` (80 % of MemTotal), or a size like `6GiB`, `512MiB`, `2G`, bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(auto_budget());
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        other => return Err(format!("invalid size unit {other:?} in {s:?}")),
    };
    Ok((n * mult) as u64)
}

fn auto_budget() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(4 * 1024 * 1024);
    total_kib * 1024 / 10 * 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_size("2G").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("1.5gib").unwrap(), 1_610_612_736);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("auto").unwrap() > 0);
        assert!(parse_size("5 parsecs").is_err());
    }
}
