//! The HTTP endpoint: `GET /metrics`, `/health` and `/ready` (and `HEAD` of each), served by
//! hyper over smol.
//!
//! Bounded, since anyone who reaches the address may connect: at most [`MAX_CLIENTS`]
//! connections at once (more are closed at once, unread); a request's head within
//! [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`] headers, arriving within [`HEAD_TIMEOUT`]; a
//! connection (keep-alive included) lives at most [`CONNECTION_LIFETIME`]; request bodies are
//! never read. A scrape is gathered and encoded on the blocking pool, so it never holds an
//! executor thread, and one at a time.
//!
//! The listening socket can be replaced while serving (`metrics_listen` changed by a reload):
//! the new one is bound first by [`bind`], so a failure leaves the old one serving — unless
//! the old one holds the port (same port, another address): then it is closed first, and
//! bound again if the new one fails.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use smol::Async;
use smol::lock::Semaphore;
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::shared::{DaemonShared, Phase};
use crate::tasks::TaskGroup;

/// Connections served at once.
pub const MAX_CLIENTS: usize = 16;
/// A request's line and headers, at most.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 32;
/// Time allowed for a request's line and headers to arrive.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed this long after it was accepted, whatever it is doing.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Binds the endpoint's socket (before it is served, so that start-up and reload can report a
/// failure).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves whatever socket it was last given (none: not serving) until `sockets` closes.
pub async fn serve(
    first: Option<TcpListener>,
    sockets: async_channel::Receiver<super::SocketSwap>,
    shared: Arc<DaemonShared>,
    executor: Arc<smol::Executor<'static>>,
) {
    let mut listener = first.and_then(adopt);
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    // One scrape is gathered at a time: clients that ask together wait their turn, so no
    // number of them costs more than one core's share.
    let scraping = Arc::new(Semaphore::new(1));
    let mut clients = TaskGroup::new("metrics client");
    enum Woke {
        Socket(super::SocketSwap),
        Closed,
        Accepted(std::io::Result<(Async<std::net::TcpStream>, SocketAddr)>),
    }
    loop {
        // An accept with connections waiting never waits: without a turn, a flood of
        // connections would hold the one network thread (see `runtime::run`).
        future::yield_now().await;
        let woke = future::or(
            async {
                match sockets.recv().await {
                    Ok(s) => Woke::Socket(s),
                    Err(_) => Woke::Closed,
                }
            },
            async {
                match &listener {
                    Some(l) => Woke::Accepted(l.accept().await),
                    None => future::pending().await,
                }
            },
        )
        .await;
        match woke {
            Woke::Closed => return,
            Woke::Socket(swap) => {
                listener = swap.listener.and_then(adopt);
                // The old socket is closed: whoever waits for that may go on.
                drop(swap.done);
            }
            Woke::Accepted(Ok((stream, _))) => {
                // Over the limit: closed unread.
                let Some(slot) = slots.try_acquire_arc() else { continue };
                let (shared, scraping) = (shared.clone(), scraping.clone());
                clients.spawn(&executor, async move {
                    serve_client(stream, shared, scraping).await;
                    drop(slot);
                });
            }
            Woke::Accepted(Err(e)) => {
                // Out of file descriptors, typically: wait rather than spin.
                log::warn!("metrics endpoint: accept: {e}");
                smol::Timer::after(Duration::from_millis(200)).await;
            }
        }
    }
}

fn adopt(listener: TcpListener) -> Option<Async<TcpListener>> {
    Async::new(listener).map_err(|e| log::warn!("metrics endpoint: cannot serve the socket: {e}")).ok()
}

async fn serve_client(stream: Async<std::net::TcpStream>, shared: Arc<DaemonShared>, scraping: Arc<Semaphore>) {
    let service = hyper::service::service_fn(move |request| {
        let (shared, scraping) = (shared.clone(), scraping.clone());
        async move { Ok::<_, Infallible>(respond(&request, shared, &scraping).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(SmolTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true)
        .serve_connection(FuturesIo::new(stream), service);
    let lifetime = async {
        smol::Timer::after(CONNECTION_LIFETIME).await;
        Ok(())
    };
    if let Err(e) = future::or(connection, lifetime).await {
        log::debug!("metrics endpoint: {e}");
    }
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

const PLAIN: &str = "text/plain; charset=utf-8";

async fn respond(
    request: &Request<Incoming>,
    shared: Arc<DaemonShared>,
    scraping: &Semaphore,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET and HEAD\n");
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match request.uri().path() {
        "/metrics" => {
            let scraped = {
                let _turn = scraping.acquire().await;
                smol::unblock(move || super::scrape(&shared)).await
            };
            match scraped {
                Ok(body) => text(StatusCode::OK, super::exposition::CONTENT_TYPE, body),
                Err(e) => {
                    log::error!("metrics endpoint: cannot encode the metrics: {e}");
                    text(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("cannot encode the metrics: {e}\n"))
                }
            }
        }
        "/health" => text(StatusCode::OK, PLAIN, "ok\n"),
        "/ready" => match shared.phase() {
            Phase::Ready => text(StatusCode::OK, PLAIN, "ready\n"),
            Phase::Starting => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "starting\n"),
            Phase::Stopping => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "stopping\n"),
        },
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found: try /metrics, /health or /ready\n"),
    }
}
