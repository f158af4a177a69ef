//! Pinning CPU, NPU, DDR (and optionally GPU) clocks at their maximum, and putting them back.
//!
//! The vendor's `fix_freq_rk3588.sh` does this once with hard-coded paths and never undoes it;
//! the agent instead plans the writes from what the board reports ([`plan`]), applies them
//! while it serves, and restores the saved values on shutdown or after an idle period
//! ([`Tuner`]), so a board left idle is not held at full clocks.
//!
//! Per node the governor is switched to `userspace` first (the frequency file only accepts
//! writes, or even exists, under that governor) and the frequency second. Restore walks the
//! same list backwards: the old frequency goes back while `userspace` is still active, then
//! the old governor.

use serde::Serialize;

use crate::{
    BoardInfo, DevfreqNode,
    detect::cpu_numbers,
    sysfs::{Sysfs, trim_value},
};

/// What to tune beyond CPU, NPU and DDR, which are always included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TuneOptions {
    /// Also pin the Mali GPU (the vendor script does; LLM inference does not use it, so off
    /// by default to save power).
    pub gpu: bool,
    /// Disable the `state1` (deep sleep) cpuidle state on every CPU, as the vendor script does,
    /// trading idle power for wake-up latency.
    pub disable_cpuidle: bool,
}

/// What a [`Write`] changes; decides ordering and read-back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WriteKind {
    Governor,
    /// A frequency request; `current` is the file showing the clock actually running.
    Frequency {
        current: String,
    },
    CpuIdle,
}

/// One planned sysfs write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Write {
    /// Relative to the sysfs root.
    pub path: String,
    pub value: String,
    /// The content before tuning; `None` when the file could not be read at plan time (a
    /// devfreq `userspace/set_freq` only appears once the governor is `userspace`), in which
    /// case restore has nothing to put back.
    pub previous: Option<String>,
    pub kind: WriteKind,
}

/// A write that failed; the rest of the plan still ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeFailure {
    pub path: String,
    pub value: String,
    pub error: String,
}

/// A frequency request next to the frequency the node reports right after it. They can differ
/// legitimately (thermal throttling, a frequency the regulator cannot reach), so this is
/// reported, not treated as a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readback {
    pub path: String,
    pub requested: u64,
    /// `None` if the current-frequency file is missing or unreadable.
    pub current: Option<u64>,
    pub reached: bool,
}

/// Outcome of [`Tuner::apply`] or [`Tuner::restore`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TuneReport {
    /// Nothing to do: already applied (apply) or not applied (restore).
    pub noop: bool,
    pub written: usize,
    /// Restore only: saved values with nothing to write back (see [`Write::previous`]).
    pub skipped: usize,
    pub failures: Vec<NodeFailure>,
    pub readbacks: Vec<Readback>,
}

impl TuneReport {
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Plans the writes that pin every cpufreq policy and the NPU/DDR(/GPU) devfreq nodes at
/// their highest frequency, recording each file's current content for restore. Pure apart
/// from reading those previous values. Nodes whose governor list lacks `userspace` are left
/// out (with a warning): the kernel would refuse the frequency write.
pub fn plan(info: &BoardInfo, fs: &Sysfs, opts: TuneOptions) -> Vec<Write> {
    let mut writes = Vec::new();
    let mut push = |path: String, value: String, kind: WriteKind| {
        let previous = fs.probe(&path);
        writes.push(Write { path, value, previous, kind });
    };
    for policy in &info.cpu_policies {
        if !offers_userspace(&policy.available_governors) {
            tracing::warn!(policy = %policy.name, "cpufreq policy has no userspace governor; not tuned");
            continue;
        }
        let dir = &policy.dir;
        push(format!("{dir}/scaling_governor"), USERSPACE.into(), WriteKind::Governor);
        let current = format!("{dir}/scaling_cur_freq");
        push(format!("{dir}/scaling_setspeed"), policy.target_khz().to_string(), WriteKind::Frequency { current });
    }
    let devfreq = [info.npu.as_ref(), info.ddr.as_ref(), info.gpu.as_ref().filter(|_| opts.gpu)];
    for node in devfreq.into_iter().flatten() {
        let Some(target) = devfreq_target(node) else { continue };
        let dir = &node.dir;
        push(format!("{dir}/governor"), USERSPACE.into(), WriteKind::Governor);
        let current = format!("{dir}/cur_freq");
        push(format!("{dir}/userspace/set_freq"), target.to_string(), WriteKind::Frequency { current });
    }
    if opts.disable_cpuidle {
        for cpu in cpu_numbers(fs) {
            let path = format!("sys/devices/system/cpu/cpu{cpu}/cpuidle/state1/disable");
            if fs.exists(&path) {
                push(path, "1".into(), WriteKind::CpuIdle);
            }
        }
    }
    writes
}

const USERSPACE: &str = "userspace";

/// An empty list means the file was unreadable; try anyway and let the write report it.
fn offers_userspace(governors: &[String]) -> bool {
    governors.is_empty() || governors.iter().any(|g| g == USERSPACE)
}

fn devfreq_target(node: &DevfreqNode) -> Option<u64> {
    if !offers_userspace(&node.available_governors) {
        tracing::warn!(node = %node.name, "devfreq node has no userspace governor; not tuned");
        return None;
    }
    let target = node.target_hz();
    if target.is_none() {
        tracing::warn!(node = %node.name, "devfreq node lists no available_frequencies; not tuned");
    }
    target
}

/// Applies a tuning plan and remembers what it replaced, so it can be undone.
///
/// The plan is recomputed on every [`Tuner::apply`], so the saved values are those of the
/// moment before that apply (the agent applies on demand and restores after idle, and
/// someone may have changed a governor in between). There is no `Drop` restore: I/O in drop
/// hides errors, so the owner calls [`Tuner::restore`] on shutdown.
#[derive(Debug)]
pub struct Tuner {
    fs: Sysfs,
    info: BoardInfo,
    opts: TuneOptions,
    /// The writes that succeeded during the current apply; `None` when not applied.
    saved: Option<Vec<Write>>,
}

impl Tuner {
    pub fn new(fs: Sysfs, info: BoardInfo, opts: TuneOptions) -> Self {
        Self { fs, info, opts, saved: None }
    }

