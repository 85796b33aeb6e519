//! The HTTP server of a real `weblab-operator run` process, spoken to over
//! raw TCP where the point is what a misbehaving client does: its timeouts
//! and limits, the root OFREP mount, and the per-namespace bearer tokens.
//! Tenants act through a ServiceAccount token whose Role covers their own
//! namespace only.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};
use serde_json::{Value, json};
use support::{Operator, control_plane, eventually, http, tenant_client};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use weblab_operator::api::{MergeTrainPause, WeblabDial};

/// Long enough for a status write and a cache update, and for a token
/// refresh (every 10 s).
const SETTLE: Duration = Duration::from_secs(30);

/// The bound on anything the server is expected to do "at once" or within a
/// one-second timeout: far above it, so that a slow machine cannot fail the
/// test while a server that never acts does.
const GENEROUS: Duration = Duration::from_secs(10);

const TOKEN: &str = "team-token-0b7e4d";

async fn connect(operator: &Operator) -> TcpStream {
    let address = operator.base.trim_start_matches("http://");
    TcpStream::connect(address).await.expect("connects")
}

/// Reads one HTTP/1.1 response with a `content-length`: its status, head
/// and body; `None` when the connection closes first.
async fn read_response(stream: &mut TcpStream) -> Option<(u16, String, String)> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            let body_start = end + 4;
            while received.len() < body_start + length {
                let read = stream.read(&mut chunk).await.ok()?;
                if read == 0 {
                    return None;
                }
                received.extend_from_slice(&chunk[..read]);
            }
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let body =
                String::from_utf8_lossy(&received[body_start..body_start + length]).to_string();
            return Some((status, head, body));
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        received.extend_from_slice(&chunk[..read]);
    }
}

/// Sends `GET path` on `stream`, keeping the connection, and reads the answer.
async fn get_on(stream: &mut TcpStream, path: &str) -> Option<(u16, String, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: operator\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    read_response(stream).await
}

/// Whether the server closes `stream` (end of stream or reset) within
/// `within`, reading and dropping anything it sends first.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{text:?} is not JSON: {error}"))
}

#[tokio::test]
async fn slow_heads_are_closed_on_their_own_clock_and_idle_connections_on_theirs() {
    let plane = control_plane().await;
    let namespace = plane.namespace("http-timeouts").await.expect("namespace");
    let operator = Operator::start(
        plane,
        &[
            "--namespace",
            namespace.name(),
            "--http-header-read-timeout",
            "1s",
            "--http-idle-timeout",
            "6s",
        ],
    )
    .await;

    // Paths nothing serves answer JSON too.
    let mut plain = connect(&operator).await;
    let (status, _, body) = get_on(&mut plain, "/no/such/endpoint")
        .await
        .expect("an answer");
    assert_eq!(status, 404);
    assert!(parse(&body)["error"].is_string(), "{body}");

    // A head that never ends is closed (before the fix it stayed open).
    let mut slow = connect(&operator).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: operator\r\nX-Slow: ")
        .await
        .expect("writes");
    assert!(
        closed_by_server(&mut slow, GENEROUS).await,
        "a half-sent head is still open after {GENEROUS:?} with a 1s header-read timeout"
    );

    // A keep-alive connection may wait longer than the header-read timeout
    // between requests...
    let mut kept = connect(&operator).await;
    let first = get_on(&mut kept, "/healthz").await;
    assert_eq!(first.map(|(status, ..)| status), Some(200));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = get_on(&mut kept, "/healthz").await;
    assert_eq!(
        second.map(|(status, ..)| status),
        Some(200),
        "an idle connection was closed by the header-read timeout"
    );
    // ...and is closed once it idles past the idle timeout.
    assert!(
        closed_by_server(&mut kept, Duration::from_secs(6) + GENEROUS).await,
        "an idle connection outlived the idle timeout"
    );
}

