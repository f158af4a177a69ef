//! Ollama's `keep_alive`: how long a model stays loaded after a request (pure).
//!
//! Accepted as Ollama does: a Go duration string (`"5m"`, `"1h30m"`, `"250ms"`), a number of
//! seconds (`300`, `"300"`), a negative value = keep forever, `0` = unload when idle.

use std::time::Duration;

use serde_json::Value;

/// A value that is not a keep-alive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeepAliveError {
    #[error("keep_alive: invalid duration {0:?}")]
    Duration(String),
    #[error("keep_alive must be a duration string or a number of seconds, got {0}")]
    Type(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    Forever,
    /// Zero means unload as soon as the model is idle.
    For(Duration),
}

/// Ollama's default.
pub const DEFAULT: KeepAlive = KeepAlive::For(Duration::from_secs(300));

impl KeepAlive {
    pub fn from_json(v: &Value) -> Result<Self, KeepAliveError> {
        match v {
            Value::Number(n) => n.as_f64().map(Self::from_secs).ok_or_else(|| KeepAliveError::Type(n.to_string())),
            Value::String(s) => Self::parse(s),
            other => Err(KeepAliveError::Type(other.to_string())),
        }
    }

    pub fn parse(s: &str) -> Result<Self, KeepAliveError> {
        let s = s.trim();
        if let Ok(secs) = s.parse::<f64>() {
            return Ok(Self::from_secs(secs));
        }
        let (neg, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let d = parse_go_duration(body).ok_or_else(|| KeepAliveError::Duration(s.to_owned()))?;
        Ok(if neg && !d.is_zero() { Self::Forever } else { Self::For(d) })
    }

    fn from_secs(secs: f64) -> Self {
        if secs < 0.0 || !secs.is_finite() { Self::Forever } else { Self::For(Duration::from_secs_f64(secs.min(1e12))) }
    }

    pub fn is_zero(&self) -> bool {
        matches!(self, Self::For(d) if d.is_zero())
    }
}

/// Go's `time.ParseDuration` grammar: one or more `<decimal><unit>` with units ns, us, µs, ms,
/// s, m, h.
fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    (total.is_finite() && total < 1e12).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ollama_forms() {
        assert_eq!(KeepAlive::parse("5m").unwrap(), KeepAlive::For(Duration::from_secs(300)));
        assert_eq!(KeepAlive::parse("1h30m").unwrap(), KeepAlive::For(Duration::from_secs(5400)));
        assert_eq!(KeepAlive::parse("250ms").unwrap(), KeepAlive::For(Duration::from_millis(250)));
        assert_eq!(KeepAlive::parse("-1").unwrap(), KeepAlive::Forever);
        assert_eq!(KeepAlive::parse("-1m").unwrap(), KeepAlive::Forever);
        assert!(KeepAlive::parse("0").unwrap().is_zero());
        assert_eq!(KeepAlive::from_json(&json!(10)).unwrap(), KeepAlive::For(Duration::from_secs(10)));
        assert_eq!(KeepAlive::from_json(&json!(-1)).unwrap(), KeepAlive::Forever);
        assert!(KeepAlive::from_json(&json!(0)).unwrap().is_zero());
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in ["", "5x", "m", "1.2.3s", "abc"] {
            assert!(KeepAlive::parse(bad).is_err(), "{bad}");
        }
        assert!(KeepAlive::from_json(&json!(true)).is_err());
    }
}
