//! The composition root: an [`Agent`] owns every long-lived part — model registry, scheduler,
//! generation service, board node, metrics — and the background tasks that keep them, and is the
//! only place they are wired together. `cli` parses flags into an [`AgentConfig`] and hands over.
//!
//! ```text
//!   AgentConfig ──► Agent::build ──► engines (llama.cpp, RKLLM) ─┐
//!                        │            registry ─► Scheduler ─► serve::Service ─► api::router
//!                        │            Node (board facts, tuning) ┘
//!                        └─► tasks: JoinSet of named, instrumented tasks, stopped by one
//!                            CancellationToken on shutdown (reaper, board idle watch, digests)
//! ```

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use api_types::auth::{ApiKeys, KeysError};
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    api::{self, AppState, HttpMetrics},
    cluster::{BoardWriter, ClusterConfig, ClusterError, ModelStates, Parts, Reconciler},
    engine::{Engine, llama::LlamaEngine},
    keepalive::KeepAlive,
    metrics::PREFIX,
    models::{Library, ModelArgs, OpenError, Registry, Residency},
    node::{BoardArgs, BoardMetrics, IdleRestoreError, Node},
    npu::{self, NpuArgs, NpuError},
    sched::{Engines, SchedMetrics, SchedOptions, Scheduler},
    serve::{GenMetrics, ServeError, Service},
    size::Size,
    status::{RkllmRuntime, RuntimeState},
    store::{BlobStore, StoreOptions},
};

/// Which engine serves which files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    /// llama.cpp for `.gguf`; RKLLM for `.rkllm` where the runtime loads.
    Auto,
    /// llama.cpp only.
    Llama,
    /// RKLLM only (the NPU engine).
    Rkllm,
}

