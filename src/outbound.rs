//! Outbound HTTP to the systems tenants name (Prometheus, GitLab, webhook
//! receivers): every call goes through [`Outbound::call`], which holds the
//! rules of DESIGN.md "Tenancy and trust":
//!
//! - a URL is `http` or `https`, with a host, without credentials, query or
//!   fragment; request URLs are built from its parsed parts, so a trailing
//!   `?` or `#` cannot swallow the path the operator appends;
//! - loopback, link-local (cloud metadata), unspecified, multicast and
//!   broadcast addresses are refused, checked on the addresses a name
//!   resolves to when connecting (so a name pointing at 127.0.0.1 is refused
//!   too), unless the URL starts with a prefix an administrator allowed
//!   (`--allow-outbound-url-prefix`); private ranges stay reachable, since
//!   in-cluster services live there;
//! - redirects are never followed (a 3xx answer is a failure), so an answer
//!   cannot send the operator to another origin;
//! - every call has a deadline covering the whole answer, and the body is
//!   streamed and dropped at a per-call byte cap;
//! - errors carry the status code, the content type and byte counts, never
//!   the answer's text: a tenant reads errors in its object's status.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Once},
    time::Duration,
};

use reqwest::{
    Method, RequestBuilder, Url,
    dns::{Addrs, Name, Resolve, Resolving},
    redirect,
};

use crate::{Error, Result};

static CRYPTO: Once = Once::new();

/// The longest any outbound call may take, whatever an object asks.
pub const CEILING: Duration = Duration::from_secs(60);

/// The flag that lets an administrator allow URL prefixes.
pub const ALLOW_FLAG: &str = "--allow-outbound-url-prefix";

/// A client whose every request fails after `timeout`, with TLS from the
/// same `ring` provider the Kubernetes client uses. For talking to known
/// endpoints only (tests, benchmarks); calls to tenant-named URLs go
/// through [`Outbound`].
pub fn client(timeout: Duration) -> Result<reqwest::Client> {
    builder(timeout).build().map_err(Error::HttpClient)
}

fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    CRYPTO.call_once(|| {
        // Another part of the process may have installed a provider first;
        // any installed provider will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("weblab-operator/", env!("CARGO_PKG_VERSION")))
}

/// Why an outbound call failed, in words a tenant may read: never the
/// text of an answer.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The URL is not one the operator calls.
    #[error("{url:?} is not a usable URL: {why}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The host is, or resolves only to, an address outbound calls may not
    /// reach.
    #[error(
        "{host} is {class} ({address}), which outbound calls may not reach unless an administrator allows the URL with {ALLOW_FLAG}"
    )]
    Refused {
        /// The host of the URL.
        host: String,
        /// The refused address.
        address: IpAddr,
        /// Which kind of address, in words.
        class: &'static str,
    },
    /// No complete answer within the deadline.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The connection or the request failed.
    #[error("cannot reach {host}: {why}")]
    Transport {
        /// The host of the URL.
        host: String,
        /// What failed (connection errors, not answer text).
        why: String,
    },
    /// The answer is a redirect, which is never followed.
    #[error(
        "answered with a redirect (HTTP {status}), which is not followed; use the final address in the URL"
    )]
    Redirect {
        /// The HTTP status.
        status: u16,
    },
    /// The answer is larger than the call reads.
    #[error(
        "the answer (HTTP {status}, {content_type}) is larger than {cap} bytes; stopped reading"
    )]
    TooLarge {
        /// The HTTP status.
        status: u16,
        /// The content type, as [`Answer::content_type`] reads it.
        content_type: String,
        /// The cap.
        cap: usize,
    },
}

impl OutboundError {
    /// A short UpperCamelCase reason, for conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            OutboundError::InvalidUrl { .. } => "InvalidUrl",
            OutboundError::Refused { .. } => "AddressRefused",
            OutboundError::Timeout(_) => "Timeout",
            OutboundError::Transport { .. } => "Unreachable",
            OutboundError::Redirect { .. } => "RedirectRefused",
            OutboundError::TooLarge { .. } => "AnswerTooLarge",
        }
    }
}

/// How much of an answer's body a call reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLimit {
    /// None: only the status matters.
    Ignore,
    /// Up to this many bytes; a longer answer is a [`OutboundError::TooLarge`].
    Cap(usize),
}

