//! Pure tests of the types and the generated CRDs: defaults, (de)serialisation, and the schema
//! properties the API server and `kubectl` rely on. No cluster needed; the same CRDs are
//! exercised against a real API server by `make test-k8s`.

use std::{fs, path::PathBuf};

use crds::{DesiredState, ModelDeployment, ModelDeploymentSpec, ModelFormat, RoutingStrategy, crd_files, crds};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    // At run time (cargo sets it): a build cached from another clone would bake in that clone's path.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

fn crd(kind: &str) -> Value {
    let crd = crds().into_iter().find(|c| c.spec.names.kind == kind).expect("kind exists");
    serde_json::to_value(crd).expect("crd to json")
}

fn schema(kind: &str) -> Value {
    crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn minimal_spec_gets_the_api_defaults() {
    let spec: ModelDeploymentSpec = serde_json::from_value(json!({
        "format": "rkllm",
        "source": { "url": "file:///m.rkllm" }
    }))
    .expect("minimal spec");
    assert_eq!(spec.replicas, 1);
    assert_eq!(spec.runtime.max_context_len, 4096);
    assert_eq!(spec.runtime.n_batch, 1);
    assert_eq!(spec.runtime.keep_alive, "5m");
    assert!(!spec.runtime.embed_flash);
    assert_eq!(spec.routing.strategy, RoutingStrategy::LeastLoad);
    assert_eq!(spec.routing.prefix_chars, 1024);
    assert!(spec.model.is_none() && spec.aliases.is_empty() && spec.socs.is_empty());
}

#[test]
fn schema_defaults_match_the_rust_defaults() {
    // What the API server fills in must be what a Rust client assumes when a field is absent.
    let spec = &schema("ModelDeployment")["properties"]["spec"]["properties"];
    let runtime = &spec["runtime"]["properties"];
    assert_eq!(spec["replicas"]["default"], json!(1));
    assert_eq!(runtime["maxContextLen"]["default"], json!(4096));
    assert_eq!(runtime["nBatch"]["default"], json!(1));
    assert_eq!(runtime["keepAlive"]["default"], json!("5m"));
    assert_eq!(spec["routing"]["properties"]["strategy"]["default"], json!("LeastLoad"));
    let board = &schema("Board")["properties"]["spec"]["properties"]["models"]["items"];
    assert_eq!(board["properties"]["desired"]["default"], json!("Loaded"));
    assert_eq!(serde_json::from_value::<DesiredState>(json!("Loaded")).expect("enum"), DesiredState::default());
}

#[test]
fn serialisation_is_camel_case_and_omits_unset_fields() {
    let spec: ModelDeploymentSpec = serde_json::from_value(json!({
        "format": "gguf",
        "source": { "url": "https://h/m.gguf", "sha256": "0".repeat(64), "sizeBytes": 5 },
        "runtime": { "maxContextLen": 8192, "maxNewTokens": 16 }
    }))
    .expect("spec");
    let out = serde_json::to_value(&spec).expect("to json");
    assert_eq!(out["source"]["sizeBytes"], json!(5));
    assert_eq!(out["runtime"]["maxNewTokens"], json!(16));
    assert_eq!(out["format"], json!("gguf"));
    for absent in ["model", "aliases", "socs", "placement", "sampling", "chatTemplate"] {
        assert!(out.get(absent).is_none(), "{absent} should be omitted");
    }
    let back: ModelDeploymentSpec = serde_json::from_value(out).expect("round trip");
    assert_eq!(back, spec);
}

#[test]
fn every_example_parses_and_round_trips() {
    let dir = repo_root().join("models/examples");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).expect("models/examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("read example");
        let md: ModelDeployment =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        let json = serde_json::to_value(&md).expect("to json");
        let back: ModelDeployment = serde_json::from_value(json).expect("from json");
        assert_eq!(back, md, "{}", path.display());
        assert!(md.served_name().is_some());
        seen += 1;
    }
    assert!(seen >= 3, "expected the real-use examples, found {seen}");
}

