//! The gateway's HTTP serving threads: one single-threaded runtime per worker, each accepting
//! on its own `SO_REUSEPORT` socket bound to the same address, with its own client pool to the
//! boards.
//!
//! Why not the process's multi-threaded runtime: a proxied answer passes through two tasks per
//! chunk (the board connection's and the client's), and on a work-stealing runtime they often
//! sit on different threads, so every chunk costs a cross-thread wake-up (futex, eventfd) on top
//! of its two socket calls. `make bench-gateway` measured that as most of the gap to nginx's CPU
//! per request. Here a client connection, the request's board connection and their tasks all
//! live on one thread, the way nginx's worker processes do; the kernel spreads new connections
//! over the workers. Shared state (table, loads, queues, metrics) stays in [`Gateway`], behind
//! the same short locks as before.

use std::{cell::RefCell, net::SocketAddr, sync::Arc, thread};

use tokio_util::sync::CancellationToken;

use super::{Error, Gateway, http};

thread_local! {
    /// The worker thread's own client to the boards (its connections belong to its runtime).
    static CLIENT: RefCell<Option<reqwest::Client>> = const { RefCell::new(None) };
}

/// The client for requests to boards from the current thread: the worker's own, else the
/// shared one (tests and tools that serve on another runtime).
pub fn client(gw: &Gateway) -> reqwest::Client {
    CLIENT.with(|c| c.borrow().clone()).unwrap_or_else(|| gw.http.clone())
}

/// How many workers by default: one per CPU the process may use.
pub fn default_count() -> usize {
    thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// `count` listening sockets on `addr` (port 0: the port the first one got). Bound before any
/// worker starts, so a taken port fails at start. Must run inside a Tokio runtime.
pub fn bind(addr: SocketAddr, count: usize) -> Result<Vec<std::net::TcpListener>, Error> {
    let err = |source| Error::Listen { addr: addr.to_string(), source };
    let first = listen(addr).map_err(err)?;
    let actual = first.local_addr().map_err(err)?;
    let mut all = vec![first];
    for _ in 1..count.max(1) {
        all.push(listen(actual).map_err(err)?);
    }
    Ok(all)
}

/// Serves on every listener, each on its own thread, until `stop`; returns when all stopped.
pub async fn serve(
    listeners: Vec<std::net::TcpListener>,
    gw: Arc<Gateway>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let mut done = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (gw, worker_stop) = (gw.clone(), stop.clone());
        let spawned = thread::Builder::new().name(format!("gateway-{i}")).spawn(move || {
            let _ = tx.send(worker(listener, gw, worker_stop));
        });
        if let Err(source) = spawned {
            stop.cancel();
            return Err(Error::Listen { addr: format!("worker {i}"), source });
        }
        done.push(rx);
    }
    let mut result = Ok(());
    for rx in done {
        let r = rx.await.unwrap_or_else(|_| {
            Err(Error::Listen { addr: "gateway worker".into(), source: std::io::Error::other("the thread panicked") })
        });
        if r.is_err() {
            // One worker down takes the others down: the pod restarts whole.
            stop.cancel();
            result = result.and(r);
        }
    }
    result
}

fn worker(listener: std::net::TcpListener, gw: Arc<Gateway>, stop: CancellationToken) -> Result<(), Error> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let err = |source| Error::Listen { addr: addr.clone(), source };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(err)?;
    runtime.block_on(async move {
        CLIENT.with(|c| gw.new_client().map(|client| *c.borrow_mut() = Some(client)))?;
        super::upstream::enable_pool();
        let listener = tokio::net::TcpListener::from_std(listener).map_err(err)?;
        http::serve(listener, gw, stop).await
    })
}
