//! OpenFeature Remote Evaluation Protocol (OFREP), following the protocol's
//! OpenAPI document (open-feature/protocol, `service/openapi.yaml`).
//!
//! Each `WeblabDial` is a string flag whose key is the dial's name and whose
//! value and variant are the unit's treatment. The evaluation context's
//! `targetingKey` is the unit, its `realm` attribute selects the realm
//! (optional when the dial has one), and an optional `segments` attribute
//! (a list of strings) carries the unit's segment memberships.
//!
//! Mounted per namespace (`/namespaces/{namespace}/ofrep/v1/...`), so that a
//! provider configured with the base URL `http://host:port/namespaces/team-a`
//! sees that namespace's dials. The root mount (`/ofrep/v1/...`), for
//! providers that cannot be given a path, is off unless the operator names
//! the one namespace it serves (`--ofrep-root-namespace`): a key looked up
//! across namespaces would let any tenant shadow another's flag by creating
//! a dial of the same name, and would answer callers for every namespace.

use std::{
    borrow::Cow,
    fmt::{self, Write as _},
    sync::{Arc, LazyLock},
};

use axum::{
    Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, Extension, Path, State,
        rejection::{BytesRejection, PathRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, IgnoredAny, MapAccess, Visitor},
};
use sha2::{Digest, Sha256};

use crate::view::dials::{CompileError, CompiledDial, DialCatalog, RealmError};

use super::request::{
    Attribute, MAX_BODY_BYTES, Text, check_segments, check_unit, is_json_object, json_response,
    read_body, to_json_response,
};
use crate::assignment::AssignmentReason;

/// The shortest polling interval advertised to client-side providers. Bulk
/// evaluation answers from memory and a 304 costs no transfer, so a second is
/// affordable, and it keeps a rollback at most about a second away from a
/// polling client.
pub(crate) const MIN_POLLING_INTERVAL_MS: u64 = 1000;

/// The namespace the root mount serves.
#[derive(Clone, Debug)]
struct RootNamespace(Arc<str>);

/// The OFREP routes per namespace, and at the root when `root_namespace`
/// names the namespace it serves; otherwise the root answers 404 with the
/// way to the namespaced mount.
pub(crate) fn routes(catalog: Arc<DialCatalog>, root_namespace: Option<&str>) -> Router {
    let root = match root_namespace {
        Some(namespace) => mount(post(evaluate_at_root), post(bulk_at_root))
            .layer(Extension(RootNamespace(namespace.into()))),
        None => Router::new().fallback(root_mount_off),
    };
    Router::new()
        .nest("/ofrep", root)
        .nest(
            "/namespaces/{namespace}/ofrep",
            mount(post(evaluate_in_namespace), post(bulk_in_namespace)),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(catalog)
}

async fn root_mount_off() -> Response {
    general_error(
        StatusCode::NOT_FOUND,
        "the root OFREP mount is off: use the base URL http://<host>:<port>/namespaces/<namespace>, or ask the operator's administrator to serve one namespace at the root (--ofrep-root-namespace)",
    )
}

/// One OFREP mount: the same endpoints at the root and per namespace, only
/// the evaluation handlers differ. Each mount has its own fallback, so that a
/// mistyped path (a base URL with a stray segment, another protocol version)
/// gets a JSON error naming the endpoints, and other paths stay untouched.
fn mount(
    evaluate: MethodRouter<Arc<DialCatalog>>,
    bulk: MethodRouter<Arc<DialCatalog>>,
) -> Router<Arc<DialCatalog>> {
    Router::new()
        .route("/v1/evaluate/flags/{key}", evaluate.fallback(wrong_method))
        .route("/v1/evaluate/flags", bulk.fallback(wrong_method))
        .route(
            "/v1/configuration",
            get(configuration).fallback(wrong_method),
        )
        .fallback(unknown_path)
}
/// OpenFeature error codes used on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    /// The body is not JSON, or not of the request's shape.
    ParseError,
    /// The context has no (or an empty) `targetingKey`.
    TargetingKeyMissing,
    /// The context cannot be evaluated (realm missing or unknown, wrong
    /// attribute types).
    InvalidContext,
    /// No dial has that name.
    FlagNotFound,
    /// Anything else.
    General,
}

impl ErrorCode {
    /// The code as OpenFeature spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::General => "GENERAL",
        }
    }
}

/// Why an evaluation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The OpenFeature error code.
    pub code: ErrorCode,
    /// What is wrong and what to do.
    pub details: String,
    /// The server's fault rather than the request's.
    pub internal: bool,
}

impl Failure {
    fn new(code: ErrorCode, details: impl Into<String>) -> Self {
        Failure {
            code,
            details: details.into(),
            internal: false,
        }
    }

