//! A loopback HTTP proxy in front of the real API server that answers the
//! first N writes with 429 and `Retry-After`, as API Priority and Fairness
//! does when a priority level's queues are full, and forwards everything
//! else (watches streamed) to the real API server. It adds no authority:
//! the client's own bearer token is passed on, and the proxy speaks TLS to
//! the API server with the control plane's CA.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderName, Method, StatusCode, header},
    response::Response,
};
use testenv::ControlPlane;

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// The path and query.
    pub path: String,
    /// When it arrived.
    pub at: Instant,
    /// Whether the proxy refused it with 429.
    pub refused: bool,
    /// The status code the client got (the API server's, when passed on).
    pub status: u16,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    refuse_writes: usize,
    retry_after_secs: u64,
    seen: Mutex<Vec<Seen>>,
}

/// The running proxy; it stops with the test's runtime.
pub struct ThrottlingProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
}

impl ThrottlingProxy {
    /// Starts a proxy to `plane` that refuses the first `refuse_writes`
    /// writes (any method but GET) with 429 and `Retry-After:
    /// <retry_after_secs>`.
    pub async fn start(plane: &ControlPlane, refuse_writes: usize, retry_after_secs: u64) -> Self {
        // The operator's library installs the same provider for its clients.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(plane.ca_pem().as_bytes()).expect("the CA");
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let shared = Arc::new(Shared {
            upstream: plane.server_url().trim_end_matches('/').to_owned(),
            client,
            refuse_writes,
            retry_after_secs,
            seen: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let app = Router::new().fallback(forward).with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ThrottlingProxy { address, shared }
    }

    /// A kubeconfig that reaches the API server through this proxy with
    /// `token`, written as `<name>.kubeconfig` in the plane's directory.
    pub fn kubeconfig(&self, plane: &ControlPlane, name: &str, token: &str) -> PathBuf {
        let path = plane.dir().join(format!("{name}.kubeconfig"));
        let yaml = format!(
            "apiVersion: v1
kind: Config
clusters:
  - name: proxy
    cluster:
      server: http://{address}
users:
  - name: {name}
    user:
      token: {token}
contexts:
  - name: {name}
    context:
      cluster: proxy
      user: {name}
current-context: {name}
",
            address = self.address,
            token = serde_json::Value::from(token),
        );
        std::fs::write(&path, yaml).expect("write the kubeconfig");
        path
    }

    /// Every request seen so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let (refused, index) = {
        let mut seen = shared
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let writes = seen.iter().filter(|s| s.method != Method::GET).count();
        let refused = method != Method::GET && writes < shared.refuse_writes;
        seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            at: Instant::now(),
            refused,
            status: if refused { 429 } else { 0 },
        });
        (refused, seen.len() - 1)
    };
    if refused {
        // The body the API server gives with a 429 from API Priority and
        // Fairness: a Status object.
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "TooManyRequests", "code": 429,
            "message": "too many requests, please try again later",
            "details": {"retryAfterSeconds": shared.retry_after_secs}
        });
        return Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::RETRY_AFTER, shared.retry_after_secs.to_string())
            .body(Body::from(status.to_string()))
            .unwrap_or_default();
    }
    let response = match pass_on(&shared, request, method, &path).await {
        Ok(response) => response,
        Err(error) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::json!({"error": format!("proxy: {error}")}).to_string(),
            ))
            .unwrap_or_default(),
    };
    if let Some(seen) = shared
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_mut(index)
    {
        seen.status = response.status().as_u16();
    }
    response
}

/// Headers that belong to one hop, not passed on.
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::HOST,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
    ]
    .contains(name)
}

async fn pass_on(
    shared: &Shared,
    request: Request,
    method: Method,
    path: &str,
) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20).await?;
    let mut outgoing = shared
        .client
        .request(method, format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let upstream = outgoing.send().await?;
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        if !hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    // Streamed chunk by chunk: a watch answers for minutes.
    let chunks = futures::stream::unfold(upstream, |mut upstream| async move {
        match upstream.chunk().await {
            Ok(Some(chunk)) => Some((Ok::<Bytes, reqwest::Error>(chunk), upstream)),
            Ok(None) | Err(_) => None,
        }
    });
    Ok(response.body(Body::from_stream(chunks))?)
}
