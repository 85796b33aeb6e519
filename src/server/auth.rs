//! Per-namespace bearer tokens for the assignment APIs (native and OFREP)
//! and the merge-train gates.
//!
//! A namespace turns authentication on by holding a Secret named
//! [`TOKEN_SECRET`] with the token under the key [`TOKEN_KEY`]; from then on
//! every request for that namespace (its dials, its OFREP mount, the root
//! OFREP mount when it serves that namespace, its gates) needs
//! `Authorization: Bearer <token>` and gets 401 otherwise. Namespaces without
//! the Secret stay open, except that gates tell anonymous callers only what
//! holds a train, never why; `--require-api-token` refuses namespaces
//! without a token as well.
//!
//! The request path never calls the API server: the tokens are read with a
//! `get` by name (the operator never lists or watches Secrets) into a map
//! refreshed every [`REFRESH`], for the watched namespaces (or, watching all,
//! the namespaces the caches hold objects in). A namespace the map has not
//! seen yet is read once on its first request, and only when the caches hold
//! something of it: a request for a namespace with nothing to serve gets the
//! same 404 (or open gate) with or without a token, so it needs no read, and
//! a stream of made-up namespaces costs no API calls. When the Secret cannot
//! be read (and no token was read before), requests for that namespace get
//! 503: a token that may exist is never ignored.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::Response,
};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Resource, runtime::reflector::Store};
use tokio_util::sync::CancellationToken;

use super::alertmanager::{authorized, refuse, token_of};
use crate::api::{ChangeWindow, MergeTrainPause, WeblabDial};

/// The Secret a namespace creates to require a bearer token.
pub const TOKEN_SECRET: &str = "weblab-api-token";
/// The key of the token in [`TOKEN_SECRET`].
pub const TOKEN_KEY: &str = "token";
/// How often the tokens are read again, so that a rotated, added or removed
/// token takes effect without a restart.
const REFRESH: Duration = Duration::from_secs(10);
/// How long one Secret read may take before it counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How many Secrets a refresh reads at once.
const PARALLEL_READS: usize = 8;

/// What a request for a namespace needs, as last read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Guard {
    /// No token Secret: anonymous requests are served.
    Open,
    /// This token is required.
    Token(Arc<[u8]>),
    /// The Secret exists without a usable token, or cannot be read: refused
    /// until it can, with the problem for the caller.
    Broken(String),
}

/// Whether the caller of a request proved it holds the namespace's token;
/// `Authenticated` is inserted into the request's extensions for the
/// handlers, its absence means anonymous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// No token, in a namespace that does not require one.
    Anonymous,
    /// The namespace's token.
    Authenticated,
}

/// Why a request is refused: its status and a sentence for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Refusal {
    status: StatusCode,
    message: String,
}

/// Decides a request from its namespace's guard and its headers.
fn decide(
    guard: &Guard,
    require: bool,
    namespace: &str,
    headers: &HeaderMap,
) -> Result<Access, Refusal> {
    let refusal = |status, message| Err(Refusal { status, message });
    match guard {
        Guard::Token(token) if authorized(headers, token) => Ok(Access::Authenticated),
        Guard::Token(_) => refusal(
            StatusCode::UNAUTHORIZED,
            format!(
                "namespace {namespace:?} requires a bearer token: send Authorization: Bearer <the token in Secret {TOKEN_SECRET}, key {TOKEN_KEY}, of that namespace>"
            ),
        ),
        Guard::Open if require => refusal(
            StatusCode::UNAUTHORIZED,
            format!(
                "this operator requires a bearer token for every namespace and {namespace:?} has none: create Secret {TOKEN_SECRET} with key {TOKEN_KEY} in it and send Authorization: Bearer <token>"
            ),
        ),
        Guard::Open => Ok(Access::Anonymous),
        // The problem (an API error naming the operator's identity, say) is
        // for the operator's log, not for anonymous callers.
        Guard::Broken(_) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the API token of namespace {namespace:?} cannot be checked now: retry later; the operator's log says why"
            ),
        ),
    }
}

