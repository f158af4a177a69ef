//! Multi-turn policy: when a chat request may continue the conversation held in an instance's
//! KV cache (`keep_history = 1`, only the new message is sent), and what to send when it may not.
//!
//! The runtime applies the model's chat template itself and takes one message per run, so the
//! agent keeps, per instance, the conversation the KV cache holds as canonical turns. A request
//! *extends* it when it has the same system prompt and tools and its messages before the new
//! ones equal the held turns (the previous answer compared after removing `<think>` blocks and
//! normalising tool calls, so a client that sends back `tool_calls` instead of text matches).
//! Anything else *diverges*: the cache is cleared (keeping the system prompt when that is
//! unchanged) and the earlier turns are folded into the new message as a transcript, because the
//! runtime cannot be fed an assistant turn. Pure logic; [`super::instance`] does the calls.

use serde_json::Value;

use crate::tools;

/// What the handle is configured with: the system prompt and tools. Both decide the start of
/// the KV cache, so a change means a new conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Setup {
    pub system: String,
    /// The OpenAI tool array as JSON text.
    pub tools: Option<String>,
}

/// A message reduced to what the KV cache holds of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: String,
    pub text: String,
}

/// The conversation an instance's KV cache holds right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub setup: Setup,
    pub turns: Vec<Turn>,
}

/// How a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The request extends the held conversation: send only the new message, keep history.
    Continue,
    /// Clear the cache first; `keep_system` keeps the system-prompt part (same setup).
    Fresh { keep_system: bool },
}

/// What to run for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub setup: Setup,
    pub start: Start,
    /// `user` or `tool` (the runtime's `RKLLMInput.role`).
    pub role: &'static str,
    pub text: String,
    /// The turns the cache holds once the run ends (the answer is appended then).
    pub turns: Vec<Turn>,
}

/// Plans a chat request. `messages` are normalised (`api::infer::normalize_messages`) without
/// the system message; `system` is the system prompt ("" for none).
pub fn plan(held: Option<&Held>, setup: Setup, messages: &[Value]) -> Plan {
    let turns: Vec<Turn> = messages.iter().map(turn_of).collect();
    // The new input: trailing tool results, else the last message.
    let n_tools = turns.iter().rev().take_while(|t| t.role == "tool").count();
    let n_new = if n_tools > 0 { n_tools } else { usize::from(!turns.is_empty()) };
    let (history, new) = turns.split_at(turns.len() - n_new);
    let same_setup = held.is_some_and(|h| h.setup == setup);
    let extends = same_setup && held.is_some_and(|h| !h.turns.is_empty() && h.turns == history);
    let new_text = if n_tools > 1 {
        let items: Vec<Value> = new.iter().map(|t| Value::String(t.text.clone())).collect();
        Value::Array(items).to_string()
    } else {
        new.first().map(|t| t.text.clone()).unwrap_or_default()
    };
    let (start, role, text) = if extends {
        (Start::Continue, if n_tools > 0 { "tool" } else { "user" }, new_text)
    } else if history.is_empty() {
        (Start::Fresh { keep_system: same_setup }, if n_tools > 0 { "tool" } else { "user" }, new_text)
    } else {
        (Start::Fresh { keep_system: same_setup }, "user", fold(history, new))
    };
    Plan { setup, start, role, text, turns }
}

/// The held conversation after a run that ended cleanly with `answer` (raw model text).
pub fn after(plan: &Plan, answer: &str) -> Held {
    let mut turns = plan.turns.clone();
    turns.push(Turn { role: "assistant".into(), text: canonical(answer, None) });
    Held { setup: plan.setup.clone(), turns }
}

fn turn_of(m: &Value) -> Turn {
    let role = m["role"].as_str().unwrap_or("user").to_owned();
    let content = m["content"].as_str().unwrap_or_default();
    let text = if role == "assistant" { canonical(content, m.get("tool_calls")) } else { content.to_owned() };
    Turn { role, text }
}

/// An assistant message as comparable text: visible content without `<think>` blocks, then each
/// tool call as compact JSON. The model's raw output and a client's echo of the parsed response
/// reduce to the same string.
pub fn canonical(content: &str, tool_calls: Option<&Value>) -> String {
    let visible = strip_think(content);
    let names: Vec<String> = match tool_calls.and_then(Value::as_array) {
        Some(calls) => calls.iter().filter_map(|c| c["function"]["name"].as_str().map(str::to_owned)).collect(),
        None => names_in(visible),
    };
    let (text, mut calls) = tools::parse(visible, &names);
    if let Some(list) = tool_calls.and_then(Value::as_array)
        && calls.is_empty()
    {
        calls = list
            .iter()
            .filter_map(|c| {
                let f = &c["function"];
                let arguments = match &f["arguments"] {
                    Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
                    v => v.clone(),
                };
                Some(tools::ToolCall { name: f["name"].as_str()?.to_owned(), arguments })
            })
            .collect();
    }
    let mut out = text.trim().to_owned();
    for c in calls {
        out.push('\n');
        out.push_str(&serde_json::json!({"name": c.name, "arguments": c.arguments}).to_string());
    }
    out
}

