//! The two error shapes. Every failure a client sees is an [`ApiError`]; each route family wraps
//! it in its own shape: OpenAI routes answer `{"error": {"message", "type", "param", "code"}}`,
//! Ollama routes `{"error": "…"}`.
//!
//! Internal failures ([`ApiError::Internal`]) are logged with the request id and never shown:
//! the client gets a generic message naming the id, so an operator can find the log line
//! without the response leaking paths or library messages.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::request_id::{self, RequestId};

/// Every error a request can end with, in terms both APIs can express.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
    /// A valid key that may not do this (e.g. a model outside the key's allow-list).
    #[error("{0}")]
    Forbidden(String),
    #[error("server busy: {0}")]
    Overloaded(String),
    #[error("the prompt is {prompt} tokens, more than the model's context window of {context} tokens")]
    PromptTooLong { prompt: u32, context: u32 },
    /// The server cannot serve this now but may soon (model starting, memory full): the message
    /// says why and is shown.
    #[error("{0}")]
    Unavailable(String),
    /// A server this one depends on failed (a model download: the origin's answer, a digest that
    /// did not match): shown, it is about the request's source, not this server's internals.
    #[error("{0}")]
    Upstream(String),
    /// The model could not do what was asked (it failed to load, or gave no valid answer): a
    /// server-side failure whose reason is about the model or its configuration, so it is shown.
    #[error("{0}")]
    Model(String),
    /// A failure inside the server; the text is logged, never sent.
    #[error("{0}")]
    Internal(String),
}

/// Which API's error shape a response uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    OpenAi,
    Ollama,
}

/// Ollama's routes live under `/api/`; everything else answers in OpenAI's shape.
pub fn shape_for_path(path: &str) -> ErrorShape {
    if path.starts_with("/api/") { ErrorShape::Ollama } else { ErrorShape::OpenAi }
}

impl ApiError {
    pub fn bad(param: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { message: message.into(), param: Some(param) }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::PromptTooLong { .. } => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Model(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            Self::Forbidden(_) => "permission_error",
            Self::Overloaded(_) => "rate_limit_error",
            Self::Unavailable(_) => "service_unavailable_error",
            Self::Upstream(_) => "upstream_error",
            Self::Model(_) | Self::Internal(_) => "server_error",
        }
    }

    /// OpenAI's `error.code`.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::ModelNotFound(_) => Some("model_not_found"),
            Self::PromptTooLong { .. } => Some("context_length_exceeded"),
            Self::Unauthorized => Some("invalid_api_key"),
            _ => None,
        }
    }

    /// OpenAI's `error.param`: the request field at fault.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            Self::BadRequest { param, .. } => *param,
            Self::ModelNotFound(_) => Some("model"),
            Self::PromptTooLong { .. } => Some("messages"),
            _ => None,
        }
    }

    /// The text a client sees: the error itself, except for internal failures.
    pub fn client_message(&self, id: Option<&RequestId>) -> String {
        match (self, id) {
            (Self::Internal(_), Some(id)) => {
                format!("internal error (request id {id}); the server log has the details")
            }
            (Self::Internal(_), None) => "internal error; the server log has the details".to_owned(),
            _ => self.to_string(),
        }
    }

    /// Logs server-side failures once, with the request id. Called wherever an error leaves the
    /// server: a response, or an error event inside a stream.
    pub fn report(&self, id: Option<&RequestId>) {
        let rid = id.map(RequestId::as_str).unwrap_or("-");
        match self {
            Self::Internal(m) => tracing::error!(request_id = rid, error = %m, "request failed"),
            Self::Model(m) => tracing::warn!(request_id = rid, error = %m, "request failed: model"),
            Self::Upstream(m) => tracing::warn!(request_id = rid, error = %m, "request failed: upstream"),
            Self::Unavailable(m) => tracing::warn!(request_id = rid, error = %m, "request refused: unavailable"),
            _ => {}
        }
    }

    /// The body in `shape`, for the request `id`.
    pub fn body(&self, shape: ErrorShape, id: Option<&RequestId>) -> Value {
        let message = self.client_message(id);
        match shape {
            ErrorShape::OpenAi => json!({"error": {
                "message": message,
                "type": self.error_type(),
                "param": self.param(),
                "code": self.code(),
            }}),
            ErrorShape::Ollama => json!({"error": message}),
        }
    }

    /// The body of an error sent inside a stream (SSE `data:` or an NDJSON line), logged as it
    /// goes. `id` is captured when the stream was created: streams outlive the request scope.
    pub fn stream_body(&self, shape: ErrorShape, id: Option<&RequestId>) -> Value {
        self.report(id);
        self.body(shape, id)
    }

    /// A complete response in `shape` for the current request.
    pub fn into_response_as(self, shape: ErrorShape) -> Response {
        let id = request_id::current();
        self.report(id.as_ref());
        let mut resp = (self.status(), Json(self.body(shape, id.as_ref()))).into_response();
        if matches!(self, Self::Overloaded(_) | Self::Unavailable(_)) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, Self::Unauthorized) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// An [`ApiError`] answered in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

/// An [`ApiError`] answered in Ollama's shape.
#[derive(Debug)]
pub struct OllamaError(pub ApiError);

impl<E: Into<ApiError>> From<E> for OpenAiError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl<E: Into<ApiError>> From<E> for OllamaError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        self.0.into_response_as(ErrorShape::OpenAi)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        self.0.into_response_as(ErrorShape::Ollama)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_shapes() {
        let e = ApiError::PromptTooLong { prompt: 5000, context: 4096 };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let body = e.body(ErrorShape::OpenAi, None);
        assert!(body["error"]["message"].as_str().unwrap().contains("5000"));
        assert_eq!(body["error"]["code"], "context_length_exceeded");
        assert_eq!(ApiError::ModelNotFound("x".into()).status(), StatusCode::NOT_FOUND);
        assert_eq!(ApiError::bad("n", "n must be 1").body(ErrorShape::OpenAi, None)["error"]["param"], "n");
        assert_eq!(ApiError::bad("n", "n must be 1").body(ErrorShape::Ollama, None), json!({"error": "n must be 1"}));
        let r = OllamaError(ApiError::Unauthorized).into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = OpenAiError(ApiError::Overloaded("full".into())).into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(shape_for_path("/api/chat"), ErrorShape::Ollama);
        assert_eq!(shape_for_path("/v1/models"), ErrorShape::OpenAi);
    }

    #[test]
    fn internal_text_is_not_sent() {
        let id = RequestId::from("abc123");
        let e = ApiError::Internal("open /secret/path: permission denied".into());
        for shape in [ErrorShape::OpenAi, ErrorShape::Ollama] {
            let body = e.body(shape, Some(&id)).to_string();
            assert!(!body.contains("/secret/path"), "{body}");
            assert!(body.contains("abc123"), "{body}");
        }
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
