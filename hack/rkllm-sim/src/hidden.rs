//! `RKLLM_INFER_GET_LAST_HIDDEN_LAYER` output: `num_tokens × embd_size` float32.
//!
//! Callers use these vectors as embeddings (mean or last-token pooling), so they must carry the
//! text's content: each token gets a unit vector seeded from its hash, and the state at
//! position i mixes that token's vector with the running mean of all tokens up to i, like a
//! causal model. Texts sharing words therefore get closer vectors under either pooling, and the
//! same text always gets the same vectors.

use crate::tokenizer::fnv1a;

/// Hidden states for `tokens`, row-major `[token][dim]`.
pub(crate) fn hidden_states(tokens: &[&str], dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(tokens.len() * dim);
    let mut sum = vec![0f32; dim];
    for (i, tok) in tokens.iter().enumerate() {
        let e = token_vector(tok, dim);
        for (s, v) in sum.iter_mut().zip(&e) {
            *s += v;
        }
        let n = (i + 1) as f32;
        let mut row: Vec<f32> = e.iter().zip(&sum).map(|(v, s)| 0.5 * v + 0.5 * s / n).collect();
        normalize(&mut row);
        out.extend(row);
    }
    out
}

/// A unit vector with components in [-1, 1) drawn from an xorshift stream seeded by the token.
fn token_vector(token: &str, dim: usize) -> Vec<f32> {
    let mut state = fnv1a(token.as_bytes()) | 1;
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Top 24 bits → [0, 1) exactly representable in f32, then shift to [-1, 1).
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    normalize(&mut v);
    v
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean(tokens: &[&str]) -> Vec<f32> {
        let dim = 64;
        let h = hidden_states(tokens, dim);
        (0..dim).map(|d| h.chunks(dim).map(|r| r[d]).sum::<f32>() / tokens.len() as f32).collect()
    }

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
    }

    #[test]
    fn shared_words_are_closer() {
        let a = mean(&["red", " ", "apple", " ", "pie"]);
        let b = mean(&["red", " ", "apple", " ", "tart"]);
        let c = mean(&["blue", " ", "river", " ", "boat"]);
        assert!(cos(&a, &b) > cos(&a, &c) + 0.2, "{} vs {}", cos(&a, &b), cos(&a, &c));
        assert_eq!(hidden_states(&["x"], 8), hidden_states(&["x"], 8));
    }
}
