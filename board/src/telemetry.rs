//! A snapshot of temperatures, NPU load and current clocks, serialisable for the agent's JSON
//! endpoints and the Board status.
//!
//! Read fresh each time (no state kept): each file is a cheap kernel callback, and a snapshot
//! that re-discovers its nodes cannot go stale when a devfreq governor recreates its files.

use serde::Serialize;

use crate::{
    detect::{cpu_policies, devfreq_nodes},
    sysfs::Sysfs,
};

/// Where the NPU load is reported: debugfs (the vendor's `eval_perf_watch_npu.sh`; root
/// only), or procfs on drivers built that way.
pub const NPU_LOAD_FILES: [&str; 2] = ["sys/kernel/debug/rknpu/load", "proc/rknpu/load"];

const THERMAL_DIR: &str = "sys/class/thermal";

/// One thermal zone (`soc-thermal`, `bigcore0-thermal`, `npu-thermal`, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThermalZone {
    /// `thermal_zone0`.
    pub zone: String,
    /// The zone's `type`.
    #[serde(rename = "type")]
    pub kind: String,
    pub celsius: f64,
}

/// A thermal cooling device (`cooling_deviceN`): how hard the kernel is holding a clock (or
/// spinning a fan) back because of heat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoolingDevice {
    /// `cooling_device0`.
    pub device: String,
    /// The device's `type`: `cpufreq-cpu4`, `thermal-cpufreq-0`, a devfreq device such as
    /// `fdab0000.npu` or `dmc`, `pwm-fan`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// `cur_state`: 0 = not limiting; up to `max_state`.
    pub state: u64,
    pub max_state: Option<u64>,
}

impl CoolingDevice {
    /// A fan (cooling by air, not by a lower clock): running it is not throttling.
    pub fn is_fan(&self) -> bool {
        self.kind.to_ascii_lowercase().contains("fan")
    }
}

/// NPU utilisation in percent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NpuLoad {
    /// One entry per core (`Core0: 12%, Core1: 0%, …`), or a single entry for the whole NPU
    /// when the driver prints one figure (`NPU load:  35%`).
    pub percent: Vec<u32>,
    /// Which of the two forms `percent` came from.
    pub per_core: bool,
}

/// A cpufreq policy's clock and governor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuFreq {
    pub policy: String,
    pub cpus: Vec<usize>,
    /// `scaling_cur_freq`, kHz.
    pub cur_khz: Option<u64>,
    pub governor: Option<String>,
}

/// A devfreq node's clock and governor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DevfreqState {
    pub name: String,
    /// `cur_freq`, Hz.
    pub cur_hz: Option<u64>,
    pub governor: Option<String>,
}

/// Everything readable right now; absent parts are empty/`None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Telemetry {
    pub thermal: Vec<ThermalZone>,
    /// Cooling devices, fans included; see [`Telemetry::throttling`].
    pub cooling: Vec<CoolingDevice>,
    pub npu_load: Option<NpuLoad>,
    pub cpu: Vec<CpuFreq>,
    pub npu: Option<DevfreqState>,
    pub ddr: Option<DevfreqState>,
    pub gpu: Option<DevfreqState>,
}

impl Telemetry {
    /// Reads a snapshot. Never fails; zones whose `temp` cannot be read (some drivers return
    /// an error while a sensor is off) are left out.
    pub fn read(fs: &Sysfs) -> Telemetry {
        let thermal = fs
            .numbered(THERMAL_DIR, "thermal_zone")
            .into_iter()
            .filter_map(|(_, zone)| {
                let dir = format!("{THERMAL_DIR}/{zone}");
                let milli: i64 = fs.probe(&format!("{dir}/temp"))?.parse().ok()?;
                let kind = fs.probe(&format!("{dir}/type")).unwrap_or_default();
                Some(ThermalZone { zone, kind, celsius: milli as f64 / 1000.0 })
            })
            .collect();
        let cooling = fs
            .numbered(THERMAL_DIR, "cooling_device")
            .into_iter()
            .filter_map(|(_, device)| {
                let dir = format!("{THERMAL_DIR}/{device}");
                let state = fs.probe_u64(&format!("{dir}/cur_state"))?;
                Some(CoolingDevice {
                    kind: fs.probe(&format!("{dir}/type")).unwrap_or_default(),
                    max_state: fs.probe_u64(&format!("{dir}/max_state")),
                    state,
                    device,
                })
            })
            .collect();
        let npu_load = NPU_LOAD_FILES.iter().find_map(|rel| parse_npu_load(&fs.probe(rel)?));
        let cpu = cpu_policies(fs)
            .into_iter()
            .map(|p| CpuFreq {
                cur_khz: fs.probe_u64(&format!("{}/scaling_cur_freq", p.dir)),
                governor: fs.probe(&format!("{}/scaling_governor", p.dir)),
                policy: p.name,
                cpus: p.cpus,
            })
            .collect();
        let state = |node: Option<crate::DevfreqNode>| {
            node.map(|n| DevfreqState {
                cur_hz: fs.probe_u64(&format!("{}/cur_freq", n.dir)),
                governor: fs.probe(&format!("{}/governor", n.dir)),
                name: n.name,
            })
        };
        let (npu, ddr, gpu) = devfreq_nodes(fs);
        Telemetry { thermal, cooling, npu_load, cpu, npu: state(npu), ddr: state(ddr), gpu: state(gpu) }
    }

    /// True while the kernel holds a clock down because of heat: a cooling device other than a
    /// fan is in a state above 0 (the thermal framework's own signal; trip points and governors
    /// are the kernel's business). False when the board exposes no cooling devices.
    pub fn throttling(&self) -> bool {
        self.cooling.iter().any(|c| c.state > 0 && !c.is_fan())
    }

    /// The hottest zone (the first of equals, so the report is stable).
    pub fn hottest(&self) -> Option<&ThermalZone> {
        self.thermal.iter().reduce(|hot, z| if z.celsius > hot.celsius { z } else { hot })
    }
}

/// Parses the driver's load line, per-core (`NPU load:  Core0: 12%, Core1:  0%, Core2:  0%,`)
/// or single (`NPU load:  35%`): every number directly followed by `%`, in order. `None` when
/// there is none.
pub fn parse_npu_load(text: &str) -> Option<NpuLoad> {
    let bytes = text.as_bytes();
    let mut percent = Vec::new();
    for (i, _) in text.match_indices('%') {
        let start = bytes[..i].iter().rposition(|b| !b.is_ascii_digit()).map_or(0, |p| p + 1);
        if let Ok(n) = text[start..i].parse() {
            percent.push(n);
        }
    }
    let per_core = text.contains("Core");
    (!percent.is_empty()).then_some(NpuLoad { percent, per_core })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_core_load() {
        let load = parse_npu_load("NPU load:  Core0: 12%, Core1:  0%, Core2: 100%,\n").unwrap();
        assert_eq!(load, NpuLoad { percent: vec![12, 0, 100], per_core: true });
    }

    #[test]
    fn single_load() {
        assert_eq!(parse_npu_load("NPU load:  35%"), Some(NpuLoad { percent: vec![35], per_core: false }));
    }

    #[test]
    fn no_load() {
        assert_eq!(parse_npu_load("NPU load: n/a"), None);
        assert_eq!(parse_npu_load(""), None);
    }
}
