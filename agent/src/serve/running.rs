//! A generation in progress, as the API layer reads it: answer text, reasoning and tool calls
//! apart, then one `Done` or `Error`. Three filters sit between the engine's token stream and the
//! reader, in this order:
//!
//! ```text
//!  engine Event ──► metrics (TTFT, inter-token, counts) ──► ThinkSplitter (<think> → Reasoning)
//!      ──► ToolStream (tools offered: text streams, a call block is held and parsed) ──► Output
//!  JSON wanted from an engine that cannot constrain decoding: the whole answer is read, checked
//!  against the schema, retried once, and handed out as one Text.
//! ```

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    ServeError, jsoncheck,
    metrics::GenMetrics,
    think::{Piece, ThinkSplitter},
    toolstream::ToolStream,
};
use crate::{
    engine::{Event, FinishReason, GenRequest, Perf, PromptCacheUse},
    metrics::ModelLabels,
    sched::Ticket,
    tools::ToolCall,
};

/// What a reader of a generation gets.
#[derive(Debug)]
pub enum Output {
    /// Answer text, ready to send.
    Text(String),
    /// Reasoning split from a `<think>` block.
    Reasoning(String),
    /// Calls parsed from the held tool-call block, at the end of the answer.
    ToolCalls(Vec<ToolCall>),
    Done {
        reason: FinishReason,
        perf: Perf,
    },
    Error(ServeError),
}

/// The whole answer of a non-streaming request.
#[derive(Debug)]
pub struct Collected {
    pub text: String,
    /// Reasoning split from a `<think>` block ("" when none).
    pub reasoning: String,
    pub tool_calls: Vec<ToolCall>,
    pub reason: FinishReason,
    pub perf: Perf,
}

/// JSON to check after the fact, with the request to retry once.
pub(super) struct JsonCheck {
    pub schema: Option<Value>,
    pub retry: Option<GenRequest>,
}

/// A generation in progress. Dropping it cancels the request in the engine.
pub struct Running {
    pub ticket: Ticket,
    rx: mpsc::UnboundedReceiver<Event>,
    /// An engine event read ahead when the request was started.
    pending: Option<Event>,
    /// Time spent loading the model for this request (zero when it was resident).
    pub load_duration: Duration,
    pub started: Instant,
    /// Whether the request offered tools (answers may end with [`Output::ToolCalls`]).
    pub tools_offered: bool,
    last: Option<Instant>,
    metrics: Arc<GenMetrics>,
    labels: ModelLabels,
    think: Option<ThinkSplitter>,
    tools: Option<ToolStream>,
    ready: VecDeque<Output>,
    check: Option<JsonCheck>,
    ended: bool,
}

/// How [`Running`] is put together by the service.
pub(super) struct Parts {
    pub ticket: Ticket,
    pub rx: mpsc::UnboundedReceiver<Event>,
    pub pending: Option<Event>,
    pub load_duration: Duration,
    pub started: Instant,
    pub metrics: Arc<GenMetrics>,
    pub split_think: bool,
    pub tool_names: Vec<String>,
    pub check: Option<JsonCheck>,
}

impl Running {
    pub(super) fn new(p: Parts) -> Self {
        let labels = crate::metrics::model(&p.ticket.resident.entry.name);
        Self {
            ticket: p.ticket,
            rx: p.rx,
            pending: p.pending,
            load_duration: p.load_duration,
            started: p.started,
            tools_offered: !p.tool_names.is_empty(),
            last: None,
            metrics: p.metrics,
            labels,
            think: p.split_think.then(ThinkSplitter::default),
            tools: (!p.tool_names.is_empty()).then(|| ToolStream::new(p.tool_names)),
            ready: VecDeque::new(),
            check: p.check,
            ended: false,
        }
    }

    pub fn model_name(&self) -> &str {
        &self.ticket.resident.entry.name
    }

    /// The next output; `None` after `Done` or `Error` has been handed out.
    pub async fn next(&mut self) -> Option<Output> {
        if self.check.is_some() {
            self.checked_answer().await;
        }
        loop {
            if let Some(o) = self.ready.pop_front() {
                return Some(o);
            }
            if self.ended {
                return None;
            }
            match self.recv().await {
                Some(ev) => self.split(ev),
                None => {
                    self.ended = true;
                    return Some(Output::Error(ServeError::NoAnswer));
                }
            }
        }
    }

    /// The next engine event, recording time-to-first-token, inter-token latency and counts.
    async fn recv(&mut self) -> Option<Event> {
        let ev = match self.pending.take() {
            Some(ev) => ev,
            None => self.rx.recv().await?,
        };
        let now = Instant::now();
        match &ev {
            Event::Token { .. } => {
                match self.last {
                    None => self.metrics.ttft.get_or_create(&self.labels).observe((now - self.started).as_secs_f64()),
                    Some(t) => self.metrics.inter_token.get_or_create(&self.labels).observe((now - t).as_secs_f64()),
                }
                self.last = Some(now);
            }
            Event::Done { perf, .. } => {
                let m = &self.metrics;
                m.prompt_tokens.get_or_create(&self.labels).inc_by(u64::from(perf.prompt_eval_tokens));
                m.cached_tokens.get_or_create(&self.labels).inc_by(u64::from(perf.cached_tokens));
                m.generated(&self.labels, u64::from(perf.generated_tokens));
                let family = match perf.prompt_cache {
                    Some(PromptCacheUse::Loaded) => Some(&m.prompt_cache_loads),
                    Some(PromptCacheUse::Created) => Some(&m.prompt_cache_creates),
                    None => None,
                };
                if let Some(f) = family {
                    f.get_or_create(&self.labels).inc();
                }
            }
            Event::Error(_) => {}
        }
        Some(ev)
    }

