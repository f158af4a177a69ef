//! Ollama-compatible routes (`/api/*`). Streaming is NDJSON (one JSON object per line, the last
//! with `done: true`); `stream: false` answers one object. Durations are nanoseconds from the
//! engine's perf record. Names are reported as `name:latest`, as Ollama does; lookups accept
//! both.

use std::{convert::Infallible, sync::Arc, time::SystemTime};

use api_types::{
    ApiError, ErrorShape, OllamaError, OllamaJson,
    ollama::{
        self as oll, ChatRequest, ChatResponse, DeleteRequest, Details, GenerateRequest, GenerateResponse, Message,
        Options, Progress, Ps, PsModel, PullRequest, Show, ShowRequest, Stats, TagModel, Tags, ToolFunction,
    },
    request_id,
};
use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};

use super::{AppState, params};
use crate::{
    engine::{FinishReason, OutputFormat, Perf},
    keepalive::KeepAlive,
    models::{ModelEntry, PullEvent},
    serve::{self, GenParams, Output, Prompt, Running},
    tools,
};

fn parse_format(v: Option<&Value>) -> Result<Option<OutputFormat>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(OutputFormat::JsonObject)),
        Some(Value::Object(_)) => Ok(Some(OutputFormat::Schema(v.cloned().unwrap_or_default()))),
        Some(_) => Err(ApiError::bad("format", "format must be \"json\" or a JSON schema object")),
    }
}

/// Ollama `think`: `true` or a level asks for reasoning; whether the model can is checked once
/// it is found (`serve::Service::generate`).
fn parse_think(v: Option<&Value>) -> Result<Option<bool>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(l)) if ["low", "medium", "high"].contains(&l.as_str()) => Ok(Some(true)),
        Some(_) => Err(ApiError::bad("think", "think must be a boolean or one of low, medium, high")),
    }
}

fn apply_options(o: Option<&Options>, p: &mut GenParams) -> Result<Option<u32>, ApiError> {
    let Some(o) = o else { return Ok(None) };
    let q = &mut p.sampling;
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = o.$f { q.$f = v; } )* };
    }
    set!(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty);
    if let Some(seed) = o.seed {
        q.seed = Some(params::fold_seed(seed));
    }
    match o.num_predict {
        None => {}
        Some(n) if n < 0 => p.max_tokens = None,
        Some(n) => p.max_tokens = Some(u32::try_from(n).unwrap_or(u32::MAX)),
    }
    if o.stop.is_some() {
        p.stop = params::parse_stop(o.stop.as_ref())?;
    }
    if o.num_ctx == Some(0) {
        return Err(ApiError::bad("num_ctx", "num_ctx must be positive"));
    }
    Ok(o.num_ctx)
}

/// Generation settings shared by `/api/chat` and `/api/generate`: the model's defaults, then
/// `options` (with `num_ctx` capping prompt plus output inside the loaded window), `format` and
/// `keep_alive`.
fn gen_params(
    entry: &ModelEntry,
    options: Option<&Options>,
    format: Option<&Value>,
    keep_alive: Option<KeepAlive>,
) -> Result<GenParams, ApiError> {
    let mut params = GenParams::for_model(entry);
    let num_ctx = apply_options(options, &mut params)?;
    params.context_limit = num_ctx.filter(|&n| n < entry.context);
    params.format = parse_format(format)?;
    params.keep_alive = keep_alive;
    Ok(params)
}

#[utoipa::path(post, path = "/api/chat", tag = "ollama", request_body = ChatRequest,
    responses((status = 200, description = "NDJSON stream, or one object with stream=false"),
              (status = 400, description = "Invalid request"), (status = 404, description = "Unknown model")))]
pub async fn chat(
    State(st): State<AppState>,
    OllamaJson(req): OllamaJson<ChatRequest>,
) -> Result<Response, OllamaError> {
    let (entry, adapter) = st.serve.find_for_generation(&req.model)?;
    let think = parse_think(req.think.as_ref())?;
    let keep_alive = params::keep_alive(req.keep_alive.as_ref())?;
    if req.messages.is_empty() {
        return Ok(load_or_unload(&st, &entry, keep_alive, false).await?);
    }
    let mut params = gen_params(&entry, req.options.as_ref(), req.format.as_ref(), keep_alive)?;
    (params.think, params.adapter) = (think, adapter);
    let messages = serve::normalize_messages(&req.messages)?;
    let tools = req.tools.filter(|t| !t.is_empty()).map(Value::Array);
    let run = st.serve.generate(&entry, Prompt::Chat { messages, tools }, params).await?;
    respond(run, req.stream.unwrap_or(true), Kind::Chat).await
}

