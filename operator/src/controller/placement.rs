//! Which boards receive new replicas of a ModelDeployment. Pure: a function of the request and
//! the boards' facts, so every rule has a plain test.
//!
//! A board qualifies when its agent heartbeats (fresh Lease), it is not cordoned or draining,
//! its SoC is one of `spec.socs` (empty: any), its labels match `placement.nodeSelector`, its
//! memory has room for the model next to the other models assigned to it (estimate: file size ×
//! 1.2), and its store has room for the file unless the file is already there. Among qualifying
//! boards the order of preference is:
//!
//! 1. boards that already hold the file (no download) or have this model loaded,
//! 2. the `placement.spreadBy` label value with the fewest replicas of this deployment,
//! 3. the fewest models assigned,
//! 4. the name, so the choice is deterministic.
//!
//! Replicas already placed are never moved by this module; it only fills the gap.

use std::{collections::BTreeMap, fmt};

use super::boards::{BoardFacts, Liveness};

/// What one ModelDeployment asks of a board.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `<namespace>/<name>`, the key of its Board entries.
    pub key: &'a str,
    /// spec.socs; empty means any.
    pub socs: &'a [String],
    /// spec.placement.nodeSelector.
    pub node_selector: &'a BTreeMap<String, String>,
    /// spec.placement.spreadBy.
    pub spread_by: Option<&'a str>,
    /// spec.source.sha256, which names the blob in every board's store.
    pub sha256: Option<&'a str>,
    /// spec.source.sizeBytes; unknown sizes skip the memory and store checks.
    pub size_bytes: Option<i64>,
    /// An `.rkllm` model: it also needs room in one of the board's NPU memory domains.
    pub rkllm: bool,
}

/// Memory a loaded model is expected to take: the file plus 20 % for the KV cache and runtime
/// buffers (RKLLM maps the whole file; the context adds roughly a fifth at typical sizes).
pub fn memory_estimate(size_bytes: Option<i64>) -> i64 {
    size_bytes.map_or(0, |s| s.saturating_add(s / 5))
}

/// Why a board cannot take a new replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Its Lease was not renewed in time.
    LeaseExpired,
    /// It has no Lease: the agent never heartbeated.
    NoLease,
    /// spec.cordoned is true.
    Cordoned,
    /// The agent is shutting down.
    Draining,
    /// Its SoC is not one of spec.socs.
    Soc {
        /// The board's SoC, if known.
        have: Option<String>,
    },
    /// A nodeSelector label does not match.
    Label {
        /// The label key.
        key: String,
        /// The value asked for.
        want: String,
        /// The board's value, if any.
        have: Option<String>,
    },
    /// Not enough memory left after the models already assigned.
    Memory {
        /// Bytes left.
        free: i64,
        /// Bytes this model needs.
        need: i64,
    },
    /// The agent has not reported its memory yet.
    MemoryUnknown,
    /// Not enough free space in the store for the file.
    Store {
        /// Free bytes.
        free: i64,
        /// File size.
        need: i64,
    },
    /// The agent has not reported its store yet.
    StoreUnknown,
    /// No NPU memory domain has room for the model next to the `.rkllm` models already there.
    NpuDomains {
        /// Most free bytes in any one domain.
        largest_free: i64,
        /// File size.
        need: i64,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LeaseExpired => f.write_str("lease expired"),
            Self::NoLease => f.write_str("no lease"),
            Self::Cordoned => f.write_str("cordoned"),
            Self::Draining => f.write_str("draining"),
            Self::Soc { have: Some(soc) } => write!(f, "SoC {soc}"),
            Self::Soc { have: None } => f.write_str("SoC unknown"),
            Self::Label { key, want, have: Some(have) } => write!(f, "label {key}={have}, not {want}"),
            Self::Label { key, .. } => write!(f, "no label {key}"),
            Self::Memory { free, .. } => write!(f, "has {} free", bytes(*free)),
            Self::MemoryUnknown => f.write_str("memory not reported yet"),
            Self::Store { free, .. } => write!(f, "store has {} free", bytes(*free)),
            Self::StoreUnknown => f.write_str("store not reported yet"),
            Self::NpuDomains { largest_free, .. } => {
                write!(f, "NPU memory domains full (largest free {})", bytes(*largest_free))
            }
        }
    }
}

