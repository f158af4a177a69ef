//! Deterministic answers: what the simulated model "says".
//!
//! The output must be a pure function of the conversation, so tests (and the agent's tests) can
//! assert on it across processes: the seed is FNV-1a of the whole KV-cache text after prefill
//! plus the LoRA adapter name, and nothing else. The rules below make the few behaviours the
//! agent has to parse (tool calls, JSON mode, think blocks) appear on cue:
//!
//! 1. tools are set, the role is `user` and the user text contains (case-insensitively) a part of
//!    ≥4 characters of a tool's name split on `_` → one `<tool_call>` block for that tool;
//! 2. role `tool` → `"The tool returned " + first 40 chars of the result` and then words;
//! 3. the assembled prompt mentions `json` → one JSON object (filled from the last JSON Schema
//!    object with `properties` found in the prompt, else `{"answer": "<word>"}`);
//! 4. the user text asks for a length, `in N words` (any case, 1 ≤ N ≤ 4096) → N words, so a
//!    benchmark can ask for long answers as a user would (rule 5 alone never exceeds 47 tokens);
//! 5. otherwise 12 + h%36 words from [`VOCAB`].
//!
//! A thinking model first emits `<think>\n` + a few words + `\n</think>\n\n`. Word tokens are
//! emitted whole (like a BPE vocabulary entry " because"); literal text (tool calls, JSON) goes
//! through the sim tokenizer, so `max_new_tokens` can truncate it anywhere.

use serde_json::Value;

use crate::{
    template::{Role, Tools, json_type},
    tokenizer::{fnv1a, tokenize},
};

/// The answer vocabulary: 64 plain English words, then multi-byte words so that callers meet
/// UTF-8 sequences split across callbacks (`RKLLM_RUN_WAITING`).
pub(crate) const VOCAB: [&str; 69] = [
    "the", "a", "model", "answer", "is", "simple", "and", "quick", "board", "runs", "on", "small", "chip", "with",
    "fast", "memory", "tokens", "flow", "through", "each", "layer", "until", "done", "we", "see", "clear", "light",
    "over", "quiet", "hills", "river", "stone", "paper", "signal", "green", "north", "bright", "calm", "steady",
    "open", "field", "window", "garden", "morning", "evening", "music", "number", "story", "friend", "harbor",
    "bridge", "cloud", "rain", "summer", "winter", "engine", "pixel", "kernel", "thread", "socket", "packet", "little",
    "because", "today", "café", "naïve", "東京", "über", "🙂",
];
/// How many entries of [`VOCAB`] are plain ASCII words (used for `{"answer": …}`).
const PLAIN_WORDS: usize = 64;
/// Answers have `MIN_WORDS + h % WORD_SPREAD` words.
const MIN_WORDS: u64 = 12;
const WORD_SPREAD: u64 = 36;
/// The longest answer rule 4 gives, in words.
const MAX_ASKED_WORDS: u64 = 4096;
/// Characters of a tool result quoted back by rule 2.
const TOOL_ECHO_CHARS: usize = 40;
/// Shortest part of a tool name that triggers rule 1 (shorter parts like "get" match everything).
const MIN_TRIGGER_CHARS: usize = 4;

/// Everything an answer may depend on.
pub(crate) struct AnswerInput<'a> {
    /// Text of the whole KV cache after prefill (conversation so far + this turn).
    pub kv_text: &'a str,
    pub lora: Option<&'a str>,
    pub tools: Option<&'a Tools>,
    pub role: Role,
    /// The caller's text of this turn, before templating.
    pub user_text: &'a str,
    /// The assembled prompt of this turn (with template and system part).
    pub prompt: &'a str,
    pub thinks: bool,
}

