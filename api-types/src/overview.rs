//! The live status page and the data it shows, shared by both binaries: the gateway serves it for
//! every board of the cluster, the agent for itself (docs/status-page.md).
//!
//! ```text
//!  browser ── GET /  (Accept: text/html) ──► STATUS_PAGE (public: it holds no data)
//!     └────── GET /overview every 2 s, Bearer <key from localStorage> ──► Overview (JSON)
//!  Ollama client ── GET / (no Accept, */*) ──► "Ollama is running"
//! ```
//!
//! One shape for both: an agent answers with one board and no deployments; the gateway with every
//! board it knows, its ModelDeployments and the changes it saw. Counters (generated tokens) are
//! totals, as Prometheus serves them; the page turns them into rates between two polls.

use axum::{
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The page: HTML, CSS and vanilla JavaScript in one file, no external resource.
pub const STATUS_PAGE: &str = include_str!("status_page.html");

/// Where the page reads its data, on the gateway and on the agent.
pub const OVERVIEW_PATH: &str = "/overview";

/// What Ollama clients expect from `GET /`.
pub const OLLAMA_ROOT: &str = "Ollama is running";

/// The page may run its inline script and style and call its own origin, nothing else.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                        connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether the client asked for HTML: `text/html` among its `Accept` media ranges with a quality
/// above zero. `*/*` alone (curl, Ollama's clients) or no `Accept` is not asking for HTML.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let zero = parts.any(|p| {
            p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")).and_then(|q| q.parse::<f32>().ok()) == Some(0.0)
        });
        media.eq_ignore_ascii_case("text/html") && !zero
    })
}

/// `GET /` (and `HEAD /`) of both binaries: the status page for browsers, Ollama's liveness text
/// for everyone else. `Vary: Accept` keeps caches from serving one to the other.
pub fn root(headers: &HeaderMap) -> Response {
    let vary = (header::VARY, HeaderValue::from_static("accept"));
    if wants_html(headers) {
        (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
                (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                vary,
            ],
            STATUS_PAGE,
        )
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8")), vary], OLLAMA_ROOT)
            .into_response()
    }
}

/// Everything the status page shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Overview {
    /// Who assembled it: the gateway (every board) or an agent (itself).
    pub source: OverviewSource,
    /// Version of the binary that answered.
    pub version: String,
    /// When it was assembled, Unix milliseconds.
    pub time_ms: i64,
    /// Boards by name.
    pub boards: Vec<BoardOverview>,
    /// ModelDeployments by `<namespace>/<name>`; empty on an agent.
    #[serde(default)]
    pub deployments: Vec<DeploymentOverview>,
    /// Recent changes, newest first (the gateway's ring of what it observed; empty on an agent).
    #[serde(default)]
    pub events: Vec<OverviewEvent>,
}

/// Who answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OverviewSource {
    Gateway,
    Agent,
}

/// One board.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BoardOverview {
    /// The Board's name (its node), or the agent's host name when it runs alone.
    pub name: String,
    /// System on chip, e.g. `rk3588`; `cpu` without a supported NPU.
    pub soc: Option<String>,
    /// The agent's base URL.
    pub endpoint: Option<String>,
    pub state: BoardState,
    /// Why the board is not Ready, when it is not.
    pub message: Option<String>,
    /// True when the telemetry below was read from the board for this answer; false when the
    /// gateway could not reach it and shows what its Board object last said.
    pub live: bool,
    /// Every thermal zone, degrees Celsius (live only).
    #[serde(default)]
    pub temperatures: Vec<Temperature>,
    /// Hottest zone, degrees Celsius.
    pub max_celsius: Option<f64>,
    /// NPU load in percent: one entry per core, or one for the whole NPU (live only; empty
    /// where the driver does not report it or the agent may not read it).
    #[serde(default)]
    pub npu_load_percent: Vec<u32>,
    /// Current clocks: CPU policies, NPU, DDR, GPU.
    #[serde(default)]
    pub clocks: Vec<Clock>,
    pub memory: Option<MemoryOverview>,
    /// Requests being generated now, every model.
    pub active: u32,
    /// Requests waiting for a slot, every model.
    pub queued: u32,
    /// Tokens generated since the agent started, every model (live only).
    pub generated_tokens: Option<u64>,
    /// Models on the board: resident ones, and in a cluster every assigned one with its phase.
    #[serde(default)]
    pub models: Vec<ModelOverview>,
}

