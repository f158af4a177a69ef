//! The sim's tokenizer and hashing: simple, deterministic and documented, so tests can predict
//! token counts by hand.
//!
//! Rules, applied left to right:
//! 1. special tokens are one token each: `<|…|>` (no whitespace inside, at most 64 bytes),
//!    `<think>`, `</think>`, `<tool_call>`, `</tool_call>`;
//! 2. a run of up to 6 alphanumeric characters (Unicode, so `café` and `東京` are words);
//! 3. a run of whitespace;
//! 4. any other single character (punctuation, symbols, emoji).
//!
//! `"Hello, world!"` → `Hello` `,` ` ` `world` `!`; `"internationalization"` → `intern`
//! `ationa` `lizati` `on`. Token ids are an FNV-1a hash of the token text, so the same text
//! always gets the same id in every process and build.

/// Size of the simulated vocabulary (Qwen2/3's), the range of token ids.
pub const VOCAB_SIZE: u64 = 151_936;

/// Tokens that are one token regardless of the character rules.
const SPECIAL: [&str; 4] = ["<think>", "</think>", "<tool_call>", "</tool_call>"];
/// Longest `<|…|>` token accepted as special; longer text is split by the normal rules.
const MAX_SPECIAL_LEN: usize = 64;
/// Longest alphanumeric run that is still one token.
const MAX_WORD_CHARS: usize = 6;

/// FNV-1a, 64 bit: the sim's only hash. Chosen over std's `DefaultHasher` because that one is
/// randomly seeded per process, and the sim's outputs must be identical across runs.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The id of a token: its hash folded into the vocabulary (always ≥ 0).
pub fn token_id(token: &[u8]) -> i32 {
    // VOCAB_SIZE < 2^31, so the remainder always fits.
    i32::try_from(fnv1a(token) % VOCAB_SIZE).unwrap_or(0)
}

/// Splits `text` into tokens; concatenating the result gives back `text` exactly.
pub fn tokenize(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let len = special_len(rest).unwrap_or_else(|| plain_len(rest));
        let (tok, tail) = rest.split_at(len);
        out.push(tok);
        rest = tail;
    }
    out
}

/// Number of tokens in `text`.
pub fn count(text: &str) -> usize {
    tokenize(text).len()
}

fn special_len(s: &str) -> Option<usize> {
    if let Some(sp) = SPECIAL.iter().find(|sp| s.starts_with(**sp)) {
        return Some(sp.len());
    }
    let body = s.strip_prefix("<|")?;
    let end = body.find("|>")?;
    let inner = &body[..end];
    let len = end + 4;
    (len <= MAX_SPECIAL_LEN && !inner.is_empty() && !inner.contains(|c: char| c.is_whitespace() || c == '<'))
        .then_some(len)
}

fn plain_len(s: &str) -> usize {
    match s.chars().next() {
        Some(c) if c.is_alphanumeric() => run_len(s, char::is_alphanumeric, MAX_WORD_CHARS),
        Some(c) if c.is_whitespace() => run_len(s, char::is_whitespace, usize::MAX),
        Some(c) => c.len_utf8(),
        None => 0,
    }
}

/// Byte length of the leading run of at most `limit` characters matching `pred`.
fn run_len(s: &str, pred: fn(char) -> bool, limit: usize) -> usize {
    s.chars().take_while(|c| pred(*c)).take(limit).map(char::len_utf8).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_the_documented_rules() {
        assert_eq!(tokenize("Hello, world!"), ["Hello", ",", " ", "world", "!"]);
        assert_eq!(tokenize("internationalization"), ["intern", "ationa", "lizati", "on"]);
        assert_eq!(tokenize("<|im_start|>user\n"), ["<|im_start|>", "user", "\n"]);
        assert_eq!(tokenize("<think>\n\n</think>"), ["<think>", "\n\n", "</think>"]);
        assert_eq!(tokenize("a <| b |> c"), ["a", " ", "<", "|", " ", "b", " ", "|", ">", " ", "c"]);
        assert_eq!(tokenize(" café 東京🙂"), [" ", "café", " ", "東京", "🙂"]);
        assert_eq!(tokenize(""), Vec::<&str>::new());
    }

    #[test]
    fn ids_are_stable_and_in_range() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let id = token_id(b"hello");
        assert!(id >= 0 && (id as u64) < VOCAB_SIZE);
        assert_eq!(id, token_id(b"hello"));
    }
}
