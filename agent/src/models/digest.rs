//! Content digests of model files, computed once and cached beside the file as
//! `<file>.sha256` in `sha256sum`'s format (`<hex>  <file name>`), so `sha256sum -c` checks it
//! too. A sidecar older than its file is stale and ignored; a models directory that cannot be
//! written (a read-only shared library) just means digests are recomputed after a restart.

use std::path::{Path, PathBuf};

fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// The cached digest of `path`, when a sidecar at least as new as the file holds one.
pub fn cached(path: &Path) -> Option<String> {
    let side = sidecar(path);
    let (file_m, side_m) =
        (std::fs::metadata(path).ok()?.modified().ok()?, std::fs::metadata(&side).ok()?.modified().ok()?);
    if side_m < file_m {
        return None;
    }
    let text = std::fs::read_to_string(&side).ok()?;
    let hex = text.split_whitespace().next()?.to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Caches `hex` as the digest of `path` (atomically: temp file, then rename). Best effort.
pub fn remember(path: &Path, hex: &str) {
    let side = sidecar(path);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = side.with_extension("sha256.tmp");
    let res = std::fs::write(&tmp, format!("{hex}  {name}\n")).and_then(|()| std::fs::rename(&tmp, &side));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!(file = %side.display(), error = %e, "cannot cache the model digest");
    }
}

/// Drops the cached digest of a deleted file.
pub fn forget(path: &Path) {
    let _ = std::fs::remove_file(sidecar(path));
}

pub use crate::store::sha256_blocking as compute;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computed_once_cached_beside_the_file_and_stale_when_the_file_changes() {
        let dir = std::env::temp_dir().join(format!("rl-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("m.rkllm");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(cached(&f), None);
        let hex = compute(&f).unwrap();
        assert_eq!(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        remember(&f, &hex);
        assert_eq!(cached(&f).as_deref(), Some(hex.as_str()));
        assert_eq!(std::fs::read_to_string(sidecar(&f)).unwrap(), format!("{hex}  m.rkllm\n"), "sha256sum format");
        // A newer file makes the sidecar stale.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, b"abcd").unwrap();
        assert_eq!(cached(&f), None);
        forget(&f);
        assert!(!sidecar(&f).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
