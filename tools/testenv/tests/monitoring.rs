//! Real Prometheus and Alertmanager, started by the harness: Prometheus
//! scrapes a metrics endpoint the test controls, survives a stop and a
//! restart; Alertmanager delivers posted alerts to a webhook with the bearer
//! token, firing and then resolved; bad setups fail fast and say why.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{TestResult, scratch_dir, start_harness};
use testenv::{
    Alert, Alertmanager, AlertmanagerOptions, Error, HttpRequest, MetricsEndpoint, Prometheus,
    PrometheusOptions, TempDir, WebhookRecorder,
};

/// Generous: two cores shared with other builds and tests.
const WITHIN: Duration = Duration::from_secs(60);

/// Polls `promql` until its only sample has `expected` as value; returns the
/// last result seen otherwise.
async fn wait_for_value(prometheus: &Prometheus, promql: &str, expected: f64) -> TestResult {
    let deadline = Instant::now() + WITHIN;
    loop {
        let seen = prometheus.query(promql).await;
        if let Ok(samples) = &seen
            && samples.len() == 1
            && samples[0].value == expected
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{promql} never became {expected}; last: {seen:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `raw` on a fresh connection and returns whatever comes back.
fn exchange(address: &str, raw: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(raw)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn metrics_endpoint_serves_while_a_client_stalls_and_after_garbage() -> TestResult {
    let endpoint = MetricsEndpoint::serve()?;
    endpoint.set("http_error_ratio", &[("service", "checkout")], 0.25);

    // Holds its connection open mid-request: must not block anyone else.
    let mut stalled = TcpStream::connect(endpoint.address())?;
    stalled.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")?;

    let garbage = exchange(&endpoint.address(), b"\x00\x01 nonsense\r\n\r\n")?;
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    let wrong_path = exchange(&endpoint.address(), b"GET /other HTTP/1.1\r\n\r\n")?;
    assert!(wrong_path.starts_with("HTTP/1.1 404 "), "{wrong_path}");

    let scrape = exchange(
        &endpoint.address(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    )?;
    assert!(scrape.starts_with("HTTP/1.1 200 "), "{scrape}");
    assert!(
        scrape.contains(
            "\r\n\r\n# TYPE http_error_ratio gauge\nhttp_error_ratio{service=\"checkout\"} 0.25\n"
        ),
        "{scrape}"
    );

    // Set over HTTP, as a person at the demo would.
    let put = exchange(
        &endpoint.address(),
        b"PUT /metrics/http_error_ratio?service=checkout HTTP/1.1\r\nContent-Length: 3\r\n\r\n0.5",
    )?;
    assert!(put.starts_with("HTTP/1.1 200 "), "{put}");
    assert!(endpoint.render().contains("{service=\"checkout\"} 0.5\n"));
    drop(stalled);
    Ok(())
}

#[tokio::test]
async fn prometheus_scrapes_the_endpoint_and_sees_changes_then_staleness() -> TestResult {
    let dir = TempDir::new()?;
    let endpoint = MetricsEndpoint::serve()?;
    endpoint.set("http_error_ratio", &[("service", "checkout")], 0.01);
    let mut options = PrometheusOptions::default();
    options.scrape_targets.push(endpoint.address());
    let prometheus = Prometheus::start(dir.path().join("prometheus"), options).await?;

    let query = r#"http_error_ratio{service="checkout"}"#;
    let samples = prometheus.wait_for_samples(query, WITHIN).await?;
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].labels["job"], "testenv");
    assert_eq!(samples[0].labels["instance"], endpoint.address());
    assert_eq!(samples[0].value, 0.01);

    endpoint.set("http_error_ratio", &[("service", "checkout")], 0.5);
    wait_for_value(&prometheus, query, 0.5).await?;

    // The target goes away: the failed scrape marks its series stale, so the
    // query comes back empty instead of repeating the last value.
    let address = endpoint.address();
    drop(endpoint);
    let deadline = Instant::now() + WITHIN;
    loop {
        let samples = prometheus.query(query).await?;
        if samples.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "series of {address} never went stale: {samples:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let up = prometheus.query(r#"up{job="testenv"}"#).await?;
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].value, 0.0, "the target is reported down");
    Ok(())
}

#[tokio::test]
async fn prometheus_refuses_after_stop_and_answers_after_restart() -> TestResult {
    let dir = TempDir::new()?;
    let mut prometheus =
        Prometheus::start(dir.path().join("prometheus"), PrometheusOptions::default()).await?;
    let url = prometheus.url();
    let address = url.trim_start_matches("http://").to_owned();
    assert_eq!(prometheus.query("vector(7)").await?[0].value, 7.0);

    prometheus.stop();
    assert!(!prometheus.is_running());
    let refused = TcpStream::connect(&address).expect_err("nothing listens after stop");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let failed = prometheus
        .query("vector(7)")
        .await
        .expect_err("queries fail");
    assert!(matches!(failed, Error::Http { .. }), "{failed}");

    prometheus.restart().await?;
    assert_eq!(prometheus.url(), url, "same port after restart");
    assert!(prometheus.is_running());
    assert_eq!(prometheus.query("vector(7)").await?[0].value, 7.0);

    let bad = prometheus.query("sum(").await.expect_err("a bad query");
    assert!(
        matches!(&bad, Error::Response { status: 400, body, .. } if body.contains("parse error")),
        "{bad}"
    );
    Ok(())
}

fn is_notification(status: &'static str, alertname: &'static str) -> impl Fn(&HttpRequest) -> bool {
    move |request| {
        request.json().is_ok_and(|body| {
            body["status"] == status && body["alerts"][0]["labels"]["alertname"] == alertname
        })
    }
}

#[tokio::test]
async fn alertmanager_delivers_firing_then_resolved_with_the_bearer_token() -> TestResult {
    let dir = TempDir::new()?;
    let receiver = WebhookRecorder::serve()?;
    let mut options = AlertmanagerOptions::new(receiver.url());
    options.bearer_token = Some("s3cret-token".to_owned());
    let alertmanager = Alertmanager::start(dir.path().join("alertmanager"), options).await?;

    let alert = Alert::new(&[
        ("alertname", "HighErrorRate"),
        ("severity", "Sev2"),
        ("realm", "EU"),
    ])
    .annotation("summary", "error ratio above 5%");
    alertmanager
        .post_alerts(std::slice::from_ref(&alert))
        .await?;

    let firing = receiver
        .wait_for(WITHIN, is_notification("firing", "HighErrorRate"))
        .await
        .ok_or("no firing notification arrived")?;
    assert_eq!(firing.method, "POST");
    assert_eq!(firing.header("authorization"), Some("Bearer s3cret-token"));
    assert_eq!(firing.header("content-type"), Some("application/json"));
    let body = firing.json()?;
    eprintln!("firing notification: {body:#}");
    assert_eq!(body["version"], "4");
    assert_eq!(body["receiver"], "webhook");
    let alerts = body["alerts"].as_array().ok_or("alerts is a list")?;
    assert_eq!(alerts.len(), 1, "{body}");
    assert_eq!(alerts[0]["status"], "firing");
    assert_eq!(alerts[0]["labels"], serde_json::json!(alert.labels));
    assert_eq!(alerts[0]["annotations"]["summary"], "error ratio above 5%");
    let fingerprint = alerts[0]["fingerprint"].as_str().unwrap_or_default();
    assert_eq!(fingerprint.len(), 16, "a 64-bit hex fingerprint: {body}");
    assert_eq!(body["groupLabels"], serde_json::json!(alert.labels));

    alertmanager.resolve(std::slice::from_ref(&alert)).await?;
    let resolved = receiver
        .wait_for(WITHIN, is_notification("resolved", "HighErrorRate"))
        .await
        .ok_or("no resolved notification arrived")?;
    let body = resolved.json()?;
    eprintln!("resolved notification: {body:#}");
    assert_eq!(
        resolved.header("authorization"),
        Some("Bearer s3cret-token")
    );
    assert_eq!(body["alerts"][0]["status"], "resolved");
    assert_eq!(body["alerts"][0]["fingerprint"], fingerprint);
    assert_eq!(
        body["alerts"][0]["annotations"]["summary"],
        "error ratio above 5%"
    );
    assert_eq!(
        body["alerts"][0]["startsAt"],
        firing.json()?["alerts"][0]["startsAt"]
    );

    let invalid = alertmanager
        .post_alerts(&[Alert::default()])
        .await
        .expect_err("an alert without labels");
    assert!(
        matches!(invalid, Error::Response { status: 400, .. }),
        "{invalid}"
    );
    Ok(())
}

#[tokio::test]
async fn a_prometheus_alerting_rule_reaches_the_webhook_through_alertmanager() -> TestResult {
    let dir = TempDir::new()?;
    let receiver = WebhookRecorder::serve()?;
    let alertmanager = Alertmanager::start(
        dir.path().join("alertmanager"),
        AlertmanagerOptions::new(receiver.url()),
    )
    .await?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n\
         \x20 - name: testenv\n\
         \x20   rules:\n\
         \x20     - alert: AlwaysFiring\n\
         \x20       expr: vector(1)\n\
         \x20       labels: {severity: Sev2}\n\
         \x20       annotations: {summary: from a rule}\n",
    )?;
    let mut options = PrometheusOptions::default();
    options.rule_files.push(rules);
    options.alertmanagers.push(alertmanager.address());
    let prometheus = Prometheus::start(dir.path().join("prometheus"), options).await?;

    let notification = receiver
        .wait_for(WITHIN, is_notification("firing", "AlwaysFiring"))
        .await
        .ok_or("the rule's alert never reached the webhook")?;
    let alert = &notification.json()?["alerts"][0];
    assert_eq!(alert["labels"]["severity"], "Sev2");
    assert_eq!(alert["annotations"]["summary"], "from a rule");
    let generator = alert["generatorURL"].as_str().unwrap_or_default();
    assert!(
        generator.contains("/graph?g0.expr=vector%281%29"),
        "{generator}"
    );
    drop(prometheus);
    Ok(())
}

#[tokio::test]
async fn a_config_alertmanager_rejects_fails_with_its_reason() -> TestResult {
    let dir = TempDir::new()?;
    let mut options = AlertmanagerOptions::new("http://127.0.0.1:9/webhook");
    options.group_interval = Duration::ZERO;
    let err = Alertmanager::start(dir.path().join("alertmanager"), options)
        .await
        .expect_err("group_interval 0 is invalid");
    // An exit, not a timeout: the harness noticed the process died.
    assert!(matches!(err, Error::ProcessExited { .. }), "{err}");
    assert!(
        err.to_string().contains("group_interval cannot be zero"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_rule_file_prometheus_rejects_fails_with_its_reason() -> TestResult {
    let dir = TempDir::new()?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: broken\n    rules:\n      - alert: X\n        expr: sum(\n",
    )?;
    let mut options = PrometheusOptions::default();
    options.rule_files.push(rules);
    let err = Prometheus::start(dir.path().join("prometheus"), options)
        .await
        .expect_err("the rule does not parse");
    assert!(matches!(err, Error::ProcessExited { .. }), "{err}");
    assert!(err.to_string().contains("rules.yml"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_missing_binary_is_named_with_the_way_to_install_it() -> TestResult {
    let dir = TempDir::new()?;
    let mut options = PrometheusOptions::default();
    options.binary = Some("/nonexistent/prometheus".into());
    let err = Prometheus::start(dir.path().join("prometheus"), options)
        .await
        .expect_err("no such binary");
    let message = err.to_string();
    assert!(matches!(err, Error::BinaryMissing { .. }), "{message}");
    assert!(message.contains("hack/prereqs.sh"), "{message}");
    assert!(message.contains("WEBLAB_PROMETHEUS"), "{message}");

    let mut options = AlertmanagerOptions::new("http://127.0.0.1:9/webhook");
    options.binary = Some("/nonexistent/alertmanager".into());
    let err = Alertmanager::start(dir.path().join("alertmanager"), options)
        .await
        .expect_err("no such binary");
    assert!(err.to_string().contains("WEBLAB_ALERTMANAGER"), "{err}");
    Ok(())
}

#[tokio::test]
async fn up_with_monitoring_serves_both_until_sigterm() -> TestResult {
    let dir = scratch_dir("up-monitoring");
    let receiver = WebhookRecorder::serve()?;
    let token_file = dir.join("token");
    std::fs::write(&token_file, "demo-token\n")?;
    // The demo's own rules (`make demo` passes the same file).
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/demo/rules.yml");
    let (mut harness, _kubeconfig) = start_harness(
        &dir,
        &[
            "--monitoring",
            "--rules",
            &rules.to_string_lossy(),
            "--alertmanager-webhook",
            &receiver.url(),
            "--alertmanager-token-file",
            &token_file.to_string_lossy(),
        ],
    )?;
    let read_url = |name: &str| -> Result<String, std::io::Error> {
        Ok(std::fs::read_to_string(dir.join(name))?.trim().to_owned())
    };
    let (metrics, prometheus, alertmanager) = (
        read_url("metrics-url")?,
        read_url("prometheus-url")?,
        read_url("alertmanager-url")?,
    );

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    // The demo's knob: set the ratio over HTTP, see Prometheus scrape it.
    http.put(format!("{metrics}/demo_error_ratio?service=checkout"))
        .body("0.3")
        .send()
        .await?
        .error_for_status()?;
    let deadline = Instant::now() + WITHIN;
    loop {
        let body: serde_json::Value = http
            .get(format!("{prometheus}/api/v1/query"))
            .query(&[("query", r#"demo_error_ratio{service="checkout"}"#)])
            .send()
            .await?
            .json()
            .await?;
        if body["data"]["result"][0]["value"][1] == "0.3" {
            break;
        }
        assert!(Instant::now() < deadline, "never scraped 0.3: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    http.post(format!("{alertmanager}/api/v2/alerts"))
        .json(&serde_json::json!([{"labels": {"alertname": "DemoAlert"}}]))
        .send()
        .await?
        .error_for_status()?;
    let notification = receiver
        .wait_for(WITHIN, is_notification("firing", "DemoAlert"))
        .await
        .ok_or("Alertmanager sent nothing to the webhook")?;
    assert_eq!(
        notification.header("authorization"),
        Some("Bearer demo-token")
    );
    // The ratio set above (0.3) trips the demo's rule, all the way through.
    let from_rule = receiver
        .wait_for(WITHIN, is_notification("firing", "DemoErrorRatioHigh"))
        .await
        .ok_or("the demo rule's alert never reached the webhook")?;
    let alert = &from_rule.json()?["alerts"][0];
    assert_eq!(alert["labels"]["service"], "checkout");
    assert_eq!(
        alert["annotations"]["summary"],
        "error ratio of checkout is 0.3"
    );

    // SAFETY: kill has no memory-safety preconditions; the pid is our child.
    assert_eq!(
        unsafe { libc::kill(harness.0.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = tokio::task::spawn_blocking(move || harness.0.wait()).await??;
    assert!(status.success(), "{status}");
    for url in [&prometheus, &alertmanager] {
        let address = url.trim_start_matches("http://");
        assert!(TcpStream::connect(address).is_err(), "{url} still answers");
    }
    assert!(!dir.join("prometheus-url").exists(), "stale URL file left");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
