//! The scheduler's decisions as pure functions of what is resident: which idle models to evict
//! so a new one fits the memory budget, which idle model of an engine goes first when that
//! engine runs out of device memory, and which keep-alives have run out. The scheduler feeds
//! them a snapshot and applies the answer; the tests here need no engine.

use std::time::Instant;

/// What the decisions need to know about one resident model.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    /// Engine that holds it (`Engine::name`).
    pub engine: &'static str,
    /// Bytes it holds (weights plus KV cache as allocated).
    pub bytes: u64,
    /// Outstanding tickets, queued or running. Only models with none may be unloaded.
    pub users: usize,
    pub last_used: Instant,
    /// When an idle model may be unloaded; `None` = never (keep-alive forever, or in use).
    pub expires_at: Option<Instant>,
}

impl Candidate {
    fn idle(&self) -> bool {
        self.users == 0
    }
}

/// Why a model cannot be made room for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoom {
    /// Larger than the whole budget: no eviction can help.
    TooLarge { need: u64, budget: u64 },
    /// It would fit, but the models in the way are in use.
    Busy,
}

/// The idle models to evict, least recently used first, so `need` more bytes fit `budget`.
pub fn make_room(residents: &[Candidate], need: u64, budget: u64) -> Result<Vec<String>, NoRoom> {
    if need > budget {
        return Err(NoRoom::TooLarge { need, budget });
    }
    let mut used: u64 = residents.iter().map(|r| r.bytes).sum();
    let mut idle: Vec<&Candidate> = residents.iter().filter(|r| r.idle()).collect();
    idle.sort_by_key(|r| r.last_used);
    let mut victims = Vec::new();
    let mut idle = idle.into_iter();
    while used + need > budget {
        let Some(v) = idle.next() else { return Err(NoRoom::Busy) };
        used -= v.bytes;
        victims.push(v.name.clone());
    }
    Ok(victims)
}

/// The least recently used idle model held by `engine`: the one to unload when that engine
/// reports it is out of device memory.
pub fn lru_idle_of(residents: &[Candidate], engine: &str) -> Option<String> {
    residents.iter().filter(|r| r.idle() && r.engine == engine).min_by_key(|r| r.last_used).map(|r| r.name.clone())
}

/// Idle models whose keep-alive has run out at `now`, and the earliest expiry still ahead (when
/// to look again).
pub fn expired(residents: &[Candidate], now: Instant) -> (Vec<String>, Option<Instant>) {
    let mut gone = Vec::new();
    let mut next: Option<Instant> = None;
    for r in residents.iter().filter(|r| r.idle()) {
        match r.expires_at {
            Some(at) if at <= now => gone.push(r.name.clone()),
            Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
            None => {}
        }
    }
    (gone, next)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn c(name: &str, bytes: u64, users: usize, age_s: u64, t0: Instant) -> Candidate {
        Candidate {
            name: name.into(),
            engine: "llama.cpp",
            bytes,
            users,
            last_used: t0 + Duration::from_secs(100 - age_s),
            expires_at: None,
        }
    }

    #[test]
    fn make_room_evicts_idle_lru_first_and_only_as_many_as_needed() {
        let t0 = Instant::now();
        let rs = [c("old", 3, 0, 50, t0), c("busy", 3, 1, 90, t0), c("new", 3, 0, 10, t0)];
        assert_eq!(make_room(&rs, 1, 10).unwrap(), Vec::<String>::new(), "9 + 1 fits 10");
        assert_eq!(make_room(&rs, 2, 10).unwrap(), ["old"], "the least recently used idle one goes");
        assert_eq!(make_room(&rs, 5, 10).unwrap(), ["old", "new"]);
        assert_eq!(make_room(&rs, 8, 10), Err(NoRoom::Busy), "the busy one is never evicted");
        assert_eq!(make_room(&rs, 11, 10), Err(NoRoom::TooLarge { need: 11, budget: 10 }));
        assert_eq!(make_room(&[], 10, 10).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn device_memory_eviction_stays_within_the_engine() {
        let t0 = Instant::now();
        let mut npu_old = c("npu-old", 1, 0, 80, t0);
        npu_old.engine = "rkllm";
        let mut npu_busy = c("npu-busy", 1, 2, 99, t0);
        npu_busy.engine = "rkllm";
        let rs = [c("cpu-oldest", 1, 0, 95, t0), npu_old, npu_busy];
        assert_eq!(lru_idle_of(&rs, "rkllm").as_deref(), Some("npu-old"));
        assert_eq!(lru_idle_of(&rs[2..], "rkllm"), None, "in-use models are not candidates");
    }

    #[test]
    fn keep_alive_reaping() {
        let now = Instant::now();
        let at = |s: i64| {
            Some(if s < 0 { now - Duration::from_secs(s.unsigned_abs()) } else { now + Duration::from_secs(s as u64) })
        };
        let mut rs = vec![c("due", 1, 0, 0, now), c("later", 1, 0, 0, now), c("forever", 1, 0, 0, now)];
        rs[0].expires_at = at(-1);
        rs[1].expires_at = at(30);
        let mut in_use = c("in-use", 1, 1, 0, now);
        in_use.expires_at = at(-5);
        rs.push(in_use);
        let (gone, next) = expired(&rs, now);
        assert_eq!(gone, ["due"], "expired and idle only");
        assert_eq!(next, at(30));
        let (gone, next) = expired(&rs[2..], now);
        assert!(gone.is_empty() && next.is_none(), "nothing due: sleep until woken");
    }
}
