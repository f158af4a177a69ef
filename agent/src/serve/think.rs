//! Splits a model's leading `<think>…</think>` block (Qwen3, DeepSeek-R1 and others) from its
//! answer as tokens stream in, so reasoning reaches clients as OpenAI `reasoning_content` /
//! Ollama `thinking` rather than as answer text. Tags split across tokens are held back until
//! they are decided.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Reasoning(String),
    Text(String),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Start,
    Inside,
    After,
}

#[derive(Debug, Default)]
pub struct ThinkSplitter {
    state: State,
    buf: String,
}

impl ThinkSplitter {
    pub fn feed(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Start => {
                    let t = self.buf.trim_start();
                    if let Some(rest) = t.strip_prefix(OPEN) {
                        self.buf = rest.trim_start().to_owned();
                        self.state = State::Inside;
                    } else if OPEN.starts_with(t) {
                        return out; // undecided: maybe the start of the tag
                    } else {
                        self.state = State::After;
                    }
                }
                State::Inside => {
                    if let Some(at) = self.buf.find(CLOSE) {
                        let reasoning = self.buf[..at].trim_end().to_owned();
                        let rest = self.buf[at + CLOSE.len()..].trim_start().to_owned();
                        if !reasoning.is_empty() {
                            out.push(Piece::Reasoning(reasoning));
                        }
                        self.buf = rest;
                        self.state = State::After;
                    } else {
                        let keep = partial_suffix(&self.buf, CLOSE);
                        let emit: String = self.buf.drain(..self.buf.len() - keep).collect();
                        if !emit.is_empty() {
                            out.push(Piece::Reasoning(emit));
                        }
                        return out;
                    }
                }
                State::After => {
                    if !self.buf.is_empty() {
                        out.push(Piece::Text(std::mem::take(&mut self.buf)));
                    }
                    return out;
                }
            }
        }
    }

    /// Whatever is still held when the output ends.
    pub fn finish(&mut self) -> Vec<Piece> {
        let rest = std::mem::take(&mut self.buf);
        match (self.state, rest.is_empty()) {
            (_, true) => Vec::new(),
            (State::Inside, false) => vec![Piece::Reasoning(rest)],
            _ => vec![Piece::Text(rest)],
        }
    }
}

/// Length of the longest suffix of `s` that is a proper prefix of `tag`.
fn partial_suffix(s: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&n| s.len() >= n && s.is_char_boundary(s.len() - n) && tag.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tokens: &[&str]) -> (String, String) {
        let mut s = ThinkSplitter::default();
        let (mut r, mut t) = (String::new(), String::new());
        let mut pieces: Vec<Piece> = tokens.iter().flat_map(|x| s.feed(x)).collect();
        pieces.extend(s.finish());
        for p in pieces {
            match p {
                Piece::Reasoning(x) => r.push_str(&x),
                Piece::Text(x) => t.push_str(&x),
            }
        }
        (r, t)
    }

    #[test]
    fn splits_across_token_boundaries() {
        assert_eq!(
            run(&["<th", "ink>\nLet me", " see.</th", "ink>\n\nParis", " it is"]),
            ("Let me see.".into(), "Paris it is".into())
        );
        assert_eq!(run(&["Hello", " <think>"]), (String::new(), "Hello <think>".into()));
        assert_eq!(run(&["<think>\n\n</think>\n\nHi"]), (String::new(), "Hi".into()));
        assert_eq!(run(&["<think>never closed"]), ("never closed".into(), String::new()));
        assert_eq!(run(&["<"]), (String::new(), "<".into()));
    }
}
