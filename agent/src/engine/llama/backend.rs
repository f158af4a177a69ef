//! The llama.cpp backend (initialised once per process) and tokenization, shared by the
//! generation worker and the embedding contexts.

use std::sync::OnceLock;

use llama_cpp_2::{llama_backend::LlamaBackend, model::LlamaModel, token::LlamaToken};

use crate::engine::EngineError;

/// llama.cpp's backend may be initialised once per process.
static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

pub(crate) fn backend() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| e.to_string())?;
            // llama.cpp logs every tensor at load; keep the agent's own log readable.
            b.void_logs();
            Ok(b)
        })
        .as_ref()
        .map_err(|e| EngineError::Load { path: "<backend>".into(), reason: e.clone() })
}

/// Tokenizes a rendered prompt. Templates write special tokens as text, so they are parsed; BOS
/// is added only when the model wants it and the template did not already write it.
pub(crate) fn tokenize(model: &LlamaModel, text: &str) -> Vec<LlamaToken> {
    let vocab = model.vocab();
    let bos_text = String::from_utf8_lossy(&vocab.token_to_piece(vocab.bos(), true, None)).into_owned();
    let add_bos = vocab.should_add_bos() && (bos_text.is_empty() || !text.starts_with(&bos_text));
    vocab.tokenize(text.as_bytes(), add_bos, true)
}