#[test]
fn every_invalid_example_names_a_message_of_the_schema() {
    // The test cluster checks that each bad manifest is rejected with its message; this keeps
    // the expected messages in step with the rules without a cluster.
    let rules = serde_json::to_string(&schema("ModelDeployment")).expect("schema");
    let dir = repo_root().join("models/examples/invalid");
    for entry in fs::read_dir(&dir).expect("models/examples/invalid") {
        let path = entry.expect("entry").path();
        let text = fs::read_to_string(&path).expect("read");
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()));
        assert!(rules.contains(expect), "{}: {expect:?} is no rule message", path.display());
    }
}

#[test]
fn model_deployment_crd_shape() {
    let crd = crd("ModelDeployment");
    assert_eq!(crd["metadata"]["name"], json!("modeldeployments.rockchipllama.io"));
    assert_eq!(crd["spec"]["scope"], json!("Namespaced"));
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["md"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], json!("v1alpha1"));
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<_> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(columns, ["Model", "Ready", "Format", "Age"]);
    let conditions = &schema("ModelDeployment")["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], json!("map"));
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

#[test]
fn board_crd_shape() {
    let crd = crd("Board");
    assert_eq!(crd["metadata"]["name"], json!("boards.rockchipllama.io"));
    assert_eq!(crd["spec"]["scope"], json!("Cluster"));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<_> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(columns, ["SoC", "Ready", "Models", "Temp", "Age"]);
    let status = &schema("Board")["properties"]["status"]["properties"];
    assert_eq!(status["conditions"]["x-kubernetes-list-map-keys"], json!(["type"]));
    assert_eq!(status["models"]["x-kubernetes-list-map-keys"], json!(["key"]));
    let spec_models = &schema("Board")["properties"]["spec"]["properties"]["models"];
    assert_eq!(spec_models["x-kubernetes-list-map-keys"], json!(["key"]));
}

/// Every field has a description, which is what `kubectl explain` prints.
#[test]
fn every_field_is_documented() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let p = format!("{path}.{name}");
                // apiVersion/kind/metadata come from Kubernetes itself.
                let builtin = path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&name.as_str());
                let is_condition_field = path.ends_with(".conditions[]");
                if !builtin && !is_condition_field && prop.get("description").is_none() {
                    missing.push(p.clone());
                }
                walk(&p, prop, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    for kind in ["ModelDeployment", "Board"] {
        let mut missing = Vec::new();
        walk("", &schema(kind), &mut missing);
        assert!(missing.is_empty(), "{kind} fields without a description: {missing:?}");
    }
}

#[test]
fn cel_rules_carry_messages_and_formats_are_plain_strings() {
    let spec = &schema("ModelDeployment")["properties"]["spec"]["properties"];
    // Without `enum`, the API server reaches the CEL rule and its message reaches the user.
    assert!(spec["format"].get("enum").is_none());
    let rules = spec["format"]["x-kubernetes-validations"].as_array().expect("rules");
    assert!(rules.iter().all(|r| r.get("message").is_some()));
    assert_eq!(ModelFormat::Rkllm.as_str(), "rkllm");
    let source_rules = spec["source"]["x-kubernetes-validations"].as_array().expect("rules");
    assert!(source_rules[0]["rule"].as_str().expect("rule").contains("has(self.sha256)"));
}

#[test]
fn generated_yaml_parses_back_to_the_same_crds() {
    let files = crd_files().expect("render");
    assert_eq!(files.len(), 2);
    for (file, crd) in files.iter().zip(crds()) {
        assert!(file.contents.starts_with("# Generated"));
        let parsed: CustomResourceDefinition = serde_saphyr::from_str(&file.contents).expect("yaml parses");
        assert_eq!(parsed, crd, "{}", file.file_name);
    }
}
