//! `rockchip-llama-agent device-plugin`: a kubelet device plugin that advertises the board's NPU
//! as one `rockchipllama.io/npu` resource, so the agent's pod gets the NPU device nodes by asking
//! for that resource instead of running privileged. One unit per board: the agent owns the NPU
//! and serialises access to it (two NPU clients at once crash boards), so the kubelet never gives
//! it to two pods.
//!
//! ```text
//!  kubelet ◄── Register(resource, endpoint) ── plugin (socket in the kubelet's device-plugins dir)
//!  kubelet ──► ListAndWatch: [npu0 Healthy|Unhealthy], again on every change
//!  kubelet ──► Allocate(npu0) ──► the device nodes that exist, as DeviceSpecs (rw)
//! ```
//!
//! The kubelet deletes plugin sockets when it restarts; the plugin notices its socket is gone and
//! serves and registers again. Health = at least one of the configured device nodes exists,
//! checked every few seconds.

mod grpc;
pub mod proto;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tokio_util::sync::CancellationToken;
use tonic::{Status, body::Body, codegen::http, server::NamedService};

use self::{grpc::Reply, proto::*};

/// The resource the plugin advertises.
pub const RESOURCE: &str = "rockchipllama.io/npu";
/// The kubelet's device-plugin directory (its `kubelet.sock` and the plugins' sockets).
pub const KUBELET_DIR: &str = "/var/lib/kubelet/device-plugins";
/// Device nodes of the NPU: the vendor `rknpu` driver's DRM render node (and its card) on RK3588
/// vendor kernels, or its misc device on builds without DRM. Whichever exist are handed over.
pub const DEFAULT_DEVICES: [&str; 3] = ["/dev/dri/renderD129", "/dev/dri/card1", "/dev/rknpu"];
/// The one unit advertised.
const DEVICE_ID: &str = "npu0";

/// Flags of `device-plugin`.
#[derive(Debug, clap::Args)]
pub struct DevicePluginArgs {
    /// The kubelet's device-plugin directory (mounted from the host).
    #[arg(long, env = "ROCKCHIP_LLAMA_DEVICE_PLUGIN_DIR", default_value = KUBELET_DIR)]
    pub plugin_dir: PathBuf,
    /// NPU device nodes handed to the pod that gets the resource (those that exist). Repeat or
    /// separate with commas.
    #[arg(long = "device", env = "ROCKCHIP_LLAMA_NPU_DEVICES", value_delimiter = ',',
          default_values_t = DEFAULT_DEVICES.map(String::from))]
    pub devices: Vec<String>,
    /// Resource name advertised to the kubelet.
    #[arg(long, env = "ROCKCHIP_LLAMA_DEVICE_RESOURCE", default_value = RESOURCE)]
    pub resource: String,
    /// How often device health (the nodes existing) and the plugin's socket are checked.
    #[arg(long, env = "ROCKCHIP_LLAMA_DEVICE_CHECK_SECONDS", default_value_t = 5)]
    pub check_seconds: u64,
}

/// The plugin's state shared with its gRPC handlers.
struct Plugin {
    devices: Vec<PathBuf>,
    health: watch::Receiver<bool>,
}

impl Plugin {
    fn list(healthy: bool) -> ListAndWatchResponse {
        let health = if healthy { HEALTHY } else { UNHEALTHY };
        ListAndWatchResponse { devices: vec![Device { id: DEVICE_ID.into(), health: health.into() }] }
    }

