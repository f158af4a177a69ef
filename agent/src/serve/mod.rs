//! Generation as a service: everything between a parsed API request and the engine's token
//! stream, independent of which API asked. The HTTP handlers translate their request into a
//! [`Prompt`] and [`GenParams`], call [`Service::generate`], and translate the [`Running`]
//! outputs back into their API's shape.
//!
//! ```text
//!  find model (name, alias, base:adapter) ──► ticket (sched: load, queue, slot)
//!    ──► render: the model's template, or the conversation for an engine that renders itself
//!    ──► count tokens against the window ──► Instance::submit ──► Running (see running.rs)
//! ```
//!
//! Errors are [`ServeError`]s; `api::error` alone turns them into HTTP.

mod error;
pub mod jsoncheck;
pub mod messages;
mod metrics;
mod rate;
mod running;
pub mod think;
pub mod toolstream;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use self::running::{JsonCheck, Parts};
pub use self::{
    error::ServeError,
    messages::normalize_messages,
    metrics::GenMetrics,
    running::{Collected, Output, Running},
};
use crate::{
    engine::{ChatInput, Embeddings, Event, GenRequest, OutputFormat, SamplingParams},
    keepalive::KeepAlive,
    models::ModelEntry,
    sched::{Resident, Scheduler},
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

/// Per-request generation settings after merging the model's defaults and the request's fields.
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
    /// Reasoning asked for (Ollama `think`, OpenAI `reasoning_effort`, `enable_thinking`);
    /// `None` = the model's `thinking` setting, on models that can.
    pub think: Option<bool>,
    /// LoRA adapter from a `base:adapter` model name.
    pub adapter: Option<String>,
}

impl GenParams {
    /// Starts from the model's configured defaults.
    pub fn for_model(entry: &ModelEntry) -> Self {
        Self { sampling: entry.settings.sampling.clone(), max_tokens: entry.settings.max_tokens, ..Self::default() }
    }
}

/// The result of an embedding request.
#[derive(Debug)]
pub struct Embedded {
    pub model: String,
    pub embeddings: Embeddings,
    /// Time spent loading the model for this request (zero when it was resident).
    pub load_duration: Duration,
}

/// The generation service. Cheap to share; holds the scheduler and the generation metrics.
pub struct Service {
    sched: Arc<Scheduler>,
    metrics: Arc<GenMetrics>,
    /// Model used when a request names none (`--default-model`).
    default_model: Option<String>,
}

impl Service {
    pub fn new(sched: Arc<Scheduler>, metrics: GenMetrics, default_model: Option<String>) -> Self {
        Self { sched, metrics: Arc::new(metrics), default_model }
    }

    pub fn sched(&self) -> &Arc<Scheduler> {
        &self.sched
    }

    /// Token counts and latencies per model (the status page reads the token totals).
    pub fn metrics(&self) -> &GenMetrics {
        &self.metrics
    }

    /// Looks a model up by any of its names; an empty name means the default model.
    pub fn find(&self, name: &str) -> Result<Arc<ModelEntry>, ServeError> {
        let name = match (name.trim(), &self.default_model) {
            ("", Some(d)) => d.as_str(),
            ("", None) => return Err(ServeError::invalid("model", "model is required")),
            (n, _) => n,
        };
        self.sched.registry().lookup(name).ok_or_else(|| ServeError::ModelNotFound(name.to_owned()))
    }

    /// Like [`find`](Self::find), also accepting `base:adapter` for a LoRA adapter configured on
    /// `base`.
    pub fn find_for_generation(&self, name: &str) -> Result<(Arc<ModelEntry>, Option<String>), ServeError> {
        match self.find(name) {
            Ok(e) => Ok((e, None)),
            Err(not_found) => {
                let Some((base, adapter)) = name.trim().rsplit_once(':') else { return Err(not_found) };
                let entry = self.sched.registry().lookup(base).ok_or(not_found)?;
                if !entry.settings.loras.contains_key(adapter) {
                    return Err(ServeError::ModelNotFound(name.trim().to_owned()));
                }
                Ok((entry, Some(adapter.to_owned())))
            }
        }
    }

    /// The keep-alive a request gets: its own, else the model's configured one, else the agent's.
    pub fn keep_alive_for(&self, entry: &ModelEntry, requested: Option<KeepAlive>) -> KeepAlive {
        self.sched.keep_alive_for(entry, requested)
    }

