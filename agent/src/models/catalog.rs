//! `models/catalog.yaml`: friendly names, aliases and download sources of well-known models.
//! The file is compiled into the binary so a fresh board knows the catalog; `--catalog`
//! replaces it.

use std::path::Path;

use serde::Deserialize;

/// The catalog shipped in the repository.
pub const EMBEDDED: &str = include_str!("../../../models/catalog.yaml");

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Catalog {
    #[serde(default)]
    pub models: Vec<CatalogModel>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogModel {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub format: String,
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub parameters: Option<String>,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub context: Option<u32>,
    #[serde(default)]
    pub license: Option<String>,
    #[serde(default)]
    pub files: Vec<CatalogFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogFile {
    pub file: String,
    #[serde(default)]
    pub soc: Option<String>,
    #[serde(default)]
    pub runtime: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    /// 64 hex digits, or "unknown".
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

impl CatalogFile {
    /// The pinned digest, when the catalog knows one.
    pub fn known_sha256(&self) -> Option<&str> {
        self.sha256.as_deref().filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

/// Why a catalog could not be used; names the file when there is one.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

impl Catalog {
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        serde_saphyr::from_str(text).map_err(|e| CatalogError::Parse { path: "catalog".into(), message: e.to_string() })
    }

    pub fn load(path: Option<&Path>) -> Result<Self, CatalogError> {
        match path {
            None => Self::parse(EMBEDDED),
            Some(p) => {
                let shown = p.display().to_string();
                let text =
                    std::fs::read_to_string(p).map_err(|source| CatalogError::Read { path: shown.clone(), source })?;
                serde_saphyr::from_str(&text).map_err(|e| CatalogError::Parse { path: shown, message: e.to_string() })
            }
        }
    }

    /// The entry listing this file name.
    pub fn by_file(&self, file: &str) -> Option<(&CatalogModel, &CatalogFile)> {
        self.models.iter().find_map(|m| m.files.iter().find(|f| f.file == file).map(|f| (m, f)))
    }

    /// The entry called `name` (or aliased so), ignoring an Ollama `:latest` tag.
    pub fn by_name(&self, name: &str) -> Option<&CatalogModel> {
        let name = name.strip_suffix(":latest").unwrap_or(name);
        self.models.iter().find(|m| m.name == name || m.aliases.iter().any(|a| a == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_parses_and_knows_the_test_models() {
        let c = Catalog::parse(EMBEDDED).unwrap();
        let (m, f) = c.by_file("SmolLM2-135M-Instruct.Q4_1.gguf").unwrap();
        assert_eq!(m.name, "smollm2-135m-instruct");
        assert_eq!(f.known_sha256().unwrap().len(), 64);
        assert_eq!(c.by_name("smollm2:135m").unwrap().name, "smollm2-135m-instruct");
        assert_eq!(c.by_name("gemma-3-270m:latest").unwrap().format, "gguf");
    }
}
