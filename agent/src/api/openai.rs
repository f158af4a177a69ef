//! OpenAI-compatible routes: `/v1/chat/completions`, `/v1/completions`, `/v1/models`.
//!
//! Streaming uses SSE: `data: {chunk}` lines, an optional usage chunk with `choices: []`
//! (`stream_options.include_usage`), then `data: [DONE]` exactly once. Errors after the stream
//! started are sent as an OpenAI error object in a `data:` line, which clients parse.

use std::convert::Infallible;

use api_types::{
    ApiError, ErrorShape, OpenAiError, OpenAiJson,
    openai::{
        self as oai, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatDelta, ChatMessage,
        ChunkChoice, Completion, CompletionChoice, CompletionRequest, FunctionCall, LoadResult, LoadedList,
        LoadedModel, Model, ModelAction, ModelList, ModelMeta, OaiSampling, PromptTokensDetails, Timings, UnloadResult,
        Usage,
    },
    request_id,
};
use axum::{
    Json,
    extract::{Path, State},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::Stream;
use serde_json::Value;

use super::{AppState, params};
use crate::{
    engine::{FinishReason, OutputFormat, Perf},
    models::ModelEntry,
    serve::{self, GenParams, Output, Prompt, Running},
    tools::{self, ToolCall},
};

/// Applies the shared fields; refuses what the agent cannot honour, naming the parameter.
fn apply_sampling(s: &OaiSampling, p: &mut GenParams) -> Result<(), ApiError> {
    if s.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad("n", "only n = 1 is supported"));
    }
    if s.logprobs == Some(true) {
        return Err(ApiError::bad("logprobs", "logprobs are not supported"));
    }
    let q = &mut p.sampling;
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = s.$f { q.$f = v; } )* };
    }
    set!(temperature, top_p, top_k, min_p, repeat_penalty, presence_penalty, frequency_penalty);
    if let Some(seed) = s.seed {
        q.seed = Some(params::fold_seed(seed));
    }
    p.stop = params::parse_stop(s.stop.as_ref())?;
    if p.stop.len() > 16 {
        return Err(ApiError::bad("stop", "at most 16 stop strings are supported"));
    }
    p.ignore_eos = s.ignore_eos.unwrap_or(false);
    q.validate().map_err(|e| ApiError::BadRequest { param: Some(e.param), message: e.to_string() })
}

/// `tool_choice` `"required"` or `{"type": "function", "function": {"name"}}` forces a call: the
/// output is constrained to a call object. `"auto"` (and absent) leaves the model free.
fn forced_call(tools: &Value, choice: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let only = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s == "auto" || s == "none" => return Ok(None),
        Some(Value::String(s)) if s == "required" => None,
        Some(v) => match v.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(n) => Some(n),
            None => {
                return Err(ApiError::bad(
                    "tool_choice",
                    "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": …}}",
                ));
            }
        },
    };
    tools::call_schema(tools, only).map(Some).ok_or_else(|| {
        ApiError::bad("tool_choice", format!("tool_choice names a function not in tools: {}", only.unwrap_or_default()))
    })
}

fn parse_response_format(v: Option<&Value>) -> Result<Option<OutputFormat>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(OutputFormat::JsonObject)),
        Some("json_schema") => {
            let schema =
                v.get("json_schema").and_then(|j| j.get("schema")).filter(|s| s.is_object()).ok_or_else(|| {
                    ApiError::bad("response_format", "json_schema.schema must be a JSON schema object")
                })?;
            Ok(Some(OutputFormat::Schema(schema.clone())))
        }
        _ => Err(ApiError::bad("response_format", "response_format.type must be text, json_object or json_schema")),
    }
}

#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = ChatCompletionRequest,
    responses((status = 200, description = "A chat.completion object, or an SSE stream of chat.completion.chunk objects"),
              (status = 400, description = "Invalid request"), (status = 404, description = "Unknown model"),
              (status = 429, description = "Queue full")))]
