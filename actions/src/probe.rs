//! Outside-in probes of the federation port: a TCP connect classified the way step 6 needs it
//! (open, refused, filtered, unreachable), and the XMPP server-to-server probe that `verify` and
//! `!status xmpp` use (a `jabber:server` stream header with an id, stream features offering
//! STARTTLS, and optionally a completed STARTTLS against a CA file).
//!
//! Reads are bounded in size ([`MAX_READ`]) and time (one deadline per probe), and whatever the
//! peer sends is parsed without panicking: a hostile or confused endpoint ends as an error.

use crate::names::{Fqdn, shown};
use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

/// The most a probe reads from one stream before it gives up on it.
pub const MAX_READ: usize = 64 * 1024;

const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SERVER: &str = "jabber:server";
const NS_CLIENT: &str = "jabber:client";

/// How a TCP connect ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    /// Something accepted the connection.
    Open,
    /// The host answered with a reset: the path is open, nothing listens (yet).
    Refused,
    /// No answer before the timeout: a firewall drops the packets, or the host is down.
    Filtered,
    /// The network said the host or network cannot be reached, or another local error.
    Unreachable,
}

impl PortState {
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Open => "open",
            PortState::Refused => "refused",
            PortState::Filtered => "filtered",
            PortState::Unreachable => "unreachable",
        }
    }
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one TCP connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortCheck {
    pub addr: SocketAddr,
    pub state: PortState,
    /// Time until the answer (or until the timeout, for `Filtered`).
    pub latency: Duration,
    /// The operating system's words for an unreachable target.
    pub error: Option<String>,
}

impl PortCheck {
    /// Step 6 passes when the packets get through: open, or refused by the host itself.
    pub fn reachable(&self) -> bool {
        matches!(self.state, PortState::Open | PortState::Refused)
    }

    /// One line for a status message, e.g. "refused in 0.3 ms (reachable, nothing listening yet)".
    pub fn summary(&self) -> String {
        let t = human_duration(self.latency);
        match self.state {
            PortState::Open => format!("open in {t}"),
            PortState::Refused => format!("refused in {t} (reachable, nothing listening yet)"),
            PortState::Filtered => {
                format!("filtered: no answer within {t} (a firewall drops the packets, or the host is down)")
            }
            PortState::Unreachable => {
                format!("unreachable after {t}: {}", self.error.as_deref().unwrap_or("no route"))
            }
        }
    }
}

/// Opens a TCP connection to `addr` and closes it at once.
pub async fn port_check(addr: SocketAddr, timeout: Duration) -> PortCheck {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, TcpStream::connect(addr)).await;
    let latency = started.elapsed();
    let (state, error) = match result {
        Ok(Ok(stream)) => {
            drop(stream);
            (PortState::Open, None)
        }
        Ok(Err(e)) => (classify_connect_error(&e), Some(e.to_string())),
        Err(_) => (PortState::Filtered, None),
    };
    let error = if state == PortState::Unreachable { error } else { None };
    debug!(addr = %addr, state = %state, latency_us = latency.as_micros() as u64, "port checked");
    PortCheck {
        addr,
        state,
        latency,
        error,
    }
}

fn classify_connect_error(e: &std::io::Error) -> PortState {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => PortState::Refused,
        ErrorKind::TimedOut => PortState::Filtered,
        _ => PortState::Unreachable,
    }
}

/// "0.3 ms", "41 ms", "2.5 s".
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The certificates a STARTTLS check trusts, read once from a PEM file.
#[derive(Clone)]
pub struct TlsTrust {
    config: Arc<rustls::ClientConfig>,
    source: PathBuf,
}

impl fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTrust").field("ca_file", &self.source).finish()
    }
}

