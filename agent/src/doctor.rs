//! `rockchip-llama-agent doctor`: the first command to run on a new board. A plain-text report
//! of the board (SoC, NPU driver, open-file limit, clocks, temperatures), the RKLLM runtime
//! (found, version, ABI, loadable) and every model in the store (engine, platform, context);
//! exits 1 when something blocks serving, 0 otherwise.

use std::sync::Arc;

use board::{BoardInfo, Check, Status, Sysfs, Telemetry, VENDOR_NOFILE};
use clap::Args;

use crate::{
    engine::{Engine, LoadSpec, rkllm::Runtime},
    models::{Format, ModelArgs, ModelEntry},
    node::{BoardArgs, TuneMode},
    npu::{self, NpuArgs},
};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub npu: NpuArgs,
    #[command(flatten)]
    pub board: BoardArgs,
    /// Also load each .rkllm model once (rkllm_init, then destroy) to prove it fits its
    /// context and NPU memory. Slow for large models.
    #[arg(long, env = "ROCKCHIP_LLAMA_DOCTOR_PROBE", default_value_t = false, action = clap::ArgAction::Set)]
    pub probe_models: bool,
}

/// Prints the report; returns whether nothing blocks serving (the process exits 1 when not).
pub fn run(args: &DoctorArgs) -> anyhow::Result<bool> {
    let fs = Sysfs::new(&args.board.sysfs_root);
    let info = BoardInfo::detect(&fs);
    let telemetry = Telemetry::read(&fs);
    let nofile = board::raise_nofile(VENDOR_NOFILE);
    let tuned = (args.board.tune == TuneMode::On).then_some(true);
    let npu_board = info.has_rkllm_soc();
    let mut board_checks = board::board_checks(&info, &telemetry, nofile, tuned);
    if let Some(c) = board_checks.iter_mut().find(|c| c.name == DRIVER_CHECK) {
        *c = with_mainline_driver(c.clone(), &Rocket::find(&fs), npu_board, info.npu_driver.is_some());
    }

    let mut rt_checks = Vec::new();
    let runtime = match npu::lib_path(&args.npu) {
        Err(e) => {
            rt_checks.push(if npu_board {
                Check::fail("runtime", e.to_string())
            } else {
                Check::warn("runtime", format!("{e} (CPU engine only)"))
            });
            None
        }
        Ok(path) => match Runtime::open(&path, args.npu.rkllm_abi) {
            Ok(rt) => {
                let v = rt.version.map_or_else(|| "unknown (override)".to_owned(), |v| v.to_string());
                rt_checks.push(Check::ok("runtime", format!("{} — RKLLM {v}, ABI {}", path.display(), rt.abi)));
                Some(Arc::new(rt))
            }
            Err(e) => {
                let e = e.to_string();
                rt_checks.push(if npu_board { Check::fail("runtime", e) } else { Check::warn("runtime", e) });
                None
            }
        },
    };
    rt_checks.push(match std::env::var("RKLLM_LOG_LEVEL") {
        Ok(l) => Check::ok("RKLLM_LOG_LEVEL", format!("{l} (passed through to the runtime)")),
        Err(_) => Check::ok("RKLLM_LOG_LEVEL", "unset (set 1 to have the runtime print per-run speed)"),
    });

    let registry = args.models.open()?;
    let models = registry.list();
    let mut model_checks = Vec::new();
    if models.is_empty() {
        model_checks.push(Check::warn("models", format!("no models in {}", args.models.models_dir.display())));
    }
    let soc = info.soc.as_ref().map(|s| s.id().to_ascii_lowercase());
    let engine = runtime
        .as_ref()
        .map(|rt| npu::engine(Arc::clone(rt), &args.npu, &args.models.models_dir, info.big_core_mask() as u32))
        .transpose()?;
    for m in &models {
        model_checks.push(model_check(m, soc.as_deref(), engine.as_deref(), args.probe_models));
    }

    let sections = [("Board", board_checks), ("Runtime", rt_checks), ("Models", model_checks)];
    print!("{}", board::render(&sections));
    let worst = sections.iter().map(|(_, c)| board::worst(c)).max().unwrap_or(Status::Ok);
    Ok(worst != Status::Fail)
}

/// The board section's driver check, which [`with_mainline_driver`] completes.
const DRIVER_CHECK: &str = "NPU driver";

/// What the runtime needs instead of the mainline driver, and how to get it.
const VENDOR_DRIVER_HINT: &str = "librkllmrt works only with Rockchip's vendor rknpu driver (>= 0.9.7, 0.9.8 \
     recommended), which mainline kernels do not have: boot a vendor-based kernel (Rockchip's 5.10/6.1 BSP, as in \
     the board maker's image, Armbian's vendor kernel or Joshua Riek's ubuntu-rockchip), or serve GGUF models on \
     the CPU engine (docs/board-setup.md §2)";

