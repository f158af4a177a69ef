//! Generation shared by the OpenAI and Ollama routes: resolve the model, take a lease, render the
//! prompt (or hand the conversation to an engine that templates itself), check it fits, submit,
//! and pump events while recording latency metrics. Reasoning (`<think>` blocks) is split from
//! the answer here, and JSON output is checked (and retried once) for engines that cannot
//! constrain decoding.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    AppState,
    error::AppError,
    jsoncheck,
    think::{Piece, ThinkSplitter},
};
use crate::{
    engine::{ChatInput, Event, FinishReason, GenRequest, Perf, PromptCacheUse, SamplingParams, llama},
    keepalive::KeepAlive,
    metrics::Metrics,
    models::ModelEntry,
    sched::Lease,
    tools,
};

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Messages (already normalised by [`normalize_messages`]) and optional OpenAI tools.
    Chat { messages: Vec<Value>, tools: Option<Value> },
    /// Text sent to the model as is (completions, Ollama `raw`).
    Text(String),
}

/// Constrained output.
#[derive(Debug, Clone)]
pub enum OutputFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON matching this schema.
    Schema(Value),
}

/// Per-request generation settings after merging config defaults and request fields.
#[derive(Debug, Clone, Default)]
pub struct GenParams {
    pub sampling: SamplingParams,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub format: Option<OutputFormat>,
    pub ignore_eos: bool,
    pub keep_alive: Option<KeepAlive>,
    /// Ollama `num_ctx` below the loaded window: prompt plus output must fit it.
    pub context_limit: Option<u32>,
    /// Reasoning asked for (Ollama `think`, OpenAI `reasoning_effort`, `enable_thinking`).
    pub think: bool,
    /// LoRA adapter from a `base:adapter` model name.
    pub adapter: Option<String>,
}

impl GenParams {
    /// Starts from the model's configured defaults.
    pub fn for_model(entry: &ModelEntry) -> Self {
        Self { sampling: entry.settings.sampling.clone(), max_tokens: entry.settings.max_tokens, ..Self::default() }
    }
}

/// Looks a model up by any of its names.
pub fn find_model(state: &AppState, name: &str) -> Result<Arc<ModelEntry>, AppError> {
    let name = match (name.trim(), &state.default_model) {
        ("", Some(d)) => d.as_str(),
        ("", None) => return Err(AppError::bad("model", "model is required")),
        (n, _) => n,
    };
    state.sched.registry().lookup(name).ok_or_else(|| AppError::ModelNotFound(name.to_owned()))
}

/// Like [`find_model`], also accepting `base:adapter` for a LoRA adapter configured on `base`.
pub fn find_model_for_generation(state: &AppState, name: &str) -> Result<(Arc<ModelEntry>, Option<String>), AppError> {
    match find_model(state, name) {
        Ok(e) => Ok((e, None)),
        Err(not_found) => {
            let Some((base, adapter)) = name.trim().rsplit_once(':') else { return Err(not_found) };
            let entry = state.sched.registry().lookup(base).ok_or(not_found)?;
            if !entry.settings.loras.contains_key(adapter) {
                return Err(AppError::ModelNotFound(name.trim().to_owned()));
            }
            Ok((entry, Some(adapter.to_owned())))
        }
    }
}

/// A generation in progress. Dropping it cancels the request in the engine.
pub struct Running {
    pub lease: Lease,
    rx: mpsc::UnboundedReceiver<Event>,
    /// Function names the request offered, for parsing tool calls out of the text.
    pub tool_names: Vec<String>,
    /// Time spent loading the model for this request (zero when it was resident).
    pub load_duration: Duration,
    pub started: Instant,
    last: Option<Instant>,
    metrics: Arc<Metrics>,
    labels: crate::metrics::ModelLabels,
    /// Splits `<think>` blocks off chat answers.
    think: Option<ThinkSplitter>,
    /// Events ready to hand out (split pieces, a checked JSON answer).
    ready: VecDeque<Event>,
    /// JSON to check after the fact, with the request to retry once.
    check: Option<JsonCheck>,
    /// An engine event read ahead by [`start`], handed out before the channel's next one.
    pending: Option<Event>,
}