#[utoipa::path(post, path = "/api/generate", tag = "ollama", request_body = GenerateRequest,
    responses((status = 200, description = "NDJSON stream, or one object with stream=false"),
              (status = 400, description = "Invalid request"), (status = 404, description = "Unknown model")))]
pub async fn generate(
    State(st): State<AppState>,
    OllamaJson(req): OllamaJson<GenerateRequest>,
) -> Result<Response, OllamaError> {
    let (entry, adapter) = st.serve.find_for_generation(&req.model)?;
    let think = parse_think(req.think.as_ref())?;
    let keep_alive = params::keep_alive(req.keep_alive.as_ref())?;
    if req.images.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(ApiError::bad("images", "images are not supported by this model").into());
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad("suffix", "suffix is not supported").into());
    }
    if req.template.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad("template", "Go templates are not supported; configure chat_template instead").into());
    }
    if req.prompt.is_empty() {
        return Ok(load_or_unload(&st, &entry, keep_alive, true).await?);
    }
    let mut params = gen_params(&entry, req.options.as_ref(), req.format.as_ref(), keep_alive)?;
    (params.think, params.adapter) = (think, adapter);
    let prompt = if req.raw.unwrap_or(false) {
        Prompt::Text(req.prompt)
    } else {
        let mut messages = Vec::new();
        if let Some(s) = req.system.filter(|s| !s.is_empty()) {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": req.prompt}));
        Prompt::Chat { messages, tools: None }
    };
    let run = st.serve.generate(&entry, prompt, params).await?;
    respond(run, req.stream.unwrap_or(true), Kind::Generate).await
}

/// Ollama's empty-prompt forms: load (`done_reason: load`) or, with keep_alive 0, unload.
async fn load_or_unload(
    st: &AppState,
    entry: &Arc<ModelEntry>,
    ka: Option<KeepAlive>,
    generate: bool,
) -> Result<Response, ApiError> {
    let reason = if ka.is_some_and(|k| k.is_zero()) {
        st.serve.unload(&entry.name);
        "unload"
    } else {
        st.serve.load(entry, ka).await?;
        "load"
    };
    let kind = if generate { Kind::Generate } else { Kind::Chat };
    let mut v = line(kind, &tag(&entry.name), String::new(), None, None);
    v.finish(reason, None);
    Ok(Json(v).into_response())
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Generate,
}

async fn respond(run: Running, stream: bool, kind: Kind) -> Result<Response, OllamaError> {
    if stream {
        let body = Body::from_stream(ndjson(run, kind).map(|v| Ok::<_, Infallible>(Bytes::from(v.to_string() + "\n"))));
        let mut resp = Response::new(body);
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        return Ok(resp);
    }
    // Collected inside the handler: a client that disconnects drops this future, which drops
    // `Running` and cancels the request in the engine.
    let model = tag(run.model_name());
    let (load, started) = (run.load_duration, run.started);
    let done = run.collect().await?;
    let thinking = (!done.reasoning.is_empty()).then_some(done.reasoning);
    let calls = (!done.tool_calls.is_empty()).then(|| ollama_calls(&done.tool_calls));
    let mut v = line(kind, &model, done.text, thinking, calls);
    v.finish(done_reason(done.reason), Some(stats(&done.perf, load, started)));
    Ok(Json(v).into_response())
}

fn ndjson(mut run: Running, kind: Kind) -> impl Stream<Item = Value> {
    let rid = request_id::current();
    let as_value = |l: Line| serde_json::to_value(l).unwrap_or_default();
    async_stream::stream! {
        let model = tag(run.model_name());
        while let Some(out) = run.next().await {
            match out {
                Output::Reasoning(text) => yield as_value(line(kind, &model, String::new(), Some(text), None)),
                Output::Text(text) => yield as_value(line(kind, &model, text, None, None)),
                Output::ToolCalls(calls) => {
                    yield as_value(line(kind, &model, String::new(), None, Some(ollama_calls(&calls))));
                }
                Output::Done { reason, perf } => {
                    let mut v = line(kind, &model, String::new(), None, None);
                    v.finish(done_reason(reason), Some(stats(&perf, run.load_duration, run.started)));
                    yield as_value(v);
                    break;
                }
                Output::Error(e) => {
                    yield ApiError::from(e).stream_body(ErrorShape::Ollama, rid.as_ref());
                    break;
                }
            }
        }
    }
}

/// One answer object in the route's shape: `/api/chat` or `/api/generate`.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Line {
    Chat(ChatResponse),
    Generate(GenerateResponse),
}