/// Traces of the mainline kernel's NPU driver, `rocket` (drivers/accel, Linux 6.18+): an accel
/// device (`/dev/accel/accelN`) whose driver is `rocket`, or the module loaded. The board crate
/// looks only for the vendor `rknpu` driver, so on a mainline kernel it would only say "not
/// found"; a user who sees an NPU device needs to hear that it is the wrong driver.
#[derive(Debug, Default, PartialEq, Eq)]
struct Rocket {
    /// Accel devices driven by rocket (`accel0`).
    bound: Vec<String>,
    /// Accel devices whose driver could not be read (likely rocket on a Rockchip board).
    unknown: Vec<String>,
    /// The module is loaded (`/sys/module/rocket`, `/proc/modules`).
    loaded: bool,
}

impl Rocket {
    fn find(fs: &Sysfs) -> Self {
        let mut r = Self::default();
        let mut devices = fs.list("sys/class/accel");
        for d in fs.list("dev/accel") {
            if !devices.contains(&d) {
                devices.push(d);
            }
        }
        for dev in devices.into_iter().filter(|d| d.starts_with("accel")) {
            // `driver` is a symlink into /sys/bus/*/drivers/<name>.
            let link = fs.path(&format!("sys/class/accel/{dev}/device/driver"));
            match std::fs::canonicalize(&link).ok().and_then(|t| Some(t.file_name()?.to_string_lossy().into_owned())) {
                Some(name) if name == "rocket" => r.bound.push(dev),
                Some(_) => {}
                None => r.unknown.push(dev),
            }
        }
        r.loaded = fs.exists("sys/module/rocket")
            || fs
                .probe("proc/modules")
                .is_some_and(|m| m.lines().any(|l| l.split_whitespace().next() == Some("rocket")));
        r
    }
}

/// The driver check from the board crate, told about the mainline driver: a failed check with
/// the way out when rocket holds the NPU (or is all there is), a warning when it is merely loaded
/// beside a working rknpu.
fn with_mainline_driver(check: Check, rocket: &Rocket, npu_board: bool, rknpu_found: bool) -> Check {
    let devs = |v: &[String]| v.iter().map(|d| format!("/dev/accel/{d}")).collect::<Vec<_>>().join(", ");
    let blocking = |detail: String| {
        if npu_board { Check::fail(DRIVER_CHECK, detail) } else { Check::warn(DRIVER_CHECK, detail) }
    };
    if !rocket.bound.is_empty() {
        return blocking(format!(
            "the NPU is driven by the mainline rocket driver ({}), not rknpu: {VENDOR_DRIVER_HINT}",
            devs(&rocket.bound)
        ));
    }
    if !rknpu_found && (rocket.loaded || !rocket.unknown.is_empty()) {
        let seen = if rocket.loaded {
            "the mainline rocket module is loaded".to_owned()
        } else {
            format!("an accel device ({}) is there, most likely the mainline rocket driver", devs(&rocket.unknown))
        };
        return blocking(format!("rknpu driver not found and {seen}: {VENDOR_DRIVER_HINT}"));
    }
    if rocket.loaded {
        return Check::warn(
            DRIVER_CHECK,
            format!(
                "{}; the mainline rocket module is loaded too: if it binds the NPU first, the runtime cannot use \
                 it (blacklist it: `echo blacklist rocket > /etc/modprobe.d/rocket.conf`)",
                check.detail
            ),
        );
    }
    check
}

/// The platform a `.rkllm` file name says it was converted for (`…_rk3588.rkllm`, `-rk3576-`).
fn platform_in_name(file: &str) -> Option<&'static str> {
    let f = file.to_ascii_lowercase();
    ["rk3588", "rk3576", "rk3562", "rv1126b"].into_iter().find(|p| f.contains(p))
}

