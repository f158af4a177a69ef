//! Building blocks of `rockchip-llama-agent doctor`: board checks and the plain-text report.
//!
//! The checks encode the vendor's setup requirements (driver ≥ 0.9.7, 0.9.8 recommended;
//! `ulimit -n 102400`; clocks pinned for benchmark speed) plus temperature, each with a detail
//! that says what to do. The agent appends its runtime and model sections and turns
//! [`worst`] into the exit code. The report is plain text (no colours) so it survives
//! `journalctl`, bug reports and serial consoles.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::{
    BoardInfo, NofileOutcome, Telemetry, VENDOR_NOFILE, Version,
    detect::{NPU_VERSION_FILES, Soc},
};

/// Below this the runtime prints its "driver version is too low" warning and misbehaves.
const MIN_DRIVER: Version = Version::new(0, 9, 7);
/// What the vendor guide asks for.
const RECOMMENDED_DRIVER: Version = Version::new(0, 9, 8);
/// RK3588 starts throttling around 85 °C and the trip point for shutdown is higher; above
/// 85 °C benchmark numbers are no longer reachable, above 95 °C the board needs cooling.
const WARN_CELSIUS: f64 = 85.0;
const FAIL_CELSIUS: f64 = 95.0;

/// A check's verdict; ordered so the worst is the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the doctor report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

impl Check {
    pub fn new(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Self { name: name.into(), status, detail: detail.into() }
    }

    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, detail)
    }

    pub fn warn(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Warn, detail)
    }

    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Fail, detail)
    }
}

/// The worst status among `checks`; `Ok` when there are none.
pub fn worst(checks: &[Check]) -> Status {
    checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok)
}

/// The board section of the doctor report. `tuned` is `None` when tuning is off, otherwise
/// whether it is currently applied.
pub fn board_checks(info: &BoardInfo, telemetry: &Telemetry, nofile: NofileOutcome, tuned: Option<bool>) -> Vec<Check> {
    vec![
        soc_check(info),
        driver_check(info),
        nofile_check(info, nofile),
        tuning_check(info, telemetry, tuned),
        thermal_check(telemetry),
    ]
}

const CPU_ONLY: &str = "NPU path unavailable, CPU engine only";

fn soc_check(info: &BoardInfo) -> Check {
    let model = info.model.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
    match &info.soc {
        Some(soc) if soc.rkllm_supported() => {
            let big = info.big_cores();
            let cores = if big.is_empty() {
                "no cpufreq policies found".to_owned()
            } else {
                format!("big cores {} (mask {:#x})", cpu_list(&big), info.big_core_mask())
            };
            Check::ok("SoC", format!("{soc}{model}; {cores}"))
        }
        Some(soc @ Soc::Other(id)) if soc.is_rockchip() => {
            Check::warn("SoC", format!("{id}{model} is not supported by the RKLLM runtime: {CPU_ONLY}"))
        }
        Some(soc) => Check::warn("SoC", format!("no Rockchip SoC ({soc}{model}): {CPU_ONLY}")),
        None => Check::warn("SoC", format!("no Rockchip SoC (no device tree): {CPU_ONLY}")),
    }
}

fn driver_check(info: &BoardInfo) -> Check {
    const NAME: &str = "NPU driver";
    let Some(driver) = &info.npu_driver else {
        if !info.has_rkllm_soc() {
            return Check::warn(NAME, "no rknpu driver (none expected without a Rockchip NPU)");
        }
        return Check::fail(
            NAME,
            format!(
                "rknpu driver not found (looked in {}): the RKLLM runtime needs the vendor rknpu driver \
                 >= {MIN_DRIVER} ({RECOMMENDED_DRIVER} recommended); the mainline rocket driver is not supported. \
                 debugfs is readable by root only, so run doctor as root if the driver is loaded",
                NPU_VERSION_FILES.join(", ")
            ),
        );
    };
    let v = driver.version;
    let source = &driver.source;
    if v < MIN_DRIVER {
        Check::fail(
            NAME,
            format!(
                "v{v} ({source}): too old; the runtime warns \"Your rknpu driver version is too low, please upgrade \
                 to {MIN_DRIVER}.\" Upgrade to {RECOMMENDED_DRIVER}"
            ),
        )
    } else if v < RECOMMENDED_DRIVER {
        Check::warn(NAME, format!("v{v} ({source}): works; {RECOMMENDED_DRIVER} recommended"))
    } else {
        Check::ok(NAME, format!("v{v} ({source})"))
    }
}