/// An answer: its status, content type and (capped) body.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The media type (`application/json`), reduced to the characters a
    /// media type has, or `no content type`.
    pub content_type: String,
    /// The body, empty for [`BodyLimit::Ignore`].
    pub body: Vec<u8>,
    /// The wait a `Retry-After` header asks for, in seconds (capped at
    /// [`CEILING`]); its HTTP-date form is not read.
    pub retry_after: Option<Duration>,
}

impl Answer {
    /// `HTTP 200, application/json, 123 bytes`: what an error message may
    /// say about an answer.
    pub fn describe(&self) -> String {
        format!(
            "HTTP {}, {}, {} bytes",
            self.status,
            self.content_type,
            self.body.len()
        )
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Parses a base URL a tenant gave, to which the operator appends a path
/// (a Prometheus server, a GitLab instance): `http` or `https`, a host, no
/// credentials, no query, no fragment.
pub fn parse_base(text: &str) -> Result<Url, OutboundError> {
    if text.contains('?') {
        return Err(OutboundError::InvalidUrl {
            url: text.to_owned(),
            why: "a query (?) is not allowed in a base URL",
        });
    }
    parse_target(text)
}

/// Parses a URL a tenant gave that is called as it is (a webhook
/// receiver): like [`parse_base`], but a query is allowed.
pub fn parse_target(text: &str) -> Result<Url, OutboundError> {
    let invalid = |why| OutboundError::InvalidUrl {
        url: text.to_owned(),
        why,
    };
    // The parser keeps an empty fragment; the raw text is checked as well,
    // so that nothing after `#` can ride along.
    if text.contains('#') {
        return Err(invalid("a fragment (#) is not allowed"));
    }
    let url = Url::parse(text).map_err(|_| invalid("it does not parse as a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("only http and https are allowed"));
    }
    if url.host().is_none() || url.cannot_be_a_base() {
        return Err(invalid("it has no host"));
    }
    // An empty user (`http://@host`) parses away; the raw authority shows it.
    let authority = text
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '\\']).next())
        .unwrap_or_default();
    if !url.username().is_empty() || url.password().is_some() || authority.contains('@') {
        return Err(invalid(
            "credentials in the URL are not allowed; use the resource's Secret reference",
        ));
    }
    Ok(url)
}

/// `base` with `segments` appended to its path, each percent-encoded as
/// one segment.
pub fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// The kind of address outbound calls refuse by default, or `None` when
/// the address may be reached.
pub fn refused_class(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(address: Ipv4Addr) -> Option<&'static str> {
    let [first, ..] = address.octets();
    if address.is_loopback() {
        Some("a loopback address")
    } else if address.is_link_local() {
        // 169.254.169.254 is the metadata service of most clouds.
        Some("a link-local address (where cloud metadata services answer)")
    } else if first == 0 {
        Some("an unspecified address")
    } else if address == Ipv4Addr::new(100, 100, 100, 200) {
        Some("a cloud metadata address")
    } else if address.is_multicast() || first >= 240 {
        Some("a multicast, broadcast or reserved address")
    } else {
        None
    }
}

fn refused_v6(address: Ipv6Addr) -> Option<&'static str> {
    let segments = address.segments();
    let octets = address.octets();
    if address.is_loopback() {
        Some("a loopback address")
    } else if address.is_unspecified() {
        Some("an unspecified address")
    } else if let Some(v4) = address.to_ipv4() {
        // IPv4 carried inside IPv6 (mapped, compatible, NAT64, 6to4) is
        // judged as IPv4.
        refused_v4(v4)
    } else if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        refused_v4(Ipv4Addr::new(
            octets[12], octets[13], octets[14], octets[15],
        ))
    } else if segments[0] == 0x2002 {
        refused_v4(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]))
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if address == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("a cloud metadata address")
    } else if address.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

/// Resolves names with the system resolver and drops the addresses
/// outbound calls may not reach; a name left with none fails with
/// [`OutboundError::Refused`], which [`Outbound::call`] finds again in the
/// connection error.
#[derive(Clone, Copy, Debug)]
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let reachable: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|address| refused_class(address.ip()).is_none())
                .collect();
            match (reachable.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(reachable.into_iter()) as Addrs),
                (true, Some(first)) => Err(Box::new(OutboundError::Refused {
                    host,
                    address: first.ip(),
                    class: refused_class(first.ip()).unwrap_or("refused"),
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                (true, None) => Err(format!("{host} resolves to no address").into()),
            }
        })
    }
}

