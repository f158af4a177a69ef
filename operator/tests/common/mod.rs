//! What the operator's tests against the test cluster (`make test-k8s`) share: the client for
//! it and unique object names.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

/// Env var naming the kubeconfig of the test cluster; a separate name from KUBECONFIG so these
/// tests never run against a developer's real cluster by accident.
pub const KUBECONFIG_ENV: &str = "ROCKCHIP_LLAMA_TEST_KUBECONFIG";

/// A client for the test cluster, or why there is none.
pub async fn client() -> anyhow::Result<Client> {
    let path = std::env::var(KUBECONFIG_ENV).with_context(|| {
        format!("{KUBECONFIG_ENV} is not set: these tests need the test cluster, run `make test-k8s`")
    })?;
    let kubeconfig = Kubeconfig::read_from(&path).with_context(|| format!("reading {path}"))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}
