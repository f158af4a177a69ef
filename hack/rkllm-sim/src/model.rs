//! The simulated `.rkllm` model files: format, parser and the generated catalog.
//!
//! The real format is proprietary (docs/rkllm-abi.md §17), and all the runtime exposes of it is
//! the metadata it logs at init. The sim's files carry exactly that metadata plus the speed and
//! memory figures of the vendor benchmark (also §17), as text, so a test can read or hand-edit
//! one.
//!
//! ```text
//! RKLLM-SIM
//! name=Qwen3-0.6B-sim
//! kind=model
//! max_context_limit=4096
//! ...
//! ```

use std::{
    fmt::Write as _,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

/// First line of every sim model file; anything else is "invalid rknn llm model magic".
pub const MAGIC: &str = "RKLLM-SIM";

/// What a file holds: a base model for `rkllm_init`, or an adapter for `rkllm_load_lora`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Model,
    Lora,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Lora => "lora",
        }
    }
}

/// Metadata of one simulated model file.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    pub name: String,
    pub kind: Kind,
    /// The base model's `name` (LoRA only).
    pub base: Option<String>,
    pub max_context_limit: i32,
    /// `RK3588`, `RK3576`, …: must match the chip (`RKLLM_SIM_PLATFORM`) at init.
    pub platform: String,
    pub dtype: String,
    pub npu_core_num: i32,
    pub toolkit_version: String,
    /// Time to first token for a 128-token prompt, ms; prefill costs `ttft_ms_128 / 128` per token.
    pub ttft_ms_128: f64,
    pub decode_tok_s: f64,
    /// NPU memory the model occupies at `n_batch = 1`, MB.
    pub memory_mb: f64,
    /// Width of the `GET_LAST_HIDDEN_LAYER` vectors.
    pub embd_size: usize,
    /// Qwen3-style thinking model (`<think>` blocks, `enable_thinking` honoured).
    pub thinking: bool,
}

/// Why a file could not be used.
#[derive(Debug)]
pub enum ParseError {
    Io(io::Error),
    /// No `RKLLM-SIM` first line.
    Magic,
    /// A key is missing or has an unparsable value.
    Field(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Magic => f.write_str("invalid rknn llm model magic"),
            Self::Field(k) => write!(f, "model file field {k} is missing or invalid"),
        }
    }
}

impl ModelFile {
    pub fn read(path: &Path) -> Result<Self, ParseError> {
        Self::parse(&fs::read_to_string(path).map_err(ParseError::Io)?)
    }

    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(ParseError::Magic);
        }
        let kv: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once('=')).collect();
        let get = |k: &'static str| kv.iter().rev().find(|(key, _)| *key == k).map(|(_, v)| v.trim());
        let req = |k: &'static str| get(k).filter(|v| !v.is_empty()).ok_or(ParseError::Field(k));
        fn num<T: std::str::FromStr>(k: &'static str, v: &str) -> Result<T, ParseError> {
            v.parse().map_err(|_| ParseError::Field(k))
        }
        let kind = match req("kind")? {
            "model" => Kind::Model,
            "lora" => Kind::Lora,
            _ => return Err(ParseError::Field("kind")),
        };
        if kind == Kind::Lora {
            // An adapter needs only its identity; the numbers belong to the base model.
            return Ok(Self {
                name: req("name")?.to_owned(),
                kind,
                base: Some(req("base")?.to_owned()),
                ..Self::lora_defaults()
            });
        }
        Ok(Self {
            name: req("name")?.to_owned(),
            kind,
            base: None,
            max_context_limit: num("max_context_limit", req("max_context_limit")?)?,
            platform: req("platform")?.to_owned(),
            dtype: req("dtype")?.to_owned(),
            npu_core_num: num("npu_core_num", req("npu_core_num")?)?,
            toolkit_version: req("toolkit_version")?.to_owned(),
            ttft_ms_128: num("ttft_ms_128", req("ttft_ms_128")?)?,
            decode_tok_s: num::<f64>("decode_tok_s", req("decode_tok_s")?)
                .and_then(|v| if v > 0.0 { Ok(v) } else { Err(ParseError::Field("decode_tok_s")) })?,
            memory_mb: num("memory_mb", req("memory_mb")?)?,
            embd_size: num("embd_size", req("embd_size")?)?,
            thinking: match req("thinking")? {
                "1" => true,
                "0" => false,
                _ => return Err(ParseError::Field("thinking")),
            },
        })
    }

    fn lora_defaults() -> Self {
        Self {
            name: String::new(),
            kind: Kind::Lora,
            base: None,
            max_context_limit: 0,
            platform: String::new(),
            dtype: String::new(),
            npu_core_num: 0,
            toolkit_version: String::new(),
            ttft_ms_128: 0.0,
            decode_tok_s: 1.0,
            memory_mb: 0.0,
            embd_size: 0,
            thinking: false,
        }
    }

    /// The file text (magic + `key=value` lines).
    pub fn render(&self) -> String {
        let mut s = format!("{MAGIC}\nname={}\nkind={}\n", self.name, self.kind.as_str());
        if let Some(base) = &self.base {
            let _ = writeln!(s, "base={base}");
            return s;
        }
        let _ = write!(
            s,
            "max_context_limit={}\nplatform={}\ndtype={}\nnpu_core_num={}\ntoolkit_version={}\n\
             ttft_ms_128={}\ndecode_tok_s={}\nmemory_mb={}\nembd_size={}\nthinking={}\n",
            self.max_context_limit,
            self.platform,
            self.dtype,
            self.npu_core_num,
            self.toolkit_version,
            self.ttft_ms_128,
            self.decode_tok_s,
            self.memory_mb,
            self.embd_size,
            u8::from(self.thinking),
        );
        s
    }
}

