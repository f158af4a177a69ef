//! Test support: runs the real agent binary on a loopback port chosen by the OS and talks to
//! it over TCP. Each `Agent` owns its process and temporary models directory and removes both
//! when dropped, also when a test fails.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

/// Test models from `ROCKCHIP_LLAMA_TEST_MODELS` (colon-separated; `make test` sets it from
/// `hack/fetch-models.sh`): SmolLM2 first, then Gemma 3 270M.
pub fn model_paths() -> Vec<PathBuf> {
    let v = std::env::var("ROCKCHIP_LLAMA_TEST_MODELS")
        .expect("ROCKCHIP_LLAMA_TEST_MODELS is not set: run the tests through `make test` (it fetches the models)");
    v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect()
}

pub fn smollm2() -> PathBuf {
    model_paths().into_iter().next().expect("SmolLM2 path")
}

pub fn gemma() -> PathBuf {
    model_paths().into_iter().nth(1).expect("Gemma path: ROCKCHIP_LLAMA_TEST_MODELS needs both models")
}

pub const SMOL: &str = "smollm2-135m-instruct";

/// What `make rkllm-sim` built (`ROCKCHIP_LLAMA_TEST_RKLLM`, colon-separated): the ABI 1.2
/// library, the ABI 1.3 library, then the simulated model files.
pub struct Sim {
    pub lib12: PathBuf,
    pub lib13: PathBuf,
    pub models: Vec<PathBuf>,
}

pub fn sim() -> Sim {
    let v = std::env::var("ROCKCHIP_LLAMA_TEST_RKLLM")
        .expect("ROCKCHIP_LLAMA_TEST_RKLLM is not set: run the tests through `make test` (it builds rkllm-sim)");
    let mut it = v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from);
    let (lib12, lib13) = (it.next().expect("1.2 library"), it.next().expect("1.3 library"));
    Sim { lib12, lib13, models: it.collect() }
}

impl Sim {
    /// The model file whose name starts with `prefix` (e.g. `Qwen3-0.6B-sim_w8a8_rk3588`).
    pub fn model(&self, prefix: &str) -> PathBuf {
        self.models
            .iter()
            .find(|m| m.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap_or_else(|| panic!("no simulated model {prefix} in {:?}", self.models))
            .clone()
    }

    /// Both ABIs, for tests that run once per ABI.
    pub fn libs(&self) -> [(&'static str, PathBuf); 2] {
        [("1.2", self.lib12.clone()), ("1.3", self.lib13.clone())]
    }
}

/// Reads a trace file written by rkllm-sim (`RKLLM_SIM_TRACE`).
pub fn trace_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// The `key=value` field of a trace line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The engine the shared integration suites (openai, ollama, errors, scheduling, config) run
/// against: `ROCKCHIP_LLAMA_TEST_ENGINE` = `llama` (default) | `rkllm-1.2` | `rkllm-1.3`. The
/// RKLLM variants drive the simulated Qwen3 0.6B through rkllm-sim built for that ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestEngine {
    Llama,
    Rkllm12,
    Rkllm13,
}

pub fn engine() -> TestEngine {
    match std::env::var("ROCKCHIP_LLAMA_TEST_ENGINE").as_deref() {
        Err(_) | Ok("" | "llama") => TestEngine::Llama,
        Ok("rkllm-1.2") => TestEngine::Rkllm12,
        Ok("rkllm-1.3") => TestEngine::Rkllm13,
        Ok(other) => panic!("ROCKCHIP_LLAMA_TEST_ENGINE={other}: expected llama, rkllm-1.2 or rkllm-1.3"),
    }
}

/// The suites run on the NPU engine (rkllm-sim).
pub fn rkllm() -> bool {
    engine() != TestEngine::Llama
}

pub const QWEN3_SIM: &str = "qwen3-0.6b-sim";
pub const QWEN2_SIM: &str = "qwen2-0.5b-sim";

/// The model the suites talk to: SmolLM2 on llama.cpp, the simulated Qwen3 0.6B on RKLLM.
pub fn primary() -> PathBuf {
    if rkllm() { sim().model("Qwen3-0.6B-sim_w8a8_rk3588") } else { smollm2() }
}

pub fn primary_name() -> &'static str {
    if rkllm() { QWEN3_SIM } else { SMOL }
}

/// A second model of the same engine: Gemma 3 270M, or the simulated Qwen2 0.5B (no thinking).
pub fn secondary() -> PathBuf {
    if rkllm() { sim().model("Qwen2-0.5B-sim_w8a8_rk3588") } else { gemma() }
}

pub fn secondary_name() -> &'static str {
    if rkllm() { QWEN2_SIM } else { "gemma-3-270m" }
}

/// `serve` flags selecting the engine under test.
pub fn engine_args() -> Vec<String> {
    let lib = match engine() {
        TestEngine::Llama => return Vec::new(),
        TestEngine::Rkllm12 => sim().lib12,
        TestEngine::Rkllm13 => sim().lib13,
    };
    vec!["--engine".into(), "rkllm".into(), "--rkllm-lib".into(), lib.display().to_string()]
}