pub async fn chat_completions(
    State(st): State<AppState>,
    OpenAiJson(req): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response, OpenAiError> {
    let (entry, adapter) = st.serve.find_for_generation(&req.model)?;
    let mut params = GenParams::for_model(&entry);
    params.adapter = adapter;
    apply_sampling(&req.sampling, &mut params)?;
    params.think = match req.reasoning_effort.as_deref() {
        None => req.enable_thinking,
        Some("none") => Some(false),
        Some("minimal" | "low" | "medium" | "high") => Some(true),
        Some(other) => {
            return Err(ApiError::bad(
                "reasoning_effort",
                format!("reasoning_effort {other:?} is not one of none, minimal, low, medium, high"),
            )
            .into());
        }
    };
    if let Some(m) = req.max_completion_tokens.or(req.max_tokens) {
        if m == 0 {
            return Err(ApiError::bad("max_tokens", "max_tokens must be at least 1").into());
        }
        params.max_tokens = Some(m);
    }
    params.format = parse_response_format(req.response_format.as_ref())?;
    let messages = serve::normalize_messages(&req.messages)?;
    let tools_off = req.tool_choice.as_ref().and_then(Value::as_str) == Some("none");
    let tools = req.tools.filter(|t| !t.is_empty() && !tools_off).map(Value::Array);
    if tools.is_some() && params.format.is_some() {
        return Err(ApiError::bad("response_format", "response_format cannot be combined with tools").into());
    }
    if let Some(t) = &tools {
        params.format = forced_call(t, req.tool_choice.as_ref())?.map(OutputFormat::Schema);
    }
    let stream = req.sampling.stream.unwrap_or(false);
    let include_usage = req.sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let run = st.serve.generate(&entry, Prompt::Chat { messages, tools }, params).await?;
    let id = params::new_id("chatcmpl");
    if stream {
        return Ok(sse(chat_stream(run, id, include_usage)));
    }
    let model = run.model_name().to_owned();
    let done = run.collect().await?;
    let calls = tool_calls(&done.tool_calls, &id, false);
    let finish = if calls.is_empty() { finish_reason(done.reason) } else { "tool_calls" };
    let message = ChatMessage {
        role: "assistant".into(),
        // OpenAI sends null content next to tool calls when there is no text.
        content: (calls.is_empty() || !done.text.is_empty()).then_some(done.text),
        reasoning_content: (!done.reasoning.is_empty()).then_some(done.reasoning),
        tool_calls: (!calls.is_empty()).then_some(calls),
    };
    Ok(Json(ChatCompletion {
        id,
        object: "chat.completion".into(),
        created: params::unix_now(),
        model,
        choices: vec![ChatChoice { index: 0, message, finish_reason: finish.into(), logprobs: None }],
        usage: usage(&done.perf),
        timings: Some(timings(&done.perf)),
    })
    .into_response())
}

fn chat_stream(mut run: Running, id: String, include_usage: bool) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let rid = request_id::current();
    async_stream::stream! {
        let created = params::unix_now();
        let model = run.model_name().to_owned();
        let chunk = |delta: ChatDelta, finish: Option<&str>| ChatCompletionChunk {
            id: id.clone(),
            object: "chat.completion.chunk".into(),
            created,
            model: model.clone(),
            choices: vec![ChunkChoice { index: 0, delta, finish_reason: finish.map(str::to_owned), logprobs: None }],
            usage: None,
            timings: None,
        };
        let delta = |f: fn(&mut ChatDelta, String), text: String| {
            let mut d = ChatDelta::default();
            f(&mut d, text);
            d
        };
        let first = ChatDelta { role: Some("assistant".into()), content: Some(String::new()), ..ChatDelta::default() };
        yield Ok(data(&chunk(first, None)));
        let mut called = false;
        while let Some(out) = run.next().await {
            match out {
                Output::Reasoning(text) => yield Ok(data(&chunk(delta(|d, t| d.reasoning_content = Some(t), text), None))),
                Output::Text(text) => yield Ok(data(&chunk(delta(|d, t| d.content = Some(t), text), None))),
                Output::ToolCalls(calls) => {
                    called = true;
                    let d = ChatDelta { tool_calls: Some(tool_calls(&calls, &id, true)), ..ChatDelta::default() };
                    yield Ok(data(&chunk(d, None)));
                }
                Output::Done { reason, perf } => {
                    let finish = if called { "tool_calls" } else { finish_reason(reason) };
                    let mut last = chunk(ChatDelta::default(), Some(finish));
                    last.timings = Some(timings(&perf));
                    yield Ok(data(&last));
                    if include_usage {
                        let mut u = chunk(ChatDelta::default(), None);
                        (u.choices, u.usage) = (Vec::new(), Some(usage(&perf)));
                        yield Ok(data(&u));
                    }
                    break;
                }
                Output::Error(e) => {
                    yield Ok(data(&ApiError::from(e).stream_body(ErrorShape::OpenAi, rid.as_ref())));
                    break;
                }
            }
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    }
}

#[utoipa::path(post, path = "/v1/completions", tag = "openai", request_body = CompletionRequest,
    responses((status = 200, description = "A text_completion object, or an SSE stream of them"),
              (status = 400, description = "Invalid request"), (status = 404, description = "Unknown model")))]
