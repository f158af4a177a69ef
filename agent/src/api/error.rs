//! The one place errors become HTTP responses.
//!
//! Every failure is an [`AppError`]; each route family wraps it in its own shape: OpenAI routes
//! answer `{"error": {"message", "type", "param", "code"}}`, Ollama routes `{"error": "…"}`.
//! JSON extraction failures go through the same path ([`OaiJson`], [`OllamaJson`]) so a
//! malformed body gets the family's shape too, never axum's plain-text rejection.

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{engine::EngineError, sched::SchedError, store::StoreError};

/// Every error a request can end with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    BadRequest { message: String, param: Option<&'static str> },
    #[error("model '{0}' not found")]
    ModelNotFound(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("invalid or missing API key")]
    Unauthorized,
    #[error("server busy: {0}")]
    Overloaded(String),
    #[error("the prompt is {prompt} tokens, more than the model's context window of {context} tokens")]
    PromptTooLong { prompt: u32, context: u32 },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    pub fn bad(param: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { message: message.into(), param: Some(param) }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::PromptTooLong { .. } => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } | Self::PromptTooLong { .. } | Self::PayloadTooLarge { .. } => {
                "invalid_request_error"
            }
            Self::ModelNotFound(_) | Self::NotFound(_) => "not_found_error",
            Self::Unauthorized => "authentication_error",
            Self::Overloaded(_) => "rate_limit_error",
            Self::Unavailable(_) => "service_unavailable_error",
            Self::Internal(_) => "server_error",
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            Self::ModelNotFound(_) => Some("model_not_found"),
            Self::PromptTooLong { .. } => Some("context_length_exceeded"),
            Self::Unauthorized => Some("invalid_api_key"),
            _ => None,
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            Self::BadRequest { param, .. } => *param,
            Self::ModelNotFound(_) => Some("model"),
            Self::PromptTooLong { .. } => Some("messages"),
            _ => None,
        }
    }

    /// The OpenAI error object, also used for errors inside an SSE stream.
    pub fn openai_body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.to_string(),
            "type": self.error_type(),
            "param": self.param(),
            "code": self.code(),
        }})
    }

    fn finish(self, body: serde_json::Value) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut resp = (status, Json(body)).into_response();
        if matches!(self, Self::Overloaded(_) | Self::Unavailable(_)) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, Self::Unauthorized) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<SchedError> for AppError {
    fn from(e: SchedError) -> Self {
        match e {
            SchedError::NotFound(m) => Self::ModelNotFound(m),
            SchedError::QueueFull { .. } => Self::Overloaded(e.to_string()),
            SchedError::TooLarge { .. } | SchedError::NoEngine { .. } => {
                Self::BadRequest { message: e.to_string(), param: Some("model") }
            }
            SchedError::Busy { .. } | SchedError::NpuFull { .. } => Self::Unavailable(e.to_string()),
            SchedError::NpuTooLarge { .. } => Self::BadRequest { message: e.to_string(), param: Some("model") },
            SchedError::Engine(e) => e.into(),
        }
    }
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::PromptTooLong { prompt, context } => Self::PromptTooLong { prompt, context },
            EngineError::Grammar(m) => Self::bad("response_format", format!("invalid grammar: {m}")),
            EngineError::Load { .. } | EngineError::Decode(_) | EngineError::Stopped => Self::Internal(e.to_string()),
            EngineError::Unsupported(m) => Self::BadRequest { message: m, param: Some("model") },
            EngineError::Input(m) => Self::BadRequest { message: m, param: Some("messages") },
            EngineError::NpuMemory(_) => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Invalid(m) => Self::bad("model", m.clone()),
            StoreError::NotFound(_) => Self::NotFound(e.to_string()),
            _ => Self::Internal(e.to_string()),
        }
    }
}

/// An [`AppError`] answered in OpenAI's shape.
#[derive(Debug)]
pub struct OaiError(pub AppError);

/// An [`AppError`] answered in Ollama's shape.
#[derive(Debug)]
pub struct OllamaError(pub AppError);

impl<E: Into<AppError>> From<E> for OaiError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl<E: Into<AppError>> From<E> for OllamaError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for OaiError {
    fn into_response(self) -> Response {
        let body = self.0.openai_body();
        self.0.finish(body)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.0.to_string()});
        self.0.finish(body)
    }
}

/// `Json<T>` whose rejections are OpenAI-shaped.
pub struct OaiJson<T>(pub T);

/// `Json<T>` whose rejections are Ollama-shaped.
pub struct OllamaJson<T>(pub T);

/// Parses the body as JSON whatever its `Content-Type`: Ollama's own server does, and users
/// follow its docs with `curl -d '{…}'`, which sends a form content type.
async fn json_body<S: Send + Sync, T: DeserializeOwned>(req: Request, state: &S) -> Result<T, AppError> {
    let bytes = Bytes::from_request(req, state).await.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge { limit: crate::api::BODY_LIMIT },
        _ => AppError::BadRequest { message: r.body_text(), param: None },
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." || path.is_empty() {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid JSON body at {path}: {inner}")
        };
        AppError::BadRequest { message, param: None }
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OaiJson<T> {
    type Rejection = OaiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(json_body(req, state).await?))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OllamaJson<T> {
    type Rejection = OllamaError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(json_body(req, state).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_shapes() {
        let e = AppError::PromptTooLong { prompt: 5000, context: 4096 };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let body = e.openai_body();
        assert!(body["error"]["message"].as_str().unwrap().contains("5000"));
        assert!(body["error"]["message"].as_str().unwrap().contains("4096"));
        assert_eq!(body["error"]["code"], "context_length_exceeded");
        assert_eq!(AppError::ModelNotFound("x".into()).status(), StatusCode::NOT_FOUND);
        assert_eq!(AppError::Overloaded("q".into()).status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(AppError::bad("n", "n must be 1").openai_body()["error"]["param"], "n");
        let r = OllamaError(AppError::Unauthorized).into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = OaiError(AppError::Overloaded("full".into())).into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn scheduler_errors_map() {
        let e: AppError = SchedError::QueueFull { model: "m".into(), waiting: 3 }.into();
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        let e: AppError = SchedError::Busy { model: "m".into() }.into();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let e: AppError = EngineError::PromptTooLong { prompt: 9, context: 8 }.into();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}