    /// Queues the outputs of one engine event.
    fn split(&mut self, ev: Event) {
        match ev {
            Event::Token { text, .. } => {
                let pieces = match self.think.as_mut() {
                    Some(t) => t.feed(&text),
                    None => vec![Piece::Text(text)],
                };
                self.queue_pieces(pieces);
            }
            Event::Done { reason, perf } => {
                if let Some(t) = self.think.as_mut() {
                    let rest = t.finish();
                    self.queue_pieces(rest);
                }
                if let Some(t) = self.tools.as_mut() {
                    let (rest, calls) = t.finish();
                    if !rest.is_empty() {
                        self.ready.push_back(Output::Text(rest));
                    }
                    if !calls.is_empty() {
                        self.ready.push_back(Output::ToolCalls(calls));
                    }
                }
                self.ready.push_back(Output::Done { reason, perf });
                self.ended = true;
            }
            Event::Error(e) => {
                self.ready.push_back(Output::Error(e.into()));
                self.ended = true;
            }
        }
    }

    fn queue_pieces(&mut self, pieces: Vec<Piece>) {
        for p in pieces {
            match p {
                Piece::Reasoning(r) => self.ready.push_back(Output::Reasoning(r)),
                Piece::Text(t) => {
                    let t = match self.tools.as_mut() {
                        Some(tools) => tools.feed(&t),
                        None => t,
                    };
                    if !t.is_empty() {
                        self.ready.push_back(Output::Text(t));
                    }
                }
            }
        }
    }

    /// Reads the whole answer, checks its JSON, retries once if it fails, and queues the result
    /// as one text output (streaming clients then get the checked answer in one chunk).
    async fn checked_answer(&mut self) {
        let Some(mut check) = self.check.take() else { return };
        loop {
            let (mut reasoning, mut text, mut end) = (String::new(), String::new(), None);
            while end.is_none() {
                let Some(ev) = self.recv().await else { break };
                self.split(ev);
                while let Some(o) = self.ready.pop_front() {
                    match o {
                        Output::Text(t) => text.push_str(&t),
                        Output::Reasoning(r) => reasoning.push_str(&r),
                        Output::ToolCalls(_) => {}
                        other => end = Some(other),
                    }
                }
            }
            let Some(end) = end else { return };
            // An answer cut at max_tokens is passed on as it is, with finish_reason "length",
            // as OpenAI does: its JSON may be incomplete, and a retry within the same budget
            // would be cut too, so failing it would blame the model for the client's limit.
            let cut = matches!(end, Output::Done { reason: FinishReason::Length, .. });
            if !matches!(end, Output::Done { .. }) || cut {
                if cut {
                    if !reasoning.is_empty() {
                        self.ready.push_back(Output::Reasoning(reasoning));
                    }
                    self.ready.push_back(Output::Text(text));
                }
                self.ready.push_back(end);
                return;
            }
            match jsoncheck::check(&text, check.schema.as_ref()) {
                Ok(json) => {
                    if !reasoning.is_empty() {
                        self.ready.push_back(Output::Reasoning(reasoning));
                    }
                    self.ready.push_back(Output::Text(json));
                    self.ready.push_back(end);
                    return;
                }
                Err(why) => match check.retry.take() {
                    Some(mut req) => {
                        tracing::info!(model = %self.model_name(), %why, "answer is not the requested JSON; retrying once");
                        nudge(&mut req, &why);
                        self.ended = false;
                        self.think = self.think.as_ref().map(|_| ThinkSplitter::default());
                        match self.ticket.resident.instance.submit(req) {
                            Ok(rx) => self.rx = rx,
                            Err(e) => {
                                self.ready.push_back(Output::Error(e.into()));
                                return;
                            }
                        }
                    }
                    None => {
                        self.ready.push_back(Output::Error(ServeError::JsonRetryFailed(why)));
                        return;
                    }
                },
            }
        }
    }

    /// Reads the whole answer.
    pub async fn collect(mut self) -> Result<Collected, ServeError> {
        let (mut text, mut reasoning, mut tool_calls) = (String::new(), String::new(), Vec::new());
        while let Some(o) = self.next().await {
            match o {
                Output::Text(t) => text.push_str(&t),
                Output::Reasoning(r) => reasoning.push_str(&r),
                Output::ToolCalls(c) => tool_calls.extend(c),
                Output::Done { reason, perf } => {
                    if self.tools_offered {
                        // The text around a call block, as one answer (`tools::parse` trims too).
                        text = text.trim().to_owned();
                    }
                    return Ok(Collected { text, reasoning, tool_calls, reason, perf });
                }
                Output::Error(e) => return Err(e),
            }
        }
        Err(ServeError::NoAnswer)
    }
}

/// Tells the model what was wrong with its answer, for the one retry.
fn nudge(req: &mut GenRequest, why: &str) {
    let note = format!("\n\n(Your previous answer was rejected: {why}. Reply with the JSON only.)");
    match &mut req.chat {
        Some(c) => {
            if let Some(m) = c.messages.iter_mut().rev().find(|m| m["role"] == "user") {
                let old = m["content"].as_str().unwrap_or_default().to_owned();
                m["content"] = Value::String(old + &note);
            }
        }
        None => req.prompt.push_str(&note),
    }
}
