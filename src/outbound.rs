//! Outbound HTTP to the systems the operator talks to (Prometheus, GitLab,
//! webhooks): one way to build a client, with TLS from the same `ring`
//! provider the Kubernetes client uses and a timeout on every call.

use std::{sync::Once, time::Duration};

use crate::{Error, Result};

static CRYPTO: Once = Once::new();

/// A client whose every request fails after `timeout`.
pub fn client(timeout: Duration) -> Result<reqwest::Client> {
    CRYPTO.call_once(|| {
        // Another part of the process may have installed a provider first;
        // any installed provider will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("weblab-operator/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(Error::HttpClient)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn builds_a_client_with_tls() {
        assert!(super::client(Duration::from_secs(1)).is_ok());
        // A second client reuses the installed provider.
        assert!(super::client(Duration::from_secs(1)).is_ok());
    }
}
