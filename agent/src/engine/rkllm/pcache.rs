//! On-disk prompt caches (docs/rkllm-abi.md §11, docs/npu.md): one file per (model file, system prompt, tools), created
//! by the first run of a conversation with that prefix and loaded with
//! `rkllm_load_prompt_cache` before later conversations that share it, so a long system prompt
//! is prefilled once per board rather than once per conversation. Bounded by file count, least
//! recently used first (mtime, refreshed on every use).
//!
//! Beside a file, `<file>.tokens` holds the length in tokens of the system part it supplies, as
//! the runtime measured it (docs/npu.md): loading the file reuses those tokens, and `cached_tokens`
//! says so. The runtime's files are opaque and it has no tokenizer API, so that length is learnt
//! from the KV cache while the system part is in it, and kept for later loads and restarts.

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

    /// Tokens of the system part `file` supplies, once measured.
    pub fn system_tokens(&self, file: &Path) -> Option<u32> {
        std::fs::read_to_string(tokens_path(file)).ok()?.trim().parse().ok()
    }

    /// Records the measured length of `file`'s system part (written atomically).
    pub fn set_system_tokens(&self, file: &Path, n: u32) {
        let path = tokens_path(file);
        let tmp = path.with_extension("tokens.tmp");
        if let Err(e) = std::fs::write(&tmp, format!("{n}\n")).and_then(|()| std::fs::rename(&tmp, &path)) {
            tracing::warn!(file = %path.display(), error = %e, "cannot record the prompt-cache length");
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Removes the least recently used files beyond the bound, and lengths whose file is gone;
    /// returns how many files.
    pub fn prune(&self) -> usize {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return 0 };
        let all: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        let mut files: Vec<(SystemTime, PathBuf)> = all
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "prompt-cache"))
            .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p.clone())))
            .collect();
        let mut removed = 0;
        if files.len() > self.max_files {
            files.sort();
            let n = files.len() - self.max_files;
            removed = files.iter().take(n).filter(|(_, p)| std::fs::remove_file(p).is_ok()).count();
        }
        for t in all.iter().filter(|p| p.extension().is_some_and(|x| x == "tokens")) {
            if !t.with_extension("").exists() {
                let _ = std::fs::remove_file(t);
            }
        }
        removed
    }
}

fn tokens_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".tokens");
    PathBuf::from(s)
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
        c.set_system_tokens(&files[0], 412);
        c.set_system_tokens(&files[1], 97);
        assert_eq!((c.system_tokens(&files[0]), c.system_tokens(&files[2])), (Some(412), None));
        assert_eq!(c.prune(), 1);
        assert!(files[0].exists() && !files[1].exists() && files[2].exists());
        assert_eq!((c.system_tokens(&files[0]), c.system_tokens(&files[1])), (Some(412), None), "gone with its file");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
