//! The board this agent runs on: facts read at start, frequency tuning with its lifecycle, and
//! telemetry for `/metrics` and `GET /internal/v1/status`. All sysfs access goes through the
//! `board` crate with `--sysfs-root`, so tests run the same code against `hack/fixtures/rk3588`.
//!
//! Tuning lifecycle (`--tune on`): pinned before the first model load, restored to the values
//! read before pinning on shutdown and once nothing has been loaded for `--tune-idle-restore`,
//! and pinned again by the next load.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use board::{BoardInfo, NofileOutcome, Sysfs, Telemetry, TuneOptions, Tuner};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TuneMode {
    On,
    Off,
}

#[derive(Debug, Clone, Args)]
pub struct BoardArgs {
    /// Root under which /sys and /proc are read and written (tests point it at a fixture tree).
    #[arg(long, env = "ROCKCHIP_LLAMA_SYSFS_ROOT", default_value = "/")]
    pub sysfs_root: PathBuf,
    /// Pin CPU, NPU and DDR clocks to their highest available frequency while models are loaded.
    #[arg(long, env = "ROCKCHIP_LLAMA_TUNE", value_enum, default_value_t = TuneMode::Off)]
    pub tune: TuneMode,
    /// Also pin the GPU clock (the vendor script does; inference does not use the GPU).
    #[arg(long, env = "ROCKCHIP_LLAMA_TUNE_GPU", default_value_t = false, action = clap::ArgAction::Set)]
    pub tune_gpu: bool,
    /// Also disable the cpuidle `state1` of every CPU while tuned.
    #[arg(long, env = "ROCKCHIP_LLAMA_TUNE_CPUIDLE", default_value_t = false, action = clap::ArgAction::Set)]
    pub tune_cpuidle: bool,
    /// Restore the clocks after this long with no model loaded (`10m`, `30s`).
    #[arg(long, env = "ROCKCHIP_LLAMA_TUNE_IDLE_RESTORE", default_value = "10m")]
    pub tune_idle_restore: String,
}

/// What the agent knows and controls about its board.
pub struct Node {
    pub fs: Sysfs,
    pub info: BoardInfo,
    pub nofile: NofileOutcome,
    tuner: Option<Mutex<Tuner>>,
    pub idle_restore: Duration,
    /// The runtime the agent opened, or why not.
    pub runtime: Value,
}

impl Node {
    /// `info` is what `BoardInfo::detect` read under `args.sysfs_root` at start.
    pub fn new(args: &BoardArgs, info: BoardInfo, nofile: NofileOutcome, runtime: Value) -> Result<Self, String> {
        let fs = Sysfs::new(&args.sysfs_root);
        let idle_restore = crate::keepalive::KeepAlive::parse(&args.tune_idle_restore)
            .ok()
            .and_then(|k| match k {
                crate::keepalive::KeepAlive::For(d) => Some(d),
                _ => None,
            })
            .ok_or_else(|| {
                format!("--tune-idle-restore {:?}: expected a duration such as 10m", args.tune_idle_restore)
            })?;
        let tuner = (args.tune == TuneMode::On).then(|| {
            let opts = TuneOptions { gpu: args.tune_gpu, disable_cpuidle: args.tune_cpuidle };
            Mutex::new(Tuner::new(fs.clone(), info.clone(), opts))
        });
        Ok(Self { fs, info, nofile, tuner, idle_restore, runtime })
    }

    fn tuner(&self) -> Option<std::sync::MutexGuard<'_, Tuner>> {
        self.tuner.as_ref().map(|t| t.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// `Some(applied)` when tuning is enabled.
    pub fn tuned(&self) -> Option<bool> {
        self.tuner().map(|t| t.is_applied())
    }

    /// Pins the clocks (no-op when off or already pinned).
    pub fn pin(&self) {
        if let Some(mut t) = self.tuner()
            && !t.is_applied()
        {
            let report = t.apply();
            tracing::info!(
                clean = report.is_clean(),
                "board tuned: clocks pinned to their highest available frequency"
            );
        }
    }

    /// Restores the clocks read before pinning (no-op when not pinned).
    pub fn restore(&self) {
        if let Some(mut t) = self.tuner()
            && t.is_applied()
        {
            let report = t.restore();
            tracing::info!(clean = report.is_clean(), "board tuning restored");
        }
    }

    /// Restores the clocks once nothing has been loaded for `idle_restore`. Runs forever.
    pub async fn idle_watch(self: Arc<Self>, nothing_loaded: impl Fn() -> bool + Send + 'static) {
        let mut idle_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !nothing_loaded() {
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.idle_restore && self.tuned() == Some(true) {
                tracing::info!(idle_seconds = since.elapsed().as_secs(), "no model loaded: restoring board clocks");
                self.restore();
            }
        }
    }

    /// Board facts, telemetry and tuning state as JSON.
    pub fn status(&self) -> Value {
        let t = Telemetry::read(&self.fs);
        json!({
            "board": self.info,
            "big_core_mask": format!("{:#x}", self.info.big_core_mask()),
            "telemetry": t,
            "tuning": match self.tuner() {
                None => json!({"enabled": false}),
                Some(tu) => json!({"enabled": true, "applied": tu.is_applied(), "options": tu.options(), "saved": tu.saved()}),
            },
            "open_files": self.nofile,
            "runtime": self.runtime,
        })
    }

    /// Sets the board gauges from a fresh telemetry read (called when `/metrics` is scraped).
    pub fn update_metrics(&self, m: &Metrics) {
        let t = Telemetry::read(&self.fs);
        for z in &t.thermal {
            m.temperature.get_or_create(&vec![("zone".to_owned(), z.kind.clone())]).set(z.celsius);
        }
        if let Some(l) = &t.npu_load {
            for (i, p) in l.percent.iter().enumerate() {
                m.npu_load.get_or_create(&vec![("core".to_owned(), i.to_string())]).set(f64::from(*p));
            }
        }
        for c in &t.cpu {
            if let Some(khz) = c.cur_khz {
                m.frequency
                    .get_or_create(&vec![("device".to_owned(), format!("cpu-{}", c.policy))])
                    .set(khz as f64 * 1e3);
            }
        }
        for d in [&t.npu, &t.ddr, &t.gpu].into_iter().flatten() {
            if let Some(hz) = d.cur_hz {
                m.frequency.get_or_create(&vec![("device".to_owned(), d.name.clone())]).set(hz as f64);
            }
        }
        m.tuned.set(i64::from(self.tuned() == Some(true)));
    }
}
