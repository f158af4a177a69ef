//! The one place the agent's domain errors become HTTP: each maps to an [`ApiError`], which
//! `api_types` renders in the route family's shape (OpenAI or Ollama). Internal failures keep
//! their text in the log (with the request id); clients see a generic message naming the id.

use api_types::ApiError;

use crate::{engine::EngineError, sched::SchedError, serve::ServeError, store::StoreError};

/// Newtype-free mapping: `impl From<DomainError> for ApiError` for each domain error.
impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::Invalid { param, message } => Self::BadRequest { message, param },
            ServeError::ModelNotFound(m) => Self::ModelNotFound(m),
            ServeError::Sched(e) => e.into(),
            ServeError::Engine(e) => e.into(),
            // About the model, not the server's internals: said plainly so the client can act.
            ServeError::JsonRetryFailed(_) => Self::Model(e.to_string()),
            ServeError::NoAnswer => Self::Internal(e.to_string()),
        }
    }
}

impl From<SchedError> for ApiError {
    fn from(e: SchedError) -> Self {
        match e {
            SchedError::QueueFull { .. } => Self::Overloaded(e.to_string()),
            SchedError::TooLarge { .. } | SchedError::NoEngine { .. } => {
                Self::BadRequest { message: e.to_string(), param: Some("model") }
            }
            SchedError::Busy { .. } => Self::Unavailable(e.to_string()),
            SchedError::Engine(e) => e.into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::PromptTooLong { prompt, context } => Self::PromptTooLong { prompt, context },
            EngineError::Grammar(m) => Self::bad("response_format", format!("invalid grammar: {m}")),
            // A load failure's reason is what the operator must fix (a context above the file's
            // limit, a file for another SoC): shown. Decode failures are internal.
            EngineError::Load { .. } => Self::Model(e.to_string()),
            EngineError::Decode(_) | EngineError::Stopped => Self::Internal(e.to_string()),
            EngineError::Unsupported(m) => Self::BadRequest { message: m, param: Some("model") },
            EngineError::Input(m) => Self::BadRequest { message: m, param: Some("messages") },
            EngineError::NpuTooLarge { .. } => Self::BadRequest { message: e.to_string(), param: Some("model") },
            EngineError::NpuMemory(_) | EngineError::NpuFull { .. } => Self::Unavailable(format!("{e}; retry later")),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Invalid(m) => Self::bad("model", m.clone()),
            StoreError::NotFound(_) => Self::NotFound(e.to_string()),
            // The origin's answer or a digest mismatch: about the source the client named.
            StoreError::Http(_) | StoreError::Digest { .. } => Self::Upstream(e.to_string()),
            StoreError::Io { .. } => Self::Internal(e.to_string()),
            StoreError::NoSpace { .. } => Self::Unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn domain_errors_map_to_statuses() {
        let e: ApiError = SchedError::QueueFull { model: "m".into(), waiting: 3 }.into();
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        let e: ApiError = SchedError::Busy { model: "m".into() }.into();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let e: ApiError = EngineError::PromptTooLong { prompt: 9, context: 8 }.into();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e: ApiError = EngineError::NpuFull { need: 1 }.into();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.to_string().contains("retry later"));
        let e: ApiError = ServeError::ModelNotFound("x".into()).into();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let e: ApiError = EngineError::Load { path: "m.rkllm".into(), reason: "context too large".into() }.into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(e.client_message(None).contains("context too large"), "load failures say why");
        let e: ApiError = EngineError::Decode("/secret/ggml.c:123".into()).into();
        assert!(!e.client_message(None).contains("secret"));
    }
}
