//! What the gateway's in-process tests (`gateway.rs`, `scale_from_zero.rs`) share: a gateway
//! served on a loopback port, and an endpoint nothing listens on. Included by `#[path]` rather
//! than through `common/mod.rs`, whose Kubernetes client these tests do not use.

use std::sync::Arc;

use rockchip_llama_operator::gateway::{self, Gateway, table::Table};
use tokio_util::sync::CancellationToken;

/// A gateway serving on 127.0.0.1 until dropped.
pub struct Harness {
    pub gw: Arc<Gateway>,
    pub url: String,
    pub stop: CancellationToken,
    pub client: reqwest::Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a gateway on `config` with `table` installed and synced; `poll`: also poll the boards'
/// load reports, as `rockchip-llama-operator run` does.
pub async fn serve(config: gateway::Config, table: Table, poll: bool) -> Harness {
    let gw = Gateway::new(config).unwrap();
    gw.set_table(table);
    gw.set_synced();
    let stop = CancellationToken::new();
    if poll {
        tokio::spawn(gateway::poll::run(gw.clone(), stop.clone()));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gateway::http::serve(listener, gw.clone(), stop.clone()));
    Harness { gw, url, stop, client: reqwest::Client::new() }
}

/// An http:// URL on 127.0.0.1 where nothing listens (bound, then released).
pub async fn dead_endpoint() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}
