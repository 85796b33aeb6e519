//! JSON bodies for the errors hyper answers by itself.
//!
//! hyper refuses a request it cannot parse before any handler sees it: a
//! request target over 65,534 bytes (414, a limit hyper hard-codes), a head
//! over its read buffer (431), or a malformed request line or header (400).
//! It writes that response with an empty body and closes the connection, and
//! offers no hook to change it. Every error of this server is JSON, so each
//! connection is wrapped: a response head that hyper wrote on its own (one of
//! those statuses, no `Content-Type`, no body: every response of our
//! handlers has a JSON body) is swapped for the same status with a JSON
//! error, before it reaches the socket.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A listener whose connections answer hyper's own errors in JSON.
pub(crate) struct JsonParseErrors<L>(pub L);

impl<L: Listener> Listener for JsonParseErrors<L> {
    type Io = JsonParseErrorIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, address) = self.0.accept().await;
        (
            JsonParseErrorIo {
                inner: io,
                replacing: None,
            },
            address,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// One connection; see the module documentation.
pub(crate) struct JsonParseErrorIo<S> {
    inner: S,
    replacing: Option<Replacement>,
}

/// A JSON response being written in place of hyper's empty one.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// How many of hyper's bytes it stands for, reported once it is out.
    replaces: usize,
}

/// The JSON response for `head`, when it is one hyper wrote by itself.
fn replacement_for(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let message = match rest.get(..4)? {
        b"400 " => "the request is not valid HTTP/1.1: check the request line and headers",
        b"414 " => {
            "the URL is longer than 65534 bytes: shorten it, or send many units in one POST to .../treatments"
        }
        b"431 " => "the request headers are too large: send fewer or shorter headers",
        _ => return None,
    };
    // hyper's head ends the buffer: it wrote no body.
    let text = std::str::from_utf8(head.strip_suffix(b"\r\n\r\n")?).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut kept = Vec::new();
    for line in lines {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("content-type") {
            return None;
        }
        if !name.eq_ignore_ascii_case("content-length") && !name.eq_ignore_ascii_case("connection")
        {
            kept.push(line);
        }
    }
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = format!("{status_line}\r\n");
    for line in kept {
        response.push_str(line);
        response.push_str("\r\n");
    }
    response.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    Some(response.into_bytes())
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrorIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrorIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // hyper calls again with the same buffer until it is reported
        // written, so a replacement half out carries on where it stopped.
        let mut replacement = match this.replacing.take() {
            Some(replacement) => replacement,
            None => match replacement_for(buf) {
                Some(bytes) => Replacement {
                    bytes,
                    written: 0,
                    replaces: buf.len(),
                },
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            },
        };
        while let Some(remaining) = replacement
            .bytes
            .get(replacement.written..)
            .filter(|rest| !rest.is_empty())
        {
            match Pin::new(&mut this.inner).poll_write(cx, remaining) {
                Poll::Pending => {
                    this.replacing = Some(replacement);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => replacement.written += written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(replacement.replaces))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes a response head and its body from one
    // flat buffer, which is what `replacement_for` inspects.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{Router, routing::get};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `request` to a wrapped server and reads until it closes.
    async fn exchange(request: &[u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let address = listener.local_addr().expect("an address");
        let router = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(JsonParseErrors(listener), router).await });
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connects");
        stream.write_all(request).await.expect("sends");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("reads");
        String::from_utf8(answer).expect("text")
    }

    #[tokio::test]
    async fn hyper_s_own_refusals_reach_the_client_as_json() {
        let long = format!(
            "GET /?unit={} HTTP/1.1\r\nhost: x\r\n\r\n",
            "u".repeat(70 * 1024)
        );
        let malformed = b"GET / HTTP/1.1\r\nthis is no header\r\n\r\n".to_vec();
        for (request, status) in [(long.into_bytes(), "414"), (malformed, "400")] {
            let answer = exchange(&request).await;
            let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            assert!(head.contains("content-type: application/json"), "{head}");
            let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
            assert!(
                json["error"].as_str().is_some_and(|e| e.len() > 20),
                "{body}"
            );
        }
        // Answers of the handlers pass untouched.
        let answer = exchange(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
    }

    #[test]
    fn only_hyper_s_bodiless_errors_are_replaced() {
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 13:00:00 GMT\r\n\r\n";
        let replaced =
            String::from_utf8(replacement_for(hyper_414).expect("replaced")).expect("text");
        let (head, body) = replaced.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("\r\ndate: Wed, 02 Dec 2026"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: application/json"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        assert!(!head.contains("content-length: 0"), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert!(json["error"].as_str().unwrap_or_default().contains("65534"));

        assert!(replacement_for(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n").is_some());
        assert!(
            replacement_for(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_some()
        );
        // Our own answers carry a JSON body and a Content-Type.
        assert!(
            replacement_for(
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
            )
            .is_none()
        );
        assert!(
            replacement_for(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n")
                .is_none()
        );
        assert!(replacement_for(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement_for(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n").is_none());
    }
}
