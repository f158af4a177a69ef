//! Forwarding one request to a board and its answer back, unbuffered.
//!
//! The body is read once (it must be, to find the model), then sent as is. The gateway waits for
//! the board's status and first body chunk before it answers the client: until then nothing has
//! reached the client, so a connect error, a cut connection, a 429 or 503 (the board is full or
//! starting) or a 404 (the board dropped the model since the table was built) sends the request
//! to the next board by the same policy — at most `retries` times within `retry_budget`. After
//! the first byte, never. The rest streams chunk by chunk; the client going away drops the
//! stream, which closes the connection to the board, which aborts the generation there.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use api_types::{ApiError, error::shape_for_path, request_id};
use axum::{
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::Response,
};
use bytes::Bytes;
use crds::RoutingStrategy;
use futures::{Stream, StreamExt, stream::BoxStream};
use serde_json::Value;

use super::{
    Gateway,
    auth::Grant,
    dispatch::{self, Slot},
    hold,
    prefix::{ROUTING_KEY_HEADER, affinity_key},
    upstream,
};

/// Response header naming the board that answered.
pub static BOARD_HEADER: HeaderName = HeaderName::from_static("x-rockchip-llama-board");

/// Request headers passed on to the board (the rest are the client's business with the gateway).
const FORWARDED: [&str; 5] = ["content-type", "accept", "user-agent", "traceparent", "tracestate"];

/// Response headers not passed back: hop-by-hop ones, and the request id the gateway sets itself.
const DROPPED: [&str; 9] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "x-request-id",
];

/// Why an attempt failed before its first byte.
struct Failed {
    cause: &'static str,
    detail: String,
    /// The board answered (429/503/404): kept to pass on if no other board can take the request.
    answer: Option<(StatusCode, HeaderMap, Bytes)>,
}

/// The rest of a board's answer (`upstream::Body`, boxed so tests can stand in for it).
pub(super) type Upstream = BoxStream<'static, std::io::Result<Bytes>>;

/// The most of a refusal (429/503/404) kept to pass on if no other board takes the request.
const REFUSAL_MAX: usize = 64 * 1024;

/// The board's status, headers and first chunk, with the rest of the body to stream.
pub(super) struct Committed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub first: Option<Bytes>,
    pub rest: Upstream,
}

fn upstream_headers(gw: &Gateway, client: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    for name in FORWARDED {
        if let Some(v) = client.get(name) {
            h.insert(HeaderName::from_static(name), v.clone());
        }
    }
    if let Some(id) = request_id::current().and_then(|id| HeaderValue::from_str(id.as_str()).ok()) {
        h.insert(request_id::HEADER.clone(), id);
    }
    if let Some(v) = &gw.board_auth {
        h.insert(header::AUTHORIZATION, v.clone());
    } else if gw.config.cluster_token.is_none() {
        // No cluster token: boards that share the clients' keys still see the client's. (A token
        // that cannot be a header value sends none: the board refuses, as it would a wrong one.)
        if let Some(v) = client.get(header::AUTHORIZATION) {
            h.insert(header::AUTHORIZATION, v.clone());
        }
    }
    h
}

async fn attempt(gw: &Gateway, slot: &Slot, path: &str, headers: HeaderMap, body: Bytes) -> Result<Committed, Failed> {
    let failed = |cause, e: &dyn std::fmt::Display| Failed { cause, detail: e.to_string(), answer: None };
    let upstream::Answer { status, headers, body, opened } =
        upstream::send(&slot.endpoint, "POST", path, &headers, &body, gw.config.connect_timeout)
            .await
            .map_err(|e| Failed { cause: e.cause, detail: e.detail, answer: None })?;
    if opened {
        gw.metrics.connection_opened(&slot.board);
    }
    if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE | StatusCode::NOT_FOUND) {
        let bytes = body.collect(REFUSAL_MAX).await.unwrap_or_default();
        let cause = match status {
            StatusCode::TOO_MANY_REQUESTS => "busy",
            StatusCode::NOT_FOUND => "not_found",
            _ => "unavailable",
        };
        return Err(Failed { cause, detail: format!("HTTP {status}"), answer: Some((status, headers, bytes)) });
    }
    let mut rest = body.boxed();
    match rest.next().await {
        Some(Err(e)) => Err(failed("cut", &e)),
        first => Ok(Committed { status, headers, first: first.and_then(Result::ok), rest }),
    }
}