    /// The status of a single-flag evaluation failing this way.
    fn status(&self) -> StatusCode {
        match self.code {
            _ if self.internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::FlagNotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An evaluation request body: `{"context": {...}}`.
#[derive(Debug, Default, Deserialize)]
struct EvaluationRequest<'a> {
    #[serde(default, borrow)]
    context: Option<EvaluationContext<'a>>,
}

/// The attributes of an evaluation context this server reads; others are
/// skipped without being stored.
#[derive(Debug, Default)]
pub(crate) struct EvaluationContext<'a> {
    targeting_key: Option<Attribute<'a>>,
    realm: Option<Attribute<'a>>,
    segments: Option<Attribute<'a>>,
}

/// By hand rather than derived: a derived struct also accepts a JSON array
/// (fields by position), and a context is an object.
impl<'de: 'a, 'a> Deserialize<'de> for EvaluationContext<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContextVisitor;
        impl<'de> Visitor<'de> for ContextVisitor {
            type Value = EvaluationContext<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of context attributes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut context = EvaluationContext::default();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    let slot = match &*key {
                        "targetingKey" => &mut context.targeting_key,
                        "realm" => &mut context.realm,
                        "segments" => &mut context.segments,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(de::Error::custom(format_args!(
                            "the context attribute {key} is given twice"
                        )));
                    }
                    // `null` counts as absent, as it would for a derived field.
                    *slot = match map.next_value::<Attribute<'de>>()? {
                        Attribute::Null => None,
                        value => Some(value),
                    };
                }
                Ok(context)
            }
        }
        deserializer.deserialize_map(ContextVisitor)
    }
}

const REQUEST_EXAMPLE: &str =
    r#"{"context": {"targetingKey": "customer-1", "realm": "NA", "segments": ["beta"]}}"#;

/// Reads an evaluation request body (single or bulk): a JSON object whose
/// optional `context` is an object.
pub(crate) fn parse_request(body: &[u8]) -> Result<EvaluationContext<'_>, Failure> {
    if !is_json_object(body) {
        return Err(Failure::new(
            ErrorCode::ParseError,
            format!("the body must be a JSON object such as {REQUEST_EXAMPLE}"),
        ));
    }
    let request: EvaluationRequest = serde_json::from_slice(body).map_err(|error| {
        Failure::new(
            ErrorCode::ParseError,
            format!("the body is not a valid evaluation request ({error}); send an object such as {REQUEST_EXAMPLE}"),
        )
    })?;
    Ok(request.context.unwrap_or_default())
}

/// Who is being evaluated, read from a context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Subject<'a> {
    /// The unit (`targetingKey`).
    pub unit: Cow<'a, str>,
    /// The requested realm.
    pub realm: Option<Cow<'a, str>>,
    /// The segments the unit belongs to.
    pub segments: Vec<String>,
}

impl<'a> EvaluationContext<'a> {
    /// The subject of the evaluation, or why the context cannot give one.
    pub fn subject(&self) -> Result<Subject<'a>, Failure> {
        let unit = match &self.targeting_key {
            None => {
                return Err(Failure::new(
                    ErrorCode::TargetingKeyMissing,
                    "the evaluation context has no targetingKey: set it to the unit (customer, device or session) to assign",
                ));
            }
            Some(Attribute::Text(unit)) if unit.is_empty() => {
                return Err(Failure::new(
                    ErrorCode::TargetingKeyMissing,
                    "the evaluation context's targetingKey is empty: set it to the unit (customer, device or session) to assign",
                ));
            }
            Some(Attribute::Text(unit)) => unit.clone(),
            Some(other) => {
                return Err(Failure::new(
                    ErrorCode::InvalidContext,
                    format!(
                        "the targetingKey is {}; it must be a string: the unit id",
                        other.kind()
                    ),
                ));
            }
        };
        check_unit(&unit).map_err(|error| {
            Failure::new(
                ErrorCode::InvalidContext,
                format!("the targetingKey {error}"),
            )
        })?;
        let realm = match &self.realm {
            None | Some(Attribute::Null) => None,
            Some(Attribute::Text(realm)) => Some(realm.clone()),
            Some(other) => {
                return Err(Failure::new(
                    ErrorCode::InvalidContext,
                    format!(
                        "the realm attribute is {}; it must be a string such as \"NA\"",
                        other.kind()
                    ),
                ));
            }
        };
        let segments = match &self.segments {
            None | Some(Attribute::Null) => Vec::new(),
            Some(Attribute::List(items)) => items
                .iter()
                .map(|item| match item {
                    Attribute::Text(segment) => Ok(segment.clone().into_owned()),
                    other => Err(Failure::new(
                        ErrorCode::InvalidContext,
                        format!(
                            "the segments attribute holds {}; it must be a list of strings such as [\"beta\"]",
                            other.kind()
                        ),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(Failure::new(
                    ErrorCode::InvalidContext,
                    format!(
                        "the segments attribute is {}; it must be a list of strings such as [\"beta\"]",
                        other.kind()
                    ),
                ));
            }
        };
        check_segments(&segments)
            .map_err(|error| Failure::new(ErrorCode::InvalidContext, error))?;
        Ok(Subject {
            unit,
            realm,
            segments,
        })
    }
}

/// A successful evaluation (`evaluationSuccess`).
#[derive(Debug, Serialize)]
pub(crate) struct Success<'a> {
    key: &'a str,
    value: &'a str,
    variant: &'a str,
    reason: &'static str,
    metadata: Metadata<'a>,
}

/// Flag metadata: only strings and numbers, as the protocol allows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    /// `override`, `allocation`, `rollback` or `default`.
    assignment: &'static str,
    realm: &'a str,
    weblab: &'a str,
    namespace: &'a str,
    generation: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
}

