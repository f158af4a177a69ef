//! Streams held while their deployment scales from zero.
//!
//! A request for an autoscaled deployment with no Ready replica waits in the model's queue
//! (`dispatch::acquire`) until a replica appears or `scale_from_zero_timeout` passes. Loading a
//! model can take a minute; a client or proxy that sees no byte for that long may give up (nginx
//! and many load balancers cut idle responses after 60 s). So a *streaming* request that has to
//! wait gets its response headers at once and then keep-alive bytes every `stream_keepalive`
//! until the board's first byte:
//!
//! ```text
//!  OpenAI SSE     : waiting for model 'm' to start\n\n            (a comment: clients skip it)
//!  Ollama NDJSON  {"model":"m","created_at":…,"message":{"role":"assistant","content":""},"done":false}\n
//! ```
//!
//! Ollama's clients parse every line as JSON (a blank line breaks the official Python client),
//! so its keep-alive is an empty chunk of the endpoint's own stream shape. Once the headers are
//! out the status is 200 whatever happens next: a failure before the board's first byte (the
//! hold timed out, every board refused or failed) is sent in the stream in the API's error
//! shape, and the stream ends. Retries before the board's first byte work as for any request,
//! since the routing runs inside the body. The client going away drops the body, and with it the
//! request's place in the queue.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use api_types::{ApiError, ErrorShape, request_id::RequestId};
use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::Response,
};
use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt, future::BoxFuture};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    Gateway,
    proxy::{self, Job, Routed, Tracked},
};

/// The stream shape of a streaming request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// OpenAI's `/v1/chat/completions` and `/v1/completions` with `"stream": true`.
    Sse,
    /// Ollama's `/api/chat`: NDJSON unless `"stream": false`.
    OllamaChat,
    /// Ollama's `/api/generate`: NDJSON unless `"stream": false`.
    OllamaGenerate,
}

/// How the answer to a POST to `path` with `body` streams; `None` when it does not.
pub fn stream_kind(path: &str, body: &Value) -> Option<StreamKind> {
    let stream = body.get("stream").and_then(Value::as_bool);
    match path {
        "/v1/chat/completions" | "/v1/completions" => (stream == Some(true)).then_some(StreamKind::Sse),
        // Ollama streams unless told not to.
        "/api/chat" => (stream != Some(false)).then_some(StreamKind::OllamaChat),
        "/api/generate" => (stream != Some(false)).then_some(StreamKind::OllamaGenerate),
        _ => None,
    }
}

impl StreamKind {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Sse => "text/event-stream",
            Self::OllamaChat | Self::OllamaGenerate => "application/x-ndjson",
        }
    }

    fn shape(self) -> ErrorShape {
        match self {
            Self::Sse => ErrorShape::OpenAi,
            Self::OllamaChat | Self::OllamaGenerate => ErrorShape::Ollama,
        }
    }

    /// Bytes that keep the connection busy and that the client ignores.
    pub fn keepalive(self, model: &str, now: Timestamp) -> Bytes {
        let line = match self {
            Self::Sse => {
                // A comment line: no `\n` inside, whatever the name holds.
                let name = model.replace(['\r', '\n'], " ");
                return Bytes::from(format!(": waiting for model '{name}' to start\n\n"));
            }
            Self::OllamaChat => json!({
                "model": model, "created_at": now.to_string(),
                "message": {"role": "assistant", "content": ""}, "done": false,
            }),
            Self::OllamaGenerate => {
                json!({"model": model, "created_at": now.to_string(), "response": "", "done": false})
            }
        };
        Bytes::from(format!("{line}\n"))
    }

    /// `e` as the stream's last event (OpenAI: an error object then `[DONE]`, as the boards end
    /// a stream that failed).
    pub fn error_event(self, e: &ApiError, rid: Option<&RequestId>) -> Bytes {
        let body = e.stream_body(self.shape(), rid);
        Bytes::from(match self {
            Self::Sse => format!("data: {body}\n\ndata: [DONE]\n\n"),
            Self::OllamaChat | Self::OllamaGenerate => format!("{body}\n"),
        })
    }
}

