//! Outbound calls to URLs a tenant names (DESIGN.md "Tenancy and trust"),
//! through the real operator: the Alarms are created by a tenant's
//! ServiceAccount (a Role in one namespace), and the Prometheus they name is
//! a small server on loopback that counts what reaches it.
//!
//! - without `--allow-outbound-url-prefix`, loopback is refused (by address
//!   and by a name resolving to it) before anything is sent, for Alarms and
//!   for a MergeTrainPause's webhook;
//! - a redirect to another origin is not followed, and no part of an answer
//!   reaches the Alarm's status or events;
//! - a 300 MB answer is cut at the cap, the operator stays small, and the
//!   Alarm backs off.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use support::{Operator, control_plane, eventually, tenant_client};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use weblab_operator::api::{Alarm, MergeTrainPause};

const WAIT: Duration = Duration::from_secs(60);
/// What the fake upstream puts in its answers; it must never come back.
const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";

/// What an [`Upstream`] answers after its head.
#[derive(Clone, Copy)]
enum Payload {
    /// This many bytes: `SECRET`, then `x`.
    Secret(u64),
    /// This text.
    Text(&'static str),
}

/// A loopback server answering every request with `head` and then its
/// payload, counting requests and the body bytes it managed to send.
struct Upstream {
    port: u16,
    requests: Arc<AtomicUsize>,
    sent: Arc<AtomicU64>,
}

impl Upstream {
    async fn start(head: String, payload: Payload) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let (counted, written) = (requests.clone(), sent.clone());
        let head: &'static str = Box::leak(head.into_boxed_str());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let written = written.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 8192];
                    let _ = stream.read(&mut request).await;
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let body_bytes = match payload {
                        Payload::Secret(bytes) => bytes,
                        Payload::Text(text) => {
                            let _ = stream.write_all(text.as_bytes()).await;
                            return;
                        }
                    };
                    let mut chunk = vec![b'x'; 64 * 1024];
                    chunk[..SECRET.len()].copy_from_slice(SECRET.as_bytes());
                    let mut left = body_bytes;
                    while left > 0 {
                        let n = left.min(chunk.len() as u64);
                        if stream.write_all(&chunk[..n as usize]).await.is_err() {
                            return;
                        }
                        written.fetch_add(n, Ordering::SeqCst);
                        left -= n;
                        chunk[..SECRET.len()].fill(b'x');
                    }
                });
            }
        });
        Upstream {
            port,
            requests,
            sent,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn alarm(name: &str, url: &str, interval: &str) -> Alarm {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "weblab.dev/v1alpha1",
        "kind": "Alarm",
        "metadata": {"name": name},
        "spec": {"severity": "Sev2", "prometheus": {
            "url": url, "query": "up", "interval": interval, "timeout": "4s",
            "comparison": "GreaterThan", "threshold": 1}}
    }))
    .expect("a valid alarm")
}

/// Waits until the alarm's `Degraded` condition holds and returns its message.
async fn degraded(alarms: &Api<Alarm>, name: &str, operator: &Operator) -> String {
    let message = || async {
        let alarm = alarms.get(name).await.ok()?;
        alarm
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
            .map(|c| c.message)
    };
    let found = eventually(WAIT, || async { message().await.is_some() }).await;
    assert!(
        found,
        "{name} never became Degraded: {:?}\n{}",
        alarms.get(name).await.ok().and_then(|a| a.status),
        operator.logs()
    );
    message().await.unwrap_or_default()
}