impl TlsTrust {
    /// Reads every certificate of a PEM file (at most 1 MiB) as a trust anchor.
    pub fn from_ca_file(path: &Path) -> Result<TlsTrust, ProbeError> {
        let bad = |why: String| ProbeError::CaFile {
            path: path.to_path_buf(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if meta.len() > 1024 * 1024 {
            return Err(bad("it is larger than 1 MiB".to_string()));
        }
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| bad(format!("it is not valid PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("a certificate cannot be used: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("it holds no certificate".to_string()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsTrust {
            config: Arc::new(config),
            source: path.to_path_buf(),
        })
    }
}

/// Why a server-to-server probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {addr}: {}", .check.summary())]
    Connect { addr: SocketAddr, check: PortCheck },
    #[error("{addr} is not an XMPP server-to-server endpoint: {why}")]
    NotS2s { addr: SocketAddr, why: String },
    #[error("the XMPP server at {addr} ended the stream for {domain} with error '{condition}'{}", text_suffix(.text))]
    StreamError {
        addr: SocketAddr,
        domain: Fqdn,
        condition: String,
        text: Option<String>,
    },
    #[error("the XMPP server at {addr} sent no stream features within {}", human_duration(*.after))]
    NoFeatures { addr: SocketAddr, after: Duration },
    #[error("the XMPP server at {addr} does not offer STARTTLS (features: {features})")]
    NoStartTls { addr: SocketAddr, features: String },
    #[error("STARTTLS with {addr} failed: {why}")]
    Tls { addr: SocketAddr, why: String },
    #[error("cannot use the CA file {}: {why}", .path.display())]
    CaFile { path: PathBuf, why: String },
}

fn text_suffix(text: &Option<String>) -> String {
    text.as_ref().map(|t| format!(" ({t})")).unwrap_or_default()
}

/// What a passing server-to-server probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S2sReport {
    pub addr: SocketAddr,
    /// The `id` of the server's stream header.
    pub stream_id: String,
    /// The `from` of the server's stream header, if it sent one.
    pub from: Option<String>,
    /// The local names of the offered stream features (`starttls`, `dialback`, …).
    pub features: Vec<String>,
    /// Time from connecting until the stream features were read.
    pub latency: Duration,
    /// Filled when STARTTLS was completed.
    pub tls: Option<TlsReport>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsReport {
    pub version: String,
    pub cipher: String,
    /// The stream id the server gave after the TLS handshake.
    pub stream_id: String,
}

impl S2sReport {
    /// One line for a status message: "s2s stream ok in 2.1 ms (STARTTLS offered)".
    pub fn summary(&self) -> String {
        let tls = match &self.tls {
            Some(t) => format!("STARTTLS ok, {} {}", t.version, t.cipher),
            None => "STARTTLS offered".to_string(),
        };
        format!("s2s stream ok in {} ({tls})", human_duration(self.latency))
    }
}

/// Opens an XMPP server-to-server stream to `addr` for `domain` and reads the server's stream
/// header and features; with `tls`, also completes STARTTLS (verifying the certificate for
/// `domain`) and opens the stream again over TLS. The whole probe ends within `timeout`.
pub async fn s2s_probe(
    addr: SocketAddr,
    domain: &Fqdn,
    tls: Option<&TlsTrust>,
    timeout: Duration,
) -> Result<S2sReport, ProbeError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let check = PortCheck {
                addr,
                state: classify_connect_error(&e),
                latency: started.elapsed(),
                error: Some(e.to_string()),
            };
            return Err(ProbeError::Connect { addr, check });
        }
        Err(_) => {
            let check = PortCheck {
                addr,
                state: PortState::Filtered,
                latency: started.elapsed(),
                error: None,
            };
            return Err(ProbeError::Connect { addr, check });
        }
    };
    let mut conn = Conn {
        io: tcp,
        buf: Vec::new(),
        addr,
        deadline,
        started,
    };
    let opened = conn.open_stream(domain).await?;
    let latency = started.elapsed();
    if !opened.features.iter().any(|f| f == "starttls") {
        conn.close().await;
        return Err(ProbeError::NoStartTls {
            addr,
            features: listing(&opened.features),
        });
    }
    let tls = match tls {
        None => {
            conn.close().await;
            None
        }
        Some(trust) => Some(conn.starttls(domain, trust).await?),
    };
    Ok(S2sReport {
        addr,
        stream_id: opened.id,
        from: opened.from,
        features: opened.features,
        latency,
        tls,
    })
}

/// What the opening of a stream gave.
struct Opened {
    id: String,
    from: Option<String>,
    features: Vec<String>,
}

