//! Which runtime ABI a `librkllmrt.so` speaks.
//!
//! The ABI changes at almost every minor release and a binding for the wrong one segfaults
//! (rknn-llm #509), so the agent never guesses: it reads the version the library embeds (the
//! vendor prints `rkllm-runtime version: X.Y.Z` at init, and the text is in the binary) before
//! loading it, and refuses anything it has no binding for. `--rkllm-abi` is only a fallback
//! for a library whose version cannot be read; it may not contradict a version that was read.

use std::fmt;

/// The binding modules the agent has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// 1.2.1–1.2.3.
    V1_2,
    /// 1.3.0.
    V1_3,
}

impl Abi {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_2 => "1.2",
            Self::V1_3 => "1.3",
        }
    }

    /// The ABI a runtime version speaks, if the agent has a binding for it.
    pub fn for_version(v: Version) -> Option<Self> {
        match (v.0, v.1, v.2) {
            (1, 2, 1..=3) => Some(Self::V1_2),
            (1, 3, 0) => Some(Self::V1_3),
            _ => None,
        }
    }
}

impl fmt::Display for Abi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--rkllm-abi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiChoice {
    Auto,
    Fixed(Abi),
}

impl std::str::FromStr for AbiChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "1.2" => Ok(Self::Fixed(Abi::V1_2)),
            "1.3" => Ok(Self::Fixed(Abi::V1_3)),
            other => Err(format!("unknown RKLLM ABI {other:?}: expected auto, 1.2 or 1.3")),
        }
    }
}

/// A runtime version `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

const MARKER: &[u8] = b"rkllm-runtime version: ";

/// Finds the embedded `rkllm-runtime version: X.Y.Z` text in a library's bytes. A marker
/// followed by a format directive (`%s`) is skipped; the first complete version wins.
pub fn embedded_version(bytes: &[u8]) -> Option<Version> {
    let mut from = 0;
    while let Some(at) = find(&bytes[from..], MARKER) {
        let start = from + at + MARKER.len();
        if let Some(v) = parse_version(&bytes[start..]) {
            return Some(v);
        }
        from = start;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses `X.Y.Z` at the start of `b` (digits and dots, at most 16 bytes).
fn parse_version(b: &[u8]) -> Option<Version> {
    let end = b.iter().take(16).position(|c| !(c.is_ascii_digit() || *c == b'.')).unwrap_or(b.len().min(16));
    let s = std::str::from_utf8(&b[..end]).ok()?.trim_end_matches('.');
    let mut it = s.split('.').map(|p| p.parse::<u32>().ok());
    let v = Version(it.next()??, it.next()??, it.next().flatten().unwrap_or(0));
    Some(v)
}

/// Why no binding fits the library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    #[error("{lib} is RKLLM runtime {version}; this agent supports 1.2.1–1.2.3 (ABI 1.2) and 1.3.0 (ABI 1.3)")]
    Unsupported { lib: String, version: Version },
    #[error(
        "--rkllm-abi {asked} contradicts {lib}, which is RKLLM runtime {version} (ABI {found}); a wrong binding \
         would crash: drop the override or point --rkllm-lib at a {asked} runtime"
    )]
    Contradicts { lib: String, version: Version, asked: Abi, found: Abi },
    #[error(
        "{lib} is RKLLM runtime {version}, which has no binding here (--rkllm-abi {asked} cannot change that); \
         supported: 1.2.1–1.2.3 and 1.3.0"
    )]
    NoBinding { lib: String, version: Version, asked: Abi },
    #[error(
        "could not find the runtime version in {lib} (no \"rkllm-runtime version: X.Y.Z\" text); if you know \
         it, pass --rkllm-abi 1.2 or 1.3"
    )]
    Unknown { lib: String },
}

/// Decides the ABI from what the library says and what the operator asked for.
pub fn choose(found: Option<Version>, choice: AbiChoice, lib: &str) -> Result<(Abi, Option<Version>), AbiError> {
    let lib = lib.to_owned();
    match (found, choice) {
        (Some(v), AbiChoice::Auto) => {
            Abi::for_version(v).map(|a| (a, Some(v))).ok_or(AbiError::Unsupported { lib, version: v })
        }
        (Some(v), AbiChoice::Fixed(a)) => match Abi::for_version(v) {
            Some(b) if b == a => Ok((a, Some(v))),
            Some(b) => Err(AbiError::Contradicts { lib, version: v, asked: a, found: b }),
            None => Err(AbiError::NoBinding { lib, version: v, asked: a }),
        },
        (None, AbiChoice::Fixed(a)) => Ok((a, None)),
        (None, AbiChoice::Auto) => Err(AbiError::Unknown { lib }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_embedded_version_after_format_strings() {
        let b = b"xx rkllm-runtime version: %s, rknpu\0 junk rkllm-runtime version: 1.2.3\0";
        assert_eq!(embedded_version(b), Some(Version(1, 2, 3)));
        assert_eq!(embedded_version(b"rkllm-runtime version: 1.3.0"), Some(Version(1, 3, 0)));
        assert_eq!(embedded_version(b"nothing here"), None);
    }

    #[test]
    fn choice_rules() {
        let v123 = Some(Version(1, 2, 3));
        assert_eq!(choose(v123, AbiChoice::Auto, "l").unwrap().0, Abi::V1_2);
        assert_eq!(choose(Some(Version(1, 3, 0)), AbiChoice::Auto, "l").unwrap().0, Abi::V1_3);
        let e = choose(Some(Version(1, 1, 4)), AbiChoice::Auto, "l").unwrap_err().to_string();
        assert!(e.contains("1.1.4"), "{e}");
        let e = choose(Some(Version(1, 2, 0)), AbiChoice::Auto, "l").unwrap_err().to_string();
        assert!(e.contains("1.2.0"), "{e}");
        let e = choose(v123, AbiChoice::Fixed(Abi::V1_3), "l").unwrap_err().to_string();
        assert!(e.contains("contradicts") && e.contains("1.2.3"), "{e}");
        assert_eq!(choose(None, AbiChoice::Fixed(Abi::V1_3), "l").unwrap(), (Abi::V1_3, None));
        assert!(choose(None, AbiChoice::Auto, "l").unwrap_err().to_string().contains("--rkllm-abi"));
    }
}