/// The messages of the events about `name`.
async fn event_messages(plane: &testenv::ControlPlane, namespace: &str, name: &str) -> String {
    let events: Api<Event> = Api::namespaced(plane.client().await.expect("client"), namespace);
    events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.note)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn without_the_flag_loopback_is_refused_and_nothing_is_sent() {
    let plane = control_plane().await;
    let ns = plane.namespace("out-strict").await.expect("namespace");
    let operator = Operator::start_strict(plane, &["--namespace", ns.name()]).await;
    let upstream = Upstream::start(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n".to_owned(),
        Payload::Secret(100),
    )
    .await;
    let tenant = tenant_client(plane, ns.name()).await;
    let alarms: Api<Alarm> = Api::namespaced(tenant.clone(), ns.name());
    let port = upstream.port;
    for (name, url) in [
        ("by-address", format!("http://127.0.0.1:{port}")),
        ("by-name", format!("http://localhost:{port}/")),
        ("v6-mapped", format!("http://[::ffff:127.0.0.1]:{port}/")),
    ] {
        alarms
            .create(&PostParams::default(), &alarm(name, &url, "5s"))
            .await
            .expect("the tenant may create alarms");
    }
    for name in ["by-address", "by-name", "v6-mapped"] {
        let message = degraded(&alarms, name, &operator).await;
        assert!(
            message.contains("a loopback address")
                && message.contains("--allow-outbound-url-prefix"),
            "{name}: {message}"
        );
        // The event follows the status write.
        let warned = eventually(WAIT, || async {
            event_messages(plane, ns.name(), name)
                .await
                .contains("a loopback address")
        })
        .await;
        assert!(
            warned,
            "{name}: {}",
            event_messages(plane, ns.name(), name).await
        );
    }

    // A merge-train webhook on loopback is refused the same way.
    let secrets: Api<Secret> = Api::namespaced(tenant.clone(), ns.name());
    let key: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"},
        "stringData": {"key": "signing-key"}
    }))
    .expect("a Secret");
    secrets
        .create(&PostParams::default(), &key)
        .await
        .expect("the tenant may create Secrets");
    let pauses: Api<MergeTrainPause> = Api::namespaced(tenant, ns.name());
    let pause: MergeTrainPause = serde_json::from_value(serde_json::json!({
        "apiVersion": "weblab.dev/v1alpha1", "kind": "MergeTrainPause",
        "metadata": {"name": "hook"},
        "spec": {"train": "main", "reason": "test", "duration": "1h", "provider": {
            "type": "Webhook",
            "webhook": {"url": format!("http://localhost:{port}/hook"),
                        "secretRef": {"name": "hook", "key": "key"}}}}
    }))
    .expect("a pause");
    pauses
        .create(&PostParams::default(), &pause)
        .await
        .expect("the tenant may create pauses");
    let refused = || async {
        let status = pauses.get("hook").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
            .map(|c| c.message)
            .filter(|message| message.contains("a loopback address"))
    };
    let seen = eventually(WAIT, || async { refused().await.is_some() }).await;
    assert!(
        seen,
        "{:?}\n{}",
        pauses.get("hook").await.ok().and_then(|p| p.status),
        operator.logs()
    );
    assert_eq!(upstream.requests(), 0, "a request reached the server");
}

#[tokio::test]
async fn answers_are_never_repeated_and_redirects_never_followed() {
    let plane = control_plane().await;
    let (ns, operator) = support::operator_for_new_namespace(plane, "out-reflect").await;
    let target = Upstream::start(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n".to_owned(),
        Payload::Secret(100),
    )
    .await;
    let redirecting = Upstream::start(
        format!(
            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{}/latest/meta-data/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            target.port
        ),
        Payload::Secret(0),
    )
    .await;
    // What a metadata service answers: 200, text, with the key in it.
    let foreign = Upstream::start(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 150\r\nconnection: close\r\n\r\n"
            .to_owned(),
        Payload::Secret(150),
    )
    .await;
    let tenant = tenant_client(plane, ns.name()).await;
    let alarms: Api<Alarm> = Api::namespaced(tenant, ns.name());
    let redirect_url = format!("http://127.0.0.1:{}", redirecting.port);
    let foreign_url = format!("http://127.0.0.1:{}/latest/meta-data/iam", foreign.port);
    for (name, url) in [("redirected", &redirect_url), ("foreign", &foreign_url)] {
        alarms
            .create(&PostParams::default(), &alarm(name, url, "5s"))
            .await
            .expect("the tenant may create alarms");
    }

    let message = degraded(&alarms, "redirected", &operator).await;
    assert!(message.contains("redirect (HTTP 302)"), "{message}");
    assert_eq!(target.requests(), 0, "the redirect was followed");

    let message = degraded(&alarms, "foreign", &operator).await;
    assert!(
        message.contains("not a Prometheus API answer (HTTP 200, text/plain, 150 bytes)"),
        "{message}"
    );
    let status = serde_json::to_string(&alarms.get("foreign").await.expect("alarm").status)
        .expect("serializes");
    let events = event_messages(plane, ns.name(), "foreign").await;
    for (what, text) in [
        ("status", status),
        ("events", events),
        ("log", operator.logs()),
    ] {
        assert!(
            !text.contains(SECRET),
            "the answer is in the {what}: {text}"
        );
    }

    // A `#` or `?` that would swallow the operator's path, or credentials,
    // are refused by the API server.
    for (name, url) in [
        ("fragment", format!("{foreign_url}#")),
        ("query", format!("{foreign_url}?")),
        (
            "credentials",
            format!("http://user@127.0.0.1:{}/", foreign.port),
        ),
    ] {
        let refused = alarms
            .create(&PostParams::default(), &alarm(name, &url, "5s"))
            .await
            .expect_err("refused");
        assert!(
            refused.to_string().contains("spec.prometheus.url"),
            "{refused}"
        );
    }
}

