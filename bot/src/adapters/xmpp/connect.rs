//! Opening one authenticated XMPP client stream: TCP to a fixed address with TCP_NODELAY,
//! STARTTLS verified against the system roots or a CA file (or plain TCP when configured),
//! SASL, and the reconnect loop with capped exponential backoff that feeds tokio-xmpp's
//! `StanzaStream`, logging every failed attempt with its reason.
//!
//! tokio-xmpp's own connectors neither set TCP_NODELAY (tens of milliseconds per round trip) nor
//! accept a CA file, so the connection is built here from its lower-level stream pieces.

use super::config::TlsMode;
use futures::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::{ns, starttls, stream_features::StreamFeatures};
use tokio_xmpp::stanzastream::{Connection, StanzaStream};
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, PendingFeaturesRecv, ReadError, StreamHeader, Timeouts, XmppStream, XmppStreamElement,
    initiate_stream,
};
use tracing::{debug, info, warn};

/// The transport under the XML stream: plain TCP, or TLS over it after STARTTLS.
pub type Transport = BufStream<Either<TcpStream, TlsStream<TcpStream>>>;

/// Why a connection attempt failed. Messages are lowercase and never contain the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach {server}: {source}")]
    Tcp { server: String, source: std::io::Error },
    #[error("server does not offer STARTTLS and the config requires TLS")]
    NoStartTls,
    #[error("server refused STARTTLS")]
    StartTlsRefused,
    #[error("tls handshake with {name} failed: {source}")]
    Tls { name: String, source: std::io::Error },
    #[error("invalid tls server name '{0}'")]
    ServerName(String),
    #[error("cannot read ca file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("no usable root certificates (system store empty or unreadable)")]
    NoRoots,
    #[error("tls setup failed: {0}")]
    TlsSetup(String),
    #[error("xmpp stream failed: {0}")]
    Stream(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The pieces needed to open a stream; cheap to clone (one per reconnect attempt).
#[derive(Clone)]
pub struct Connector {
    server: String,
    tls: Option<(Arc<ClientConfig>, String)>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server", &self.server)
            .field("tls_name", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}

impl Connector {
    /// Prepares a connector for `server` (`host:port`). With STARTTLS, the root store is loaded
    /// here, so a missing CA file is reported at start rather than on every attempt.
    pub fn new(server: &str, tls: &TlsMode, domain: &str) -> Result<Connector, ConnectError> {
        let tls = match tls {
            TlsMode::Plain => None,
            TlsMode::StartTls { ca_file, server_name } => {
                let mut roots = RootCertStore::empty();
                match ca_file {
                    Some(path) => {
                        let shown = path.display().to_string();
                        let certs = CertificateDer::pem_file_iter(path).map_err(|e| ConnectError::CaFile {
                            path: shown.clone(),
                            reason: e.to_string(),
                        })?;
                        for cert in certs {
                            let cert = cert.map_err(|e| ConnectError::CaFile {
                                path: shown.clone(),
                                reason: e.to_string(),
                            })?;
                            roots.add(cert).map_err(|e| ConnectError::CaFile {
                                path: shown.clone(),
                                reason: e.to_string(),
                            })?;
                        }
                        if roots.is_empty() {
                            return Err(ConnectError::CaFile {
                                path: shown,
                                reason: "no certificate in it".into(),
                            });
                        }
                    }
                    None => {
                        let loaded = rustls_native_certs::load_native_certs();
                        roots.add_parsable_certificates(loaded.certs);
                        if roots.is_empty() {
                            return Err(ConnectError::NoRoots);
                        }
                    }
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| ConnectError::TlsSetup(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let name = server_name.clone().unwrap_or_else(|| domain.to_string());
                ServerName::try_from(name.clone()).map_err(|_| ConnectError::ServerName(name.clone()))?;
                Some((Arc::new(config), name))
            }
        };
        Ok(Connector {
            server: server.to_string(),
            tls,
            timeouts: Timeouts::tight(),
        })
    }

    /// Opens TCP (with TCP_NODELAY), sends the stream header, and does STARTTLS if configured.
    /// Returns the stream ready to read its (post-TLS) features.
    async fn open(&self, domain: &str) -> Result<PendingFeaturesRecv<Transport>, ConnectError> {
        let tcp = TcpStream::connect(&self.server)
            .await
            .map_err(|source| ConnectError::Tcp {
                server: self.server.clone(),
                source,
            })?;
        tcp.set_nodelay(true).map_err(|source| ConnectError::Tcp {
            server: self.server.clone(),
            source,
        })?;
        let pending = self.header(BufStream::new(Either::Left(tcp)), domain).await?;
        let Some((config, name)) = &self.tls else {
            return Ok(pending);
        };
        let (features, mut stream) = pending
            .recv_features::<FallibleStreamElement>()
            .await
            .map_err(|e| ConnectError::Stream(e.to_string()))?;
        if !features.can_starttls() {
            return Err(ConnectError::NoStartTls);
        }
        stream
            .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
                starttls::Request,
            )))
            .await
            .map_err(|e| ConnectError::Stream(e.to_string()))?;
        loop {
            match stream.next().await.map(|r| r.and_then(|v| v.into_read_error())) {
                Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
                Some(Ok(XmppStreamElement::Starttls(_))) => return Err(ConnectError::StartTlsRefused),
                Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) => {}
                Some(Err(e)) => return Err(ConnectError::Stream(e.to_string())),
                None => return Err(ConnectError::Stream("closed during starttls".into())),
            }
        }
        let Either::Left(tcp) = stream.into_inner().into_inner() else {
            return Err(ConnectError::Stream("stream already encrypted".into()));
        };
        let server_name = ServerName::try_from(name.clone()).map_err(|_| ConnectError::ServerName(name.clone()))?;
        let tls = TlsConnector::from(config.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|source| ConnectError::Tls {
                name: name.clone(),
                source,
            })?;
        self.header(BufStream::new(Either::Right(tls)), domain).await
    }

    async fn header(&self, io: Transport, domain: &str) -> Result<PendingFeaturesRecv<Transport>, ConnectError> {
        let header = StreamHeader {
            to: Some(Cow::Borrowed(domain)),
            from: None,
            id: None,
        };
        initiate_stream(io, ns::JABBER_CLIENT, header, self.timeouts)
            .await
            .map_err(|e| ConnectError::Stream(e.to_string()))
    }

    /// One full attempt: connect, secure, authenticate, and restart the stream. The result is
    /// ready for resource binding, which the `StanzaStream` does.
    pub async fn login(
        &self,
        jid: &BareJid,
        password: &SecretString,
    ) -> Result<(StreamFeatures, XmppStream<Transport>), ConnectError> {
        let domain = jid.domain().as_str();
        let user = jid
            .node()
            .map(|n| n.as_str())
            .ok_or_else(|| ConnectError::Auth("jid has no local part".into()))?;
        let (features, stream) = self
            .open(domain)
            .await?
            .recv_features::<FallibleStreamElement>()
            .await
            .map_err(|e| ConnectError::Stream(e.to_string()))?;
        let credentials = sasl::common::Credentials::default()
            .with_username(user)
            .with_password(password.expose_secret());
        let initiating = tokio_xmpp::client_login(stream, features.sasl_mechanisms, credentials)
            .await
            .map_err(|e| match e {
                tokio_xmpp::Error::Auth(a) => ConnectError::Auth(a.to_string()),
                other => ConnectError::Stream(other.to_string()),
            })?;
        let header = StreamHeader {
            to: Some(Cow::Borrowed(domain)),
            from: None,
            id: None,
        };
        initiating
            .send_header(header)
            .await
            .map_err(|e| ConnectError::Stream(e.to_string()))?
            .recv_features::<FallibleStreamElement>()
            .await
            .map_err(|e| ConnectError::Stream(e.to_string()))
    }
}

