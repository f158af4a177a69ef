//! Client API keys of the gateway. Keys come from a Secret mounted as a file or passed in an env
//! variable, one per line:
//!
//! ```text
//! # a comment
//! sk-team-a                       any model
//! sk-team-b  smollm2,qwen3:0.6b   only these models (served names or aliases)
//! sha256:9f86d08...  smollm2      the key's SHA-256 in hex, so the Secret need not hold it
//! ```
//!
//! Only SHA-256 digests are kept in memory; a request's bearer token is hashed and compared with
//! every digest in constant time, so neither timing nor a memory dump gives a key away.

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::table::normalise;

/// What a valid key may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Model names the key may use; `None`: every model.
    models: Option<Vec<String>>,
}

impl Grant {
    /// The grant when no keys are configured.
    pub const fn everything() -> Self {
        Self { models: None }
    }

    /// Whether this key may use `model` (compared as routed: `name:latest` is `name`).
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.iter().any(|allowed| *allowed == normalise(model)))
    }
}

#[derive(Clone, Debug)]
struct Entry {
    digest: [u8; 32],
    grant: Grant,
}

/// The accepted keys.
#[derive(Clone, Debug)]
pub struct ClientKeys(Vec<Entry>);

/// Why a key list could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeysError {
    #[error("line {line}: 'sha256:' must be followed by 64 hex digits")]
    BadDigest { line: usize },
    #[error("the API key list holds no keys")]
    Empty,
}

impl ClientKeys {
    /// Keys from the text of a key file or env variable.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let key = words.next().unwrap_or_default();
            let digest = match key.strip_prefix("sha256:") {
                Some(hex_digest) => {
                    let mut d = [0u8; 32];
                    hex::decode_to_slice(hex_digest, &mut d).map_err(|_| KeysError::BadDigest { line: n + 1 })?;
                    d
                }
                None => Sha256::digest(key.as_bytes()).into(),
            };
            // The rest of the line: models separated by commas and/or spaces.
            let rest: Vec<&str> = words.flat_map(|w| w.split(',')).filter(|m| !m.is_empty()).collect();
            let models = (!rest.is_empty()).then(|| rest.into_iter().map(normalise).collect::<Vec<_>>());
            entries.push(Entry { digest, grant: Grant { models } });
        }
        if entries.is_empty() { Err(KeysError::Empty) } else { Ok(Self(entries)) }
    }

    /// The grant of the request's bearer token, or `None` when it carries no accepted key.
    /// Every entry is compared, each in constant time.
    pub fn check(&self, headers: &HeaderMap) -> Option<Grant> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))?;
        let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        let mut found = None;
        for e in &self.0 {
            if bool::from(e.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(e.grant.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {key}")).unwrap());
        h
    }

    #[test]
    fn keys_hashes_and_allow_lists() {
        let hashed = hex::encode(Sha256::digest(b"hidden"));
        let keys = ClientKeys::parse(&format!(
            "# team keys\nopen-key\n\nlimited smollm2, qwen3:0.6b\nsha256:{hashed} smollm2:latest\n"
        ))
        .unwrap();
        assert_eq!(keys.check(&HeaderMap::new()), None);
        assert_eq!(keys.check(&bearer("nope")), None);
        assert_eq!(keys.check(&bearer("open-ke")), None, "a prefix is not the key");
        assert!(keys.check(&bearer("open-key")).unwrap().allows("anything"));
        let limited = keys.check(&bearer("limited")).unwrap();
        assert!(limited.allows("smollm2") && limited.allows("smollm2:latest") && limited.allows("qwen3:0.6b"));
        assert!(!limited.allows("other"));
        let h = keys.check(&bearer("hidden")).expect("a key given by its digest is accepted");
        assert!(h.allows("smollm2") && !h.allows("qwen3:0.6b"));
    }

    #[test]
    fn bad_lists_are_refused() {
        assert_eq!(ClientKeys::parse("# nothing\n\n").unwrap_err(), KeysError::Empty);
        assert_eq!(ClientKeys::parse("ok\nsha256:abc\n").unwrap_err(), KeysError::BadDigest { line: 2 });
    }
}