/// Reads a namespace's guard from the result of getting its Secret;
/// `previous` is kept through a failed read.
fn guard_of(read: Result<Option<Secret>, String>, previous: Option<Guard>) -> Guard {
    match read {
        Ok(None) => Guard::Open,
        Ok(Some(secret)) => token_of(&secret, TOKEN_KEY).map_or_else(
            || {
                Guard::Broken(format!(
                    "Secret {TOKEN_SECRET} has no non-empty key {TOKEN_KEY}: put the token there"
                ))
            },
            Guard::Token,
        ),
        Err(error) => previous.unwrap_or_else(|| {
            Guard::Broken(format!(
                "Secret {TOKEN_SECRET} cannot be read ({error}); retry later"
            ))
        }),
    }
}

/// The namespace a request path is for, percent-decoded as the handlers'
/// `Path` extractors decode it; `None` for paths outside the guarded APIs.
fn namespace_of<'a>(path: &'a str, root_namespace: Option<&'a str>) -> Option<Cow<'a, str>> {
    let segment = ["/v1/weblabs/", "/v1/gates/", "/namespaces/"]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .map(|rest| rest.split('/').next().unwrap_or_default());
    match segment {
        Some(segment) => percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .ok(),
        None if path == "/ofrep" || path.starts_with("/ofrep/") => {
            root_namespace.map(Cow::Borrowed)
        }
        None => None,
    }
}

/// The caches whose namespaces hold something to serve.
#[derive(Clone)]
pub struct Served {
    /// The dial caches.
    pub dials: Vec<Store<WeblabDial>>,
    /// The merge-train pause caches.
    pub pauses: Vec<Store<MergeTrainPause>>,
    /// The change-window caches.
    pub windows: Vec<Store<ChangeWindow>>,
}

impl Served {
    fn holds(&self, namespace: &str) -> bool {
        holds_in(&self.dials, namespace)
            || holds_in(&self.pauses, namespace)
            || holds_in(&self.windows, namespace)
    }

    fn namespaces(&self) -> HashSet<String> {
        let mut namespaces = HashSet::new();
        namespaces_in(&self.dials, &mut namespaces);
        namespaces_in(&self.pauses, &mut namespaces);
        namespaces_in(&self.windows, &mut namespaces);
        namespaces
    }
}

/// Whether `stores` hold an object in `namespace`; compares in place rather
/// than cloning each object's namespace, as it may scan every object.
fn holds_in<K>(stores: &[Store<K>], namespace: &str) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    stores.iter().any(|store| {
        store
            .find(|object| object.meta().namespace.as_deref() == Some(namespace))
            .is_some()
    })
}

fn namespaces_in<K>(stores: &[Store<K>], namespaces: &mut HashSet<String>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    for object in stores.iter().flat_map(Store::state) {
        if let Some(namespace) = &object.meta().namespace {
            namespaces.insert(namespace.clone());
        }
    }
}

/// How the tokens are configured.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    /// Refuse namespaces without a token too.
    pub require: bool,
    /// The namespace the root OFREP mount serves, if any.
    pub root_namespace: Option<String>,
    /// The watched namespaces; empty: all.
    pub watched: Vec<String>,
}

/// The namespaces' tokens, as last read.
#[derive(Clone)]
pub struct ApiTokens {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    settings: TokenSettings,
    served: Served,
    guards: RwLock<HashMap<String, Guard>>,
    /// Held while a namespace's first read is made on a request, so that a
    /// burst of first requests reads it once.
    first_reads: tokio::sync::Mutex<()>,
}

