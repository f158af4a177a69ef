//! The RockchipLlama operator: the controller that places ModelDeployments on Boards and the
//! gateway that routes requests to them (docs/architecture.md). For now the binary only prints
//! the CRDs it owns, which is how the generated YAML in `crds/yaml/` and the chart is produced.

pub mod cli;