struct JsonCheck {
    schema: Option<Value>,
    retry: Option<GenRequest>,
}

/// The whole answer of a non-streaming request.
pub struct Collected {
    pub text: String,
    /// Reasoning split from a `<think>` block ("" when none).
    pub reasoning: String,
    pub reason: FinishReason,
    pub perf: Perf,
}

impl Running {
    pub fn model_name(&self) -> &str {
        &self.lease.resident.entry.name
    }

    /// The next event, recording time-to-first-token, inter-token latency and token counts.
    /// Answer text arrives as `Token`, reasoning as `Reasoning`.
    pub async fn next(&mut self) -> Option<Event> {
        if self.check.is_some() {
            self.checked_answer().await;
        }
        let ev = loop {
            if let Some(ev) = self.ready.pop_front() {
                break ev;
            }
            let ev = self.recv_raw().await?;
            self.split(ev);
        };
        let now = Instant::now();
        match &ev {
            Event::Token { .. } | Event::Reasoning { .. } => {
                match self.last {
                    None => self.metrics.ttft.get_or_create(&self.labels).observe((now - self.started).as_secs_f64()),
                    Some(t) => self.metrics.inter_token.get_or_create(&self.labels).observe((now - t).as_secs_f64()),
                }
                self.last = Some(now);
            }
            Event::Done { perf, .. } => {
                self.metrics.prompt_tokens.get_or_create(&self.labels).inc_by(u64::from(perf.prompt_eval_tokens));
                self.metrics.cached_tokens.get_or_create(&self.labels).inc_by(u64::from(perf.cached_tokens));
                self.metrics.generated_tokens.get_or_create(&self.labels).inc_by(u64::from(perf.generated_tokens));
                let family = match perf.prompt_cache {
                    Some(PromptCacheUse::Loaded) => Some(&self.metrics.prompt_cache_loads),
                    Some(PromptCacheUse::Created) => Some(&self.metrics.prompt_cache_creates),
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

    async fn recv_raw(&mut self) -> Option<Event> {
        match self.pending.take() {
            Some(ev) => Some(ev),
            None => self.rx.recv().await,
        }
    }

    /// Queues an engine event, splitting reasoning from answer text.
    fn split(&mut self, ev: Event) {
        match (ev, &mut self.think) {
            (Event::Token { text, id }, Some(s)) => {
                for p in s.feed(&text) {
                    self.ready.push_back(piece_event(p, id));
                }
            }
            (ev @ Event::Done { .. }, Some(s)) => {
                for p in s.finish() {
                    self.ready.push_back(piece_event(p, -1));
                }
                self.ready.push_back(ev);
            }
            (ev, _) => self.ready.push_back(ev),
        }
    }

    /// Reads the whole answer, checks its JSON, retries once if it fails, and queues the result
    /// as one text event (streaming clients then get the checked answer in one chunk).
    async fn checked_answer(&mut self) {
        let Some(mut check) = self.check.take() else { return };
        loop {
            let mut reasoning = String::new();
            let mut text = String::new();
            let mut end = None;
            while let Some(ev) = self.recv_raw().await {
                self.split(ev);
                while let Some(ev) = self.ready.pop_front() {
                    match ev {
                        Event::Token { text: t, .. } => text.push_str(&t),
                        Event::Reasoning { text: t } => reasoning.push_str(&t),
                        other => end = Some(other),
                    }
                }
                if end.is_some() {
                    break;
                }
            }
            let Some(end) = end else { return };
            if !matches!(end, Event::Done { .. }) {
                self.ready.push_back(end);
                return;
            }
            match jsoncheck::check(&text, check.schema.as_ref()) {
                Ok(json) => {
                    self.ready.extend(queue(reasoning, json, end));
                    return;
                }
                Err(why) => match check.retry.take() {
                    Some(mut req) => {
                        tracing::info!(model = %self.model_name(), %why, "answer is not the requested JSON; retrying once");
                        nudge(&mut req, &why);
                        self.rx = self.lease.resident.instance.submit(req);
                        self.think = self.think.as_ref().map(|_| ThinkSplitter::default());
                    }
                    None => {
                        let msg = format!("the model did not produce the requested JSON after one retry: {why}");
                        self.ready.push_back(Event::Error(crate::engine::EngineError::Decode(msg)));
                        return;
                    }
                },
            }
        }
    }

    /// Reads the whole answer.
    pub async fn collect(mut self) -> Result<Collected, AppError> {
        let mut text = String::new();
        let mut reasoning = String::new();
        while let Some(ev) = self.next().await {
            match ev {
                Event::Token { text: t, .. } => text.push_str(&t),
                Event::Reasoning { text: t } => reasoning.push_str(&t),
                Event::Done { reason, perf } => return Ok(Collected { text, reasoning, reason, perf }),
                Event::Error(e) => return Err(e.into()),
            }
        }
        Err(AppError::Internal("the engine ended the request without an answer".into()))
    }
}

fn piece_event(p: Piece, id: i32) -> Event {
    match p {
        Piece::Text(text) => Event::Token { text, id },
        Piece::Reasoning(text) => Event::Reasoning { text },
    }
}

fn queue(reasoning: String, json: String, end: Event) -> Vec<Event> {
    let mut v = Vec::new();
    if !reasoning.is_empty() {
        v.push(Event::Reasoning { text: reasoning });
    }
    v.push(Event::Token { text: json, id: -1 });
    v.push(end);
    v
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

/// The instruction an unconstrained engine gets in place of a grammar.
fn json_instruction(format: &OutputFormat) -> String {
    match format {
        OutputFormat::JsonObject => "Respond with a single JSON object and nothing else.".into(),
        OutputFormat::Schema(s) => {
            format!("Respond with a single JSON value matching this JSON schema and nothing else: {s}")
        }
    }
}

/// Takes a lease on the model, renders and checks the prompt, and submits it.
pub async fn start(
    state: &AppState,
    entry: &Arc<ModelEntry>,
    prompt: Prompt,
    mut params: GenParams,
) -> Result<Running, AppError> {
    params.sampling.validate().map_err(|m| AppError::BadRequest { message: m, param: None })?;
    let started = Instant::now();
    let was_resident = state.sched.resident(&entry.name).is_some();
    let keep_alive = state.sched.keep_alive_for(entry, params.keep_alive);
    let lease = state.sched.acquire(entry, keep_alive).await?;
    let r = Arc::clone(&lease.resident);
    if params.think && !r.instance.facts().thinking {
        return Err(AppError::bad("think", format!("\"{}\" does not support thinking", entry.name)));
    }
    let constrained = r.instance.constrains_output();
    let renders = r.instance.renders_chat();
    if !constrained && matches!(&prompt, Prompt::Chat { tools: Some(_), .. }) {
        // A forced tool call is a grammar; without one the model's own tool-call turn decides.
        params.format = None;
    }
    let grammar = match (&params.format, constrained) {
        (None, _) | (Some(_), false) => None,
        (Some(OutputFormat::JsonObject), true) => Some(llama::grammar_for_schema(&json!({"type": "object"}))?),
        (Some(OutputFormat::Schema(s)), true) => Some(llama::grammar_for_schema(s)?),
    };
    let hint = (!constrained).then(|| params.format.as_ref().map(json_instruction)).flatten();
    let facts = r.instance.facts();
    let split_think = matches!(prompt, Prompt::Chat { .. });
    let (text, tool_names, chat) = match prompt {
        Prompt::Text(t) => match &hint {
            Some(h) => (format!("{h}\n\n{t}"), Vec::new(), None),
            None => (t, Vec::new(), None),
        },
        Prompt::Chat { mut messages, tools } => {
            let tool_names = tools.as_ref().map(tools::names).unwrap_or_default();
            if let Some(sys) = &entry.settings.system
                && !messages.iter().any(|m| m["role"] == "system")
            {
                messages.insert(0, json!({"role": "system", "content": sys}));
            }
            if let Some(h) = &hint {
                add_to_system(&mut messages, h);
            }
            if renders {
                let system: Vec<&str> =
                    messages.iter().filter(|m| m["role"] == "system").filter_map(|m| m["content"].as_str()).collect();
                let system = system.join("\n\n");
                let rest: Vec<Value> = messages.into_iter().filter(|m| m["role"] != "system").collect();
                if rest.is_empty() {
                    return Err(AppError::bad("messages", "messages need at least one user or tool message"));
                }
                (String::new(), tool_names, Some(ChatInput { system, messages: rest, tools }))
            } else {
                if let Some(t) = &tools
                    && !r.template.handles_tools
                    && !tool_names.is_empty()
                {
                    add_to_system(&mut messages, &tools::describe(t));
                }
                let rendered = r
                    .template
                    .render(&messages, tools.as_ref(), true, &facts.bos, &facts.eos)
                    .map_err(|m| AppError::BadRequest { message: m, param: Some("messages") })?;
                (rendered, tool_names, None)
            }
        }
    };
    let window = params.context_limit.map_or(facts.n_ctx, |l| l.min(facts.n_ctx));
    let n = if chat.is_none() {
        r.instance.count_tokens(&text).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    } else {
        None
    };
    if let Some(n) = n
        && n >= window
    {
        return Err(AppError::PromptTooLong { prompt: n, context: window });
    }
    let mut max_tokens = params.max_tokens;
    if params.context_limit.is_some() {
        max_tokens = Some(max_tokens.unwrap_or(u32::MAX).min(window - n.unwrap_or(0)));
    }
    let req = GenRequest {
        prompt: text,
        sampling: params.sampling,
        max_tokens,
        stop: params.stop,
        grammar,
        ignore_eos: params.ignore_eos,
        chat,
        think: params.think,
        adapter: params.adapter,
    };
    let check = (!constrained).then_some(params.format.as_ref()).flatten().map(|f| JsonCheck {
        schema: match f {
            OutputFormat::Schema(s) => Some(s.clone()),
            OutputFormat::JsonObject => None,
        },
        retry: Some(req.clone()),
    });
    let mut rx = r.instance.submit(req);
    // An engine that could not count the prompt (RKLLM) rejects an over-long one when the run
    // starts: wait for its first event so that error gets its status code, as the pre-check's
    // does, rather than a 200 stream holding the error.
    let pending = match n {
        Some(_) => None,
        None => match rx.recv().await {
            Some(Event::Error(e)) => return Err(e.into()),
            ev => ev,
        },
    };
    let load_duration = if was_resident { Duration::ZERO } else { r.load_duration };
    let labels = Metrics::model(&entry.name);
    Ok(Running {
        lease,
        rx,
        tool_names,
        load_duration,
        started,
        last: None,
        metrics: Arc::clone(&state.metrics),
        labels,
        think: split_think.then(ThinkSplitter::default),
        ready: VecDeque::new(),
        check,
        pending,
    })
}

fn add_to_system(messages: &mut Vec<Value>, extra: &str) {
    match messages.iter_mut().find(|m| m["role"] == "system") {
        Some(m) => {
            let old = m["content"].as_str().unwrap_or_default().to_owned();
            m["content"] = Value::String(format!("{old}\n\n{extra}"));
        }
        None => messages.insert(0, json!({"role": "system", "content": extra})),
    }
}

/// Validates chat messages from either API and brings them to the shape templates expect:
/// `content` a string, tool-call arguments as objects, `developer` treated as `system`.
pub fn normalize_messages(raw: &[Value]) -> Result<Vec<Value>, AppError> {
    if raw.is_empty() {
        return Err(AppError::bad("messages", "messages must not be empty"));
    }
    raw.iter().enumerate().map(|(i, m)| normalize_message(i, m)).collect()
}

fn normalize_message(i: usize, m: &Value) -> Result<Value, AppError> {
    let obj = m.as_object().ok_or_else(|| AppError::bad("messages", format!("messages[{i}] must be an object")))?;
    let role = obj
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| AppError::bad("messages", format!("messages[{i}].role is required")))?;
    let role = match role {
        "developer" => "system",
        "system" | "user" | "assistant" | "tool" => role,
        other => {
            return Err(AppError::bad(
                "messages",
                format!("messages[{i}].role '{other}' is not one of system, user, assistant, tool"),
            ));
        }
    };
    if obj.get("images").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        return Err(AppError::bad("messages", "images are not supported by this model"));
    }
    let content = match obj.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => s.push_str(p.get("text").and_then(Value::as_str).unwrap_or_default()),
                    Some(t) => {
                        return Err(AppError::bad(
                            "messages",
                            format!("messages[{i}]: content part type '{t}' is not supported"),
                        ));
                    }
                    None => {
                        return Err(AppError::bad("messages", format!("messages[{i}]: content part without a type")));
                    }
                }
            }
            s
        }
        Some(_) => {
            return Err(AppError::bad(
                "messages",
                format!("messages[{i}].content must be a string or a list of parts"),
            ));
        }
    };
    let mut out = json!({"role": role, "content": content});
    if let Some(calls) = obj.get("tool_calls").and_then(Value::as_array) {
        let calls: Vec<Value> = calls
            .iter()
            .map(|c| {
                let f = c.get("function").cloned().unwrap_or_default();
                let args = match f.get("arguments") {
                    Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
                    Some(v) => v.clone(),
                    None => json!({}),
                };
                json!({"type": "function", "id": c.get("id"), "function": {"name": f.get("name"), "arguments": args}})
            })
            .collect();
        if content.is_empty() {
            // Templates without tool support still see what the assistant did.
            let blocks: Vec<String> = calls
                .iter()
                .map(|c| {
                    format!(
                        "<tool_call>\n{}\n</tool_call>",
                        json!({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})
                    )
                })
                .collect();
            out["content"] = Value::String(blocks.join("\n"));
        }
        out["tool_calls"] = Value::Array(calls);
    }
    for key in ["name", "tool_call_id", "tool_name"] {
        if let Some(v) = obj.get(key) {
            out[key] = v.clone();
        }
    }
    Ok(out)
}

