//! The operator's client of the Kubernetes API, kind to the API server
//! under load: writes paced by a token bucket, and answers that mean "not
//! now" (429, 5xx) retried with jittered exponential backoff that honours
//! `Retry-After`.
//!
//! It is a tower layer on the kube `Client`, so every write the operator
//! makes (status applies, patches, events, the webhook's alarm records)
//! goes through it without each call site knowing. API Priority and
//! Fairness on the server decides who waits there; this keeps the operator
//! from filling its own priority level's queues, and backs off when the
//! server says it is full instead of hammering it.
//!
//! Three kinds of request are treated differently:
//! - the leader Lease is neither paced nor retried here: its renewals keep
//!   their own clock (`leader.rs`) and must not queue behind a backlog of
//!   status writes;
//! - an Alarm's status is a move towards safety (it is how a rollback
//!   reaches every replica): it takes a token but never waits for one;
//! - reads are not paced (the watches are long-lived), but are retried.

pub mod bucket;
pub mod retry;

use std::{
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use hyper::{Method, Request, Response, header::RETRY_AFTER};
use kube::{
    Client, Config,
    client::{Body, ClientBuilder},
};
use prometheus::{Counter, IntCounterVec};
use tower::{BoxError, Layer, Service, ServiceExt, buffer::Buffer};

use self::{bucket::TokenBucket, retry::Schedule};
use crate::metrics::Metrics;

/// How fast the operator may write.
#[derive(Clone, Copy, Debug)]
pub struct WriteLimits {
    /// Writes per second, sustained.
    pub per_second: u32,
    /// Writes at once after a quiet time.
    pub burst: u32,
}

/// A kube client for `config` whose writes are paced and whose refused
/// requests are retried, counted in `metrics`.
pub fn client(
    mut config: Config,
    limits: WriteLimits,
    metrics: &Metrics,
) -> Result<Client, kube::Error> {
    // kube's own retry (429, 503, 504, up to 15 times and 1,000 s apart)
    // would answer first and hide the server's answers from this layer.
    config.default_retry = false;
    let layer = ApiLoadLayer::new(limits, Schedule::default(), metrics);
    Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

/// What the layer's services share: the one bucket of the process.
struct Shared {
    bucket: Mutex<TokenBucket>,
    schedule: Schedule,
    retries: IntCounterVec,
    throttled_seconds: Counter,
    jitter: RandomState,
}

/// The tower layer; see the module's documentation.
#[derive(Clone)]
pub struct ApiLoadLayer {
    shared: Arc<Shared>,
}

impl ApiLoadLayer {
    /// A layer pacing writes to `limits`, retrying on `schedule`.
    pub fn new(limits: WriteLimits, schedule: Schedule, metrics: &Metrics) -> Self {
        ApiLoadLayer {
            shared: Arc::new(Shared {
                bucket: Mutex::new(TokenBucket::new(
                    limits.per_second,
                    limits.burst,
                    std::time::Instant::now(),
                )),
                schedule,
                retries: metrics.api_retries.clone(),
                throttled_seconds: metrics.api_throttled_seconds.clone(),
                jitter: RandomState::new(),
            }),
        }
    }
}

impl<S, B> Layer<S> for ApiLoadLayer
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
    B: Send + 'static,
{
    type Service = ApiLoad<Buffer<Request<Body>, S::Future>>;

    fn layer(&self, inner: S) -> Self::Service {
        // A retry calls the inner service again from its own task, so it
        // must be cloneable; kube's stack is not, a buffer in front is.
        ApiLoad {
            inner: Buffer::new(inner, 1024),
            shared: self.shared.clone(),
        }
    }
}

/// The service [`ApiLoadLayer`] builds.
#[derive(Clone)]
pub struct ApiLoad<T> {
    inner: T,
    shared: Arc<Shared>,
}

impl<T, B> Service<Request<Body>> for ApiLoad<T>
where
    T: Service<Request<Body>, Response = Response<B>, Error = BoxError> + Clone + Send + 'static,
    T::Future: Send,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<B>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each attempt waits for the inner service's readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Box::pin(send(self.shared.clone(), self.inner.clone(), request))
    }
}

