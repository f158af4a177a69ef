//! JSON output checks for engines that cannot constrain decoding (the NPU runtime has no
//! grammar sampler). The answer is parsed, checked against the requested schema, and a failing
//! answer is retried once with the reason (see `serve::running`). The checker covers the
//! keywords structured-output requests use in practice — `type`, `properties`, `required`,
//! `items`, `enum`, `const`, `additionalProperties: false` — and ignores the rest, so it never
//! rejects an answer for a keyword it does not understand.

use serde_json::Value;

/// Extracts the JSON value from an answer (a surrounding ```json fence is allowed) and checks it.
/// Returns the JSON text to give the client.
pub fn check(answer: &str, schema: Option<&Value>) -> Result<String, String> {
    let t = answer.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.strip_suffix("```"))
        .map_or(t, str::trim);
    let v: Value = serde_json::from_str(t).map_err(|e| format!("not valid JSON: {e}"))?;
    match schema {
        Some(s) => validate(&v, s, "$")?,
        None if !v.is_object() => return Err("not a JSON object".into()),
        None => {}
    }
    Ok(t.to_owned())
}

fn type_ok(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn validate(v: &Value, s: &Value, at: &str) -> Result<(), String> {
    match &s["type"] {
        Value::String(t) if !type_ok(v, t) => return Err(format!("{at} should be of type {t}")),
        Value::Array(ts) if !ts.iter().filter_map(Value::as_str).any(|t| type_ok(v, t)) => {
            return Err(format!("{at} has none of the types {}", s["type"]));
        }
        _ => {}
    }
    if let Some(e) = s["enum"].as_array()
        && !e.contains(v)
    {
        return Err(format!("{at} is not one of {}", s["enum"]));
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        return Err(format!("{at} should be {c}"));
    }
    if let Some(obj) = v.as_object() {
        for r in s["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                return Err(format!("{at} is missing required property {r:?}"));
            }
        }
        let props = s["properties"].as_object();
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(val, ps, &format!("{at}.{k}"))?,
                None if s["additionalProperties"] == Value::Bool(false) => {
                    return Err(format!("{at} has unexpected property {k:?}"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(x, items, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_schemas_and_fences() {
        assert_eq!(check("```json\n{\"a\": 1}\n```", None).unwrap(), "{\"a\": 1}");
        assert!(check("[1]", None).is_err());
        assert!(check("nope", None).unwrap_err().contains("not valid JSON"));
        let s = json!({"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}},
                       "additionalProperties": false});
        assert!(check("{\"answer\": 4}", Some(&s)).is_ok());
        assert!(check("{\"answer\": \"4\"}", Some(&s)).unwrap_err().contains("$.answer should be of type integer"));
        assert!(check("{}", Some(&s)).unwrap_err().contains("missing required property \"answer\""));
        assert!(check("{\"answer\": 4, \"x\": 1}", Some(&s)).unwrap_err().contains("unexpected property"));
        let e = json!({"type": "array", "items": {"enum": ["a", "b"]}});
        assert!(check("[\"a\", \"c\"]", Some(&e)).unwrap_err().contains("$[1]"));
    }
}
