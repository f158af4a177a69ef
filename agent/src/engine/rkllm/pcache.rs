//! On-disk prompt caches (docs/rkllm-abi.md §11, docs/npu.md): one file per (model file, system prompt, tools), created
//! by the first run of a conversation with that prefix and loaded with
//! `rkllm_load_prompt_cache` before later conversations that share it, so a long system prompt
//! is prefilled once per board rather than once per conversation. Bounded by file count, least
//! recently used first (mtime, refreshed on every use).

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct PromptCacheDir {
    pub dir: PathBuf,
    pub max_files: usize,
}

impl PromptCacheDir {
    /// The file for a prefix of `model`.
    pub fn path_for(&self, model: &Path, system: &str, tools: Option<&str>) -> PathBuf {
        let mut h = Sha256::new();
        for part in [model.to_string_lossy().as_ref(), "\0", system, "\0", tools.unwrap_or_default()] {
            h.update(part.as_bytes());
        }
        let stem = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        self.dir.join(format!("{stem}-{}.prompt-cache", &hex::encode(h.finalize())[..16]))
    }

    /// Marks a file used now (LRU order).
    pub fn touch(&self, p: &Path) {
        if let Ok(f) = std::fs::File::options().append(true).open(p) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Removes the least recently used files beyond the bound; returns how many.
    pub fn prune(&self) -> usize {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut files: Vec<(SystemTime, PathBuf)> = rd
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "prompt-cache"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if files.len() <= self.max_files {
            return 0;
        }
        files.sort();
        let n = files.len() - self.max_files;
        files.iter().take(n).filter(|(_, p)| std::fs::remove_file(p).is_ok()).count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keys_and_lru_bound() {
        let dir = std::env::temp_dir().join(format!("rl-pcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let c = PromptCacheDir { dir: dir.clone(), max_files: 2 };
        let m = Path::new("/m/Qwen3.rkllm");
        let a = c.path_for(m, "sys A", None);
        assert_ne!(a, c.path_for(m, "sys B", None));
        assert_ne!(a, c.path_for(m, "sys A", Some("[]")));
        assert!(a.file_name().unwrap().to_string_lossy().starts_with("Qwen3-"));
        let files: Vec<PathBuf> = (0..3).map(|i| c.path_for(m, &format!("s{i}"), None)).collect();
        for (i, f) in files.iter().enumerate() {
            std::fs::write(f, b"x").unwrap();
            let t = SystemTime::now() - Duration::from_secs(100 - i as u64 * 10);
            std::fs::File::options().append(true).open(f).unwrap().set_modified(t).unwrap();
        }
        c.touch(&files[0]);
        assert_eq!(c.prune(), 1);
        assert!(files[0].exists() && !files[1].exists() && files[2].exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
