//! `rockchip-llama-loadgen`: a closed-loop HTTP/1.1 load generator for `make bench-gateway` (P5).
//!
//! `--concurrency` clients each hold one keep-alive connection and POST the same body back to
//! back. Per request it records the time to the first generated token (the first SSE `data:`
//! event whose `delta.content` or `delta.reasoning_content` is non-empty; the agent's opening
//! `role` event carries none) and the time to the end of the body. One JSON document goes to
//! stdout: every latency sample of the measured window, in microseconds, and the throughput.
//!
//! ```text
//!   connect all ─► warm-up (--warmup s, discarded) ─► window (--duration s) ─► drain
//!   latency samples: requests *started* in the window; req/s: requests *finished* in it
//! ```
//!
//! Why not Python: the bench compares proxies whose own cost is a fraction of a millisecond on a
//! shared 2-core machine, so the client must cost less than what it measures. Plain hyper (no
//! pool, no retries, no TLS) on a current-thread runtime keeps it to a few microseconds per
//! request, and one core's worth of client at most.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, StatusCode,
    client::conn::http1::{self, SendRequest},
    header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue},
};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpStream;

/// Closed-loop load against one OpenAI streaming endpoint.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Target URL, `http://host:port/path` (plain HTTP only).
    #[arg(long, env = "LOADGEN_URL")]
    url: String,
    /// Request body (JSON text), sent as is by every request.
    #[arg(long, env = "LOADGEN_BODY")]
    body: String,
    /// Extra request header `name: value` (repeatable), e.g. an Authorization header.
    #[arg(long = "header", env = "LOADGEN_HEADERS", value_delimiter = '\n')]
    headers: Vec<String>,
    /// Clients, each with its own connection and one request at a time.
    #[arg(long, default_value_t = 1, env = "LOADGEN_CONCURRENCY")]
    concurrency: usize,
    /// Seconds of load before the measured window (their samples are dropped).
    #[arg(long, default_value_t = 0.5, env = "LOADGEN_WARMUP")]
    warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 5.0, env = "LOADGEN_DURATION")]
    duration: f64,
    /// Worker threads of the runtime (1 keeps the client's CPU use to one core at most).
    #[arg(long, default_value_t = 1, env = "LOADGEN_THREADS")]
    threads: usize,
}

/// What one run measured (stdout, JSON).
#[derive(Serialize, Default)]
struct Report {
    url: String,
    concurrency: usize,
    window_s: f64,
    /// Requests that finished inside the window, per second.
    rps: f64,
    /// Every request sent, warm-up and drain included (to divide CPU time measured around the run).
    sent: usize,
    /// Requests started in the window that answered 200 and ended with `[DONE]`.
    ok: usize,
    errors: usize,
    /// The first few error messages, to tell a refusal from a broken connection.
    error_examples: Vec<String>,
    ttft_us: Vec<u64>,
    total_us: Vec<u64>,
}

/// One request's outcome, offsets from the common start.
struct Sample {
    start: Duration,
    end: Duration,
    ttft: Option<Duration>,
    result: Result<(), String>,
}