fn nofile_check(info: &BoardInfo, n: NofileOutcome) -> Check {
    const NAME: &str = "open files";
    let (after, hard) = (limit(n.after_soft), limit(n.hard));
    if n.after_soft >= VENDOR_NOFILE {
        let raised = if n.after_soft > n.before_soft {
            format!(", raised from {}", limit(n.before_soft))
        } else {
            String::new()
        };
        return Check::ok(NAME, format!("soft limit {after} (hard {hard}{raised})"));
    }
    if n.hard < VENDOR_NOFILE {
        // The hard limit only goes up with privileges; the agent cannot fix this itself. It
        // matters for the NPU runtime only, so elsewhere it is a warning.
        let status = if info.has_rkllm_soc() { Status::Fail } else { Status::Warn };
        return Check::new(
            NAME,
            status,
            format!(
                "hard limit {hard} < {VENDOR_NOFILE}, so the soft limit stops at {after}: RKLLM init can fail with \
                 \"Too many open files\". Set LimitNOFILE={VENDOR_NOFILE} in the systemd unit (or raise the hard \
                 limit as root)"
            ),
        );
    }
    Check::warn(
        NAME,
        format!("soft limit {after} < {VENDOR_NOFILE} although the hard limit is {hard}: raising it failed"),
    )
}

fn limit(v: u64) -> String {
    if v == u64::MAX { "unlimited".to_owned() } else { v.to_string() }
}

fn tuning_check(info: &BoardInfo, t: &Telemetry, tuned: Option<bool>) -> Check {
    const NAME: &str = "tuning";
    match tuned {
        None => return Check::ok(NAME, "off (--tune on pins CPU/NPU/DDR at maximum, as the vendor benchmarks assume)"),
        Some(false) => return Check::ok(NAME, "on, currently restored (idle); applied again on the next request"),
        Some(true) => {}
    }
    let mut off = Vec::new();
    let mut pinned = 0;
    for policy in &info.cpu_policies {
        let state = t.cpu.iter().find(|c| c.policy == policy.name);
        let (gov, cur) = (state.and_then(|s| s.governor.as_deref()), state.and_then(|s| s.cur_khz));
        match clock_mismatch(&policy.name, gov, cur.map(|k| k * 1000), policy.target_khz() * 1000) {
            Some(m) => off.push(m),
            None => pinned += 1,
        }
    }
    for (node, state) in [(&info.npu, &t.npu), (&info.ddr, &t.ddr)] {
        let (Some(node), Some(target)) = (node, node.as_ref().and_then(|n| n.target_hz())) else { continue };
        let (gov, cur) = (state.as_ref().and_then(|s| s.governor.as_deref()), state.as_ref().and_then(|s| s.cur_hz));
        match clock_mismatch(&node.name, gov, cur, target) {
            Some(m) => off.push(m),
            None => pinned += 1,
        }
    }
    if info.has_rkllm_soc() && info.ddr.is_none() {
        off.push("no dmc devfreq node, DDR clock cannot be pinned (bootloader without DMC support)".to_owned());
    }
    if off.is_empty() {
        Check::ok(NAME, format!("applied; {pinned} clocks at their maximum"))
    } else {
        Check::warn(NAME, format!("applied, but {} (throttling, or another tool changed them)", off.join("; ")))
    }
}

/// `None` when the node runs `userspace` at `want_hz`, else a description of the difference.
fn clock_mismatch(name: &str, governor: Option<&str>, cur_hz: Option<u64>, want_hz: u64) -> Option<String> {
    let governor = governor.unwrap_or("unknown governor");
    if governor == "userspace" && cur_hz == Some(want_hz) {
        return None;
    }
    let cur = cur_hz.map_or_else(|| "unknown".to_owned(), mhz);
    Some(format!("{name} runs {governor} at {cur}, want userspace at {}", mhz(want_hz)))
}

fn mhz(hz: u64) -> String {
    format!("{} MHz", hz / 1_000_000)
}

