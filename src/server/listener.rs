//! The HTTP/1.1 listener and its limits. Every port caller is untrusted, so
//! each connection is bounded in time and their number is bounded:
//!
//! - a request head must arrive within the header-read timeout of its first
//!   byte (a slow or half-sent head is closed, at most one more such
//!   timeout later);
//! - a connection that waits for its next request longer than the idle
//!   timeout is closed;
//! - a request must be answered within the request timeout (body read
//!   included), else 503;
//! - past the connection limit a new connection is answered 503 and closed;
//! - past the concurrency limit a request is answered 503 at once (load is
//!   shed rather than queued, so that a replica under a flood keeps its
//!   latency for what it accepts).
//!
//! hyper's own header-read timer starts when a connection waits for a
//! request, so it would also close idle keep-alive connections after that
//! short time; the clocks here tell the two apart by the first byte of the
//! next request.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::Response,
};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::{alertmanager::refuse, parse_errors::JsonParseErrorIo};

/// The listener's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From a request's first byte to the end of its head.
    pub header_read_timeout: Duration,
    /// From a request's head to its response (body read included).
    pub request_timeout: Duration,
    /// How long a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Requests being answered at once, at most.
    pub max_concurrent_requests: usize,
}

/// What a connection turned away gets: a complete response, so that the
/// client sees why rather than a reset.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 84\r\n\
\r\n\
{\"error\":\"this replica has too many open connections: retry, or reuse a connection\"}";

/// `router` with the request timeout and the concurrency limit applied.
pub(crate) fn bounded(router: Router, limits: &Limits) -> Router {
    let bounds = Arc::new(Bounds {
        requests: Semaphore::new(limits.max_concurrent_requests),
        max_concurrent_requests: limits.max_concurrent_requests,
        request_timeout: limits.request_timeout,
    });
    router.layer(middleware::from_fn_with_state(bounds, bound_request))
}

struct Bounds {
    requests: Semaphore,
    max_concurrent_requests: usize,
    request_timeout: Duration,
}

async fn bound_request(
    State(bounds): State<Arc<Bounds>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = bounds.requests.try_acquire() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "this replica is answering {} requests already: retry in a second",
                bounds.max_concurrent_requests
            ),
        );
    };
    match tokio::time::timeout(bounds.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "the request was not answered within {:?}: send the body at once, and retry",
                    bounds.request_timeout
                ),
            );
            // What is left of the request's body cannot be told from the
            // next request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// Accepts connections on `listener` and serves `router` on each until
/// `shutdown`; then lets the requests in progress finish (for at most the
/// request timeout).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut open = JoinSet::new();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, mostly: wait for some to close
                    // rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                open.spawn(connection(
                    stream,
                    router.clone(),
                    limits,
                    shutdown.clone(),
                    permit,
                ));
            }
            // The response fits any fresh socket's send buffer, so it is
            // written without waiting; the connection closes when dropped.
            Err(_) => {
                let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            }
        }
        while open.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.request_timeout, async {
        while open.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the request timeout; closing them");
    }
}

/// Serves one connection until it closes, times out or `shutdown` lets it
/// finish its request.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    // Small answers: send them at once rather than wait for more.
    let _ = stream.set_nodelay(true);
    let clock = Arc::new(ConnectionClock::new());
    let io = TokioIo::new(JsonParseErrorIo::new(Clocked {
        stream,
        clock: clock.clone(),
    }));
    let service = {
        let clock = clock.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = InFlight::begin(clock.clone());
            let mut router = router.clone();
            async move {
                let response = router.call(request).await;
                drop(in_flight);
                response
            }
        })
    };
    let served = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(served);
    let mut closing = false;
    loop {
        let deadline = clock.deadline(&limits);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                served.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(deadline) => {
                if clock.expired(&limits) {
                    tracing::debug!("closing a connection: no complete request in time");
                    return;
                }
            }
        }
    }
}

