//! The proxy's own HTTP/1.1 client to the boards: one request, its answer read by the task that
//! writes it to the client.
//!
//! Why not reqwest (hyper's client), which the gateway's other calls to boards still use: hyper
//! runs every connection as a task of its own and hands the request's task each body chunk
//! through a channel, one chunk per round trip between the two tasks, however many one socket
//! read brought; for streamed answers of a few tokens that showed in the gateway's CPU per
//! request (`make bench-gateway`, P5, docs/bench/gateway.md). Here the body is read in the request's
//! own poll: one socket read is decoded at once and leaves as one piece, with no other task, no
//! channel and no wake-up in between. The client going away drops the body, which closes the
//! connection, which aborts the generation on the board (the same as before).
//!
//! What it speaks is what the agents serve: plain `http://`, HTTP/1.1, `Content-Length`,
//! chunked or close-delimited bodies. Connections are kept per serving thread
//! (`workers.rs` turns the pool on) and reused only after an answer was read to its end.
//! A kept connection the board closed in the meantime fails before any byte of the answer; the
//! request then goes once more on a new connection, as hyper's client does.

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// The longest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a board's answer.
const MAX_HEADERS: usize = 64;
/// A chunk-size or trailer line longer than this is not HTTP.
const MAX_LINE: usize = 4096;
/// Idle connections kept per board and serving thread.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 16 * 1024;

/// Why a request failed before its answer's head arrived.
#[derive(Debug)]
pub struct SendError {
    /// `connect` (no connection to the board) or `send` (connected; the exchange failed).
    pub cause: &'static str,
    pub detail: String,
}

impl SendError {
    fn connect(detail: String) -> Self {
        Self { cause: "connect", detail }
    }
    fn send(detail: String) -> Self {
        Self { cause: "send", detail }
    }
}

/// A board's answer: status, headers, and the body still to read.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body,
    /// The request went on a connection opened for it (not a kept one).
    pub opened: bool,
}

/// `host:port` and the path prefix of an `http://` endpoint.
fn split_endpoint(endpoint: &str) -> Result<(&str, &str), SendError> {
    let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
        SendError::connect(format!("board endpoint {endpoint:?}: the gateway speaks plain http:// to boards"))
    })?;
    let (authority, base) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        return Err(SendError::connect(format!("board endpoint {endpoint:?} names no host")));
    }
    Ok((authority, base.trim_end_matches('/')))
}

/// `authority` with port 80 added when it names none (`host`, `[::1]`).
fn with_port(authority: &str) -> String {
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port { authority.to_owned() } else { format!("{authority}:80") }
}

/// The request as written: head and body in one buffer, so it leaves in one write.
pub fn encode_request(method: &str, authority: &str, path: &str, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + path.len() + headers.len() * 48 + body.len());
    for part in [method, " ", path, " HTTP/1.1\r\nhost: ", authority, "\r\ncontent-length: "] {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        // The framing is this client's; a caller's copy would contradict it.
        if matches!(name.as_str(), "host" | "content-length" | "transfer-encoding" | "connection") {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Idle connections by `host:port`, each with the moment it went idle, oldest first.
type Idle = HashMap<String, VecDeque<(TcpStream, Instant)>>;

thread_local! {
    /// The serving thread's idle connections by `host:port`; `None` outside the gateway's
    /// workers (tests, tools), which then use a connection per request. A connection belongs to
    /// the runtime that opened it, and each worker thread runs one runtime for its whole life.
    static POOL: RefCell<Option<Idle>> = const { RefCell::new(None) };
}

/// Keeps idle connections on this thread from now on (called by each serving worker).
pub fn enable_pool() {
    POOL.with(|p| *p.borrow_mut() = Some(HashMap::new()));
}

/// The most recently used idle connection (the likeliest to be open still and warm).
fn checkout(authority: &str) -> Option<TcpStream> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let idle = p.as_mut()?.get_mut(authority)?;
        let (conn, since) = idle.pop_back()?;
        // Newest last: if this one is too old, so are all the others.
        if since.elapsed() < IDLE_TIMEOUT {
            Some(conn)
        } else {
            idle.clear();
            None
        }
    })
}

fn checkin(authority: String, conn: TcpStream) {
    POOL.with(|p| {
        if let Some(pool) = p.borrow_mut().as_mut() {
            let now = Instant::now();
            let idle = pool.entry(authority).or_default();
            while idle.front().is_some_and(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT) {
                idle.pop_front();
            }
            if idle.len() < MAX_IDLE {
                idle.push_back((conn, now));
            }
        }
    });
}

/// A new connection to `addr` (`host:port`).
async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, SendError> {
    let conn = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(SendError::connect(format!("connecting to {addr}: {e}"))),
        Err(_) => return Err(SendError::connect(format!("connecting to {addr}: no answer within {timeout:?}"))),
    };
    // Small writes (a request, then nothing) must not wait for an ACK.
    let _ = conn.set_nodelay(true);
    Ok(conn)
}

