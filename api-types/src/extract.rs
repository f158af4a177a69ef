//! JSON body extractors whose rejections come in the route family's own error shape, never as
//! axum's plain-text rejection.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::StatusCode,
};
use serde::de::DeserializeOwned;

use crate::{
    BODY_LIMIT,
    error::{ApiError, OllamaError, OpenAiError},
};

/// `Json<T>` whose rejections are OpenAI-shaped.
pub struct OpenAiJson<T>(pub T);

/// `Json<T>` whose rejections are Ollama-shaped.
pub struct OllamaJson<T>(pub T);

/// Parses the body as JSON whatever its `Content-Type`: Ollama's own server does, and users
/// follow its docs with `curl -d '{…}'`, which sends a form content type. Errors name the path
/// of the field at fault.
pub async fn json_body<S: Send + Sync, T: DeserializeOwned>(req: Request, state: &S) -> Result<T, ApiError> {
    let bytes = Bytes::from_request(req, state).await.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: BODY_LIMIT },
        _ => ApiError::BadRequest { message: r.body_text(), param: None },
    })?;
    parse(&bytes)
}

/// The deserialisation step of [`json_body`], on bytes already read.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." || path.is_empty() {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid JSON body at {path}: {inner}")
        };
        ApiError::BadRequest { message, param: None }
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OpenAiJson<T> {
    type Rejection = OpenAiError;
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

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        model: String,
        n: Option<u32>,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<Body>(br#"{"model": "m", "n": "three"}"#).unwrap_err();
        assert!(e.to_string().contains("at n"), "{e}");
        let e = parse::<Body>(b"{").unwrap_err();
        assert!(e.to_string().starts_with("invalid JSON body"), "{e}");
        assert!(parse::<Body>(br#"{"model": "m"}"#).is_ok());
    }
}