fn thermal_check(t: &Telemetry) -> Check {
    const NAME: &str = "temperature";
    let Some(hottest) = t.hottest() else {
        return Check::ok(NAME, "no thermal zones found");
    };
    let hot: Vec<String> = t
        .thermal
        .iter()
        .filter(|z| z.celsius >= WARN_CELSIUS)
        .map(|z| format!("{} {:.1} °C", z.kind, z.celsius))
        .collect();
    if hottest.celsius >= FAIL_CELSIUS {
        Check::fail(NAME, format!("{}: overheating, add cooling", hot.join(", ")))
    } else if hottest.celsius >= WARN_CELSIUS {
        Check::warn(NAME, format!("{}: the SoC throttles, expect lower speed", hot.join(", ")))
    } else {
        let zones = t.thermal.len();
        Check::ok(NAME, format!("max {:.1} °C ({}), {zones} zones", hottest.celsius, hottest.kind))
    }
}

/// `[4, 5, 6, 7]` → `4-7`; `[0, 2, 3]` → `0,2-3`.
fn cpu_list(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j > i {
            let _ = write!(out, "{}-{}", cpus[i], cpus[j]);
        } else {
            let _ = write!(out, "{}", cpus[i]);
        }
        i = j + 1;
    }
    out
}

/// Renders titled sections as an aligned plain-text report ending in an overall line:
///
/// ```text
/// Board
///   OK    SoC          RK3588 (Radxa ROCK 5B); big cores 4-7 (mask 0xf0)
///   FAIL  NPU driver   v0.9.6 (…): too old; …
///
/// Result: FAIL (1 failure, 0 warnings)
/// ```
pub fn render<S: AsRef<str>>(sections: &[(S, Vec<Check>)]) -> String {
    let width = sections.iter().flat_map(|(_, checks)| checks).map(|c| c.name.chars().count()).max().unwrap_or(0);
    let indent = " ".repeat(2 + 4 + 2 + width + 2);
    let mut out = String::new();
    let (mut fails, mut warns) = (0, 0);
    for (title, checks) in sections {
        let _ = writeln!(out, "{}", title.as_ref());
        if checks.is_empty() {
            out.push_str("  (no checks)\n");
        }
        for c in checks {
            match c.status {
                Status::Fail => fails += 1,
                Status::Warn => warns += 1,
                Status::Ok => {}
            }
            let mut lines = c.detail.lines();
            let first = lines.next().unwrap_or("");
            let line = format!("  {:<4}  {:<width$}  {first}", c.status.as_str(), c.name);
            let _ = writeln!(out, "{}", line.trim_end());
            for more in lines {
                let _ = writeln!(out, "{indent}{more}");
            }
        }
        out.push('\n');
    }
    let overall = sections.iter().map(|(_, checks)| worst(checks)).max().unwrap_or(Status::Ok);
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(out, "Result: {overall} ({}, {})", plural(fails, "failure"), plural(warns, "warning"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_is_max() {
        assert_eq!(worst(&[]), Status::Ok);
        assert_eq!(worst(&[Check::ok("a", ""), Check::fail("b", ""), Check::warn("c", "")]), Status::Fail);
    }

    #[test]
    fn cpu_ranges() {
        assert_eq!(cpu_list(&[4, 5, 6, 7]), "4-7");
        assert_eq!(cpu_list(&[0, 2, 3]), "0,2-3");
        assert_eq!(cpu_list(&[]), "");
    }

    #[test]
    fn render_aligns_and_summarises() {
        let board = vec![Check::ok("SoC", "RK3588"), Check::warn("temperature", "hot\nsecond line")];
        let runtime = vec![Check::fail("runtime", "missing")];
        let text = render(&[("Board", board), ("Runtime", runtime)]);
        let expected = "Board\n  OK    SoC          RK3588\n  WARN  temperature  hot\n                     second line\n\n\
                        Runtime\n  FAIL  runtime      missing\n\nResult: FAIL (1 failure, 1 warning)\n";
        assert_eq!(text, expected);
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn clock_mismatch_text() {
        assert_eq!(clock_mismatch("dmc", Some("userspace"), Some(2_112_000_000), 2_112_000_000), None);
        let m = clock_mismatch("policy4", Some("schedutil"), Some(408_000_000), 2_352_000_000).unwrap();
        assert_eq!(m, "policy4 runs schedutil at 408 MHz, want userspace at 2352 MHz");
    }
}