/// Everything `serve` needs, already parsed.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    pub models: ModelArgs,
    pub default_model: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub max_queue: usize,
    pub parallel: u32,
    pub memory_budget: Size,
    pub engine: EngineChoice,
    pub threads: Option<u32>,
    pub prefix_cache: bool,
    pub keep_alive: KeepAlive,
    pub shutdown_grace: Duration,
    pub npu: NpuArgs,
    pub board: BoardArgs,
    /// Model store limits and download behaviour.
    pub store: StoreOptions,
    /// Token peers present to read blobs (and this agent presents to them). The gateway presents
    /// it too, so wherever the API needs a key it is accepted as one.
    pub cluster_token: Option<String>,
    /// Refuse API requests carrying neither the cluster token nor a client key, even with no
    /// `--api-key-file`: only the gateway and peers get through.
    pub require_cluster_token: bool,
    /// Cluster mode, when on.
    pub cluster: Option<ClusterConfig>,
}

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Models(#[from] OpenError),
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error("--require-cluster-token needs a cluster token: set --cluster-token-file to a non-empty file")]
    NoClusterToken,
    #[error(transparent)]
    Npu(#[from] NpuError),
    #[error("--engine rkllm: {0}")]
    RkllmRequired(NpuError),
    #[error(transparent)]
    Board(#[from] IdleRestoreError),
    #[error("--default-model {name}: no such model in {dir}")]
    NoDefaultModel { name: String, dir: String },
    #[error("loading default model {name}: {source}")]
    DefaultModel {
        name: String,
        #[source]
        source: ServeError,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A running agent: its parts and its background tasks.
pub struct Agent {
    pub config: AgentConfig,
    pub registry: Arc<Registry>,
    pub sched: Arc<Scheduler>,
    pub serve: Arc<Service>,
    pub library: Arc<Library>,
    pub node: Arc<Node>,
    state: AppState,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    /// Task names by id, for the log when one ends.
    names: HashMap<tokio::task::Id, &'static str>,
    /// Cluster mode's Board status writer (marks the board Draining on shutdown).
    board: Option<Arc<BoardWriter>>,
}

impl Agent {
    /// Detects the board, opens the engines and the registry, and wires the services. Starts no
    /// task and binds nothing.
    pub fn build(config: AgentConfig) -> Result<Self, AgentError> {
        let info = board::BoardInfo::detect(&board::Sysfs::new(&config.board.sysfs_root));
        let (engines, runtime) = open_engines(&config, info.big_core_mask() as u32)?;
        Self::with_engines(config, info, engines, runtime)
    }

    /// [`build`](Self::build) with the engines given (tests pass a mock engine here).
    pub fn with_engines(
        config: AgentConfig,
        info: board::BoardInfo,
        engines: Engines,
        runtime: RuntimeState,
    ) -> Result<Self, AgentError> {
        let cluster_token = config.cluster_token.as_deref().and_then(ApiKeys::parse).map(Arc::new);
        let keys = api_keys(&config, cluster_token.as_deref())?.map(Arc::new);
        let nofile = board::raise_nofile(board::VENDOR_NOFILE);
        if nofile.after_soft < board::VENDOR_NOFILE && engines.rkllm.is_ok() {
            tracing::warn!(
                soft = nofile.after_soft,
                hard = nofile.hard,
                "open-file limit below the 102400 the RKLLM runtime needs; raise the hard limit (LimitNOFILE=)"
            );
        } else if nofile.after_soft > nofile.before_soft {
            tracing::info!(
                from = nofile.before_soft,
                to = nofile.after_soft,
                "raised the open-file limit for the RKLLM runtime"
            );
        }
        let node = Arc::new(Node::new(&config.board, info, nofile)?);
        let host = node.host();
        let opts = SchedOptions {
            parallel: config.parallel,
            max_queue: config.max_queue,
            // auto: 80 % of the board's RAM (the fixture's under --sysfs-root); 4 GiB if unknown.
            memory_budget: config.memory_budget.or_auto(|| match host.mem_total_bytes {
                0 => 4 << 30,
                total => total / 10 * 8,
            }),
            // Default: one llama.cpp thread per big core where the board says which those are.
            threads: config.threads.unwrap_or_else(|| match node.info.big_cores().len() {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
                n => n as u32,
            }),
            prefix_cache: config.prefix_cache,
            default_keep_alive: config.keep_alive,
            big_cores: node.info.big_cores(),
        };
        let registry = Arc::new(config.models.open()?);
        tracing::info!(dir = %config.models.models_dir.display(), models = registry.list().len(), "models discovered");
        let mut metrics = MetricsRegistry::with_prefix(PREFIX);
        let http_metrics = Arc::new(HttpMetrics::register(&mut metrics));
        let sched = Scheduler::new(Arc::clone(&registry), engines, opts, SchedMetrics::register(&mut metrics));
        let serve = Arc::new(Service::new(
            Arc::clone(&sched),
            GenMetrics::register(&mut metrics),
            config.default_model.clone(),
        ));
        let board_metrics = Arc::new(BoardMetrics::register(&mut metrics));
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(30)).build()?;
        let store = Arc::new(BlobStore::new(config.models.models_dir.clone(), http, config.store.clone()));
        let library = Arc::new(Library::new(Arc::clone(&registry), store, Arc::clone(&sched) as Arc<dyn Residency>));
        {
            let node = Arc::clone(&node);
            sched.set_before_load(Box::new(move || node.pin()));
        }
        let state = AppState {
            serve: Arc::clone(&serve),
            http_metrics,
            board_metrics,
            registry: Arc::new(metrics),
            keys,
            library: Arc::clone(&library),
            ready: Arc::new(AtomicBool::new(false)),
            node: Arc::clone(&node),
            runtime,
            cluster_token,
            vllm: Arc::default(),
            cluster_view: Arc::default(),
        };
        Ok(Self {
            config,
            registry,
            sched,
            serve,
            library,
            node,
            state,
            cancel: CancellationToken::new(),
            tasks: JoinSet::new(),
            names: HashMap::new(),
            board: None,
        })
    }

    /// The process's metrics registry.
    pub fn metrics_registry(&self) -> Arc<MetricsRegistry> {
        Arc::clone(&self.state.registry)
    }

    /// The HTTP router over this agent's services.
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Runs `fut` as a named background task, inside a span carrying its name. It must return
    /// when the agent's cancellation token fires (the token is passed to the closure).
    pub fn spawn<F, Fut>(&mut self, name: &'static str, f: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let fut = f(self.cancel.child_token()).instrument(tracing::info_span!("task", name));
        let handle = self.tasks.spawn(fut);
        self.names.insert(handle.id(), name);
    }

    /// Starts the background tasks and loads the default model.
    pub async fn start(&mut self) -> Result<(), AgentError> {
        let sched = Arc::clone(&self.sched);
        self.spawn("keep-alive reaper", move |cancel| sched.reap_until(cancel));
        let (node, sched) = (Arc::clone(&self.node), Arc::clone(&self.sched));
        self.spawn("board idle watch", move |cancel| node.idle_watch(move || sched.residents().is_empty(), cancel));
        let library = Arc::clone(&self.library);
        self.spawn("model digests", move |cancel| async move {
            // Hashing reads whole files: on a blocking thread, abandoned (not awaited) on shutdown.
            let work = tokio::task::spawn_blocking(move || library.fill_digests());
            tokio::select! {
                () = cancel.cancelled() => {}
                r = work => if let Err(e) = r { tracing::warn!(error = %e, "digest task failed") },
            }
        });
        if let Some(cfg) = self.config.cluster.clone() {
            self.start_cluster(cfg).await?;
        }
        if let Some(name) = &self.config.default_model {
            let entry = self.registry.lookup(name).ok_or_else(|| AgentError::NoDefaultModel {
                name: name.clone(),
                dir: self.config.models.models_dir.display().to_string(),
            })?;
            self.serve
                .load(&entry, Some(KeepAlive::Forever))
                .await
                .map_err(|source| AgentError::DefaultModel { name: name.clone(), source })?;
        }
        Ok(())
    }

    /// Cluster mode: the Board (status writer and spec watch) and the Lease heartbeat.
    async fn start_cluster(&mut self, cfg: ClusterConfig) -> Result<(), AgentError> {
        let client = kube::Client::try_default().await.map_err(ClusterError::from)?;
        tracing::info!(board = %cfg.node_name, namespace = %cfg.namespace, endpoint = %cfg.advertise_url, "cluster mode");
        let parts = Parts {
            registry: Arc::clone(&self.registry),
            library: Arc::clone(&self.library),
            sched: Arc::clone(&self.sched),
            serve: Arc::clone(&self.serve),
            node: Arc::clone(&self.node),
            runtime: self.state.runtime.clone(),
        };
        let states = Arc::new(ModelStates::default());
        let _ = self.state.cluster_view.set(crate::api::overview::ClusterParts {
            board: cfg.node_name.clone(),
            endpoint: cfg.advertise_url.clone(),
            states: Arc::clone(&states),
        });
        let writer = BoardWriter::new(client.clone(), cfg.clone(), parts.clone(), Arc::clone(&states));
        let reconciler = Reconciler::new(parts, states, cfg.store_budget);
        let w = Arc::clone(&writer);
        self.spawn("board status", move |cancel| w.run(cancel));
        let (c, node) = (client.clone(), cfg.node_name.clone());
        self.spawn("board spec watch", move |cancel| crate::cluster::watch_spec(c, node, reconciler, cancel));
        self.spawn("lease heartbeat", move |cancel| crate::cluster::heartbeat(client, cfg, cancel));
        self.board = Some(writer);
        Ok(())
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then drains: no new connections,
    /// in-flight requests get `shutdown_grace`, background tasks stop, models unload, the board's
    /// clocks are restored.
    pub async fn serve(mut self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let app = self.router();
        tracing::info!(addr = %listener.local_addr().map_err(AgentError::Serve)?, "serving OpenAI (/v1) and Ollama (/api) APIs");
        self.state.ready.store(true, Ordering::SeqCst);
        let stop = CancellationToken::new();
        // TCP_NODELAY: answers stream as many small writes (one per token); with Nagle's algorithm
        // each waits for the client's delayed ACK (~40 ms on Linux), as `make bench-gateway` showed.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
        let mut server = std::pin::pin!(server.into_future());
        let grace = self.config.shutdown_grace;
        let result = tokio::select! {
            r = &mut server => r.map_err(AgentError::Serve),
            () = shutdown => {
                tracing::info!(grace_seconds = grace.as_secs(), "shutting down: no new connections, finishing in-flight requests");
                self.state.ready.store(false, Ordering::SeqCst);
                if let Some(board) = &self.board {
                    board.drain().await;
                }
                stop.cancel();
                if tokio::time::timeout(grace, &mut server).await.is_err() {
                    tracing::warn!("grace period over; abandoning the remaining requests");
                }
                Ok(())
            }
        };
        self.stop_tasks().await;
        self.sched.unload_all();
        self.node.restore();
        tracing::info!("stopped");
        result
    }

    /// Cancels every background task and waits (bounded) for them to end.
    async fn stop_tasks(&mut self) {
        self.cancel.cancel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(Ok((id, ())))) => {
                    tracing::debug!(task = self.names.get(&id).copied().unwrap_or("?"), "task stopped");
                }
                Ok(Some(Err(e))) => {
                    let name = self.names.get(&e.id()).copied().unwrap_or("?");
                    tracing::error!(task = name, error = %e, "task failed");
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(left = self.tasks.len(), "background tasks did not stop in time; aborting them");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
    }

    /// Binds `config.listen`, starts, serves until SIGTERM or Ctrl-C.
    pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
        let listen = config.listen;
        let mut agent = Self::build(config)?;
        agent.start().await?;
        let listener = TcpListener::bind(listen).await.map_err(|source| AgentError::Bind { addr: listen, source })?;
        agent.serve(listener, shutdown_signal()).await
    }
}

/// The keys the API accepts; `None` leaves it open. With client keys the cluster token is one
/// more (the gateway proxies with it); `--require-cluster-token` closes the API to anyone without
/// the token or a client key, also when there are no client keys.
fn api_keys(config: &AgentConfig, token: Option<&ApiKeys>) -> Result<Option<ApiKeys>, AgentError> {
    if config.require_cluster_token && token.is_none() {
        return Err(AgentError::NoClusterToken);
    }
    let client = config.api_key_file.as_deref().map(ApiKeys::load).transpose()?;
    Ok(match (client, token) {
        (Some(client), Some(token)) => Some(client.merged(token)),
        (Some(client), None) => Some(client),
        (None, Some(token)) if config.require_cluster_token => Some(token.clone()),
        (None, _) => None,
    })
}

/// The engines for `--engine`, and the runtime's state for the status endpoint.
fn open_engines(config: &AgentConfig, mask: u32) -> Result<(Engines, RuntimeState), AgentError> {
    let choice = config.engine;
    let llama: Option<Arc<dyn Engine>> =
        (choice != EngineChoice::Rkllm).then(|| Arc::new(LlamaEngine) as Arc<dyn Engine>);
    if choice == EngineChoice::Llama {
        let why = "--engine llama".to_owned();
        return Ok((Engines { llama, rkllm: Err(why.clone()) }, RuntimeState { rkllm: None, reason: Some(why) }));
    }
    match npu::open_runtime(&config.npu) {
        Ok(rt) => {
            tracing::info!(lib = %rt.path.display(), version = ?rt.version.map(|v| v.to_string()), abi = %rt.abi,
                           cpus_mask = format!("{mask:#x}"), "RKLLM runtime loaded");
            if mask == 0 {
                tracing::warn!("no cpufreq topology under --sysfs-root; RKLLM threads use the vendor default CPUs 4-7");
            }
            let state = RuntimeState {
                rkllm: Some(RkllmRuntime {
                    lib: rt.path.clone(),
                    version: rt.version.map(|v| v.to_string()),
                    abi: rt.abi.as_str().to_owned(),
                    domains: config.npu.npu_domains,
                    domain_memory_bytes: match Size::parse(&config.npu.npu_domain_memory) {
                        Ok(Size::Bytes(b)) => b,
                        _ => 0,
                    },
                }),
                reason: None,
            };
            let engine = npu::engine(rt, &config.npu, &config.models.models_dir, mask)?;
            Ok((Engines { llama, rkllm: Ok(engine) }, state))
        }
        Err(why) if choice == EngineChoice::Rkllm => Err(AgentError::RkllmRequired(why)),
        Err(why) => {
            tracing::info!(%why, "RKLLM runtime not available; serving GGUF models on the CPU only");
            let why = why.to_string();
            Ok((Engines { llama, rkllm: Err(why.clone()) }, RuntimeState { rkllm: None, reason: Some(why) }))
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
