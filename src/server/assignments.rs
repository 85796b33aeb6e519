//! The native treatment-assignment API (JSON): one unit by `GET`, up to
//! [`MAX_BATCH_UNITS`] units by `POST`, answered from the informer caches by
//! every replica, leader or not.
//!
//! - `GET /v1/weblabs/{namespace}/{name}/treatment?unit=U&realm=R&segment=S`
//! - `POST /v1/weblabs/{namespace}/{name}/treatments` with
//!   `{"realm": R, "units": [..], "segments": [..]}`
//!
//! Every error is `{"error": "<what is wrong and what to do>"}` with a 4xx
//! status for anything the client sent.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, Path, RawQuery, State,
        rejection::{BytesRejection, PathRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use super::request::{
    MAX_BODY_BYTES, Text, check_segments, check_unit, declares_json, decode_query, is_json_object,
    read_body, to_json_response,
};
use crate::view::dials::{CompileError, CompiledDial, DialCatalog, RealmError, reason_label};

/// The most units one batch request may ask for.
pub(crate) const MAX_BATCH_UNITS: usize = 1000;

/// The native API's routes.
pub(crate) fn routes(catalog: Arc<DialCatalog>) -> Router {
    let api = Router::new()
        .route(
            "/{namespace}/{name}/treatment",
            get(treatment).fallback(wrong_method),
        )
        .route(
            "/{namespace}/{name}/treatments",
            post(treatments).fallback(wrong_method),
        )
        // Nested with its own fallback, so that mistyped paths under the
        // prefix get the same JSON errors and other paths stay untouched.
        .fallback(unknown_path);
    Router::new()
        .nest("/v1/weblabs", api)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(catalog)
}

const ENDPOINTS: &str = "GET /v1/weblabs/<namespace>/<name>/treatment?unit=<unit>&realm=<realm> or POST /v1/weblabs/<namespace>/<name>/treatments";

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("this method is not served here: use {ENDPOINTS}"),
    )
}

async fn unknown_path() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: use {ENDPOINTS}"),
    )
}

/// A failed request: its status and a sentence for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What is wrong and what to do.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = to_json_response(
            self.status,
            &ErrorBody {
                error: &self.message,
            },
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// What a `GET .../treatment` asks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TreatmentQuery {
    /// The unit to assign.
    pub unit: String,
    /// The realm, when given.
    pub realm: Option<String>,
    /// The segments the unit belongs to.
    pub segments: Vec<String>,
}

/// Reads the query parameters of a `GET .../treatment`. Unknown parameters
/// are refused, so that a typo (`segments=`, `units=`) is not silently
/// ignored and answered with the wrong treatment.
pub(crate) fn parse_treatment_query(
    pairs: Vec<(String, String)>,
) -> Result<TreatmentQuery, ApiError> {
    let mut unit = None;
    let mut query = TreatmentQuery::default();
    for (key, value) in pairs {
        match key.as_str() {
            "unit" if unit.is_some() => {
                return Err(ApiError::bad_request(
                    "unit is given more than once: ask for one unit per GET, or POST up to 1000 to .../treatments",
                ));
            }
            "unit" => unit = Some(value),
            "realm" if query.realm.is_some() => {
                return Err(ApiError::bad_request(
                    "realm is given more than once: give one realm",
                ));
            }
            "realm" => query.realm = Some(value),
            "segment" => query.segments.push(value),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: the parameters are unit, realm and segment (repeat it for several segments)"
                )));
            }
        }
    }
    let Some(unit) = unit else {
        return Err(ApiError::bad_request(
            "the query needs unit=<unit id>: the customer, device or session to assign",
        ));
    };
    check_unit(&unit).map_err(|error| ApiError::bad_request(format!("unit {error}")))?;
    check_segments(&query.segments).map_err(ApiError::bad_request)?;
    query.unit = unit;
    Ok(query)
}

/// A `POST .../treatments` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest<'a> {
    /// The realm; may be omitted when the dial has one realm.
    #[serde(default, borrow)]
    pub realm: Option<Text<'a>>,
    /// The units to assign.
    #[serde(borrow)]
    pub units: Vec<Text<'a>>,
    /// The segments every unit of the batch belongs to.
    #[serde(default)]
    pub segments: Vec<String>,
}