/// A board's refusal (its status and the start of its body, in either error shape) as an error
/// to send in the stream.
pub fn answer_error(status: StatusCode, body: &[u8]) -> ApiError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message").and_then(Value::as_str).or_else(|| e.as_str()))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the board answered HTTP {}", status.as_u16()));
    match status {
        StatusCode::BAD_REQUEST => ApiError::BadRequest { message, param: None },
        StatusCode::NOT_FOUND => ApiError::NotFound(message),
        StatusCode::TOO_MANY_REQUESTS => ApiError::Overloaded(message),
        StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(message),
        _ => ApiError::Upstream(message),
    }
}

/// Shortest keep-alive period (a zero flag would spin).
const MIN_KEEPALIVE: Duration = Duration::from_millis(100);

/// The response to a streaming request that waits for its deployment's first replica: 200 and
/// the stream's content type now, keep-alive bytes while routing runs, then the board's answer
/// (or the failure, in the stream).
pub(super) fn respond(job: Job, kind: StreamKind) -> Response {
    let gw = job.gw.clone();
    let (name, model, started) = (job.name.clone(), job.model.clone(), job.started);
    let rid = RequestId::parse(&job.rid);
    let period = gw.config.stream_keepalive.max(MIN_KEEPALIVE);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(request_id = %job.rid, model = %model, "gateway: holding a stream while the model starts");
    let held = Held {
        gw,
        kind,
        name,
        model,
        rid,
        started,
        routing: Some(proxy::route_request(job).boxed()),
        tick,
        answer: None,
        ended: false,
    };
    let mut resp = Response::new(Body::from_stream(held));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind.content_type()));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The held stream: keep-alives while `routing` runs, then the board's answer.
struct Held {
    gw: Arc<Gateway>,
    kind: StreamKind,
    /// The name the client asked for (what the keep-alive chunks carry).
    name: String,
    /// The route's served name (metrics).
    model: String,
    rid: Option<RequestId>,
    started: Instant,
    /// Picking a board and sending the request (queue, hold, retries); dropping it leaves the
    /// queue.
    routing: Option<BoxFuture<'static, Routed>>,
    tick: tokio::time::Interval,
    answer: Option<Tracked>,
    ended: bool,
}

type Chunk = Result<Bytes, std::io::Error>;

impl Held {
    /// Ends the stream with `e`.
    fn fail(&mut self, e: &ApiError, board: &str) -> Poll<Option<Chunk>> {
        self.ended = true;
        tracing::info!(request_id = %self.rid.as_ref().map(RequestId::as_str).unwrap_or("-"), model = %self.model,
                       error = %e, "gateway: held stream failed before the board's first byte");
        self.gw.metrics.request(&self.model, board, e.status().as_u16());
        Poll::Ready(Some(Ok(self.kind.error_event(e, self.rid.as_ref()))))
    }
}

