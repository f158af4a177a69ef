//! The gateway: one cluster-wide OpenAI + Ollama endpoint in every operator replica, sending each
//! request to a board that has the model loaded (docs/cluster.md). So far its decisions, which are
//! pure: the routing table from ModelDeployments and Boards ([`table`]), replica selection per
//! `routing.strategy` ([`policy`]) and the affinity key of a request
//! ([`prefix`]); the proxy around them is the next step.

pub mod policy;
pub mod prefix;
pub mod table;