/// A failed evaluation (`evaluationFailure`, `flagNotFound`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FailureBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    error_code: &'static str,
    error_details: String,
}

impl<'a> FailureBody<'a> {
    fn of(key: Option<&'a str>, failure: Failure) -> Self {
        FailureBody {
            key,
            error_code: failure.code.as_str(),
            error_details: failure.details,
        }
    }
}

/// The OpenFeature reason for an assignment reason.
pub(crate) fn openfeature_reason(reason: AssignmentReason) -> &'static str {
    match reason {
        AssignmentReason::Override => "TARGETING_MATCH",
        AssignmentReason::Allocation | AssignmentReason::Rollback => "SPLIT",
        AssignmentReason::Default => "DEFAULT",
    }
}

/// Evaluates `dial` for `subject`.
pub(crate) fn evaluate<'a>(
    dial: &'a CompiledDial,
    subject: &Subject<'_>,
) -> Result<Success<'a>, Failure> {
    let realm = dial.realm(subject.realm.as_deref()).map_err(|error| {
        let details = match error {
            RealmError::Required => format!(
                "the flag {} has several realms ({}): set the context attribute realm to one of them",
                dial.name,
                dial.realm_list()
            ),
            RealmError::Unknown(realm) => format!(
                "realm {realm:?} is not one of the flag {}'s realms ({}): set the context attribute realm to one of those",
                dial.name,
                dial.realm_list()
            ),
        };
        Failure::new(ErrorCode::InvalidContext, details)
    })?;
    let assignment = dial.assign(realm, &subject.unit, &subject.segments);
    Ok(Success {
        key: &dial.name,
        value: assignment.treatment,
        variant: assignment.treatment,
        reason: openfeature_reason(assignment.reason),
        metadata: Metadata {
            assignment: crate::view::dials::reason_label(assignment.reason),
            realm: &realm.name,
            weblab: &dial.weblab,
            namespace: &dial.namespace,
            generation: dial.generation,
            observed_generation: dial.observed_generation,
        },
    })
}

async fn evaluate_at_root(
    State(catalog): State<Arc<DialCatalog>>,
    Extension(RootNamespace(namespace)): Extension<RootNamespace>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match path {
        Ok(Path(key)) => evaluate_one(&catalog, &namespace, &key, body),
        Err(rejection) => path_failure(&rejection),
    }
}

async fn evaluate_in_namespace(
    State(catalog): State<Arc<DialCatalog>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match path {
        Ok(Path((namespace, key))) => evaluate_one(&catalog, &namespace, &key, body),
        Err(rejection) => path_failure(&rejection),
    }
}

fn evaluate_one(
    catalog: &DialCatalog,
    namespace: &str,
    key: &str,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !catalog.is_ready() {
        return not_ready(Some(key));
    }
    let body = match read_body(body) {
        Ok(body) => body,
        Err(error) => {
            let failure = Failure::new(ErrorCode::General, error.to_string());
            return to_json_response(error.status(), &FailureBody::of(Some(key), failure));
        }
    };
    let outcome = parse_request(&body).and_then(|context| {
        let dial = find_flag(catalog, namespace, key)?;
        let subject = context.subject()?;
        let success = evaluate(&dial, &subject)?;
        Ok(to_json_response(StatusCode::OK, &success))
    });
    outcome.unwrap_or_else(|failure| {
        to_json_response(failure.status(), &FailureBody::of(Some(key), failure))
    })
}

