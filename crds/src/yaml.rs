//! CRD YAML generation. The files in `crds/yaml/` and `charts/rockchip-llama/crds/` are exactly
//! what these functions return, so the check for drift is a byte comparison.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{Board, ModelDeployment};

/// First lines of every generated file: says where it comes from and how to regenerate it.
const HEADER: &str = "# Generated from the Rust types in crds/ by `rockchip-llama-operator crd`.\n\
                      # Do not edit: change the types and run `make generate-crds`.\n";

/// Why a CRD could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The YAML serializer refused the object (a bug in the types, not in the input).
    #[error("serialising CRD {name} to YAML")]
    Yaml {
        /// Name of the CRD.
        name: String,
        /// What the serializer reported.
        #[source]
        source: serde_saphyr::SerializeError,
    },
}

/// One generated file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrdFile {
    /// File name, `<plural>.<group>.yaml` like the CRD's own name.
    pub file_name: String,
    /// File contents, header included.
    pub contents: String,
}

/// Every CRD of the project, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![unfold_descriptions(ModelDeployment::crd()), unfold_descriptions(Board::crd())]
}

/// Joins the hard line breaks of doc comments inside each paragraph of every schema
/// description. Rust doc comments wrap at 100 columns; `kubectl explain` wraps again at its own
/// width, so the original breaks would otherwise cut lines in the middle of sentences.
fn unfold_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match child {
                        serde_json::Value::String(text) if key == "description" => {
                            *text = unfold(text);
                        }
                        _ => walk(child),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let original = crd.clone();
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return original;
    };
    walk(&mut value);
    serde_json::from_value(value).unwrap_or(original)
}

/// Replaces single line breaks with spaces, keeping blank lines between paragraphs.
fn unfold(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// One YAML file per CRD.
pub fn crd_files() -> Result<Vec<CrdFile>, Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body = serde_saphyr::to_string(&crd).map_err(|source| Error::Yaml { name: name.clone(), source })?;
            Ok(CrdFile { file_name: format!("{name}.yaml"), contents: format!("{HEADER}{body}") })
        })
        .collect()
}

/// All CRDs as one multi-document YAML stream, for `kubectl apply -f -`.
pub fn render_all() -> Result<String, Error> {
    Ok(crd_files()?.into_iter().map(|f| f.contents).collect::<Vec<_>>().join("---\n"))
}

#[cfg(test)]
mod tests {
    use super::unfold;

    #[test]
    fn unfold_joins_lines_but_keeps_paragraphs() {
        assert_eq!(unfold("a b\nc d\n\ne\nf"), "a b c d\n\ne f");
        assert_eq!(unfold("single line"), "single line");
    }
}
