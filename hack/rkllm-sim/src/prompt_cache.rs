//! Prompt-cache files (`prompt_cache_params.save_prompt_cache`, `rkllm_load_prompt_cache`).
//!
//! The vendor file holds the prefill state; what matters to a caller is which token prefix it
//! covers, because later runs only skip the longest common prefix with it. So the sim stores
//! the token strings of the saved prompt, behind a magic line that distinguishes it from
//! anything else a wrong path might point at.

use std::{fs, io, path::Path};

use serde_json::{Value, json};

use crate::model::write_atomic;

pub(crate) const MAGIC: &str = "RKLLM-SIM-PROMPT-CACHE 1";
/// Where the vendor writes when `prompt_cache_path` is NULL.
pub(crate) const DEFAULT_PATH: &str = "./prompt_cache.bin";

/// Writes the cache atomically (temporary file + rename).
pub(crate) fn save(path: &Path, model: &str, tokens: &[String]) -> io::Result<()> {
    let body = json!({ "model": model, "tokens": tokens });
    write_atomic(path, format!("{MAGIC}\n{body}\n").as_bytes()).map(drop)
}

/// Reads a cache written by [`save`] for `model`.
pub(crate) fn load(path: &Path, model: &str) -> Result<Vec<String>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read prompt cache {}: {e}", path.display()))?;
    let body = text
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.strip_prefix('\n'))
        .ok_or_else(|| format!("{} is not a prompt cache file (bad magic)", path.display()))?;
    let value: Value = serde_json::from_str(body).map_err(|e| format!("corrupt prompt cache: {e}"))?;
    let cached_model = value.get("model").and_then(Value::as_str).unwrap_or_default();
    if cached_model != model {
        return Err(format!("prompt cache was saved by model {cached_model}, not {model}"));
    }
    value
        .get("tokens")
        .and_then(Value::as_array)
        .and_then(|ts| ts.iter().map(|t| t.as_str().map(str::to_owned)).collect())
        .ok_or_else(|| "corrupt prompt cache: no token list".to_owned())
}
