//! The bot's client for `baton-agent`: an [`Executor`] for every action whose target is an agent.
//! Mutual TLS with the bot's certificate (agents verified against the CA, by host name), an
//! address per host, bounded connect and request times, retries with backoff on transport
//! errors (the same idempotency key, so a retry never executes twice), and polling while the
//! agent answers `running`. Every failure names the host.
//!
//! Connections are kept open between exchanges (HTTP/1.1 keep-alive), a few per agent for
//! [`DispatcherConfig::keep_idle`]: the precheck's health calls leave one open to every agent,
//! and the run's steps use them without a new TCP connection or TLS handshake. A kept
//! connection that turns out closed before the request went out (the agent closed it idle, or
//! restarted) is replaced by a fresh one at once; once a request may have gone out, the rules
//! below apply as for any connection.
//!
//! Unknown is not failed: once a call may have reached the agent (the request was sent, or the
//! agent answered `running`), losing the connection does not fail the action. The dispatcher
//! keeps asking with the same key until the action's deadline, and if no answer comes the
//! outcome is [`ActionOutcome::Unknown`]. A new attempt of an action (a key ending in `/t2`,
//! `/t3`…) first asks the agent what became of the earlier attempts (`POST /v1/keys`, which runs
//! nothing and retires a key never received): one that succeeded is the answer, one still
//! running is waited for, and only when all ended without success does the new attempt start.

use crate::catalog::{Action, Target};
use crate::executor::{ActionOutcome, ActionReport, ActionRequest, Executor, IdempotencyKey};
use crate::names::{Fqdn, shown};
use crate::protocol::{self, ActionAnswer, ActionCall, ErrorBody, Health, KeyQuery, KeyState};
use async_trait::async_trait;
use baton_tls::TlsError;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

/// Where one agent listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentAddress {
    /// A fixed address (tests, hosts without DNS).
    Socket(SocketAddr),
    /// This port on the host's own name, resolved at each connection.
    Port(u16),
}

impl From<SocketAddr> for AgentAddress {
    fn from(s: SocketAddr) -> AgentAddress {
        AgentAddress::Socket(s)
    }
}

impl std::fmt::Display for AgentAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentAddress::Socket(s) => write!(f, "{s}"),
            AgentAddress::Port(p) => write!(f, "port {p}"),
        }
    }
}

/// The read buffer of one agent connection: an answer's head must fit in it.
const READ_BUFFER: usize = 4096;

/// Where the agents are and how hard to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatcherConfig {
    /// The CA that agents' certificates must chain to (PEM).
    pub ca: PathBuf,
    /// The bot's client certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The address of each agent. The TLS server name is always the host's FQDN.
    pub agents: BTreeMap<Fqdn, AgentAddress>,
    /// The port of hosts that `agents` does not list (on the host's name); `None`: such hosts
    /// are refused.
    pub default_port: Option<u16>,
    /// Bound on the TCP connect and on the TLS handshake, each.
    pub connect_timeout: Duration,
    /// Bound on one exchange beyond the time the agent may hold it (`poll_wait`).
    pub request_timeout: Duration,
    /// How long the agent may hold one exchange before answering `running`.
    pub poll_wait: Duration,
    /// Transport attempts before the action fails (at least 1).
    pub attempts: u32,
    /// The pause after the first failed attempt; it doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long a connection may stay open and idle for the next exchange with its agent
    /// (zero: a new connection for every exchange). Agents close idle connections at their
    /// `limits.request_timeout` (30 s by default); a connection they closed first is noticed
    /// and replaced before anything is sent on it.
    pub keep_idle: Duration,
}