/// How a board stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum BoardState {
    /// Heartbeating and serving.
    #[default]
    Ready,
    /// Shutting down: finishing what it has, taking nothing new.
    Draining,
    /// Its agent does not say it is Ready.
    NotReady,
    /// The gateway took it out of routing after failures; it is probed until it answers.
    Ejected,
    /// Its lease expired: the agent stopped heartbeating.
    Offline,
}

/// One thermal zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Temperature {
    /// The zone's type, e.g. `npu-thermal`.
    pub zone: String,
    pub celsius: f64,
}

/// One clock domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Clock {
    /// `cpu <policy> (<cpus>)`, `npu`, `ddr` or `gpu`.
    pub name: String,
    /// Current frequency in Hz.
    pub hz: Option<u64>,
    pub governor: Option<String>,
}

/// System memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemoryOverview {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// One model on one board.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelOverview {
    /// The name it is served under.
    pub name: String,
    /// `<namespace>/<name>` of the ModelDeployment that put it there (cluster mode).
    pub deployment: Option<String>,
    /// Pending, Downloading, Cached, Loading, Ready or Failed (a resident model is Ready).
    pub phase: String,
    /// Download or load progress from 0 to 1.
    pub progress: Option<f64>,
    /// In memory and serving.
    pub loaded: bool,
    /// `llama.cpp` or `rkllm`, when resident.
    pub engine: Option<String>,
    /// Requests holding a slot.
    pub running: u32,
    /// Requests queued for a slot.
    pub waiting: u32,
    /// Sequences generated at once.
    pub slots: u32,
    /// Tokens generated since the agent started (counted when each request ends).
    pub generated_tokens: u64,
    /// Why the phase is Failed, or other detail.
    pub message: Option<String>,
}

/// One ModelDeployment, as the gateway sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentOverview {
    /// `<namespace>/<name>`.
    pub key: String,
    /// The served name.
    pub model: String,
    pub aliases: Vec<String>,
    /// `gguf` or `rkllm`.
    pub format: String,
    /// Replicas asked for.
    pub desired: i32,
    /// Replicas Ready, as the controller last wrote.
    pub ready: i32,
    /// Routing policy, e.g. `LeastLoad`.
    pub routing: String,
    /// Boards this gateway sends its requests to now.
    pub routed: Vec<String>,
    /// Requests this gateway replica holds waiting for a board.
    pub queued: u32,
    /// Where the controller placed it, with each board's phase.
    pub placements: Vec<PlacementOverview>,
    /// The Ready condition's message when it is not True.
    pub message: Option<String>,
}

/// One replica's placement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlacementOverview {
    pub board: String,
    pub phase: String,
    /// Download or load progress from 0 to 1.
    pub progress: Option<f64>,
    pub message: Option<String>,
}

/// A change the gateway observed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OverviewEvent {
    /// Unix milliseconds.
    pub time_ms: i64,
    pub level: EventLevel,
    /// The board or ModelDeployment it is about.
    pub subject: String,
    /// The served model it concerns, if any (keys limited to some models see only theirs).
    pub model: Option<String>,
    pub message: String,
}

/// Whether an event needs attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum EventLevel {
    Info,
    Warning,
}

/// Now in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn html_only_when_asked_for() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
        assert!(wants_html(&accept(chrome)));
        assert!(wants_html(&accept("TEXT/HTML")));
        assert!(!wants_html(&HeaderMap::new()), "no Accept: Ollama's probe");
        assert!(!wants_html(&accept("*/*")), "curl");
        assert!(!wants_html(&accept("application/json")));
        assert!(!wants_html(&accept("text/html;q=0, */*")), "refused explicitly");
        assert!(!wants_html(&accept("text/*")), "only an explicit text/html gets the page");
    }

    #[tokio::test]
    async fn root_negotiates() {
        let page = root(&accept("text/html"));
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("connect-src 'self'"));
        let body = axum::body::to_bytes(page.into_body(), usize::MAX).await.unwrap();
        assert!(std::str::from_utf8(&body).unwrap().contains(OVERVIEW_PATH));
        let text = root(&HeaderMap::new());
        assert_eq!(text.headers()[header::VARY], "accept");
        let body = axum::body::to_bytes(text.into_body(), usize::MAX).await.unwrap();
        assert_eq!(&body[..], OLLAMA_ROOT.as_bytes());
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "src=\"//", "@import"] {
            assert!(!STATUS_PAGE.contains(needle), "{needle} in the page");
        }
    }
}