impl Stream for Held {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(answer) = self.answer.as_mut() {
            return answer.poll_next_unpin(cx);
        }
        if let Some(routing) = self.routing.as_mut()
            && let Poll::Ready(routed) = routing.poll_unpin(cx)
        {
            self.routing = None;
            match routed {
                Routed::Answer(slot, c) if c.status.is_success() => {
                    self.gw.metrics.request(&slot.model, &slot.board, c.status.as_u16());
                    let answer = proxy::tracked(self.gw.clone(), slot, c.first, c.rest, self.started);
                    self.answer = Some(answer);
                    return self.poll_next(cx);
                }
                // The board answered with an error of its own (e.g. 400): its message, in the
                // stream. Dropping the slot closes the board's connection.
                Routed::Answer(slot, c) => {
                    let e = answer_error(c.status, c.first.as_deref().unwrap_or_default());
                    let board = slot.board.clone();
                    drop((slot, c));
                    return self.fail(&e, &board);
                }
                Routed::Refused((status, _, bytes)) => return self.fail(&answer_error(status, &bytes), ""),
                Routed::Failed(e) => return self.fail(&e, ""),
            }
        }
        if self.tick.poll_tick(cx).is_ready() {
            let bytes = self.kind.keepalive(&self.name, Timestamp::now());
            return Poll::Ready(Some(Ok(bytes)));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_requests_stream() {
        let chat = "/v1/chat/completions";
        assert_eq!(stream_kind(chat, &json!({"stream": true})), Some(StreamKind::Sse));
        assert_eq!(stream_kind(chat, &json!({})), None, "OpenAI does not stream by default");
        assert_eq!(stream_kind("/v1/completions", &json!({"stream": true})), Some(StreamKind::Sse));
        assert_eq!(stream_kind("/api/chat", &json!({})), Some(StreamKind::OllamaChat), "Ollama does");
        assert_eq!(stream_kind("/api/chat", &json!({"stream": false})), None);
        assert_eq!(stream_kind("/api/generate", &json!({"stream": true})), Some(StreamKind::OllamaGenerate));
        assert_eq!(stream_kind("/api/embed", &json!({"stream": true})), None);
        assert_eq!(stream_kind("/v1/embeddings", &json!({"stream": true})), None);
    }

    #[test]
    fn keepalives_are_ignored_by_clients() {
        let now: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
        assert_eq!(StreamKind::Sse.keepalive("m\nx", now), ": waiting for model 'm x' to start\n\n");
        let chat = StreamKind::OllamaChat.keepalive("m", now);
        assert!(chat.ends_with(b"\n") && !chat[..chat.len() - 1].contains(&b'\n'), "one NDJSON line");
        let v: Value = serde_json::from_slice(&chat).unwrap();
        assert_eq!(v["message"], json!({"role": "assistant", "content": ""}));
        assert_eq!((v["done"].clone(), v["model"].clone()), (json!(false), json!("m")));
        assert_eq!(v["created_at"], "2026-11-28T10:00:00Z");
        let v: Value = serde_json::from_slice(&StreamKind::OllamaGenerate.keepalive("m", now)).unwrap();
        assert_eq!((v["response"].clone(), v["done"].clone()), (json!(""), json!(false)));
    }

    #[test]
    fn errors_in_the_stream_in_each_shape() {
        let e = ApiError::Unavailable("model 'm' is starting".into());
        let sse = StreamKind::Sse.error_event(&e, None);
        let text = std::str::from_utf8(&sse).unwrap();
        let first = text.split("\n\n").next().unwrap().strip_prefix("data: ").unwrap();
        let v: Value = serde_json::from_str(first).unwrap();
        assert_eq!(v["error"]["message"], "model 'm' is starting");
        assert_eq!(v["error"]["type"], "service_unavailable_error");
        assert!(text.ends_with("data: [DONE]\n\n"));
        let ndjson = StreamKind::OllamaChat.error_event(&e, None);
        let v: Value = serde_json::from_slice(&ndjson).unwrap();
        assert_eq!(v, json!({"error": "model 'm' is starting"}));
    }

    #[test]
    fn board_refusals_keep_their_message_and_kind() {
        let oai = br#"{"error":{"message":"full","type":"rate_limit_error"}}"#;
        let e = answer_error(StatusCode::TOO_MANY_REQUESTS, oai);
        assert_eq!((e.status(), e.to_string()), (StatusCode::TOO_MANY_REQUESTS, "server busy: full".to_owned()));
        let e = answer_error(StatusCode::BAD_REQUEST, br#"{"error":"bad options"}"#);
        assert_eq!((e.status(), e.to_string()), (StatusCode::BAD_REQUEST, "bad options".to_owned()));
        let e = answer_error(StatusCode::INTERNAL_SERVER_ERROR, b"<html>");
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert!(e.to_string().contains("HTTP 500"));
    }
}
