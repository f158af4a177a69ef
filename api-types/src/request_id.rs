//! Request ids: one per request, taken from a sane incoming `x-request-id` (a proxy's or the
//! gateway's, so one id follows a request across hops) or made here, echoed in the response
//! header, and available to the code handling the request through [`current`]. Error messages
//! for internal failures name it (see [`crate::error`]).

use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    sync::Arc,
    time::Instant,
};

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};

/// The header carrying the id in both directions.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: RequestId;
}

/// A request id: at most 64 characters of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let n = RandomState::new().hash_one(Instant::now());
        Self(format!("{n:016x}").into())
    }

    /// An id a client sent, if it is one we can log and echo safely.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        ok.then(|| Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for RequestId {
    fn from(s: &str) -> Self {
        Self::parse(s).unwrap_or_else(Self::generate)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of the request being handled, inside [`layer`]'s scope. Streams that outlive the
/// handler capture it when they are created.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Middleware (`axum::middleware::from_fn(request_id::layer)`): assigns the id, runs the rest of
/// the stack in its scope, and echoes it in the response.
pub async fn layer(req: Request, next: Next) -> Response {
    let id = req.headers().get(&HEADER).and_then(|v| v.to_str().ok()).and_then(RequestId::parse);
    let id = id.unwrap_or_else(RequestId::generate);
    let mut resp = CURRENT.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert(HEADER.clone(), v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_ids_are_taken() {
        assert_eq!(RequestId::parse("gw-1.abc_2").unwrap().as_str(), "gw-1.abc_2");
        assert!(RequestId::parse("").is_none());
        assert!(RequestId::parse("a b").is_none());
        assert!(RequestId::parse("x\r\ny").is_none());
        assert!(RequestId::parse(&"a".repeat(65)).is_none());
        assert_eq!(RequestId::generate().as_str().len(), 16);
        assert!(current().is_none(), "no id outside a request");
    }
}