/// Outbound HTTP with the address policy of this process. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    /// For URLs outside the allowed prefixes: resolved addresses checked.
    guarded: reqwest::Client,
    /// For URLs inside them: any address.
    trusted: reqwest::Client,
    allowed: Arc<[String]>,
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// Outbound HTTP that may reach any address through URLs starting with
    /// one of `allowed_prefixes` (set by an administrator), and only
    /// addresses [`refused_class`] accepts otherwise.
    pub fn new(allowed_prefixes: Vec<String>) -> Result<Self> {
        // No proxy: a proxy would resolve the names itself, past the
        // address check.
        let common = || {
            builder(CEILING)
                .redirect(redirect::Policy::none())
                .no_proxy()
        };
        Ok(Outbound {
            guarded: common()
                .dns_resolver(GuardedResolver)
                .build()
                .map_err(Error::HttpClient)?,
            trusted: common().build().map_err(Error::HttpClient)?,
            allowed: allowed_prefixes.into(),
        })
    }

    /// The client that may carry a request to `url`, or why none may.
    fn client_for(&self, url: &Url) -> Result<&reqwest::Client, OutboundError> {
        if self
            .allowed
            .iter()
            .any(|prefix| url.as_str().starts_with(prefix.as_str()))
        {
            return Ok(&self.trusted);
        }
        // The resolver never sees an address written in the URL: judge it here.
        let address = url.host_str().and_then(|host| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()
        });
        if let Some(address) = address
            && let Some(class) = refused_class(address)
        {
            return Err(OutboundError::Refused {
                host: host_of(url),
                address,
                class,
            });
        }
        Ok(&self.guarded)
    }

    /// Calls `url` with `method`, `prepare` adding headers and a body;
    /// gives up after `timeout` (at most [`CEILING`]) and reads the body
    /// as `limit` says.
    pub async fn call(
        &self,
        method: Method,
        url: Url,
        timeout: Duration,
        limit: BodyLimit,
        prepare: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Answer, OutboundError> {
        let timeout = timeout.min(CEILING);
        let host = host_of(&url);
        let client = self.client_for(&url)?;
        let request = prepare(client.request(method, url).timeout(timeout));
        let failed = |error: reqwest::Error| failure(error, &host, timeout);
        let mut response = request.send().await.map_err(failed)?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            return Err(OutboundError::Redirect { status });
        }
        let content_type = media_type(response.headers().get(reqwest::header::CONTENT_TYPE));
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(CEILING));
        let cap = match limit {
            BodyLimit::Ignore => {
                return Ok(Answer {
                    status,
                    content_type,
                    body: Vec::new(),
                    retry_after,
                });
            }
            BodyLimit::Cap(cap) => cap,
        };
        let too_large = |content_type: String| OutboundError::TooLarge {
            status,
            content_type,
            cap,
        };
        if response
            .content_length()
            .is_some_and(|length| length > cap as u64)
        {
            return Err(too_large(content_type));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > cap {
                // Dropping the response closes the connection: the rest
                // is never read.
                return Err(too_large(content_type));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            content_type,
            body,
            retry_after,
        })
    }
}

fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or_default().to_owned()
}

/// A connection or transfer error in words, with the address refusal of
/// [`GuardedResolver`] recovered from the chain.
fn failure(error: reqwest::Error, host: &str, timeout: Duration) -> OutboundError {
    if error.is_timeout() {
        return OutboundError::Timeout(timeout);
    }
    let mut causes = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&error);
    while let Some(cause) = source {
        if let Some(OutboundError::Refused {
            host,
            address,
            class,
        }) = cause.downcast_ref::<OutboundError>()
        {
            return OutboundError::Refused {
                host: host.clone(),
                address: *address,
                class,
            };
        }
        causes.push(cause.to_string());
        source = cause.source();
    }
    // reqwest's own text names the URL; the causes say what failed.
    let why = if causes.is_empty() {
        "the request failed".to_owned()
    } else {
        causes.join(": ")
    };
    OutboundError::Transport {
        host: host.to_owned(),
        why,
    }
}

/// The media type of a `Content-Type` header, with parameters dropped and
/// anything but the characters of a media type refused: this is the one
/// piece of an answer an error message repeats.
fn media_type(header: Option<&reqwest::header::HeaderValue>) -> String {
    let text = header
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    let plausible = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/+-.".contains(c));
    if plausible {
        text.to_ascii_lowercase()
    } else {
        "no content type".to_owned()
    }
}

#[cfg(test)]
mod tests;
