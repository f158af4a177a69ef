//! What the controller knows about one Board at one instant, read from the Board (spec written
//! by this controller, status by the board's agent) and the board's Lease. Pure: built from
//! objects already in the reflector stores, so placement and status never call the API server.
//!
//! ```text
//!   Lease <ns>/<board>  ──renewTime + leaseDurationSeconds──►  Liveness (fresh / expired / none)
//!   Board.spec.models   ──(+ writes this controller made that the store has not seen yet)──► entries
//!   Board.status        ──soc, endpoint, memory, store, models[], Ready condition──► facts
//! ```

use std::{borrow::Cow, collections::BTreeMap};

use crds::{Board, BoardModel, BoardModelStatus, CONDITION_READY, ModelPhase};
use k8s_openapi::{
    api::coordination::v1::Lease,
    jiff::{SignedDuration, Timestamp},
};

/// Reason the agent sets on its Ready condition while it shuts down: its replicas must move.
pub const REASON_DRAINING: &str = "Draining";
/// Reason this controller sets on a Board's Ready condition when the board's Lease expired.
pub const REASON_LEASE_EXPIRED: &str = "LeaseExpired";

/// The renewal times of a board's Lease, as the agent writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimes {
    /// Last renewal (or acquisition when never renewed).
    pub renewed: Timestamp,
    /// How long a renewal stays valid.
    pub duration: SignedDuration,
}

impl LeaseTimes {
    /// Reads a Lease; `None` when it carries no renewal time, which counts as no heartbeat.
    pub fn from_lease(lease: &Lease) -> Option<Self> {
        let spec = lease.spec.as_ref()?;
        let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
        // The agent always sets it; 40 s is the agent's documented value, used if a hand-made
        // Lease omits it.
        let seconds = spec.lease_duration_seconds.unwrap_or(40).max(0);
        Some(Self { renewed, duration: SignedDuration::from_secs(i64::from(seconds)) })
    }

    /// The instant the lease stops being fresh.
    pub fn expires(&self) -> Timestamp {
        self.renewed.saturating_add(self.duration).unwrap_or(self.renewed)
    }
}

/// Whether a board's agent is alive, from its Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Renewed recently; stays fresh until `until` unless renewed again.
    Fresh {
        /// When the lease expires without another renewal.
        until: Timestamp,
    },
    /// Not renewed in time.
    Expired {
        /// When it expired.
        since: Timestamp,
    },
    /// No Lease (or one without times) for this board.
    NoLease,
}

impl Liveness {
    /// Fresh iff renewTime + leaseDurationSeconds > now.
    pub fn of(lease: Option<LeaseTimes>, now: Timestamp) -> Self {
        match lease {
            None => Self::NoLease,
            Some(times) if times.expires() > now => Self::Fresh { until: times.expires() },
            Some(times) => Self::Expired { since: times.expires() },
        }
    }

    /// True while the agent heartbeats.
    pub fn is_fresh(&self) -> bool {
        matches!(self, Self::Fresh { .. })
    }
}

/// One Board as placement, distribution and status see it.
#[derive(Clone, Debug)]
pub struct BoardFacts<'a> {
    /// Board name (the node's name).
    pub name: &'a str,
    /// metadata.labels, for nodeSelector and spreadBy.
    pub labels: Cow<'a, BTreeMap<String, String>>,
    /// spec.cordoned: no new replicas, existing ones drained.
    pub cordoned: bool,
    /// From the board's Lease.
    pub liveness: Liveness,
    /// The agent's Ready condition is False with reason Draining (it is shutting down).
    pub draining: bool,
    /// status.soc, falling back to the `rockchipllama.io/soc` label.
    pub soc: Option<&'a str>,
    /// status.endpoint: where peers fetch blobs from this board.
    pub endpoint: Option<&'a str>,
    /// status.memory.totalBytes.
    pub memory_total: Option<i64>,
    /// status.store.freeBytes.
    pub store_free: Option<i64>,
    /// status.npu.domains and domainMemoryBytes: where `.rkllm` models must fit.
    pub npu_domains: Option<(i32, i64)>,
    /// spec.models, with this controller's own writes that the store has not caught up with
    /// applied on top, so two reconciles in a row never plan on a stale picture.
    pub entries: Vec<Cow<'a, BoardModel>>,
    /// status.models as the agent reports them.
    pub models: &'a [BoardModelStatus],
}

/// A write this controller made to one entry of one Board, kept until the Board store shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingWrite {
    /// The entry applied; `None` when it was removed.
    pub entry: Option<BoardModel>,
    /// When the write was planned, so a write the store never reflects is forgotten.
    pub since: std::time::Instant,
}

