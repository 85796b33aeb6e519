//! A minimal HTTP/1.1 server on loopback for the harness's own endpoints (the
//! metrics endpoint Prometheus scrapes, the webhook recorder Alertmanager
//! posts to).
//!
//! Plain threads rather than tokio: the endpoints live in statics and across
//! tests that each run their own runtime, and must keep serving while a test
//! blocks. One thread per connection, each connection answered once and
//! closed, which is all Prometheus and Alertmanager need. Anything malformed
//! gets a 4xx and costs only its own thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Error;

/// Largest request line plus headers accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest body accepted; Alertmanager's notifications are far smaller.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// A client that sends nothing for this long loses its connection.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP request as a harness endpoint received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target as sent, e.g. `/metrics` or `/hook?x=1`.
    pub target: String,
    /// Header names (lowercased) and values, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (empty without `Content-Length`).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }
}

/// What a handler answers.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
}

type Handler = dyn Fn(HttpRequest) -> Response + Send + Sync;

/// A listening server; dropping it stops accepting connections.
#[derive(Debug)]
pub(crate) struct HttpServer {
    address: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on a free loopback port and answers every request with `handler`.
    pub(crate) fn serve(
        name: &str,
        handler: impl Fn(HttpRequest) -> Response + Send + Sync + 'static,
    ) -> Result<HttpServer, Error> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(Error::Port)?;
        let address = listener.local_addr().map_err(Error::Port)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let acceptor = std::thread::Builder::new()
            .name(format!("testenv-{name}"))
            .spawn({
                let stopping = Arc::clone(&stopping);
                move || accept_loop(&listener, &stopping, &handler)
            })
            .map_err(|source| Error::Io {
                action: "start the thread of",
                path: name.into(),
                source,
            })?;
        Ok(HttpServer {
            address,
            stopping,
            acceptor: Some(acceptor),
        })
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // accept() blocks; a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, stopping: &AtomicBool, handler: &Arc<Handler>) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // E.g. EMFILE under a flood: drop this one, keep serving.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let handler = Arc::clone(handler);
        // A failed spawn drops the connection; the client sees a reset.
        let _ = std::thread::Builder::new()
            .name("testenv-http-conn".to_owned())
            .spawn(move || serve_connection(stream, &*handler));
    }
}

fn serve_connection(stream: TcpStream, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let response = match read_request(&mut BufReader::new(reader)) {
        Ok(request) => handler(request),
        Err(Some(rejection)) => rejection,
        // The client went away or stalled: nobody to answer.
        Err(None) => return,
    };
    let _ = write_response(stream, &response);
}

/// Reads one request; `Err(Some(..))` is the 4xx to answer, `Err(None)` an
/// I/O failure.
fn read_request(reader: &mut impl BufRead) -> Result<HttpRequest, Option<Response>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let read = reader
            .by_ref()
            .take((MAX_HEAD_BYTES + 1 - head.len()) as u64)
            .read_until(b'\n', &mut line)
            .map_err(|_| None)?;
        if read == 0 {
            return Err(None);
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD_BYTES {
            return Err(Some(Response::text(431, "request head too large\n")));
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let bad = |why: &str| Some(Response::text(400, format!("bad request: {why}\n")));
    let head = std::str::from_utf8(&head).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(bad("malformed request line"));
    }
    let mut headers = Vec::new();
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("malformed header"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut request = HttpRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body: Vec::new(),
    };
    if request.header("transfer-encoding").is_some() {
        return Err(Some(Response::text(411, "send a Content-Length\n")));
    }
    if let Some(length) = request.header("content-length") {
        let length: usize = length.parse().map_err(|_| bad("bad Content-Length"))?;
        if length > MAX_BODY_BYTES {
            return Err(Some(Response::text(413, "body too large\n")));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).map_err(|_| None)?;
        request.body = body;
    }
    Ok(request)
}

fn write_response(mut stream: TcpStream, response: &Response) -> std::io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&response.body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<HttpRequest, Option<u16>> {
        read_request(&mut BufReader::new(raw)).map_err(|err| err.map(|r| r.status))
    }

    #[test]
    fn parses_a_post_with_body() {
        let request = parse(
            b"POST /hook?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\nContent-Length: 4\r\n\r\nbodyEXTRA",
        )
        .expect("valid request");
        assert_eq!(request.method, "POST");
        assert_eq!(request.path(), "/hook");
        assert_eq!(request.header("AUTHORIZATION"), Some("Bearer t"));
        assert_eq!(request.body, b"body");
    }

    #[test]
    fn rejects_malformed_requests() {
        assert_eq!(parse(b"garbage\r\n\r\n"), Err(Some(400)));
        assert_eq!(parse(b"GET metrics HTTP/1.1\r\n\r\n"), Err(Some(400)));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"),
            Err(Some(400))
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(Some(400))
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"),
            Err(Some(413))
        );
        let huge = format!(
            "GET / HTTP/1.1\r\nx: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(parse(huge.as_bytes()), Err(Some(431)));
        // Cut off before the blank line: nobody to answer.
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), Err(None));
    }
}
