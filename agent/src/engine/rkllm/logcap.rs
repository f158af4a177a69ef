//! The runtime reports why `rkllm_init` failed only in its log (`E rkllm: max_context[…] must be
//! less than the model's max_context_limit[…]`, `failed to malloc npu memory`, `invalid rknn llm
//! model magic`) and returns a bare -1. To give users that reason in the API's error, the agent
//! routes stdout and stderr (the vendor does not say which it logs to) through one pipe for the
//! duration of the call, flushing C stdio buffers before and after, passes every byte on to the
//! agent's stderr afterwards, and reads the reason from the captured lines.

use std::{
    io::{Read, Write},
    os::fd::AsFd,
    sync::Mutex,
};

/// One capture at a time: fds 1 and 2 are process-wide.
static LOCK: Mutex<()> = Mutex::new(());

/// Runs `f` with stdout and stderr captured; returns its result and what was written meanwhile.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, String) {
    let _one = LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = std::io::stderr().flush();
    let _ = std::io::stdout().flush();
    super::rt::flush_c_stdio();
    let setup = (|| -> std::io::Result<_> {
        let (r, w) = rustix::pipe::pipe()?;
        let saved_err = rustix::io::dup(std::io::stderr().as_fd())?;
        let saved_out = rustix::io::dup(std::io::stdout().as_fd())?;
        rustix::stdio::dup2_stderr(&w)?;
        if let Err(e) = rustix::stdio::dup2_stdout(&w) {
            let _ = rustix::stdio::dup2_stderr(&saved_err);
            return Err(e.into());
        }
        Ok((r, w, saved_err, saved_out))
    })();
    let Ok((r, w, saved, saved_out)) = setup else {
        return (f(), String::new());
    };
    // Drain concurrently so a chatty runtime cannot fill the pipe and block itself.
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::fs::File::from(r).read_to_end(&mut v);
        v
    });
    let out = f();
    let _ = std::io::stderr().flush();
    let _ = std::io::stdout().flush();
    super::rt::flush_c_stdio();
    let _ = rustix::stdio::dup2_stderr(&saved);
    let _ = rustix::stdio::dup2_stdout(&saved_out);
    drop(w);
    let bytes = reader.join().unwrap_or_default();
    let _ = std::io::stderr().write_all(&bytes);
    (out, String::from_utf8_lossy(&bytes).into_owned())
}

/// Why init failed, read from the runtime's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitFailure {
    ContextLimit { requested: u32, limit: u32 },
    NpuMemory(String),
    BadModel(String),
    Other(String),
}

pub fn init_failure(log: &str) -> InitFailure {
    for line in log.lines() {
        if let (Some(a), Some(b)) = (bracket_after(line, "max_context["), bracket_after(line, "max_context_limit[")) {
            return InitFailure::ContextLimit { requested: a, limit: b };
        }
        if line.contains("failed to malloc npu memory") {
            return InitFailure::NpuMemory(line.trim().to_owned());
        }
        if line.contains("invalid rknn llm model magic") || line.contains("does not match the chip") {
            return InitFailure::BadModel(line.trim().to_owned());
        }
    }
    let errors: Vec<&str> = log.lines().map(str::trim).filter(|l| l.starts_with("E ")).collect();
    InitFailure::Other(if errors.is_empty() { "the runtime printed no reason".into() } else { errors.join("; ") })
}

/// The NPU core count a successful init reports for the model file (`npu_core_num: 3`).
pub fn npu_core_num(log: &str) -> Option<u32> {
    log.lines().find_map(|l| {
        let rest = &l[l.find("npu_core_num:")? + "npu_core_num:".len()..];
        rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    })
}

fn bracket_after(line: &str, key: &str) -> Option<u32> {
    let rest = &line[line.find(key)? + key.len()..];
    rest[..rest.find(']')?].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_from_vendor_lines() {
        let log =
            "I rkllm: loading\nE rkllm: max_context[8192] must be less than the model's max_context_limit[4096]\n";
        assert_eq!(init_failure(log), InitFailure::ContextLimit { requested: 8192, limit: 4096 });
        assert!(matches!(
            init_failure("E RKNN: failed to malloc npu memory, size: 1, flags: 0x0"),
            InitFailure::NpuMemory(_)
        ));
        assert!(matches!(init_failure("E rkllm: invalid rknn llm model magic"), InitFailure::BadModel(_)));
        assert_eq!(init_failure("E rkllm: rkllm_init failed"), InitFailure::Other("E rkllm: rkllm_init failed".into()));
    }

    #[test]
    fn core_count_from_the_init_line() {
        let log = "I rkllm: rkllm-toolkit version: 1.2.1, max_context_limit: 4096, npu_core_num: 3, target_platform: RK3588\n";
        assert_eq!(npu_core_num(log), Some(3));
        assert_eq!(npu_core_num("I rkllm: loading"), None);
    }

    #[test]
    fn capture_passes_through_and_returns_text() {
        // Straight to fds 1 and 2 like a C library (the test harness captures `eprintln!`).
        let (v, text) = capture(|| {
            let _ = std::io::stderr().write_all(b"E rkllm: hello from the runtime\n");
            let _ = std::io::stdout().write_all(b"I rkllm: and on stdout\n");
            let _ = std::io::stdout().flush();
            7
        });
        assert_eq!(v, 7);
        assert!(text.contains("hello from the runtime") && text.contains("and on stdout"), "{text:?}");
    }
}