/// Reconnect policy: the first wait and the cap.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` consecutive failures (1 = after the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// A session must last this long before the failure count starts again from zero: a server
/// that accepts the bot and then throws it out (another instance taking the resource, a policy)
/// meets a growing wait, not a tight loop.
pub const STABLE_SESSION: Duration = Duration::from_secs(30);
/// While an outage is younger than this, a server that cannot be reached is probed at least
/// every [`YOUNG_PROBE`], so that Baton is back soon after a chat server restarts.
pub const YOUNG_OUTAGE: Duration = Duration::from_secs(60);
pub const YOUNG_PROBE: Duration = Duration::from_millis(500);

/// How an attempt failed, for the wait before the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing answered as an XMPP server (refused, reset, timed out): probed often while the
    /// outage is young.
    Unreachable,
    /// The server answered and said no (authentication, TLS): the backoff as configured, so a
    /// wrong password does not hammer the server.
    Refused,
}

impl ConnectError {
    pub fn kind(&self) -> FailureKind {
        match self {
            ConnectError::Tcp { .. } | ConnectError::Stream(_) | ConnectError::Timeout(_) => FailureKind::Unreachable,
            _ => FailureKind::Refused,
        }
    }
}

/// When to try again: the failure count (kept across short sessions), when the outage began
/// and when the current session began. Pure: time is passed in.
#[derive(Clone, Debug)]
pub struct Reconnect {
    backoff: Backoff,
    failures: u32,
    outage_since: Option<Instant>,
    session_since: Option<Instant>,
}

