//! Replica selection, pure: given the boards that serve a model and their load, which one gets the
//! next request, and why. No I/O and no clock; randomness comes in as a function so tests are
//! deterministic. The gateway's proxy (I/O) calls [`pick`] per request.
//!
//! - `LeastLoad`: fewest (in flight + queued) relative to the board's slots; ties are broken at
//!   random (two random choices among the tied), never "always the first".
//! - `PrefixAffinity`: consistent hashing with bounded loads (CHWBL). Each board owns
//!   [`VNODES`] points on a hash ring; a request's key (its routing header, else its prompt prefix)
//!   lands on the ring and walks clockwise to the first board whose load is under the cap.
//!   Two known failure modes are designed out: too few virtual nodes (a few boards then share
//!   unevenly — 256 per board keep them within a few percent), and a cap that collapses with many
//!   boards and one hot prefix (cap = mean load × factor, but never below the board's own slots).
//! - `RoundRobin`: boards in turn.

use std::fmt;

use crds::RoutingStrategy;

/// Virtual nodes per board on the CHWBL ring.
pub const VNODES: u32 = 256;
/// CHWBL load factor: a board may carry up to this many times the mean load before a request
/// spills over to the next board on the ring.
pub const LOAD_FACTOR: f64 = 1.25;

/// One candidate board and its load, as the gateway sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub board: String,
    /// Requests the gateway has sent and not seen finish.
    pub in_flight: u32,
    /// Requests waiting on the board, as it last reported.
    pub queued: u32,
    /// Sequences the board generates at once for this model (`nBatch` / parallel slots), ≥ 1.
    pub slots: u32,
}

impl Candidate {
    fn load(&self) -> u32 {
        self.in_flight + self.queued
    }

    /// Load relative to capacity, compared without floating point: a/b < c/d ⇔ a·d < c·b.
    fn relative_cmp(&self, other: &Self) -> std::cmp::Ordering {
        (u64::from(self.load()) * u64::from(other.slots.max(1)))
            .cmp(&(u64::from(other.load()) * u64::from(self.slots.max(1))))
    }
}

/// Why a board was chosen (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// LeastLoad: the least loaded board.
    LeastLoaded,
    /// PrefixAffinity: the key's own board, under its cap.
    AffinityHit,
    /// PrefixAffinity: the key's board was over its cap; the next one on the ring took it.
    SpillOver,
    /// RoundRobin: its turn.
    Turn,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeastLoaded => "least_loaded",
            Self::AffinityHit => "affinity_hit",
            Self::SpillOver => "spill_over",
            Self::Turn => "turn",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request brings to the choice.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// For PrefixAffinity: the routing key (header) or the prompt prefix.
    pub key: &'a str,
    /// For RoundRobin: a counter the caller advances per request.
    pub turn: u64,
}

/// The board for the next request (an index into `candidates`), or `None` when there is none.
pub fn pick(
    strategy: RoutingStrategy,
    candidates: &[Candidate],
    ask: Ask<'_>,
    random: &mut dyn FnMut() -> u64,
) -> Option<(usize, Reason)> {
    if candidates.is_empty() {
        return None;
    }
    match strategy {
        RoutingStrategy::LeastLoad => least_load(candidates, random).map(|i| (i, Reason::LeastLoaded)),
        RoutingStrategy::PrefixAffinity => Some(chwbl(candidates, ask.key)),
        RoutingStrategy::RoundRobin => {
            let i = usize::try_from(ask.turn % candidates.len() as u64).unwrap_or(0);
            Some((i, Reason::Turn))
        }
    }
}

/// The least loaded board relative to its slots; among equals, the better of two random picks.
pub fn least_load(candidates: &[Candidate], random: &mut dyn FnMut() -> u64) -> Option<usize> {
    let best = candidates.iter().min_by(|a, b| a.relative_cmp(b))?;
    let tied: Vec<usize> =
        (0..candidates.len()).filter(|&i| candidates[i].relative_cmp(best) == std::cmp::Ordering::Equal).collect();
    let draw = |r: u64| tied[usize::try_from(r % tied.len() as u64).unwrap_or(0)];
    let (a, b) = (draw(random()), draw(random()));
    // Tied in relative load: prefer more free slots, then either.
    let free = |i: usize| candidates[i].slots.saturating_sub(candidates[i].load());
    Some(if free(b) > free(a) { b } else { a })
}

/// 64-bit FNV-1a followed by a SplitMix64 finaliser: stable across processes and releases (the
/// ring must agree between gateway replicas), and well spread for short similar strings.
pub fn hash64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The CHWBL ring of these boards: (point, candidate index), sorted by point.
fn ring(candidates: &[Candidate]) -> Vec<(u64, usize)> {
    let mut points: Vec<(u64, usize)> = candidates
        .iter()
        .enumerate()
        .flat_map(|(i, c)| (0..VNODES).map(move |v| (hash64(format!("{}#{v}", c.board).as_bytes()), i)))
        .collect();
    points.sort_unstable();
    points
}

/// The highest load a board may carry before a request spills over: the mean load (counting this
/// request) times [`LOAD_FACTOR`], rounded up, and never below the board's own slots — so one hot
/// key over many idle boards still fills its board's slots before spilling.
pub fn load_cap(candidates: &[Candidate], c: &Candidate) -> u32 {
    let total: u64 = candidates.iter().map(|c| u64::from(c.load())).sum::<u64>() + 1;
    let mean = total as f64 / candidates.len() as f64;
    let cap = (mean * LOAD_FACTOR).ceil() as u32;
    cap.max(c.slots.max(1))
}