/// Environment for the engine under test: the simulator at 20x the vendor's speed.
pub fn engine_env() -> Vec<(&'static str, String)> {
    if rkllm() { vec![("RKLLM_SIM_SPEEDUP", "20".to_owned())] } else { Vec::new() }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("rl-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct Agent {
    child: Child,
    pub base: String,
    pub dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
    pub client: reqwest::Client,
}

impl Agent {
    /// Starts `serve` with the given models symlinked into a fresh models dir and extra flags.
    pub async fn start(models: &[PathBuf], extra: &[&str]) -> Self {
        let dir = temp_dir("agent");
        let models_dir = dir.join("models");
        std::fs::create_dir_all(&models_dir).unwrap();
        for m in models {
            std::os::unix::fs::symlink(m, models_dir.join(m.file_name().unwrap())).unwrap();
        }
        Self::start_in(dir, extra).await
    }

    /// Starts `serve` on the engine under test ([`engine`]) with `models` and extra flags.
    pub async fn serve(models: &[PathBuf], extra: &[&str]) -> Self {
        Self::serve_env(models, extra, &[]).await
    }

    /// [`Agent::serve`] with extra environment variables.
    pub async fn serve_env(models: &[PathBuf], extra: &[&str], env: &[(&str, String)]) -> Self {
        let dir = temp_dir("agent");
        let models_dir = dir.join("models");
        std::fs::create_dir_all(&models_dir).unwrap();
        for m in models {
            std::os::unix::fs::symlink(m, models_dir.join(m.file_name().unwrap())).unwrap();
        }
        Self::serve_in_env(dir, extra, env).await
    }

    /// [`Agent::serve`] on a prepared directory (its `models/` subdirectory).
    pub async fn serve_in_env(dir: PathBuf, extra: &[&str], env: &[(&str, String)]) -> Self {
        let flags = engine_args();
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        let mut envs = engine_env();
        envs.extend(env.iter().map(|(k, v)| (*k, v.clone())));
        Self::start_in_env(dir, &args, &envs).await
    }

    pub async fn start_in(dir: PathBuf, extra: &[&str]) -> Self {
        Self::start_in_env(dir, extra, &[]).await
    }

    /// Starts with models symlinked in, extra flags and extra environment variables.
    pub async fn start_env(models: &[PathBuf], extra: &[&str], env: &[(&str, String)]) -> Self {
        let dir = temp_dir("agent");
        let models_dir = dir.join("models");
        std::fs::create_dir_all(&models_dir).unwrap();
        for m in models {
            std::os::unix::fs::symlink(m, models_dir.join(m.file_name().unwrap())).unwrap();
        }
        Self::start_in_env(dir, extra, env).await
    }

    pub async fn start_in_env(dir: PathBuf, extra: &[&str], env: &[(&str, String)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rockchip-llama-agent"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--threads", "2"])
            .arg("--models-dir")
            .arg(dir.join("models"))
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("ROCKCHIP_LLAMA_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the agent");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("addr=") {
                    let addr: String = line[i + 5..].chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = tx.send(addr);
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("agent did not start; log:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        let agent = Self {
            child,
            base: format!("http://{addr}"),
            dir,
            log,
            client: reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap(),
        };
        agent.wait_ready().await;
        agent
    }

    async fn wait_ready(&self) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(120) {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("agent never became ready; log:\n{}", self.log_text());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log once it contains `needle`: the agent writes a line before answering, but the
    /// thread reading its stderr may not have read it yet on a busy machine. Waits at most 30 s
    /// (a backstop, not the bound: the line is normally there at once); the log either way.
    pub async fn log_with(&self, needle: &str) -> String {
        let t0 = Instant::now();
        loop {
            let log = self.log_text();
            if log.contains(needle) || t0.elapsed() > Duration::from_secs(30) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (bounded) and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.client.post(self.url(path)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// POSTs and returns the SSE `data:` payloads (the `[DONE]` marker included as a string).
    pub async fn sse(&self, path: &str, body: &Value) -> Vec<Value> {
        let r = self.client.post(self.url(path)).json(body).send().await.unwrap();
        assert_eq!(r.status(), 200, "SSE request failed");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let text = r.text().await.unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap_or(Value::String(d.to_owned())))
            .collect()
    }

    /// POSTs and returns the NDJSON objects.
    pub async fn ndjson(&self, path: &str, body: &Value) -> Vec<Value> {
        let r = self.client.post(self.url(path)).json(body).send().await.unwrap();
        assert_eq!(r.status(), 200, "NDJSON request failed");
        let text = r.text().await.unwrap();
        text.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// A metric's value summed over label sets whose text contains `label_filter`.
    pub async fn metric(&self, name: &str, label_filter: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        let text = body.as_str().unwrap_or_default().to_owned();
        text.lines()
            .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' ')))
            .filter(|l| l.contains(label_filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn models_dir(a: &Agent) -> PathBuf {
    a.dir.join("models")
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