/// Sends `method path` with `body` to the board at `endpoint` (`http://host:port`) and returns
/// its answer once the head has arrived. `connect_timeout` bounds opening a connection; the
/// answer itself is bounded by the caller (a generation can take minutes).
pub async fn send(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    connect_timeout: Duration,
) -> Result<Answer, SendError> {
    let (authority, base) = split_endpoint(endpoint)?;
    let full_path = if base.is_empty() { std::borrow::Cow::Borrowed(path) } else { format!("{base}{path}").into() };
    let request = encode_request(method, authority, &full_path, headers, body);
    let key = with_port(authority);
    // A kept connection first; if the board had closed it, once more on a new one.
    let mut pooled = checkout(&key);
    loop {
        let reused = pooled.is_some();
        let mut conn = match pooled.take() {
            Some(conn) => conn,
            None => connect(&key, connect_timeout).await?,
        };
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let exchanged = async {
            conn.write_all(&request).await.map_err(|e| (e.to_string(), true))?;
            read_head(&mut conn, &mut buf).await
        }
        .await;
        match exchanged {
            Ok(head) => return answer(head, conn, buf, key, method, !reused),
            // Nothing came back on a kept connection: it was closed while idle.
            Err((_, true)) if reused => continue,
            Err((e, _)) => return Err(SendError::send(format!("{authority}: {e}"))),
        }
    }
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    /// HTTP/1.1 without `connection: close`.
    keep_alive: bool,
}

/// Reads until a complete non-1xx response head is in `buf`, and removes it from there. The
/// error's flag is true when the board sent nothing at all.
async fn read_head(conn: &mut TcpStream, buf: &mut BytesMut) -> Result<Head, (String, bool)> {
    let mut got_any = false;
    loop {
        if let Some(head) = parse_head(buf).map_err(|e| (e, false))? {
            if head.status.is_informational() {
                continue; // 100 Continue and the like: the answer follows.
            }
            return Ok(head);
        }
        if buf.len() >= MAX_HEAD {
            return Err((format!("answer head longer than {MAX_HEAD} bytes"), false));
        }
        buf.reserve(READ_SIZE);
        match tokio_util::io::read_buf(conn, buf).await {
            Ok(0) if got_any => return Err(("connection closed in the answer's head".into(), false)),
            Ok(0) => return Err(("connection closed before an answer".into(), true)),
            Ok(_) => got_any = true,
            Err(e) => return Err((e.to_string(), !got_any)),
        }
    }
}

/// One response head from the front of `buf` (removed from it), or `None` if incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, String> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed answer head: {e}")),
    };
    let status = resp.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or("malformed status code")?;
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    let mut keep_alive = resp.version == Some(1);
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| format!("bad header name {:?}", h.name))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| format!("bad value of header {}", h.name))?;
        if name == axum::http::header::CONNECTION && value.as_bytes().eq_ignore_ascii_case(b"close") {
            keep_alive = false;
        }
        headers.append(name, value);
    }
    buf.advance(len);
    Ok(Some(Head { status, headers, keep_alive }))
}

fn answer(
    head: Head,
    conn: TcpStream,
    buf: BytesMut,
    key: String,
    method: &str,
    opened: bool,
) -> Result<Answer, SendError> {
    let framing = Framing::for_answer(method, head.status, &head.headers).map_err(SendError::send)?;
    let reusable = head.keep_alive && !matches!(framing, Framing::Close);
    let body = Body { conn: Some(conn), buf, framing, reusable, key, finished: false };
    Ok(Answer { status: head.status, headers: head.headers, body, opened })
}

/// How an answer's body ends, and where the decoder is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`: bytes still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// Neither: the body ends when the board closes the connection.
    Close,
    /// The body is complete.
    Done,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last (0-size) chunk: trailer lines until an empty one.
    Trailers,
}

/// What one call of [`Framing::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The body is complete (what came with it is in `out`).
    Done,
    /// More bytes are needed.
    More,
}

