//! Hand-written OpenAPI schemas for fields whose Rust type is a loose `serde_json::Value` but
//! whose accepted shapes are precise (a string or a list, `"json"` or a schema, …). Clients and
//! the fuzz smoke read these, so they must say exactly what the handlers accept.

use serde_json::json;
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, Type};

fn string() -> Object {
    ObjectBuilder::new().schema_type(Type::String).build()
}

fn strings(max: usize) -> ArrayBuilder {
    ArrayBuilder::new().items(string()).max_items(Some(max))
}

fn any_object() -> Object {
    ObjectBuilder::new().schema_type(Type::Object).build()
}

/// `stop`: a string or up to 16 strings.
pub fn stop() -> Schema {
    Schema::OneOf(OneOfBuilder::new().item(string()).item(strings(16)).build())
}

/// Ollama `keep_alive`: a duration string or a number of seconds.
pub fn keep_alive() -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).examples([json!("5m"), json!("-1"), json!("0")]))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .build(),
    )
}

/// Ollama `format`: `"json"` or a JSON schema.
pub fn format() -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["json", ""])))
            .item(any_object())
            .build(),
    )
}

/// Ollama `think`: a boolean or a level.
pub fn think() -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["low", "medium", "high"])))
            .build(),
    )
}

/// OpenAI `tool_choice`.
pub fn tool_choice() -> Schema {
    let named = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("type", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["function"])))
        .property(
            "function",
            ObjectBuilder::new().schema_type(Type::Object).property("name", string()).required("name"),
        )
        .required("type")
        .required("function");
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["none", "auto", "required"])))
            .item(named)
            .build(),
    )
}

/// OpenAI `response_format`.
pub fn response_format() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "type",
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["text", "json_object", "json_schema"])),
        )
        .property("json_schema", ObjectBuilder::new().schema_type(Type::Object).property("schema", any_object()))
        .required("type")
        .build()
}

/// `/v1/completions` `prompt`: a string or a list holding one string.
pub fn prompt() -> Schema {
    Schema::OneOf(OneOfBuilder::new().item(string()).item(strings(1).min_items(Some(1))).build())
}

/// A chat message as both APIs accept it.
fn message() -> Object {
    let part = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("type", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["text"])))
        .property("text", string())
        .required("type");
    let content = OneOfBuilder::new()
        .item(string())
        .item(ArrayBuilder::new().items(part))
        .item(ObjectBuilder::new().schema_type(Type::Null));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "role",
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some([
                "system",
                "developer",
                "user",
                "assistant",
                "tool",
            ])),
        )
        .property("content", content)
        .property("tool_calls", ArrayBuilder::new().items(any_object()))
        .property("tool_call_id", string())
        .required("role")
        .build()
}

/// `messages` (OpenAI: at least one).
pub fn messages() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new().items(message()).min_items(Some(1)).build()
}

/// Ollama `messages` (empty = load or unload the model).
pub fn ollama_messages() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new().items(message()).build()
}

/// OpenAI function tools.
pub fn tools() -> utoipa::openapi::schema::Array {
    let function = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("name", string())
        .property("description", string())
        .property("parameters", any_object())
        .required("name");
    let tool = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("type", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["function"])))
        .property("function", function)
        .required("function");
    ArrayBuilder::new().items(tool).build()
}

/// Ollama `images` (refused: the CPU models are text-only).
pub fn images() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new().items(string()).build()
}