/// Forwards one POST whose JSON body names a model (chat, completions, embeddings, show).
pub async fn forward(gw: Arc<Gateway>, path: String, headers: HeaderMap, body: Bytes, grant: Grant) -> Response {
    let shape = shape_for_path(&path);
    match forward_inner(&gw, &path, &headers, body, &grant).await {
        Ok(resp) => resp,
        Err((model, e)) => {
            let rid = request_id::current().map(|r| r.to_string()).unwrap_or_default();
            tracing::info!(request_id = %rid, model = %model, error = %e, "gateway: refused");
            let resp = e.into_response_as(shape);
            gw.metrics.request(&model, "", resp.status().as_u16());
            resp
        }
    }
}

async fn forward_inner(
    gw: &Arc<Gateway>,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    grant: &Grant,
) -> Result<Response, (String, ApiError)> {
    let unknown = || "unknown".to_owned();
    let parsed: Value = serde_json::from_slice(&body)
        .map_err(|e| (unknown(), ApiError::bad("body", format!("the request body is not valid JSON: {e}"))))?;
    let Some(name) = parsed.get("model").and_then(Value::as_str).map(str::to_owned) else {
        let hint = "'model' is required: the name of a model this cluster serves (GET /v1/models lists them)";
        return Err((unknown(), ApiError::bad("model", hint)));
    };
    if !grant.allows(&name) {
        return Err((unknown(), ApiError::Forbidden(format!("this API key may not use model '{name}'"))));
    }
    let table = gw.table();
    let route = table.lookup(&name).ok_or_else(|| (unknown(), ApiError::ModelNotFound(name.clone())))?;
    let model = route.model.clone();
    let key = if route.strategy == RoutingStrategy::PrefixAffinity {
        let header = headers.get(ROUTING_KEY_HEADER).and_then(|v| v.to_str().ok());
        affinity_key(header, &parsed, route.prefix_chars)
    } else {
        String::new()
    };
    // A stream that must wait for its deployment's first replica answers at once and is kept
    // alive while held (hold.rs); everything else waits silently here.
    let held_stream =
        (route.autoscaled && route.replicas.is_empty()).then(|| hold::stream_kind(path, &parsed)).flatten();
    drop(table);
    let job = Job {
        gw: gw.clone(),
        path: path.to_owned(),
        upstream: upstream_headers(gw, headers),
        body,
        name,
        key,
        model: model.clone(),
        rid: request_id::current().map(|r| r.to_string()).unwrap_or_default(),
        started: Instant::now(),
    };
    if let Some(kind) = held_stream {
        return Ok(hold::respond(job, kind));
    }
    let started = job.started;
    match route_request(job).await {
        Routed::Answer(slot, c) => Ok(commit(gw.clone(), slot, c, started)),
        Routed::Refused(a) => Ok(passthrough(a)),
        Routed::Failed(e) => Err((model, e)),
    }
}

/// One request to route, owning what it needs (a held stream routes it from its body).
pub(super) struct Job {
    pub gw: Arc<Gateway>,
    pub path: String,
    /// Headers for the board (`upstream_headers`).
    pub upstream: HeaderMap,
    pub body: Bytes,
    /// The name the client asked for.
    pub name: String,
    /// PrefixAffinity's key.
    pub key: String,
    /// The route's served name (metrics label).
    pub model: String,
    pub rid: String,
    pub started: Instant,
}

/// How routing one request ended, before anything of the board's answer reached the client.
pub(super) enum Routed {
    /// A board answered: its slot, status, headers and first chunk.
    Answer(Slot, Committed),
    /// Every board that could be tried refused; the last one's own answer.
    Refused((StatusCode, HeaderMap, Bytes)),
    /// No board answered.
    Failed(ApiError),
}

