//! Sampling parameters shared by every engine and both APIs.

/// Per-request sampling. Defaults follow llama.cpp's server (temperature 0.8, top_k 40,
/// top_p 0.95, min_p 0.05, no penalties) so that unset fields behave as users of llama.cpp and
/// Ollama expect.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    /// 1.0 = off.
    pub repeat_penalty: f32,
    /// Tokens the repeat/presence/frequency penalties look back over.
    pub repeat_last_n: i32,
    /// 0.0 = off.
    pub presence_penalty: f32,
    /// 0.0 = off.
    pub frequency_penalty: f32,
    /// `None` draws a fresh seed per request.
    pub seed: Option<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

/// A sampling value out of range; `param` is the request field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param} {rule}")]
pub struct SamplingError {
    pub param: &'static str,
    pub rule: &'static str,
}

fn bad(param: &'static str, rule: &'static str) -> Result<(), SamplingError> {
    Err(SamplingError { param, rule })
}

impl SamplingParams {
    /// Checks ranges so that bad values become a 400 naming the parameter instead of reaching
    /// llama.cpp (which asserts on some of them).
    pub fn validate(&self) -> Result<(), SamplingError> {
        let finite =
            |name: &'static str, v: f32| if v.is_finite() { Ok(()) } else { bad(name, "must be a finite number") };
        finite("temperature", self.temperature)?;
        finite("top_p", self.top_p)?;
        finite("min_p", self.min_p)?;
        finite("repeat_penalty", self.repeat_penalty)?;
        finite("presence_penalty", self.presence_penalty)?;
        finite("frequency_penalty", self.frequency_penalty)?;
        if !(0.0..=100.0).contains(&self.temperature) {
            return bad("temperature", "must be between 0 and 100");
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("top_p", "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", "must be between 0 and 1");
        }
        if self.repeat_penalty <= 0.0 {
            return bad("repeat_penalty", "must be greater than 0");
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return bad("presence_penalty", "must be between -2 and 2");
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return bad("frequency_penalty", "must be between -2 and 2");
        }
        if self.top_k < 0 {
            return bad("top_k", "must not be negative");
        }
        if self.repeat_last_n < -1 {
            return bad("repeat_last_n", "must be -1 or more");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_parameter() {
        assert!(SamplingParams::default().validate().is_ok());
        let bad = SamplingParams { top_p: 1.5, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().param, "top_p");
        assert_eq!(bad.validate().unwrap_err().to_string(), "top_p must be between 0 and 1");
        let bad = SamplingParams { temperature: f32::NAN, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().param, "temperature");
    }
}