impl Line {
    /// Marks the object as the last one, with its reason and stats.
    fn finish(&mut self, reason: &str, stats: Option<Stats>) {
        let (done, done_reason, st) = match self {
            Self::Chat(c) => (&mut c.done, &mut c.done_reason, &mut c.stats),
            Self::Generate(g) => (&mut g.done, &mut g.done_reason, &mut g.stats),
        };
        (*done, *done_reason, *st) = (true, Some(reason.to_owned()), stats);
    }
}

/// A piece of the answer: text, reasoning (`message.thinking` / `thinking`) or tool calls
/// (chat only).
fn line(kind: Kind, model: &str, text: String, thinking: Option<String>, calls: Option<Vec<oll::ToolCall>>) -> Line {
    let created_at = params::rfc3339(SystemTime::now());
    match kind {
        Kind::Chat => Line::Chat(ChatResponse {
            model: model.to_owned(),
            created_at,
            message: Message { role: "assistant".into(), content: text, thinking, tool_calls: calls },
            done: false,
            done_reason: None,
            stats: None,
        }),
        Kind::Generate => Line::Generate(GenerateResponse {
            model: model.to_owned(),
            created_at,
            response: text,
            thinking,
            done: false,
            done_reason: None,
            stats: None,
        }),
    }
}

fn done_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// Durations in nanoseconds, from the engine's perf record.
fn stats(perf: &Perf, load: std::time::Duration, started: std::time::Instant) -> Stats {
    let ns = |ms: f64| (ms * 1e6) as u64;
    Stats {
        total_duration: started.elapsed().as_nanos() as u64,
        load_duration: load.as_nanos() as u64,
        prompt_eval_count: perf.prompt_tokens,
        prompt_eval_duration: ns(perf.prefill_ms),
        eval_count: perf.generated_tokens,
        eval_duration: ns(perf.generate_ms),
    }
}

fn ollama_calls(calls: &[tools::ToolCall]) -> Vec<oll::ToolCall> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| oll::ToolCall {
            function: ToolFunction { index: i, name: c.name.clone(), arguments: c.arguments.clone() },
        })
        .collect()
}

/// `name:latest` unless the name already carries a tag.
pub fn tag(name: &str) -> String {
    if name.contains(':') { name.to_owned() } else { format!("{name}:latest") }
}

fn details(e: &ModelEntry) -> Details {
    Details {
        parent_model: String::new(),
        format: e.format.as_str().into(),
        family: e.family.clone().unwrap_or_default(),
        families: e.family.as_ref().map(|f| vec![f.clone()]),
        parameter_size: e.parameter_size.clone().unwrap_or_default(),
        quantization_level: e.quantization.clone().unwrap_or_default(),
    }
}

fn digest(e: &ModelEntry) -> String {
    e.sha256.clone().unwrap_or_default()
}

#[utoipa::path(get, path = "/api/tags", tag = "ollama", responses((status = 200, description = "Local models")))]
pub async fn tags(State(st): State<AppState>) -> Json<Tags> {
    let models = st
        .serve
        .sched()
        .registry()
        .list()
        .iter()
        .map(|e| TagModel {
            name: tag(&e.name),
            model: tag(&e.name),
            modified_at: params::rfc3339(e.modified),
            size: e.size,
            digest: digest(e),
            details: details(e),
        })
        .collect();
    Json(Tags { models })
}

#[utoipa::path(get, path = "/api/ps", tag = "ollama", responses((status = 200, description = "Loaded models")))]
pub async fn ps(State(st): State<AppState>) -> Json<Ps> {
    let models = st
        .serve
        .sched()
        .residents()
        .iter()
        .map(|r| {
            let e = &r.entry;
            // "Forever" is shown far in the future, as Ollama does.
            let expires = r
                .expires_at()
                .unwrap_or_else(|| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799));
            PsModel {
                name: tag(&e.name),
                model: tag(&e.name),
                size: r.memory(),
                digest: digest(e),
                details: details(e),
                expires_at: params::rfc3339(expires),
                size_vram: 0,
                context_length: r.instance.facts().n_ctx,
            }
        })
        .collect();
    Json(Ps { models })
}

#[utoipa::path(post, path = "/api/show", tag = "ollama", request_body = ShowRequest,
    responses((status = 200, description = "Model details"), (status = 404, description = "Unknown model")))]
