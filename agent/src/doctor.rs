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
    let board_checks = board::board_checks(&info, &telemetry, nofile, tuned);
    let npu_board = info.has_rkllm_soc();

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
