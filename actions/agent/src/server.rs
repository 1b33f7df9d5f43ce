//! The agent's HTTPS server: mutual TLS (clients must chain to the configured CA and, when pins
//! are set, match one), `GET /v1/health`, and `POST /v1/actions` with durable idempotency.
//! It takes its listener and shutdown signal as arguments, so tests bind `127.0.0.1:0`.

use crate::config::AgentConfig;
use crate::journal::{Begin, Journal, JournalError};
use crate::{invoke, outcome, process};
use baton_runbook::IdempotencyKey;
use baton_runbook::catalog::{Action, Target};
use baton_runbook::protocol::{self, ActionAnswer, ActionCall, ErrorBody, ErrorKind, Health};
use baton_tls::TlsError;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write the state folder {}: {source}", path.display())]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A client that completed the handshake and passed the pins: its certificate's subject and
/// SHA-256 fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub subject: String,
    pub sha256: String,
}

/// The agent: configuration, TLS acceptor, journal, and the actions in flight.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    config: AgentConfig,
    acceptor: TlsAcceptor,
    journal: Arc<Journal>,
    /// Keys executing now, with when they started and where their answer will appear.
    running: Mutex<HashMap<IdempotencyKey, Execution>>,
    tasks: TaskTracker,
    /// Set when the agent stops: new calls are refused (503, which the dispatcher retries).
    stopping: std::sync::atomic::AtomicBool,
}

type Reply = (u16, Vec<u8>);

/// An execution in flight: when it started, and the channel its answer will appear on.
type Execution = (Instant, watch::Receiver<Option<ActionAnswer>>);

fn refuse(kind: ErrorKind, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(kind, message)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ErrorBody> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| refuse(ErrorKind::Internal, format!("internal error: {e}")))
}