/// OpenAI/Ollama `stop`: a string or a list of strings.
pub fn parse_stop(v: Option<&Value>) -> Result<Vec<String>, AppError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| AppError::bad("stop", "stop must be a string or a list of strings"))
            })
            .collect(),
        Some(_) => Err(AppError::bad("stop", "stop must be a string or a list of strings")),
    }
}

/// OpenAI and Ollama seeds are 64-bit; llama.cpp's are 32-bit. Fold the halves together so
/// distinct seeds stay distinct as far as possible and equal seeds stay equal.
pub fn fold_seed(seed: i64) -> u32 {
    let s = seed as u64;
    (s ^ (s >> 32)) as u32
}

/// Seconds since the epoch, for OpenAI's `created`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A short random id (`chatcmpl-…`), unique enough for response ids.
pub fn new_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let n = RandomState::new().hash_one(Instant::now());
    format!("{prefix}-{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_normalised() {
        let m = normalize_messages(&[
            json!({"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief"}]}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}),
            json!({"role": "tool", "content": "42", "tool_call_id": "c1"}),
        ])
        .unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief"}));
        assert_eq!(m[1]["tool_calls"][0]["function"]["arguments"], json!({"a": 1}));
        assert!(m[1]["content"].as_str().unwrap().contains("<tool_call>"));
        assert_eq!(m[2]["tool_call_id"], "c1");
    }

    #[test]
    fn bad_messages_name_the_problem() {
        assert!(normalize_messages(&[]).is_err());
        let e = normalize_messages(&[json!({"role": "wizard", "content": "x"})]).unwrap_err();
        assert!(e.to_string().contains("wizard"));
        let e = normalize_messages(&[json!({"role": "user", "content": [{"type": "image_url"}]})]).unwrap_err();
        assert!(e.to_string().contains("image_url"));
        assert!(normalize_messages(&[json!("hi")]).is_err());
    }

    #[test]
    fn stop_forms() {
        assert_eq!(parse_stop(Some(&json!("x"))).unwrap(), vec!["x"]);
        assert_eq!(parse_stop(Some(&json!(["a", "b"]))).unwrap(), vec!["a", "b"]);
        assert!(parse_stop(Some(&json!(3))).is_err());
    }
}