/// Picks a board and sends the request, retrying on other boards until one answers (queueing
/// and holding in `dispatch::acquire`).
pub(super) async fn route_request(job: Job) -> Routed {
    let Job { gw, path, upstream, body, name, key, model, rid, started } = job;
    let gw = &gw;
    let policy = gw.table().lookup(&name).map_or("", dispatch::policy_label);
    let retry_deadline = started + gw.config.retry_budget;
    let mut tried: Vec<String> = Vec::new();
    let mut last_answer = None;
    let mut last_failure: Option<String> = None;
    loop {
        let slot = match dispatch::acquire(gw, &name, &key, &tried, started).await {
            Ok(slot) => slot,
            // No other board to try: the last board's own refusal says more than ours, and a
            // connection failure on every board is the boards' failure (502), not a refusal.
            Err(e) => {
                return match (last_answer, last_failure) {
                    (Some(a), _) => Routed::Refused(a),
                    (None, Some(detail)) => Routed::Failed(failed_everywhere(&name, &tried, &detail)),
                    (None, None) => Routed::Failed(e),
                };
            }
        };
        let reason = if tried.is_empty() { slot.reason.as_str() } else { "retry" };
        gw.metrics.decision(policy, &model, &slot.board, reason);
        tracing::debug!(request_id = %rid, model = %model, board = %slot.board, reason, "gateway: routed");
        match attempt(gw, &slot, &path, upstream.clone(), body.clone()).await {
            Ok(c) => {
                gw.loads().board(&slot.board).on_success();
                let ttfb = started.elapsed();
                gw.metrics.first_byte(&model, &slot.board, ttfb.as_secs_f64());
                tracing::info!(request_id = %rid, model = %model, board = %slot.board, status = c.status.as_u16(),
                               first_byte_ms = ttfb.as_millis() as u64, retries = tried.len(), "gateway: proxied");
                return Routed::Answer(slot, c);
            }
            Err(f) => {
                let board = slot.board.clone();
                if f.answer.is_none() {
                    let ejected = gw.loads().board(&board).on_failure(Instant::now(), gw.config.eject_after);
                    if ejected {
                        tracing::warn!(%board, error = %f.detail, "gateway: board ejected (requests failed)");
                        gw.metrics.ejected(&board);
                    }
                }
                tracing::info!(request_id = %rid, %board, cause = f.cause, error = %f.detail,
                               "gateway: board failed before the first byte; trying another");
                gw.metrics.retry(&model, &board, f.cause);
                drop(slot);
                tried.push(board);
                if f.answer.is_none() {
                    last_failure = Some(f.detail.clone());
                }
                last_answer = f.answer.or(last_answer);
                let out_of_tries = tried.len() > gw.config.retries as usize || Instant::now() >= retry_deadline;
                if out_of_tries {
                    return match last_answer {
                        Some(a) => Routed::Refused(a),
                        None => Routed::Failed(failed_everywhere(&name, &tried, &f.detail)),
                    };
                }
            }
        }
    }
}

fn failed_everywhere(name: &str, tried: &[String], detail: &str) -> ApiError {
    ApiError::Upstream(format!("the boards serving '{name}' failed before answering ({}: {detail})", tried.join(", ")))
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !DROPPED.contains(&name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
}

fn passthrough((status, headers, bytes): (StatusCode, HeaderMap, Bytes)) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    copy_headers(&headers, resp.headers_mut());
    resp
}

/// The board's answer as a stream to the client, holding the slot until it ends.
pub(super) fn tracked(gw: Arc<Gateway>, slot: Slot, first: Option<Bytes>, rest: Upstream, started: Instant) -> Tracked {
    Tracked {
        gw,
        slot: Some(slot),
        first,
        rest,
        started,
        tail: Vec::new(),
        ended: false,
        upstream_done: false,
        pending_error: None,
        held: bytes::BytesMut::new(),
    }
}

fn commit(gw: Arc<Gateway>, slot: Slot, c: Committed, started: Instant) -> Response {
    let Committed { status, headers, first, rest } = c;
    gw.metrics.request(&slot.model, &slot.board, status.as_u16());
    let board = HeaderValue::from_str(&slot.board).ok();
    let mut resp = Response::new(Body::from_stream(tracked(gw, slot, first, rest, started)));
    *resp.status_mut() = status;
    copy_headers(&headers, resp.headers_mut());
    if let Some(b) = board {
        resp.headers_mut().insert(BOARD_HEADER.clone(), b);
    }
    resp
}

