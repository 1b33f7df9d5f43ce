//! The operations listener (`[server] listen`): `/healthz` (the process answers), `/readyz`
//! (the readiness conditions, with the reason for each one not met) and `/metrics` (Prometheus
//! text format). Plain HTTP/1.1 without authentication, which is why the configuration keeps it
//! on loopback unless told otherwise. Also the client side of `baton healthcheck`, the
//! container's HEALTHCHECK, which needs no shell and no curl in the image.

use crate::metrics::{CONTENT_TYPE, Metrics};
use crate::readiness::Readiness;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer `baton healthcheck` reads.
const MAX_ANSWER: usize = 64 * 1024;

/// What the listener serves.
#[derive(Clone)]
pub struct Ops {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

/// Serves `ops` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, ops: Ops, shutdown: CancellationToken) {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "the operations listener cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ops = ops.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ops = ops.clone();
                async move { Ok::<_, Infallible>(respond(&ops, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(peer = %peer, error = %e, "operations connection ended with an error");
                },
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
}

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// The routes. Pure over the shared state: no IO.
pub fn respond<B>(ops: &Ops, req: &Request<B>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return answer(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET is served here\n".into());
    }
    match req.uri().path() {
        "/healthz" => answer(StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" => {
            let report = ops.readiness.report();
            let status = if report.ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            answer(status, TEXT, report.text())
        }
        "/metrics" => answer(StatusCode::OK, CONTENT_TYPE, ops.metrics.encode()),
        _ => answer(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: /healthz, /readyz and /metrics are served here\n".into(),
        ),
    }
}

/// Where `baton healthcheck` asks: `http://HOST:PORT/PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl CheckUrl {
    /// Parses a plain `http://` URL (no TLS: the listener has none).
    pub fn parse(text: &str) -> Result<CheckUrl, String> {
        let uri: hyper::Uri = text.parse().map_err(|e| format!("'{text}' is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("'{text}' is not an http:// URL"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("'{text}' names no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        Ok(CheckUrl {
            host,
            port: uri.port_u16().unwrap_or(80),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        })
    }

    /// The URL of `path` on a listener bound to `listen`: an unspecified address (0.0.0.0, ::)
    /// is asked on loopback.
    pub fn for_listener(listen: SocketAddr, path: &str) -> CheckUrl {
        let ip = match listen.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        CheckUrl {
            host: ip.to_string(),
            port: listen.port(),
            path: path.to_string(),
        }
    }
}

impl std::fmt::Display for CheckUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// GETs `url` within `timeout`. `Ok(body)` on 200; otherwise the reason (the status and body,
/// or why no answer came).
pub async fn check(url: &CheckUrl, timeout: Duration) -> Result<String, String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let driver = tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::GET)
            .uri(url.path.as_str())
            .header(hyper::header::HOST, format!("{}:{}", url.host, url.port))
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("building the request: {e}"))?;
        let response: Response<Incoming> = sender.send_request(request).await.map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        driver.abort();
        let text = String::from_utf8_lossy(&body).into_owned();
        if status == StatusCode::OK {
            Ok(text)
        } else {
            Err(format!("{status}: {}", text.trim_end()))
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// The `[server] listen` address of a configuration file, read without validating the rest
/// (the health check must not need the bot's secrets). `None` when the file has no listener.
pub fn listen_of(text: &str) -> Result<Option<SocketAddr>, String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| format!("not TOML: {}", e.message()))?;
    let Some(server) = doc.get("server").and_then(|s| s.as_table()) else {
        return Ok(None);
    };
    if server.get("enabled").and_then(toml::Value::as_bool) == Some(false) {
        return Ok(None);
    }
    match server.get("listen").and_then(toml::Value::as_str) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("server.listen '{s}' is not an address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Ops {
        Ops {
            metrics: Arc::new(Metrics::new()),
            readiness: Arc::new(Readiness::default()),
        }
    }

    fn get(ops: &Ops, method: Method, path: &str) -> (u16, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("a valid request");
        let resp = respond(ops, &req);
        let status = resp.status().as_u16();
        let body = futures::executor::block_on(resp.into_body().collect())
            .expect("a Full body cannot fail")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn routes() {
        let ops = ops();
        assert_eq!(get(&ops, Method::GET, "/healthz"), (200, "ok\n".into()));
        assert_eq!(get(&ops, Method::GET, "/readyz"), (200, "ready\n".into()));
        ops.readiness.expect("chat:xmpp", "not connected yet");
        assert_eq!(
            get(&ops, Method::GET, "/readyz"),
            (503, "not ready\nchat:xmpp: not connected yet\n".into())
        );
        let (status, metrics) = get(&ops, Method::GET, "/metrics");
        assert_eq!(status, 200);
        assert!(
            metrics.contains("# TYPE baton_runs_requested_total counter"),
            "{metrics}"
        );
        assert!(metrics.contains("baton_build_info{version=\""), "{metrics}");
        assert_eq!(get(&ops, Method::POST, "/healthz").0, 405);
        assert_eq!(get(&ops, Method::GET, "/../etc/passwd").0, 404);
    }

    #[test]
    fn check_urls() {
        assert_eq!(
            CheckUrl::parse("http://127.0.0.1:9464/readyz"),
            Ok(CheckUrl {
                host: "127.0.0.1".into(),
                port: 9464,
                path: "/readyz".into()
            })
        );
        assert_eq!(
            CheckUrl::parse("http://[::1]:9464/healthz").map(|u| u.to_string()),
            Ok("http://[::1]:9464/healthz".to_string())
        );
        assert!(CheckUrl::parse("https://127.0.0.1:9464/healthz").is_err());
        assert!(CheckUrl::parse("not a url").is_err());
        assert_eq!(
            CheckUrl::for_listener("0.0.0.0:9464".parse().expect("valid"), "/healthz").to_string(),
            "http://127.0.0.1:9464/healthz"
        );
        assert_eq!(
            CheckUrl::for_listener("[::]:9464".parse().expect("valid"), "/healthz").to_string(),
            "http://[::1]:9464/healthz"
        );
    }

    #[test]
    fn the_listener_is_read_without_the_rest_of_the_configuration() {
        assert_eq!(
            listen_of("[bot]\nstore = 'x'\n[server]\nlisten = '127.0.0.1:9464'\n"),
            Ok(Some("127.0.0.1:9464".parse().expect("valid")))
        );
        assert_eq!(listen_of("[bot]\n"), Ok(None));
        assert_eq!(
            listen_of("[server]\nenabled = false\nlisten = '127.0.0.1:1'\n"),
            Ok(None)
        );
        assert!(listen_of("[server]\nlisten = 'nine'\n").is_err());
        assert!(listen_of("[server\n").is_err());
    }

    #[tokio::test]
    async fn a_real_listener_answers_and_a_closed_port_fails_the_check() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, ops(), stop.clone()));
        let ok = check(&CheckUrl::for_listener(addr, "/healthz"), Duration::from_secs(5)).await;
        assert_eq!(ok, Ok("ok\n".to_string()));
        let missing = check(&CheckUrl::for_listener(addr, "/nope"), Duration::from_secs(5)).await;
        assert!(missing.is_err_and(|e| e.starts_with("404 Not Found")));
        stop.cancel();
        server.await.expect("the server ends when told");
        let closed = check(&CheckUrl::for_listener(addr, "/healthz"), Duration::from_secs(5)).await;
        assert!(closed.is_err_and(|e| e.starts_with("cannot connect")));
    }
}