impl ApiTokens {
    /// Tokens read with `client`, for the namespaces of `served`.
    pub fn new(client: kube::Client, settings: TokenSettings, served: Served) -> Self {
        ApiTokens {
            inner: Arc::new(Inner {
                client,
                settings,
                served,
                guards: RwLock::default(),
                first_reads: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn cached(&self, namespace: &str) -> Option<Guard> {
        self.inner
            .guards
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .cloned()
    }

    async fn read(&self, namespace: &str) -> Result<Option<Secret>, String> {
        let api: Api<Secret> = Api::namespaced(self.inner.client.clone(), namespace);
        match tokio::time::timeout(READ_TIMEOUT, api.get_opt(TOKEN_SECRET)).await {
            Ok(read) => read.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer within {READ_TIMEOUT:?}")),
        }
    }

    /// The guard of `namespace`: from the map, or read now if the caches
    /// hold something of it.
    async fn guard(&self, namespace: &str) -> Guard {
        if let Some(guard) = self.cached(namespace) {
            return guard;
        }
        if !self.inner.served.holds(namespace) {
            return Guard::Open;
        }
        let _one = self.inner.first_reads.lock().await;
        if let Some(guard) = self.cached(namespace) {
            return guard;
        }
        let guard = guard_of(self.read(namespace).await, None);
        self.record(namespace, &guard, None);
        self.inner
            .guards
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(namespace.to_owned(), guard.clone());
        guard
    }

    /// Logs a namespace's guard when it changes: each is a decision about
    /// who may read that namespace.
    fn record(&self, namespace: &str, guard: &Guard, previous: Option<&Guard>) {
        let kind = |guard: Option<&Guard>| match guard {
            None => "unknown",
            Some(Guard::Open) => "open",
            Some(Guard::Token(_)) => "token",
            Some(Guard::Broken(_)) => "broken",
        };
        if kind(Some(guard)) == kind(previous) {
            return;
        }
        match guard {
            Guard::Broken(problem) => tracing::warn!(
                namespace,
                "the API token cannot be checked; requests for this namespace get 503: {problem}"
            ),
            Guard::Token(_) => tracing::info!(
                namespace,
                "the assignment APIs and gates of this namespace require its bearer token"
            ),
            Guard::Open if previous.is_some() => tracing::info!(
                namespace,
                "this namespace has no API token any more; anonymous requests are served"
            ),
            Guard::Open => {}
        }
    }

    /// Reads every known namespace's token again.
    pub async fn refresh(&self) {
        let settings = &self.inner.settings;
        let mut namespaces: HashSet<String> = if settings.watched.is_empty() {
            self.inner.served.namespaces()
        } else {
            settings.watched.iter().cloned().collect()
        };
        namespaces.extend(settings.root_namespace.clone());
        let reads: Vec<(String, Guard)> = stream::iter(namespaces)
            .map(|namespace| async move {
                let previous = self.cached(&namespace);
                let guard = guard_of(self.read(&namespace).await, previous.clone());
                self.record(&namespace, &guard, previous.as_ref());
                (namespace, guard)
            })
            .buffer_unordered(PARALLEL_READS)
            .collect()
            .await;
        *self
            .inner
            .guards
            .write()
            .unwrap_or_else(PoisonError::into_inner) = reads.into_iter().collect();
    }

    /// Refreshes every [`REFRESH`] until `shutdown`.
    pub async fn follow(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(REFRESH) => self.refresh().await,
            }
        }
    }
}

/// Middleware: refuses a request for a namespace whose token it lacks, and
/// tells the handler whether the caller is [`Access::Authenticated`].
pub(crate) async fn authenticate(
    State(tokens): State<ApiTokens>,
    mut request: Request,
    next: Next,
) -> Response {
    let settings = &tokens.inner.settings;
    let Some(namespace) = namespace_of(request.uri().path(), settings.root_namespace.as_deref())
    else {
        return next.run(request).await;
    };
    let guard = tokens.guard(&namespace).await;
    match decide(&guard, settings.require, &namespace, request.headers()) {
        // Only a proof is recorded: an anonymous request (the common case)
        // allocates no extensions map.
        Ok(Access::Authenticated) => {
            request.extensions_mut().insert(Access::Authenticated);
            next.run(request).await
        }
        Ok(Access::Anonymous) => next.run(request).await,
        Err(refusal) => refuse(refusal.status, &refusal.message),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};

    use super::*;

    fn bearer(token: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(token));
        headers
    }

    fn secret(data: Option<&str>) -> Secret {
        Secret {
            data: data.map(|token| {
                [(
                    TOKEN_KEY.to_owned(),
                    k8s_openapi::ByteString(token.as_bytes().to_vec()),
                )]
                .into()
            }),
            ..Secret::default()
        }
    }

    #[test]
    fn a_namespace_with_a_token_refuses_anyone_without_it() {
        let guard = Guard::Token(Arc::from(&b"s3cret"[..]));
        assert_eq!(
            decide(&guard, false, "team-a", &bearer("Bearer s3cret")).ok(),
            Some(Access::Authenticated)
        );
        for headers in [HeaderMap::new(), bearer("Bearer wrong"), bearer("s3cret")] {
            let refused = decide(&guard, false, "team-a", &headers).expect_err("refused");
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
            assert!(
                refused.message.contains(TOKEN_SECRET),
                "{}",
                refused.message
            );
        }
    }

    #[test]
    fn a_namespace_without_a_token_is_open_unless_tokens_are_required() {
        assert_eq!(
            decide(&Guard::Open, false, "team-a", &HeaderMap::new()).ok(),
            Some(Access::Anonymous)
        );
        // A token sent where none is configured proves nothing.
        assert_eq!(
            decide(&Guard::Open, false, "team-a", &bearer("Bearer x")).ok(),
            Some(Access::Anonymous)
        );
        let refused = decide(&Guard::Open, true, "team-a", &HeaderMap::new()).expect_err("refused");
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        let broken = Guard::Broken("cannot be read".to_owned());
        let refused = decide(&broken, false, "team-a", &bearer("Bearer x")).expect_err("refused");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn guards_fail_closed_and_keep_the_last_token_through_errors() {
        assert_eq!(guard_of(Ok(None), None), Guard::Open);
        assert_eq!(
            guard_of(Ok(Some(secret(Some("t0k\n")))), None),
            Guard::Token(Arc::from(&b"t0k"[..]))
        );
        assert!(matches!(
            guard_of(Ok(Some(secret(None))), None),
            Guard::Broken(_)
        ));
        assert!(matches!(
            guard_of(Ok(Some(secret(Some(" ")))), None),
            Guard::Broken(_)
        ));
        assert!(matches!(
            guard_of(Err("forbidden".to_owned()), None),
            Guard::Broken(problem) if problem.contains("forbidden")
        ));
        let token = Guard::Token(Arc::from(&b"t0k"[..]));
        assert_eq!(
            guard_of(Err("timeout".to_owned()), Some(token.clone())),
            token
        );
    }

    #[test]
    fn namespaces_are_read_from_the_guarded_paths() {
        let cases = [
            ("/v1/weblabs/team-a/checkout/treatment", Some("team-a")),
            ("/v1/weblabs/team-a", Some("team-a")),
            ("/v1/gates/team-b/web-main", Some("team-b")),
            ("/namespaces/team-c/ofrep/v1/evaluate/flags", Some("team-c")),
            // Decoded as the handlers decode it, so that an encoded name
            // cannot slip past its token.
            ("/v1/weblabs/te%61m-a/checkout/treatment", Some("team-a")),
            ("/ofrep/v1/evaluate/flags/x", Some("root")),
            ("/ofrep", Some("root")),
            ("/ofrepx", None),
            ("/metrics", None),
            ("/v1/webhooks/alertmanager", None),
        ];
        for (path, namespace) in cases {
            assert_eq!(
                namespace_of(path, Some("root")).as_deref(),
                namespace,
                "{path}"
            );
        }
        assert_eq!(namespace_of("/ofrep/v1/configuration", None), None);
    }
}