    /// Makes `entry` resident now (explicit load, Ollama's empty prompt).
    pub async fn load(
        &self,
        entry: &Arc<ModelEntry>,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Arc<Resident>, ServeError> {
        let ka = self.keep_alive_for(entry, keep_alive);
        Ok(self.sched.load(entry, ka).await?)
    }

    /// Unloads `name` now if idle, else when its last request ends; whether it was resident.
    pub fn unload(&self, name: &str) -> bool {
        self.sched.unload(name)
    }

    /// Embeddings of `inputs` with the model called `model`.
    pub async fn embed(
        &self,
        model: &str,
        inputs: Vec<String>,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Embedded, ServeError> {
        let entry = self.find(model)?;
        let was_resident = self.sched.resident(&entry.name).is_some();
        let ticket = self.sched.acquire(&entry, self.keep_alive_for(&entry, keep_alive)).await?;
        let load_duration = if was_resident { Duration::ZERO } else { ticket.resident.load_duration };
        let rx = ticket.resident.instance.embed(inputs);
        let embeddings = rx.await.map_err(|_| ServeError::NoAnswer)??;
        Ok(Embedded { model: entry.name.clone(), embeddings, load_duration })
    }

    /// Takes a ticket on the model, renders and checks the prompt, and submits it.
    pub async fn generate(
        &self,
        entry: &Arc<ModelEntry>,
        prompt: Prompt,
        mut params: GenParams,
    ) -> Result<Running, ServeError> {
        params.sampling.validate().map_err(|e| ServeError::Invalid { param: Some(e.param), message: e.to_string() })?;
        if params.think == Some(true) && !entry.capabilities.thinking {
            return Err(ServeError::invalid("think", format!("\"{}\" does not support thinking", entry.name)));
        }
        let think = params.think.unwrap_or(entry.capabilities.thinking && entry.settings.thinking == Some(true));
        let started = Instant::now();
        let was_resident = self.sched.resident(&entry.name).is_some();
        let keep_alive = self.keep_alive_for(entry, params.keep_alive);
        let ticket = self.sched.acquire(entry, keep_alive).await?;
        let r = Arc::clone(&ticket.resident);
        let constrained = r.instance.constrains_output();
        if !constrained && matches!(&prompt, Prompt::Chat { tools: Some(_), .. }) {
            // A forced tool call is a grammar; without one the model's own tool-call turn decides.
            params.format = None;
        }
        let hint = (!constrained).then(|| params.format.as_ref().map(json_instruction)).flatten();
        let split_think = matches!(prompt, Prompt::Chat { .. });
        let (text, tool_names, chat) = render(entry, &r, prompt, hint.as_deref())?;
        let facts = r.instance.facts();
        let window = params.context_limit.map_or(facts.n_ctx, |l| l.min(facts.n_ctx));
        let n = if chat.is_none() {
            r.instance.count_tokens(&text).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        } else {
            None
        };
        if let Some(n) = n
            && n >= window
        {
            return Err(crate::engine::EngineError::PromptTooLong { prompt: n, context: window }.into());
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
            format: if constrained { params.format.clone() } else { None },
            ignore_eos: params.ignore_eos,
            chat,
            think,
            adapter: params.adapter,
        };
        let check = (!constrained).then_some(params.format.as_ref()).flatten().map(|f| JsonCheck {
            schema: match f {
                OutputFormat::Schema(s) => Some(s.clone()),
                OutputFormat::JsonObject => None,
            },
            retry: Some(req.clone()),
        });
        let mut rx = r.instance.submit(req)?;
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
        Ok(Running::new(Parts {
            ticket,
            rx,
            pending,
            load_duration,
            started,
            metrics: Arc::clone(&self.metrics),
            split_think,
            tool_names,
            check,
        }))
    }
}

/// The prompt text (empty for an engine that renders chat itself), the offered function names,
/// and the conversation for such an engine.
fn render(
    entry: &ModelEntry,
    r: &Resident,
    prompt: Prompt,
    hint: Option<&str>,
) -> Result<(String, Vec<String>, Option<ChatInput>), ServeError> {
    let (mut messages, tools) = match prompt {
        Prompt::Text(t) => {
            let text = match hint {
                Some(h) => format!("{h}\n\n{t}"),
                None => t,
            };
            return Ok((text, Vec::new(), None));
        }
        Prompt::Chat { messages, tools } => (messages, tools),
    };
    let tool_names = tools.as_ref().map(tools::names).unwrap_or_default();
    if let Some(sys) = &entry.settings.system
        && !messages.iter().any(|m| m["role"] == "system")
    {
        messages.insert(0, json!({"role": "system", "content": sys}));
    }
    if let Some(h) = hint {
        add_to_system(&mut messages, h);
    }
    if r.instance.renders_chat() {
        let system: Vec<&str> =
            messages.iter().filter(|m| m["role"] == "system").filter_map(|m| m["content"].as_str()).collect();
        let system = system.join("\n\n");
        let rest: Vec<Value> = messages.into_iter().filter(|m| m["role"] != "system").collect();
        if rest.is_empty() {
            return Err(ServeError::invalid("messages", "messages need at least one user or tool message"));
        }
        return Ok((String::new(), tool_names, Some(ChatInput { system, messages: rest, tools })));
    }
    if let Some(t) = &tools
        && !r.template.handles_tools
        && !tool_names.is_empty()
    {
        add_to_system(&mut messages, &tools::describe(t));
    }
    let facts = r.instance.facts();
    let rendered = r
        .template
        .render(&messages, tools.as_ref(), true, &facts.bos, &facts.eos)
        .map_err(|e| ServeError::Invalid { message: e.to_string(), param: Some("messages") })?;
    Ok((rendered, tool_names, None))
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

fn add_to_system(messages: &mut Vec<Value>, extra: &str) {
    match messages.iter_mut().find(|m| m["role"] == "system") {
        Some(m) => {
            let old = m["content"].as_str().unwrap_or_default().to_owned();
            m["content"] = Value::String(format!("{old}\n\n{extra}"));
        }
        None => messages.insert(0, json!({"role": "system", "content": extra})),
    }
}