/// Function names written in `<tool_call>` blocks, so raw output parses without the tool list.
fn names_in(text: &str) -> Vec<String> {
    text.split("<tool_call>")
        .skip(1)
        .filter_map(|b| {
            let body = b.split("</tool_call>").next()?;
            serde_json::from_str::<Value>(body.trim()).ok()?.get("name")?.as_str().map(str::to_owned)
        })
        .collect()
}

/// Removes `<think>…</think>` blocks (an unclosed one runs to the end).
pub fn strip_think(s: &str) -> &str {
    match (s.find("<think>"), s.find("</think>")) {
        (Some(a), Some(b)) if a < b && s[..a].trim().is_empty() => s[b + "</think>".len()..].trim_start(),
        (Some(a), None) if s[..a].trim().is_empty() => "",
        _ => s,
    }
}

/// Earlier turns as a transcript ahead of the new message.
fn fold(history: &[Turn], new: &[Turn]) -> String {
    let mut s = String::from("The conversation so far:\n");
    for t in history.iter().chain(new.iter().filter(|t| t.role == "tool")) {
        let who = match t.role.as_str() {
            "assistant" => "Assistant",
            "tool" => "Tool result",
            _ => "User",
        };
        s.push_str(&format!("{who}: {}\n", t.text));
    }
    s.push('\n');
    if let Some(last) = new.last().filter(|t| t.role != "tool") {
        s.push_str(&last.text);
    } else {
        s.push_str("Continue the conversation using the tool results above.");
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn setup(s: &str) -> Setup {
        Setup { system: s.into(), tools: None }
    }

    #[test]
    fn first_request_is_fresh_then_extension_continues() {
        let m1 = [json!({"role": "user", "content": "hi"})];
        let p1 = plan(None, setup("S"), &m1);
        assert_eq!((p1.start, p1.role, p1.text.as_str()), (Start::Fresh { keep_system: false }, "user", "hi"));
        let held = after(&p1, "<think>\nhmm\n</think>\n\nhello there");
        let m2 = [
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "hello there"}),
            json!({"role": "user", "content": "more"}),
        ];
        let p2 = plan(Some(&held), setup("S"), &m2);
        assert_eq!((p2.start, p2.text.as_str()), (Start::Continue, "more"));
    }

    #[test]
    fn divergence_clears_and_folds() {
        let p1 = plan(None, setup("S"), &[json!({"role": "user", "content": "hi"})]);
        let held = after(&p1, "hello");
        let m = [
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "edited answer"}),
            json!({"role": "user", "content": "next"}),
        ];
        let p = plan(Some(&held), setup("S"), &m);
        assert_eq!(p.start, Start::Fresh { keep_system: true });
        assert!(p.text.contains("Assistant: edited answer") && p.text.ends_with("next"), "{}", p.text);
        let p = plan(Some(&held), setup("other"), &m[..1]);
        assert_eq!(p.start, Start::Fresh { keep_system: false });
    }

    #[test]
    fn tool_results_continue_as_tool_role() {
        let tools = Some(r#"[{"type":"function","function":{"name":"get_weather"}}]"#.to_owned());
        let s = Setup { system: String::new(), tools: tools.clone() };
        let p1 = plan(None, s.clone(), &[json!({"role": "user", "content": "weather in Paris?"})]);
        let held =
            after(&p1, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>");
        let m = [
            json!({"role": "user", "content": "weather in Paris?"}),
            json!({"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}),
            json!({"role": "tool", "content": "{\"temp\": 21}"}),
            json!({"role": "tool", "content": "{\"rain\": false}"}),
        ];
        let p = plan(Some(&held), s, &m);
        assert_eq!((p.start, p.role), (Start::Continue, "tool"));
        assert_eq!(p.text, r#"["{\"temp\": 21}","{\"rain\": false}"]"#);
    }

    #[test]
    fn strip_think_variants() {
        assert_eq!(strip_think("<think>a</think>\n\nb"), "b");
        assert_eq!(strip_think("<think>never closed"), "");
        assert_eq!(strip_think("plain"), "plain");
    }
}
