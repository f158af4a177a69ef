//! `GET`/`HEAD /internal/v1/blobs/sha256-<hex>`: model blobs for peer boards, with `Range`,
//! authenticated by the cluster token (not client API keys), a bounded number at a time. A blob
//! still arriving is served too (`X-Blob-Complete: false`): the body waits for bytes as they land.

use std::time::Duration;

use api_types::{ApiError, auth::ApiKeys, error::ErrorShape};
use axum::{
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;

use super::AppState;
use crate::store::{BlobStore, ReadError, valid_sha};

#[cfg(test)]
#[path = "blobs_tests.rs"]
mod tests;

/// How long a reader waits for the next bytes of an arriving blob before giving up (the receiver
/// then continues from another source).
pub const ARRIVAL_WAIT: Duration = Duration::from_secs(30);

fn err(e: ApiError) -> Response {
    e.into_response_as(ErrorShape::OpenAi)
}

pub async fn blob(
    State(st): State<AppState>,
    method: Method,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond(st.library.store(), st.cluster_token.as_deref(), &method, &name, &headers)
}

/// The response for one blob request (the handler without axum's extraction, so store tests
/// can serve blobs from a bare store).
pub fn respond(
    store: &BlobStore,
    token: Option<&ApiKeys>,
    method: &Method,
    name: &str,
    headers: &HeaderMap,
) -> Response {
    let Some(token) = token else {
        return err(ApiError::NotFound(
            "blob serving is off: start the agent with --cluster-token-file to serve peers".into(),
        ));
    };
    if !token.allows(headers) {
        return err(ApiError::Unauthorized);
    }
    let Some(sha) = name.strip_prefix("sha256-").filter(|s| valid_sha(s)) else {
        return err(ApiError::NotFound(format!("no blob {name}: expected sha256-<64 lowercase hex>")));
    };
    let Ok(permit) = std::sync::Arc::clone(store.upload_slots()).try_acquire_owned() else {
        return err(ApiError::Unavailable("this board is serving as many blobs as it may; try another source".into()));
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let read = match store.read(sha, range, ARRIVAL_WAIT) {
        Ok(r) => r,
        Err(ReadError::NotFound) => return err(ApiError::NotFound(format!("blob sha256-{sha} is not on this board"))),
        Err(ReadError::Range { total }) => {
            let mut r = err(ApiError::bad("range", format!("range not satisfiable: the blob is {total} bytes")));
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
        Err(ReadError::Io(e)) => return err(ApiError::Internal(format!("reading blob sha256-{sha}: {e}"))),
    };
    let status = if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let mut h = HeaderMap::new();
    let mut set = |k: header::HeaderName, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set(header::CONTENT_LENGTH, (read.end - read.start).to_string());
    set(header::CONTENT_TYPE, "application/octet-stream".into());
    set(header::ACCEPT_RANGES, "bytes".into());
    set(header::ETAG, format!("\"sha256-{sha}\""));
    if range.is_some() {
        set(header::CONTENT_RANGE, format!("bytes {}-{}/{}", read.start, read.end - 1, read.total));
    }
    set(header::HeaderName::from_static("x-blob-complete"), read.complete.to_string());
    set(header::HeaderName::from_static("x-blob-available"), read.available.to_string());
    if *method == Method::HEAD {
        return (status, h).into_response();
    }
    // The permit lives as long as the body.
    let body = read.stream.map(move |chunk| {
        let _held = &permit;
        chunk
    });
    (status, h, Body::from_stream(body)).into_response()
}
