//! Stop-string matching over a token stream.
//!
//! Tokens do not align with stop strings ("</s" + "top>"), so text that could be the start of a
//! stop string is held back until the next token decides. Held text is released when it turns out
//! not to be a stop string, and dropped when it is: stop strings never reach the client.

/// Incremental matcher; feed it decoded text, emit what it returns.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// Result of feeding one piece of text.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Emit this text (may be empty while text is held back).
    Continue(String),
    /// A stop string matched: emit this text, then end the generation.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        let stops = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        Self { stops, pending: String::new() }
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Continue(text.to_owned());
        }
        self.pending.push_str(text);
        // Earliest full match wins.
        let hit = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min();
        if let Some(at) = hit {
            let out = self.pending[..at].to_owned();
            self.pending.clear();
            return StopOutcome::Stopped(out);
        }
        let hold = self.held_suffix_start();
        let out = self.pending[..hold].to_owned();
        self.pending.drain(..hold);
        StopOutcome::Continue(out)
    }

    /// Text still held back when generation ends for another reason: it was not a stop string.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Byte offset of the earliest suffix of `pending` that is a proper prefix of a stop string.
    fn held_suffix_start(&self) -> usize {
        self.pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.pending.len())
    }
}

/// Splits off the longest valid UTF-8 prefix; an incomplete trailing sequence stays buffered.
/// Bytes that can never become valid are replaced rather than held forever.
pub fn take_utf8(buf: &mut Vec<u8>) -> String {
    match std::str::from_utf8(buf) {
        Ok(s) => {
            let s = s.to_owned();
            buf.clear();
            s
        }
        Err(e) if e.error_len().is_none() => {
            let valid = e.valid_up_to();
            let s = String::from_utf8_lossy(&buf[..valid]).into_owned();
            buf.drain(..valid);
            s
        }
        Err(_) => {
            let s = String::from_utf8_lossy(buf).into_owned();
            buf.clear();
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopOutcome::Continue(t) => out.push_str(&t),
                StopOutcome::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stop_split_across_tokens_is_not_leaked() {
        assert_eq!(run(&["</s>"], &["Hello", " wor", "ld</", "s>", "more"]), ("Hello world".into(), true));
    }

    #[test]
    fn partial_match_is_released_when_it_diverges() {
        assert_eq!(run(&["STOP"], &["a ST", "ay"]), ("a STay".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins_and_unicode_is_safe() {
        assert_eq!(run(&["b", "é!"], &["aé!b"]), ("a".into(), true));
        assert_eq!(run(&["xyz"], &["ééx"]), ("ééx".into(), false));
    }

    #[test]
    fn no_stops_passes_through() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}
