//! An HTTP endpoint that records what is sent to it, to see exactly what
//! Alertmanager (or any other sender) delivers.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::POLL;
use super::http_server::{HttpRequest, HttpServer, Response};
use crate::Error;

/// A server on `127.0.0.1:<free port>` that answers every request with 200
/// and keeps it (method, target, headers, body) for the test to inspect.
#[derive(Debug)]
pub struct WebhookRecorder {
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    server: HttpServer,
}

impl WebhookRecorder {
    /// Starts recording.
    pub fn serve() -> Result<WebhookRecorder, Error> {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let server = HttpServer::serve("webhook-recorder", {
            let requests = Arc::clone(&requests);
            move |request| {
                requests
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(request);
                Response::text(200, "recorded\n")
            }
        })?;
        Ok(WebhookRecorder { requests, server })
    }

    /// `http://127.0.0.1:<port>/webhook` (any path is recorded the same).
    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.server.address())
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` for a request that `matches`, and returns the
    /// first one (also one that arrived before the call).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        matches: impl Fn(&HttpRequest) -> bool,
    ) -> Option<HttpRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find(|request| matches(request))
                .cloned();
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
