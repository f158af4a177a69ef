//! The gateway: one cluster-wide OpenAI + Ollama endpoint, served by every operator replica (no
//! leader needed; docs/gateway.md). Each request goes to a board that has its model loaded and
//! will answer first.
//!
//! ```text
//!  ModelDeployments, Boards, Leases ──reflectors──► view ──► Table (pure: name → replicas)
//!  agents' GET /internal/v1/load every 250 ms ──poll──► Loads (in flight + others, health)
//!  client ─► http (auth, request id) ─► proxy ─► dispatch (policy, queue) ─► board ─► stream back
//! ```
//!
//! Pure parts: [`table`], [`policy`], [`prefix`], [`load`], [`auth`], [`queue`], [`events`]. I/O: [`view`]
//! (watches), [`poll`], [`proxy`], [`http`], [`workers`] (the serving threads), [`overview`] (the
//! status page's data), [`hold`] (requests held for a deployment scaled to zero, keep-alive bytes
//! for streams), [`announce`] (this replica's demand counters and the Lease that says where they
//! are).

pub mod announce;
pub mod auth;
pub mod dispatch;
pub mod events;
pub mod hold;
pub mod http;
pub mod load;
pub mod metrics;
pub mod overview;
pub mod policy;
pub mod poll;
pub mod prefix;
pub mod proxy;
pub mod queue;
pub mod table;
pub mod upstream;
pub mod view;
pub mod workers;

use std::{
    collections::{HashMap, hash_map::RandomState},
    hash::BuildHasher,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kube::Client;
use tokio_util::sync::CancellationToken;

use self::{load::Loads, metrics::Metrics, queue::Queue, table::Table};

/// How the gateway runs (flags in `cli::GatewayArgs`).
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Namespace of the boards' Leases.
    pub lease_namespace: String,
    /// Route only the ModelDeployments of this namespace; all when unset.
    pub watch_namespace: Option<String>,
    /// Sent to agents as the bearer token of every proxied request and poll.
    pub cluster_token: Option<String>,
    /// Client keys; `None`: no auth.
    pub keys: Option<auth::ClientKeys>,
    /// PrefixAffinity: requests a board may hold beyond its slots (LeastLoad holds none).
    pub board_queue: u32,
    /// Requests per model that may wait for a board.
    pub queue_depth: usize,
    /// Longest wait for a board.
    pub queue_timeout: Duration,
    /// Other boards tried after a failure before the first byte.
    pub retries: u32,
    /// Longest time spent retrying one request.
    pub retry_budget: Duration,
    /// Consecutive failures that eject a board.
    pub eject_after: u32,
    /// How often each board's load is polled.
    pub poll_interval: Duration,
    /// Connect timeout to a board.
    pub connect_timeout: Duration,
    /// Serving threads (`workers.rs`); 0: one per CPU.
    pub workers: usize,
    /// Longest hold of a request for an autoscaled deployment with no Ready replica.
    pub scale_from_zero_timeout: Duration,
    /// How often a held stream gets keep-alive bytes.
    pub stream_keepalive: Duration,
    /// This replica's name in its Lease (the controller's leader identity).
    pub identity: String,
    /// Base URL the leader reads this replica's demand from; `None`: derived from the listen
    /// address once bound (`announce::default_url`).
    pub advertise_url: Option<String>,
}