/// When a connection last did what, for its timeouts.
struct ConnectionClock {
    origin: Instant,
    /// Milliseconds from `origin` to when the connection became idle
    /// (accepted, or its last response was produced).
    idle_since: AtomicU64,
    /// Milliseconds from `origin` to the first byte of the next request
    /// head; [`NOT_STARTED`] before it.
    head_since: AtomicU64,
    in_flight: AtomicUsize,
}

const NOT_STARTED: u64 = u64::MAX;

impl ConnectionClock {
    fn new() -> Self {
        ConnectionClock {
            origin: Instant::now(),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NOT_STARTED),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, millis: u64) -> Instant {
        self.origin + Duration::from_millis(millis)
    }

    /// Bytes arrived: the first ones while idle start a request head.
    fn read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) == NOT_STARTED
        {
            self.head_since.store(self.now(), Ordering::Release);
        }
    }

    /// When the watchdog should look again. Nothing wakes it when a request
    /// starts or ends (that would cost every request a wake-up and a new
    /// timer), so it looks again at least every `header_read_timeout` and
    /// `idle_timeout`: a head that starts meanwhile is closed at most one
    /// header-read timeout late.
    fn deadline(&self, limits: &Limits) -> Instant {
        let now = Instant::now();
        let tick = limits.header_read_timeout.min(limits.idle_timeout);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // The request timeout bounds the request itself.
            return now + tick;
        }
        match self.head_since.load(Ordering::Acquire) {
            NOT_STARTED => (self.at(self.idle_since.load(Ordering::Acquire)) + limits.idle_timeout)
                .min(now + limits.header_read_timeout),
            started => self.at(started) + limits.header_read_timeout,
        }
    }

    /// Whether the connection is past its header-read or idle timeout.
    fn expired(&self, limits: &Limits) -> bool {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        let limit = match self.head_since.load(Ordering::Acquire) {
            NOT_STARTED => self.at(self.idle_since.load(Ordering::Acquire)) + limits.idle_timeout,
            started => self.at(started) + limits.header_read_timeout,
        };
        Instant::now() >= limit
    }
}

/// A request being answered on a connection; the connection is idle again
/// when the last one is dropped.
struct InFlight(Arc<ConnectionClock>);

impl InFlight {
    fn begin(clock: Arc<ConnectionClock>) -> Self {
        clock.in_flight.fetch_add(1, Ordering::AcqRel);
        clock.head_since.store(NOT_STARTED, Ordering::Release);
        InFlight(clock)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let clock = &self.0;
        clock.idle_since.store(clock.now(), Ordering::Release);
        clock.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that tells its clock when bytes arrive.
struct Clocked {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
}

impl AsyncRead for Clocked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.read();
        }
        polled
    }
}

impl AsyncWrite for Clocked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_turned_away_answer_is_well_formed_json() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 503 "));
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .and_then(|value| value.parse().ok())
            .expect("a content length");
        assert_eq!(length, body.len());
        let parsed: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert!(parsed["error"].is_string());
    }

    #[test]
    fn a_started_head_runs_on_the_header_clock_and_an_idle_one_on_the_idle_clock() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1,
            max_concurrent_requests: 1,
        };
        let clock = Arc::new(ConnectionClock::new());
        // Idle: looked at again within a header-read timeout, in case a
        // head starts; not expired.
        assert!(clock.deadline(&limits) <= Instant::now() + limits.header_read_timeout);
        assert!(!clock.expired(&limits));
        clock.read();
        let started = clock.head_since.load(Ordering::Acquire);
        assert_ne!(started, NOT_STARTED);
        assert_eq!(
            clock.deadline(&limits),
            clock.at(started) + limits.header_read_timeout
        );
        let in_flight = InFlight::begin(clock.clone());
        assert!(!clock.expired(&limits));
        // Body bytes of a request in flight do not start a head.
        clock.read();
        assert_eq!(clock.head_since.load(Ordering::Acquire), NOT_STARTED);
        drop(in_flight);
        assert!(!clock.expired(&limits));
        // Long past the idle timeout, an idle connection has expired.
        clock.idle_since.store(0, Ordering::Release);
        let limits = Limits {
            idle_timeout: Duration::ZERO,
            ..limits
        };
        assert!(clock.expired(&limits));
    }
}