/// A connection the server accepted (not one turned away at the limit):
/// retried until a `GET /healthz` on it answers 200.
async fn accepted(operator: &Operator) -> TcpStream {
    let deadline = tokio::time::Instant::now() + GENEROUS;
    loop {
        let mut stream = connect(operator).await;
        if matches!(get_on(&mut stream, "/healthz").await, Some((200, ..))) {
            return stream;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection accepted within {GENEROUS:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn past_the_limits_connections_and_requests_get_503_json() {
    let plane = control_plane().await;
    let namespace = plane.namespace("http-limits").await.expect("namespace");
    let ns = namespace.name();
    let request_timeout = Duration::from_secs(8);
    let operator = Operator::start(
        plane,
        &[
            "--namespace",
            ns,
            "--http-max-connections",
            "2",
            "--http-max-concurrent-requests",
            "1",
            "--http-request-timeout",
            "8s",
        ],
    )
    .await;

    // A request whose body never comes holds the one request slot.
    let mut stalled = accepted(&operator).await;
    stalled
        .write_all(
            format!(
                "POST /v1/weblabs/{ns}/checkout/treatments HTTP/1.1\r\nHost: operator\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"units\": ["
            )
            .as_bytes(),
        )
        .await
        .expect("writes");
    let mut other = accepted(&operator).await;

    // Both connection slots are held: a third connection is answered 503
    // JSON and closed.
    let mut third = connect(&operator).await;
    let (status, _, body) = read_response(&mut third)
        .await
        .expect("a 503 answer before the close");
    assert_eq!(status, 503);
    assert!(
        parse(&body)["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many open connections")),
        "{body}"
    );
    assert!(closed_by_server(&mut third, GENEROUS).await);

    // The request slot is held: another request is shed at once, but the
    // probes stay out of the request limit.
    let (status, _, body) = get_on(&mut other, "/metrics").await.expect("an answer");
    assert_eq!(status, 503, "{body}");
    assert!(
        parse(&body)["error"]
            .as_str()
            .is_some_and(|e| e.contains("requests already")),
        "{body}"
    );
    let probe = get_on(&mut other, "/healthz").await;
    assert_eq!(probe.map(|(status, ..)| status), Some(200));

    // The stalled request runs out of time: 503 JSON, and the connection
    // closes (the rest of its body cannot be told from a next request).
    let (status, head, body) = tokio::time::timeout(request_timeout + GENEROUS, async {
        read_response(&mut stalled).await
    })
    .await
    .expect("the stalled request is answered after the request timeout")
    .expect("an answer");
    assert_eq!(status, 503, "{head}\n{body}");
    assert!(
        parse(&body)["error"]
            .as_str()
            .is_some_and(|e| e.contains("not answered within")),
        "{body}"
    );
    assert!(closed_by_server(&mut stalled, GENEROUS).await);

    // A slot freed is a slot served.
    let (status, _, _) = get_on(&mut other, "/metrics").await.expect("an answer");
    assert_eq!(status, 200);
    let mut fresh = accepted(&operator).await;
    assert_eq!(
        get_on(&mut fresh, "/metrics")
            .await
            .map(|(status, ..)| status),
        Some(200)
    );
}

fn banner_dial(name: &str) -> Value {
    json!({
        "apiVersion": "weblab.dev/v1alpha1",
        "kind": "WeblabDial",
        "metadata": {"name": name},
        "spec": {"weblab": "BANNER_HTTP", "treatments": ["C", "T1"], "realms": ["NA"],
                 "allocation": {"C": 40, "T1": 60}},
    })
}

async fn create_dial(client: &kube::Client, namespace: &str, dial: Value) {
    let dial: WeblabDial = serde_json::from_value(dial).expect("a valid dial");
    Api::<WeblabDial>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &dial)
        .await
        .expect("the tenant creates its dial");
}

async fn create_token_secret(client: &kube::Client, namespace: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "weblab-api-token"},
        "stringData": {"token": TOKEN},
    }))
    .expect("a valid Secret");
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("the tenant creates its token Secret");
}

