//! The floor of a fan-out, for the benchmarks: the least a client must do to run one action on
//! N agents and hear every answer. It shares nothing with Baton's dispatcher but the wire format
//! (`ActionCall`, `ActionAnswer`) and the TLS settings (`baton_tls::client_config`):
//! tokio-rustls, and HTTP/1.1 written and read here by hand.
//! Each agent gets one connection, opened and through its TLS handshake before the clock
//! starts (Baton's precheck does the same for a run's steps); then all N calls are written at
//! once and the N answers read as they come. No retries, no journal, no idempotency bookkeeping,
//! no chat: whatever a step through Baton takes beyond this is Baton's.

use anyhow::{Context, Result, bail};
use baton_actions::{Fqdn, protocol::ActionAnswer, protocol::ActionCall};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The first segment of the floor's idempotency keys; no Baton store uses it.
pub const KEY_STORE: &str = "floor";

/// Where the agents are and who the client is: the CA, the client certificate and key (PEM).
pub struct Credentials<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// Opens one connection to each `(host, address)` (TCP, then the TLS handshake with the client
/// certificate), then writes `calls[i]` to agent `i`, all at once, and reads every answer. Returns
/// the time from the first write to the last answer. Fails unless every answer is `ok`, or if
/// anything takes longer than `limit`.
pub async fn call_all(
    credentials: &Credentials<'_>,
    agents: &[(Fqdn, SocketAddr)],
    calls: Vec<ActionCall>,
    limit: Duration,
) -> Result<Duration> {
    if agents.len() != calls.len() {
        bail!("{} agents but {} calls", agents.len(), calls.len());
    }
    let connector = connector(credentials)?;
    let connect = agents.iter().map(|(host, address)| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(address)
                .await
                .with_context(|| format!("{host}: connect to {address}"))?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host.as_str().to_string())?;
            let tls = connector
                .connect(name, tcp)
                .await
                .with_context(|| format!("{host}: TLS handshake"))?;
            anyhow::Ok(tls)
        }
    });
    let connections = tokio::time::timeout(limit, futures::future::try_join_all(connect))
        .await
        .context("the connections were not all open within the limit")??;
    let started = Instant::now();
    let exchanges = connections
        .into_iter()
        .zip(calls)
        .zip(agents)
        .map(|((tls, call), (host, _))| async move {
            exchange(tls, host, &call.encode())
                .await
                .with_context(|| format!("{host}: {}", call.key))
        });
    let answers = tokio::time::timeout(limit, futures::future::try_join_all(exchanges))
        .await
        .context("the answers did not all come within the limit")??;
    let elapsed = started.elapsed();
    for (answer, (host, _)) in answers.iter().zip(agents) {
        if !matches!(answer, ActionAnswer::Ok { .. }) {
            bail!("{host} answered {answer:?}");
        }
    }
    Ok(elapsed)
}

fn connector(c: &Credentials<'_>) -> Result<tokio_rustls::TlsConnector> {
    Ok(tokio_rustls::TlsConnector::from(baton_tls::client_config(
        c.cert, c.key, c.ca,
    )?))
}

/// One `POST /v1/actions` and its answer, framed by `Content-Length`.
async fn exchange(mut tls: TlsStream<TcpStream>, host: &Fqdn, body: &[u8]) -> Result<ActionAnswer> {
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        baton_actions::protocol::ACTIONS_PATH,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    tls.write_all(&request).await?;
    tls.flush().await?;
    let mut buf = Vec::with_capacity(4096);
    let (head_len, body_len) = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).context("the answer's head is not UTF-8")?;
            let status = head.split_whitespace().nth(1).unwrap_or("");
            if status != "200" {
                bail!("HTTP status {status:?}: {}", String::from_utf8_lossy(&buf));
            }
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>())
                })
                .context("the answer has no Content-Length")??;
            break (end + 4, length);
        }
        if buf.len() > 64 * 1024 {
            bail!("no end of the answer's head in 64 KiB");
        }
        if tls.read_buf(&mut buf).await? == 0 {
            bail!("the agent closed the connection before its answer's head");
        }
    };
    while buf.len() < head_len + body_len {
        if tls.read_buf(&mut buf).await? == 0 {
            bail!("the agent closed the connection in the middle of its answer");
        }
    }
    Ok(ActionAnswer::decode(&buf[head_len..head_len + body_len])?)
}
