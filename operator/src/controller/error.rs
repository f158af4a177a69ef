//! The operator's one error type. Each variant names what was being done and to which object,
//! so a log line or an error requeue says where to look; `metric_label` gives the fixed label
//! the metrics count failures by.

use std::io;

/// Everything the controller can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An object lacks a field the API server always sets (name, namespace).
    #[error("object has no {0}")]
    MissingField(&'static str),

    /// Serialising a value to JSON failed (a bug: every type here serialises).
    #[error("encoding JSON: {0}")]
    Json(#[source] serde_json::Error),

    /// A call to the API server failed.
    #[error("{action} {object}: {source}")]
    Kube {
        /// What was attempted, e.g. "applying spec.models of Board".
        action: &'static str,
        /// The object, e.g. `board-1` or `ns/name`.
        object: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },

    /// Adding or removing the finalizer, or the cleanup it guards, failed. Boxed because the
    /// finalizer error wraps this type.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// The metrics listener could not be opened.
    #[error("metrics listener on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// A short fixed name per variant, for metrics labels and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingField(_) => "missing_field",
            Self::Json(_) => "json",
            Self::Kube { .. } => "kube",
            Self::Finalizer(_) => "finalizer",
            Self::Listen { .. } => "listen",
        }
    }

    /// Wraps a client error with what was being done.
    pub fn kube(action: &'static str, object: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let object = object.into();
        move |source| Self::Kube { action, object, source }
    }
}