pub async fn show(
    State(st): State<AppState>,
    OllamaJson(req): OllamaJson<ShowRequest>,
) -> Result<Json<Show>, OllamaError> {
    let e = st.serve.find(&req.model)?;
    let mut info = Map::new();
    let arch = e.meta.architecture.clone().unwrap_or_else(|| e.format.as_str().to_owned());
    info.insert("general.architecture".into(), json!(arch));
    if let Some(n) = &e.meta.general_name {
        info.insert("general.name".into(), json!(n));
    }
    if let Some(c) = e.context_max {
        info.insert(format!("{arch}.context_length"), json!(c));
    }
    for (k, v) in [
        ("block_count", e.meta.block_count),
        ("embedding_length", e.meta.embedding_length),
        ("attention.head_count", e.meta.head_count),
        ("attention.head_count_kv", e.meta.head_count_kv),
    ] {
        if let Some(v) = v {
            info.insert(format!("{arch}.{k}"), json!(v));
        }
    }
    let s = &e.settings.sampling;
    let parameters = format!(
        "temperature {}\ntop_k {}\ntop_p {}\nmin_p {}\nnum_ctx {}",
        s.temperature, s.top_k, s.top_p, s.min_p, e.context
    );
    let template = match &e.settings.chat_template {
        Some(crate::settings::TemplateOverride::Jinja(j)) => j.clone(),
        Some(crate::settings::TemplateOverride::Parts(p)) => {
            format!("{}{}{{{{ .Prompt }}}}{}", p.system, p.prefix, p.postfix)
        }
        None => e.meta.chat_template.clone().unwrap_or_default(),
    };
    let caps = e.capabilities.names();
    Ok(Json(Show {
        modelfile: format!("# Modelfile generated by rockchip-llama\nFROM {}\n", e.path.display()),
        parameters,
        template,
        system: e.settings.system.clone().unwrap_or_default(),
        license: e.license.clone().unwrap_or_default(),
        details: details(&e),
        model_info: info,
        capabilities: caps.into_iter().map(str::to_owned).collect(),
        modified_at: params::rfc3339(e.modified),
    }))
}

#[utoipa::path(get, path = "/api/version", tag = "ollama", responses((status = 200, description = "Agent version")))]
pub async fn version() -> Json<oll::Version> {
    Json(oll::Version { version: env!("CARGO_PKG_VERSION").into() })
}

#[utoipa::path(delete, path = "/api/delete", tag = "ollama", request_body = DeleteRequest,
    responses((status = 200, description = "Deleted"), (status = 404, description = "Unknown model")))]
pub async fn delete(
    State(st): State<AppState>,
    OllamaJson(req): OllamaJson<DeleteRequest>,
) -> Result<StatusCode, OllamaError> {
    let e = st.serve.find(&req.model)?;
    st.library.delete(&e)?;
    Ok(StatusCode::OK)
}

#[utoipa::path(post, path = "/api/pull", tag = "ollama", request_body = PullRequest,
    responses((status = 200, description = "NDJSON progress {status, digest, total, completed}"),
              (status = 400, description = "Invalid request")))]
pub async fn pull(
    State(st): State<AppState>,
    OllamaJson(req): OllamaJson<PullRequest>,
) -> Result<Response, OllamaError> {
    let stream = req.stream.unwrap_or(true);
    let progress = st.library.pull(&req.model, req.url.as_deref(), req.sha256.as_deref())?;
    if stream {
        let rid = request_id::current();
        let lines = progress.map(move |ev| {
            let v = match ev {
                Ok(ev) => serde_json::to_value(progress_line(ev)).unwrap_or_default(),
                Err(e) => ApiError::from(e).stream_body(ErrorShape::Ollama, rid.as_ref()),
            };
            Ok::<_, Infallible>(Bytes::from(v.to_string() + "\n"))
        });
        let mut resp = Response::new(Body::from_stream(lines));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        return Ok(resp);
    }
    match progress.collect::<Vec<_>>().await.pop() {
        Some(Ok(last)) => Ok(Json(progress_line(last)).into_response()),
        Some(Err(e)) => Err(ApiError::from(e).into()),
        None => Err(ApiError::Internal("pull produced no result".into()).into()),
    }
}

/// Ollama's NDJSON progress object for a library event.
fn progress_line(ev: PullEvent) -> Progress {
    let status = |s: &str| Progress { status: s.to_owned(), digest: None, total: None, completed: None };
    match ev {
        PullEvent::Resolving => status("pulling manifest"),
        PullEvent::Downloading { sha256, total, completed } => Progress {
            status: format!("pulling {}", &sha256[..sha256.len().min(12)]),
            digest: Some(format!("sha256:{sha256}")),
            total: Some(total),
            completed: Some(completed),
        },
        PullEvent::Verifying => status("verifying sha256 digest"),
        PullEvent::Writing => status("writing manifest"),
        PullEvent::Success => status("success"),
    }
}