struct Target {
    addr: SocketAddr,
    authority: HeaderValue,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

fn parse_target(args: &Args) -> anyhow::Result<Target> {
    let Some(rest) = args.url.strip_prefix("http://") else { bail!("--url must start with http://") };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    let headers = args
        .headers
        .iter()
        .filter(|h| !h.trim().is_empty())
        .map(|h| {
            let (n, v) = h.split_once(':').with_context(|| format!("header {h:?} is not `name: value`"))?;
            Ok((HeaderName::try_from(n.trim())?, HeaderValue::try_from(v.trim())?))
        })
        .collect::<anyhow::Result<_>>()?;
    serde_json::from_str::<Value>(&args.body).context("--body is not JSON")?;
    Ok(Target {
        addr,
        authority: HeaderValue::try_from(authority)?,
        path: if path.is_empty() { "/".into() } else { path.into() },
        headers,
        body: Bytes::from(args.body.clone()),
    })
}

async fn connect(t: &Target) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(t.addr).await.with_context(|| format!("connecting to {}", t.addr))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Whether an SSE `data:` line carries generated text.
fn has_token(line: &[u8]) -> bool {
    let Some(json) = line.strip_prefix(b"data: ") else { return false };
    let Ok(v) = serde_json::from_slice::<Value>(json) else { return false };
    let delta = &v["choices"][0]["delta"];
    ["content", "reasoning_content"].iter().any(|k| delta[k].as_str().is_some_and(|s| !s.is_empty()))
}

/// One request on `sender`; `Ok(ttft)` when it answered 200 and the stream ended with `[DONE]`.
async fn one(sender: &mut SendRequest<Full<Bytes>>, t: &Target, t0: Instant) -> Result<Option<Duration>, String> {
    let mut req = Request::post(t.path.as_str())
        .header(HOST, t.authority.clone())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(t.body.clone()))
        .map_err(|e| e.to_string())?;
    for (n, v) in &t.headers {
        req.headers_mut().insert(n.clone(), v.clone());
    }
    sender.ready().await.map_err(|e| format!("connection: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if status != StatusCode::OK {
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)])));
    }
    // Lines are only assembled until the first token; after it, only the tail is kept.
    let mut line = Vec::new();
    let mut ttft = None;
    let mut tail = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        let Ok(data) = frame.into_data() else { continue };
        if ttft.is_none() {
            for &b in data.iter() {
                if b == b'\n' {
                    if ttft.is_none() && has_token(&line) {
                        ttft = Some(t0.elapsed());
                    }
                    line.clear();
                } else {
                    line.push(b);
                }
            }
        }
        tail.extend_from_slice(&data);
        if tail.len() > 64 {
            tail.drain(..tail.len() - 32);
        }
    }
    if !tail.windows(6).any(|w| w == b"[DONE]") {
        return Err("the stream ended without [DONE]".into());
    }
    Ok(ttft)
}

/// One client: requests back to back until `stop`, reconnecting after a connection error.
async fn client(t: Arc<Target>, start: Instant, stop: Instant) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut sender = None;
    while Instant::now() < stop {
        let s = match sender.take() {
            Some(s) => Ok(s),
            None => connect(&t).await.map_err(|e| format!("{e:#}")),
        };
        let t0 = Instant::now();
        let (result, keep) = match s {
            Ok(mut s) => match one(&mut s, &t, t0).await {
                Ok(ttft) => (Ok(ttft), Some(s)),
                Err(e) => (Err(e), None),
            },
            Err(e) => (Err(e), None),
        };
        let failed = result.is_err();
        out.push(Sample {
            start: t0 - start,
            end: start.elapsed(),
            ttft: result.as_ref().ok().copied().flatten(),
            result: result.map(drop),
        });
        sender = keep;
        if failed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    out
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let t = Arc::new(parse_target(&args)?);
    let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
    let window = Duration::from_secs_f64(args.duration.max(0.01));
    // Connect everyone first (one probe connection checks the target), then start together.
    drop(connect(&t).await?);
    let start = Instant::now() + Duration::from_millis(50);
    let stop = start + warmup + window;
    let clients: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                client(t, start, stop).await
            })
        })
        .collect();
    let mut samples = Vec::new();
    for c in clients {
        samples.extend(c.await?);
    }
    let (from, to) = (warmup, warmup + window);
    let mut r = Report {
        url: args.url.clone(),
        concurrency: args.concurrency,
        window_s: window.as_secs_f64(),
        ..Report::default()
    };
    let finished = samples.iter().filter(|s| s.result.is_ok() && s.end >= from && s.end < to).count();
    r.rps = finished as f64 / window.as_secs_f64();
    r.sent = samples.len();
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    for s in samples.iter().filter(|s| s.start >= from && s.start < to) {
        match &s.result {
            Ok(()) => {
                r.ok += 1;
                r.total_us.push(us(s.end - s.start));
                if let Some(ttft) = s.ttft {
                    r.ttft_us.push(us(ttft));
                }
            }
            Err(e) => {
                r.errors += 1;
                if r.error_examples.len() < 5 {
                    r.error_examples.push(e.clone());
                }
            }
        }
    }
    Ok(r)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?
    };
    let report = rt.block_on(run(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_with_text_count_as_the_first_token() {
        assert!(!has_token(br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#));
        assert!(has_token(br#"data: {"choices":[{"delta":{"content":"hi"}}]}"#));
        assert!(has_token(br#"data: {"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#));
        assert!(!has_token(b"data: [DONE]"));
        assert!(!has_token(b": keep-alive"));
    }
}
