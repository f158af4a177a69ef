//! Chat-template pieces for `rkllm_set_chat_template`.
//!
//! The runtime's template is three strings — system block, prefix before each user message,
//! postfix after it — captured from the model's HF template at conversion. The only way to
//! give a model a different system prompt is to override all three, and after an override the
//! runtime's `enable_thinking` no longer works (docs/rkllm-abi.md §12), so for a thinking model the
//! agent writes Qwen3's "no thinking" marker into the postfix itself. The family comes from the
//! catalog or the names the model is known by (the file name it came as, the served name, its
//! aliases) — never from the path alone, which for a model in the content-addressed store is only
//! `blobs/sha256-<hex>`. A model of unknown family keeps its built-in template and gets the
//! system prompt folded into the user message instead.

/// Template families the agent can write for the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `<|im_start|>role\n…<|im_end|>` (Qwen 2/2.5/3, SmolLM, MiniCPM, InternLM2).
    ChatMl { thinking: bool },
    /// `<start_of_turn>user\n…<end_of_turn>` (Gemma 2/3).
    Gemma,
}

impl Family {
    /// From a catalog family and the names a model is known by, most telling first (the file
    /// name it was dropped in, pulled or assigned as, then the served name and aliases): the
    /// first name that, with the family, says something decides, so a served name such as
    /// `assistant` does not hide what the file name says, and a served name such as `qwen3:0.6b`
    /// still helps when the file name says nothing.
    pub fn detect(family: Option<&str>, names: &[&str]) -> Option<Self> {
        if names.is_empty() {
            return Self::detect_one(family, "");
        }
        names.iter().find_map(|n| Self::detect_one(family, n))
    }

    /// Lower-cased substrings of the family and one name.
    fn detect_one(family: Option<&str>, name: &str) -> Option<Self> {
        let hay = format!("{} {}", family.unwrap_or_default(), name).to_ascii_lowercase();
        if hay.contains("qwen3") || hay.contains("smollm3") {
            Some(Self::ChatMl { thinking: true })
        } else if ["qwen", "smollm", "chatml", "minicpm", "internlm"].iter().any(|k| hay.contains(k)) {
            Some(Self::ChatMl { thinking: false })
        } else if hay.contains("gemma") {
            Some(Self::Gemma)
        } else {
            None
        }
    }

    pub fn thinking(self) -> bool {
        matches!(self, Self::ChatMl { thinking: true })
    }

    /// `(system, prefix, postfix)` for `rkllm_set_chat_template`.
    pub fn template(self, system: &str, think: bool) -> (String, String, String) {
        match self {
            Self::ChatMl { thinking } => {
                let sys =
                    if system.is_empty() { String::new() } else { format!("<|im_start|>system\n{system}<|im_end|>\n") };
                let mut post = String::from("<|im_end|>\n<|im_start|>assistant\n");
                if thinking && !think {
                    post.push_str("<think>\n\n</think>\n\n");
                }
                (sys, "<|im_start|>user\n".into(), post)
            }
            // Gemma has no system role: its template puts the system text at the top of the
            // first user turn, which is what the system block does here.
            Self::Gemma => {
                let sys = if system.is_empty() { String::new() } else { format!("<start_of_turn>user\n{system}\n\n") };
                (sys, "<start_of_turn>user\n".into(), "<end_of_turn>\n<start_of_turn>model\n".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_and_thinking_postfix() {
        let f = Family::detect(None, &["Qwen3-0.6B-sim_w8a8_rk3588.rkllm"]).unwrap();
        assert!(f.thinking());
        let (s, p, post) = f.template("Be brief.", false);
        assert_eq!(s, "<|im_start|>system\nBe brief.<|im_end|>\n");
        assert_eq!(p, "<|im_start|>user\n");
        assert!(post.ends_with("</think>\n\n"));
        assert!(!f.template("", true).2.contains("think"));
        assert_eq!(Family::detect(Some("qwen2"), &["x.rkllm"]), Some(Family::ChatMl { thinking: false }));
        assert_eq!(Family::detect(None, &["gemma-3-1b_w8a8.rkllm"]), Some(Family::Gemma));
        assert_eq!(Family::detect(None, &["phi3.rkllm"]), None);
        assert_eq!(Family::detect(Some("qwen2"), &[]), Some(Family::ChatMl { thinking: false }));
    }

    /// A model in the store is a digest on disk; what it is comes from the names it has.
    #[test]
    fn detection_looks_past_a_name_that_says_nothing() {
        let blob = "sha256-2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
        assert_eq!(Family::detect(None, &[blob]), None);
        let thinking = Some(Family::ChatMl { thinking: true });
        assert_eq!(Family::detect(None, &["assistant.rkllm", "assistant", "qwen3:0.6b", blob]), thinking);
        assert_eq!(Family::detect(None, &["Qwen3-0.6B_w8a8_rk3588.rkllm", "gemma-named"]), thinking, "first wins");
    }
}
