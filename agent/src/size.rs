//! Sizes on the command line (`6GiB`, `512MiB`, `2G`, bytes), pure.

/// A size flag's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// `auto`: the caller decides (e.g. 80 % of RAM).
    Auto,
    Bytes(u64),
}

/// The value did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("invalid size {0:?}: expected a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)")]
    Number(String),
    #[error("invalid size unit {unit:?} in {value:?}")]
    Unit { unit: String, value: String },
}

impl Size {
    pub fn parse(s: &str) -> Result<Self, SizeError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().map_err(|_| SizeError::Number(s.to_owned()))?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "kib" => 1024.0,
            "m" | "mb" => 1e6,
            "mib" => 1024.0 * 1024.0,
            "g" | "gb" => 1e9,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "t" | "tb" => 1e12,
            "tib" => 1024f64.powi(4),
            other => return Err(SizeError::Unit { unit: other.to_owned(), value: s.to_owned() }),
        };
        Ok(Self::Bytes((n * mult) as u64))
    }

    /// The bytes, with `auto` resolved by `auto`.
    pub fn or_auto(self, auto: impl FnOnce() -> u64) -> u64 {
        match self {
            Self::Auto => auto(),
            Self::Bytes(b) => b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(Size::parse("512MiB").unwrap(), Size::Bytes(512 * 1024 * 1024));
        assert_eq!(Size::parse("2G").unwrap(), Size::Bytes(2_000_000_000));
        assert_eq!(Size::parse("1.5gib").unwrap(), Size::Bytes(1_610_612_736));
        assert_eq!(Size::parse("1000").unwrap(), Size::Bytes(1000));
        assert_eq!(Size::parse("auto").unwrap(), Size::Auto);
        assert!(matches!(Size::parse("5 parsecs"), Err(SizeError::Unit { .. })));
        assert!(matches!(Size::parse("GiB"), Err(SizeError::Number(_))));
    }
}