/// `VmHWM` of a process: the most resident memory it has used, in bytes.
fn peak_resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

#[tokio::test]
async fn a_huge_answer_is_cut_at_the_cap_and_the_alarm_backs_off() {
    let plane = control_plane().await;
    let (ns, operator) = support::operator_for_new_namespace(plane, "out-huge").await;
    // 300 MB of chunked JSON-looking data: no length to refuse up front.
    let huge = Upstream::start(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n".to_owned(),
        Payload::Secret(300 << 20),
    )
    .await;
    let tenant = tenant_client(plane, ns.name()).await;
    let alarms: Api<Alarm> = Api::namespaced(tenant, ns.name());
    let url = format!("http://127.0.0.1:{}", huge.port);
    alarms
        .create(&PostParams::default(), &alarm("huge", &url, "5s"))
        .await
        .expect("the tenant may create alarms");

    // Another alarm of the same tenant, on a Prometheus that answers.
    let healthy = Upstream::start(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n".to_owned(),
        Payload::Text(r#"{"status":"success","data":{"resultType":"scalar","result":[0,"0.5"]}}"#),
    )
    .await;
    let healthy_url = format!("http://127.0.0.1:{}", healthy.port);
    alarms
        .create(
            &PostParams::default(),
            &alarm("healthy", &healthy_url, "5s"),
        )
        .await
        .expect("the tenant may create alarms");

    let message = degraded(&alarms, "huge", &operator).await;
    assert!(message.contains("larger than 4194304 bytes"), "{message}");
    assert!(!message.contains(SECRET), "{message}");

    // Each failure doubles the wait (5 s, 10 s, 20 s, 40 s): over 30 s at
    // most 3 more queries, where a fixed 5 s interval would make 6.
    let (before, healthy_before) = (huge.requests(), healthy.requests());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = huge.requests() - before;
    let healthy_during = healthy.requests() - healthy_before;
    assert!(
        (1..=3).contains(&during),
        "{during} requests in 30 s\n{}",
        operator.logs()
    );
    // The failing alarm holds up no other: the healthy one is queried at
    // its interval (6 times in 30 s, a little less on a busy machine).
    assert!(
        healthy_during >= 4,
        "the healthy alarm was queried {healthy_during} times in 30 s"
    );
    // The operator read a few MiB of each answer, never all of one.
    let sent = huge.sent.load(Ordering::SeqCst);
    let total = huge.requests() as u64 * (300 << 20);
    assert!(sent < total / 4, "{sent} of {total} bytes were sent");
    let peak = peak_resident_bytes(operator.pid());
    // Figures for the record, not assertions on time.
    println!(
        "300 MB answers: {} requests in all, {during} in 30 s after the first failure (a healthy alarm: {healthy_during}), {} MiB sent, operator peak {} MiB",
        huge.requests(),
        sent >> 20,
        peak >> 20
    );
    assert!(
        peak < 128 << 20,
        "the operator's peak resident memory is {} MiB",
        peak >> 20
    );
    // The status was written on every failure (a datapoint each).
    let status = alarms
        .get("huge")
        .await
        .expect("alarm")
        .status
        .expect("status");
    assert!(!status.datapoints.is_empty(), "{status:?}");
}