pub async fn completions(
    State(st): State<AppState>,
    OpenAiJson(req): OpenAiJson<CompletionRequest>,
) -> Result<Response, OpenAiError> {
    let (entry, adapter) = st.serve.find_for_generation(&req.model)?;
    let prompt = match &req.prompt {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => a[0].as_str().unwrap_or_default().to_owned(),
        Value::Array(_) => {
            return Err(ApiError::bad("prompt", "prompt must be a string or a list holding one string").into());
        }
        _ => return Err(ApiError::bad("prompt", "prompt must be a string").into()),
    };
    if prompt.is_empty() {
        return Err(ApiError::bad("prompt", "prompt must not be empty").into());
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad("suffix", "suffix is not supported").into());
    }
    let mut params = GenParams::for_model(&entry);
    params.adapter = adapter;
    apply_sampling(&req.sampling, &mut params)?;
    if req.max_tokens == Some(0) {
        return Err(ApiError::bad("max_tokens", "max_tokens must be at least 1").into());
    }
    params.max_tokens = Some(req.max_tokens.unwrap_or(16));
    let echo = req.echo.unwrap_or(false).then(|| prompt.clone());
    let stream = req.sampling.stream.unwrap_or(false);
    let include_usage = req.sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let run = st.serve.generate(&entry, Prompt::Text(prompt), params).await?;
    let id = params::new_id("cmpl");
    if stream {
        return Ok(sse(completion_stream(run, id, include_usage, echo)));
    }
    let model = run.model_name().to_owned();
    let done = run.collect().await?;
    let text = echo.unwrap_or_default() + &done.text;
    let choice =
        CompletionChoice { index: 0, text, finish_reason: Some(finish_reason(done.reason).into()), logprobs: None };
    Ok(Json(Completion {
        id,
        object: "text_completion".into(),
        created: params::unix_now(),
        model,
        choices: vec![choice],
        usage: Some(usage(&done.perf)),
        timings: Some(timings(&done.perf)),
    })
    .into_response())
}

fn completion_stream(
    mut run: Running,
    id: String,
    include_usage: bool,
    echo: Option<String>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let rid = request_id::current();
    async_stream::stream! {
        let created = params::unix_now();
        let model = run.model_name().to_owned();
        let chunk = |text: &str, finish: Option<&str>| Completion {
            id: id.clone(),
            object: "text_completion".into(),
            created,
            model: model.clone(),
            choices: vec![CompletionChoice {
                index: 0,
                text: text.to_owned(),
                finish_reason: finish.map(str::to_owned),
                logprobs: None,
            }],
            usage: None,
            timings: None,
        };
        if let Some(p) = &echo {
            yield Ok(data(&chunk(p, None)));
        }
        while let Some(ev) = run.next().await {
            match ev {
                Output::Text(text) | Output::Reasoning(text) => yield Ok(data(&chunk(&text, None))),
                Output::ToolCalls(_) => {}
                Output::Done { reason, perf } => {
                    let mut last = chunk("", Some(finish_reason(reason)));
                    last.timings = Some(timings(&perf));
                    yield Ok(data(&last));
                    if include_usage {
                        let mut u = chunk("", None);
                        (u.choices, u.usage) = (Vec::new(), Some(usage(&perf)));
                        yield Ok(data(&u));
                    }
                    break;
                }
                Output::Error(e) => {
                    yield Ok(data(&ApiError::from(e).stream_body(ErrorShape::OpenAi, rid.as_ref())));
                    break;
                }
            }
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    }
}

fn sse(stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// One SSE event carrying `v` as JSON (a chunk, or an error body).
fn data(v: &impl serde::Serialize) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(v).unwrap_or_default())
}

fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop | FinishReason::Cancelled => "stop",
        FinishReason::Length => "length",
    }
}

/// Calls as OpenAI sends them: ids derived from the response id, arguments as JSON text,
/// `index` in streamed deltas.
fn tool_calls(calls: &[ToolCall], id: &str, with_index: bool) -> Vec<oai::ToolCall> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| oai::ToolCall {
            index: with_index.then_some(i),
            id: format!("call_{}_{i}", id.rsplit('-').next().unwrap_or(id)),
            kind: "function".into(),
            function: FunctionCall { name: c.name.clone(), arguments: c.arguments.to_string() },
        })
        .collect()
}

