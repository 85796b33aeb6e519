//! The webhook provider against a receiver written here the way a team
//! would write one: it checks the HMAC-SHA256 signature over
//! `timestamp + "." + body` (with its own HMAC, not the operator's code),
//! refuses timestamps more than five minutes off, and remembers accepted
//! signatures to refuse replays.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use weblab_operator::{
    controllers::merge_train_pause::{
        provider::{PauseRequest, TrainProvider},
        webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, Webhook, sign},
    },
    outbound::Outbound,
};

const KEY: &[u8] = b"receiver-shared-secret";
const TOLERANCE_SECS: i64 = 300;

#[derive(Default)]
struct Receiver {
    /// Accepted requests: timestamp header, signature header, body.
    accepted: Vec<(String, String, Vec<u8>)>,
    /// Signatures already accepted, to spot replays.
    seen: BTreeSet<String>,
    /// Every refusal, in words.
    refused: Vec<String>,
    /// Answer 503 to this many requests first.
    fail_first: usize,
    /// Requests received, valid or not.
    received: usize,
}

type Shared = Arc<Mutex<Receiver>>;

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

async fn receive(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut receiver = shared.lock().expect("receiver lock");
    receiver.received += 1;
    if receiver.fail_first > 0 {
        receiver.fail_first -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "try later".to_owned());
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(timestamp), Some(signature)) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER))
    else {
        receiver.refused.push("unsigned".to_owned());
        return (StatusCode::UNAUTHORIZED, "unsigned".to_owned());
    };
    let Ok(seconds) = timestamp.parse::<i64>() else {
        receiver.refused.push("bad timestamp".to_owned());
        return (StatusCode::UNAUTHORIZED, "bad timestamp".to_owned());
    };
    // The signature first: a timestamp is only trusted once it is signed.
    let Some(hex) = signature.strip_prefix("sha256=") else {
        receiver.refused.push("bad signature format".to_owned());
        return (StatusCode::UNAUTHORIZED, "bad signature format".to_owned());
    };
    let Ok(claimed) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        receiver.refused.push("bad signature format".to_owned());
        return (StatusCode::UNAUTHORIZED, "bad signature format".to_owned());
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(KEY).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&body);
    if mac.verify_slice(&claimed).is_err() {
        receiver.refused.push("signature mismatch".to_owned());
        return (StatusCode::UNAUTHORIZED, "signature mismatch".to_owned());
    }
    if (now_secs() - seconds).abs() > TOLERANCE_SECS {
        receiver.refused.push("stale".to_owned());
        return (StatusCode::UNAUTHORIZED, "stale".to_owned());
    }
    if !receiver.seen.insert(signature.clone()) {
        receiver.refused.push("replay".to_owned());
        return (StatusCode::CONFLICT, "replay".to_owned());
    }
    receiver
        .accepted
        .push((timestamp, signature, body.to_vec()));
    (StatusCode::NO_CONTENT, String::new())
}

async fn start(fail_first: usize) -> (String, Shared) {
    let shared = Arc::new(Mutex::new(Receiver {
        fail_first,
        ..Receiver::default()
    }));
    let app = Router::new()
        .route("/merge-train", post(receive))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!(
        "http://{}/merge-train",
        listener.local_addr().expect("address")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, shared)
}

fn request() -> PauseRequest {
    PauseRequest {
        namespace: "team".to_owned(),
        name: "sev2-freeze".to_owned(),
        train: "graphql-main".to_owned(),
        reason: "Sev2: elevated error rate".to_owned(),
        ticket: Some("https://tickets.example.com/SEV2-7781".to_owned()),
        expires_at: Some("2026-11-22T14:00:00Z".to_owned()),
    }
}

fn webhook(url: &str) -> Webhook {
    let outbound = Outbound::new(vec!["http://127.0.0.1:".to_owned()]).expect("outbound");
    Webhook::new(&outbound, url, KEY.to_vec(), Duration::from_secs(5)).expect("a provider")
}