/// A base model of the catalog; the figures are the vendor's RK3588 v1.3.0 benchmark rows.
fn model(name: &str, platform: &str, ttft: f64, tok_s: f64, mem: f64, embd: usize, thinking: bool) -> ModelFile {
    ModelFile {
        name: name.to_owned(),
        kind: Kind::Model,
        base: None,
        max_context_limit: 4096,
        platform: platform.to_owned(),
        dtype: "W8A8".to_owned(),
        npu_core_num: 3,
        toolkit_version: "1.2.3".to_owned(),
        ttft_ms_128: ttft,
        decode_tok_s: tok_s,
        memory_mb: mem,
        embd_size: embd,
        thinking,
    }
}

/// The generated files, in the order `rkllm-sim-models` prints them: `(file name, content)`.
pub fn catalog() -> Vec<(&'static str, ModelFile)> {
    let mut lora = ModelFile::lora_defaults();
    lora.name = "Qwen3-0.6B-sim-lora".to_owned();
    lora.base = Some("Qwen3-0.6B-sim".to_owned());
    vec![
        ("Qwen3-0.6B-sim_w8a8_rk3588.rkllm", model("Qwen3-0.6B-sim", "RK3588", 199.09, 32.91, 791.11, 1024, true)),
        ("Qwen2-0.5B-sim_w8a8_rk3588.rkllm", model("Qwen2-0.5B-sim", "RK3588", 145.90, 41.58, 669.56, 896, false)),
        ("Phi3-3.8B-sim_w8a8_rk3588.rkllm", model("Phi3-3.8B-sim", "RK3588", 1017.28, 7.45, 3758.34, 3072, false)),
        ("Qwen3-0.6B-sim_w8a8_rk3576.rkllm", model("Qwen3-0.6B-sim", "RK3576", 199.09, 32.91, 791.11, 1024, true)),
        ("Qwen3-0.6B-sim_lora.rkllm", lora),
    ]
}

/// Writes every catalog file into `dir` (created if needed) and returns the paths in catalog
/// order. Each file is written to a temporary name and renamed, so a concurrent reader (another
/// test run sharing the cache dir) never sees a half-written model.
pub fn write_catalog(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    catalog().into_iter().map(|(file, m)| write_atomic(&dir.join(file), m.render().as_bytes())).collect()
}

/// Writes `bytes` to `path` via a sibling temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let mut tmp = path.as_os_str().to_owned();
    // pid + counter: unique across processes sharing a dir and across threads of this one.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp.push(format!(".tmp{}-{seq}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| path.to_path_buf())
}
