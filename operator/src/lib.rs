//! The RockchipLlama operator: the controller that places ModelDeployments on Boards
//! (`controller`, docs/cluster.md), the gateway's routing decisions (`gateway`), and the CRDs it owns (`cli` prints them, which is how the
//! generated YAML in `crds/yaml/` and the chart is produced).

pub mod cli;
pub mod controller;
pub mod demand;
pub mod gateway;
