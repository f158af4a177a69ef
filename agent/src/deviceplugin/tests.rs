//! The plugin against a fake kubelet: a real gRPC Registration server on a Unix socket in a temp
//! directory, and a real gRPC client playing the kubelet's device manager. A regular file stands
//! in for the NPU device node.

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::*;

#[derive(Clone)]
struct FakeKubelet(mpsc::UnboundedSender<RegisterRequest>);

impl NamedService for FakeKubelet {
    const NAME: &'static str = "v1beta1.Registration";
}

impl tower::Service<http::Request<Body>> for FakeKubelet {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Reply;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Reply {
        let tx = self.0.clone();
        match req.uri().path() {
            "/v1beta1.Registration/Register" => grpc::unary(req, move |r: RegisterRequest| async move {
                let _ = tx.send(r);
                Ok(Empty {})
            }),
            _ => grpc::unimplemented(),
        }
    }
}

async fn list_and_watch(channel: Channel) -> tonic::Streaming<ListAndWatchResponse> {
    let mut g = tonic::client::Grpc::new(channel);
    g.ready().await.unwrap();
    g.server_streaming(
        tonic::Request::new(Empty {}),
        http::uri::PathAndQuery::from_static("/v1beta1.DevicePlugin/ListAndWatch"),
        tonic_prost::ProstCodec::<Empty, ListAndWatchResponse>::default(),
    )
    .await
    .unwrap()
    .into_inner()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test]
async fn registers_lists_allocates_tracks_health_and_re_registers() {
    let dir = std::env::temp_dir().join(format!("rl-devplugin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let device = dir.join("rknpu");
    std::fs::write(&device, b"").unwrap();

    let (tx, mut registered) = mpsc::unbounded_channel();
    let kubelet = tokio::net::UnixListener::bind(dir.join("kubelet.sock")).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FakeKubelet(tx))
            .serve_with_incoming(UnixListenerStream::new(kubelet)),
    );

    let stop = CancellationToken::new();
    let args = DevicePluginArgs {
        plugin_dir: dir.clone(),
        devices: vec![device.display().to_string(), dir.join("absent").display().to_string()],
        resource: RESOURCE.into(),
        check_seconds: 1,
    };
    let plugin = tokio::spawn(run(args, stop.clone()));

    let r = within("registration", registered.recv()).await.unwrap();
    assert_eq!((r.version.as_str(), r.resource_name.as_str()), (VERSION, RESOURCE));
    assert_eq!(r.endpoint, "rockchipllama-io-npu.sock");
    let socket = dir.join(&r.endpoint);

    let channel = grpc::unix_channel(socket.clone()).await.unwrap();
    let opts: DevicePluginOptions =
        grpc::call_unary(channel.clone(), "/v1beta1.DevicePlugin/GetDevicePluginOptions", Empty {}).await.unwrap();
    assert!(!opts.pre_start_required);
    let mut devices = list_and_watch(channel.clone()).await;
    let first = within("device list", devices.message()).await.unwrap().unwrap();
    assert_eq!(first.devices, [Device { id: "npu0".into(), health: HEALTHY.into() }]);

    let alloc: AllocateResponse = grpc::call_unary(
        channel.clone(),
        "/v1beta1.DevicePlugin/Allocate",
        AllocateRequest { container_requests: vec![ContainerAllocateRequest { devices_ids: vec!["npu0".into()] }] },
    )
    .await
    .unwrap();
    let c = &alloc.container_responses[0];
    let path = device.display().to_string();
    assert_eq!(
        c.devices,
        [DeviceSpec { container_path: path.clone(), host_path: path.clone(), permissions: "rw".into() }]
    );
    assert_eq!(c.envs["ROCKCHIP_LLAMA_NPU_DEVICES"], path, "only the nodes that exist");

    // The device node goes away: the kubelet hears Unhealthy, and allocation is refused.
    std::fs::remove_file(&device).unwrap();
    let next = within("health update", devices.message()).await.unwrap().unwrap();
    assert_eq!(next.devices[0].health, UNHEALTHY);
    let refused = grpc::call_unary::<_, AllocateResponse>(
        channel,
        "/v1beta1.DevicePlugin/Allocate",
        AllocateRequest { container_requests: vec![ContainerAllocateRequest { devices_ids: vec!["npu0".into()] }] },
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // A kubelet restart wipes the plugin sockets: the plugin serves and registers again.
    std::fs::remove_file(&socket).unwrap();
    let again = within("re-registration", registered.recv()).await.unwrap();
    assert_eq!(again.resource_name, RESOURCE);
    within("socket re-created", async {
        while !socket.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    stop.cancel();
    within("plugin stops", plugin).await.unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn socket_names_are_file_names() {
    assert_eq!(socket_name("rockchipllama.io/npu"), "rockchipllama-io-npu.sock");
}
