//! Why a generation (or embedding, or explicit load) could not be served. Mapped to HTTP in one
//! place, `api::error`.

use crate::{engine::EngineError, sched::SchedError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The request asks for something invalid; `param` names the field.
    #[error("{message}")]
    Invalid { param: Option<&'static str>, message: String },
    #[error("model '{0}' not found")]
    ModelNotFound(String),
    #[error(transparent)]
    Sched(#[from] SchedError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An engine that cannot constrain decoding gave no valid JSON, twice.
    #[error("the model did not produce the requested JSON after one retry: {0}")]
    JsonRetryFailed(String),
    #[error("the engine ended the request without an answer")]
    NoAnswer,
}

impl ServeError {
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { param: Some(param), message: message.into() }
    }
}