impl DispatcherConfig {
    /// A configuration with the default times: 3 s connect, 10 s request, 10 s poll wait, 4
    /// attempts with backoff from 250 ms to 4 s, idle connections kept 20 s.
    pub fn new(ca: PathBuf, cert: PathBuf, key: PathBuf, agents: BTreeMap<Fqdn, AgentAddress>) -> DispatcherConfig {
        DispatcherConfig {
            ca,
            cert,
            key,
            agents,
            default_port: None,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            poll_wait: Duration::from_secs(10),
            attempts: 4,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            keep_idle: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{host}: no agent address is configured for this host")]
    UnknownHost { host: Fqdn },
    #[error("{host}: agent unreachable after {}: {last}", counted(*.attempts, "attempt"))]
    Unreachable { host: Fqdn, attempts: u32, last: String },
    #[error("{host}: TLS with the agent failed: {why}")]
    Handshake { host: Fqdn, why: String },
    #[error("{host}: the agent refused the request ({status}): {message}")]
    Refused { host: Fqdn, status: u16, message: String },
    #[error("{host}: the agent's answer is unreadable: {why}")]
    BadAnswer { host: Fqdn, why: String },
    #[error("{host}: no final answer from the agent within {}", humantime::format_duration(*waited))]
    NoAnswer { host: Fqdn, waited: Duration },
    #[error(
        "{host}: outcome unknown: the request may have reached the agent, which gave no final answer within {} ({last})",
        humantime::format_duration(*waited)
    )]
    Unknown { host: Fqdn, waited: Duration, last: String },
    #[error("{host}: attempt {attempt} of this action is still running at the agent; nothing new was started")]
    EarlierRunning { host: Fqdn, attempt: String },
    #[error("{host}: cannot ask the agent what became of {earlier}, so nothing new was started: {why}")]
    CannotAsk {
        host: Fqdn,
        earlier: IdempotencyKey,
        why: String,
    },
}

impl DispatchError {
    /// True when the action may have run (or may be running) and nobody can say.
    pub fn is_unknown(&self) -> bool {
        matches!(
            self,
            DispatchError::Unknown { .. } | DispatchError::NoAnswer { .. } | DispatchError::EarlierRunning { .. }
        )
    }
}

