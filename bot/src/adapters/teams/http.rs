//! The Teams adapter's HTTP client: hyper-util's pooled client over rustls (ring, the system's
//! roots), `https://` everywhere and plain `http://` only to loopback (the tests' stand-in),
//! each call bounded in time and in the size of its answer. Errors never carry headers, so a
//! token cannot leak through them.

use super::config::WebUrl;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Pooled;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// The largest answer read from any service.
const MAX_ANSWER: usize = 1024 * 1024;

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0} is not a URL Baton calls")]
    Url(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("the answer could not be read: {0}")]
    Body(String),
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The client. Cheap to clone.
#[derive(Clone)]
pub struct Http {
    client: Pooled<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl Http {
    /// A client trusting the system's root certificates. `needs_roots` makes a missing root
    /// store an error (when some configured URL is https).
    pub fn new(timeout: Duration, needs_roots: bool) -> anyhow::Result<Http> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if roots.is_empty() && needs_roots {
            anyhow::bail!("no trusted root certificates found on this system (install ca-certificates)");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Pooled::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(8)
            .build(connector);
        Ok(Http { client, timeout })
    }

    /// One call; the body is read whole (at most 1 MiB).
    pub async fn call(
        &self,
        method: Method,
        url: &WebUrl,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, HttpError> {
        let mut req = Request::builder().method(method).uri(url.as_str());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| HttpError::Url(url.as_str().to_string()))?;
        let work = async {
            let response = self
                .client
                .request(req)
                .await
                .map_err(|e| HttpError::Connect(describe(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| HttpError::Body(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))?
    }
}

/// A client error with its causes (hyper's top-level message alone says little).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