impl Config {
    /// Defaults for everything but where to listen and which namespace holds the Leases.
    pub fn new(listen: SocketAddr, lease_namespace: impl Into<String>) -> Self {
        Self {
            listen,
            lease_namespace: lease_namespace.into(),
            watch_namespace: None,
            cluster_token: None,
            keys: None,
            board_queue: 1,
            queue_depth: 256,
            queue_timeout: Duration::from_secs(30),
            retries: 2,
            retry_budget: Duration::from_secs(15),
            eject_after: 2,
            poll_interval: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(2),
            workers: 0,
            scale_from_zero_timeout: Duration::from_secs(120),
            stream_keepalive: Duration::from_secs(5),
            identity: "gateway".to_owned(),
            advertise_url: None,
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// State shared by the gateway's tasks and handlers.
pub struct Gateway {
    pub config: Config,
    pub metrics: Metrics,
    /// Client for the boards: connection pooling, no overall timeout (answers stream for long).
    pub http: reqwest::Client,
    /// `Authorization` for proxied requests to boards (`Bearer <cluster token>`), made once.
    pub board_auth: Option<axum::http::HeaderValue>,
    table: RwLock<Arc<Table>>,
    loads: Mutex<Loads>,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    turns: Mutex<HashMap<String, u64>>,
    /// Requests sent to a board and not finished, by route key (the demand endpoint's inflight).
    inflight: Mutex<HashMap<String, u64>>,
    rng: Mutex<u64>,
    /// True once the watches have listed everything (the table is real, not empty by default).
    synced: AtomicBool,
    /// What the status page shows beyond the table: the reflectors' snapshot, recent events.
    pub status: overview::StatusState,
}

impl Gateway {
    pub fn new(config: Config) -> Result<Arc<Self>, Error> {
        let http = client_for(&config)?;
        let board_auth = config.cluster_token.as_ref().and_then(|t| {
            let mut v = axum::http::HeaderValue::from_str(&format!("Bearer {t}")).ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        Ok(Arc::new(Self {
            config,
            metrics: Metrics::default(),
            http,
            board_auth,
            table: RwLock::default(),
            loads: Mutex::default(),
            queues: Mutex::default(),
            turns: Mutex::default(),
            inflight: Mutex::default(),
            rng: Mutex::new(RandomState::new().hash_one(0u8) | 1),
            synced: AtomicBool::new(false),
            status: overview::StatusState::default(),
        }))
    }

    /// A new client to the boards with the gateway's settings (each serving thread has one).
    pub fn new_client(&self) -> Result<reqwest::Client, Error> {
        client_for(&self.config)
    }

    /// The current routing table.
    pub fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Installs a new table (from [`view`]) and wakes every waiting request when it differs from
    /// the old one; returns whether it did.
    pub fn set_table(&self, table: Table) -> bool {
        let mut current = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if **current == table {
            return false;
        }
        *current = Arc::new(table);
        drop(current);
        // A replica may have come for requests held while their deployment had none.
        self.wake_all();
        true
    }

    pub fn loads(&self) -> MutexGuard<'_, Loads> {
        self.loads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queue of one route.
    pub fn queue(&self, route_key: &str) -> Arc<Queue> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner).entry(route_key.to_owned()).or_default().clone()
    }

    /// Requests waiting for a board of one route now.
    pub fn queued(&self, route_key: &str) -> usize {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner).get(route_key).map_or(0, |q| q.len())
    }

    /// Wakes the requests waiting for a board of one route.
    pub fn wake(&self, route_key: &str) {
        if let Some(q) = self.queues.lock().unwrap_or_else(PoisonError::into_inner).get(route_key) {
            q.wake();
        }
    }

    /// Wakes every waiting request (a report came, the table changed).
    pub fn wake_all(&self) {
        for q in self.queues.lock().unwrap_or_else(PoisonError::into_inner).values() {
            q.wake();
        }
    }

    /// Counts a request sent to a board of a route (`up`) or finished there.
    pub fn count_inflight(&self, route_key: &str, up: bool) {
        let mut all = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if up {
            *all.entry(route_key.to_owned()).or_default() += 1;
        } else if let Some(n) = all.get_mut(route_key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                all.remove(route_key);
            }
        }
    }

    /// This replica's demand (`GET /internal/v1/demand`): per deployment, the requests in its
    /// queue (held ones included) and those in flight; deployments with neither left out.
    pub fn demand(&self) -> crate::demand::Demand {
        let mut models: std::collections::BTreeMap<String, crate::demand::ModelDemand> =
            std::collections::BTreeMap::new();
        for (key, q) in self.queues.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let waiting = q.len() as u64;
            if waiting > 0 {
                models.entry(key.clone()).or_default().waiting = waiting;
            }
        }
        for (key, n) in self.inflight.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            if *n > 0 {
                models.entry(key.clone()).or_default().inflight = *n;
            }
        }
        crate::demand::Demand { models }
    }

    /// RoundRobin's counter of one route, advanced per pick.
    pub fn next_turn(&self, route_key: &str) -> u64 {
        let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        let t = turns.entry(route_key.to_owned()).or_default();
        *t = t.wrapping_add(1);
        *t
    }

    /// xorshift64: tie-breaks only, so speed matters and quality hardly does.
    pub fn random(&self) -> u64 {
        let mut s = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
    }
}

fn client_for(config: &Config) -> Result<reqwest::Client, Error> {
    Ok(reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()?)
}

/// Serves the gateway until `stop` is cancelled: the watches, the load poller and the HTTP
/// listener. The listener is bound first, so a taken port fails at start.
pub async fn run(client: Client, config: Config, stop: CancellationToken) -> Result<(), Error> {
    let count = if config.workers == 0 { workers::default_count() } else { config.workers };
    let listeners = workers::bind(config.listen, count)?;
    let bound = listeners.first().and_then(|l| l.local_addr().ok()).unwrap_or(config.listen);
    let url = config.advertise_url.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
        announce::default_url(bound, std::env::var("POD_IP").ok().as_deref(), host.as_deref())
    });
    let gw = Gateway::new(config)?;
    tokio::spawn(view::watch(client.clone(), gw.clone(), stop.clone()));
    tokio::spawn(poll::run(gw.clone(), stop.clone()));
    // The Lease outlives the listener's stop by the drain: requests still held count until
    // they end, then the Lease goes.
    let served = CancellationToken::new();
    let announced = tokio::spawn(announce::run(client, gw.clone(), url, served.clone()));
    let result = workers::serve(listeners, gw, stop).await;
    served.cancel();
    let _ = announced.await;
    result
}
