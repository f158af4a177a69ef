//! Tool calls out of a streaming answer (pure). With tools offered, answer text streams to the
//! client as it is generated; only a tool-call block — from its first marker — is held back and
//! handed over as parsed calls when the answer ends, as Ollama and llama.cpp's server do.
//!
//! What is held:
//! - everything from a `<tool_call>` marker on (a partial marker at the end of a piece waits for
//!   the next piece to decide);
//! - a whole answer that opens with `{`, `[` or a code fence: small models often answer with a
//!   bare JSON call (`tools::parse` reads those), which cannot be told from prose until it ends.

use crate::tools::{self, ToolCall};

const MARKER: &str = "<tool_call>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Only whitespace so far: the answer's first character decides.
    Start,
    Streaming,
    Holding,
}

/// Splits streamed text from tool calls for one answer.
#[derive(Debug)]
pub struct ToolStream {
    names: Vec<String>,
    state: State,
    buf: String,
}

impl ToolStream {
    /// `names`: the functions the request offered; calls to others stay text.
    pub fn new(names: Vec<String>) -> Self {
        Self { names, state: State::Start, buf: String::new() }
    }

    /// Takes the next piece of answer text; returns what may be sent now ("" when nothing).
    pub fn feed(&mut self, text: &str) -> String {
        self.buf.push_str(text);
        if self.state == State::Start {
            let t = self.buf.trim_start();
            if t.is_empty() || (t.starts_with('`') && t.len() < 3 && "```".starts_with(t)) {
                return String::new();
            }
            self.state =
                if t.starts_with(['{', '[']) || t.starts_with("```") { State::Holding } else { State::Streaming };
        }
        if self.state == State::Holding {
            return String::new();
        }
        if let Some(at) = self.buf.find(MARKER) {
            let out: String = self.buf.drain(..at).collect();
            self.state = State::Holding;
            return out;
        }
        let keep = partial_marker(&self.buf);
        self.buf.drain(..self.buf.len() - keep).collect()
    }

    /// The answer has ended: the rest of the text and the calls parsed from what was held.
    pub fn finish(&mut self) -> (String, Vec<ToolCall>) {
        let rest = std::mem::take(&mut self.buf);
        match self.state {
            State::Holding => tools::parse(&rest, &self.names),
            State::Start if rest.trim().is_empty() => (String::new(), Vec::new()),
            _ => (rest, Vec::new()),
        }
    }
}

/// Length of the longest suffix of `s` that is a proper prefix of the marker.
fn partial_marker(s: &str) -> usize {
    (1..MARKER.len())
        .rev()
        .find(|&n| s.len() >= n && s.is_char_boundary(s.len() - n) && MARKER.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(pieces: &[&str]) -> (Vec<String>, String, Vec<ToolCall>) {
        let mut t = ToolStream::new(vec!["get_weather".into()]);
        let sent: Vec<String> = pieces.iter().map(|p| t.feed(p)).collect();
        let (rest, calls) = t.finish();
        (sent, rest, calls)
    }

    #[test]
    fn prose_streams_as_it_comes() {
        let (sent, rest, calls) = run(&["Hello", " there", ", friend"]);
        assert_eq!(sent, ["Hello", " there", ", friend"]);
        assert_eq!((rest.as_str(), calls.len()), ("", 0));
    }

    #[test]
    fn a_call_block_is_held_from_its_first_marker() {
        let (sent, rest, calls) = run(&[
            "Let me check. <tool",
            "_call>\n{\"name\": \"get_weather\", ",
            "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        ]);
        assert_eq!(sent, ["Let me check. ", "", ""], "the partial marker waits for the next piece");
        assert_eq!(rest, "");
        assert_eq!(calls[0].arguments, json!({"city": "Paris"}));
    }

    #[test]
    fn a_partial_marker_that_is_not_one_is_sent() {
        let (sent, rest, _) = run(&["a <to", "y> b"]);
        assert_eq!(sent, ["a ", "<toy> b"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn bare_json_answers_are_held_whole() {
        let (sent, rest, calls) = run(&["  {\"name\": \"get_weather\",", " \"arguments\": {\"city\": \"Oslo\"}}"]);
        assert_eq!(sent, ["", ""]);
        assert_eq!((rest.as_str(), calls[0].name.as_str()), ("", "get_weather"));
        let (sent, rest, calls) = run(&["`", "``json\n{\"a\": 1}\n```"]);
        assert_eq!(sent, ["", ""]);
        assert!(calls.is_empty() && rest.contains("\"a\""), "JSON that is not a call comes back as text: {rest}");
        let (sent, _, _) = run(&["`x` is a variable"]);
        assert_eq!(sent, ["`x` is a variable"], "inline code is prose");
    }

    #[test]
    fn whitespace_only_answers_end_empty() {
        let (sent, rest, calls) = run(&["\n", "  "]);
        assert_eq!(sent, ["", ""]);
        assert!(rest.is_empty() && calls.is_empty());
    }
}
