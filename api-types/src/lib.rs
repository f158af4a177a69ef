//! The HTTP API shapes the node agent and the gateway share, with no engine behind them: what
//! OpenAI and Ollama clients send (typed requests with their OpenAPI schemas), the two error
//! shapes and the JSON extractors that produce them, API-key checks, request ids, the log
//! flags both binaries take, and the status page both serve at `GET /` ([`overview`]).
//!
//! ```text
//!   client ──► request_id::layer ──► auth::require_key ──► OpenAiJson<T> | OllamaJson<T> ──► handler
//!                                        │ 401                 │ 400 / 413
//!                                        ▼                     ▼
//!                               ApiError ──► OpenAiError {"error": {message, type, param, code}}
//!                                        └─► OllamaError {"error": "…"}
//! ```
//!
//! Which error shape a route answers in is decided by its path ([`error::shape_for_path`]):
//! `/api/*` is Ollama's, everything else OpenAI's.

pub mod auth;
pub mod error;
pub mod extract;
pub mod log;
pub mod ollama;
pub mod openai;
pub mod overview;
pub mod request_id;
pub mod schema;

pub use error::{ApiError, ErrorShape, OllamaError, OpenAiError};
pub use extract::{OllamaJson, OpenAiJson};

/// Largest request body accepted, in bytes. Chat histories of a few thousand tokens are tens of
/// kilobytes; this leaves room for long documents while bounding memory per request.
pub const BODY_LIMIT: usize = 4 << 20;
