//! Request-field parsing shared by the OpenAI and Ollama handlers, and response formatting both
//! use (ids, timestamps). Pure.

use std::time::{Instant, SystemTime};

use api_types::ApiError;
use serde_json::Value;

use crate::keepalive::KeepAlive;

/// OpenAI/Ollama `stop`: a string or a list of strings.
pub fn parse_stop(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad("stop", "stop must be a string or a list of strings"))
            })
            .collect(),
        Some(_) => Err(ApiError::bad("stop", "stop must be a string or a list of strings")),
    }
}

/// Ollama's `keep_alive` (also accepted by the explicit load route): absent or null = default.
pub fn keep_alive(v: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    v.filter(|v| !v.is_null())
        .map(KeepAlive::from_json)
        .transpose()
        .map_err(|e| ApiError::bad("keep_alive", e.to_string()))
}

/// OpenAI and Ollama seeds are 64-bit; llama.cpp's are 32-bit. Fold the halves together so
/// distinct seeds stay distinct as far as possible and equal seeds stay equal.
pub fn fold_seed(seed: i64) -> u32 {
    let s = seed as u64;
    (s ^ (s >> 32)) as u32
}

/// Seconds since the epoch, for OpenAI's `created`.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A short random id (`chatcmpl-…`), unique enough for response ids.
pub fn new_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let n = RandomState::new().hash_one(Instant::now());
    format!("{prefix}-{n:016x}")
}

/// RFC 3339 UTC timestamp with nanoseconds, as Ollama writes `created_at`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, mo, da) = crate::template::civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!("{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}.{:09}Z", s / 3600, s / 60 % 60, s % 60, d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stop_forms() {
        assert_eq!(parse_stop(Some(&json!("x"))).unwrap(), vec!["x"]);
        assert_eq!(parse_stop(Some(&json!(["a", "b"]))).unwrap(), vec!["a", "b"]);
        assert!(parse_stop(Some(&json!(3))).is_err());
    }

    #[test]
    fn seeds_and_timestamps() {
        assert_eq!(fold_seed(7), 7);
        assert_ne!(fold_seed(1 << 32), fold_seed(0));
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        assert!(keep_alive(Some(&json!("5x"))).is_err());
        assert_eq!(keep_alive(Some(&Value::Null)).unwrap(), None);
    }
}
