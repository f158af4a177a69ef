//! RK3588 board facts, frequency tuning and telemetry, all read and written through sysfs.
//!
//! The NPU runtime only reaches the vendor's benchmark speeds with the CPU, NPU and DDR clocks
//! pinned (the vendor's `fix_freq_rk3588.sh`), a new enough `rknpu` driver and a large
//! open-file limit. This crate turns those requirements into code the agent can call and the
//! doctor can report on:
//!
//! ```text
//!   Sysfs { root } ──► BoardInfo::detect ──► plan() ──► Tuner::apply / restore
//!        │                    │
//!        └──► Telemetry::read ┴──► board_checks() ──► render()   (doctor report)
//!   raise_nofile() ─────────────────────┘
//!   HostFacts::read (memory, CPUs: sysinfo on `/`, the tree's proc/meminfo under a fixture root)
//! ```
//!
//! Every file access goes through [`Sysfs`], whose root is `/` on a board and a copy of
//! `hack/fixtures/rk3588` in tests and simulated clusters, so the whole crate runs on x86 CI.
//! Parsing is kept in small pure functions next to the I/O that feeds them. Missing pieces
//! (no `dmc` node, no debugfs, no device tree on a laptop) are `None`, never errors: the agent
//! must start on any Linux machine and fall back to the CPU engine.

mod affinity;
mod detect;
mod doctor;
pub mod fixture;
mod host;
mod limits;
mod sysfs;
mod telemetry;
mod tune;

use std::{io, path::PathBuf};

pub use affinity::pin_current_thread;
pub use detect::{BoardInfo, CpuPolicy, DevfreqNode, NpuDriver, Soc, Version};
pub use doctor::{Check, Status, board_checks, render, worst};
pub use host::{DiskSpace, HostFacts, count_cpu_list, parse_meminfo};
pub use limits::{NofileOutcome, VENDOR_NOFILE, raise_nofile};
pub use sysfs::Sysfs;
pub use telemetry::{CoolingDevice, CpuFreq, DevfreqState, NpuLoad, Telemetry, ThermalZone, parse_npu_load};
pub use tune::{NodeFailure, Readback, TuneOptions, TuneReport, Tuner, Write, WriteKind, plan};

/// The one error type of this crate. Both variants name the full path, because "Permission
/// denied" without the file is useless when a board misbehaves.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: cannot parse {value:?} as {what}", .path.display())]
    Parse { path: PathBuf, value: String, what: &'static str },
}

impl BoardError {
    /// A short fixed name per variant, for log fields and metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            BoardError::Io { .. } => "io",
            BoardError::Parse { .. } => "parse",
        }
    }

    /// Whether the file simply is not there (as opposed to unreadable or malformed).
    pub fn is_not_found(&self) -> bool {
        matches!(self, BoardError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}