/// OpenAI `usage`, from the engine's counts.
pub fn usage(p: &Perf) -> Usage {
    Usage {
        prompt_tokens: p.prompt_tokens,
        completion_tokens: p.generated_tokens,
        total_tokens: p.prompt_tokens + p.generated_tokens,
        prompt_tokens_details: PromptTokensDetails { cached_tokens: p.cached_tokens },
    }
}

/// llama.cpp server's `timings` block.
pub fn timings(p: &Perf) -> Timings {
    let per_tok = |ms: f64, n: u32| if n == 0 { 0.0 } else { ms / f64::from(n) };
    let per_sec = |ms: f64, n: u32| if ms <= 0.0 { 0.0 } else { 1e3 * f64::from(n) / ms };
    Timings {
        cache_n: p.cached_tokens,
        prompt_n: p.prompt_eval_tokens,
        prompt_ms: p.prefill_ms,
        prompt_per_token_ms: per_tok(p.prefill_ms, p.prompt_eval_tokens),
        prompt_per_second: per_sec(p.prefill_ms, p.prompt_eval_tokens),
        predicted_n: p.generated_tokens,
        predicted_ms: p.generate_ms,
        predicted_per_token_ms: per_tok(p.generate_ms, p.generated_tokens),
        predicted_per_second: per_sec(p.generate_ms, p.generated_tokens.saturating_sub(1)),
    }
}

fn model_object(e: &ModelEntry) -> Model {
    let created = e.modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Model {
        id: e.name.clone(),
        object: "model".into(),
        created,
        owned_by: "rockchip-llama".into(),
        meta: ModelMeta {
            file: e.file_name.clone(),
            format: e.format.as_str().into(),
            context_length: e.context,
            size: e.size,
            aliases: e.aliases.clone(),
        },
    }
}

#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, description = "Models on this agent")))]
pub async fn list_models(State(st): State<AppState>) -> Json<ModelList> {
    let data = st.serve.sched().registry().list().iter().map(|e| model_object(e)).collect();
    Json(ModelList { object: "list".into(), data })
}

#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai",
    params(("model" = String, Path, description = "Model name, alias or file name")),
    responses((status = 200, description = "The model"), (status = 404, description = "Unknown model")))]
pub async fn get_model(State(st): State<AppState>, Path(model): Path<String>) -> Result<Json<Model>, OpenAiError> {
    let e = st.serve.find(&model)?;
    Ok(Json(model_object(&e)))
}

#[utoipa::path(post, path = "/v1/models/load", tag = "residency", request_body = ModelAction,
    responses((status = 200, description = "Loaded"), (status = 404, description = "Unknown model")))]
pub async fn load_model(
    State(st): State<AppState>,
    OpenAiJson(req): OpenAiJson<ModelAction>,
) -> Result<Json<LoadResult>, OpenAiError> {
    let entry = st.serve.find(&req.model)?;
    let ka = params::keep_alive(req.keep_alive.as_ref())?;
    let r = st.serve.load(&entry, ka).await?;
    Ok(Json(LoadResult {
        model: entry.name.clone(),
        loaded: true,
        load_duration_ms: r.load_duration.as_secs_f64() * 1e3,
    }))
}

#[utoipa::path(post, path = "/v1/models/unload", tag = "residency", request_body = ModelAction,
    responses((status = 200, description = "Unloaded (or was not loaded)"), (status = 404, description = "Unknown model")))]
pub async fn unload_model(
    State(st): State<AppState>,
    OpenAiJson(req): OpenAiJson<ModelAction>,
) -> Result<Json<UnloadResult>, OpenAiError> {
    let entry = st.serve.find(&req.model)?;
    let was = st.serve.unload(&entry.name);
    Ok(Json(UnloadResult { model: entry.name.clone(), was_loaded: was }))
}

#[utoipa::path(get, path = "/v1/models/loaded", tag = "residency", responses((status = 200, description = "Resident models")))]
pub async fn loaded_models(State(st): State<AppState>) -> Json<LoadedList> {
    let data = st.serve.sched().residents().iter().map(|r| resident(r)).collect();
    Json(LoadedList { object: "list".into(), data })
}

fn resident(r: &crate::sched::Resident) -> LoadedModel {
    LoadedModel {
        id: r.entry.name.clone(),
        engine: r.engine.into(),
        context_length: r.instance.facts().n_ctx,
        size: r.memory(),
        in_use: r.in_use(),
        expires_at: r.expires_at().map(params::rfc3339),
    }
}
