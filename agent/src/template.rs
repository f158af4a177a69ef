//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template`) rendered with
//! minijinja the way Hugging Face transformers renders it, or a built-in template when the file
//! has none. llama.cpp's `llama_chat_apply_template` only pattern-matches known templates and
//! drops details such as SmolLM2's default system prompt, so it is not used.

use minijinja::{Environment, Error, ErrorKind, Value as JValue, context};
use serde_json::Value;

/// ChatML, the fallback for models without a template of their own.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Gemma's turn format. System text joins the first user turn; the assistant is `model`. The
/// tokenizer adds `<bos>`.
pub const GEMMA: &str = concat!(
    "{%- set ns = namespace(sys='') -%}",
    "{%- for m in messages -%}",
    "{%- if m['role'] == 'system' -%}{%- set ns.sys = ns.sys + m['content'] + '\\n\\n' -%}",
    "{%- else -%}",
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\\n' }}",
    "{%- if m['role'] != 'assistant' -%}{{ ns.sys }}{%- set ns.sys = '' -%}{%- endif -%}",
    "{{ m['content'] | trim }}{{ '<end_of_turn>\\n' }}",
    "{%- endif -%}",
    "{%- endfor -%}",
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}",
);

/// The built-in template for an architecture without an embedded one.
pub fn builtin_for(arch: Option<&str>) -> &'static str {
    match arch {
        Some(a) if a.starts_with("gemma") => GEMMA,
        _ => CHATML,
    }
}

/// RKLLM-style three-part templates rendered for a GGUF model: `system` once, then each user (or
/// tool) message between `prefix` and `postfix` (request system messages join the first one),
/// each assistant turn followed by the end-of-sequence token — the same text the NPU runtime's
/// KV cache holds for a conversation with that template. The parts are context variables, so
/// they need no escaping.
pub const PARTS: &str = concat!(
    "{%- set ns = namespace(sys='', first=true) -%}",
    "{%- for m in messages if m['role'] == 'system' -%}{%- set ns.sys = ns.sys + m['content'] + '\n\n' -%}{%- endfor -%}",
    "{{ parts_system }}",
    "{%- for m in messages -%}",
    "{%- if m['role'] == 'user' or m['role'] == 'tool' -%}",
    "{{ parts_prefix }}{%- if ns.first -%}{{ ns.sys }}{%- set ns.first = false -%}{%- endif -%}{{ m['content'] }}{{ parts_postfix }}",
    "{%- elif m['role'] == 'assistant' -%}{{ m['content'] }}{{ eos_token }}",
    "{%- endif -%}",
    "{%- endfor -%}",
);

/// A template that does not compile, or a conversation it cannot render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("invalid chat template: {0}")]
    Compile(String),
    #[error("chat template failed: {0}")]
    Render(String),
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The parts of a [`PARTS`] template.
    parts: Option<(String, String, String)>,
    /// Whether the template reads `tools` itself; otherwise tools are described in the system
    /// prompt by [`crate::tools`].
    pub handles_tools: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("handles_tools", &self.handles_tools).finish()
    }
}

fn raise_exception(msg: String) -> Result<JValue, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(fmt: String) -> String {
    // Templates use this for "today's date" in system prompts; a fixed UTC rendering of the
    // current day is enough (no timezone database needed).
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    fmt.replace("%Y", &y.to_string())
        .replace("%m", &format!("{m:02}"))
        .replace("%d", &format!("{d:02}"))
        .replace("%B", MONTHS[(m - 1) as usize])
        .replace("%b", &MONTHS[(m - 1) as usize][..3])
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl ChatTemplate {
    pub fn new(source: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_owned()).map_err(|e| TemplateError::Compile(e.to_string()))?;
        Ok(Self { env, parts: None, handles_tools: source.contains("tools") })
    }

    /// A template from RKLLM-style parts (see [`PARTS`]).
    pub fn from_parts(system: &str, prefix: &str, postfix: &str) -> Result<Self, TemplateError> {
        let mut t = Self::new(PARTS)?;
        t.parts = Some((system.to_owned(), prefix.to_owned(), postfix.to_owned()));
        Ok(t)
    }

    /// Renders `messages` (OpenAI-shaped JSON objects) into prompt text.
    pub fn render(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
        add_generation_prompt: bool,
        bos: &str,
        eos: &str,
    ) -> Result<String, TemplateError> {
        let tmpl = self.env.get_template("chat").map_err(|e| TemplateError::Render(e.to_string()))?;
        let tools = tools.filter(|_| self.handles_tools).map(JValue::from_serialize);
        let (ps, pp, pq) = self.parts.clone().unwrap_or_default();
        tmpl.render(context! {
            messages => JValue::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => bos,
            eos_token => eos,
            tools => tools,
            parts_system => ps,
            parts_prefix => pp,
            parts_postfix => pq,
        })
        .map_err(|e| TemplateError::Render(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The template embedded in SmolLM2-135M-Instruct's GGUF (ChatML with a default system prompt).
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn three_part_templates_render_like_the_npu_runtime() {
        let t = ChatTemplate::from_parts("<sys>", "<u>", "</u><a>").unwrap();
        let msgs = [
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "Hi"}),
            json!({"role": "assistant", "content": "Hello"}),
            json!({"role": "user", "content": "Bye"}),
        ];
        let out = t.render(&msgs, None, true, "", "<eos>").unwrap();
        assert_eq!(out, "<sys><u>Be brief.\n\nHi</u><a>Hello<eos><u>Bye</u><a>");
    }

    #[test]
    fn smollm2_template_adds_its_default_system_prompt() {
        let t = ChatTemplate::new(SMOLLM2).unwrap();
        let out = t.render(&[json!({"role": "user", "content": "Hi"})], None, true, "", "").unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn gemma_builtin_merges_system_into_first_user_turn() {
        let t = ChatTemplate::new(builtin_for(Some("gemma3"))).unwrap();
        let msgs = [
            json!({"role": "system", "content": "You are terse."}),
            json!({"role": "user", "content": "Hi"}),
            json!({"role": "assistant", "content": "Hello."}),
            json!({"role": "user", "content": "Bye"}),
        ];
        let out = t.render(&msgs, None, true, "<bos>", "<eos>").unwrap();
        assert_eq!(
            out,
            "<start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn hf_helpers_work_and_errors_are_reported() {
        let t =
            ChatTemplate::new("{{ messages[0]['content'].strip() }}{{ raise_exception('no') if messages|length > 1 }}")
                .unwrap();
        assert_eq!(t.render(&[json!({"role": "user", "content": " x "})], None, false, "", "").unwrap(), "x");
        let err = t.render(&[json!({"content": "a"}), json!({"content": "b"})], None, false, "", "").unwrap_err();
        assert!(err.to_string().contains("no"), "{err}");
        assert!(ChatTemplate::new("{% if %}").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_783), (2026, 11, 26));
    }
}
