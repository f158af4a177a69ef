//! API keys: `Authorization: Bearer <key>` checked in constant time against every configured
//! key. Health probes and `GET|HEAD /` stay open so load balancers and Ollama clients' liveness
//! checks work without a key. The agent's accepted set can be the client keys and the cluster
//! token together ([`ApiKeys::merged`]), so the cluster gateway gets through with the token.

use std::{path::Path, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::Response,
};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, shape_for_path};

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("reading API keys from {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no API keys")]
    Empty { path: String },
}

/// The accepted keys.
#[derive(Debug, Clone)]
pub struct ApiKeys(Vec<String>);

impl ApiKeys {
    /// Keys from a file with one key per line; blank lines and `#` comments are skipped.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read { path: shown.clone(), source })?;
        Self::parse(&text).ok_or(KeysError::Empty { path: shown })
    }

    /// Keys from the file's text; `None` when it holds none.
    pub fn parse(text: &str) -> Option<Self> {
        let keys: Vec<String> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
        (!keys.is_empty()).then_some(Self(keys))
    }

    /// These keys and `other`'s: a request passes with a key from either set.
    pub fn merged(mut self, other: &Self) -> Self {
        self.0.extend(other.0.iter().cloned());
        self
    }

    /// Whether the request's bearer token is one of the keys. Every key is compared, each in
    /// constant time, so timing tells nothing about which or how much matched.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        else {
            return false;
        };
        let mut ok = 0u8;
        for k in &self.0 {
            ok |= u8::from(bool::from(k.as_bytes().ct_eq(given.trim().as_bytes())));
        }
        ok == 1
    }
}

/// Paths that never need a key: liveness, readiness and Ollama's `GET /` probe.
pub fn is_open(path: &str) -> bool {
    // Blob reads between boards carry the cluster token, not a client key: their handler checks it.
    matches!(path, "/healthz" | "/readyz" | "/") || path.starts_with(BLOB_PREFIX)
}

/// Route prefix of the agent's peer blob endpoint (`/internal/v1/blobs/sha256-<hex>`).
pub const BLOB_PREFIX: &str = "/internal/v1/blobs/";

/// Middleware (`from_fn_with_state(keys, require_key)`): `None` = no auth configured.
pub async fn require_key(State(keys): State<Option<Arc<ApiKeys>>>, req: Request, next: Next) -> Response {
    let Some(keys) = keys else { return next.run(req).await };
    let path = req.uri().path().to_owned();
    if is_open(&path) || keys.allows(req.headers()) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response_as(shape_for_path(&path))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn bearer_keys() {
        let keys = ApiKeys::parse("# comment\nk1\n\n secret \n").unwrap();
        let mut h = HeaderMap::new();
        assert!(!keys.allows(&h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        assert!(keys.allows(&h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secre"));
        assert!(!keys.allows(&h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic secret"));
        assert!(!keys.allows(&h));
        assert!(ApiKeys::parse("# only a comment\n").is_none());
    }

    #[test]
    fn merged_keys_accept_either_set() {
        let keys = ApiKeys::parse("client").unwrap().merged(&ApiKeys::parse("cluster-token").unwrap());
        let bearer = |k: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {k}")).unwrap());
            h
        };
        assert!(keys.allows(&bearer("client")));
        assert!(keys.allows(&bearer("cluster-token")));
        assert!(!keys.allows(&bearer("other")));
        assert!(!keys.allows(&HeaderMap::new()));
    }
}