fn find_flag(
    catalog: &DialCatalog,
    namespace: &str,
    key: &str,
) -> Result<Arc<CompiledDial>, Failure> {
    let found = catalog.get(namespace, key).ok_or_else(|| {
        Failure::new(
            ErrorCode::FlagNotFound,
            format!(
                "no flag {key:?} in namespace {namespace:?}: the key is a WeblabDial's name (kubectl -n {namespace} get weblabdials)"
            ),
        )
    })?;
    found.map_err(|error| compile_failure(key, &error))
}

/// A dial the CRD's validation should have refused: not the client's fault.
fn compile_failure(key: &str, error: &CompileError) -> Failure {
    Failure {
        internal: true,
        ..Failure::new(
            ErrorCode::General,
            format!(
                "the flag {key:?} cannot be evaluated because {error}: fix the WeblabDial's spec"
            ),
        )
    }
}

async fn bulk_at_root(
    State(catalog): State<Arc<DialCatalog>>,
    Extension(RootNamespace(namespace)): Extension<RootNamespace>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    bulk(&catalog, &namespace, &headers, body)
}

async fn bulk_in_namespace(
    State(catalog): State<Arc<DialCatalog>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match path {
        Ok(Path(namespace)) => bulk(&catalog, &namespace, &headers, body),
        Err(rejection) => path_failure(&rejection),
    }
}

/// One flag of a bulk answer.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum BulkFlag<'a> {
    Success(Success<'a>),
    Failure(FailureBody<'a>),
}

#[derive(Debug, Serialize)]
struct BulkAnswer<'a> {
    flags: Vec<BulkFlag<'a>>,
}

/// Evaluates every flag in scope. Request-level problems (a body that is
/// not an evaluation request) fail the whole request; everything that
/// depends on the flag (its realms) or applies to each flag alike (a missing
/// targeting key) is reported per flag, as the protocol's
/// `bulkEvaluationSuccess` allows, so that a client still gets the rest.
fn bulk(
    catalog: &DialCatalog,
    namespace: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !catalog.is_ready() {
        return not_ready(None);
    }
    let body = match read_body(body) {
        Ok(body) => body,
        Err(error) => {
            let failure = Failure::new(ErrorCode::General, error.to_string());
            return to_json_response(error.status(), &FailureBody::of(None, failure));
        }
    };
    let context = match parse_request(&body) {
        Ok(context) => context,
        Err(failure) => {
            return to_json_response(StatusCode::BAD_REQUEST, &FailureBody::of(None, failure));
        }
    };
    let subject = context.subject();
    let dials = catalog.all(namespace);
    let flags = dials
        .iter()
        .map(|(dial, compiled)| {
            let name = dial.metadata.name.as_deref().unwrap_or_default();
            let outcome = match (compiled, &subject) {
                (Err(error), _) => Err(compile_failure(name, error)),
                (Ok(_), Err(failure)) => Err(failure.clone()),
                (Ok(compiled), Ok(subject)) => evaluate(compiled, subject),
            };
            match outcome {
                Ok(success) => BulkFlag::Success(success),
                Err(failure) => BulkFlag::Failure(FailureBody::of(Some(name), failure)),
            }
        })
        .collect();
    let answer = BulkAnswer { flags };
    match serde_json::to_vec(&answer) {
        Ok(bytes) => with_etag(headers, bytes),
        Err(error) => {
            tracing::error!(%error, "cannot serialize a bulk evaluation");
            general_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server could not serialize its answer; please report this",
            )
        }
    }
}

/// The configuration answer, the same for every mount.
static CONFIGURATION: LazyLock<Vec<u8>> = LazyLock::new(|| {
    serde_json::json!({
        "name": "weblab-operator",
        "capabilities": {
            "cacheInvalidation": {
                "polling": {"enabled": true, "minPollingIntervalMs": MIN_POLLING_INTERVAL_MS},
            },
            "flagEvaluation": {"supportedTypes": ["string"]},
            // Server-side providers should not cache evaluations: a rollback
            // must reach them at once, and evaluating here is cheap.
            "caching": {"enabled": false},
        },
    })
    .to_string()
    .into_bytes()
});

async fn configuration(headers: HeaderMap) -> Response {
    with_etag(&headers, CONFIGURATION.clone())
}

/// A strong entity tag for a response body: the first 16 bytes of its
/// SHA-256, quoted.
pub(crate) fn entity_tag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for byte in digest.iter().take(16) {
        // Writing to a String cannot fail.
        let _ = write!(tag, "{byte:02x}");
    }
    tag.push('"');
    tag
}

/// Whether an `If-None-Match` header matches `tag`, comparing weakly as
/// RFC 9110 says for this header.
pub(crate) fn none_match(header: Option<&HeaderValue>, tag: &str) -> bool {
    let Some(Ok(value)) = header.map(HeaderValue::to_str) else {
        return false;
    };
    if value.trim() == "*" {
        return true;
    }
    value.split(',').any(|candidate| {
        let candidate = candidate.trim();
        candidate.strip_prefix("W/").unwrap_or(candidate) == tag
    })
}