const BATCH_EXAMPLE: &str =
    r#"{"realm": "NA", "units": ["customer-1", "customer-2"], "segments": ["beta"]}"#;

/// Reads and checks a batch request: JSON content type (415 otherwise), a
/// JSON object of the right shape, at most [`MAX_BATCH_UNITS`] valid units.
pub(crate) fn parse_batch<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
) -> Result<BatchRequest<'a>, ApiError> {
    if declares_json(headers) != Some(true) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the body must be JSON sent with Content-Type: application/json, such as {BATCH_EXAMPLE}"
            ),
        ));
    }
    if !is_json_object(body) {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object such as {BATCH_EXAMPLE}"
        )));
    }
    let request: BatchRequest = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "the body is not a valid batch request ({error}); send an object such as {BATCH_EXAMPLE}"
        ))
    })?;
    if request.units.len() > MAX_BATCH_UNITS {
        return Err(ApiError::bad_request(format!(
            "{} units were sent; at most {MAX_BATCH_UNITS} are assigned per request: split the batch",
            request.units.len()
        )));
    }
    for (index, unit) in request.units.iter().enumerate() {
        check_unit(&unit.0)
            .map_err(|error| ApiError::bad_request(format!("units[{index}] {error}")))?;
    }
    check_segments(&request.segments).map_err(ApiError::bad_request)?;
    Ok(request)
}

/// The answer for one unit.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TreatmentAnswer<'a> {
    weblab: &'a str,
    namespace: &'a str,
    name: &'a str,
    unit: &'a str,
    realm: &'a str,
    treatment: &'a str,
    reason: &'static str,
    generation: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
}

/// The answer for a batch.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchAnswer<'a> {
    weblab: &'a str,
    namespace: &'a str,
    name: &'a str,
    realm: &'a str,
    treatments: Vec<BatchItem<'a>>,
    generation: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
}

/// One unit of a batch answer.
#[derive(Debug, Serialize)]
pub(crate) struct BatchItem<'a> {
    unit: &'a str,
    treatment: &'a str,
    reason: &'static str,
}

async fn treatment(
    State(catalog): State<Arc<DialCatalog>>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let answer = || -> Result<Response, ApiError> {
        ensure_ready(&catalog)?;
        let Path((namespace, name)) = path.map_err(path_error)?;
        let pairs = decode_query(query.as_deref()).map_err(|error| {
            ApiError::bad_request(format!(
                "the query string cannot be read ({error}): send unit=<id>&realm=<realm>&segment=<segment>, URL-encoded"
            ))
        })?;
        let query = parse_treatment_query(pairs)?;
        let dial = find_dial(&catalog, &namespace, &name)?;
        let realm = dial
            .realm(query.realm.as_deref())
            .map_err(|error| realm_error(&dial, &error, "add realm=<realm> to the query"))?;
        let assignment = dial.assign(realm, &query.unit, &query.segments);
        Ok(to_json_response(
            StatusCode::OK,
            &TreatmentAnswer {
                weblab: &dial.weblab,
                namespace: &dial.namespace,
                name: &dial.name,
                unit: &query.unit,
                realm: &realm.name,
                treatment: assignment.treatment,
                reason: reason_label(assignment.reason),
                generation: dial.generation,
                observed_generation: dial.observed_generation,
            },
        ))
    };
    answer().unwrap_or_else(IntoResponse::into_response)
}

async fn treatments(
    State(catalog): State<Arc<DialCatalog>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = || -> Result<Response, ApiError> {
        ensure_ready(&catalog)?;
        let Path((namespace, name)) = path.map_err(path_error)?;
        let body =
            read_body(body).map_err(|error| ApiError::new(error.status(), error.to_string()))?;
        let request = parse_batch(&headers, &body)?;
        let dial = find_dial(&catalog, &namespace, &name)?;
        let realm = dial
            .realm(request.realm.as_ref().map(|realm| &*realm.0))
            .map_err(|error| realm_error(&dial, &error, "set \"realm\" in the body"))?;
        let treatments = request
            .units
            .iter()
            .map(|unit| {
                let assignment = dial.assign(realm, &unit.0, &request.segments);
                BatchItem {
                    unit: &unit.0,
                    treatment: assignment.treatment,
                    reason: reason_label(assignment.reason),
                }
            })
            .collect();
        Ok(to_json_response(
            StatusCode::OK,
            &BatchAnswer {
                weblab: &dial.weblab,
                namespace: &dial.namespace,
                name: &dial.name,
                realm: &realm.name,
                treatments,
                generation: dial.generation,
                observed_generation: dial.observed_generation,
            },
        ))
    };
    answer().unwrap_or_else(IntoResponse::into_response)
}