/// A stream being probed: the transport, everything read so far, and the probe's deadline.
struct Conn<S> {
    io: S,
    buf: Vec<u8>,
    addr: SocketAddr,
    deadline: Instant,
    started: Instant,
}

enum Fill {
    More,
    Closed,
    TimedOut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn not_s2s(&self, why: impl Into<String>) -> ProbeError {
        ProbeError::NotS2s {
            addr: self.addr,
            why: why.into(),
        }
    }

    /// Reads once more, within the deadline and the size bound.
    async fn fill(&mut self) -> Result<Fill, ProbeError> {
        if self.buf.len() >= MAX_READ {
            return Err(self.not_s2s(format!(
                "it sent more than {} KiB without completing the exchange",
                MAX_READ / 1024
            )));
        }
        let mut chunk = vec![0u8; (MAX_READ - self.buf.len()).min(8192)];
        match tokio::time::timeout_at(self.deadline, self.io.read(&mut chunk)).await {
            Err(_) => Ok(Fill::TimedOut),
            Ok(Ok(0)) => Ok(Fill::Closed),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(Fill::More)
            }
            Ok(Err(e)) => Err(self.not_s2s(format!("reading failed: {e}"))),
        }
    }

    async fn send(&mut self, bytes: &str) -> Result<(), ProbeError> {
        match tokio::time::timeout_at(self.deadline, self.io.write_all(bytes.as_bytes())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.not_s2s(format!("writing failed: {e}"))),
            Err(_) => Err(ProbeError::NoFeatures {
                addr: self.addr,
                after: self.started.elapsed(),
            }),
        }
    }

    /// Sends a `jabber:server` stream header and reads the answer up to the stream features.
    /// The header ends with a blank line: whitespace between stream elements means nothing to
    /// XMPP, while an HTTP server takes it as the end of a (bad) request and answers or closes
    /// at once instead of waiting for more headers.
    async fn open_stream(&mut self, domain: &Fqdn) -> Result<Opened, ProbeError> {
        self.buf.clear();
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='{NS_SERVER}' xmlns:stream='{NS_STREAMS}' \
             xmlns:db='jabber:server:dialback' to='{domain}' version='1.0'>\r\n\r\n"
        ))
        .await?;
        loop {
            let view = StreamView::parse(&self.buf).map_err(|why| self.not_s2s(why))?;
            if let Some(header) = &view.header {
                check_header(header).map_err(|why| self.not_s2s(why))?;
            }
            if let Some(e) = view.elements.iter().find(|e| e.is(NS_STREAMS, "error")) {
                return Err(stream_error(self.addr, domain, e));
            }
            if let (Some(header), Some(features)) = (&view.header, view.elements.first()) {
                if !features.is(NS_STREAMS, "features") {
                    return Err(self.not_s2s(format!("it sent <{}> where stream features belong", features.name)));
                }
                let id = header
                    .id
                    .clone()
                    .ok_or_else(|| self.not_s2s("its stream header has no id"))?;
                let features = features.children.iter().map(|(_, name)| name.clone()).collect();
                return Ok(Opened {
                    id,
                    from: header.from.clone(),
                    features,
                });
            }
            if view.closed {
                return Err(self.not_s2s("it closed the stream before sending stream features"));
            }
            match self.fill().await? {
                Fill::More => {}
                Fill::Closed if view.header.is_none() => {
                    return Err(self.not_s2s(format!("it closed the connection {}", self.what_came())));
                }
                Fill::Closed => return Err(self.not_s2s("it closed the connection before sending stream features")),
                Fill::TimedOut if view.header.is_none() => {
                    return Err(self.not_s2s(format!(
                        "no XMPP stream header within {} ({})",
                        human_duration(self.started.elapsed()),
                        self.what_came()
                    )));
                }
                Fill::TimedOut => {
                    return Err(ProbeError::NoFeatures {
                        addr: self.addr,
                        after: self.started.elapsed(),
                    });
                }
            }
        }
    }

    /// "after sending nothing", or the start of what it sent.
    fn what_came(&self) -> String {
        if self.buf.is_empty() {
            "it sent nothing".to_string()
        } else {
            format!("it sent '{}'", snippet(&self.buf))
        }
    }

    /// Ends the stream politely; errors do not matter any more.
    async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(200), self.io.write_all(b"</stream:stream>")).await;
        let _ = tokio::time::timeout(Duration::from_millis(200), self.io.shutdown()).await;
    }
}