impl Reconnect {
    pub fn new(backoff: Backoff) -> Reconnect {
        Reconnect {
            backoff,
            failures: 0,
            outage_since: None,
            session_since: None,
        }
    }

    /// A connection was handed over at `now`.
    pub fn session_up(&mut self, now: Instant) {
        self.session_since = Some(now);
    }

    /// The reconnector was called at `now` (at start, or because the session ended): how long
    /// to wait before the first attempt. A session that lasted resets the count and is retried
    /// at once; a short one counts as a failure.
    pub fn begin(&mut self, now: Instant) -> Duration {
        let Some(since) = self.session_since.take() else {
            return Duration::ZERO;
        };
        if now.saturating_duration_since(since) >= STABLE_SESSION {
            self.failures = 0;
            self.outage_since = Some(now);
            return Duration::ZERO;
        }
        self.failures = self.failures.saturating_add(1);
        self.outage_since.get_or_insert(now);
        self.backoff.delay(self.failures)
    }

    /// An attempt failed at `now`: how long to wait before the next.
    pub fn failed(&mut self, kind: FailureKind, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let since = *self.outage_since.get_or_insert(now);
        let wait = self.backoff.delay(self.failures);
        if kind == FailureKind::Unreachable && now.saturating_duration_since(since) < YOUNG_OUTAGE {
            wait.min(YOUNG_PROBE)
        } else {
            wait
        }
    }