impl<'a> BoardFacts<'a> {
    /// Facts about `board` at `now`, with `pending` writes (by entry key) overlaid on its spec.
    pub fn new(
        board: &'a Board,
        lease: Option<LeaseTimes>,
        pending: Option<&BTreeMap<String, PendingWrite>>,
        now: Timestamp,
    ) -> Self {
        let status = board.status.as_ref();
        let name = board.metadata.name.as_deref().unwrap_or_default();
        let labels = match &board.metadata.labels {
            Some(labels) => Cow::Borrowed(labels),
            None => Cow::Owned(BTreeMap::new()),
        };
        let soc = status
            .and_then(|s| s.soc.as_deref())
            .or_else(|| board.metadata.labels.as_ref().and_then(|l| l.get(crds::LABEL_SOC)).map(String::as_str));
        let draining = status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == CONDITION_READY && c.status == "False" && c.reason == REASON_DRAINING)
        });
        let mut entries: Vec<Cow<'a, BoardModel>> = board.spec.models.iter().map(Cow::Borrowed).collect();
        if let Some(pending) = pending {
            for (key, write) in pending {
                entries.retain(|e| &e.key != key);
                if let Some(entry) = &write.entry {
                    entries.push(Cow::Owned(entry.clone()));
                }
            }
        }
        Self {
            name,
            labels,
            cordoned: board.spec.cordoned,
            liveness: Liveness::of(lease, now),
            draining,
            soc,
            endpoint: status.and_then(|s| s.endpoint.as_deref()),
            memory_total: status.and_then(|s| s.memory.as_ref()).map(|m| m.total_bytes),
            store_free: status.and_then(|s| s.store.as_ref()).map(|s| s.free_bytes),
            npu_domains: status
                .and_then(|s| s.npu.as_ref())
                .and_then(|n| Some((n.domains?, n.domain_memory_bytes?)))
                .filter(|&(n, per)| n > 0 && per > 0),
            entries,
            models: status.map(|s| s.models.as_slice()).unwrap_or_default(),
        }
    }

    /// This board's spec entry for a ModelDeployment key.
    pub fn entry(&self, key: &str) -> Option<&BoardModel> {
        self.entries.iter().map(|e| e.as_ref()).find(|e| e.key == key)
    }

    /// What the agent reports for a ModelDeployment key.
    pub fn reported(&self, key: &str) -> Option<&'a BoardModelStatus> {
        self.models.iter().find(|m| m.key == key)
    }

    /// The blob with this digest is complete in the board's store (Cached, Loading or Ready).
    pub fn holds_blob(&self, sha256: &str) -> bool {
        self.models.iter().any(|m| {
            m.sha256.as_deref() == Some(sha256)
                && matches!(m.phase, ModelPhase::Cached | ModelPhase::Loading | ModelPhase::Ready)
        })
    }

    /// The board is fetching this blob now (for any entry).
    pub fn fetching_blob(&self, sha256: &str) -> bool {
        self.models.iter().any(|m| m.sha256.as_deref() == Some(sha256) && m.phase == ModelPhase::Downloading)
    }

    /// The replica for `key` serves `revision`: phase Ready, loaded, and the agent reports that
    /// very revision (a Ready replica of an older revision is about to reload).
    pub fn ready_at(&self, key: &str, revision: Option<&str>) -> bool {
        self.reported(key).is_some_and(|m| {
            m.phase == ModelPhase::Ready && m.loaded && revision.is_some() && m.revision.as_deref() == revision
        })
    }

    /// The replica for `key` is Ready at the revision of this board's current entry.
    pub fn ready_at_entry(&self, key: &str) -> bool {
        self.entry(key).is_some_and(|e| self.ready_at(key, e.revision.as_deref()))
    }

    /// The board can take replicas at all: heartbeating, not cordoned, not shutting down.
    pub fn schedulable(&self) -> bool {
        self.liveness.is_fresh() && !self.cordoned && !self.draining
    }

    /// Number of entries on this board, the "fewest assigned models" tie-breaker.
    pub fn assigned(&self) -> usize {
        self.entries.len()
    }
}