/// Sends raw headers and body, as an attacker replaying or editing a
/// captured request would.
async fn send_raw(url: &str, timestamp: &str, signature: &str, body: Vec<u8>) -> u16 {
    weblab_operator::outbound::client(Duration::from_secs(5))
        .expect("a client")
        .post(url)
        .header("content-type", "application/json")
        .header(TIMESTAMP_HEADER, timestamp)
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .expect("the receiver answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn pause_and_resume_arrive_signed_fresh_and_complete() {
    let (url, shared) = start(0).await;
    let hook = webhook(&url);
    hook.pause(&request()).await.expect("pause accepted");
    hook.resume(&request(), None)
        .await
        .expect("resume accepted");

    let receiver = shared.lock().expect("lock");
    assert!(receiver.refused.is_empty(), "{:?}", receiver.refused);
    let bodies: Vec<serde_json::Value> = receiver
        .accepted
        .iter()
        .map(|(_, _, body)| serde_json::from_slice(body).expect("JSON"))
        .collect();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["action"], "pause");
    assert_eq!(bodies[1]["action"], "resume");
    assert_eq!(bodies[0]["train"], "graphql-main");
    assert_eq!(bodies[0]["ticket"], "https://tickets.example.com/SEV2-7781");
    assert_eq!(bodies[0]["pause"]["name"], "sev2-freeze");
}

#[tokio::test]
async fn a_replayed_request_is_refused() {
    let (url, shared) = start(0).await;
    webhook(&url).pause(&request()).await.expect("accepted");
    let (timestamp, signature, body) = shared.lock().expect("lock").accepted[0].clone();
    assert_eq!(send_raw(&url, &timestamp, &signature, body).await, 409);
    assert_eq!(shared.lock().expect("lock").refused, ["replay"]);
}

#[tokio::test]
async fn a_tampered_body_or_timestamp_is_refused() {
    let (url, shared) = start(0).await;
    webhook(&url).pause(&request()).await.expect("accepted");
    let (timestamp, signature, body) = shared.lock().expect("lock").accepted[0].clone();

    let text = String::from_utf8(body).expect("UTF-8");
    let tampered = text.replace("\"pause\"", "\"resume\"");
    assert_ne!(tampered, text);
    assert_eq!(
        send_raw(&url, &timestamp, &signature, tampered.into_bytes()).await,
        401
    );

    let later = (timestamp.parse::<i64>().expect("seconds") + 1).to_string();
    assert_eq!(
        send_raw(&url, &later, &signature, text.into_bytes()).await,
        401
    );
    assert_eq!(
        shared.lock().expect("lock").refused,
        ["signature mismatch", "signature mismatch"]
    );
}

#[tokio::test]
async fn an_old_timestamp_is_refused_even_when_signed() {
    let (url, shared) = start(0).await;
    let old = now_secs() - 3600;
    let body = br#"{"action":"resume","train":"graphql-main"}"#.to_vec();
    let signature = sign(KEY, old, &body);
    assert_eq!(
        send_raw(&url, &old.to_string(), &signature, body).await,
        401
    );
    assert_eq!(shared.lock().expect("lock").refused, ["stale"]);
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_distinct_requests() {
    let (url, shared) = start(2).await;
    let report = webhook(&url)
        .pause(&request())
        .await
        .expect("third attempt accepted");
    assert!(report.message.contains("attempt 3"), "{}", report.message);
    let receiver = shared.lock().expect("lock");
    assert_eq!(receiver.received, 3);
    assert!(receiver.refused.is_empty(), "retries are not replays");
}

#[tokio::test]
async fn non_2xx_answers_are_a_failure() {
    let (url, shared) = start(usize::MAX).await;
    let error = webhook(&url)
        .pause(&request())
        .await
        .expect_err("never accepted");
    assert_eq!(error.status(), Some(503));
    assert_eq!(shared.lock().expect("lock").received, 3, "three attempts");
}