/// The answer as a list of tokens, in emission order.
pub(crate) fn answer(inp: &AnswerInput<'_>) -> Vec<String> {
    let seed = fnv1a(format!("{}\0{}", inp.kv_text, inp.lora.unwrap_or("")).as_bytes());
    let mut words = Words { seed, next: 0 };
    let mut out = Vec::new();
    if inp.thinks {
        out.push("<think>".to_owned());
        out.push("\n".to_owned());
        words.push(&mut out, 3 + seed % 4, true);
        out.extend(["\n", "</think>", "\n\n"].map(str::to_owned));
    }
    let tool = inp.tools.filter(|_| inp.role == Role::User).and_then(|t| triggered_tool(t, inp.user_text));
    if let Some(call) = tool {
        push_text(&mut out, &call);
    } else if inp.role == Role::Tool {
        let echo: String = inp.user_text.chars().take(TOOL_ECHO_CHARS).collect();
        push_text(&mut out, &format!("The tool returned {echo}"));
        words.push(&mut out, MIN_WORDS + seed % WORD_SPREAD, false);
    } else if inp.prompt.to_ascii_lowercase().contains("json") {
        let json = match find_schema(inp.prompt) {
            Some(props) => fill_schema(&props),
            None => format!("{{\"answer\": {}}}", quote(VOCAB[(mix(seed, u64::MAX) % PLAIN_WORDS as u64) as usize])),
        };
        push_text(&mut out, &json);
    } else {
        let n = asked_words(inp.user_text).unwrap_or(MIN_WORDS + seed % WORD_SPREAD);
        words.push(&mut out, n, true);
    }
    out
}

/// Rule 4: N from the first `in N words` in `text` (any case), when 1 ≤ N ≤ [`MAX_ASKED_WORDS`].
fn asked_words(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    lower.match_indices("in ").find_map(|(at, _)| {
        let rest = &lower[at + 3..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = rest[..digits].parse().ok()?;
        (rest[digits..].starts_with(" words") && (1..=MAX_ASKED_WORDS).contains(&n)).then_some(n)
    })
}

/// A deterministic stream of vocabulary words.
struct Words {
    seed: u64,
    next: u64,
}

impl Words {
    /// Appends `n` word tokens; each gets a leading space unless it opens the text.
    fn push(&mut self, out: &mut Vec<String>, n: u64, first_bare: bool) {
        for i in 0..n {
            let w = VOCAB[(mix(self.seed, self.next) % VOCAB.len() as u64) as usize];
            self.next += 1;
            out.push(if i == 0 && first_bare { w.to_owned() } else { format!(" {w}") });
        }
    }
}

/// SplitMix64 finaliser over `seed + i`: spreads consecutive indices over the whole range.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn push_text(out: &mut Vec<String>, text: &str) {
    out.extend(tokenize(text).into_iter().map(str::to_owned));
}

fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Rule 1: the `<tool_call>` block for the first tool whose name part appears in `text`.
fn triggered_tool(tools: &Tools, text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let f = tools.functions.iter().find(|f| {
        f.name.split('_').any(|part| part.chars().count() >= MIN_TRIGGER_CHARS && lower.contains(&part.to_lowercase()))
    })?;
    let args: Vec<String> = f
        .required
        .iter()
        .map(|(prop, ty)| {
            let value = match ty.as_str() {
                "string" => quote(&last_capitalised_word(text).unwrap_or_else(|| "example".to_owned())),
                "integer" => "1".to_owned(),
                "number" => "1.5".to_owned(),
                "boolean" => "true".to_owned(),
                _ => "null".to_owned(),
            };
            format!("{}: {value}", quote(prop))
        })
        .collect();
    Some(format!("<tool_call>\n{{\"name\": {}, \"arguments\": {{{}}}}}\n</tool_call>", quote(&f.name), args.join(", ")))
}

/// The last word starting with an upper-case letter, stripped of non-alphanumeric characters
/// ("Weather in Paris?" → "Paris"): a cheap stand-in for "the entity the user asked about".
fn last_capitalised_word(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric()).collect::<String>())
        .rev()
        .find(|w| w.chars().next().is_some_and(char::is_uppercase))
}