/// Bytes for people: `1.2 GiB`, or `300 MiB` below a tenth of a GiB.
pub fn bytes(n: i64) -> String {
    const GIB: f64 = 1_073_741_824.0;
    #[allow(clippy::cast_precision_loss)] // display only
    let gib = n as f64 / GIB;
    if gib.abs() >= 0.1 { format!("{gib:.1} GiB") } else { format!("{:.0} MiB", gib * 1024.0) }
}

/// The board may run this model at all: its SoC and labels match. A replica on a board that
/// stops matching (spec edited) is drained like one on a cordoned board.
pub fn eligible(req: &Request<'_>, board: &BoardFacts<'_>) -> Result<(), Rejection> {
    if !req.socs.is_empty() && !board.soc.is_some_and(|soc| req.socs.iter().any(|s| s == soc)) {
        return Err(Rejection::Soc { have: board.soc.map(str::to_owned) });
    }
    for (key, want) in req.node_selector {
        let have = board.labels.get(key);
        if have != Some(want) {
            return Err(Rejection::Label { key: key.clone(), want: want.clone(), have: have.cloned() });
        }
    }
    Ok(())
}

/// The board is up and accepts new replicas.
pub fn available(board: &BoardFacts<'_>) -> Result<(), Rejection> {
    match board.liveness {
        Liveness::Expired { .. } => Err(Rejection::LeaseExpired),
        Liveness::NoLease => Err(Rejection::NoLease),
        Liveness::Fresh { .. } if board.cordoned => Err(Rejection::Cordoned),
        Liveness::Fresh { .. } if board.draining => Err(Rejection::Draining),
        Liveness::Fresh { .. } => Ok(()),
    }
}

/// The board has memory and store room for one more replica of this model.
pub fn has_room(req: &Request<'_>, board: &BoardFacts<'_>) -> Result<(), Rejection> {
    let Some(size) = req.size_bytes else { return Ok(()) };
    let need = memory_estimate(Some(size));
    let total = board.memory_total.ok_or(Rejection::MemoryUnknown)?;
    let used: i64 = board
        .entries
        .iter()
        .filter(|e| e.key != req.key && e.desired == crds::DesiredState::Loaded)
        .map(|e| memory_estimate(e.source.size_bytes))
        .sum();
    let free = total.saturating_sub(used);
    if free < need {
        return Err(Rejection::Memory { free, need });
    }
    if let (true, Some((domains, per_domain))) = (req.rkllm, board.npu_domains) {
        let others: Vec<i64> = board
            .entries
            .iter()
            .filter(|e| {
                e.key != req.key && e.desired == crds::DesiredState::Loaded && e.format == crds::ModelFormat::Rkllm
            })
            .map(|e| e.source.size_bytes.unwrap_or(0))
            .collect();
        if let Err(largest_free) = fits_domains(&others, size, domains, per_domain) {
            return Err(Rejection::NpuDomains { largest_free, need: size });
        }
    }
    let cached = req.sha256.is_some_and(|sha| board.holds_blob(sha));
    if !cached {
        let free = board.store_free.ok_or(Rejection::StoreUnknown)?;
        if free < size {
            return Err(Rejection::Store { free, need: size });
        }
    }
    Ok(())
}

