//! Output constraints for llama.cpp: JSON mode and JSON schemas become a GBNF grammar, built
//! here from the request's wanted format (the caller only says what it wants).

use serde_json::json;

use crate::engine::{EngineError, OutputFormat};

/// A GBNF grammar accepting JSON that matches `schema` (llama.cpp's own converter, as its server
/// uses for `response_format`).
pub fn for_schema(schema: &serde_json::Value) -> Result<String, EngineError> {
    llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| EngineError::Grammar(e.to_string()))
}

/// The grammar for a wanted output format.
pub fn for_format(format: &OutputFormat) -> Result<String, EngineError> {
    match format {
        OutputFormat::JsonObject => for_schema(&json!({"type": "object"})),
        OutputFormat::Schema(s) => for_schema(s),
    }
}
