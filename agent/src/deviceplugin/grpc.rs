//! Just enough gRPC plumbing to serve and call the device plugin API with tonic but without
//! generated code (no protoc at build time): unary and server-streaming handlers from closures,
//! and a unary client call on a Unix socket.

use std::{convert::Infallible, future::Future, marker::PhantomData, path::PathBuf, pin::Pin};

use futures::Stream;
use hyper_util::rt::TokioIo;
use tonic::{
    Request, Response, Status,
    body::Body,
    codegen::http,
    server::{Grpc, ServerStreamingService, UnaryService},
    transport::{Channel, Endpoint, Uri},
};
use tonic_prost::ProstCodec;

pub type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
/// What a gRPC service's `call` returns.
pub type Reply = BoxFuture<http::Response<Body>, Infallible>;

struct Unary<F, Req>(F, PhantomData<fn(Req)>);

impl<F, Req, Resp, Fut> UnaryService<Req> for Unary<F, Req>
where
    F: FnOnce(Req) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    Req: Send + 'static,
{
    type Response = Resp;
    type Future = BoxFuture<Response<Resp>, Status>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        let f = self.0.clone();
        Box::pin(async move { f(request.into_inner()).await.map(Response::new) })
    }
}

/// Answers a unary call with `f`.
pub fn unary<Req, Resp, F, Fut>(req: http::Request<Body>, f: F) -> Reply
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Req) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    Box::pin(async move { Ok(Grpc::new(ProstCodec::<Resp, Req>::default()).unary(Unary(f, PhantomData), req).await) })
}

struct Streaming<F, Req>(F, PhantomData<fn(Req)>);

impl<F, Req, Resp> ServerStreamingService<Req> for Streaming<F, Req>
where
    F: FnOnce(Req) -> BoxStream<Resp> + Clone + Send + 'static,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    type Response = Resp;
    type ResponseStream = BoxStream<Resp>;
    type Future = BoxFuture<Response<BoxStream<Resp>>, Status>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        let f = self.0.clone();
        Box::pin(async move { Ok(Response::new(f(request.into_inner()))) })
    }
}

/// Answers a server-streaming call with the stream `f` makes.
pub fn server_streaming<Req, Resp, F>(req: http::Request<Body>, f: F) -> Reply
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Req) -> BoxStream<Resp> + Clone + Send + 'static,
{
    Box::pin(async move {
        Ok(Grpc::new(ProstCodec::<Resp, Req>::default()).server_streaming(Streaming(f, PhantomData), req).await)
    })
}

/// The gRPC answer to a method the service does not have.
pub fn unimplemented() -> Reply {
    Box::pin(async {
        let mut resp = http::Response::new(Body::default());
        resp.headers_mut().insert("grpc-status", http::HeaderValue::from(tonic::Code::Unimplemented as i32));
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        Ok(resp)
    })
}

/// A channel to a gRPC server on a Unix socket (the URI is a placeholder the connector ignores).
pub async fn unix_channel(path: PathBuf) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
}

/// One unary call on `channel`.
pub async fn call_unary<Req, Resp>(channel: Channel, path: &'static str, req: Req) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(Request::new(req), path, ProstCodec::<Req, Resp>::default()).await.map(Response::into_inner)
}
