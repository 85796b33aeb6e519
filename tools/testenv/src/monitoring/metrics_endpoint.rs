//! A metrics endpoint whose values the test sets, for Prometheus to scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use super::http_server::{HttpRequest, HttpServer, Response};
use crate::Error;

/// Label pairs sorted by name: one series of a metric.
type Series = BTreeMap<String, String>;
/// Every metric by name, each with its series and their values.
type Families = BTreeMap<String, BTreeMap<Series, f64>>;

/// A tiny HTTP server on `127.0.0.1:<free port>` serving `GET /metrics` in
/// the Prometheus text exposition format, every metric a gauge.
///
/// Values can also be set over HTTP, for a person at a demo:
/// `curl -X PUT --data 0.25 'http://ADDRESS/metrics/NAME?label=value'`.
///
/// Dropping it closes the port, so Prometheus's next scrape fails and marks
/// the endpoint's series stale.
#[derive(Debug)]
pub struct MetricsEndpoint {
    families: Arc<Mutex<Families>>,
    server: HttpServer,
}

impl MetricsEndpoint {
    /// Starts serving, with no metrics yet.
    pub fn serve() -> Result<MetricsEndpoint, Error> {
        let families = Arc::new(Mutex::new(Families::new()));
        let server = HttpServer::serve("metrics-endpoint", {
            let families = Arc::clone(&families);
            move |request| handle(&families, &request)
        })?;
        Ok(MetricsEndpoint { families, server })
    }

    /// Sets the gauge `name` with `labels` to `value` (NaN and infinities
    /// included), creating the series if needed.
    ///
    /// # Panics
    /// When `name` or a label name is not a valid Prometheus name (a mistake
    /// in the test, which would otherwise fail every scrape).
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let series = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        if let Err(why) = store(&self.families, name, series, value) {
            panic!("MetricsEndpoint::set: {why}");
        }
    }

    /// Removes one series; the metric disappears with its last series.
    pub fn remove(&self, name: &str, labels: &[(&str, &str)]) {
        let series: Series = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(family) = families.get_mut(name) {
            family.remove(&series);
            if family.is_empty() {
                families.remove(name);
            }
        }
    }

    /// `127.0.0.1:<port>`, the form a Prometheus scrape target takes.
    pub fn address(&self) -> String {
        self.server.address().to_string()
    }

    /// `http://127.0.0.1:<port>/metrics`.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.server.address())
    }

    /// The exposition text as served right now.
    pub fn render(&self) -> String {
        render(&self.families.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn handle(families: &Mutex<Families>, request: &HttpRequest) -> Response {
    let path = request.path();
    match (request.method.as_str(), path) {
        ("GET", "/metrics") => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: render(&families.lock().unwrap_or_else(PoisonError::into_inner)).into_bytes(),
        },
        ("PUT", _) if path.starts_with("/metrics/") => {
            match put(families, &path["/metrics/".len()..], request) {
                Ok(()) => Response::text(200, "ok\n"),
                Err(why) => Response::text(400, format!("{why}\n")),
            }
        }
        (_, "/metrics") => Response::text(405, "use GET\n"),
        _ => Response::text(404, "serving /metrics only\n"),
    }
}

/// `PUT /metrics/<name>?<label>=<value>&...` with the value as the body.
fn put(families: &Mutex<Families>, name: &str, request: &HttpRequest) -> Result<(), String> {
    let name = percent_decode(name)?;
    let mut series = Series::new();
    if let Some((_, query)) = request.target.split_once('?') {
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            series.insert(percent_decode(key)?, percent_decode(value)?);
        }
    }
    let text = std::str::from_utf8(&request.body).map_err(|_| "the body is not UTF-8")?;
    let value = parse_value(text.trim()).ok_or_else(|| format!("not a number: {text:?}"))?;
    store(families, &name, series, value)
}

fn store(families: &Mutex<Families>, name: &str, series: Series, value: f64) -> Result<(), String> {
    if !is_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    if let Some(bad) = series.keys().find(|label| !is_label_name(label)) {
        return Err(format!("invalid label name {bad:?}"));
    }
    families
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(name.to_owned())
        .or_default()
        .insert(series, value);
    Ok(())
}

fn render(families: &Families) -> String {
    let mut text = String::new();
    for (name, family) in families {
        let _ = writeln!(text, "# TYPE {name} gauge");
        for (series, value) in family {
            text.push_str(name);
            if !series.is_empty() {
                text.push('{');
                for (index, (label, label_value)) in series.iter().enumerate() {
                    if index > 0 {
                        text.push(',');
                    }
                    let _ = write!(text, "{label}=\"{}\"", escape(label_value));
                }
                text.push('}');
            }
            let _ = writeln!(text, " {}", format_value(*value));
        }
    }
    text
}

/// Label values escape backslash, double quote and line feed.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        // Rust would also accept "inf" and "nan"; keep to Prometheus's words.
        _ if text
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            None
        }
        _ => text.parse().ok(),
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    // Names starting with "__" are reserved for Prometheus itself.
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = text
                    .get(index + 1..index + 3)
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {text:?}"))?;
                decoded.push(hex);
                index += 3;
            }
            b'+' => {
                decoded.push(b' ');
                index += 1;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gauges_with_escaped_labels_and_special_values() {
        let endpoint = MetricsEndpoint::serve().expect("serve");
        endpoint.set("errors_ratio", &[("service", "a\"b\\c\nd")], 0.5);
        endpoint.set("errors_ratio", &[], f64::NAN);
        endpoint.set("up_ish", &[("z", "1"), ("a", "2")], f64::NEG_INFINITY);
        assert_eq!(
            endpoint.render(),
            "# TYPE errors_ratio gauge\n\
             errors_ratio NaN\n\
             errors_ratio{service=\"a\\\"b\\\\c\\nd\"} 0.5\n\
             # TYPE up_ish gauge\n\
             up_ish{a=\"2\",z=\"1\"} -Inf\n"
        );
        endpoint.remove("up_ish", &[("a", "2"), ("z", "1")]);
        assert!(!endpoint.render().contains("up_ish"));
    }

    #[test]
    #[should_panic(expected = "invalid metric name")]
    fn set_rejects_an_invalid_name() {
        let endpoint = MetricsEndpoint::serve().expect("serve");
        endpoint.set("1bad", &[], 1.0);
    }

    #[test]
    fn put_sets_a_value_and_rejects_nonsense() {
        let families = Mutex::new(Families::new());
        let request = |target: &str, body: &str| HttpRequest {
            method: "PUT".to_owned(),
            target: target.to_owned(),
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        };
        let ok = handle(
            &families,
            &request("/metrics/error_rate?service=check%20out&realm=EU", "0.25\n"),
        );
        assert_eq!(ok.status, 200);
        assert_eq!(
            render(&families.lock().expect("lock")),
            "# TYPE error_rate gauge\nerror_rate{realm=\"EU\",service=\"check out\"} 0.25\n"
        );
        for (target, body) in [
            ("/metrics/error_rate", "lots"),
            ("/metrics/error_rate", "inf"),
            ("/metrics/bad-name", "1"),
            ("/metrics/error_rate?__name__=x", "1"),
            ("/metrics/error_rate?a=%zz", "1"),
        ] {
            assert_eq!(
                handle(&families, &request(target, body)).status,
                400,
                "{target} {body}"
            );
        }
        assert_eq!(
            handle(
                &families,
                &HttpRequest {
                    method: "POST".to_owned(),
                    ..request("/metrics", "")
                }
            )
            .status,
            405
        );
    }
}
