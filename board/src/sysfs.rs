//! Reads and writes of kernel attribute files under a configurable root.
//!
//! Paths are given relative to the root (`sys/class/devfreq/dmc/governor`), so the same code
//! drives a real board (root `/`) and a fixture copy in a temp directory.
//!
//! Writes are plain `open(O_WRONLY|O_TRUNC)` + one `write`, exactly what the vendor's
//! `echo value > file` does. The usual write-to-temp-and-rename pattern is wrong here: a sysfs
//! attribute is a kernel callback, not stored data. The kernel handles one small `write` as one
//! store call (there is no half-written state to protect against), and sysfs does not allow
//! creating or renaming entries, so a rename would fail on a board and silently replace the
//! file in a fixture. Writes never create files for the same reason: a missing attribute
//! must fail as it would on the board.

use std::{fs, io, path::PathBuf};

use crate::BoardError;

/// A sysfs/procfs tree rooted at `root` (`/` in production).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysfs {
    pub root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::new("/")
    }
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The absolute path of `rel` under the root. A leading `/` in `rel` is ignored, so
    /// `"/sys/x"` and `"sys/x"` mean the same file instead of escaping the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    fn io_err(&self, op: &'static str, rel: &str) -> impl FnOnce(io::Error) -> BoardError {
        let path = self.path(rel);
        move |source| BoardError::Io { op, path, source }
    }

    /// The file's bytes, untouched (device-tree strings are NUL-separated).
    pub fn read_raw(&self, rel: &str) -> Result<Vec<u8>, BoardError> {
        fs::read(self.path(rel)).map_err(self.io_err("read", rel))
    }

    /// The file's text with surrounding whitespace and NULs trimmed: sysfs values end in a
    /// newline (lists often in a space too) and device-tree strings in a NUL.
    pub fn read(&self, rel: &str) -> Result<String, BoardError> {
        let bytes = self.read_raw(rel)?;
        Ok(trim_value(&String::from_utf8_lossy(&bytes)).to_owned())
    }

    /// Like [`Sysfs::read`], but any failure is `None`. For probing optional facts, where a
    /// missing file, a root-only debugfs or a driver that rejects reads all mean "unknown";
    /// the reason goes to the debug log.
    pub fn probe(&self, rel: &str) -> Option<String> {
        match self.read(rel) {
            Ok(v) => Some(v),
            Err(e) => {
                if !e.is_not_found() {
                    tracing::debug!(error = %e, "sysfs probe failed");
                }
                None
            }
        }
    }

    /// A number in a file (frequencies, temperatures).
    pub fn read_u64(&self, rel: &str) -> Result<u64, BoardError> {
        let value = self.read(rel)?;
        value.parse().map_err(|_| BoardError::Parse { path: self.path(rel), value, what: "an unsigned integer" })
    }

    /// `probe` + parse; `None` if missing or not a number.
    pub fn probe_u64(&self, rel: &str) -> Option<u64> {
        self.probe(rel)?.parse().ok()
    }

    /// Writes `value` plus a newline (as `echo` does) in a single `write`; see the module docs
    /// for why this is not a temp-file-and-rename.
    pub fn write(&self, rel: &str, value: &str) -> Result<(), BoardError> {
        use io::Write as _;
        let path = self.path(rel);
        let mut file =
            fs::OpenOptions::new().write(true).truncate(true).open(&path).map_err(self.io_err("open", rel))?;
        file.write_all(format!("{value}\n").as_bytes()).map_err(self.io_err("write", rel))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// Entry names of a directory, sorted with numeric suffixes in numeric order
    /// (`policy4` before `policy10`); a missing or unreadable directory is empty.
    pub fn list(&self, rel: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.path(rel)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        names.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        names
    }

    /// Entries of `dir` named `<prefix><number>`, with their numbers, in numeric order
    /// (`cpu0`..`cpu7` but not `cpufreq` or `cpuidle`).
    pub fn numbered(&self, dir: &str, prefix: &str) -> Vec<(usize, String)> {
        self.list(dir).into_iter().filter_map(|name| Some((numbered_suffix(&name, prefix)?, name))).collect()
    }
}

/// Trims what kernel attribute files put around a value.
pub(crate) fn trim_value(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
}

/// `"policy4"` with prefix `"policy"` → `Some(4)`; anything else → `None`.
pub(crate) fn numbered_suffix(name: &str, prefix: &str) -> Option<usize> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Sort key splitting a trailing number off a name, so numbered entries sort numerically.
fn natural_key(name: &str) -> (&str, u64, &str) {
    let head = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let num = name[head.len()..].parse().unwrap_or(0);
    (head, num, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_newlines_spaces_and_nuls() {
        assert_eq!(trim_value("schedutil\n"), "schedutil");
        assert_eq!(trim_value("408000 600000 \n"), "408000 600000");
        assert_eq!(trim_value("Radxa ROCK 5B\0"), "Radxa ROCK 5B");
    }

    #[test]
    fn numbered_suffix_only_accepts_digits() {
        assert_eq!(numbered_suffix("policy10", "policy"), Some(10));
        assert_eq!(numbered_suffix("cpufreq", "cpu"), None);
        assert_eq!(numbered_suffix("cpu", "cpu"), None);
    }

    #[test]
    fn leading_slash_stays_under_root() {
        let fs = Sysfs::new("/tmp/x");
        assert_eq!(fs.path("/sys/a"), PathBuf::from("/tmp/x/sys/a"));
        assert_eq!(fs.path("sys/a"), PathBuf::from("/tmp/x/sys/a"));
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["policy10", "policy4", "policy0"];
        v.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        assert_eq!(v, ["policy0", "policy4", "policy10"]);
    }
}
