use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use reqwest::Method;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::*;

#[test]
fn base_urls_are_http_with_a_host_and_nothing_that_rewrites_the_path() {
    for good in [
        "http://prometheus.monitoring:9090",
        "https://gitlab.example.com/",
        "http://10.0.0.7:9090/prefix/",
    ] {
        assert!(parse_base(good).is_ok(), "{good}");
    }
    for bad in [
        "http://internal/secret?",
        "http://internal/secret#",
        "http://internal/?a=b",
        "http://internal/?a=b#",
        "file:///etc/passwd",
        "ftp://internal/",
        "http://user:password@internal/",
        "http://@internal/",
        "http://",
        "not a url",
    ] {
        assert!(
            matches!(parse_base(bad), Err(OutboundError::InvalidUrl { .. })),
            "{bad}"
        );
    }
}

#[test]
fn a_called_url_may_have_a_query_but_no_fragment() {
    assert!(parse_target("https://hooks.example.com/in?team=a").is_ok());
    assert!(parse_target("https://hooks.example.com/in#").is_err());
    assert!(parse_target("https://user@hooks.example.com/in").is_err());
}

#[test]
fn request_urls_are_built_from_segments() {
    let base = parse_base("http://prom:9090/prefix/").expect("valid");
    assert_eq!(
        join(&base, &["api", "v1", "query"]).as_str(),
        "http://prom:9090/prefix/api/v1/query"
    );
    let base = parse_base("https://gitlab.example.com").expect("valid");
    assert_eq!(
        join(&base, &["projects", "group/project", "x?y#z"]).as_str(),
        "https://gitlab.example.com/projects/group%2Fproject/x%3Fy%23z"
    );
}

#[test]
fn loopback_link_local_and_metadata_addresses_are_refused() {
    for refused in [
        "127.0.0.1",
        "127.1.2.3",
        "169.254.169.254",
        "0.0.0.0",
        "100.100.100.200",
        "255.255.255.255",
        "224.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
    ] {
        let address: IpAddr = refused.parse().expect("an address");
        assert!(refused_class(address).is_some(), "{refused}");
    }
    assert_eq!(
        refused_class("::1".parse().expect("an address")),
        Some("a loopback address")
    );
    // Private ranges are where in-cluster services answer.
    for reachable in [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "8.8.8.8",
        "fd12::1",
    ] {
        let address: IpAddr = reachable.parse().expect("an address");
        assert_eq!(refused_class(address), None, "{reachable}");
    }
}

/// A loopback HTTP server answering every request with `response` (head)
/// followed by `body_bytes` bytes of `x`, counting connections and the
/// bytes it managed to send.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    sent: Arc<AtomicU64>,
}

async fn serve(head: &'static str, body_bytes: u64) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let (counted, written) = (connections.clone(), sent.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let written = written.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = body_bytes;
                while left > 0 {
                    let n = left.min(chunk.len() as u64);
                    if stream.write_all(&chunk[..n as usize]).await.is_err() {
                        return;
                    }
                    written.fetch_add(n, Ordering::SeqCst);
                    left -= n;
                }
            });
        }
    });
    Server {
        port,
        connections,
        sent,
    }
}

async fn get(outbound: &Outbound, url: &str, limit: BodyLimit) -> Result<Answer, OutboundError> {
    let url = parse_base(url).expect("a valid URL");
    outbound
        .call(Method::GET, url, Duration::from_secs(10), limit, |r| r)
        .await
}

const OK_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=utf-8\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn loopback_is_refused_by_address_and_by_name_before_connecting() {
    let server = serve(OK_HEAD, 2).await;
    let outbound = Outbound::new(Vec::new()).expect("outbound");
    for url in [
        format!("http://127.0.0.1:{}/", server.port),
        format!("http://localhost:{}/", server.port),
        format!("http://[::ffff:127.0.0.1]:{}/", server.port),
    ] {
        let error = get(&outbound, &url, BodyLimit::Cap(1024))
            .await
            .expect_err("refused");
        assert!(
            matches!(error, OutboundError::Refused { .. }),
            "{url}: {error}"
        );
        assert!(error.to_string().contains(ALLOW_FLAG), "{error}");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_allowed_prefix_reaches_loopback() {
    let server = serve(OK_HEAD, 2).await;
    let outbound = Outbound::new(vec!["http://127.0.0.1:".to_owned()]).expect("outbound");
    let answer = get(
        &outbound,
        &format!("http://127.0.0.1:{}/", server.port),
        BodyLimit::Cap(1024),
    )
    .await
    .expect("an answer");
    assert_eq!(answer.describe(), "HTTP 200, application/json, 2 bytes");
    // The prefix is matched on the whole URL: another host is not allowed.
    let error = get(
        &outbound,
        &format!("http://localhost:{}/", server.port),
        BodyLimit::Cap(1024),
    )
    .await
    .expect_err("refused");
    assert!(matches!(error, OutboundError::Refused { .. }), "{error}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = serve(OK_HEAD, 2).await;
    let head: &'static str = Box::leak(
        format!(
            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.2:{}/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            target.port
        )
        .into_boxed_str(),
    );
    let redirecting = serve(head, 0).await;
    let outbound = Outbound::new(vec!["http://127.0.0.1:".to_owned()]).expect("outbound");
    let error = get(
        &outbound,
        &format!("http://127.0.0.1:{}/", redirecting.port),
        BodyLimit::Cap(1024),
    )
    .await
    .expect_err("a redirect is a failure");
    assert!(
        matches!(error, OutboundError::Redirect { status: 302 }),
        "{error}"
    );
    assert_eq!(target.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_huge_answer_is_cut_at_the_cap() {
    // 300 MB without a content length: only streaming can stop it.
    let server = serve(OK_HEAD, 300 << 20).await;
    let outbound = Outbound::new(vec!["http://127.0.0.1:".to_owned()]).expect("outbound");
    let error = get(
        &outbound,
        &format!("http://127.0.0.1:{}/", server.port),
        BodyLimit::Cap(4 << 20),
    )
    .await
    .expect_err("too large");
    assert!(
        matches!(error, OutboundError::TooLarge { status: 200, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("application/json"), "{error}");
    // The server gets stuck once the socket buffers are full.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = server.sent.load(Ordering::SeqCst);
    assert!(sent < 64 << 20, "the server sent {sent} bytes");
}

#[tokio::test]
async fn a_declared_length_over_the_cap_is_refused_unread() {
    let server = serve(
        "HTTP/1.1 500 Oops\r\ncontent-type: text/html\r\ncontent-length: 10000\r\nconnection: close\r\n\r\n",
        10_000,
    )
    .await;
    let outbound = Outbound::new(vec!["http://127.0.0.1:".to_owned()]).expect("outbound");
    let error = get(
        &outbound,
        &format!("http://127.0.0.1:{}/", server.port),
        BodyLimit::Cap(100),
    )
    .await
    .expect_err("too large");
    assert_eq!(
        error.to_string(),
        "the answer (HTTP 500, text/html) is larger than 100 bytes; stopped reading"
    );
}

#[test]
fn only_a_plausible_media_type_is_repeated() {
    use reqwest::header::HeaderValue;
    let value = |text: &'static str| HeaderValue::from_static(text);
    assert_eq!(
        media_type(Some(&value("Application/JSON; charset=utf-8"))),
        "application/json"
    );
    assert_eq!(
        media_type(Some(&value("AKIAIOSFODNN7EXAMPLE secret=wJalrXUtnFEMI"))),
        "no content type"
    );
    assert_eq!(media_type(None), "no content type");
}