/// 200 with an `ETag`, or 304 without a body when the client has it.
fn with_etag(headers: &HeaderMap, body: Vec<u8>) -> Response {
    let tag = entity_tag(&body);
    let etag = HeaderValue::from_str(&tag).ok();
    let mut response = if none_match(headers.get(header::IF_NONE_MATCH), &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        json_response(StatusCode::OK, body)
    };
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

const ENDPOINTS: &str = "POST <base>/ofrep/v1/evaluate/flags/<key>, POST <base>/ofrep/v1/evaluate/flags, GET <base>/ofrep/v1/configuration, where <base> is http://<host>:<port>/namespaces/<namespace> (or http://<host>:<port> when the operator serves a namespace at the root)";

async fn wrong_method() -> Response {
    general_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("this method is not served here; the endpoints are {ENDPOINTS}"),
    )
}

async fn unknown_path() -> Response {
    general_error(
        StatusCode::NOT_FOUND,
        &format!("no such OFREP endpoint; the endpoints are {ENDPOINTS}"),
    )
}

fn not_ready(key: Option<&str>) -> Response {
    let failure = Failure::new(
        ErrorCode::General,
        "this replica is still loading its WeblabDial caches: retry in a second (GET /readyz answers 200 once it serves)",
    );
    let mut response = to_json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &FailureBody::of(key, failure),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn general_error(status: StatusCode, details: &str) -> Response {
    let failure = Failure::new(ErrorCode::General, details);
    to_json_response(status, &FailureBody::of(None, failure))
}

fn path_failure(rejection: &PathRejection) -> Response {
    general_error(
        StatusCode::BAD_REQUEST,
        &format!(
            "the path cannot be read ({}): use /ofrep/v1/evaluate/flags/<key> or /namespaces/<namespace>/ofrep/v1/evaluate/flags/<key>",
            rejection.body_text()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::dials::tests::{catalog_with, dial, serve, two_realm_dial};

    fn subject(body: &str) -> Result<Subject<'_>, Failure> {
        parse_request(body.as_bytes()).and_then(|context| context.subject())
    }

    fn code(body: &str) -> Option<ErrorCode> {
        subject(body).err().map(|failure| failure.code)
    }

    #[test]
    fn a_context_gives_unit_realm_and_segments() {
        let read = subject(
            r#"{"context": {"targetingKey": "customer-1", "realm": "NA", "segments": ["beta", "staff"], "email": "x@example.com", "nested": {"a": [1]}}}"#,
        )
        .expect("valid");
        assert_eq!(read.unit, "customer-1");
        assert!(
            matches!(read.unit, Cow::Borrowed(_)),
            "borrowed from the body"
        );
        assert_eq!(read.realm.as_deref(), Some("NA"));
        assert_eq!(read.segments, ["beta", "staff"]);
        let read =
            subject(r#"{"context": {"targetingKey": "u", "realm": null, "segments": null}}"#)
                .expect("valid");
        assert_eq!((read.realm, read.segments.len()), (None, 0));
    }

    #[test]
    fn malformed_bodies_are_parse_errors() {
        for body in [
            "",
            "not json",
            "[]",
            r#"["context"]"#,
            "{",
            r#"{"context": 5}"#,
            r#"{"context": []}"#,
        ] {
            assert_eq!(code(body), Some(ErrorCode::ParseError), "{body:?}");
        }
    }

    #[test]
    fn a_missing_or_empty_targeting_key_is_reported_as_such() {
        for body in [
            "{}",
            r#"{"context": null}"#,
            r#"{"context": {}}"#,
            r#"{"context": {"targetingKey": ""}}"#,
            r#"{"context": {"targetingKey": null}}"#,
        ] {
            assert_eq!(code(body), Some(ErrorCode::TargetingKeyMissing), "{body:?}");
        }
    }

    #[test]
    fn attributes_of_the_wrong_type_are_invalid_context() {
        let long_key = format!(
            r#"{{"context": {{"targetingKey": "{}"}}}}"#,
            "k".repeat(300)
        );
        for body in [
            r#"{"context": {"targetingKey": 42}}"#,
            r#"{"context": {"targetingKey": "u", "realm": 1}}"#,
            r#"{"context": {"targetingKey": "u", "realm": ["NA"]}}"#,
            r#"{"context": {"targetingKey": "u", "segments": "beta"}}"#,
            r#"{"context": {"targetingKey": "u", "segments": ["beta", 3]}}"#,
            r#"{"context": {"targetingKey": "u", "segments": [""]}}"#,
            long_key.as_str(),
        ] {
            assert_eq!(code(body), Some(ErrorCode::InvalidContext), "{body:?}");
        }
        let failure = subject(r#"{"context": {"targetingKey": "u", "realm": true}}"#)
            .expect_err("a boolean realm");
        assert!(failure.details.contains("a boolean"), "{}", failure.details);
    }

    #[test]
    fn evaluations_map_reasons_and_carry_metadata() {
        let dial =
            CompiledDial::compile(&two_realm_dial("team-a", "checkout", "1")).expect("compiles");
        let evaluate_json = |body: &str| {
            let subject = subject(body).expect("valid context");
            evaluate(&dial, &subject)
                .map(|success| serde_json::to_value(success).expect("serializes"))
        };
        let pinned = evaluate_json(r#"{"context": {"targetingKey": "alice", "realm": "NA"}}"#)
            .expect("evaluates");
        assert_eq!(
            pinned,
            serde_json::json!({
                "key": "checkout", "value": "T1", "variant": "T1", "reason": "TARGETING_MATCH",
                "metadata": {
                    "assignment": "override", "realm": "NA", "weblab": "CHECKOUT_1",
                    "namespace": "team-a", "generation": 3, "observedGeneration": 2,
                },
            })
        );
        let split = evaluate_json(r#"{"context": {"targetingKey": "bob", "realm": "NA"}}"#)
            .expect("evaluates");
        assert_eq!(split["reason"], "SPLIT");
        assert_eq!(split["metadata"]["assignment"], "allocation");
        let default = evaluate_json(r#"{"context": {"targetingKey": "bob", "realm": "EU"}}"#)
            .expect("evaluates");
        assert_eq!(
            (&default["reason"], &default["value"]),
            (&"DEFAULT".into(), &"C".into())
        );

        let missing =
            evaluate_json(r#"{"context": {"targetingKey": "bob"}}"#).expect_err("two realms");
        assert_eq!(missing.code, ErrorCode::InvalidContext);
        assert!(missing.details.contains("NA, EU"), "{}", missing.details);
        let unknown = evaluate_json(r#"{"context": {"targetingKey": "bob", "realm": "FE"}}"#)
            .expect_err("no FE");
        assert_eq!(unknown.code, ErrorCode::InvalidContext);
    }

    #[test]
    fn a_rollback_is_a_split_with_its_own_assignment_metadata() {
        assert_eq!(openfeature_reason(AssignmentReason::Rollback), "SPLIT");
        let mut rolled_back = two_realm_dial("team-a", "checkout", "1");
        if let Some(status) = rolled_back.status.as_mut() {
            status.realms[0].rolled_back = true;
        }
        let dial = CompiledDial::compile(&rolled_back).expect("compiles");
        let subject =
            subject(r#"{"context": {"targetingKey": "bob", "realm": "NA"}}"#).expect("valid");
        let success = serde_json::to_value(evaluate(&dial, &subject).expect("evaluates"))
            .expect("serializes");
        assert_eq!(success["reason"], "SPLIT");
        assert_eq!(success["metadata"]["assignment"], "rollback");
    }

    #[test]
    fn entity_tags_are_strong_and_matched_weakly() {
        let tag = entity_tag(b"{\"flags\":[]}");
        assert_eq!(tag.len(), 34);
        assert!(tag.starts_with('"') && tag.ends_with('"'));
        assert_ne!(tag, entity_tag(b"{\"flags\":[1]}"));
        let header = |text: &str| HeaderValue::from_str(text).expect("a header value");
        assert!(none_match(Some(&header(&tag)), &tag));
        assert!(none_match(
            Some(&header(&format!("\"other\", W/{tag}"))),
            &tag
        ));
        assert!(none_match(Some(&header("*")), &tag));
        assert!(!none_match(Some(&header("\"other\"")), &tag));
        assert!(!none_match(None, &tag));
    }

    #[test]
    fn the_configuration_advertises_string_flags_and_polling() {
        let configuration: serde_json::Value =
            serde_json::from_slice(&CONFIGURATION).expect("JSON");
        assert_eq!(configuration["name"], "weblab-operator");
        let capabilities = &configuration["capabilities"];
        assert_eq!(
            capabilities["flagEvaluation"]["supportedTypes"],
            serde_json::json!(["string"])
        );
        assert_eq!(
            capabilities["cacheInvalidation"]["polling"]["enabled"],
            true
        );
        assert_eq!(
            capabilities["cacheInvalidation"]["polling"]["minPollingIntervalMs"],
            MIN_POLLING_INTERVAL_MS
        );
    }

    async fn post(
        url: &str,
        body: &'static str,
        if_none_match: Option<&str>,
    ) -> (u16, HeaderMap, String) {
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(tag) = if_none_match {
            request = request.header("if-none-match", tag);
        }
        let response = request.send().await.expect("answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.expect("a body"))
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_else(|error| panic!("{text:?} is not JSON: {error}"))
    }

    #[tokio::test]
    async fn single_evaluations_over_http_at_the_root_and_per_namespace() {
        // The root serves team-b only.
        let single_realm = dial(
            "team-b",
            "banner",
            "1",
            serde_json::json!({"spec": {
                "weblab": "BANNER", "treatments": ["C", "T1"], "realms": ["NA"], "allocation": {"C": 100},
            }}),
        );
        let (catalog, _writer) = catalog_with(&[
            two_realm_dial("team-a", "checkout", "1"),
            two_realm_dial("team-b", "checkout", "1"),
            single_realm,
        ]);
        let base = serve(routes(Arc::new(catalog), Some("team-b"))).await;
        let context = r#"{"context": {"targetingKey": "alice", "realm": "NA"}}"#;

        let (status, _, body) = post(
            &format!("{base}/namespaces/team-a/ofrep/v1/evaluate/flags/checkout"),
            context,
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["metadata"]["namespace"], "team-a");

        // At the root a name in two namespaces is the root namespace's.
        let (status, _, body) = post(
            &format!("{base}/ofrep/v1/evaluate/flags/checkout"),
            context,
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["metadata"]["namespace"], "team-b");

        // A single realm need not be named.
        let (status, _, body) = post(
            &format!("{base}/ofrep/v1/evaluate/flags/banner"),
            r#"{"context": {"targetingKey": "bob"}}"#,
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["metadata"]["realm"], "NA");

        for (url, body, status, code) in [
            (
                format!("{base}/ofrep/v1/evaluate/flags/nope"),
                context,
                404,
                "FLAG_NOT_FOUND",
            ),
            (
                format!("{base}/namespaces/team-c/ofrep/v1/evaluate/flags/banner"),
                context,
                404,
                "FLAG_NOT_FOUND",
            ),
            (
                format!("{base}/ofrep/v1/evaluate/flags/banner"),
                "{",
                400,
                "PARSE_ERROR",
            ),
            (
                format!("{base}/ofrep/v1/evaluate/flags/banner"),
                "{}",
                400,
                "TARGETING_KEY_MISSING",
            ),
            (
                format!("{base}/namespaces/team-a/ofrep/v1/evaluate/flags/checkout"),
                r#"{"context": {"targetingKey": "a"}}"#,
                400,
                "INVALID_CONTEXT",
            ),
        ] {
            let (got, _, text) = post(&url, body, None).await;
            assert_eq!(got, status, "{url} {body}: {text}");
            let failure = json(&text);
            assert_eq!(failure["errorCode"], code, "{url} {body}");
            assert!(
                failure["errorDetails"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty())
            );
        }

        for (method, url, status) in [
            (
                reqwest::Method::GET,
                format!("{base}/ofrep/v1/evaluate/flags/banner"),
                405,
            ),
            (
                reqwest::Method::POST,
                format!("{base}/ofrep/v1/configuration"),
                405,
            ),
            (
                reqwest::Method::POST,
                format!("{base}/ofrep/v2/evaluate/flags/banner"),
                404,
            ),
            (
                reqwest::Method::POST,
                format!("{base}/namespaces/team-b/ofrep/v1/flags/banner"),
                404,
            ),
        ] {
            let response = reqwest::Client::new()
                .request(method.clone(), &url)
                .send()
                .await
                .expect("answers");
            assert_eq!(response.status().as_u16(), status, "{method} {url}");
            let failure = json(&response.text().await.expect("a body"));
            assert_eq!(failure["errorCode"], "GENERAL", "{method} {url}");
            assert!(
                failure["errorDetails"]
                    .as_str()
                    .is_some_and(|d| d.contains("/ofrep/v1/"))
            );
        }

        let huge = reqwest::Client::new()
            .post(format!("{base}/ofrep/v1/evaluate/flags/banner"))
            .body(vec![b' '; MAX_BODY_BYTES + 1])
            .send()
            .await
            .expect("answers");
        assert_eq!(huge.status().as_u16(), 413);
        assert!(json(&huge.text().await.expect("a body"))["errorDetails"].is_string());
    }

    #[tokio::test]
    async fn bulk_evaluation_reports_per_flag_errors_and_honours_etags() {
        let (catalog, mut writer) = catalog_with(&[
            two_realm_dial("team-a", "checkout", "1"),
            two_realm_dial("team-b", "checkout", "1"),
            two_realm_dial("team-a", "search", "1"),
        ]);
        let base = serve(routes(Arc::new(catalog), Some("team-b"))).await;
        let url = format!("{base}/namespaces/team-a/ofrep/v1/evaluate/flags");
        let context = r#"{"context": {"targetingKey": "bob", "realm": "NA"}}"#;

        let (status, headers, body) = post(&url, context, None).await;
        assert_eq!(status, 200, "{body}");
        let flags = json(&body)["flags"].clone();
        let keys: Vec<&str> = flags
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["key"].as_str())
            .collect();
        assert_eq!(keys, ["checkout", "search"]);
        assert_eq!(flags[0]["reason"], "SPLIT");
        let tag = headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .expect("an ETag")
            .to_owned();
        assert_eq!(tag, entity_tag(body.as_bytes()));

        let (status, _, body) = post(&url, context, Some(&tag)).await;
        assert_eq!((status, body.as_str()), (304, ""));

        // A change to a dial changes the answer and its tag.
        let mut changed = two_realm_dial("team-a", "search", "2");
        if let Some(status) = changed.status.as_mut() {
            status.realms[0].rolled_back = true;
        }
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(changed));
        let (status, headers, body) = post(&url, context, Some(&tag)).await;
        assert_eq!(status, 200, "{body}");
        assert_ne!(
            headers.get("etag").and_then(|v| v.to_str().ok()),
            Some(tag.as_str())
        );
        assert_eq!(
            json(&body)["flags"][1]["metadata"]["assignment"],
            "rollback"
        );

        // Without a realm, each two-realm flag fails on its own.
        let (status, _, body) = post(&url, r#"{"context": {"targetingKey": "bob"}}"#, None).await;
        assert_eq!(status, 200, "{body}");
        let flags = json(&body)["flags"].clone();
        assert_eq!(flags[0]["errorCode"], "INVALID_CONTEXT");
        assert_eq!(flags[1]["key"], "search");

        // At the root, the root namespace's flags only.
        let (status, _, body) =
            post(&format!("{base}/ofrep/v1/evaluate/flags"), context, None).await;
        assert_eq!(status, 200, "{body}");
        let flags = json(&body)["flags"].clone();
        assert_eq!(flags.as_array().map(Vec::len), Some(1), "{body}");
        assert_eq!(flags[0]["key"], "checkout");
        assert_eq!(flags[0]["metadata"]["namespace"], "team-b");

        // Missing targeting key: every flag says so.
        let (_, _, body) = post(&url, "{}", None).await;
        let flags = json(&body)["flags"].clone();
        assert!(
            flags
                .as_array()
                .into_iter()
                .flatten()
                .all(|f| f["errorCode"] == "TARGETING_KEY_MISSING")
        );

        let (status, _, body) = post(&url, "[]", None).await;
        assert_eq!(status, 400);
        assert_eq!(json(&body)["errorCode"], "PARSE_ERROR");
    }

    #[tokio::test]
    async fn the_configuration_is_served_on_both_mounts_with_an_etag() {
        let (catalog, _writer) = catalog_with(&[]);
        let base = serve(routes(Arc::new(catalog), Some("team-a"))).await;
        for url in [
            format!("{base}/ofrep/v1/configuration"),
            format!("{base}/namespaces/team-a/ofrep/v1/configuration"),
        ] {
            let response = reqwest::get(&url).await.expect("answers");
            assert_eq!(response.status().as_u16(), 200);
            let tag = response.headers().get("etag").cloned().expect("an ETag");
            assert_eq!(
                json(&response.text().await.expect("a body"))["name"],
                "weblab-operator"
            );
            let again = reqwest::Client::new()
                .get(&url)
                .header("if-none-match", tag)
                .send()
                .await
                .expect("answers");
            assert_eq!(again.status().as_u16(), 304);
        }
    }

    #[tokio::test]
    async fn the_root_mount_is_off_unless_a_namespace_is_named() {
        let (catalog, _writer) = catalog_with(&[two_realm_dial("team-a", "checkout", "1")]);
        let base = serve(routes(Arc::new(catalog), None)).await;
        let context = r#"{"context": {"targetingKey": "alice", "realm": "NA"}}"#;
        for url in [
            format!("{base}/ofrep/v1/evaluate/flags/checkout"),
            format!("{base}/ofrep/v1/evaluate/flags"),
        ] {
            let (status, _, body) = post(&url, context, None).await;
            assert_eq!(status, 404, "{url}: {body}");
            let failure = json(&body);
            assert_eq!(failure["errorCode"], "GENERAL");
            assert!(
                failure["errorDetails"]
                    .as_str()
                    .is_some_and(|d| d.contains("--ofrep-root-namespace")),
                "{body}"
            );
        }
        let (status, _, body) = post(
            &format!("{base}/namespaces/team-a/ofrep/v1/evaluate/flags/checkout"),
            context,
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
}
