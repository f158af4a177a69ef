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

use board::{BoardInfo, HostFacts, NofileOutcome, Sysfs, Telemetry, TuneOptions, Tuner};
use clap::{Args, ValueEnum};
use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::keepalive::KeepAlive;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Board telemetry, set at scrape time: °C per thermal zone, NPU load % per core, Hz per clock.
pub struct BoardMetrics {
    pub temperature: Family<Labels, FloatGauge>,
    pub npu_load: Family<Labels, FloatGauge>,
    pub frequency: Family<Labels, FloatGauge>,
    /// 1 while the board's clocks are pinned by the agent.
    pub tuned: Gauge,
}

impl BoardMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self {
            temperature: Family::default(),
            npu_load: Family::default(),
            frequency: Family::default(),
            tuned: Gauge::default(),
        };
        r.register("board_temperature_celsius", "Thermal zone temperature", m.temperature.clone());
        r.register("npu_load_percent", "NPU load per core", m.npu_load.clone());
        r.register("clock_frequency_hertz", "Current CPU policy, NPU, DDR and GPU clock", m.frequency.clone());
        r.register("board_tuned", "1 while the agent pins the board's clocks", m.tuned.clone());
        m
    }
}

/// A board flag that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("--tune-idle-restore {0:?}: expected a duration such as 10m")]
pub struct IdleRestoreError(String);

/// Tuning as the status endpoint reports it.
#[derive(Debug, Clone, Serialize)]
pub struct TuningState {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<TuneOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<Vec<board::Write>>,
}

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
}

impl Node {
    /// `info` is what `BoardInfo::detect` read under `args.sysfs_root` at start.
    pub fn new(args: &BoardArgs, info: BoardInfo, nofile: NofileOutcome) -> Result<Self, IdleRestoreError> {
        let fs = Sysfs::new(&args.sysfs_root);
        let idle_restore = match KeepAlive::parse(&args.tune_idle_restore) {
            Ok(KeepAlive::For(d)) => d,
            _ => return Err(IdleRestoreError(args.tune_idle_restore.clone())),
        };
        let tuner = (args.tune == TuneMode::On).then(|| {
            let opts = TuneOptions { gpu: args.tune_gpu, disable_cpuidle: args.tune_cpuidle };
            Mutex::new(Tuner::new(fs.clone(), info.clone(), opts))
        });
        Ok(Self { fs, info, nofile, tuner, idle_restore })
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

    /// Memory and CPUs of this board (the fixture's under `--sysfs-root`).
    pub fn host(&self) -> HostFacts {
        HostFacts::read(&self.fs)
    }

    /// Restores the clocks once nothing has been loaded for `idle_restore`, until `cancel`.
    pub async fn idle_watch(
        self: Arc<Self>,
        nothing_loaded: impl Fn() -> bool + Send + 'static,
        cancel: CancellationToken,
    ) {
        let mut idle_since: Option<Instant> = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
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

    /// Tuning state for the status endpoint.
    pub fn tuning_state(&self) -> TuningState {
        match self.tuner() {
            None => TuningState { enabled: false, applied: None, options: None, saved: None },
            Some(tu) => TuningState {
                enabled: true,
                applied: Some(tu.is_applied()),
                options: Some(tu.options()),
                saved: Some(tu.saved().to_vec()),
            },
        }
    }

    /// Sets the board gauges from a fresh telemetry read (called when `/metrics` is scraped).
    pub fn update_metrics(&self, m: &BoardMetrics) {
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