/// Bytes of the answer's end kept to read its token counts from.
const TAIL: usize = 1024;

/// The answer streaming to the client. Holds the board's slot until the end (or the client's
/// departure, which drops it).
pub(super) struct Tracked {
    gw: Arc<Gateway>,
    slot: Option<Slot>,
    first: Option<Bytes>,
    rest: Upstream,
    started: Instant,
    tail: Vec<u8>,
    ended: bool,
    /// The board's stream ended (or broke) while joining chunks; reported on the next poll.
    upstream_done: bool,
    pending_error: Option<std::io::Error>,
    /// Pieces taken and joined, not yet handed on.
    held: bytes::BytesMut,
}

impl Tracked {
    fn keep_tail(&mut self, chunk: &[u8]) {
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > TAIL * 2 {
            self.tail.drain(..self.tail.len() - TAIL);
        }
    }

    fn finish(&mut self) {
        self.ended = true;
        if let Some(slot) = self.slot.take() {
            let m = &self.gw.metrics;
            m.done(&slot.model, &slot.board, self.started.elapsed().as_secs_f64());
            let (prompt, completion) = token_counts(&self.tail);
            if let Some(n) = prompt {
                m.tokens(&slot.model, &slot.board, "prompt", n);
            }
            if let Some(n) = completion {
                m.tokens(&slot.model, &slot.board, "completion", n);
            }
        }
    }
}

/// Upstream chunks joined into one write at most: enough for a burst of tokens, small enough
/// that a slow client does not make the gateway hold much.
const COALESCE_MAX: usize = 64 * 1024;

impl Tracked {
    fn cut(&mut self, e: std::io::Error) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        // The board went away mid-answer: nothing to retry; the client sees the cut.
        if let Some(slot) = &self.slot {
            tracing::warn!(board = %slot.board, error = %e, "gateway: answer cut by the board");
            let ejected = self.gw.loads().board(&slot.board).on_failure(Instant::now(), self.gw.config.eject_after);
            if ejected {
                self.gw.metrics.ejected(&slot.board);
            }
        }
        self.finish();
        Poll::Ready(Some(Err(e)))
    }

    /// What was joined, handed on as one piece.
    fn release(&mut self) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        let out = self.held.split().freeze();
        self.keep_tail(&out);
        if self.upstream_done && self.pending_error.is_none() {
            // The answer is complete. A server that stops polling once Content-Length bytes are
            // out (hyper does, for every non-streamed answer) never asks for the end: finish now,
            // or the request would count as a client that left and its time and tokens be lost.
            self.finish();
        }
        Poll::Ready(Some(Ok(out)))
    }
}

/// Each piece handed to the server is one write(v) to the client. Every piece of the board's
/// answer that is ready is joined into one (`upstream::Body` yields one per socket read, so
/// this matters when the client was slower than the board); nothing waits for bytes the board
/// has not sent yet.
impl Stream for Tracked {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(first) = self.first.take() {
            self.held.extend_from_slice(&first);
        }
        while !self.upstream_done && self.pending_error.is_none() && self.held.len() < COALESCE_MAX {
            match self.rest.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.held.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(e))) => self.pending_error = Some(e),
                Poll::Ready(None) => self.upstream_done = true,
                Poll::Pending => break,
            }
        }
        if !self.held.is_empty() {
            return self.release();
        }
        if let Some(e) = self.pending_error.take() {
            return self.cut(e);
        }
        if self.upstream_done {
            self.finish();
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.ended
            && let Some(slot) = &self.slot
        {
            tracing::info!(board = %slot.board, model = %slot.model, "gateway: client left mid-answer; closing the board's stream");
            self.gw.metrics.disconnect(&slot.model, &slot.board);
        }
    }
}

