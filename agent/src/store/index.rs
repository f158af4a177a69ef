//! The store's name index (`<models-dir>/index.json`): which blob a pulled file name or a
//! cluster assignment refers to, and when each was last used (for LRU eviction). Written
//! atomically (temp file, fsync, rename); a blob without a name is garbage.

use std::{
    collections::{BTreeMap, HashSet},
    io::Write,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "index.json";

/// One name → blob mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub sha256: String,
    pub size: u64,
    /// The file name the blob had at its source (`.gguf` / `.rkllm` says the format).
    pub file_name: String,
    /// Unix seconds of the last assignment or load, for LRU eviction.
    #[serde(default)]
    pub last_used: u64,
}

/// The whole index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Pulled with `/api/pull`, by file name: served as models, never evicted.
    #[serde(default)]
    pub files: BTreeMap<String, IndexEntry>,
    /// Fetched for a cluster assignment, by ModelDeployment key (`<namespace>/<name>`): served
    /// only while assigned, evicted LRU beyond the store budget once unassigned.
    #[serde(default)]
    pub cluster: BTreeMap<String, IndexEntry>,
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Index {
    /// Reads the index of `dir`; empty when absent. A corrupt index is logged and treated as
    /// empty (the blobs stay; re-assignment finds them by digest).
    pub fn read(dir: &Path) -> Self {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "unreadable store index; starting empty");
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    /// Writes atomically: a crash leaves the old or the new index, never half of one.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(FILE))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Whether any name refers to `sha256`.
    pub fn referenced(&self, sha256: &str) -> bool {
        self.files.values().chain(self.cluster.values()).any(|e| e.sha256 == sha256)
    }

    /// Blobs to delete so the complete blobs fit in `budget` bytes: unnamed blobs first, then
    /// cluster blobs not in `keep` (assigned now) by least recent use. Pulled files and kept
    /// blobs are never chosen, even if the budget stays exceeded.
    pub fn evictions(&self, blobs: &[(String, u64)], budget: u64, keep: &HashSet<String>) -> Vec<String> {
        let mut total: u64 = blobs.iter().map(|(_, s)| s).sum();
        let pulled: HashSet<&str> = self.files.values().map(|e| e.sha256.as_str()).collect();
        let last_used = |sha: &str| self.cluster.values().filter(|e| e.sha256 == sha).map(|e| e.last_used).max();
        let mut candidates: Vec<(Option<u64>, &str, u64)> = blobs
            .iter()
            .filter(|(sha, _)| !pulled.contains(sha.as_str()) && !keep.contains(sha))
            .map(|(sha, size)| (last_used(sha), sha.as_str(), *size))
            .collect();
        // None (unnamed) sorts first, then oldest use; the digest breaks ties so it is stable.
        candidates.sort();
        let mut out = Vec::new();
        for (_, sha, size) in candidates {
            if total <= budget {
                break;
            }
            total -= size;
            out.push(sha.to_owned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(sha: &str, used: u64) -> IndexEntry {
        IndexEntry { sha256: sha.into(), size: 10, file_name: "m.gguf".into(), last_used: used }
    }

    #[test]
    fn evicts_unnamed_then_least_recently_used_never_pulled_or_kept() {
        let mut idx = Index::default();
        idx.files.insert("p.gguf".into(), e("p", 0));
        idx.cluster.insert("ns/old".into(), e("old", 1));
        idx.cluster.insert("ns/new".into(), e("new", 9));
        idx.cluster.insert("ns/kept".into(), e("kept", 0));
        let blobs: Vec<(String, u64)> =
            ["p", "old", "new", "kept", "orphan"].iter().map(|s| ((*s).to_owned(), 10)).collect();
        let keep: HashSet<String> = ["kept".to_owned()].into();
        assert_eq!(idx.evictions(&blobs, 50, &keep), Vec::<String>::new());
        assert_eq!(idx.evictions(&blobs, 40, &keep), ["orphan"]);
        assert_eq!(idx.evictions(&blobs, 30, &keep), ["orphan", "old"]);
        // The budget cannot be met without pulled or kept blobs: those stay.
        assert_eq!(idx.evictions(&blobs, 0, &keep), ["orphan", "old", "new"]);
    }

    #[test]
    fn round_trips_atomically() {
        let dir = std::env::temp_dir().join(format!("rl-index-{}", std::process::id()));
        let mut idx = Index::default();
        idx.cluster.insert("a/b".into(), e("x", 3));
        idx.write(&dir).unwrap();
        assert_eq!(Index::read(&dir), idx);
        assert!(idx.referenced("x") && !idx.referenced("y"));
        std::fs::write(dir.join(FILE), b"{not json").unwrap();
        assert_eq!(Index::read(&dir), Index::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
