//! Sentence embeddings on the CPU engine: a short-lived llama.cpp context with embeddings on and
//! mean pooling, next to (not inside) the model's generation context, so an embedding request
//! never takes a generation slot or disturbs its KV cache. Weights are shared: llama.cpp allows
//! several contexts on one model.

use std::{num::NonZeroU32, sync::Arc};

use llama_cpp_2::{
    context::params::{LlamaContextParams, LlamaPoolingType},
    llama_batch::LlamaBatch,
    model::LlamaModel,
};

use super::backend::{backend, tokenize};
use crate::engine::{Embeddings, EngineError};

/// Mean-pooled, L2-normalised embedding of each input. `context` bounds one input's tokens.
pub fn embed(
    model: &Arc<LlamaModel>,
    inputs: &[String],
    threads: u32,
    context: u32,
) -> Result<Embeddings, EngineError> {
    let backend = backend()?;
    let tokens: Vec<_> = inputs.iter().map(|t| tokenize(model, t)).collect();
    let longest = tokens.iter().map(Vec::len).max().unwrap_or(0);
    let longest = u32::try_from(longest).unwrap_or(u32::MAX);
    if longest >= context {
        return Err(EngineError::PromptTooLong { prompt: longest, context });
    }
    let n = longest.max(16) + 1;
    let threads = i32::try_from(threads.max(1)).unwrap_or(1);
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_pooling_type(LlamaPoolingType::Mean)
        .with_n_ctx(NonZeroU32::new(n))
        .with_n_batch(n)
        .with_n_ubatch(n)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let decode_err = |e: String| EngineError::Decode(format!("embedding: {e}"));
    let mut ctx = model.new_context(backend, params).map_err(|e| decode_err(e.to_string()))?;
    let mut batch = LlamaBatch::new(n as usize, 1);
    let mut vectors = Vec::with_capacity(inputs.len());
    for toks in &tokens {
        ctx.clear_kv_cache();
        batch.clear();
        for (i, t) in toks.iter().enumerate() {
            batch.add(*t, i as i32, &[0], true).map_err(|e| decode_err(e.to_string()))?;
        }
        ctx.decode(&mut batch).map_err(|e| decode_err(e.to_string()))?;
        let v = ctx.embeddings_seq_ith(0).map_err(|e| decode_err(e.to_string()))?;
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        vectors.push(v.iter().map(|x| if norm > 0.0 { x / norm } else { *x }).collect());
    }
    let prompt_tokens = tokens.iter().map(|t| t.len() as u32).sum();
    Ok(Embeddings { vectors, prompt_tokens })
}