/// Rule 3: the `properties` of the last balanced `{…}` in `text` that parses as a JSON object
/// with a `properties` object. Braces are matched without string awareness, because prompts are
/// prose around the schema and a stray quote in the prose must not hide it.
fn find_schema(text: &str) -> Option<serde_json::Map<String, Value>> {
    let mut open = Vec::new();
    let mut spans = Vec::new();
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'{' => open.push(i),
            b'}' => {
                if let Some(start) = open.pop() {
                    spans.push((start, i + 1));
                }
            }
            _ => {}
        }
    }
    spans.sort_by_key(|(start, _)| std::cmp::Reverse(*start));
    spans.into_iter().filter(|(s, e)| text[*s..*e].contains("\"properties\"")).find_map(|(s, e)| {
        match serde_json::from_str::<Value>(&text[s..e]) {
            Ok(Value::Object(mut o)) => match o.remove("properties") {
                Some(Value::Object(props)) => Some(props),
                _ => None,
            },
            _ => None,
        }
    })
}

/// One value per property by its JSON type, keys sorted (serde_json's map order depends on
/// a cargo feature other crates may switch on; sorting keeps the output build-independent).
fn fill_schema(props: &serde_json::Map<String, Value>) -> String {
    let mut keys: Vec<&String> = props.keys().collect();
    keys.sort();
    let fields: Vec<String> = keys
        .into_iter()
        .map(|k| {
            let v = match json_type(props.get(k)).as_str() {
                "integer" => "42",
                "number" => "1.5",
                "string" => "\"sim\"",
                "boolean" => "true",
                "array" => "[]",
                "object" => "{}",
                _ => "null",
            };
            format!("{}: {v}", quote(k))
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::ToolFn;

    fn input<'a>(kv: &'a str, prompt: &'a str, user: &'a str) -> AnswerInput<'a> {
        AnswerInput { kv_text: kv, lora: None, tools: None, role: Role::User, user_text: user, prompt, thinks: false }
    }

    #[test]
    fn words_are_deterministic_and_lora_dependent() {
        assert_eq!(VOCAB[..PLAIN_WORDS].iter().filter(|w| w.is_ascii()).count(), PLAIN_WORDS);
        let a = answer(&input("hello", "hello", "hello"));
        assert_eq!(a, answer(&input("hello", "hello", "hello")));
        assert!((12..48).contains(&a.len()));
        assert!(!a[0].starts_with(' ') && a[1].starts_with(' '));
        let mut with_lora = input("hello", "hello", "hello");
        with_lora.lora = Some("style");
        assert_ne!(a, answer(&with_lora));
    }

    #[test]
    fn tool_call_json_and_tool_echo() {
        let tools = Tools {
            system: String::new(),
            json: String::new(),
            tag: "tool_response".into(),
            functions: vec![ToolFn {
                name: "get_weather".into(),
                required: vec![("city".into(), "string".into()), ("days".into(), "integer".into())],
            }],
        };
        let mut inp = input("k", "p", "What's the Weather in Paris?");
        inp.tools = Some(&tools);
        assert_eq!(
            answer(&inp).concat(),
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 1}}\n</tool_call>"
        );
        inp.role = Role::Tool;
        inp.user_text = "{\"temp\": 21}";
        assert!(answer(&inp).concat().starts_with("The tool returned {\"temp\": 21} "));

        let schema = r#"Reply in JSON: {"type": "object", "properties": {"n": {"type": "integer"}, "a": {"type": "string"}, "ok": {"type": "boolean"}}}"#;
        assert_eq!(answer(&input("k", schema, "")).concat(), r#"{"a": "sim", "n": 42, "ok": true}"#);
        let plain = answer(&input("k", "answer as json", "")).concat();
        assert!(plain.starts_with("{\"answer\": \"") && plain.ends_with("\"}"), "{plain}");
    }

    #[test]
    fn asked_length_sets_the_word_count() {
        assert_eq!(answer(&input("k", "p", "Explain tides in 128 words, please")).len(), 128);
        assert_eq!(answer(&input("k", "p", "IN 3 WORDS: why?")).len(), 3);
        assert_eq!(asked_words("in 0 words"), None);
        assert_eq!(asked_words("in 5000 words"), None);
        assert_eq!(asked_words("in twelve words"), None);
        assert_eq!(asked_words("in 7 words, or else in 9 words"), Some(7), "the first match wins");
    }

    #[test]
    fn thinking_block_comes_first() {
        let mut inp = input("k", "p", "u");
        inp.thinks = true;
        let text = answer(&inp).concat();
        assert!(text.starts_with("<think>\n"));
        assert!(text.contains("\n</think>\n\n"));
    }
}