impl Framing {
    /// The framing of an answer to `method` (RFC 9112 §6.3).
    pub fn for_answer(method: &str, status: StatusCode, headers: &HeaderMap) -> Result<Self, String> {
        if method == "HEAD" || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(Framing::Done);
        }
        if let Some(te) = headers.get(axum::http::header::TRANSFER_ENCODING) {
            let last = te.to_str().ok().and_then(|v| v.rsplit(',').next()).map(str::trim);
            return match last {
                Some(c) if c.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked(Chunk::Size)),
                // Another coding last: the body runs to the end of the connection.
                _ => Ok(Framing::Close),
            };
        }
        match headers.get(axum::http::header::CONTENT_LENGTH) {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|n| if n == 0 { Framing::Done } else { Framing::Length(n) })
                .ok_or_else(|| format!("bad content-length {v:?}")),
            None => Ok(Framing::Close),
        }
    }

    /// Moves the body's data from the front of `input` (the bytes read, removed as decoded) to
    /// `out`, as far as `input` goes. Pure: the I/O is [`Body`]'s.
    pub fn decode(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<Decoded, String> {
        loop {
            match self {
                Framing::Done => return Ok(Decoded::Done),
                Framing::Close => {
                    out.extend_from_slice(input);
                    input.clear();
                    return Ok(Decoded::More);
                }
                Framing::Length(left) => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    *left -= n as u64;
                    if *left > 0 {
                        return Ok(Decoded::More);
                    }
                    *self = Framing::Done;
                }
                Framing::Chunked(state) => match *state {
                    Chunk::Size => {
                        let Some(line) = take_line(input)? else { return Ok(Decoded::More) };
                        let size = line.split(|&b| b == b';').next().unwrap_or_default();
                        let size = std::str::from_utf8(size)
                            .ok()
                            .map(str::trim)
                            .filter(|s| !s.is_empty() && s.len() <= 15)
                            .and_then(|s| u64::from_str_radix(s, 16).ok())
                            .ok_or_else(|| format!("bad chunk size line {:?}", String::from_utf8_lossy(&line)))?;
                        *state = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                    }
                    Chunk::Data(left) => {
                        let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                        out.extend_from_slice(&input[..n]);
                        input.advance(n);
                        let left = left - n as u64;
                        *state = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
                        if left > 0 {
                            return Ok(Decoded::More);
                        }
                    }
                    Chunk::DataEnd => {
                        let Some(line) = take_line(input)? else { return Ok(Decoded::More) };
                        if !line.is_empty() {
                            return Err("chunk data longer than its size".into());
                        }
                        *state = Chunk::Size;
                    }
                    Chunk::Trailers => {
                        let Some(line) = take_line(input)? else { return Ok(Decoded::More) };
                        if line.is_empty() {
                            *self = Framing::Done;
                        }
                    }
                },
            }
        }
    }
}

/// One CRLF-ended line from the front of `input` (without the CRLF), or `None` if incomplete.
fn take_line(input: &mut BytesMut) -> Result<Option<Bytes>, String> {
    match memchr::memchr(b'\n', input) {
        Some(at) => {
            let mut line = input.split_to(at + 1).freeze();
            line.truncate(at);
            if line.last() == Some(&b'\r') {
                line.truncate(at - 1);
            }
            Ok(Some(line))
        }
        None if input.len() > MAX_LINE => Err(format!("a chunk line longer than {MAX_LINE} bytes")),
        None => Ok(None),
    }
}

/// An answer's body, read as it is polled. Each item is everything one socket read completed;
/// the connection goes back to the thread's pool after the last byte, or closes when the body
/// is dropped before its end.
pub struct Body {
    conn: Option<TcpStream>,
    /// Read and not yet decoded.
    buf: BytesMut,
    framing: Framing,
    reusable: bool,
    key: String,
    finished: bool,
}

impl Body {
    /// The whole body, up to `max` bytes (the rest is an error), for short answers such as a
    /// board's refusal.
    pub async fn collect(mut self, max: usize) -> std::io::Result<Bytes> {
        use futures::StreamExt;
        let mut all = BytesMut::new();
        while let Some(piece) = self.next().await {
            all.extend_from_slice(&piece?);
            if all.len() > max {
                return Err(std::io::Error::other(format!("answer longer than {max} bytes")));
            }
        }
        Ok(all.freeze())
    }

    fn end(&mut self) {
        self.finished = true;
        if let Some(conn) = self.conn.take()
            && self.reusable
            && self.buf.is_empty()
        {
            checkin(std::mem::take(&mut self.key), conn);
        }
    }
}

impl Stream for Body {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        let mut out = BytesMut::new();
        loop {
            match this.framing.decode(&mut this.buf, &mut out) {
                Ok(Decoded::Done) => {
                    this.end();
                    return Poll::Ready((!out.is_empty()).then(|| Ok(out.freeze())));
                }
                Ok(Decoded::More) if !out.is_empty() => return Poll::Ready(Some(Ok(out.freeze()))),
                Ok(Decoded::More) => {}
                Err(e) => {
                    this.finished = true;
                    this.conn = None;
                    return Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e))));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                this.finished = true;
                return Poll::Ready(None);
            };
            this.buf.reserve(READ_SIZE);
            match tokio_util::io::poll_read_buf(Pin::new(conn), cx, &mut this.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.framing == Framing::Close => {
                    this.framing = Framing::Done;
                    this.reusable = false;
                }
                Poll::Ready(Ok(0)) => {
                    this.finished = true;
                    this.conn = None;
                    let e = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the board closed the connection mid-answer",
                    );
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.finished = true;
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