    /// Consecutive failures (attempts and short sessions) so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Builds a `StanzaStream` whose connections come from `connector`, retried as [`Reconnect`]
/// says; every failed attempt is logged with its reason. Cancelling `stop` ends the retries.
///
/// tokio-xmpp 6 panics in its worker ("Backend was unable to handle reconnect request") when a
/// reconnector drops its slot without filling it, which is what giving up on shutdown would do.
/// So once `stop` is cancelled the slot gets a connection that is already closed
/// ([`closed_connection`]): the worker sees it end, finds its frontend closed, and stops cleanly.
pub fn stanza_stream(
    connector: Connector,
    jid: BareJid,
    password: SecretString,
    backoff: Backoff,
    attempt_timeout: Duration,
    stop: CancellationToken,
) -> StanzaStream {
    let policy = Arc::new(std::sync::Mutex::new(Reconnect::new(backoff)));
    let factory = move |_location: Option<String>, mut slot: oneshot::Sender<Connection>| {
        let connector = connector.clone();
        let jid = jid.clone();
        let password = password.clone();
        let stop = stop.clone();
        let policy = policy.clone();
        tokio::spawn(async move {
            let mut wait = lock(&policy).begin(Instant::now());
            if !wait.is_zero() {
                warn!(jid = %jid, failures = lock(&policy).failures(), retry_in = ?wait,
                    "the xmpp session ended soon after it began; waiting before reconnecting");
            }
            loop {
                if !wait.is_zero() {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = slot.closed() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                let attempt = tokio::time::timeout(attempt_timeout, connector.login(&jid, &password));
                let outcome = tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = slot.closed() => return,
                    outcome = attempt => outcome,
                };
                let error = match outcome {
                    Ok(Ok((features, stream))) => {
                        let failures = {
                            let mut p = lock(&policy);
                            p.session_up(Instant::now());
                            p.failures()
                        };
                        info!(jid = %jid, after_failures = failures, "xmpp connection established");
                        let connection = Connection {
                            stream: stream.box_stream(),
                            features,
                            identity: Jid::from(jid),
                        };
                        // If the stream is gone, the connection is simply dropped (closing it).
                        let _ = slot.send(connection);
                        return;
                    }
                    Ok(Err(e)) => e,
                    Err(_) => ConnectError::Timeout(attempt_timeout),
                };
                wait = lock(&policy).failed(error.kind(), Instant::now());
                let attempt = lock(&policy).failures();
                warn!(jid = %jid, attempt, error = %error, retry_in = ?wait, "xmpp connection attempt failed");
            }
            // Stopped: fill the slot with a connection that is already closed (see above).
            match closed_connection(&jid).await {
                Ok(connection) => {
                    let _ = slot.send(connection);
                }
                Err(e) => debug!(error = %e, "cannot make the closed connection that ends the stream"),
            }
        });
    };
    StanzaStream::new(Box::new(factory), 256)
}

/// The policy, whatever a panic elsewhere left in its lock (it holds only counters).
fn lock(p: &std::sync::Mutex<Reconnect>) -> std::sync::MutexGuard<'_, Reconnect> {
    p.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection whose peer has already gone: an in-memory pipe that held a server's stream
/// header and features (resource binding, so tokio-xmpp accepts it) and nothing more. Handing
/// it to the stream's worker ends that worker without the panic of an unfilled slot.
pub async fn closed_connection(jid: &BareJid) -> Result<Connection, ConnectError> {
    use tokio::io::AsyncWriteExt;
    let (client, mut server) = tokio::io::duplex(4096);
    let greeting = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
         version='1.0' from='{}' id='closed'><stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
         </stream:features>",
        jid.domain()
    );
    server
        .write_all(greeting.as_bytes())
        .await
        .map_err(|e| ConnectError::Stream(e.to_string()))?;
    let header = StreamHeader {
        to: Some(Cow::Borrowed(jid.domain().as_str())),
        from: None,
        id: None,
    };
    let (features, stream) = initiate_stream(BufStream::new(client), ns::JABBER_CLIENT, header, Timeouts::tight())
        .await
        .map_err(|e| ConnectError::Stream(e.to_string()))?
        .recv_features::<FallibleStreamElement>()
        .await
        .map_err(|e| ConnectError::Stream(e.to_string()))?;
    drop(server);
    Ok(Connection {
        stream: stream.box_stream(),
        features,
        identity: Jid::from(jid.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let got: Vec<u128> = (1..=7).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    fn policy() -> Reconnect {
        Reconnect::new(Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(8),
        })
    }

    #[test]
    fn a_young_outage_is_probed_often_then_the_backoff_grows() {
        let mut p = policy();
        let t0 = Instant::now();
        assert_eq!(p.begin(t0), Duration::ZERO, "the first attempt is at once");
        let waits: Vec<u128> = (0..6)
            .map(|i| {
                p.failed(FailureKind::Unreachable, t0 + Duration::from_secs(i))
                    .as_millis()
            })
            .collect();
        assert_eq!(
            waits,
            [200, 400, 500, 500, 500, 500],
            "capped while the outage is young"
        );
        let later = p.failed(FailureKind::Unreachable, t0 + YOUNG_OUTAGE);
        assert_eq!(later, Duration::from_secs(8), "an old outage gets the full backoff");
        // A server that answers and refuses (a wrong password) is never hammered.
        let mut p = policy();
        let waits: Vec<u128> = (0..5)
            .map(|i| {
                p.failed(FailureKind::Refused, t0 + Duration::from_millis(i))
                    .as_millis()
            })
            .collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200]);
    }

    #[test]
    fn short_sessions_keep_counting_and_a_lasting_one_resets() {
        let mut p = policy();
        let mut now = Instant::now();
        assert_eq!(p.begin(now), Duration::ZERO);
        // Accepted, then thrown out a moment later, again and again: the wait grows.
        let mut waits = Vec::new();
        for _ in 0..6 {
            p.session_up(now);
            now += Duration::from_millis(50);
            let wait = p.begin(now);
            waits.push(wait.as_millis());
            now += wait;
        }
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400]);
        // A session that lasts resets the count: the next loss is retried at once.
        p.session_up(now);
        now += STABLE_SESSION;
        assert_eq!(p.begin(now), Duration::ZERO);
        assert_eq!(p.failures(), 0);
        assert_eq!(p.failed(FailureKind::Unreachable, now), Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_closed_connection_is_a_stream_that_offers_binding() {
        let jid = BareJid::new("baton@contoso.test").expect("valid");
        let c = closed_connection(&jid).await.expect("built in memory");
        assert!(c.features.can_bind());
    }

    #[test]
    fn a_missing_ca_file_is_reported_at_start() {
        let tls = TlsMode::StartTls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            server_name: None,
        };
        let err = Connector::new("127.0.0.1:5222", &tls, "contoso.test").expect_err("no such file");
        assert!(
            err.to_string().starts_with("cannot read ca file /nonexistent/ca.pem"),
            "{err}"
        );
    }
}