/// POSTs an OFREP evaluation for `unit`; the status and body.
async fn evaluate(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http()
        .post(format!("{base}{path}"))
        .json(&json!({"context": {"targetingKey": "customer-1"}}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the operator answers");
    let status = response.status().as_u16();
    (status, parse(&response.text().await.expect("a body")))
}

async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the operator answers");
    let status = response.status().as_u16();
    (status, parse(&response.text().await.expect("a body")))
}

#[tokio::test]
async fn the_root_ofrep_mount_is_off_by_default_and_serves_one_namespace_when_named() {
    let plane = control_plane().await;
    let home = plane.namespace("http-root-a").await.expect("namespace");
    let other = plane.namespace("http-root-b").await.expect("namespace");
    let (a, b) = (home.name(), other.name());
    let admin = plane.client().await.expect("a client");
    create_dial(&admin, a, banner_dial("banner")).await;

    let default = Operator::start(plane, &["--namespace", a]).await;
    let served = eventually(SETTLE, || async {
        let path = format!("/namespaces/{a}/ofrep/v1/evaluate/flags/banner");
        evaluate(&default.base, &path, None).await.0 == 200
    })
    .await;
    assert!(
        served,
        "the namespaced mount never served; log:\n{}",
        default.logs()
    );
    let (status, body) = evaluate(&default.base, "/ofrep/v1/evaluate/flags/banner", None).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["errorDetails"]
            .as_str()
            .is_some_and(|d| d.contains("--ofrep-root-namespace")),
        "{body}"
    );
    drop(default);

    // Opted in for namespace a; a tenant of b creates a dial of the same name.
    let operator = Operator::start(
        plane,
        &[
            "--namespace",
            &format!("{a},{b}"),
            "--ofrep-root-namespace",
            a,
        ],
    )
    .await;
    let intruder = tenant_client(plane, b).await;
    create_dial(&intruder, b, banner_dial("banner")).await;
    let both = eventually(SETTLE, || async {
        let in_b = format!("/namespaces/{b}/ofrep/v1/evaluate/flags/banner");
        evaluate(&operator.base, &in_b, None).await.0 == 200
    })
    .await;
    assert!(
        both,
        "namespace b's dial is never served; log:\n{}",
        operator.logs()
    );
    // Before the fix the root answered "exists in several namespaces".
    let (status, body) = evaluate(&operator.base, "/ofrep/v1/evaluate/flags/banner", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["namespace"], a);
    let (status, body) = evaluate(&operator.base, "/ofrep/v1/evaluate/flags", None).await;
    assert_eq!(status, 200, "{body}");
    let namespaces: Vec<&Value> = body["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|flag| &flag["metadata"]["namespace"])
        .collect();
    assert_eq!(namespaces, [&json!(a)], "{body}");
}

#[tokio::test]
async fn a_namespace_with_a_token_serves_only_its_holders_and_gates_tell_others_only_what_holds() {
    let plane = control_plane().await;
    let namespace = plane.namespace("http-token").await.expect("namespace");
    let open_namespace = plane.namespace("http-open").await.expect("namespace");
    let (ns, open) = (namespace.name(), open_namespace.name());
    let team = tenant_client(plane, ns).await;
    let neighbour = tenant_client(plane, open).await;
    create_dial(&team, ns, banner_dial("banner")).await;
    create_dial(&neighbour, open, banner_dial("banner")).await;
    let pause: MergeTrainPause = serde_json::from_value(json!({
        "apiVersion": "weblab.dev/v1alpha1", "kind": "MergeTrainPause",
        "metadata": {"name": "sev2-freeze"},
        "spec": {"train": "web-main", "reason": "Sev2: checkout errors in NA",
                 "ticket": "https://tickets.example.com/SEV2-1", "duration": "1h"},
    }))
    .expect("a valid pause");
    for (client, namespace) in [(&team, ns), (&neighbour, open)] {
        Api::<MergeTrainPause>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &pause)
            .await
            .expect("the tenant pauses its train");
    }
    // The token exists before the operator starts: it is required from the
    // first request on.
    create_token_secret(&team, ns).await;
    let operator = Operator::start(plane, &["--namespace", &format!("{ns},{open}")]).await;
    let base = &operator.base;

    let treatment = format!("/v1/weblabs/{ns}/banner/treatment?unit=customer-1");
    let ofrep = format!("/namespaces/{ns}/ofrep/v1/evaluate/flags/banner");
    let gate = format!("/v1/gates/{ns}/web-main");
    let (status, body) = get(base, &treatment, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("weblab-api-token")),
        "{body}"
    );
    assert_eq!(get(base, &treatment, Some("wrong")).await.0, 401);
    assert_eq!(evaluate(base, &ofrep, None).await.0, 401);
    assert_eq!(get(base, &gate, None).await.0, 401);
    let answered = eventually(SETTLE, || async {
        get(base, &treatment, Some(TOKEN)).await.0 == 200
    })
    .await;
    assert!(
        answered,
        "the token holder is not served; log:\n{}",
        operator.logs()
    );
    let (status, body) = evaluate(base, &ofrep, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(base, &gate, Some(TOKEN)).await;
    assert_eq!(status, 423, "{body}");
    assert_eq!(body["reasons"][0]["reason"], "Sev2: checkout errors in NA");
    assert_eq!(
        body["reasons"][0]["ticket"],
        "https://tickets.example.com/SEV2-1"
    );

    // The neighbour without a token stays open, and its gate tells anyone
    // what holds the train but not why.
    let open_treatment = format!("/v1/weblabs/{open}/banner/treatment?unit=customer-1");
    let served = eventually(SETTLE, || async {
        get(base, &open_treatment, None).await.0 == 200
    })
    .await;
    assert!(served, "the open namespace is not served");
    let (status, body) = get(base, &format!("/v1/gates/{open}/web-main"), None).await;
    assert_eq!(status, 423, "{body}");
    assert_eq!(
        body["reasons"],
        json!([{"kind": "MergeTrainPause", "name": "sev2-freeze"}])
    );
    // The other namespace's token proves nothing here.
    let (_, body) = get(base, &format!("/v1/gates/{open}/web-main"), Some(TOKEN)).await;
    assert!(body["reasons"][0].get("ticket").is_none(), "{body}");

    // Refusals are counted with the API's other answers.
    let (_, metrics) = operator.get("/metrics").await.expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|line| line
                .starts_with(r#"weblab_assignment_requests_total{api="native",code="401"}"#)),
        "no 401 in\n{metrics}"
    );

    // Removing the Secret opens the namespace again at the next refresh.
    Api::<Secret>::namespaced(team.clone(), ns)
        .delete("weblab-api-token", &Default::default())
        .await
        .expect("the tenant deletes its token");
    let reopened = eventually(SETTLE, || async {
        get(base, &treatment, None).await.0 == 200
    })
    .await;
    assert!(reopened, "the namespace stayed closed without its token");
}