/// Whether a model of `need` bytes fits in one of `domains` NPU memory domains of `per_domain`
/// bytes each, next to `others` (packed first-fit, largest first, as the agent's engine packs
/// them); `Err` carries the most free bytes left in any one domain.
pub fn fits_domains(others: &[i64], need: i64, domains: i32, per_domain: i64) -> Result<(), i64> {
    let mut free = vec![per_domain; usize::try_from(domains.max(1)).unwrap_or(1)];
    let mut sorted = others.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    for size in sorted {
        // A model that fits nowhere is where the agent put it anyway: count it in the emptiest.
        let i = free
            .iter()
            .position(|&f| f >= size)
            .unwrap_or_else(|| free.iter().enumerate().max_by_key(|(_, f)| **f).map_or(0, |(i, _)| i));
        free[i] -= size;
    }
    let largest = free.iter().copied().max().unwrap_or(0);
    if largest >= need { Ok(()) } else { Err(largest.max(0)) }
}

/// Every check a new replica must pass, in the order a user would fix them.
pub fn check(req: &Request<'_>, board: &BoardFacts<'_>) -> Result<(), Rejection> {
    available(board)?;
    eligible(req, board)?;
    has_room(req, board)
}

/// The outcome of filling the gap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Boards picked for new replicas, best first.
    pub chosen: Vec<String>,
    /// Set when fewer boards qualified than needed.
    pub shortfall: Option<Shortfall>,
}

/// Not enough boards qualified; says why each other board was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// Replicas asked for.
    pub wanted: usize,
    /// Replicas that have a board (kept plus chosen).
    pub placed: usize,
    /// spec.socs, for the message.
    pub socs: Vec<String>,
    /// nodeSelector, for the message.
    pub node_selector: BTreeMap<String, String>,
    /// Memory the model needs, when its size is known.
    pub need: Option<i64>,
    /// Each rejected board with its reason, by name.
    pub rejected: Vec<(String, Rejection)>,
}

/// How many rejected boards a message names before it only counts the rest (condition messages
/// are read in `kubectl describe`; a 300-board list helps nobody).
const NAMED_REJECTIONS: usize = 8;

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "placed {} of {} replicas: ", self.placed, self.wanted)?;
        if self.rejected.is_empty() {
            return f.write_str("no other Board exists (each agent creates its Board when it starts)");
        }
        f.write_str(if self.placed > 0 { "no other board" } else { "no board" })?;
        match self.socs.as_slice() {
            [] => {}
            [one] => write!(f, " with SoC {one}")?,
            many => write!(f, " with SoC {}", many.join(" or "))?,
        }
        if !self.node_selector.is_empty() {
            let labels: Vec<_> = self.node_selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, " labelled {}", labels.join(","))?;
        }
        match self.need {
            Some(need) => write!(f, " has {} free", bytes(need))?,
            None => f.write_str(" is available")?,
        }
        f.write_str(": ")?;
        let named: Vec<_> = self.rejected.iter().take(NAMED_REJECTIONS).map(|(b, r)| format!("{b} {r}")).collect();
        f.write_str(&named.join("; "))?;
        if self.rejected.len() > NAMED_REJECTIONS {
            write!(f, " (and {} more)", self.rejected.len() - NAMED_REJECTIONS)?;
        }
        Ok(())
    }
}