/// How a request is paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pace {
    /// Neither paced nor retried here.
    Lease,
    /// Takes a token without waiting.
    Urgent,
    /// Waits for a token.
    Write,
    /// Not paced.
    Read,
}

fn pace(method: &Method, path: &str) -> Pace {
    if path.starts_with("/apis/coordination.k8s.io/") && path.contains("/leases") {
        return Pace::Lease;
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Pace::Read;
    }
    let mut segments = path.rsplit('/');
    let is_alarm_status = segments.next() == Some("status")
        && segments.nth(1) == Some("alarms")
        && path.starts_with("/apis/weblab.dev/");
    if is_alarm_status {
        Pace::Urgent
    } else {
        Pace::Write
    }
}

impl Shared {
    /// Waits for a token as `pace` says, counting the time waited.
    async fn admit(&self, pace: Pace) {
        let now = std::time::Instant::now();
        let wait = {
            // A poisoned lock only means a panic elsewhere mid-update of
            // two numbers; the bucket is still usable.
            let mut bucket = self
                .bucket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match pace {
                Pace::Write => bucket.reserve(now),
                Pace::Urgent => {
                    bucket.take(now);
                    Duration::ZERO
                }
                Pace::Lease | Pace::Read => Duration::ZERO,
            }
        };
        if !wait.is_zero() {
            self.throttled_seconds.inc_by(wait.as_secs_f64());
            tokio::time::sleep(wait).await;
        }
    }

    /// A number in `[0, 1)`, different on every call.
    fn jitter(&self) -> f64 {
        let bits = self.jitter.hash_one(std::time::Instant::now());
        (bits >> 11) as f64 / (1_u64 << 53) as f64
    }
}