/// The number after a field's colon (`null` or anything else: none).
fn number_at(rest: &[u8]) -> Option<u64> {
    let digits = rest.iter().skip_while(|b| b.is_ascii_whitespace()).take_while(|b| b.is_ascii_digit());
    digits.fold(None, |n: Option<u64>, d| Some(n.unwrap_or(0).saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

/// (prompt, completion) tokens from the end of an answer: OpenAI's `usage` (preferred) or
/// Ollama's counts, each the field's last value. One backward pass over the colons, stopping
/// once OpenAI's pair is found (it comes last in an answer): this runs once per request, and
/// four searches over the whole tail showed in the gateway's profile.
fn token_counts(tail: &[u8]) -> (Option<u64>, Option<u64>) {
    const PROMPT: [&[u8]; 2] = [b"\"prompt_tokens\":", b"\"prompt_eval_count\":"];
    const COMPLETION: [&[u8]; 2] = [b"\"completion_tokens\":", b"\"eval_count\":"];
    let mut prompt: [Option<Option<u64>>; 2] = [None; 2];
    let mut completion: [Option<Option<u64>>; 2] = [None; 2];
    for colon in memchr::memrchr_iter(b':', tail) {
        let (head, rest) = tail.split_at(colon + 1);
        for (found, names) in [(&mut prompt, &PROMPT), (&mut completion, &COMPLETION)] {
            for (slot, name) in found.iter_mut().zip(names) {
                if slot.is_none() && head.ends_with(name) {
                    *slot = Some(number_at(rest));
                }
            }
        }
        if matches!((prompt[0], completion[0]), (Some(Some(_)), Some(Some(_)))) {
            break;
        }
    }
    let pick = |v: [Option<Option<u64>>; 2]| v[0].flatten().or(v[1].flatten());
    (pick(prompt), pick(completion))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of the answer that are ready together leave as one write, and a piece that nothing
    /// follows yet is handed on without waiting for the next.
    #[tokio::test(flavor = "current_thread")]
    async fn ready_pieces_leave_together() {
        let gw = Gateway::new(super::super::Config::new("127.0.0.1:0".parse().unwrap(), "ns")).unwrap();
        let slot = Slot {
            gw: gw.clone(),
            route_key: "m".into(),
            model: "m".into(),
            board: "b".into(),
            endpoint: "http://127.0.0.1:1".into(),
            reason: super::super::policy::Reason::LeastLoaded,
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        for i in 0..10 {
            tx.send(Bytes::from(format!("data: {i}\n\n"))).unwrap();
        }
        let rest: Upstream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) }).boxed();
        let mut body = tracked(gw, slot, Some(Bytes::from_static(b"data: first\n\n")), rest, Instant::now());
        let first = body.next().await.unwrap().unwrap();
        assert_eq!(first.iter().filter(|&&b| b == b'\n').count(), 22, "eleven pieces in one: {first:?}");
        let late = tokio::spawn(async move { body.next().await.map(Result::unwrap) });
        tokio::task::yield_now().await;
        tx.send(Bytes::from_static(b"data: late\n\n")).unwrap();
        drop(tx);
        assert_eq!(late.await.unwrap(), Some(Bytes::from_static(b"data: late\n\n")));
    }

    #[test]
    fn token_counts_from_either_api() {
        let oai = br#"data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens": 7,"total_tokens":19}}

data: [DONE]
"#;
        assert_eq!(token_counts(oai), (Some(12), Some(7)));
        let ollama = br#"{"model":"m","done":true,"prompt_eval_count":30,"eval_count":5}"#;
        assert_eq!(token_counts(ollama), (Some(30), Some(5)), "prompt_eval_count is not eval_count");
        assert_eq!(token_counts(b"data: {\"choices\":[]}\n"), (None, None));
        let twice = br#"{"usage":{"prompt_tokens":1,"completion_tokens":2}} {"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        assert_eq!(token_counts(twice), (Some(3), Some(4)), "the last values");
        let both = br#"{"prompt_eval_count":9,"eval_count":8,"usage":{"prompt_tokens":null,"completion_tokens":5}}"#;
        assert_eq!(token_counts(both), (Some(9), Some(5)), "OpenAI's first, Ollama's where OpenAI's is null");
    }
}
