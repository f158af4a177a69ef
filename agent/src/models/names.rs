//! Friendly model names derived from file names (pure).
//!
//! Vendor and converter file names pack build details after the model's own name:
//! `Qwen_Qwen3-0.6B-w8a8-opt0-hybrid0-npu3-ctx16384-rk3588.rkllm` is `qwen3-0.6b`, converted for
//! a 16384-token context on the RK3588. Users type the short name; the details become metadata.

/// What a file name says about the model inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName {
    /// Lower-case friendly name, e.g. `qwen3-0.6b`.
    pub name: String,
    /// Context length from a `ctxNNNN` marker.
    pub context: Option<u32>,
    /// Target SoC from an `rkNNNN` marker.
    pub soc: Option<String>,
    /// Quantisation / dtype marker (`w8a8`, `q4_k_m`, …), lower case.
    pub quant: Option<String>,
}

/// Context assumed when neither the file name, the catalog nor the config gives one.
pub const DEFAULT_CONTEXT: u32 = 4096;

pub fn parse_file_name(file: &str) -> ParsedName {
    let stem = file.strip_suffix(".rkllm").or_else(|| file.strip_suffix(".gguf")).unwrap_or(file);
    let stem = strip_org_prefix(stem);
    let mut parts = Vec::new();
    let mut context = None;
    let mut soc = None;
    let mut quant = None;
    let mut cut = false;
    for seg in split_segments(stem) {
        let lower = seg.to_ascii_lowercase();
        if let Some(n) = lower.strip_prefix("ctx").and_then(|d| d.parse::<u32>().ok()) {
            context = Some(n);
            cut = true;
            continue;
        }
        if is_soc(&lower) {
            soc = Some(lower);
            cut = true;
            continue;
        }
        if is_quant(&lower) {
            quant.get_or_insert(lower);
            cut = true;
            continue;
        }
        if is_build_marker(&lower) {
            cut = true;
            continue;
        }
        if !cut {
            parts.push(lower);
        }
    }
    let name = if parts.is_empty() { stem.to_ascii_lowercase() } else { parts.join("-") };
    ParsedName { name, context, soc, quant }
}

/// `Org_Model-…` → `Model-…`: an organisation prefix has no `-` or `.` of its own.
fn strip_org_prefix(stem: &str) -> &str {
    match stem.split_once('_') {
        Some((org, rest)) if !org.is_empty() && !rest.is_empty() && !org.contains(['-', '.']) && rest.contains('-') => {
            rest
        }
        _ => stem,
    }
}

/// Splits on `-` and `_`, and on a `.` that starts a quantisation suffix (`Instruct.Q4_1`), but not on
/// the `.` of a size such as `0.6B`.
fn split_segments(stem: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for seg in stem.split('-') {
        let mut rest = seg;
        while let Some(i) = rest.find('.') {
            let (head, tail) = (&rest[..i], &rest[i + 1..]);
            if is_quant(&tail.to_ascii_lowercase()) || tail.eq_ignore_ascii_case("gguf") {
                out.push(head);
                rest = tail;
            } else {
                break;
            }
        }
        // `it_w8a8_rk3588`: underscores separate markers too, but `q4_k_m` is one marker.
        if is_quant(&rest.to_ascii_lowercase()) {
            out.push(rest);
        } else {
            out.extend(rest.split('_'));
        }
    }
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

fn is_soc(s: &str) -> bool {
    s.strip_prefix("rk").is_some_and(|d| d.len() == 4 && d.bytes().all(|b| b.is_ascii_digit()))
}

fn is_quant(s: &str) -> bool {
    let digit_after = |p: &str| s.strip_prefix(p).and_then(|r| r.bytes().next()).is_some_and(|b| b.is_ascii_digit());
    // w8a8, w4a16, w8a8_g128
    let wa = s.starts_with('w')
        && s[1..].split_once('a').is_some_and(|(w, a)| {
            !w.is_empty()
                && w.bytes().all(|b| b.is_ascii_digit())
                && a.bytes().next().is_some_and(|b| b.is_ascii_digit())
        });
    wa || digit_after("q")
        || digit_after("iq")
        || matches!(s, "f16" | "f32" | "bf16" | "fp16" | "fp32" | "int8" | "int4")
}

fn is_build_marker(s: &str) -> bool {
    let num_after = |p: &str| s.strip_prefix(p).is_some_and(|r| r.bytes().all(|b| b.is_ascii_digit()));
    num_after("opt") || num_after("hybrid") || num_after("npu") || matches!(s, "gguf" | "rkllm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_rkllm_name() {
        let p = parse_file_name("Qwen_Qwen3-0.6B-w8a8-opt0-hybrid0-npu3-ctx16384-rk3588.rkllm");
        assert_eq!(p.name, "qwen3-0.6b");
        assert_eq!(p.context, Some(16384));
        assert_eq!(p.soc.as_deref(), Some("rk3588"));
        assert_eq!(p.quant.as_deref(), Some("w8a8"));
    }

    #[test]
    fn gguf_names() {
        let p = parse_file_name("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!((p.name.as_str(), p.context, p.quant.as_deref()), ("smollm2-135m-instruct", None, Some("q4_1")));
        let p = parse_file_name("gemma-3-270m-q4_k_m.gguf");
        assert_eq!((p.name.as_str(), p.quant.as_deref()), ("gemma-3-270m", Some("q4_k_m")));
    }

    #[test]
    fn other_vendor_names() {
        assert_eq!(parse_file_name("gemma-3-1b-it_w8a8_rk3588.rkllm").name, "gemma-3-1b-it");
        assert_eq!(parse_file_name("Qwen3-4B-rk3588-w8a8-opt-1-hybrid-ratio-0.0.rkllm").name, "qwen3-4b");
        assert_eq!(parse_file_name("plain.gguf").name, "plain");
        assert_eq!(
            parse_file_name("DeepSeek-R1-Distill-Qwen-1.5B_W8A8_RK3588.rkllm").name,
            "deepseek-r1-distill-qwen-1.5b"
        );
    }
}