async fn send<T, B>(
    shared: Arc<Shared>,
    mut inner: T,
    request: Request<Body>,
) -> Result<Response<B>, BoxError>
where
    T: Service<Request<Body>, Response = Response<B>, Error = BoxError>,
{
    let pace = pace(request.method(), request.uri().path());
    let (parts, mut body) = request.into_parts();
    let mut retry = 0;
    loop {
        shared.admit(pace).await;
        // kube sends whole bodies, which clone (cheaply); a streamed one,
        // or a Lease's, is sent once.
        let spare = if pace == Pace::Lease {
            None
        } else {
            body.try_clone()
        };
        let response = inner
            .ready()
            .await?
            .call(Request::from_parts(parts.clone(), body))
            .await?;
        let Some(spare) = spare else {
            return Ok(response);
        };
        let status = response.status().as_u16();
        if !retry::is_retryable(status) {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| retry::parse_retry_after(value, jiff::Timestamp::now()));
        let Some(delay) = shared.schedule.delay(retry, retry_after, shared.jitter()) else {
            return Ok(response);
        };
        drop(response);
        shared
            .retries
            .with_label_values(&[&status.to_string()])
            .inc();
        tracing::debug!(
            method = %parts.method,
            path = parts.uri.path(),
            status,
            delay_ms = delay.as_millis() as u64,
            "API server asked to wait; retrying"
        );
        tokio::time::sleep(delay).await;
        retry += 1;
        body = spare;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    type Answering = tower::util::BoxCloneService<Request<Body>, Response<String>, BoxError>;
    type Sent = Arc<Mutex<Vec<Vec<u8>>>>;

    /// A layer whose retries come at once, over a service that answers
    /// `statuses` in turn and records each body it was sent.
    fn answering(statuses: &'static [u16]) -> (ApiLoad<Answering>, Sent, Metrics) {
        let metrics = Metrics::new().expect("metrics");
        let schedule = Schedule {
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_retries: 2,
        };
        let layer = ApiLoadLayer::new(
            WriteLimits {
                per_second: 1000,
                burst: 1000,
            },
            schedule,
            &metrics,
        );
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = bodies.clone();
        let inner = tower::service_fn(move |request: Request<Body>| {
            let seen = seen.clone();
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let body = request.into_body().collect_bytes().await?;
                seen.lock().expect("not poisoned").push(body.to_vec());
                let status = statuses[call.min(statuses.len() - 1)];
                Ok::<_, BoxError>(
                    Response::builder()
                        .status(status)
                        .header(RETRY_AFTER, "0")
                        .body(String::new())?,
                )
            }
        });
        (
            ApiLoad {
                inner: tower::util::BoxCloneService::new(inner),
                shared: layer.shared,
            },
            bodies,
            metrics,
        )
    }

    fn patch(path: &str) -> Request<Body> {
        Request::builder()
            .method(Method::PATCH)
            .uri(path)
            .body(Body::from(b"{\"status\":{}}".to_vec()))
            .expect("a request")
    }

    const DIAL_STATUS: &str =
        "/apis/weblab.dev/v1alpha1/namespaces/team/weblabdials/checkout/status";

    #[tokio::test]
    async fn a_refused_write_is_sent_again_whole_until_it_lands() {
        let (mut service, bodies, metrics) = answering(&[429, 503, 200]);
        let response = service.call(patch(DIAL_STATUS)).await.expect("a response");
        assert_eq!(response.status(), 200);
        let bodies = bodies.lock().expect("not poisoned").clone();
        assert_eq!(bodies, vec![b"{\"status\":{}}".to_vec(); 3]);
        assert_eq!(metrics.api_retries.with_label_values(&["429"]).get(), 1);
        assert_eq!(metrics.api_retries.with_label_values(&["503"]).get(), 1);
    }

    #[tokio::test]
    async fn when_the_retries_are_spent_the_last_answer_is_returned() {
        let (mut service, bodies, _) = answering(&[504]);
        let response = service.call(patch(DIAL_STATUS)).await.expect("a response");
        assert_eq!(response.status(), 504);
        assert_eq!(bodies.lock().expect("not poisoned").len(), 3);
    }

    #[tokio::test]
    async fn refusals_and_lease_writes_are_not_retried() {
        let (mut service, bodies, _) = answering(&[409, 200]);
        let response = service.call(patch(DIAL_STATUS)).await.expect("a response");
        assert_eq!(response.status(), 409);
        let (mut service, lease_bodies, _) = answering(&[503, 200]);
        let lease = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/weblab-operator";
        let response = service.call(patch(lease)).await.expect("a response");
        assert_eq!(response.status(), 503);
        assert_eq!(bodies.lock().expect("not poisoned").len(), 1);
        assert_eq!(lease_bodies.lock().expect("not poisoned").len(), 1);
    }

    #[test]
    fn requests_are_paced_by_what_they_write() {
        let dial_status = "/apis/weblab.dev/v1alpha1/namespaces/team/weblabdials/checkout/status";
        let alarm_status = "/apis/weblab.dev/v1alpha1/namespaces/team/alarms/errors/status";
        let lease = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/weblab-operator";
        let events = "/apis/events.k8s.io/v1/namespaces/team/events";
        assert_eq!(pace(&Method::PATCH, dial_status), Pace::Write);
        assert_eq!(pace(&Method::POST, events), Pace::Write);
        assert_eq!(pace(&Method::DELETE, dial_status), Pace::Write);
        assert_eq!(pace(&Method::PATCH, alarm_status), Pace::Urgent);
        assert_eq!(pace(&Method::PUT, lease), Pace::Lease);
        assert_eq!(pace(&Method::GET, lease), Pace::Lease);
        assert_eq!(pace(&Method::GET, dial_status), Pace::Read);
        // An alarm's spec, or a dial named "alarms", is an ordinary write.
        assert_eq!(
            pace(
                &Method::PATCH,
                "/apis/weblab.dev/v1alpha1/namespaces/team/alarms/errors"
            ),
            Pace::Write
        );
        assert_eq!(
            pace(
                &Method::PATCH,
                "/apis/weblab.dev/v1alpha1/namespaces/alarms/weblabdials/x/status"
            ),
            Pace::Write
        );
    }
}
