//! The HTTP plumbing of the Teams stand-in: a plain HTTP/1.1 server loop on a loopback listener
//! whose handler may answer or drop the connection, the fault switch the servers share, the
//! change signal tests wait on, and a small loopback-only HTTP client.

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bodies larger than this are refused with 413 before any handler sees them.
const MAX_BODY: usize = 1024 * 1024;

/// A request as a stand-in handler sees it: the whole body is read.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// The path exactly as received (still percent-encoded), without the query.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a handler does with a request.
pub enum Reply {
    /// Answers with this status, these headers and this body.
    Answer(hyper::Response<Full<Bytes>>),
    /// Closes the connection without an answer (a fault).
    Close,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: StatusCode, body: &Value) -> Reply {
        Reply::with_headers(
            status,
            &[("content-type", "application/json; charset=utf-8")],
            body.to_string(),
        )
    }

    /// An answer with extra headers.
    pub fn with_headers(status: StatusCode, headers: &[(&str, &str)], body: String) -> Reply {
        let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        for (name, value) in headers {
            response.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header names here are static and valid"),
                HeaderValue::from_str(value).expect("header values here are ASCII"),
            );
        }
        Reply::Answer(response)
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;
/// A stand-in server's request handler.
pub type Handler = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;

/// The connection was closed on purpose; hyper drops a connection whose service fails.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// Serves `handler` on `listener` until `shutdown` is cancelled. Each connection is HTTP/1.1
/// with keep-alive; a [`Reply::Close`] ends that connection without an answer.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken, handler: Handler) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let handler = handler.clone();
                        async move { respond(req, handler).await }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        () = shutdown.cancelled() => {}
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn respond(req: hyper::Request<Incoming>, handler: Handler) -> Result<hyper::Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let refused = Reply::json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({"error": {"code": "RequestTooLarge", "message": "request body too large"}}),
            );
            return match refused {
                Reply::Answer(r) => Ok(r),
                Reply::Close => Err(Dropped),
            };
        }
    };
    let request = Request {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    };
    match handler(request).await {
        Reply::Answer(response) => Ok(response),
        Reply::Close => Err(Dropped),
    }
}

/// Binds 127.0.0.1 on a free port.
pub async fn bind_loopback() -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding 127.0.0.1:0")?;
    let address = listener.local_addr().context("reading the bound address")?;
    Ok((listener, address))
}

/// A fault a stand-in server can be told to answer with instead of serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `503 Service Unavailable` with a JSON error body.
    Unavailable,
    /// `429 Too Many Requests` with `Retry-After: <seconds>`.
    TooManyRequests { retry_after_secs: u32 },
    /// The connection is closed without any answer.
    CloseConnection,
}

/// How long an injected fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// The next `n` requests get the fault, then service resumes.
    Next(usize),
    /// Every request gets the fault until [`Faults::clear`].
    UntilCleared,
}

/// A server's fault switch. Faults apply to requests in arrival order, before routing and
/// authentication (as a load balancer in front of the service would answer).
#[derive(Debug, Default)]
pub struct Faults {
    current: Mutex<Option<(Fault, Times)>>,
}

impl Faults {
    /// Answers the next requests with `fault`, replacing any fault already set.
    pub fn inject(&self, fault: Fault, times: Times) {
        *self
            .current
            .lock()
            .expect("no code panics while holding the fault lock") = Some((fault, times));
    }

    /// Serves normally again.
    pub fn clear(&self) {
        *self
            .current
            .lock()
            .expect("no code panics while holding the fault lock") = None;
    }

    /// Takes the fault for the request that just arrived, if one is set.
    pub fn take(&self) -> Option<Fault> {
        let mut current = self
            .current
            .lock()
            .expect("no code panics while holding the fault lock");
        let (fault, times) = (*current)?;
        *current = match times {
            Times::UntilCleared => Some((fault, times)),
            Times::Next(0) => {
                *current = None;
                return None;
            }
            Times::Next(1) => None,
            Times::Next(n) => Some((fault, Times::Next(n - 1))),
        };
        Some(fault)
    }

    /// The reply a fault produces.
    pub fn reply(fault: Fault) -> Reply {
        match fault {
            Fault::Unavailable => Reply::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": {"code": "ServiceUnavailable", "message": "The service is temporarily unavailable."}}),
            ),
            Fault::TooManyRequests { retry_after_secs } => Reply::with_headers(
                StatusCode::TOO_MANY_REQUESTS,
                &[
                    ("content-type", "application/json; charset=utf-8"),
                    ("retry-after", &retry_after_secs.to_string()),
                ],
                serde_json::json!({"error": {"code": "TooManyRequests", "message": "Too many requests; retry after the given delay."}})
                    .to_string(),
            ),
            Fault::CloseConnection => Reply::Close,
        }
    }
}

/// A change counter that tests wait on: every recorded event bumps it, and waiters re-check
/// their condition on each bump (no polling).
#[derive(Debug)]
pub struct Changes {
    tx: watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            tx: watch::channel(0).0,
        }
    }
}

impl Changes {
    /// Wakes every waiter.
    pub fn bump(&self) {
        self.tx.send_modify(|n| *n += 1);
    }

    /// Re-evaluates `check` after every change until it yields a value or `timeout` passes.
    pub async fn wait<T>(&self, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.tx.subscribe();
        loop {
            rx.mark_unchanged();
            if let Some(found) = check() {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                // The sender lives as long as `self`; a timeout gets one last look.
                Ok(Err(_)) | Err(_) => return check(),
            }
        }
    }
}

/// An answer read by [`request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one HTTP/1.1 request to a loopback `http://` URL and reads the whole answer within
/// `timeout`. Refuses any other host, so nothing a test sends can leave the machine.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<HttpResponse> {
    tokio::time::timeout(timeout, request_inner(method, url, headers, body))
        .await
        .with_context(|| format!("no answer from {url} within {timeout:?}"))?
}

async fn request_inner(method: Method, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<HttpResponse> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("'{url}' is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("'{url}': the test client speaks plain http to loopback only");
    }
    let host = uri.host().context("URL without host")?;
    let ip: std::net::IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
        .or_else(|| (host == "localhost").then_some(std::net::IpAddr::from([127, 0, 0, 1])))
        .with_context(|| format!("'{url}': only loopback addresses are allowed in tests"))?;
    if !ip.is_loopback() {
        bail!("'{url}': only loopback addresses are allowed in tests");
    }
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((ip, port))
        .await
        .with_context(|| format!("connecting to {ip}:{port}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    let driver = tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("{host}:{port}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(Full::new(Bytes::from(body)))
        .context("building the request")?;
    let response = sender.send_request(req).await.context("sending the request")?;
    let (parts, incoming) = response.into_parts();
    let body = incoming.collect().await.context("reading the answer")?.to_bytes();
    driver.abort();
    Ok(HttpResponse {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}
