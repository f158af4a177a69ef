//! Function calling for models whose template does not describe tools itself (pure).
//!
//! Tools are described in the system prompt in the Hermes / Qwen convention, which small
//! instruction-tuned models follow best, and calls are parsed back from the output:
//! `<tool_call>{"name": …, "arguments": {…}}</tool_call>` blocks, or — as Llama 3 and many
//! small models answer — a bare JSON object (or array of objects) with `name` and
//! `arguments`/`parameters`.

use serde_json::Value;

/// A call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
}

/// System-prompt text describing `tools` (an OpenAI `tools` array).
pub fn describe(tools: &Value) -> String {
    let list: Vec<Value> = tools
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t.get("function").cloned().unwrap_or_else(|| t.clone()))
        .collect();
    format!(
        "You can call functions. The available functions are:\n<tools>\n{}\n</tools>\n\
To call a function, answer with one block per call and nothing else:\n\
<tool_call>\n{{\"name\": \"<function name>\", \"arguments\": {{<arguments as JSON>}}}}\n</tool_call>",
        list.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
    )
}

/// Splits model output into remaining text and tool calls. Calls to names not in `known` are
/// left as text (a model inventing a function is answering in prose as far as the API goes).
pub fn parse(output: &str, known: &[String]) -> (String, Vec<ToolCall>) {
    let mut calls = Vec::new();
    let mut text = String::new();
    let mut rest = output;
    while let Some(start) = rest.find("<tool_call>") {
        text.push_str(&rest[..start]);
        let after = &rest[start + "<tool_call>".len()..];
        let (body, next) = match after.find("</tool_call>") {
            Some(end) => (&after[..end], &after[end + "</tool_call>".len()..]),
            None => (after, ""),
        };
        match serde_json::from_str::<Value>(body.trim()).ok().and_then(|v| to_call(&v, known)) {
            Some(c) => calls.push(c),
            None => text.push_str(&rest[start..rest.len() - next.len()]),
        }
        rest = next;
    }
    text.push_str(rest);
    if calls.is_empty() {
        let trimmed = strip_code_fence(text.trim());
        if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
            let bare: Vec<ToolCall> = match &v {
                Value::Array(items) => items.iter().filter_map(|i| to_call(i, known)).collect(),
                other => to_call(other, known).into_iter().collect(),
            };
            if !bare.is_empty() {
                return (String::new(), bare);
            }
        }
    }
    (text.trim().to_owned(), calls)
}

fn strip_code_fence(s: &str) -> &str {
    s.strip_prefix("```json").or_else(|| s.strip_prefix("```")).and_then(|r| r.strip_suffix("```")).map_or(s, str::trim)
}

fn to_call(v: &Value, known: &[String]) -> Option<ToolCall> {
    let name = v.get("name")?.as_str()?;
    if !known.iter().any(|k| k == name) {
        return None;
    }
    let arguments = match v.get("arguments").or_else(|| v.get("parameters")) {
        // Some models write the arguments as a JSON string.
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        Some(a) => a.clone(),
        None => Value::Object(Default::default()),
    };
    Some(ToolCall { name: name.to_owned(), arguments })
}

/// A JSON schema for "one call to one of these functions", used to force a call (OpenAI
/// `tool_choice: "required"` or a named function) with a grammar, as llama.cpp's server does.
/// `only` restricts it to one function. `None` when no function matches.
pub fn call_schema(tools: &Value, only: Option<&str>) -> Option<Value> {
    let variants: Vec<Value> = tools
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t.get("function").unwrap_or(t))
        .filter(|f| only.is_none_or(|o| f.get("name").and_then(Value::as_str) == Some(o)))
        .filter_map(|f| {
            let name = f.get("name")?.as_str()?;
            let params =
                f.get("parameters").filter(|p| p.is_object()).cloned().unwrap_or(serde_json::json!({"type": "object"}));
            Some(serde_json::json!({
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": params},
                "required": ["name", "arguments"],
            }))
        })
        .collect();
    match variants.len() {
        0 => None,
        1 => variants.into_iter().next(),
        _ => Some(serde_json::json!({"anyOf": variants})),
    }
}

/// Names of the functions in an OpenAI `tools` array.
pub fn names(tools: &Value) -> Vec<String> {
    tools
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("function").unwrap_or(t).get("name")?.as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn known() -> Vec<String> {
        vec!["get_weather".into()]
    }

    #[test]
    fn hermes_blocks_are_parsed_and_removed() {
        let out = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let (text, calls) = parse(out, &known());
        assert_eq!(text, "Let me check.");
        assert_eq!(calls, vec![ToolCall { name: "get_weather".into(), arguments: json!({"city": "Paris"}) }]);
    }

    #[test]
    fn bare_json_and_string_arguments() {
        let (text, calls) =
            parse("```json\n{\"name\":\"get_weather\",\"parameters\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}\n```", &known());
        assert_eq!(text, "");
        assert_eq!(calls[0].arguments, json!({"city": "Oslo"}));
    }

    #[test]
    fn unknown_functions_and_broken_json_stay_text() {
        let (text, calls) = parse("<tool_call>{\"name\":\"rm_rf\"}</tool_call>", &known());
        assert!(calls.is_empty());
        assert!(text.contains("rm_rf"));
        let (text, calls) = parse("<tool_call>{not json", &known());
        assert!(calls.is_empty());
        assert_eq!(text, "<tool_call>{not json");
    }

    #[test]
    fn forced_call_schema() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
                           {"type": "function", "function": {"name": "other"}}]);
        let one = call_schema(&tools, Some("get_weather")).unwrap();
        assert_eq!(one["properties"]["name"]["const"], "get_weather");
        assert_eq!(call_schema(&tools, None).unwrap()["anyOf"].as_array().unwrap().len(), 2);
        assert!(call_schema(&tools, Some("missing")).is_none());
    }

    #[test]
    fn description_lists_functions() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
        assert!(describe(&tools).contains("\"name\":\"get_weather\""));
        assert_eq!(names(&tools), known());
    }
}