/// Consistent hashing with bounded loads.
pub fn chwbl(candidates: &[Candidate], key: &str) -> (usize, Reason) {
    let points = ring(candidates);
    let h = hash64(key.as_bytes());
    let start = points.partition_point(|(p, _)| *p < h);
    let mut seen = vec![false; candidates.len()];
    let mut first = None;
    for k in 0..points.len() {
        let (_, i) = points[(start + k) % points.len()];
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let c = &candidates[i];
        if first.is_none() {
            first = Some(i);
        }
        if c.load() < load_cap(candidates, c) {
            return (i, if Some(i) == first { Reason::AffinityHit } else { Reason::SpillOver });
        }
    }
    // Every board is at its cap: the key's own board (it queues there).
    (first.unwrap_or(0), Reason::AffinityHit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(board: &str, in_flight: u32, queued: u32, slots: u32) -> Candidate {
        Candidate { board: board.into(), in_flight, queued, slots }
    }

    /// A deterministic xorshift for tests.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    #[test]
    fn least_load_is_relative_to_slots() {
        // b: 3 of 4 slots busy (0.75) beats a: 1 of 1 (1.0).
        let cs = [c("a", 1, 0, 1), c("b", 2, 1, 4)];
        assert_eq!(least_load(&cs, &mut rng(1)), Some(1));
        // Queued requests count as load.
        let cs = [c("a", 0, 2, 1), c("b", 1, 0, 1)];
        assert_eq!(least_load(&cs, &mut rng(1)), Some(1));
    }

    #[test]
    fn least_load_ties_are_not_always_the_first_board() {
        let cs = [c("a", 0, 0, 1), c("b", 0, 0, 1), c("c", 0, 0, 1), c("d", 5, 0, 1)];
        let mut r = rng(7);
        let mut hits = [0u32; 4];
        for _ in 0..3000 {
            hits[least_load(&cs, &mut r).unwrap()] += 1;
        }
        assert_eq!(hits[3], 0, "the loaded board is never chosen");
        for h in &hits[..3] {
            assert!((700..1300).contains(h), "tied boards share: {hits:?}");
        }
    }

    #[test]
    fn round_robin_takes_turns() {
        let cs = [c("a", 9, 0, 1), c("b", 0, 0, 1), c("c", 0, 0, 1)];
        let got: Vec<usize> = (0..6)
            .map(|t| pick(RoutingStrategy::RoundRobin, &cs, Ask { key: "", turn: t }, &mut rng(1)).unwrap().0)
            .collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2]);
        assert_eq!(pick(RoutingStrategy::RoundRobin, &[], Ask { key: "", turn: 0 }, &mut rng(1)), None);
    }

    #[test]
    fn the_ring_shares_keys_evenly_among_a_few_boards() {
        let cs = [c("board-1", 0, 0, 1), c("board-2", 0, 0, 1), c("board-3", 0, 0, 1)];
        let mut hits = [0u32; 3];
        for k in 0..30_000 {
            hits[chwbl(&cs, &format!("You are a helpful assistant. Conversation {k}")).0] += 1;
        }
        for h in hits {
            assert!((8_500..11_500).contains(&h), "uneven ring with {VNODES} vnodes per board: {hits:?}");
        }
    }

    #[test]
    fn a_key_sticks_to_its_board_and_moves_little_when_a_board_leaves() {
        let four: Vec<Candidate> = (1..=4).map(|i| c(&format!("b{i}"), 0, 0, 1)).collect();
        let three = &four[..3];
        let keys: Vec<String> = (0..2000).map(|k| format!("session-{k}")).collect();
        let mut moved = 0;
        for k in &keys {
            let a = &four[chwbl(&four, k).0].board;
            assert_eq!(a, &four[chwbl(&four, k).0].board, "stable");
            let b = &three[chwbl(three, k).0].board;
            if a != b {
                moved += 1;
                assert_eq!(a, "b4", "only keys of the board that left move");
            }
        }
        assert!((300..700).contains(&moved), "about a quarter of the keys move: {moved}");
    }

    #[test]
    fn a_hot_key_spills_over_once_its_board_is_over_the_cap() {
        let key = "the same long system prompt";
        let idle: Vec<Candidate> = (1..=3).map(|i| c(&format!("b{i}"), 0, 0, 1)).collect();
        let (home, reason) = chwbl(&idle, key);
        assert_eq!(reason, Reason::AffinityHit);
        let mut busy = idle.clone();
        busy[home].in_flight = 3; // mean (3+1)/3 × 1.25 → cap 2: over it
        let (other, reason) = chwbl(&busy, key);
        assert_ne!(other, home);
        assert_eq!(reason, Reason::SpillOver);
    }

    #[test]
    fn the_cap_does_not_collapse_with_many_boards() {
        // 300 idle boards and one hot key: mean load ≈ 0, but the key's board still takes up to
        // its slots before spilling (the bug of a cap of (total+1)/N × factor → 1).
        let mut cs: Vec<Candidate> = (0..300).map(|i| c(&format!("b{i}"), 0, 0, 4)).collect();
        let key = "hot prefix";
        let (home, _) = chwbl(&cs, key);
        for n in 1..4 {
            cs[home].in_flight = n;
            assert_eq!(chwbl(&cs, key), (home, Reason::AffinityHit), "load {n} of 4 slots");
        }
        cs[home].in_flight = 4;
        assert_eq!(chwbl(&cs, key).1, Reason::SpillOver);
    }

    #[test]
    fn hashes_are_pinned() {
        // The ring must agree across gateway replicas and releases: these values never change.
        assert_eq!(hash64(b"board-1#0"), 0x87d2_9dd4_ca01_28f9);
        assert_eq!(hash64(b""), 0xf52a_15e9_a9b5_e89b);
    }
}