    pub fn options(&self) -> TuneOptions {
        self.opts
    }

    /// True between an [`Tuner::apply`] and the next [`Tuner::restore`], even if some writes
    /// failed (the report said which).
    pub fn is_applied(&self) -> bool {
        self.saved.is_some()
    }

    /// The writes currently in effect (and to be undone by restore).
    pub fn saved(&self) -> &[Write] {
        self.saved.as_deref().unwrap_or_default()
    }

    /// Plans and performs the writes; a failing node is logged and reported, the rest still
    /// run. A no-op when already applied.
    pub fn apply(&mut self) -> TuneReport {
        if self.saved.is_some() {
            return TuneReport { noop: true, ..TuneReport::default() };
        }
        let mut report = TuneReport::default();
        let mut saved = Vec::new();
        for w in plan(&self.info, &self.fs, self.opts) {
            if let Err(e) = self.fs.write(&w.path, &w.value) {
                tracing::warn!(error = %e, value = %w.value, "tuning write failed");
                report.failures.push(NodeFailure { path: w.path, value: w.value, error: e.to_string() });
                continue;
            }
            report.written += 1;
            if let WriteKind::Frequency { current } = &w.kind
                && let Ok(requested) = w.value.parse::<u64>()
            {
                let now = self.fs.probe_u64(current);
                report.readbacks.push(Readback {
                    path: w.path.clone(),
                    requested,
                    current: now,
                    reached: now == Some(requested),
                });
            }
            saved.push(w);
        }
        tracing::info!(written = report.written, failed = report.failures.len(), "tuning applied");
        self.saved = Some(saved);
        report
    }

    /// Writes the saved values back in reverse order. Idempotent: a no-op when not applied.
    /// Afterwards the tuner is not applied even if some writes failed (they are reported;
    /// retrying them blindly could fight whoever changed the node since).
    pub fn restore(&mut self) -> TuneReport {
        let Some(saved) = self.saved.take() else {
            return TuneReport { noop: true, ..TuneReport::default() };
        };
        let mut report = TuneReport::default();
        for w in saved.iter().rev() {
            let Some(previous) = &w.previous else {
                report.skipped += 1;
                continue;
            };
            match self.fs.write(&w.path, previous) {
                Ok(()) => report.written += 1,
                // A frequency file shows a placeholder when its governor is not `userspace`
                // (`<unsupported>` for cpufreq, `undefined` for devfreq). Writing it back is
                // what restores a fixture tree byte for byte; a kernel rejects it, and then
                // restoring the governor right after brings the placeholder back by itself.
                Err(e) if is_placeholder(&w.kind, previous) => {
                    tracing::debug!(error = %e, "placeholder not writable; the governor restore resets it");
                    report.skipped += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, value = %previous, "tuning restore failed");
                    report.failures.push(NodeFailure {
                        path: w.path.clone(),
                        value: previous.clone(),
                        error: e.to_string(),
                    });
                }
            }
        }
        tracing::info!(written = report.written, failed = report.failures.len(), "tuning restored");
        report
    }
}

fn is_placeholder(kind: &WriteKind, previous: &str) -> bool {
    matches!(kind, WriteKind::Frequency { .. }) && trim_value(previous).parse::<u64>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_non_numeric_frequencies() {
        let freq = WriteKind::Frequency { current: "x".into() };
        assert!(is_placeholder(&freq, "<unsupported>"));
        assert!(is_placeholder(&freq, "undefined"));
        assert!(!is_placeholder(&freq, "1800000"));
        assert!(!is_placeholder(&WriteKind::Governor, "schedutil"));
    }

    #[test]
    fn userspace_required_only_when_listed() {
        assert!(offers_userspace(&[]));
        assert!(offers_userspace(&["schedutil".into(), "userspace".into()]));
        assert!(!offers_userspace(&["schedutil".into(), "performance".into()]));
    }
}