/// Picks `count` boards for new replicas. `kept` are the boards keeping a replica (they count
/// for spreading), `occupied` every board that already has an entry for this deployment
/// (kept, draining or otherwise): those are never picked again.
pub fn choose(req: &Request<'_>, boards: &[BoardFacts<'_>], kept: &[&str], occupied: &[&str], count: usize) -> Choice {
    let mut candidates = Vec::new();
    let mut rejected = Vec::new();
    for board in boards.iter().filter(|b| !occupied.contains(&b.name)) {
        match check(req, board) {
            Ok(()) => candidates.push(board),
            Err(why) => rejected.push((board.name.to_owned(), why)),
        }
    }
    let spread_value = |b: &BoardFacts<'_>| req.spread_by.map(|key| b.labels.get(key).cloned().unwrap_or_default());
    // Replicas per spreadBy value among the boards that will hold one.
    let mut per_value: BTreeMap<Option<String>, usize> = BTreeMap::new();
    for board in boards.iter().filter(|b| kept.contains(&b.name)) {
        *per_value.entry(spread_value(board)).or_default() += 1;
    }
    let mut chosen = Vec::new();
    while chosen.len() < count && !candidates.is_empty() {
        let best = candidates
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| {
                let warm =
                    req.sha256.is_some_and(|sha| b.holds_blob(sha)) || b.reported(req.key).is_some_and(|m| m.loaded);
                let spread =
                    if req.spread_by.is_some() { per_value.get(&spread_value(b)).copied().unwrap_or(0) } else { 0 };
                (!warm, spread, b.assigned(), b.name)
            })
            .map(|(i, _)| i);
        let Some(best) = best else { break };
        let board = candidates.swap_remove(best);
        *per_value.entry(spread_value(board)).or_default() += 1;
        chosen.push(board.name.to_owned());
    }
    rejected.sort_by(|a, b| a.0.cmp(&b.0));
    let placed = kept.len() + chosen.len();
    let wanted = kept.len() + count;
    let shortfall = (placed < wanted).then(|| Shortfall {
        wanted,
        placed,
        socs: req.socs.to_vec(),
        node_selector: req.node_selector.clone(),
        need: req.size_bytes.map(|s| memory_estimate(Some(s))),
        rejected,
    });
    Choice { chosen, shortfall }
}

#[cfg(test)]
mod tests {
    use crds::Board;
    use serde_json::json;

    use super::{
        super::boards::tests::{at, board, lease},
        *,
    };

