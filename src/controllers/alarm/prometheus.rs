//! The Prometheus source: one instant query through the HTTP API
//! (`GET /api/v1/query`), its answer read as a [`Sample`]. Anything other
//! than a well-formed vector or scalar is a failed sample, never a value.

use std::time::Duration;

use serde::{Deserialize, de::IgnoredAny};

use super::evaluate::Sample;

/// Largest answer read from Prometheus; a query selecting more than this is
/// a mistake in the alarm, reported as a failure.
const MAX_ANSWER_BYTES: usize = 4 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
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
    http: &reqwest::Client,
    base_url: &str,
    query: &str,
    timeout: Duration,
    token: Option<&str>,
) -> Sample {
    let url = format!("{}/api/v1/query", base_url.trim_end_matches('/'));
    // Prometheus stops evaluating at its own timeout too, so that a slow
    // query does not keep running after we gave up on it.
    let mut request = http
        .get(&url)
        .query(&[
            ("query", query),
            ("timeout", &format!("{}ms", timeout.as_millis())),
        ])
        .timeout(timeout);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) if error.is_timeout() => {
            return Sample::Failed(format!("no answer from {url} within {timeout:?}"));
        }
        Err(error) => return Sample::Failed(format!("cannot query {url}: {error}")),
    };
    let code = response.status();
    let body = match response.bytes().await {
        Ok(body) if body.len() > MAX_ANSWER_BYTES => {
            return Sample::Failed(format!(
                "the answer from {url} is larger than {MAX_ANSWER_BYTES} bytes; narrow the query"
            ));
        }
        Ok(body) => body,
        Err(error) => return Sample::Failed(format!("cannot read the answer from {url}: {error}")),
    };
    read_answer(code.as_u16(), &body)
}

/// Reads an answer of the query API.
pub fn read_answer(code: u16, body: &[u8]) -> Sample {
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(error) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Sample::Failed(format!(
                "HTTP {code}: not a Prometheus API answer ({error}): {text:?}"
            ));
        }
    };
    if answer.status != "success" {
        return Sample::Failed(format!(
            "HTTP {code}: {}: {}",
            answer.error_type.as_deref().unwrap_or("error"),
            answer.error.as_deref().unwrap_or("no detail")
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
            Err(_) => return Sample::Failed(format!("the sample value {text:?} is not a number")),
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
        let read = values(read_answer(200, vector));
        assert_eq!(read.len(), 3);
        assert_eq!(read[0], 0.25);
        assert!(read[1].is_nan());
        assert_eq!(read[2], f64::INFINITY);

        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"-Inf"]}}"#;
        assert_eq!(values(read_answer(200, scalar)), vec![f64::NEG_INFINITY]);

        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(values(read_answer(200, empty)).is_empty());
    }

    #[test]
    fn errors_and_odd_answers_fail() {
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let error = failure(read_answer(400, bad));
        assert!(
            error.contains("bad_data") && error.contains("parse error"),
            "{error}"
        );
        assert!(failure(read_answer(502, b"<html>bad gateway</html>")).contains("HTTP 502"));
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(failure(read_answer(200, matrix)).contains("range vector"));
        let word = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"high"]}}"#;
        assert!(failure(read_answer(200, word)).contains("not a number"));
    }
}