fn model_check(m: &ModelEntry, soc: Option<&str>, engine: Option<&dyn Engine>, probe: bool) -> Check {
    // The file name is the check's name (it is what the user sees on disk); the model name
    // clients use goes in the detail.
    let name = m.file_name.clone();
    let m_name = &m.name;
    if m.format == Format::Gguf {
        return Check::ok(name, format!("\"{m_name}\": GGUF on the CPU engine (llama.cpp), context {}", m.context));
    }
    if let (Some(max), ctx) = (m.context_max, m.context)
        && ctx > max
    {
        return Check::fail(name, format!("context {ctx} exceeds the {max} the file was converted for"));
    }
    match (platform_in_name(&m.file_name), soc) {
        (Some(p), Some(s)) if !s.starts_with(p) && !p.starts_with(s) => {
            return Check::fail(name, format!("converted for {p}, this board is {s}: reconvert with rkllm-toolkit"));
        }
        (None, _) if !probe => {
            return Check::warn(name, format!("platform unknown from the file name; context {}", m.context));
        }
        _ => {}
    }
    let Some(engine) = engine else {
        return Check::warn(name, format!("context {}; not loadable here: no RKLLM runtime", m.context));
    };
    if !probe {
        return Check::ok(name, format!("\"{m_name}\": RKLLM, context {} (--probe-models loads it once)", m.context));
    }
    let spec = LoadSpec {
        path: m.path.clone(),
        n_ctx: m.context,
        parallel: 1,
        threads: 1,
        prefix_cache: false,
        family: m.family.clone(),
        names: m.known_as().into_iter().map(str::to_owned).collect(),
        sampling: m.settings.sampling.clone(),
        chat_template: None,
        npu_cores: m.settings.npu_cores,
        embed_flash: m.settings.embed_flash,
        prompt_caches: Vec::new(),
        loras: Vec::new(),
        cpus: Vec::new(),
    };
    match engine.load(&spec) {
        Ok(_) => Check::ok(name, format!("\"{m_name}\": loaded with context {} and unloaded", m.context)),
        Err(e) => Check::fail(name, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake root with what a mainline kernel shows of its NPU driver.
    fn tree(name: &str, bound: Option<&str>, modules: &str) -> Sysfs {
        let root = std::env::temp_dir().join(format!("rl-doctor-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dev = root.join("sys/devices/platform/fdab0000.npu");
        std::fs::create_dir_all(root.join("dev/accel")).unwrap();
        std::fs::write(root.join("dev/accel/accel0"), "").unwrap();
        std::fs::create_dir_all(dev.join("accel/accel0")).unwrap();
        std::fs::create_dir_all(root.join("sys/class/accel")).unwrap();
        std::os::unix::fs::symlink(dev.join("accel/accel0"), root.join("sys/class/accel/accel0")).unwrap();
        std::os::unix::fs::symlink(&dev, dev.join("accel/accel0/device")).unwrap();
        if let Some(driver) = bound {
            let d = root.join("sys/bus/platform/drivers").join(driver);
            std::fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::symlink(&d, dev.join("driver")).unwrap();
        }
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::write(root.join("proc/modules"), modules).unwrap();
        Sysfs::new(root)
    }

    const ROCKET_MODULE: &str = "rocket 36864 0 - Live 0x0000000000000000\ndrm_shmem_helper 20480 1 rocket, Live 0x0\n";

    #[test]
    fn the_mainline_rocket_driver_is_named_and_fails_the_check() {
        let fs = tree("bound", Some("rocket"), ROCKET_MODULE);
        let r = Rocket::find(&fs);
        assert_eq!(r, Rocket { bound: vec!["accel0".into()], unknown: vec![], loaded: true });
        let not_found = Check::fail(DRIVER_CHECK, "rknpu driver not found");
        let c = with_mainline_driver(not_found.clone(), &r, true, false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("mainline rocket driver (/dev/accel/accel0)"), "{}", c.detail);
        assert!(c.detail.contains("vendor rknpu driver") && c.detail.contains("vendor-based kernel"), "{}", c.detail);
        // Bound to rocket, the NPU is unusable for the runtime even if an rknpu module reports a version.
        let ok = Check::ok(DRIVER_CHECK, "v0.9.8 (sys/module/rknpu/version)");
        assert_eq!(with_mainline_driver(ok, &r, true, true).status, Status::Fail);
        // Off an RKLLM SoC nothing blocks serving (CPU engine only).
        assert_eq!(with_mainline_driver(not_found, &r, false, false).status, Status::Warn);
        let _ = std::fs::remove_dir_all(&fs.root);
    }

    #[test]
    fn an_accel_device_or_a_loaded_module_explains_a_missing_rknpu() {
        let fs = tree("unbound", None, "");
        let r = Rocket::find(&fs);
        assert_eq!(r, Rocket { bound: vec![], unknown: vec!["accel0".into()], loaded: false });
        let c = with_mainline_driver(Check::fail(DRIVER_CHECK, "rknpu driver not found"), &r, true, false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("/dev/accel/accel0") && c.detail.contains("rocket"), "{}", c.detail);
        // Another accel driver (not rocket) is none of this check's business.
        let other = tree("other", Some("intel_vpu"), "");
        let ok = Check::ok(DRIVER_CHECK, "v0.9.8");
        assert_eq!(with_mainline_driver(ok.clone(), &Rocket::find(&other), true, true), ok);
        // Loaded beside a working rknpu: a warning with the blacklist line.
        let r = Rocket { loaded: true, ..Rocket::default() };
        let c = with_mainline_driver(ok, &r, true, true);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.starts_with("v0.9.8; ") && c.detail.contains("blacklist rocket"), "{}", c.detail);
        let _ = std::fs::remove_dir_all(&fs.root);
        let _ = std::fs::remove_dir_all(&other.root);
    }

    #[test]
    fn a_board_without_any_of_it_is_left_alone() {
        let root = std::env::temp_dir().join(format!("rl-doctor-{}-empty", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let r = Rocket::find(&Sysfs::new(&root));
        assert_eq!(r, Rocket::default());
        let c = Check::fail(DRIVER_CHECK, "rknpu driver not found");
        assert_eq!(with_mainline_driver(c.clone(), &r, true, false), c);
        let _ = std::fs::remove_dir_all(&root);
    }
}