    const GIB: i64 = 1 << 30;
    const SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn facts(boards: &[Board]) -> Vec<BoardFacts<'_>> {
        boards.iter().map(|b| BoardFacts::new(b, lease(0, 40), None, at(1))).collect()
    }

    fn request<'a>(socs: &'a [String], selector: &'a BTreeMap<String, String>) -> Request<'a> {
        Request {
            key: "ns/m",
            socs,
            node_selector: selector,
            spread_by: None,
            sha256: Some(SHA),
            size_bytes: Some(GIB),
            rkllm: false,
        }
    }

    fn entry(key: &str, size: i64) -> crds::BoardModel {
        serde_json::from_value(json!({
            "key": key, "model": key, "format": "gguf",
            "source": { "url": "http://o/m", "sha256": SHA, "sizeBytes": size }
        }))
        .expect("entry")
    }

    fn holding(mut b: Board, sha: &str) -> Board {
        if let Some(s) = b.status.as_mut() {
            s.models.push(
                serde_json::from_value(json!({ "key": "other/x", "sha256": sha, "phase": "Cached" })).expect("model"),
            );
        }
        b
    }

    #[test]
    fn npu_domains_are_packed_first_fit() {
        // Two 4 GiB domains: 3 + 3 GiB leave 1 GiB each, so 2 GiB fits nowhere.
        assert_eq!(fits_domains(&[3 * GIB, 3 * GIB], 2 * GIB, 2, 4 * GIB), Err(GIB));
        assert_eq!(fits_domains(&[3 * GIB], 2 * GIB, 2, 4 * GIB), Ok(()));
        // Memory in total would fit (2 GiB free) but not in one domain.
        assert_eq!(fits_domains(&[3 * GIB, 3 * GIB], GIB, 2, 4 * GIB), Ok(()));
        assert_eq!(fits_domains(&[], 5 * GIB, 2, 4 * GIB), Err(4 * GIB));
    }

    #[test]
    fn memory_estimate_adds_a_fifth() {
        assert_eq!(memory_estimate(Some(1000)), 1200);
        assert_eq!(memory_estimate(None), 0);
    }

    #[test]
    fn each_filter_rejects_with_its_reason() {
        let socs = vec!["rk3588".to_owned()];
        let selector = BTreeMap::from([("zone".to_owned(), "a".to_owned())]);
        let req = request(&socs, &selector);
        let mut base = board("b");
        base.metadata.labels.get_or_insert_default().insert("zone".into(), "a".into());
        let ok = BoardFacts::new(&base, lease(0, 40), None, at(1));
        assert_eq!(check(&req, &ok), Ok(()));

        assert_eq!(check(&req, &BoardFacts::new(&base, lease(0, 40), None, at(50))), Err(Rejection::LeaseExpired));
        assert_eq!(check(&req, &BoardFacts::new(&base, None, None, at(1))), Err(Rejection::NoLease));

        let mut cordoned = base.clone();
        cordoned.spec.cordoned = true;
        assert_eq!(check(&req, &BoardFacts::new(&cordoned, lease(0, 40), None, at(1))), Err(Rejection::Cordoned));

        let mut other_soc = base.clone();
        if let Some(s) = other_soc.status.as_mut() {
            s.soc = Some("rk3566".into());
        }
        let got = check(&req, &BoardFacts::new(&other_soc, lease(0, 40), None, at(1)));
        assert_eq!(got, Err(Rejection::Soc { have: Some("rk3566".into()) }));

        let mut other_zone = base.clone();
        other_zone.metadata.labels.get_or_insert_default().insert("zone".into(), "b".into());
        let got = check(&req, &BoardFacts::new(&other_zone, lease(0, 40), None, at(1)));
        assert_eq!(got.map_err(|r| r.to_string()), Err("label zone=b, not a".to_owned()));

        // 8 GiB total; six other 1 GiB models take 7.2 GiB, leaving 0.8 GiB for 1.2 GiB.
        let mut full = base.clone();
        full.spec.models = (0..6).map(|i| entry(&format!("ns/o{i}"), GIB)).collect();
        let got = check(&req, &BoardFacts::new(&full, lease(0, 40), None, at(1)));
        assert!(matches!(got, Err(Rejection::Memory { need, .. }) if need == memory_estimate(Some(GIB))), "{got:?}");
        assert_eq!(got.map_err(|r| r.to_string()), Err("has 0.8 GiB free".to_owned()));

        let mut small_store = base.clone();
        if let Some(s) = small_store.status.as_mut() {
            s.store = Some(crds::StoreInfo { total_bytes: GIB, free_bytes: GIB / 2 });
        }
        let got = check(&req, &BoardFacts::new(&small_store, lease(0, 40), None, at(1)));
        assert_eq!(got, Err(Rejection::Store { free: GIB / 2, need: GIB }));
        // The store check is skipped when the blob is already there.
        let cached = holding(small_store, SHA);
        assert_eq!(check(&req, &BoardFacts::new(&cached, lease(0, 40), None, at(1))), Ok(()));

        let mut silent = base;
        if let Some(s) = silent.status.as_mut() {
            s.memory = None;
        }
        let got = check(&req, &BoardFacts::new(&silent, lease(0, 40), None, at(1)));
        assert_eq!(got, Err(Rejection::MemoryUnknown));
    }

    #[test]
    fn cached_entries_do_not_count_against_memory() {
        let (socs, selector) = (vec![], BTreeMap::new());
        let req = request(&socs, &selector);
        let mut b = board("b");
        b.spec.models = (0..6).map(|i| entry(&format!("ns/o{i}"), GIB)).collect();
        for e in &mut b.spec.models {
            e.desired = crds::DesiredState::Cached;
        }
        assert_eq!(check(&req, &BoardFacts::new(&b, lease(0, 40), None, at(1))), Ok(()));
    }

    #[test]
    fn prefers_boards_holding_the_blob_then_fewest_models_then_name() {
        let (socs, selector) = (vec![], BTreeMap::new());
        let req = request(&socs, &selector);
        let mut busy = board("a");
        busy.spec.models = vec![entry("ns/x", 1)];
        let boards = vec![busy, board("c"), board("b"), holding(board("d"), SHA)];
        let f = facts(&boards);
        let choice = choose(&req, &f, &[], &[], 3);
        assert_eq!(choice.chosen, ["d", "b", "c"]);
        assert_eq!(choice.shortfall, None);
    }

    #[test]
    fn loaded_model_counts_as_warm() {
        let (socs, selector) = (vec![], BTreeMap::new());
        let req = request(&socs, &selector);
        let mut warm = board("z");
        if let Some(s) = warm.status.as_mut() {
            s.models
                .push(serde_json::from_value(json!({ "key": "ns/m", "phase": "Ready", "loaded": true })).expect("m"));
        }
        let boards = vec![board("a"), warm];
        assert_eq!(choose(&req, &facts(&boards), &[], &[], 1).chosen, ["z"]);
    }

    #[test]
    fn spreads_over_label_values() {
        let (socs, selector) = (vec![], BTreeMap::new());
        let mut req = request(&socs, &selector);
        req.spread_by = Some("zone");
        let zoned = |name: &str, zone: &str| {
            let mut b = board(name);
            b.metadata.labels.get_or_insert_default().insert("zone".into(), zone.into());
            b
        };
        let boards = vec![zoned("a1", "a"), zoned("a2", "a"), zoned("a3", "a"), zoned("b1", "b"), zoned("b2", "b")];
        let f = facts(&boards);
        // a1 already holds a replica: next go to b, then alternate.
        let choice = choose(&req, &f, &["a1"], &["a1"], 3);
        assert_eq!(choice.chosen, ["b1", "a2", "b2"]);
    }

    #[test]
    fn never_picks_an_occupied_board() {
        let (socs, selector) = (vec![], BTreeMap::new());
        let req = request(&socs, &selector);
        let boards = vec![board("a"), board("b")];
        let choice = choose(&req, &facts(&boards), &["a"], &["a"], 1);
        assert_eq!(choice.chosen, ["b"]);
        let choice = choose(&req, &facts(&boards), &["a"], &["a", "b"], 1);
        assert!(choice.chosen.is_empty());
        assert_eq!(
            choice.shortfall.map(|s| s.to_string()).as_deref(),
            Some("placed 1 of 2 replicas: no other Board exists (each agent creates its Board when it starts)")
        );
    }

    #[test]
    fn shortfall_says_why_each_board_was_rejected() {
        let socs = vec!["rk3588".to_owned()];
        let selector = BTreeMap::new();
        let req = request(&socs, &selector);
        let mut full = board("board-2");
        full.spec.models = (0..6).map(|i| entry(&format!("ns/o{i}"), GIB)).collect();
        let mut cordoned = board("board-3");
        cordoned.spec.cordoned = true;
        let mut other = board("board-4");
        if let Some(s) = other.status.as_mut() {
            s.soc = Some("rk3566".into());
        }
        let boards = vec![full, cordoned, other];
        let choice = choose(&req, &facts(&boards), &[], &[], 1);
        assert!(choice.chosen.is_empty());
        assert_eq!(
            choice.shortfall.map(|s| s.to_string()).as_deref(),
            Some(
                "placed 0 of 1 replicas: no board with SoC rk3588 has 1.2 GiB free: board-2 has 0.8 GiB \
                 free; board-3 cordoned; board-4 SoC rk3566"
            )
        );
    }

    #[test]
    fn long_rejection_lists_are_cut() {
        let (socs, selector) = (vec![], BTreeMap::new());
        let mut req = request(&socs, &selector);
        req.size_bytes = None;
        let boards: Vec<_> = (0..12)
            .map(|i| {
                let mut b = board(&format!("b{i:02}"));
                b.spec.cordoned = true;
                b
            })
            .collect();
        let text = choose(&req, &facts(&boards), &[], &[], 1).shortfall.map(|s| s.to_string()).unwrap_or_default();
        assert!(text.starts_with("placed 0 of 1 replicas: no board is available: b00 cordoned;"), "{text}");
        assert!(text.ends_with("b07 cordoned (and 4 more)"), "{text}");
    }

    #[test]
    fn bytes_are_readable() {
        assert_eq!(bytes(GIB + GIB / 5), "1.2 GiB");
        assert_eq!(bytes(300 << 20), "0.3 GiB");
        assert_eq!(bytes(50 << 20), "50 MiB");
    }
}
