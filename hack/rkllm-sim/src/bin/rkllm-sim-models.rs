//! `rkllm-sim-models <dir>`: writes the simulated `.rkllm` files into `<dir>` and prints each
//! path on its own line (stdout carries only the paths, so `make rkllm-sim` can pass them on).

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: rkllm-sim-models <dir>");
        return ExitCode::from(2);
    };
    match rkllmrt::model::write_catalog(&PathBuf::from(dir)) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rkllm-sim-models: {e}");
            ExitCode::FAILURE
        }
    }
}