/// `1 attempt`, `3 attempts`.
fn counted(n: u32, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The client. Cheap to share behind an `Arc`; connections are kept open between exchanges
/// (see the module documentation).
pub struct Dispatcher {
    config: DispatcherConfig,
    connector: TlsConnector,
    /// Open connections waiting for their next exchange, per agent, newest last.
    idle: std::sync::Mutex<HashMap<Fqdn, Vec<Connection>>>,
}

/// Idle connections kept per agent: one serves a run's steps; a few more cover the parallel
/// reads of `!status` on the management host.
const IDLE_PER_AGENT: usize = 4;

/// One open HTTP/1.1 connection to an agent: the handle that sends requests on it and the task
/// that drives it (ended when the connection is dropped).
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    idle_since: Instant,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Why one exchange failed: worth another attempt (and whether its request may have reached
/// the agent), or not.
enum Attempt {
    Retry { why: String, maybe_delivered: bool },
    Fail(DispatchError),
}

fn not_sent(why: String) -> Attempt {
    Attempt::Retry {
        why,
        maybe_delivered: false,
    }
}

fn maybe_sent(why: String) -> Attempt {
    Attempt::Retry {
        why,
        maybe_delivered: true,
    }
}

/// Finds a rustls error in an error's chain (also inside `io::Error`, whose `source` skips it).
fn rustls_cause<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A failure whose cause is TLS (a certificate refused, a bad name) is final: no attempt will
/// fare better. Any other failure is `fallback`.
fn tls_failure(host: &Fqdn, e: &(dyn StdError + 'static), fallback: Attempt) -> Attempt {
    match rustls_cause(e) {
        Some(r) => Attempt::Fail(DispatchError::Handshake {
            host: host.clone(),
            why: r.to_string(),
        }),
        None => fallback,
    }
}

impl Dispatcher {
    /// Loads the bot's certificate, key and the CA.
    pub fn new(config: DispatcherConfig) -> Result<Dispatcher, DispatchError> {
        let tls = baton_tls::client_config(&config.cert, &config.key, &config.ca)?;
        Ok(Dispatcher {
            config,
            connector: TlsConnector::from(tls),
            idle: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The newest idle connection to `host` that is still open and young enough, if any.
    fn take_idle(&self, host: &Fqdn) -> Option<Connection> {
        let mut idle = self.idle.lock().expect("the idle pool is never held across a panic");
        let kept = idle.get_mut(host)?;
        while let Some(c) = kept.pop() {
            if !c.sender.is_closed() && c.idle_since.elapsed() < self.config.keep_idle {
                return Some(c);
            }
        }
        None
    }

    /// Keeps `connection` for the next exchange with `host` (the oldest goes beyond
    /// [`IDLE_PER_AGENT`]).
    fn put_idle(&self, host: &Fqdn, mut connection: Connection) {
        if self.config.keep_idle.is_zero() || connection.sender.is_closed() {
            return;
        }
        connection.idle_since = Instant::now();
        let mut idle = self.idle.lock().expect("the idle pool is never held across a panic");
        let kept = idle.entry(host.clone()).or_default();
        kept.push(connection);
        if kept.len() > IDLE_PER_AGENT {
            kept.remove(0);
        }
    }

    pub fn config(&self) -> &DispatcherConfig {
        &self.config
    }

    fn address(&self, host: &Fqdn) -> Result<AgentAddress, DispatchError> {
        let c = &self.config;
        c.agents
            .get(host)
            .cloned()
            .or(c.default_port.map(AgentAddress::Port))
            .ok_or_else(|| DispatchError::UnknownHost { host: host.clone() })
    }

    /// Opens a mutual-TLS connection to `host`'s agent and starts HTTP/1.1 on it.
    async fn connect(&self, host: &Fqdn, target: &AgentAddress, address: &str) -> Result<Connection, Attempt> {
        let c = &self.config;
        let connect = async {
            match target {
                AgentAddress::Socket(s) => TcpStream::connect(*s).await,
                AgentAddress::Port(p) => TcpStream::connect((host.as_str(), *p)).await,
            }
        };
        let tcp = match tokio::time::timeout(c.connect_timeout, connect).await {
            Err(_) => {
                return Err(not_sent(format!(
                    "connecting to {address} timed out after {:?}",
                    c.connect_timeout
                )));
            }
            Ok(Err(e)) => return Err(not_sent(format!("cannot connect to {address}: {e}"))),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.as_str().to_string()).map_err(|e| {
            Attempt::Fail(DispatchError::Handshake {
                host: host.clone(),
                why: e.to_string(),
            })
        })?;
        let tls = match tokio::time::timeout(c.connect_timeout, self.connector.connect(name, tcp)).await {
            Err(_) => return Err(not_sent(format!("TLS handshake with {address} timed out"))),
            Ok(Err(e)) => {
                return Err(tls_failure(
                    host,
                    &e,
                    not_sent(format!("TLS handshake with {address}: {e}")),
                ));
            }
            Ok(Ok(s)) => s,
        };
        // The agent's answers have heads of about a hundred bytes (status, content type and
        // length, date): a 4 KiB read buffer per connection instead of hyper's 8 KiB holds them
        // with room to spare. With 100 connections kept, the heap is 0.2-0.3 MiB smaller
        // (docs/performance.md, run Z5). A body longer than the buffer is read in turns.
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .read_buf_exact_size(Some(READ_BUFFER))
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| tls_failure(host, &e, not_sent(format!("HTTP with {address}: {e}"))))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "agent connection ended");
            }
        });
        Ok(Connection {
            sender,
            driver,
            idle_since: Instant::now(),
        })
    }

    /// One HTTP exchange with `host`'s agent, on a kept connection when there is one.
    async fn exchange(&self, host: &Fqdn, method: Method, path: &str, body: Vec<u8>) -> Result<(u16, Bytes), Attempt> {
        let target = self.address(host).map_err(Attempt::Fail)?;
        let address = match &target {
            AgentAddress::Socket(s) => s.to_string(),
            AgentAddress::Port(p) => format!("{host}:{p}"),
        };
        let c = &self.config;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| {
                Attempt::Fail(DispatchError::BadAnswer {
                    host: host.clone(),
                    why: e.to_string(),
                })
            })?;
        let limit = c.poll_wait + c.request_timeout;
        let no_answer = || maybe_sent(format!("no answer from {address} within {limit:?}"));
        let mut kept = self.take_idle(host);
        let mut request = Some(request);
        let (connection, response) = loop {
            let reused = kept.is_some();
            let mut connection = match kept.take() {
                Some(k) => k,
                None => self.connect(host, &target, &address).await?,
            };
            // A kept connection whose last answer was just read may still be finishing that
            // exchange: wait until it can take a request (or turns out closed).
            if reused
                && !matches!(
                    tokio::time::timeout(c.connect_timeout, connection.sender.ready()).await,
                    Ok(Ok(()))
                )
            {
                debug!(host = %host, "a kept connection had closed; opening a new one");
                continue;
            }
            let Some(req) = request.take() else {
                unreachable!("the request is put back before every next turn of this loop");
            };
            let deadline = tokio::time::Instant::now() + limit;
            match tokio::time::timeout_at(deadline, connection.sender.try_send_request(req)).await {
                Err(_) => return Err(no_answer()),
                Ok(Ok(response)) => break ((connection, deadline), response),
                Ok(Err(mut e)) => match e.take_message() {
                    // The kept connection had closed before the request went out: nothing was
                    // sent; a fresh connection takes it.
                    Some(req) if reused => {
                        debug!(host = %host, error = %e.error(), "a kept connection had closed; opening a new one");
                        request = Some(req);
                    }
                    Some(_) => {
                        return Err(tls_failure(
                            host,
                            e.error(),
                            not_sent(format!("request to {address}: {}", e.error())),
                        ));
                    }
                    None => {
                        return Err(tls_failure(
                            host,
                            e.error(),
                            maybe_sent(format!("request to {address}: {}", e.error())),
                        ));
                    }
                },
            }
        };
        let (connection, deadline) = connection;
        let status = response.status().as_u16();
        // An agent that closes after each answer (older versions) says so; its connection is
        // not kept.
        let closes = response
            .headers()
            .get(hyper::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let read = Limited::new(response.into_body(), protocol::MAX_BODY).collect();
        let body = match tokio::time::timeout_at(deadline, read).await {
            Err(_) => return Err(no_answer()),
            Ok(Err(e)) => return Err(maybe_sent(format!("reading the answer of {address}: {e}"))),
            Ok(Ok(body)) => body.to_bytes(),
        };
        if !closes {
            self.put_idle(host, connection);
        }
        Ok((status, body))
    }

    /// Runs exchanges until one succeeds or the attempts are used up.
    async fn with_retries(&self, host: &Fqdn, method: Method, path: &str, body: &[u8]) -> Result<Bytes, DispatchError> {
        let c = &self.config;
        let mut backoff = c.backoff;
        let mut failures = 0;
        loop {
            let last = match self.exchange(host, method.clone(), path, body.to_vec()).await {
                Ok((200, body)) => return Ok(body),
                Ok((status, body)) => {
                    let message = ErrorBody::decode(&body)
                        .map(|b| b.message)
                        .unwrap_or_else(|_| shown(&String::from_utf8_lossy(&body)));
                    if status < 500 {
                        return Err(DispatchError::Refused {
                            host: host.clone(),
                            status,
                            message,
                        });
                    }
                    format!("the agent answered {status}: {message}")
                }
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry { why, .. }) => why,
            };
            failures += 1;
            if failures >= c.attempts.max(1) {
                return Err(DispatchError::Unreachable {
                    host: host.clone(),
                    attempts: failures,
                    last,
                });
            }
            warn!(host = %host, attempt = failures, error = %last, backoff = ?backoff, "agent exchange failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(c.max_backoff);
        }
    }

    /// `GET /v1/health` on `host`'s agent, which must say it serves `host`.
    pub async fn health(&self, host: &Fqdn) -> Result<Health, DispatchError> {
        let body = self.with_retries(host, Method::GET, protocol::HEALTH_PATH, &[]).await?;
        let health = Health::decode(&body).map_err(|e| DispatchError::BadAnswer {
            host: host.clone(),
            why: e.to_string(),
        })?;
        if health.host != *host {
            return Err(DispatchError::BadAnswer {
                host: host.clone(),
                why: format!("the agent there serves {}", health.host),
            });
        }
        Ok(health)
    }

    /// How long a call may take in all: the agent kills the action at `timeout`; allow for the
    /// exchanges around it.
    fn give_up(&self, timeout: Duration) -> Duration {
        let c = &self.config;
        timeout + c.poll_wait + c.request_timeout + c.max_backoff * c.attempts.max(1)
    }

    /// `POST /v1/keys`: what became of `key` (which was, or would have been, a call of
    /// `action`), waiting while it runs, up to `give_up`. Runs nothing at the agent.
    pub async fn ask(
        &self,
        host: &Fqdn,
        key: &IdempotencyKey,
        action: &Action,
        give_up: Duration,
    ) -> Result<KeyState, DispatchError> {
        let body = KeyQuery::new(key.clone(), action.clone(), self.config.poll_wait).encode();
        let started = Instant::now();
        loop {
            let exchanged = Instant::now();
            let bytes = self
                .with_retries(host, Method::POST, protocol::KEYS_PATH, &body)
                .await?;
            let state = KeyState::decode(&bytes).map_err(|e| DispatchError::BadAnswer {
                host: host.clone(),
                why: e.to_string(),
            })?;
            if state.key() != key {
                return Err(DispatchError::BadAnswer {
                    host: host.clone(),
                    why: format!("the answer is for key {}", state.key()),
                });
            }
            match state {
                KeyState::Running { .. } if started.elapsed() <= give_up => {
                    debug!(host = %host, key = %key, "an earlier attempt is still running; waiting for it");
                    pause_after(exchanged).await;
                }
                other => return Ok(other),
            }
        }
    }

    /// Carries out one action on `host`'s agent and returns its final answer (`ok` or
    /// `failed`), polling while it is `running`. A new attempt first settles the earlier ones:
    /// when one of them succeeded, its answer is returned and nothing new runs.
    pub async fn call(
        &self,
        host: &Fqdn,
        key: &IdempotencyKey,
        action: &Action,
        timeout: Duration,
    ) -> Result<ActionAnswer, DispatchError> {
        for earlier in key.earlier_attempts() {
            let state = self
                .ask(
                    host,
                    &earlier,
                    action,
                    self.give_up(action.default_timeout().max(timeout)),
                )
                .await
                .map_err(|e| match e {
                    e @ DispatchError::Handshake { .. } => e,
                    other => DispatchError::CannotAsk {
                        host: host.clone(),
                        earlier: earlier.clone(),
                        why: other.to_string(),
                    },
                })?;
            match state {
                KeyState::Recorded {
                    answer:
                        ActionAnswer::Ok {
                            key: done,
                            detail,
                            result,
                            elapsed_ms,
                            ..
                        },
                } => {
                    warn!(host = %host, key = %key, earlier = %done, "an earlier attempt had succeeded; nothing new runs");
                    let attempt = done.as_str().rsplit_once("/t").map_or("", |(_, n)| n);
                    return Ok(ActionAnswer::Ok {
                        key: done.clone(),
                        detail: format!("{detail} (by attempt {attempt}, found when asked before this one)"),
                        result,
                        elapsed_ms,
                        replayed: true,
                    });
                }
                KeyState::Running { .. } => {
                    return Err(DispatchError::EarlierRunning {
                        host: host.clone(),
                        attempt: earlier.to_string(),
                    });
                }
                KeyState::Recorded { .. } | KeyState::Retired { .. } => {}
            }
        }
        self.run(host, key, action, timeout).await
    }

    /// Sends the call and polls it to its end. Transport failures before the request could have
    /// been sent count against `attempts`; once it may have been delivered, the same key is
    /// asked again until the deadline, and then the outcome is unknown.
    async fn run(
        &self,
        host: &Fqdn,
        key: &IdempotencyKey,
        action: &Action,
        timeout: Duration,
    ) -> Result<ActionAnswer, DispatchError> {
        let c = &self.config;
        let body = ActionCall::new(key.clone(), action.clone(), timeout, c.poll_wait).encode();
        let give_up = self.give_up(timeout);
        let started = Instant::now();
        let mut maybe_delivered = false;
        let mut failures = 0;
        let mut backoff = c.backoff;
        loop {
            let exchanged = Instant::now();
            let last = match self
                .exchange(host, Method::POST, protocol::ACTIONS_PATH, body.clone())
                .await
            {
                Ok((200, bytes)) => {
                    let answer = ActionAnswer::decode(&bytes).map_err(|e| DispatchError::BadAnswer {
                        host: host.clone(),
                        why: e.to_string(),
                    })?;
                    if answer.key() != key {
                        return Err(DispatchError::BadAnswer {
                            host: host.clone(),
                            why: format!("the answer is for key {}", answer.key()),
                        });
                    }
                    match answer {
                        ActionAnswer::Running { elapsed_ms, .. } => {
                            maybe_delivered = true;
                            failures = 0;
                            backoff = c.backoff;
                            debug!(host = %host, key = %key, elapsed_ms, "action still running; polling");
                            if started.elapsed() > give_up {
                                return Err(DispatchError::NoAnswer {
                                    host: host.clone(),
                                    waited: started.elapsed(),
                                });
                            }
                            pause_after(exchanged).await;
                            continue;
                        }
                        done => return Ok(done),
                    }
                }
                Ok((status, bytes)) => {
                    let message = ErrorBody::decode(&bytes)
                        .map(|b| b.message)
                        .unwrap_or_else(|_| shown(&String::from_utf8_lossy(&bytes)));
                    if status < 500 {
                        return Err(DispatchError::Refused {
                            host: host.clone(),
                            status,
                            message,
                        });
                    }
                    format!("the agent answered {status}: {message}")
                }
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry {
                    why,
                    maybe_delivered: m,
                }) => {
                    maybe_delivered |= m;
                    why
                }
            };
            failures += 1;
            if maybe_delivered {
                if started.elapsed() + backoff > give_up {
                    return Err(DispatchError::Unknown {
                        host: host.clone(),
                        waited: started.elapsed(),
                        last,
                    });
                }
                warn!(host = %host, key = %key, error = %last, "the call may have reached the agent; asking again with the same key");
            } else if failures >= c.attempts.max(1) {
                return Err(DispatchError::Unreachable {
                    host: host.clone(),
                    attempts: failures,
                    last,
                });
            } else {
                warn!(host = %host, attempt = failures, error = %last, backoff = ?backoff, "agent exchange failed; retrying");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(c.max_backoff);
        }
    }
}

/// An agent that answers at once must not make polling a busy loop.
async fn pause_after(exchanged: Instant) {
    let floor = Duration::from_millis(200);
    if exchanged.elapsed() < floor {
        tokio::time::sleep(floor - exchanged.elapsed()).await;
    }
}

#[async_trait]
impl Executor for Dispatcher {
    async fn execute(&self, request: ActionRequest) -> ActionReport {
        let started = Instant::now();
        let (outcome, replayed) = match &request.action {
            Action::Health { host } => match self.health(host).await {
                // An agent on an older protocol would refuse the run's actions: fail the
                // precheck now, saying what to upgrade.
                Ok(h) if h.older_protocol().is_some() => {
                    let error = h.older_protocol().unwrap_or_default();
                    warn!(host = %host, agent_version = %h.agent_version, protocol = h.protocol, "{error}");
                    (ActionOutcome::Failed { error }, false)
                }
                Ok(h) => (
                    ActionOutcome::Ok {
                        detail: format!("{} answers ({} actions)", h.agent_version, h.actions.len()),
                    },
                    false,
                ),
                Err(e) => (ActionOutcome::Failed { error: e.to_string() }, false),
            },
            action => match action.target() {
                Target::Agent(host) => match self.call(&host, &request.key, action, request.timeout).await {
                    Ok(ActionAnswer::Ok { detail, replayed, .. }) => (ActionOutcome::Ok { detail }, replayed),
                    Ok(ActionAnswer::Failed { error, replayed, .. }) => (
                        ActionOutcome::Failed {
                            error: format!("{host}: {error}"),
                        },
                        replayed,
                    ),
                    Ok(ActionAnswer::Running { .. }) => (
                        ActionOutcome::Unknown {
                            error: format!("{host}: the action was still running"),
                        },
                        false,
                    ),
                    Err(e) if e.is_unknown() => (ActionOutcome::Unknown { error: e.to_string() }, false),
                    Err(e) => (ActionOutcome::Failed { error: e.to_string() }, false),
                },
                Target::Bot => (
                    ActionOutcome::Failed {
                        error: format!("{} runs on the bot, not through an agent", action.id()),
                    },
                    false,
                ),
            },
        };
        ActionReport {
            outcome,
            elapsed_ms: millis(started.elapsed()),
            replayed,
        }
    }
}

/// Reads sites' XMPP federation routes through the management host's agent (`route.get`), for
/// `!status xmpp`. Each read is a new idempotency key, so it always reads the current route.
pub struct AgentRoutes {
    dispatcher: std::sync::Arc<Dispatcher>,
    host: Fqdn,
    timeout: Duration,
}

impl AgentRoutes {
    pub fn new(dispatcher: std::sync::Arc<Dispatcher>, management_host: Fqdn, timeout: Duration) -> AgentRoutes {
        AgentRoutes {
            dispatcher,
            host: management_host,
            timeout,
        }
    }
}

/// A key no earlier read used: the time in milliseconds and a counter.
fn read_key(what: &str) -> IdempotencyKey {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    IdempotencyKey::parse(&format!("read/{ms}-{n}/{what}"))
        .expect("digits, '-', '/' and a validated name make a valid key")
}

#[async_trait]
impl crate::status::RouteReader for AgentRoutes {
    async fn route(&self, site: &crate::names::SiteName) -> Result<String, String> {
        let action = Action::RouteGet {
            host: self.host.clone(),
            site: site.clone(),
        };
        match self
            .dispatcher
            .call(&self.host, &read_key(site.as_str()), &action, self.timeout)
            .await
        {
            Ok(ActionAnswer::Ok {
                result: crate::protocol::ActionResult::Route(r),
                ..
            }) => Ok(r.route.unwrap_or_else(|| "none".to_string())),
            Ok(ActionAnswer::Ok { detail, .. }) => Err(format!("{}: unexpected result: {detail}", self.host)),
            Ok(ActionAnswer::Failed { error, .. }) => Err(format!("{}: {error}", self.host)),
            Ok(ActionAnswer::Running { .. }) => Err(format!("{}: still running", self.host)),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_hosts_and_unreachable_agents_fail_naming_the_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let edge = Fqdn::parse("edge2a.contoso.com").expect("valid");
        let files = baton_pki::init(
            dir.path(),
            std::slice::from_ref(&edge),
            &baton_pki::PkiOptions::default(),
        )
        .expect("pki");
        // A port that was free a moment ago: nothing listens there.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("binds")
            .local_addr()
            .expect("address");
        let mut config = DispatcherConfig::new(
            files.ca_cert,
            files.bot_cert,
            files.bot_key,
            [(edge.clone(), free.into())].into(),
        );
        config.backoff = Duration::from_millis(10);
        config.attempts = 3;
        let d = Dispatcher::new(config).expect("dispatcher");
        let err = d.health(&edge).await.expect_err("nothing listens").to_string();
        assert!(
            err.starts_with("edge2a.contoso.com: agent unreachable after 3 attempts: cannot connect to 127.0.0.1:"),
            "{err}"
        );
        // A host without an entry is refused, unless a default port says where to look.
        let mut by_name = d.config().clone();
        by_name.default_port = Some(4443);
        by_name.attempts = 1;
        let named = Dispatcher::new(by_name).expect("dispatcher");
        let err = named
            .health(&Fqdn::parse("edge9.invalid").expect("valid"))
            .await
            .expect_err("no such name")
            .to_string();
        assert!(
            err.starts_with("edge9.invalid: agent unreachable after 1 attempt: cannot connect to edge9.invalid:4443"),
            "{err}"
        );
        let other = Fqdn::parse("edge9.contoso.com").expect("valid");
        let report = d
            .execute(ActionRequest {
                key: IdempotencyKey::new("s", 1, 1, 0, "edge9", 1),
                action: Action::ServicesStop { host: other },
                timeout: Duration::from_secs(1),
            })
            .await;
        assert_eq!(
            report.outcome.text(),
            "edge9.contoso.com: no agent address is configured for this host"
        );
        let bot = d
            .execute(ActionRequest {
                key: IdempotencyKey::new("s", 1, 6, 0, "bot", 1),
                action: Action::PortCheck {
                    address: "203.0.113.20".parse().expect("ip"),
                    port: 5269,
                },
                timeout: Duration::from_secs(1),
            })
            .await;
        assert_eq!(bot.outcome.text(), "port.check runs on the bot, not through an agent");
    }

    #[test]
    fn key_material_never_shows_in_debug_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let edge = Fqdn::parse("edge2a.contoso.com").expect("valid");
        let files = baton_pki::init(dir.path(), std::slice::from_ref(&edge), &Default::default()).expect("pki");
        let pem = std::fs::read_to_string(&files.bot_key).expect("key file");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let dispatcher = DispatcherConfig::new(
            files.ca_cert.clone(),
            files.bot_cert.clone(),
            files.bot_key.clone(),
            Default::default(),
        );
        assert!(!format!("{dispatcher:?}").contains(&body[..24]));
    }
}
