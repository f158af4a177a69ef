//! The two output channels: vendor-style log lines on stderr, and the `RKLLM_SIM_TRACE` file.
//!
//! Log lines imitate the vendor's `I rkllm: …` / `E rkllm: …` format because the agent scrapes
//! and surfaces them; the trace is the sim's own machine-readable record (`event key=value …`)
//! that tests assert on, since callbacks alone cannot show what the runtime was asked to do.

use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
};

/// Writes one line to stderr. Errors are ignored: a closed stderr must not fail an FFI call.
fn emit(line: &str) {
    // In unit tests go through the capturing macro so passing tests stay quiet.
    #[cfg(test)]
    eprintln!("{line}");
    #[cfg(not(test))]
    {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

pub(crate) fn info(msg: &str) {
    emit(&format!("I rkllm: {msg}"));
}

pub(crate) fn error(msg: &str) {
    emit(&format!("E rkllm: {msg}"));
}

/// Sim-only warnings (bad environment values); prefixed so nobody mistakes them for vendor lines.
pub(crate) fn warn(msg: &str) {
    emit(&format!("W rkllm-sim: {msg}"));
}

/// The trace sink of one handle (or of a failed init).
#[derive(Clone, Debug, Default)]
pub(crate) struct Trace(Option<PathBuf>);

impl Trace {
    pub(crate) fn new(path: Option<PathBuf>) -> Self {
        Self(path)
    }

    /// Appends `line` + newline. The file is opened with O_APPEND per event and written with a
    /// single `write`, so lines from concurrent handles never interleave and each line is on
    /// disk as soon as the call that caused it returns.
    pub(crate) fn event(&self, line: &str) {
        if let Some(path) = &self.0
            && let Err(e) = append(path, line)
        {
            warn(&format!("cannot write trace {}: {e}", path.display()));
        }
    }
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    OpenOptions::new().create(true).append(true).open(path)?.write_all(buf.as_bytes())
}

/// A line with its own prefix (the vendor's allocator errors say `E RKNN:`, not `E rkllm:`).
pub(crate) fn raw(line: &str) {
    emit(line);
}