    fn allocate(&self, req: AllocateRequest) -> Result<AllocateResponse, Status> {
        let present: Vec<&PathBuf> = self.devices.iter().filter(|d| d.exists()).collect();
        if present.is_empty() {
            return Err(Status::failed_precondition(format!(
                "no NPU device node present (looked for {})",
                self.devices.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        let paths: Vec<String> = present.iter().map(|d| d.display().to_string()).collect();
        let one = ContainerAllocateResponse {
            envs: HashMap::from([("ROCKCHIP_LLAMA_NPU_DEVICES".to_owned(), paths.join(","))]),
            mounts: Vec::new(),
            devices: paths
                .iter()
                .map(|p| DeviceSpec { container_path: p.clone(), host_path: p.clone(), permissions: "rw".into() })
                .collect(),
            annotations: HashMap::new(),
        };
        Ok(AllocateResponse { container_responses: req.container_requests.iter().map(|_| one.clone()).collect() })
    }
}

/// The `v1beta1.DevicePlugin` gRPC service.
#[derive(Clone)]
struct Service(Arc<Plugin>);

impl NamedService for Service {
    const NAME: &'static str = "v1beta1.DevicePlugin";
}

impl tower::Service<http::Request<Body>> for Service {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Reply;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Reply {
        let plugin = self.0.clone();
        match req.uri().path() {
            "/v1beta1.DevicePlugin/GetDevicePluginOptions" => grpc::unary(req, |_: Empty| async {
                Ok(DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: false })
            }),
            "/v1beta1.DevicePlugin/ListAndWatch" => grpc::server_streaming(req, move |_: Empty| {
                WatchStream::new(plugin.health.clone()).map(|h| Ok(Plugin::list(h))).boxed()
            }),
            "/v1beta1.DevicePlugin/Allocate" => {
                grpc::unary(req, move |r: AllocateRequest| async move { plugin.allocate(r) })
            }
            "/v1beta1.DevicePlugin/PreStartContainer" => {
                grpc::unary(req, |_: PreStartContainerRequest| async { Ok(PreStartContainerResponse {}) })
            }
            _ => grpc::unimplemented(),
        }
    }
}

/// File name of the plugin's socket in the plugin directory.
pub fn socket_name(resource: &str) -> String {
    format!("{}.sock", resource.replace(['/', '.'], "-"))
}

fn healthy(devices: &[PathBuf]) -> bool {
    devices.iter().any(|d| d.exists())
}

/// Serves on the plugin socket and registers with the kubelet; returns when the socket
/// disappears (the kubelet restarted) or `stop` fires. `Ok(true)`: serve again.
async fn serve_once(args: &DevicePluginArgs, plugin: Arc<Plugin>, stop: &CancellationToken) -> anyhow::Result<bool> {
    let name = socket_name(&args.resource);
    let socket = args.plugin_dir.join(&name);
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing the stale socket {}", socket.display())),
    }
    let listener =
        tokio::net::UnixListener::bind(&socket).with_context(|| format!("listening on {}", socket.display()))?;
    let served = CancellationToken::new();
    let server = tokio::spawn({
        let served = served.clone();
        tonic::transport::Server::builder()
            .add_service(Service(plugin))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move { served.cancelled().await })
    });
    let result = register(args, &name, stop).await;
    let again = match result {
        Ok(()) => {
            tracing::info!(resource = %args.resource, socket = %socket.display(), "registered with the kubelet");
            watch_socket(&socket, Duration::from_secs(args.check_seconds.max(1)), stop).await
        }
        Err(e) => {
            stop_server(&served, server).await;
            return Err(e);
        }
    };
    stop_server(&served, server).await;
    Ok(again)
}

/// Stops a server: ListAndWatch streams never end, so a graceful shutdown would wait for the
/// kubelet to hang up; give it a moment, then cut the connections (the kubelet reconnects after
/// the new registration).
async fn stop_server<T>(served: &CancellationToken, server: tokio::task::JoinHandle<T>) {
    served.cancel();
    let abort = server.abort_handle();
    if tokio::time::timeout(Duration::from_secs(1), server).await.is_err() {
        abort.abort();
    }
}

/// Registers, retrying while the kubelet is not up yet (bounded: 60 tries a second apart).
async fn register(args: &DevicePluginArgs, endpoint: &str, stop: &CancellationToken) -> anyhow::Result<()> {
    let kubelet = args.plugin_dir.join("kubelet.sock");
    let request = RegisterRequest {
        version: VERSION.into(),
        endpoint: endpoint.into(),
        resource_name: args.resource.clone(),
        options: Some(DevicePluginOptions::default()),
    };
    let mut last = String::new();
    for _ in 0..60 {
        let attempt = async {
            let channel = grpc::unix_channel(kubelet.clone()).await.map_err(|e| e.to_string())?;
            grpc::call_unary::<_, Empty>(channel, "/v1beta1.Registration/Register", request.clone())
                .await
                .map_err(|s| format!("{}: {}", s.code(), s.message()))
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => anyhow::bail!("stopped before registering"),
        }
    }
    anyhow::bail!("the kubelet at {} did not accept the registration: {last}", kubelet.display())
}

/// Waits until the socket is removed (true: serve again) or `stop` (false).
async fn watch_socket(socket: &Path, every: Duration, stop: &CancellationToken) -> bool {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return false,
        }
        if !socket.exists() {
            tracing::warn!(socket = %socket.display(), "plugin socket removed (kubelet restart?): registering again");
            return true;
        }
    }
}

/// Runs the plugin until `stop`.
pub async fn run(args: DevicePluginArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let devices: Vec<PathBuf> = args.devices.iter().map(PathBuf::from).collect();
    let (health_tx, health) = watch::channel(healthy(&devices));
    tracing::info!(devices = ?args.devices, healthy = *health.borrow(), "NPU device plugin starting");
    let checker = tokio::spawn({
        let (devices, stop) = (devices.clone(), stop.clone());
        let every = Duration::from_secs(args.check_seconds.max(1));
        async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = stop.cancelled() => return,
                }
                let now = healthy(&devices);
                if health_tx.send_if_modified(|h| std::mem::replace(h, now) != now) {
                    tracing::warn!(healthy = now, "NPU device health changed");
                }
            }
        }
    });
    let plugin = Arc::new(Plugin { devices, health });
    let result = loop {
        match serve_once(&args, plugin.clone(), &stop).await {
            Ok(true) => continue,
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    stop.cancel();
    let _ = checker.await;
    result
}
