//! Generation shared by the OpenAI and Ollama routes: resolve the model, take a lease, render the
//! prompt, check it fits, submit, and pump events while recording latency metrics.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{AppState, error::AppError};
use crate::{
    engine::{Event, FinishReason, GenRequest, Perf, SamplingParams, llama},
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
}

/// The whole answer of a non-streaming request.
pub struct Collected {
    pub text: String,
    pub reason: FinishReason,
    pub perf: Perf,
}

impl Running {
    pub fn model_name(&self) -> &str {
        &self.lease.resident.entry.name
    }

    /// The next event, recording time-to-first-token, inter-token latency and token counts.
    pub async fn next(&mut self) -> Option<Event> {
        let ev = self.rx.recv().await?;
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
                self.metrics.prompt_tokens.get_or_create(&self.labels).inc_by(u64::from(perf.prompt_eval_tokens));
                self.metrics.cached_tokens.get_or_create(&self.labels).inc_by(u64::from(perf.cached_tokens));
                self.metrics.generated_tokens.get_or_create(&self.labels).inc_by(u64::from(perf.generated_tokens));
            }
            Event::Error(_) => {}
        }
        Some(ev)
    }

    /// Reads the whole answer.
    pub async fn collect(mut self) -> Result<Collected, AppError> {
        let mut text = String::new();
        while let Some(ev) = self.next().await {
            match ev {
                Event::Token { text: t, .. } => text.push_str(&t),
                Event::Done { reason, perf } => return Ok(Collected { text, reason, perf }),
                Event::Error(e) => return Err(e.into()),
            }
        }
        Err(AppError::Internal("the engine ended the request without an answer".into()))
    }
}

/// Takes a lease on the model, renders and checks the prompt, and submits it.
pub async fn start(
    state: &AppState,
    entry: &Arc<ModelEntry>,
    prompt: Prompt,
    params: GenParams,
) -> Result<Running, AppError> {
    params.sampling.validate().map_err(|m| AppError::BadRequest { message: m, param: None })?;
    let grammar = match &params.format {
        None => None,
        Some(OutputFormat::JsonObject) => Some(llama::grammar_for_schema(&json!({"type": "object"}))?),
        Some(OutputFormat::Schema(s)) => Some(llama::grammar_for_schema(s)?),
    };
    let started = Instant::now();
    let was_resident = state.sched.resident(&entry.name).is_some();
    let keep_alive = state.sched.keep_alive_for(entry, params.keep_alive);
    let lease = state.sched.acquire(entry, keep_alive).await?;
    let r = Arc::clone(&lease.resident);
    let facts = r.instance.facts();
    let (text, tool_names) = match prompt {
        Prompt::Text(t) => (t, Vec::new()),
        Prompt::Chat { mut messages, tools } => {
            let tool_names = tools.as_ref().map(tools::names).unwrap_or_default();
            if let Some(sys) = &entry.settings.system
                && !messages.iter().any(|m| m["role"] == "system")
            {
                messages.insert(0, json!({"role": "system", "content": sys}));
            }
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
            (rendered, tool_names)
        }
    };
    let n = u32::try_from(r.instance.count_tokens(&text)).unwrap_or(u32::MAX);
    let window = params.context_limit.map_or(facts.n_ctx, |l| l.min(facts.n_ctx));
    if n >= window {
        return Err(AppError::PromptTooLong { prompt: n, context: window });
    }
    let mut max_tokens = params.max_tokens;
    if params.context_limit.is_some() {
        max_tokens = Some(max_tokens.unwrap_or(u32::MAX).min(window - n));
    }
    let req = GenRequest {
        prompt: text,
        sampling: params.sampling,
        max_tokens,
        stop: params.stop,
        grammar,
        ignore_eos: params.ignore_eos,
    };
    let rx = r.instance.submit(req);
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
