//! The routing key of a request for `PrefixAffinity`, pure: a client's routing header wins;
//! otherwise the prompt's start as sent — system prompt(s), then the first user turn — cut to the
//! ModelDeployment's `routing.prefixChars` characters. Consecutive turns of one conversation and
//! requests sharing a system prompt then map to the same key, and so to the board whose KV or
//! prompt cache already holds that prefix.

use serde_json::Value;

/// Header a client may send to pick its own affinity key (e.g. a session id).
pub const ROUTING_KEY_HEADER: &str = "x-routing-key";

/// Text of a message's `content`: a string, or the text parts of an array (OpenAI multi-part).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// The affinity key of a request body (OpenAI chat/completions, Ollama chat/generate), at most
/// `prefix_chars` characters; `header` (the routing-key header's value) overrides it.
pub fn affinity_key(header: Option<&str>, body: &Value, prefix_chars: usize) -> String {
    if let Some(h) = header.map(str::trim).filter(|h| !h.is_empty()) {
        return format!("key:{h}");
    }
    let mut text = String::new();
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        let role = |m: &Value| m.get("role").and_then(Value::as_str).unwrap_or_default().to_owned();
        for m in messages.iter().filter(|m| matches!(role(m).as_str(), "system" | "developer")) {
            text.push_str(&content_text(m.get("content").unwrap_or(&Value::Null)));
            text.push('\n');
        }
        if let Some(first_user) = messages.iter().find(|m| role(m) == "user") {
            text.push_str(&content_text(first_user.get("content").unwrap_or(&Value::Null)));
        }
    } else {
        // Ollama generate carries its system prompt beside the prompt.
        if let Some(s) = body.get("system").and_then(Value::as_str) {
            text.push_str(s);
            text.push('\n');
        }
        match body.get("prompt") {
            Some(Value::String(p)) => text.push_str(p),
            // OpenAI completions may send a list of prompts: the first decides.
            Some(Value::Array(ps)) => text.push_str(ps.first().and_then(Value::as_str).unwrap_or_default()),
            _ => {}
        }
    }
    text.chars().take(prefix_chars.max(1)).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn system_then_first_user_turn_cut_to_prefix_chars() {
        let turn1 = json!({"messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Plan a trip to Lisbon"},
        ]});
        let turn2 = json!({"messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Plan a trip to Lisbon"},
            {"role": "assistant", "content": "Day 1: ..."},
            {"role": "user", "content": "Make it cheaper"},
        ]});
        assert_eq!(affinity_key(None, &turn1, 1024), "You are terse.\nPlan a trip to Lisbon");
        assert_eq!(affinity_key(None, &turn1, 1024), affinity_key(None, &turn2, 1024), "one conversation, one key");
        assert_eq!(affinity_key(None, &turn1, 7), "You are");
    }

    #[test]
    fn multipart_content_prompts_and_the_header() {
        let parts =
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hé"}, {"type": "image_url"}]}]});
        assert_eq!(affinity_key(None, &parts, 10), "hé");
        let generate = json!({"system": "S", "prompt": "P"});
        assert_eq!(affinity_key(None, &generate, 10), "S\nP");
        let completions = json!({"prompt": ["first", "second"]});
        assert_eq!(affinity_key(None, &completions, 10), "first");
        assert_eq!(affinity_key(Some(" session-42 "), &generate, 10), "key:session-42");
        assert_eq!(affinity_key(Some(""), &generate, 10), "S\nP", "an empty header does not count");
    }
}
