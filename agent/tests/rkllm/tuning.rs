//! The board side: tuning with restore, telemetry, `doctor` on the fixture tree.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::json;

use super::*;

fn tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().strip_prefix(root).unwrap().to_owned(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn tuning_is_applied_on_load_restored_when_idle_and_at_shutdown_with_telemetry() {
    let sim = sim();
    let fx = board::fixture::FixtureCopy::rk3588().unwrap();
    let before = tree(fx.root());
    let root = fx.root().display().to_string();
    let mut n = npu(
        &sim.lib13,
        &[sim.model("Qwen3-0.6B-sim_w8a8_rk3588")],
        &["--sysfs-root", &root, "--tune", "on", "--tune-idle-restore", "1s"],
        &[],
    )
    .await;
    let gov = |p: &str| std::fs::read_to_string(fx.root().join(p)).unwrap().trim().to_owned();
    assert_eq!(tree(fx.root()), before, "nothing is written before a model loads");
    let (s, _) = n.agent.post("/v1/chat/completions", &chat(QWEN, "Hi", json!({"max_tokens": 4}))).await;
    assert_eq!(s, 200);
    assert_eq!(gov("sys/devices/system/cpu/cpufreq/policy4/scaling_governor"), "userspace");
    assert_eq!(gov("sys/devices/system/cpu/cpufreq/policy4/scaling_setspeed"), "2352000");
    assert_eq!(gov("sys/class/devfreq/fdab0000.npu/userspace/set_freq"), "1000000000");
    assert_eq!(gov("sys/class/devfreq/dmc/userspace/set_freq"), "2112000000");
    let m = n.agent.get("/metrics").await.1.as_str().unwrap().to_owned();
    assert!(m.contains("rockchip_llama_board_temperature_celsius{zone=\"npu-thermal\"}"), "{m}");
    assert!(m.contains("rockchip_llama_npu_load_percent{core=\"2\"}"), "{m}");
    assert!(m.contains("rockchip_llama_board_tuned 1"), "{m}");
    assert!(m.contains("rockchip_llama_clock_frequency_hertz{device=\"fdab0000.npu\"}"), "{m}");
    let (_, st) = n.agent.get("/internal/v1/status").await;
    assert_eq!((st["board"]["soc"].as_str(), st["big_core_mask"].as_str()), (Some("rk3588"), Some("0xf0")), "{st}");
    assert_eq!(st["tuning"]["applied"], true);
    assert_eq!(st["loaded"][0]["engine"], "rkllm");
    // Unload; after the idle period the clocks are restored byte for byte.
    let (s, _) = n.agent.post("/api/generate", &json!({"model": QWEN, "keep_alive": 0})).await;
    assert_eq!(s, 200);
    let t0 = Instant::now();
    while tree(fx.root()) != before {
        assert!(t0.elapsed() < Duration::from_secs(15), "clocks not restored after idle:\n{}", n.agent.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Re-pinned by the next load, restored by SIGTERM.
    let (s, _) = n.agent.post("/v1/chat/completions", &chat(QWEN, "Hi", json!({"max_tokens": 4}))).await;
    assert_eq!(s, 200);
    assert_eq!(gov("sys/devices/system/cpu/cpufreq/policy0/scaling_governor"), "userspace");
    let pid = n.agent.pid().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert_eq!(n.agent.wait_exit(Duration::from_secs(30)), Some(0));
    assert_eq!(tree(fx.root()), before, "SIGTERM restores the clocks");
}

#[tokio::test]
async fn doctor_reports_on_the_fixture_board() {
    let sim = sim();
    let fx = board::fixture::FixtureCopy::rk3588().unwrap();
    let dir = temp_dir("doctor");
    for m in [sim.model("Qwen3-0.6B-sim_w8a8_rk3588"), sim.model("Qwen3-0.6B-sim_w8a8_rk3576")] {
        std::os::unix::fs::symlink(&m, dir.join(m.file_name().unwrap())).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rockchip-llama-agent"))
        .arg("doctor")
        .arg("--sysfs-root")
        .arg(fx.root())
        .arg("--rkllm-lib")
        .arg(&sim.lib13)
        .arg("--models-dir")
        .arg(&dir)
        .args(["--probe-models", "true"])
        .env("RKLLM_SIM_SPEEDUP", "20")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    for want in ["RK3588", "0.9.8", "RKLLM 1.3.0, ABI 1.3", "0xf0", "7 zones", "loaded with context 4096"] {
        assert!(report.contains(want), "doctor report lacks {want:?}:\n{report}");
    }
    let rk3576 = report.lines().find(|l| l.contains("rk3576")).unwrap_or_default();
    assert!(rk3576.contains("FAIL"), "a model converted for another SoC blocks: {report}");
    assert_eq!(out.status.code(), Some(1), "a FAIL line means exit 1:\n{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An RK3588 on a mainline kernel: the NPU is an accel device bound to `rocket`, and there is
/// no rknpu. doctor says so by name, with the way out, and exits 1 rather than crashing.
#[tokio::test]
async fn doctor_names_the_mainline_rocket_driver() {
    let sim = sim();
    let fx = board::fixture::FixtureCopy::rk3588().unwrap();
    let root = fx.root();
    std::fs::remove_dir_all(root.join("sys/kernel/debug/rknpu")).unwrap();
    let dev = root.join("sys/devices/platform/fdab0000.npu");
    let rocket = root.join("sys/bus/platform/drivers/rocket");
    for d in [dev.join("accel/accel0"), rocket.clone(), root.join("sys/class/accel"), root.join("dev/accel")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::os::unix::fs::symlink(&rocket, dev.join("driver")).unwrap();
    std::os::unix::fs::symlink(&dev, dev.join("accel/accel0/device")).unwrap();
    std::os::unix::fs::symlink(dev.join("accel/accel0"), root.join("sys/class/accel/accel0")).unwrap();
    std::fs::write(root.join("dev/accel/accel0"), "").unwrap();
    let dir = temp_dir("doctor");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rockchip-llama-agent"))
        .arg("doctor")
        .arg("--sysfs-root")
        .arg(root)
        .arg("--rkllm-lib")
        .arg(&sim.lib13)
        .arg("--models-dir")
        .arg(&dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report.lines().find(|l| l.contains("NPU driver")).unwrap_or_default();
    assert!(line.contains("FAIL") && line.contains("rocket") && line.contains("/dev/accel/accel0"), "{report}");
    assert!(line.contains("vendor rknpu driver") && line.contains("vendor-based kernel"), "{report}");
    assert_eq!(out.status.code(), Some(1), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn llama_threads_are_pinned_to_the_big_cores_the_board_reports() {
    // A board whose fastest cluster is CPUs 0-3 (the fixture with policy0 raised), so the pin can
    // take effect on a small test machine: the CPUs it may use of those are the ones pinned.
    let fx = board::fixture::FixtureCopy::rk3588().unwrap();
    std::fs::write(fx.root().join("sys/devices/system/cpu/cpufreq/policy0/cpuinfo_max_freq"), "3000000\n").unwrap();
    let root = fx.root().display().to_string();
    let a = Agent::start(&[smollm2()], &["--engine", "llama", "--sysfs-root", &root]).await;
    let (s, r) = a.post("/v1/chat/completions", &chat(SMOL, "Hi", json!({"max_tokens": 2}))).await;
    assert_eq!(s, 200, "{r}");
    let line = a
        .log_with("llama.cpp threads pinned")
        .await
        .lines()
        .find(|l| l.contains("llama.cpp threads pinned"))
        .map(str::to_owned);
    let line = line.unwrap_or_else(|| panic!("no pinning line:\n{}", a.log_text()));
    assert!(line.contains("cpus=[0"), "{line}");
    let (_, st) = a.get("/internal/v1/status").await;
    assert_eq!(st["big_core_mask"], "0xf", "{st}");
}
