//! Prompt assembly: the chat template, function tools and the thinking switch.
//!
//! The vendor runtime applies the HF chat template captured at conversion; for the sim's
//! Qwen-style models that is ChatML. Only the pieces the runtime exposes are modelled:
//! `rkllm_set_chat_template` (system / prefix / postfix), `rkllm_set_function_tools` and
//! `RKLLMInput.enable_thinking`. The assembled text is what gets tokenized, counted against the
//! context and hashed into the answer, so template mistakes in the agent show up as different
//! token counts and outputs.
//!
//! ```text
//! new conversation: [system part] + prefix + text + postfix [+ "<think>\n\n</think>\n\n"]
//! continuing (KV not empty):         prefix + text + postfix [+ …]
//! role "tool":      text → "<" + tag + ">\n" + text + "\n</" + tag + ">"
//! ```

use serde_json::Value;

/// What Qwen3's template appends when thinking is switched off: an empty, closed think block.
pub(crate) const THINK_OFF: &str = "<think>\n\n</think>\n\n";
/// Tool-result tag when the caller gives none (every vendor demo uses this one).
pub(crate) const DEFAULT_TOOL_TAG: &str = "tool_response";

/// The per-handle template. `overridden` is set by `rkllm_set_chat_template`; after that the
/// vendor ignores `enable_thinking` (the caller encodes think tags itself), and so does the sim.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Template {
    pub system: String,
    pub prefix: String,
    pub postfix: String,
    pub overridden: bool,
}

impl Default for Template {
    /// ChatML as the conversion captured it for the sim models: no default system prompt.
    fn default() -> Self {
        Self {
            system: String::new(),
            prefix: "<|im_start|>user\n".to_owned(),
            postfix: "<|im_end|>\n<|im_start|>assistant\n".to_owned(),
            overridden: false,
        }
    }
}

/// One callable function, reduced to what the answer generator needs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ToolFn {
    pub name: String,
    /// `(property, JSON type)` of every required parameter, in `required` order.
    pub required: Vec<(String, String)>,
}

/// State set by `rkllm_set_function_tools`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tools {
    pub system: String,
    /// The tools JSON exactly as given; it is pasted into the system part verbatim.
    pub json: String,
    pub tag: String,
    pub functions: Vec<ToolFn>,
}

impl Tools {
    /// Parses the OpenAI-style tools array. Accepts both `{"type":"function","function":{…}}`
    /// entries and bare `{name, parameters}` objects, since callers produce both.
    pub(crate) fn parse(system: String, json: String, tag: String) -> Result<Self, String> {
        let value: Value = serde_json::from_str(&json).map_err(|e| format!("tools is not valid JSON: {e}"))?;
        let Value::Array(items) = value else {
            return Err("tools must be a JSON array".to_owned());
        };
        let functions = items
            .iter()
            .filter_map(|item| {
                let f = item.get("function").unwrap_or(item);
                let name = f.get("name")?.as_str()?.to_owned();
                let params = f.get("parameters");
                let props = params.and_then(|p| p.get("properties"));
                let required = params
                    .and_then(|p| p.get("required"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|p| (p.to_owned(), json_type(props.and_then(|ps| ps.get(p)))))
                    .collect();
                Some(ToolFn { name, required })
            })
            .collect();
        Ok(Self { system, json, tag, functions })
    }
}

/// The JSON Schema `type` of a property; for a type list the first non-null entry.
pub(crate) fn json_type(schema: Option<&Value>) -> String {
    match schema.and_then(|s| s.get("type")) {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => {
            ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null").to_owned()
        }
        _ => "null".to_owned(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    User,
    Tool,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Tool => "tool",
        }
    }
}

/// The text of one turn, split at the end of the system part (whose length `keep_system_prompt`
/// preserves when the KV cache is cleared).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Assembled {
    pub system: String,
    pub turn: String,
}

impl Assembled {
    pub(crate) fn text(&self) -> String {
        format!("{}{}", self.system, self.turn)
    }
}

/// One input of a run, as the template sees it.
pub(crate) struct TurnInput<'a> {
    pub role: Role,
    pub text: &'a str,
    pub enable_thinking: bool,
}

/// Builds the prompt text of one turn. `new_conversation` is true when the slot's KV cache is
/// empty: only then is the system part (template system or the tools section) prepended.
pub(crate) fn assemble(
    template: &Template,
    tools: Option<&Tools>,
    new_conversation: bool,
    model_thinks: bool,
    input: &TurnInput<'_>,
) -> Assembled {
    let system = match (new_conversation, tools) {
        (false, _) => String::new(),
        (true, Some(t)) => {
            format!("<|im_start|>system\n{}\n\n# Tools\n<tools>\n{}\n</tools><|im_end|>\n", t.system, t.json)
        }
        (true, None) => template.system.clone(),
    };
    let body = match input.role {
        Role::User => input.text.to_owned(),
        Role::Tool => {
            let tag = tools.map_or(DEFAULT_TOOL_TAG, |t| t.tag.as_str());
            format!("<{tag}>\n{}\n</{tag}>", input.text)
        }
    };
    let mut turn = format!("{}{body}{}", template.prefix, template.postfix);
    if model_thinks && !template.overridden && !input.enable_thinking {
        turn.push_str(THINK_OFF);
    }
    Assembled { system, turn }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str, enable_thinking: bool) -> TurnInput<'_> {
        TurnInput { role: Role::User, text, enable_thinking }
    }

    #[test]
    fn chatml_default_and_thinking_switch() {
        let t = Template::default();
        let a = assemble(&t, None, true, true, &user("Hi", false));
        assert_eq!(a.system, "");
        assert_eq!(a.turn, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
        let a = assemble(&t, None, true, true, &user("Hi", true));
        assert!(!a.turn.ends_with(THINK_OFF));
        let a = assemble(&t, None, true, false, &user("Hi", false));
        assert!(!a.turn.ends_with(THINK_OFF), "a non-thinking model has no think block");
    }

    #[test]
    fn override_disables_the_thinking_switch() {
        let t = Template { system: "S".into(), prefix: "[U]".into(), postfix: "[A]".into(), overridden: true };
        let a = assemble(&t, None, true, true, &user("x", false));
        assert_eq!(a.text(), "S[U]x[A]");
        assert_eq!(assemble(&t, None, false, true, &user("x", false)).text(), "[U]x[A]");
    }

    #[test]
    fn tools_section_and_tool_role() {
        let json = r#"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":["integer","null"]}},"required":["city","days"]}}}]"#;
        let tools = Tools::parse("Be brief.".into(), json.into(), "tool_response".into()).unwrap();
        assert_eq!(tools.functions[0].name, "get_weather");
        assert_eq!(
            tools.functions[0].required,
            [("city".to_owned(), "string".to_owned()), ("days".to_owned(), "integer".to_owned())]
        );
        let t = Template::default();
        let a = assemble(
            &t,
            Some(&tools),
            true,
            false,
            &TurnInput { role: Role::Tool, text: "[1]", enable_thinking: false },
        );
        assert_eq!(
            a.system,
            format!("<|im_start|>system\nBe brief.\n\n# Tools\n<tools>\n{json}\n</tools><|im_end|>\n")
        );
        assert_eq!(
            a.turn,
            "<|im_start|>user\n<tool_response>\n[1]\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(Tools::parse(String::new(), "{".into(), String::new()).is_err());
        assert!(Tools::parse(String::new(), "{}".into(), String::new()).is_err());
    }
}
