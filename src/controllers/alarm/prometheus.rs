//! The Prometheus source: one instant query through the HTTP API
//! (`GET /api/v1/query`), its answer read as a [`Sample`]. Anything other
//! than a well-formed vector or scalar is a failed sample, never a value.
//! The URL is the tenant's: the call goes through [`Outbound`], and a
//! failure says what kind of answer came back, never what it said.

use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, de::IgnoredAny};

use crate::outbound::{self, Answer, BodyLimit, Outbound};

use super::evaluate::Sample;

/// Largest answer read from Prometheus; a query selecting more than this is
/// a mistake in the alarm, reported as a failure.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Prometheus's `errorType`s, the only part of an error answer repeated.
const ERROR_TYPES: [&str; 7] = [
    "bad_data",
    "timeout",
    "canceled",
    "execution",
    "internal",
    "unavailable",
    "not_found",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryAnswer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "camelCase")]
enum Data {
    Vector(Vec<Series>),
    Scalar(Point),
    Matrix(IgnoredAny),
    String(IgnoredAny),
}

#[derive(Deserialize)]
struct Series {
    value: Point,
}

/// `[ <unix time>, "<value>" ]`
#[derive(Deserialize)]
struct Point(IgnoredAny, String);

/// Queries `base_url` for `query`, within `timeout`, with an optional bearer
/// token.
pub async fn query(
    outbound: &Outbound,
    base_url: &str,
    query: &str,
    timeout: Duration,
    token: Option<&str>,
) -> Sample {
    let mut url = match outbound::parse_base(base_url) {
        Ok(base) => outbound::join(&base, &["api", "v1", "query"]),
        Err(error) => return Sample::Failed(error.to_string()),
    };
    // Prometheus stops evaluating at its own timeout too, so that a slow
    // query does not keep running after we gave up on it.
    url.query_pairs_mut()
        .append_pair("query", query)
        .append_pair("timeout", &format!("{}ms", timeout.as_millis()));
    let answer = outbound
        .call(
            Method::GET,
            url,
            timeout,
            BodyLimit::Cap(MAX_ANSWER_BYTES),
            |request| match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            },
        )
        .await;
    match answer {
        Ok(answer) => read_answer(&answer),
        Err(outbound::OutboundError::TooLarge { .. }) => Sample::Failed(format!(
            "the answer is larger than {MAX_ANSWER_BYTES} bytes; narrow the query"
        )),
        Err(error) => Sample::Failed(error.to_string()),
    }
}

/// Reads an answer of the query API.
pub fn read_answer(http: &Answer) -> Sample {
    // Neither the body nor the parser's error (which quotes it) is repeated.
    let Ok(answer) = serde_json::from_slice::<QueryAnswer>(&http.body) else {
        return Sample::Failed(format!(
            "not a Prometheus API answer ({}); check spec.prometheus.url",
            http.describe()
        ));
    };
    if answer.status != "success" || !http.is_success() {
        let kind = answer
            .error_type
            .as_deref()
            .filter(|kind| ERROR_TYPES.contains(kind))
            .unwrap_or("error");
        return Sample::Failed(format!(
            "Prometheus refused the query (HTTP {}, {kind}); try it in the Prometheus UI to see why",
            http.status
        ));
    }
    let points: Vec<Point> = match answer.data {
        Some(Data::Vector(series)) => series.into_iter().map(|s| s.value).collect(),
        Some(Data::Scalar(point)) => vec![point],
        Some(Data::Matrix(_)) => {
            return Sample::Failed(
                "the query returns a range vector; an alarm needs an instant vector or a scalar"
                    .to_owned(),
            );
        }
        Some(Data::String(_)) => {
            return Sample::Failed("the query returns a string, not a number".to_owned());
        }
        None => return Sample::Failed("the answer has no data".to_owned()),
    };
    let mut values = Vec::with_capacity(points.len());
    for Point(_, text) in points {
        // Prometheus writes NaN, +Inf and -Inf as Rust parses them.
        match text.parse::<f64>() {
            Ok(value) => values.push(value),
            Err(_) => return Sample::Failed("a sample value is not a number".to_owned()),
        }
    }
    Sample::Values(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(sample: Sample) -> Vec<f64> {
        match sample {
            Sample::Values(values) => values,
            Sample::Failed(error) => panic!("failed: {error}"),
        }
    }

    fn answer(status: u16, body: &[u8]) -> Answer {
        Answer {
            status,
            content_type: "application/json".to_owned(),
            body: body.to_vec(),
            retry_after: None,
        }
    }

    fn read_http(status: u16, body: &[u8]) -> Sample {
        read_answer(&answer(status, body))
    }

    fn failure(sample: Sample) -> String {
        match sample {
            Sample::Failed(error) => error,
            Sample::Values(values) => panic!("values {values:?}"),
        }
    }

    #[test]
    fn reads_vectors_scalars_and_special_values() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"region":"eu"},"value":[1700000000.123,"0.25"]},
            {"metric":{"region":"us"},"value":[1700000000.123,"NaN"]},
            {"metric":{"region":"ap"},"value":[1700000000.123,"+Inf"]}]}}"#;
        let read = values(read_http(200, vector));
        assert_eq!(read.len(), 3);
        assert_eq!(read[0], 0.25);
        assert!(read[1].is_nan());
        assert_eq!(read[2], f64::INFINITY);

        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"-Inf"]}}"#;
        assert_eq!(values(read_http(200, scalar)), vec![f64::NEG_INFINITY]);

        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(values(read_http(200, empty)).is_empty());
    }

    #[test]
    fn errors_and_odd_answers_fail() {
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let error = failure(read_http(400, bad));
        assert!(
            error.contains("bad_data") && error.contains("HTTP 400"),
            "{error}"
        );
        assert!(failure(read_http(502, b"<html>bad gateway</html>")).contains("HTTP 502"));
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(failure(read_http(200, matrix)).contains("range vector"));
        let word = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"high"]}}"#;
        assert!(failure(read_http(200, word)).contains("not a number"));
    }

    /// What a cloud metadata service, or any other non-Prometheus answer,
    /// says is never repeated in the failure a tenant reads.
    #[test]
    fn no_part_of_an_answer_is_repeated() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let answers = [
            format!(r#"{{"Code":"Success","AccessKeyId":"AKIA","SecretAccessKey":"{secret}"}}"#),
            format!(r#"{{"status":"error","errorType":"{secret}","error":"{secret}"}}"#),
            format!(
                r#"{{"status":"success","data":{{"resultType":"scalar","result":[1,"{secret}"]}}}}"#
            ),
            format!(r#"{{"status":{secret:?}}}"#),
            secret.to_owned(),
        ];
        for body in answers {
            for status in [200, 400, 500] {
                let sample = read_answer(&Answer {
                    status,
                    content_type: "text/plain".to_owned(),
                    body: body.clone().into_bytes(),
                    retry_after: None,
                });
                let Sample::Failed(message) = sample else {
                    panic!("{body} read as values");
                };
                assert!(!message.contains("wJalr"), "{message}");
            }
        }
    }
}
