//! Chat messages from either API brought to the one shape templates and engines expect
//! (pure): `content` a string, tool-call arguments as objects, `developer` treated as `system`.

use serde_json::{Value, json};

use super::ServeError;

/// Validates chat messages from either API and brings them to the shape templates expect:
/// `content` a string, tool-call arguments as objects, `developer` treated as `system`.
pub fn normalize_messages(raw: &[Value]) -> Result<Vec<Value>, ServeError> {
    if raw.is_empty() {
        return Err(ServeError::invalid("messages", "messages must not be empty"));
    }
    raw.iter().enumerate().map(|(i, m)| normalize_message(i, m)).collect()
}

fn normalize_message(i: usize, m: &Value) -> Result<Value, ServeError> {
    let obj =
        m.as_object().ok_or_else(|| ServeError::invalid("messages", format!("messages[{i}] must be an object")))?;
    let role = obj
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| ServeError::invalid("messages", format!("messages[{i}].role is required")))?;
    let role = match role {
        "developer" => "system",
        "system" | "user" | "assistant" | "tool" => role,
        other => {
            return Err(ServeError::invalid(
                "messages",
                format!("messages[{i}].role '{other}' is not one of system, user, assistant, tool"),
            ));
        }
    };
    if obj.get("images").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        return Err(ServeError::invalid("messages", "images are not supported by this model"));
    }
    let content = match obj.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => s.push_str(p.get("text").and_then(Value::as_str).unwrap_or_default()),
                    Some(t) => {
                        return Err(ServeError::invalid(
                            "messages",
                            format!("messages[{i}]: content part type '{t}' is not supported"),
                        ));
                    }
                    None => {
                        return Err(ServeError::invalid(
                            "messages",
                            format!("messages[{i}]: content part without a type"),
                        ));
                    }
                }
            }
            s
        }
        Some(_) => {
            return Err(ServeError::invalid(
                "messages",
                format!("messages[{i}].content must be a string or a list of parts"),
            ));
        }
    };
    let mut out = json!({"role": role, "content": content});
    if let Some(calls) = obj.get("tool_calls").and_then(Value::as_array) {
        let calls: Vec<Value> = calls
            .iter()
            .map(|c| {
                let f = c.get("function").cloned().unwrap_or_default();
                let args = match f.get("arguments") {
                    Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
                    Some(v) => v.clone(),
                    None => json!({}),
                };
                json!({"type": "function", "id": c.get("id"), "function": {"name": f.get("name"), "arguments": args}})
            })
            .collect();
        if content.is_empty() {
            // Templates without tool support still see what the assistant did.
            let blocks: Vec<String> = calls
                .iter()
                .map(|c| {
                    format!(
                        "<tool_call>\n{}\n</tool_call>",
                        json!({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})
                    )
                })
                .collect();
            out["content"] = Value::String(blocks.join("\n"));
        }
        out["tool_calls"] = Value::Array(calls);
    }
    for key in ["name", "tool_call_id", "tool_name"] {
        if let Some(v) = obj.get(key) {
            out[key] = v.clone();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_normalised() {
        let m = normalize_messages(&[
            json!({"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief"}]}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}),
            json!({"role": "tool", "content": "42", "tool_call_id": "c1"}),
        ])
        .unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief"}));
        assert_eq!(m[1]["tool_calls"][0]["function"]["arguments"], json!({"a": 1}));
        assert!(m[1]["content"].as_str().unwrap().contains("<tool_call>"));
        assert_eq!(m[2]["tool_call_id"], "c1");
    }

    #[test]
    fn bad_messages_name_the_problem() {
        assert!(normalize_messages(&[]).is_err());
        let e = normalize_messages(&[json!({"role": "wizard", "content": "x"})]).unwrap_err();
        assert!(e.to_string().contains("wizard"));
        let e = normalize_messages(&[json!({"role": "user", "content": [{"type": "image_url"}]})]).unwrap_err();
        assert!(e.to_string().contains("image_url"));
        assert!(normalize_messages(&[json!("hi")]).is_err());
    }
}
