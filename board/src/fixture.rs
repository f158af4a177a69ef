//! The committed RK3588 sysfs fixture, for tests here and in the agent's simulated boards.
//!
//! Tests never point a [`crate::Sysfs`] at the committed tree itself: tuning writes to it. They
//! copy it into a scratch directory first ([`copy_tree`]), one copy per test, so tests can run
//! in parallel and a failed test leaves the repository clean.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// `hack/fixtures/rk3588` in this source tree (a build-time path: only meaningful for tests
/// and development runs from the repository).
pub fn rk3588_dir() -> PathBuf {
    // The runtime value first: cargo sets it when running tests, and it names this checkout even when
    // the build was cached from another clone sharing the target directory (the baked-in one would
    // then point at that clone). Every crate sits one level below the repository root.
    let dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    dir.join("../hack/fixtures/rk3588")
}

/// Recursively copies regular files and directories from `from` into `to` (created if
/// needed). Symlinks are followed; the fixture has none, and a real sysfs copy would need
/// them resolved anyway.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if fs::metadata(entry.path())?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A private copy of a fixture tree in the system temp directory, deleted on drop.
#[derive(Debug)]
pub struct FixtureCopy {
    root: PathBuf,
}

impl FixtureCopy {
    /// Copies `from` into a fresh directory named after the process and a counter, so
    /// parallel tests (and parallel test binaries) never share one.
    pub fn new(from: &Path) -> io::Result<Self> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("rockchip-llama-sysfs-{}-{n}", std::process::id()));
        if root.exists() {
            fs::remove_dir_all(&root)?;
        }
        let copy = Self { root };
        copy_tree(from, &copy.root)?;
        Ok(copy)
    }

    /// A copy of the RK3588 fixture.
    pub fn rk3588() -> io::Result<Self> {
        Self::new(&rk3588_dir())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A [`crate::Sysfs`] rooted at the copy.
    pub fn sysfs(&self) -> crate::Sysfs {
        crate::Sysfs::new(&self.root)
    }
}

impl Drop for FixtureCopy {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.root) {
            tracing::debug!(error = %e, root = %self.root.display(), "could not remove fixture copy");
        }
    }
}