impl Conn<TcpStream> {
    /// Asks for STARTTLS, completes the handshake and opens the stream again over TLS.
    async fn starttls(mut self, domain: &Fqdn, trust: &TlsTrust) -> Result<TlsReport, ProbeError> {
        let addr = self.addr;
        let tls_error = |why: String| ProbeError::Tls { addr, why };
        let already = StreamView::parse(&self.buf)
            .map_err(|why| self.not_s2s(why))?
            .elements
            .len();
        self.send(&format!("<starttls xmlns='{NS_TLS}'/>")).await?;
        let consumed = loop {
            let view = StreamView::parse(&self.buf).map_err(|why| self.not_s2s(why))?;
            if let Some(answer) = view.elements.get(already) {
                if answer.is(NS_TLS, "proceed") {
                    break view.consumed;
                }
                return Err(tls_error(format!(
                    "the server answered <{}> to <starttls/>",
                    answer.name
                )));
            }
            match self.fill().await? {
                Fill::More => {}
                Fill::Closed => {
                    return Err(tls_error(
                        "the server closed the connection instead of <proceed/>".into(),
                    ));
                }
                Fill::TimedOut => {
                    return Err(tls_error(format!(
                        "no <proceed/> within {}",
                        human_duration(self.started.elapsed())
                    )));
                }
            }
        };
        if consumed != self.buf.len() {
            return Err(tls_error(
                "the server sent data after <proceed/> before the TLS handshake".into(),
            ));
        }
        let name = ServerName::try_from(domain.to_string()).map_err(|e| tls_error(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(trust.config.clone());
        let stream = match tokio::time::timeout_at(self.deadline, connector.connect(name, self.io)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(tls_error(e.to_string())),
            Err(_) => {
                return Err(tls_error(format!(
                    "no TLS handshake within {}",
                    human_duration(self.started.elapsed())
                )));
            }
        };
        let (_, session) = stream.get_ref();
        let version = session
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default()
            .replace('_', ".");
        let cipher = session
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default();
        let mut secure = Conn {
            io: stream,
            buf: Vec::new(),
            addr,
            deadline: self.deadline,
            started: self.started,
        };
        let opened = secure.open_stream(domain).await?;
        secure.close().await;
        Ok(TlsReport {
            version,
            cipher,
            stream_id: opened.id,
        })
    }
}

fn check_header(header: &Header) -> Result<(), String> {
    match header.default_ns.as_deref() {
        Some(NS_SERVER) => {}
        Some(NS_CLIENT) => {
            return Err("it opened a jabber:client stream (a client port, not the federation port)".into());
        }
        Some(other) => return Err(format!("its stream namespace is '{}', not jabber:server", shown(other))),
        None => return Err("its stream header has no namespace".into()),
    }
    match header.version.as_deref() {
        Some(v)
            if v.split('.')
                .next()
                .and_then(|major| major.parse::<u32>().ok())
                .is_some_and(|m| m >= 1) =>
        {
            Ok(())
        }
        _ => Err("its stream header has no version 1.0, so it offers no stream features".into()),
    }
}

fn stream_error(addr: SocketAddr, domain: &Fqdn, e: &Element) -> ProbeError {
    let condition = e
        .children
        .iter()
        .find(|(ns, name)| ns == "urn:ietf:params:xml:ns:xmpp-streams" && name != "text")
        .map(|(_, name)| name.clone())
        .unwrap_or_else(|| "undefined-condition".to_string());
    let text = e.text.trim();
    let text = (!text.is_empty()).then(|| shown(text));
    ProbeError::StreamError {
        addr,
        domain: domain.clone(),
        condition,
        text,
    }
}

fn listing(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// The server's stream header.
#[derive(Debug, Default, PartialEq, Eq)]
struct Header {
    default_ns: Option<String>,
    id: Option<String>,
    from: Option<String>,
    version: Option<String>,
}

/// One complete element at the top of the stream (features, error, proceed, …).
#[derive(Debug, PartialEq, Eq)]
struct Element {
    ns: String,
    name: String,
    /// Namespace and local name of each direct child.
    children: Vec<(String, String)>,
    /// The text inside, at most 200 characters.
    text: String,
}

impl Element {
    fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }
}

/// What a buffer read from a stream holds so far.
#[derive(Debug, Default)]
struct StreamView {
    header: Option<Header>,
    elements: Vec<Element>,
    /// The server closed the stream (`</stream:stream>`).
    closed: bool,
    /// How many bytes the header and the complete elements take.
    consumed: usize,
}

impl StreamView {
    /// Parses as much of `buf` as is complete. An incomplete tail is left for the next read; bytes
    /// that cannot start or continue an XMPP stream are an error saying what came instead.
    fn parse(buf: &[u8]) -> Result<StreamView, String> {
        let text = match std::str::from_utf8(buf) {
            Ok(text) => text,
            // A character cut in two by the read boundary: parse up to it.
            Err(e) if e.error_len().is_none() => std::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or(""),
            Err(_) => return Err(format!("it sent bytes that are not UTF-8: '{}'", snippet(buf))),
        };
        let mut reader = NsReader::from_str(text);
        let mut view = StreamView::default();
        let mut depth = 0usize;
        let mut current: Option<Element> = None;
        loop {
            let event = reader.read_resolved_event();
            let (ns, event) = match event {
                Ok((ns, event)) => (namespace(&ns), event),
                Err(quick_xml::Error::Syntax(_)) => break,
                Err(e) => return Err(format!("it sent malformed XML ({e})")),
            };
            match event {
                Event::Eof => break,
                Event::Decl(_) if depth == 0 && view.header.is_none() => {}
                // Before the header, text means the peer speaks something else; between stream
                // elements it is only whitespace (keepalives) in XMPP and is skipped.
                Event::Text(t) if depth == 0 && !t.xml10_content().trim().is_empty() => {
                    return Err(format!("it sent '{}'", snippet(buf)));
                }
                Event::Text(_) if depth <= 1 => {}
                Event::Start(e) | Event::Empty(e) if depth == 0 && view.header.is_some() => {
                    return Err(format!("it sent <{}> after the end of the stream", local(&e)));
                }
                Event::Start(e) if depth == 0 => {
                    if ns != NS_STREAMS || local(&e) != "stream" {
                        return Err(format!("it sent '{}'", snippet(buf)));
                    }
                    view.header = Some(header(&e));
                    view.consumed = position(&reader);
                    depth = 1;
                }
                Event::Start(e) if depth == 1 => {
                    current = Some(Element {
                        ns,
                        name: local(&e),
                        children: Vec::new(),
                        text: String::new(),
                    });
                    depth = 2;
                }
                Event::Empty(e) if depth == 1 => {
                    view.elements.push(Element {
                        ns,
                        name: local(&e),
                        children: Vec::new(),
                        text: String::new(),
                    });
                    view.consumed = position(&reader);
                }
                Event::Start(e) if depth == 2 => {
                    if let Some(el) = current.as_mut() {
                        el.children.push((ns, local(&e)));
                    }
                    depth = 3;
                }
                Event::Empty(e) if depth == 2 => {
                    if let Some(el) = current.as_mut() {
                        el.children.push((ns, local(&e)));
                    }
                }
                Event::Start(_) => depth += 1,
                Event::End(_) if depth == 1 => {
                    view.closed = true;
                    view.consumed = position(&reader);
                    depth = 0;
                }
                Event::End(_) if depth == 2 => {
                    if let Some(el) = current.take() {
                        view.elements.push(el);
                    }
                    view.consumed = position(&reader);
                    depth = 1;
                }
                Event::End(_) => depth = depth.saturating_sub(1),
                Event::Text(t) => {
                    if let Some(el) = current.as_mut()
                        && el.text.chars().count() < 200
                    {
                        el.text.push_str(&t.xml10_content());
                    }
                }
                Event::DocType(_) => return Err(format!("it sent '{}'", snippet(buf))),
                _ => {}
            }
        }
        Ok(view)
    }
}

fn namespace(ns: &ResolveResult<'_>) -> String {
    match ns {
        ResolveResult::Bound(ns) => ns.as_ref().to_string(),
        _ => String::new(),
    }
}

fn local(e: &BytesStart<'_>) -> String {
    e.local_name().as_ref().to_string()
}

fn position(reader: &NsReader<&[u8]>) -> usize {
    usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX)
}

fn header(e: &BytesStart<'_>) -> Header {
    let mut h = Header::default();
    for attr in e.attributes().flatten() {
        let Ok(value) = attr.normalized_value(quick_xml::XmlVersion::Implicit1_0) else {
            continue;
        };
        let value = value.into_owned();
        match attr.key.as_ref() {
            "xmlns" => h.default_ns = Some(value),
            "id" => h.id = Some(value),
            "from" => h.from = Some(value),
            "version" => h.version = Some(value),
            _ => {}
        }
    }
    h
}

/// The first line of what the peer sent, at most 60 bytes of it, escaped.
fn snippet(buf: &[u8]) -> String {
    let head = String::from_utf8_lossy(&buf[..buf.len().min(60)]).into_owned();
    let trimmed = head.trim_start();
    shown(trimmed.split(['\r', '\n']).next().unwrap_or(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::net::TcpListener;

    /// What Prosody 0.12 sends on its s2s port (recorded from a local instance).
    const PROSODY_S2S: &str = "<?xml version='1.0'?><stream:stream xml:lang='en' xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' from='contoso.test' id='76246921-fcc6-47d5' version='1.0' \
        xmlns:db='jabber:server:dialback' to=''><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>\
        <required/></starttls><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>";
    /// What Prosody 0.12 sends on its c2s port to the same header.
    const PROSODY_C2S: &str = "<?xml version='1.0'?><stream:stream xml:lang='en' xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' id='a2bde9dd' version='1.0' from='contoso.test'>\
        <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>";
    const HOST_UNKNOWN: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' id='b3' version='1.0' from='other.test'><stream:error>\
        <host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>\
        This host does not serve other.test</text></stream:error></stream:stream>";

    fn domain() -> Fqdn {
        Fqdn::parse("contoso.test").expect("valid")
    }

    /// One line describing what a buffer parses to.
    fn view(input: &str) -> String {
        match StreamView::parse(input.as_bytes()) {
            Err(why) => format!("error: {why}"),
            Ok(v) => {
                let header = v
                    .header
                    .map(|h| format!("{:?} id={:?}", h.default_ns, h.id))
                    .unwrap_or("no header".into());
                let elements: Vec<String> = v
                    .elements
                    .iter()
                    .map(|e| {
                        format!(
                            "{}[{}]",
                            e.name,
                            e.children.iter().map(|c| c.1.as_str()).collect::<Vec<_>>().join(",")
                        )
                    })
                    .collect();
                format!("{header}; {}; closed={}", elements.join(" "), v.closed)
            }
        }
    }

    #[test]
    fn stream_views() {
        let check = |input: &str, expect: &str| assert_eq!(view(input), expect, "input {input:?}");
        check(
            PROSODY_S2S,
            r#"Some("jabber:server") id=Some("76246921-fcc6-47d5"); features[starttls,dialback]; closed=false"#,
        );
        let header_end = PROSODY_S2S.find("<stream:features>").expect("has features");
        check(
            &PROSODY_S2S[..header_end],
            r#"Some("jabber:server") id=Some("76246921-fcc6-47d5"); ; closed=false"#,
        );
        check(
            &PROSODY_S2S[..header_end + 30],
            r#"Some("jabber:server") id=Some("76246921-fcc6-47d5"); ; closed=false"#,
        );
        check(&PROSODY_S2S[..40], "no header; ; closed=false");
        check("", "no header; ; closed=false");
        check(
            HOST_UNKNOWN,
            r#"Some("jabber:server") id=Some("b3"); error[host-unknown,text]; closed=true"#,
        );
        check(
            "HTTP/1.1 400 Bad Request\r\n\r\n",
            "error: it sent 'HTTP/1.1 400 Bad Request'",
        );
        check("<!DOCTYPE html><html>", "error: it sent '<!DOCTYPE html><html>'");
        check("<html><body>", "error: it sent '<html><body>'");
        check(
            "<stream:stream xmlns:stream='urn:other'>",
            "error: it sent '<stream:stream xmlns:stream=\\'urn:other\\'>'",
        );
        check("\u{0}\u{1}\u{2}", "error: it sent '\\0\\u{1}\\u{2}'");
        // A character cut in two by a read: the complete part parses.
        let cut = format!(
            "{}<x>é",
            &PROSODY_S2S[..PROSODY_S2S.find("<stream:features>").expect("has features")]
        );
        let bytes = cut.as_bytes();
        assert!(StreamView::parse(&bytes[..bytes.len() - 1]).is_ok());
        assert!(
            StreamView::parse(&[0xFF, 0xFE, b'<'])
                .expect_err("not UTF-8")
                .starts_with("it sent bytes that are not UTF-8")
        );
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = StreamView::parse(&bytes);
        }

        #[test]
        fn any_cut_of_a_real_stream_parses_without_error(cut in 0usize..PROSODY_S2S.len()) {
            prop_assert!(StreamView::parse(&PROSODY_S2S.as_bytes()[..cut]).is_ok());
        }
    }

    /// A scripted peer: accepts one connection, reads what the prober sends first, then writes
    /// `chunks` with a pause between them, and holds the connection open for `hold`.
    async fn scripted(chunks: Vec<Vec<u8>>, hold: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut first = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut first)).await;
            for chunk in chunks {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(hold).await;
        });
        addr
    }

    /// Splits in small pieces, some of them inside tags and attribute values.
    fn pieces(s: &str) -> Vec<Vec<u8>> {
        s.as_bytes().chunks(37).map(<[u8]>::to_vec).collect()
    }

    async fn probe(chunks: Vec<Vec<u8>>) -> Result<S2sReport, ProbeError> {
        let addr = scripted(chunks, Duration::from_secs(3)).await;
        s2s_probe(addr, &domain(), None, Duration::from_millis(700)).await
    }

    async fn probe_error(chunks: Vec<Vec<u8>>) -> String {
        match probe(chunks).await {
            Ok(r) => format!("passed: {r:?}"),
            Err(e) => e.to_string().replace(|c: char| c.is_ascii_digit(), "#"),
        }
    }

    #[tokio::test]
    async fn a_real_s2s_answer_passes_even_in_pieces() {
        let report = probe(pieces(PROSODY_S2S)).await.expect("passes");
        assert_eq!(report.stream_id, "76246921-fcc6-47d5");
        assert_eq!(report.from.as_deref(), Some("contoso.test"));
        assert_eq!(report.features, vec!["starttls".to_string(), "dialback".to_string()]);
        assert!(
            report.summary().starts_with("s2s stream ok in "),
            "{}",
            report.summary()
        );
    }

    #[tokio::test]
    async fn wrong_endpoints_fail_clearly() {
        let client = probe_error(pieces(PROSODY_C2S)).await;
        assert!(client.ends_with("is not an XMPP server-to-server endpoint: it opened a jabber:client stream (a client port, not the federation port)"), "{client}");
        let http = probe_error(vec![b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec()]).await;
        assert!(
            http.ends_with("is not an XMPP server-to-server endpoint: it sent 'HTTP/#.# ### Bad Request'"),
            "{http}"
        );
        let silent = probe_error(vec![]).await;
        assert!(
            silent.contains("is not an XMPP server-to-server endpoint: no XMPP stream header within"),
            "{silent}"
        );
        assert!(silent.ends_with("(it sent nothing)"), "{silent}");
        let no_id = probe_error(pieces(&PROSODY_S2S.replace("id='76246921-fcc6-47d5' ", ""))).await;
        assert!(
            no_id.ends_with("is not an XMPP server-to-server endpoint: its stream header has no id"),
            "{no_id}"
        );
        let old = probe_error(pieces(&PROSODY_S2S.replace("version='1.0'", ""))).await;
        assert!(
            old.ends_with("its stream header has no version #.#, so it offers no stream features"),
            "{old}"
        );
    }

    #[tokio::test]
    async fn xmpp_answers_without_what_verify_needs_fail_clearly() {
        let no_tls = PROSODY_S2S.replace(
            "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>",
            "",
        );
        let e = probe_error(pieces(&no_tls)).await;
        assert!(e.ends_with("does not offer STARTTLS (features: dialback)"), "{e}");
        let e = probe_error(pieces(HOST_UNKNOWN)).await;
        assert!(
            e.ends_with(
                "ended the stream for contoso.test with error 'host-unknown' (This host does not serve other.test)"
            ),
            "{e}"
        );
        let header_only = &PROSODY_S2S[..PROSODY_S2S.find("<stream:features>").expect("has features")];
        let e = probe_error(pieces(header_only)).await;
        assert!(e.contains("sent no stream features within"), "{e}");
    }

    #[tokio::test]
    async fn endless_or_garbage_streams_end_within_bounds() {
        let header = &PROSODY_S2S[..PROSODY_S2S.find("<stream:features>").expect("has features")];
        let flood: Vec<Vec<u8>> = std::iter::once(header.as_bytes().to_vec())
            .chain(std::iter::repeat_n(
                b"<message><body>x</body></message>".repeat(300),
                10,
            ))
            .collect();
        let started = std::time::Instant::now();
        let e = probe_error(flood).await;
        assert!(e.contains("it sent <message> where stream features belong"), "{e}");
        let deep: Vec<Vec<u8>> = std::iter::once(header.as_bytes().to_vec())
            .chain(std::iter::repeat_n(b"<a>".repeat(4000), 10))
            .collect();
        let e = probe_error(deep).await;
        assert!(
            e.contains("it sent more than ## KiB without completing the exchange") || e.contains("no stream features"),
            "{e}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "each probe ends at its deadline"
        );
    }

    #[tokio::test]
    async fn ports_are_classified() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let open = port_check(listener.local_addr().expect("addr"), Duration::from_secs(2)).await;
        assert_eq!(open.state, PortState::Open);
        assert!(
            open.reachable() && open.summary().starts_with("open in "),
            "{}",
            open.summary()
        );

        let closed_addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("binds");
            l.local_addr().expect("addr")
        };
        let refused = port_check(closed_addr, Duration::from_secs(2)).await;
        assert_eq!(refused.state, PortState::Refused);
        assert!(refused.reachable());
        assert!(
            refused.summary().ends_with(" (reachable, nothing listening yet)"),
            "{}",
            refused.summary()
        );

        let e = s2s_probe(closed_addr, &domain(), None, Duration::from_secs(2))
            .await
            .expect_err("nothing listens");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot connect to {closed_addr}: refused in ")),
            "{e}"
        );
    }

    #[test]
    fn connect_errors_and_durations_read_well() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            classify_connect_error(&Error::from(ErrorKind::ConnectionRefused)),
            PortState::Refused
        );
        assert_eq!(
            classify_connect_error(&Error::from(ErrorKind::TimedOut)),
            PortState::Filtered
        );
        assert_eq!(
            classify_connect_error(&Error::from(ErrorKind::HostUnreachable)),
            PortState::Unreachable
        );
        assert_eq!(
            classify_connect_error(&Error::from(ErrorKind::NetworkUnreachable)),
            PortState::Unreachable
        );
        let unreachable = PortCheck {
            addr: "192.0.2.1:5269".parse().expect("addr"),
            state: PortState::Unreachable,
            latency: Duration::from_micros(150),
            error: Some("No route to host (os error 113)".into()),
        };
        assert_eq!(
            unreachable.summary(),
            "unreachable after 0.1 ms: No route to host (os error 113)"
        );
        let filtered = PortCheck {
            state: PortState::Filtered,
            latency: Duration::from_secs(10),
            error: None,
            ..unreachable
        };
        assert!(!filtered.reachable());
        assert_eq!(
            filtered.summary(),
            "filtered: no answer within 10.0 s (a firewall drops the packets, or the host is down)"
        );
        assert_eq!(human_duration(Duration::from_millis(41)), "41 ms");
    }

    #[test]
    fn ca_files_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("none.pem");
        let e = TlsTrust::from_ca_file(&missing).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot use the CA file {}: ", missing.display())),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("writes");
        assert!(
            TlsTrust::from_ca_file(&empty)
                .expect_err("empty")
                .to_string()
                .ends_with("it holds no certificate")
        );
    }
}