impl Agent {
    /// Loads the TLS material, creates the state folder and opens the journal (closing keys a
    /// previous process left running as interrupted).
    pub fn new(config: AgentConfig) -> Result<Agent, AgentError> {
        let tls = baton_tls::server_config(&config.tls.cert, &config.tls.key, &config.tls.client_ca)?;
        std::fs::create_dir_all(&config.state_dir).map_err(|source| AgentError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        let (journal, interrupted) = Journal::open(&config.state_dir.join("journal.sqlite"))?;
        for key in &interrupted {
            warn!(key = %key, "an action was running when the agent stopped; it is recorded as interrupted and will not run again");
        }
        Ok(Agent {
            inner: Arc::new(Inner {
                config,
                acceptor: TlsAcceptor::from(tls),
                journal: Arc::new(journal),
                running: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                stopping: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// What `GET /v1/health` answers.
    pub fn health(&self) -> Health {
        let c = &self.inner.config;
        Health {
            protocol: protocol::VERSION,
            agent_version: format!("baton-agent {}", env!("CARGO_PKG_VERSION")),
            host: c.host.clone(),
            executor: c.executor.describe(),
            actions: c.actions.iter().cloned().collect(),
        }
    }

    /// Serves until `shutdown` completes; then stops accepting, lets running actions finish
    /// within the configured grace, and returns.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let c = &self.inner.config;
        info!(host = %c.host, address = ?listener.local_addr().ok(), executor = %c.executor.describe(), "agent listening");
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, address)) => {
                        connections.spawn(self.inner.clone().connection(stream, address));
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        self.inner.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.tasks.close();
        if tokio::time::timeout(c.shutdown_grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            warn!(grace = ?c.shutdown_grace, "actions still running at shutdown are stopped; they will be reported interrupted");
        }
        connections.shutdown().await;
        info!(host = %c.host, "agent stopped");
    }
}

/// Checks the pins, if any: a client passes when its fingerprint or its subject is listed.
fn admit(settings: &crate::config::TlsSettings, conn: &rustls::ServerConnection) -> Result<Peer, String> {
    let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else {
        return Err("no client certificate".to_string());
    };
    let peer = Peer {
        subject: baton_tls::subject(cert).unwrap_or_else(|| "(unparsable subject)".to_string()),
        sha256: baton_tls::sha256_hex(cert),
    };
    if !settings.pinned()
        || settings.client_sha256.contains(&peer.sha256)
        || settings
            .client_subjects
            .iter()
            .any(|s| baton_tls::same_subject(s, &peer.subject))
    {
        Ok(peer)
    } else {
        Err(format!(
            "client certificate not allowed here (subject {}, sha256 {})",
            peer.subject, peer.sha256
        ))
    }
}

impl Inner {
    async fn connection(self: Arc<Self>, stream: TcpStream, address: SocketAddr) {
        // Answers are small and written in pieces: do not let Nagle hold them for an ACK.
        let _ = stream.set_nodelay(true);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                warn!(peer = %address, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                warn!(peer = %address, "TLS handshake timed out");
                return;
            }
        };
        let peer = admit(&self.config.tls, tls.get_ref().1);
        match &peer {
            Ok(p) => debug!(peer = %address, subject = %p.subject, "client admitted"),
            Err(why) => warn!(peer = %address, why = %why, "client refused"),
        }
        let service = hyper::service::service_fn(move |req| {
            let inner = self.clone();
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(inner.respond(peer, req).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(tls), service)
            .await;
        if let Err(e) = served {
            debug!(peer = %address, error = %e, "connection ended with an error");
        }
    }

    async fn respond(self: Arc<Self>, peer: Result<Peer, String>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, body) = match self.route(peer, req).await {
            Ok(reply) => reply,
            Err(e) => (e.error.status(), e.encode()),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() =
            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        response
    }

    async fn route(self: &Arc<Self>, peer: Result<Peer, String>, req: Request<Incoming>) -> Result<Reply, ErrorBody> {
        let peer = peer.map_err(|why| refuse(ErrorKind::Forbidden, why))?;
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET, protocol::HEALTH_PATH) => {
                let agent = Agent { inner: self.clone() };
                Ok((200, agent.health().encode()))
            }
            (&Method::POST, protocol::ACTIONS_PATH) => {
                let body = Limited::new(req.into_body(), protocol::MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| {
                        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                            ErrorBody::from(protocol::WireError::TooLarge)
                        } else {
                            refuse(ErrorKind::BadRequest, format!("cannot read the request body: {e}"))
                        }
                    })?;
                let call = ActionCall::decode(&body.to_bytes()).map_err(|e| {
                    info!(subject = %peer.subject, error = %e, "call refused");
                    ErrorBody::from(e)
                })?;
                let answer = self.call(&peer, call).await?;
                Ok((200, answer.encode()))
            }
            (_, protocol::HEALTH_PATH | protocol::ACTIONS_PATH) => Err(refuse(
                ErrorKind::MethodNotAllowed,
                format!("{} is not allowed on {path}", req.method()),
            )),
            _ => Err(refuse(
                ErrorKind::NotFound,
                format!("no such endpoint: {}", baton_runbook::names::shown(&path)),
            )),
        }
    }

    /// Checks the call against this agent, then executes it once or reports what is recorded.
    async fn call(self: &Arc<Self>, peer: &Peer, call: ActionCall) -> Result<ActionAnswer, ErrorBody> {
        let ActionCall { key, action, .. } = &call;
        let c = &self.config;
        match action.target() {
            Target::Agent(host) if host == c.host => {}
            Target::Agent(host) => {
                return Err(refuse(
                    ErrorKind::BadRequest,
                    format!("this agent serves {}; the action is for {host}", c.host),
                ));
            }
            Target::Bot => {
                return Err(refuse(
                    ErrorKind::BadRequest,
                    format!("{} runs on the bot, not on an agent", action.id()),
                ));
            }
        }
        if !c.actions.contains(action.id()) {
            let enabled: Vec<&str> = c.actions.iter().map(String::as_str).collect();
            return Err(refuse(
                ErrorKind::BadRequest,
                format!(
                    "action {} is not enabled on this agent (enabled: {})",
                    action.id(),
                    enabled.join(", ")
                ),
            ));
        }
        let invocation = invoke::invocation(&c.executor, key, action).ok_or_else(|| {
            refuse(
                ErrorKind::BadRequest,
                format!("the {} executor has nothing for {}", c.executor.describe(), action.id()),
            )
        })?;
        let timeout = c.timeout_for(action, call.timeout());
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(refuse(
                ErrorKind::Unavailable,
                "the agent is stopping; nothing was executed",
            ));
        }
        let begin = {
            let (journal, key, action) = (self.journal.clone(), key.clone(), action.clone());
            blocking(move || journal.begin(&key, &action)).await?
        }
        .map_err(|e| {
            error!(key = %key, error = %e, "the journal refused a call; nothing was executed");
            refuse(
                ErrorKind::Internal,
                format!("the agent cannot record the call, so it did not execute it: {e}"),
            )
        })?;
        match begin {
            Begin::Fresh => {
                let (tx, rx) = watch::channel(None);
                let started = Instant::now();
                self.running
                    .lock()
                    .expect("the running map is never held across a panic")
                    .insert(key.clone(), (started, rx.clone()));
                info!(key = %key, action = action.id(), subject = %peer.subject, timeout = ?timeout, "action started");
                self.tasks.spawn(
                    self.clone()
                        .execute(key.clone(), action.clone(), invocation, timeout, tx),
                );
                Ok(wait(key, started, rx, call.wait()).await)
            }
            Begin::Running { since } => {
                let entry = self
                    .running
                    .lock()
                    .expect("the running map is never held across a panic")
                    .get(key)
                    .cloned();
                match entry {
                    Some((started, rx)) => Ok(wait(key, started, rx, call.wait()).await),
                    // The execution ended between the journal read and now: read its answer.
                    None => {
                        let (journal, k, a) = (self.journal.clone(), key.clone(), action.clone());
                        match blocking(move || journal.begin(&k, &a)).await? {
                            Ok(Begin::Done(answer)) => Ok(answer.replayed()),
                            _ => Ok(ActionAnswer::Running {
                                key: key.clone(),
                                elapsed_ms: millis(since),
                            }),
                        }
                    }
                }
            }
            Begin::Done(answer) => {
                info!(key = %key, action = action.id(), "repeated key: answering the recorded result");
                Ok(answer.replayed())
            }
            Begin::Conflict { recorded } => Err(refuse(
                ErrorKind::Conflict,
                format!(
                    "key {key} was already used for another action: {}",
                    baton_runbook::names::shown(&recorded)
                ),
            )),
        }
    }

    async fn execute(
        self: Arc<Self>,
        key: IdempotencyKey,
        action: Action,
        invocation: process::Invocation,
        timeout: Duration,
        tx: watch::Sender<Option<ActionAnswer>>,
    ) {
        let finished = process::run(&invocation, timeout).await;
        let answer = outcome::interpret(&action, &key, &finished, timeout);
        match &answer {
            ActionAnswer::Ok { detail, elapsed_ms, .. } => {
                info!(key = %key, action = action.id(), pid = ?finished.pid, elapsed_ms, detail = %detail, "action succeeded");
            }
            ActionAnswer::Failed { error, elapsed_ms, .. } => {
                warn!(key = %key, action = action.id(), pid = ?finished.pid, elapsed_ms, error = %error, "action failed");
            }
            ActionAnswer::Running { .. } => {}
        }
        let recorded = {
            let (journal, key, answer) = (self.journal.clone(), key.clone(), answer.clone());
            tokio::task::spawn_blocking(move || journal.finish(&key, &answer)).await
        };
        if !matches!(recorded, Ok(Ok(()))) {
            error!(key = %key, result = ?recorded, "cannot record an answer; after a restart the key will read as interrupted");
        }
        tx.send_replace(Some(answer));
        self.running
            .lock()
            .expect("the running map is never held across a panic")
            .remove(&key);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Waits up to `wait` for the answer of a running key; `running` when it is not there yet. An
/// answer that arrives while waiting is the live execution's, not a replay (a poll, or a
/// duplicate of the same call, gets the same answer as the first caller).
async fn wait(
    key: &IdempotencyKey,
    started: Instant,
    mut rx: watch::Receiver<Option<ActionAnswer>>,
    wait: Duration,
) -> ActionAnswer {
    let answer = tokio::time::timeout(wait, rx.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|a| a.clone()));
    answer.unwrap_or_else(|| ActionAnswer::Running {
        key: key.clone(),
        elapsed_ms: millis(started.elapsed()),
    })
}