/// Whether the controller should mark a board not Ready because its Lease is gone: the lease is
/// expired (or missing on a board older than one lease period, so a just-started agent has time
/// to create it), and the Ready condition does not already say LeaseExpired.
pub fn needs_lease_expired_mark(board: &Board, lease: Option<LeaseTimes>, now: Timestamp) -> bool {
    let stale = match Liveness::of(lease, now) {
        Liveness::Fresh { .. } => false,
        Liveness::Expired { .. } => true,
        Liveness::NoLease => board
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|created| created.0.saturating_add(SignedDuration::from_secs(40)).is_ok_and(|t| t < now)),
    };
    let already = board.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == CONDITION_READY && c.status == "False" && c.reason == REASON_LEASE_EXPIRED)
    });
    stale && !already
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    /// Seconds since the epoch as a Timestamp.
    pub(crate) fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("timestamp")
    }

    pub(crate) fn lease(renewed: i64, duration: i64) -> Option<LeaseTimes> {
        Some(LeaseTimes { renewed: at(renewed), duration: SignedDuration::from_secs(duration) })
    }

    /// A Board as an agent would report it: 8 GiB RAM, 32 GiB store free, SoC rk3588.
    pub(crate) fn board(name: &str) -> Board {
        serde_json::from_value(json!({
            "apiVersion": "rockchipllama.io/v1alpha1",
            "kind": "Board",
            "metadata": { "name": name, "labels": { "rockchipllama.io/soc": "rk3588" },
                          "creationTimestamp": "2027-01-01T00:00:00Z" },
            "spec": {},
            "status": {
                "soc": "rk3588",
                "endpoint": format!("http://{name}:8080"),
                "memory": { "totalBytes": 8_i64 << 30, "availableBytes": 6_i64 << 30 },
                "store": { "totalBytes": 64_i64 << 30, "freeBytes": 32_i64 << 30 },
                "conditions": [{ "type": "Ready", "status": "True", "reason": "Heartbeating",
                                 "message": "", "lastTransitionTime": "2027-01-01T00:00:00Z" }]
            }
        }))
        .expect("board")
    }

    #[test]
    fn lease_is_fresh_until_renew_plus_duration() {
        assert!(Liveness::of(lease(0, 40), at(39)).is_fresh());
        assert_eq!(Liveness::of(lease(0, 40), at(40)), Liveness::Expired { since: at(40) });
        assert_eq!(Liveness::of(None, at(0)), Liveness::NoLease);
    }

    #[test]
    fn lease_times_read_renew_or_acquire() {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": { "name": "b" },
            "spec": { "holderIdentity": "b", "leaseDurationSeconds": 40,
                      "acquireTime": "2027-01-15T08:00:00.000000Z" }
        }))
        .expect("lease");
        let times = LeaseTimes::from_lease(&lease).expect("times");
        assert_eq!(times.duration, SignedDuration::from_secs(40));
        let empty: Lease = serde_json::from_value(json!({ "metadata": { "name": "b" }, "spec": {} })).expect("lease");
        assert_eq!(LeaseTimes::from_lease(&empty), None);
    }

    #[test]
    fn draining_comes_from_the_ready_condition() {
        let mut b = board("a");
        let facts = BoardFacts::new(&b, lease(0, 40), None, at(1));
        assert!(facts.schedulable());
        if let Some(status) = b.status.as_mut() {
            status.conditions[0].status = "False".into();
            status.conditions[0].reason = REASON_DRAINING.into();
        }
        let facts = BoardFacts::new(&b, lease(0, 40), None, at(1));
        assert!(facts.draining && !facts.schedulable());
    }

    #[test]
    fn pending_writes_overlay_the_spec() {
        let mut b = board("a");
        b.spec.models = vec![
            serde_json::from_value(json!({
                "key": "ns/old", "model": "old", "format": "gguf", "source": { "url": "file:///m" }
            }))
            .expect("entry"),
        ];
        let mut pending = BTreeMap::new();
        let since = std::time::Instant::now();
        pending.insert("ns/old".to_owned(), PendingWrite { entry: None, since });
        let mut added: BoardModel = b.spec.models[0].clone();
        added.key = "ns/new".into();
        pending.insert("ns/new".to_owned(), PendingWrite { entry: Some(added), since });
        let facts = BoardFacts::new(&b, lease(0, 40), Some(&pending), at(1));
        let keys: Vec<_> = facts.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["ns/new"]);
    }

    #[test]
    fn readiness_needs_phase_loaded_and_revision() {
        let mut b = board("a");
        if let Some(status) = b.status.as_mut() {
            status.models = vec![
                serde_json::from_value(json!({
                    "key": "ns/m", "phase": "Ready", "loaded": true, "revision": "r1", "sha256": "aa"
                }))
                .expect("model"),
            ];
        }
        let facts = BoardFacts::new(&b, lease(0, 40), None, at(1));
        assert!(facts.ready_at("ns/m", Some("r1")));
        assert!(!facts.ready_at("ns/m", Some("r2")), "an older revision is not ready");
        assert!(!facts.ready_at("ns/other", Some("r1")));
        assert!(facts.holds_blob("aa") && !facts.holds_blob("bb"));
    }

    #[test]
    fn lease_expired_mark_only_on_transition() {
        let b = board("a");
        assert!(!needs_lease_expired_mark(&b, lease(0, 40), at(10)));
        assert!(needs_lease_expired_mark(&b, lease(0, 40), at(41)));
        let mut marked = b.clone();
        if let Some(status) = marked.status.as_mut() {
            status.conditions[0].status = "False".into();
            status.conditions[0].reason = REASON_LEASE_EXPIRED.into();
        }
        assert!(!needs_lease_expired_mark(&marked, lease(0, 40), at(41)), "already marked");
        // No Lease at all: only once the board is older than one lease period.
        assert!(needs_lease_expired_mark(&b, None, at(0)), "created long before `at`");
        let mut young = b;
        young.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(-5)));
        assert!(!needs_lease_expired_mark(&young, None, at(0)));
    }
}