/// 503 until the caches have synced: before that, "not found" could be a lie.
fn ensure_ready(catalog: &DialCatalog) -> Result<(), ApiError> {
    if catalog.is_ready() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this replica is still loading its WeblabDial caches: retry in a second (GET /readyz answers 200 once it serves)",
        ))
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(format!(
        "the path cannot be read ({}): use /v1/weblabs/<namespace>/<name>/treatment",
        rejection.body_text()
    ))
}

fn find_dial(
    catalog: &DialCatalog,
    namespace: &str,
    name: &str,
) -> Result<Arc<CompiledDial>, ApiError> {
    match catalog.get(namespace, name) {
        Some(Ok(dial)) => Ok(dial),
        Some(Err(error)) => Err(unservable(namespace, name, &error)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no WeblabDial {name:?} in namespace {namespace:?} (or the operator does not watch that namespace): check both with `kubectl -n {namespace} get weblabdials`"
            ),
        )),
    }
}

/// A dial that the API server's validation should have refused; not the
/// client's fault, so a 500 that names the dial and the fix.
fn unservable(namespace: &str, name: &str, error: &CompileError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "the WeblabDial {namespace}/{name} cannot be served because {error}: fix its spec (the CRD's validation should have refused it)"
        ),
    )
}

fn realm_error(dial: &CompiledDial, error: &RealmError, how: &str) -> ApiError {
    ApiError::bad_request(match error {
        RealmError::Required => format!(
            "the WeblabDial {} has several realms ({}): {how}, naming one of them",
            dial.reference(),
            dial.realm_list()
        ),
        RealmError::Unknown(realm) => format!(
            "realm {realm:?} is not one of the WeblabDial {}'s realms ({}): use one of those",
            dial.reference(),
            dial.realm_list()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::dials::tests::{catalog_with, serve, two_realm_dial};

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers
    }

    #[test]
    fn a_treatment_query_reads_unit_realm_and_repeated_segments() {
        let query = parse_treatment_query(pairs(&[
            ("unit", "customer-1"),
            ("segment", "beta"),
            ("realm", "NA"),
            ("segment", "staff"),
        ]))
        .expect("valid");
        assert_eq!(
            query,
            TreatmentQuery {
                unit: "customer-1".to_owned(),
                realm: Some("NA".to_owned()),
                segments: vec!["beta".to_owned(), "staff".to_owned()],
            }
        );
    }

    #[test]
    fn a_treatment_query_refuses_what_it_cannot_answer() {
        let refused = |items: &[(&str, &str)], needle: &str| {
            let error = parse_treatment_query(pairs(items)).expect_err("refused");
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert!(
                error.message.contains(needle),
                "{:?} lacks {needle:?}",
                error.message
            );
        };
        refused(&[("realm", "NA")], "needs unit=");
        refused(&[("unit", "")], "unit is empty");
        refused(&[("unit", &"u".repeat(257))], "at most 256");
        refused(&[("unit", "a"), ("unit", "b")], "more than once");
        refused(
            &[("unit", "a"), ("realm", "NA"), ("realm", "EU")],
            "more than once",
        );
        refused(
            &[("unit", "a"), ("segments", "beta")],
            "unknown query parameter \"segments\"",
        );
        refused(&[("unit", "a"), ("segment", "")], "segment is empty");
    }

    #[test]
    fn a_batch_reads_realm_units_and_segments() {
        let body = br#"{"realm": "NA", "units": ["a", "caf\u00e9"], "segments": ["beta"]}"#;
        let request = parse_batch(&json_headers(), body).expect("valid");
        assert_eq!(
            request.realm.map(|r| r.0.into_owned()),
            Some("NA".to_owned())
        );
        let units: Vec<&str> = request.units.iter().map(|u| &*u.0).collect();
        assert_eq!(units, ["a", "café"]);
        assert_eq!(request.segments, ["beta"]);
        // The realm may be left out; the dial decides whether that is enough.
        let request = parse_batch(&json_headers(), br#"{"units": ["a"]}"#).expect("valid");
        assert!(request.realm.is_none());
    }

    #[test]
    fn a_batch_refuses_what_it_cannot_answer() {
        let refused = |headers: &HeaderMap, body: &str, status: StatusCode, needle: &str| {
            let error = parse_batch(headers, body.as_bytes()).expect_err("refused");
            assert_eq!(error.status, status, "{body}: {}", error.message);
            assert!(
                error.message.contains(needle),
                "{:?} lacks {needle:?}",
                error.message
            );
        };
        let json = json_headers();
        let bad = StatusCode::BAD_REQUEST;
        refused(
            &HeaderMap::new(),
            r#"{"units": ["a"]}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        );
        let mut text = HeaderMap::new();
        text.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        refused(
            &text,
            r#"{"units": ["a"]}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        );
        refused(&json, "not json", bad, "JSON object");
        refused(&json, r#"["a"]"#, bad, "JSON object");
        refused(&json, r#"{"units": "a"}"#, bad, "invalid type");
        refused(&json, r#"{"realm": "NA"}"#, bad, "missing field `units`");
        refused(
            &json,
            r#"{"unit": ["a"], "units": []}"#,
            bad,
            "unknown field `unit`",
        );
        refused(&json, r#"{"units": ["a", ""]}"#, bad, "units[1] is empty");
        refused(&json, r#"{"units": [7]}"#, bad, "a string");
        let long = format!(r#"{{"units": ["{}"]}}"#, "u".repeat(300));
        refused(&json, &long, bad, "units[0] is 300 characters long");
        let many = format!(
            r#"{{"units": [{}]}}"#,
            vec!["\"u\""; MAX_BATCH_UNITS + 1].join(",")
        );
        refused(&json, &many, bad, "at most 1000");
        refused(
            &json,
            r#"{"units": ["a"], "segments": [""]}"#,
            bad,
            "segment is empty",
        );
    }

    #[test]
    fn answers_have_the_documented_shape() {
        let answer = TreatmentAnswer {
            weblab: "CHECKOUT_1",
            namespace: "team-a",
            name: "checkout",
            unit: "customer-1",
            realm: "NA",
            treatment: "T1",
            reason: "allocation",
            generation: 4,
            observed_generation: Some(4),
        };
        assert_eq!(
            serde_json::to_value(&answer).expect("serializes"),
            serde_json::json!({
                "weblab": "CHECKOUT_1", "namespace": "team-a", "name": "checkout",
                "unit": "customer-1", "realm": "NA", "treatment": "T1",
                "reason": "allocation", "generation": 4, "observedGeneration": 4,
            })
        );
        let batch = BatchAnswer {
            weblab: "CHECKOUT_1",
            namespace: "team-a",
            name: "checkout",
            realm: "NA",
            treatments: vec![BatchItem {
                unit: "a",
                treatment: "C",
                reason: "override",
            }],
            generation: 4,
            observed_generation: None,
        };
        assert_eq!(
            serde_json::to_value(&batch).expect("serializes"),
            serde_json::json!({
                "weblab": "CHECKOUT_1", "namespace": "team-a", "name": "checkout", "realm": "NA",
                "treatments": [{"unit": "a", "treatment": "C", "reason": "override"}],
                "generation": 4,
            })
        );
    }

    /// The handlers over a real socket, with a catalog fed like the informer.
    #[tokio::test]
    async fn the_endpoints_answer_and_refuse_as_documented() {
        let (catalog, _writer) = catalog_with(&[two_realm_dial("team-a", "checkout", "1")]);
        let base = serve(routes(Arc::new(catalog))).await;
        let client = reqwest::Client::new();
        let get = |query: &str| {
            let url = format!("{base}/v1/weblabs/team-a/checkout/treatment?{query}");
            let client = client.clone();
            async move {
                let response = client.get(url).send().await.expect("answers");
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.expect("a JSON body");
                (status, body)
            }
        };

        let (status, body) = get("unit=alice&realm=EU").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["treatment"], "T1");
        assert_eq!(body["reason"], "override");
        assert_eq!(body["weblab"], "CHECKOUT_1");
        let (_, body) = get("unit=bob&realm=EU&segment=other&segment=beta").await;
        assert_eq!(
            (&body["treatment"], &body["reason"]),
            (&"T1".into(), &"override".into())
        );
        let (_, body) = get("unit=bob&realm=EU").await;
        assert_eq!(
            (&body["treatment"], &body["reason"]),
            (&"C".into(), &"default".into())
        );
        let (_, body) = get("unit=bob&realm=NA").await;
        assert_eq!(body["reason"], "allocation");

        for (query, status, needle) in [
            ("realm=NA", 400, "needs unit="),
            ("unit=M%FCller&realm=NA", 400, "unit is not UTF-8"),
            ("unit=bob", 400, "several realms (NA, EU)"),
            ("unit=bob&realm=FE", 400, "not one of"),
        ] {
            let (got, body) = get(query).await;
            assert_eq!(got, status, "{query}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(
                error.contains(needle),
                "{query}: {error:?} lacks {needle:?}"
            );
        }
        let missing = client
            .get(format!("{base}/v1/weblabs/team-a/nope/treatment?unit=a"))
            .send()
            .await
            .expect("answers");
        assert_eq!(missing.status().as_u16(), 404);
        for (method, path, status) in [
            (reqwest::Method::GET, "/v1/weblabs/team-a/checkout", 404),
            (
                reqwest::Method::GET,
                "/v1/weblabs/team-a/checkout/treatment/extra",
                404,
            ),
            (
                reqwest::Method::POST,
                "/v1/weblabs/team-a/checkout/treatment",
                405,
            ),
            (
                reqwest::Method::GET,
                "/v1/weblabs/team-a/checkout/treatments",
                405,
            ),
        ] {
            let response = client
                .request(method.clone(), format!("{base}{path}"))
                .send()
                .await
                .expect("answers");
            assert_eq!(response.status().as_u16(), status, "{method} {path}");
            let body: serde_json::Value = response.json().await.expect("a JSON body");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains("/treatment"), "{method} {path}: {error:?}");
        }

        let post = |body: Vec<u8>, content_type: &'static str| {
            let url = format!("{base}/v1/weblabs/team-a/checkout/treatments");
            let client = client.clone();
            async move {
                let response = client
                    .post(url)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .expect("answers");
                let status = response.status().as_u16();
                let text = response.text().await.expect("a body");
                (
                    status,
                    serde_json::from_str::<serde_json::Value>(&text).expect("JSON"),
                )
            }
        };
        let (status, body) = post(
            br#"{"realm": "NA", "units": ["alice", "bob"], "segments": []}"#.to_vec(),
            "application/json",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["treatments"][0]["reason"], "override");
        assert_eq!(body["treatments"][1]["reason"], "allocation");
        assert_eq!(body["treatments"].as_array().map(Vec::len), Some(2));

        let (status, body) = post(vec![b' '; MAX_BODY_BYTES + 1], "application/json").await;
        assert_eq!(status, 413, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("64 KiB")
        );
        let (status, _) = post(b"units=a".to_vec(), "application/x-www-form-urlencoded").await;
        assert_eq!(status, 415);
        let (status, _) = post(b"{".to_vec(), "application/json").await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn nothing_is_served_before_the_caches_sync() {
        let (catalog, _writer) = catalog_with(&[two_realm_dial("team-a", "checkout", "1")]);
        catalog.set_ready_for_test(false);
        let base = serve(routes(Arc::new(catalog))).await;
        let response = reqwest::get(format!(
            "{base}/v1/weblabs/team-a/checkout/treatment?unit=a&realm=NA"
        ))
        .await
        .expect("answers");
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert!(body["error"].as_str().unwrap_or_default().contains("retry"));
    }
}
