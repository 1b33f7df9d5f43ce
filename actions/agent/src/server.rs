//! The agent's HTTPS server: mutual TLS (clients must chain to the configured CA and, when pins
//! are set, match one), `GET /v1/health`, and `POST /v1/actions` with durable idempotency.
//! It takes its listener and shutdown signal as arguments, so tests bind `127.0.0.1:0`.

use crate::config::AgentConfig;
use crate::journal::{Begin, Journal, JournalError, Lookup, now_ms};
use crate::{invoke, outcome, process};
use baton_runbook::IdempotencyKey;
use baton_runbook::catalog::{Action, Target};
use baton_runbook::protocol::{self, ActionAnswer, ActionCall, ErrorBody, ErrorKind, Health, KeyQuery, KeyState};
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

/// The open connections, oldest first, and whether each has completed its request (then it is
/// being answered and is never closed to make room).
struct Slots {
    cap: usize,
    next: u64,
    open: std::collections::BTreeMap<u64, Slot>,
}

struct Slot {
    answering: Arc<std::sync::atomic::AtomicBool>,
    evict: Arc<tokio::sync::Notify>,
}

/// Frees a connection's slot when its task ends, however it ends.
struct SlotGuard {
    slots: Arc<Mutex<Slots>>,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.open.remove(&self.id);
        }
    }
}

/// What a connection's handler knows of its limits: when the request it is receiving must be
/// complete, the flag it raises once it is (while it is being answered the connection is never
/// closed to make room), and whether it has answered a request before (kept open since, idle).
#[derive(Clone)]
struct Progress {
    /// Taken at accept for the first request (handshake, headers and body together), and when
    /// the answer to the one before was handed over for each later request on the connection.
    deadline: Arc<Mutex<Instant>>,
    answering: Arc<std::sync::atomic::AtomicBool>,
    served: Arc<std::sync::atomic::AtomicBool>,
    request_timeout: Duration,
}

impl Progress {
    fn remaining(&self) -> Duration {
        self.deadline
            .lock()
            .expect("the deadline is never held across a panic")
            .saturating_duration_since(Instant::now())
    }

    fn complete(&self) {
        self.answering.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The answer is handed to the connection: it waits, idle, for its next request, which
    /// gets a deadline of its own; it may be closed to make room again.
    fn answered(&self) {
        *self.deadline.lock().expect("the deadline is never held across a panic") =
            Instant::now() + self.request_timeout;
        self.served.store(true, std::sync::atomic::Ordering::SeqCst);
        self.answering.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn served(&self) -> bool {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// How long an idle connection told to close to make room may take to finish writing an answer
/// it was handed.
const EVICTED_GRACE: Duration = Duration::from_secs(1);

/// Takes a slot for a new connection. At the cap, the oldest connection that has not completed
/// its request is told to close and the new one takes its place; when every connection is being
/// answered, the new one is refused (`None`).
fn take_slot(slots: &Arc<Mutex<Slots>>) -> Option<(SlotGuard, Slot)> {
    let mut s = slots.lock().expect("the slot map is never held across a panic");
    if s.open.len() >= s.cap {
        let victim = s
            .open
            .iter()
            .find(|(_, slot)| !slot.answering.load(std::sync::atomic::Ordering::SeqCst))
            .map(|(id, _)| *id);
        let victim = victim?;
        if let Some(slot) = s.open.remove(&victim) {
            slot.evict.notify_one();
        }
    }
    let id = s.next;
    s.next += 1;
    let slot = Slot {
        answering: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        evict: Arc::new(tokio::sync::Notify::new()),
    };
    s.open.insert(
        id,
        Slot {
            answering: slot.answering.clone(),
            evict: slot.evict.clone(),
        },
    );
    Some((
        SlotGuard {
            slots: slots.clone(),
            id,
        },
        slot,
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write the state folder {}: {source}", path.display())]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("an action interrupted by the last stop is still running and cannot be ended (key {key}): {why}")]
    Orphan { key: String, why: String },
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
    slots: Arc<Mutex<Slots>>,
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
    /// Loads the TLS material, creates the state folder and opens the journal, closing keys a
    /// previous process left running as interrupted and ending what is left of their executors,
    /// so that nothing of theirs runs by the time this agent answers.
    pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
        let (agent, interrupted) = Agent::open(config)?;
        for i in interrupted {
            let Some(group) = i.process else {
                warn!(key = %i.key, "an action was running when the agent stopped, before its process started; it is recorded as interrupted and will not run again");
                continue;
            };
            match process::end_group(group, i.boot.as_deref(), Duration::from_secs(10)).await {
                Ok(true) => {
                    warn!(key = %i.key, process_group = group, "an action was running when the agent stopped: its processes were still there and are ended; the key is recorded as interrupted and will not run again")
                }
                Ok(false) => {
                    warn!(key = %i.key, process_group = group, "an action was running when the agent stopped; its processes are gone; the key is recorded as interrupted and will not run again")
                }
                Err(why) => return Err(AgentError::Orphan { key: i.key, why }),
            }
        }
        Ok(agent)
    }

    /// Checks the files a configuration names (certificates, key, CA, CRLs) without opening the
    /// journal, so that checking a running agent's configuration changes nothing of its state.
    pub fn check_files(config: &AgentConfig) -> Result<(), AgentError> {
        baton_tls::server_config(
            &config.tls.cert,
            &config.tls.key,
            &config.tls.client_ca,
            &config.tls.client_crls,
        )?;
        Ok(())
    }

    /// [`Agent::start`] without ending the processes of interrupted keys, which it returns.
    fn open(config: AgentConfig) -> Result<(Agent, Vec<crate::journal::Interrupted>), AgentError> {
        let tls = baton_tls::server_config(
            &config.tls.cert,
            &config.tls.key,
            &config.tls.client_ca,
            &config.tls.client_crls,
        )?;
        std::fs::create_dir_all(&config.state_dir).map_err(|source| AgentError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        let (journal, interrupted) = Journal::open(
            &config.state_dir.join("journal.sqlite"),
            now_ms(),
            crate::journal::Retention::default(),
        )?;
        let cap = config.limits.max_connections;
        let agent = Agent {
            inner: Arc::new(Inner {
                config,
                slots: Arc::new(Mutex::new(Slots {
                    cap,
                    next: 0,
                    open: Default::default(),
                })),
                acceptor: TlsAcceptor::from(tls),
                journal: Arc::new(journal),
                running: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                stopping: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        Ok((agent, interrupted))
    }

    /// What `GET /v1/health` answers.
    pub fn health(&self) -> Health {
        let c = &self.inner.config;
        Health {
            protocol: protocol::VERSION,
            agent_version: super::VERSION.to_string(),
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
                    Ok((stream, address)) => match take_slot(&self.inner.slots) {
                        Some((guard, slot)) => {
                            connections.spawn(self.inner.clone().connection(stream, address, guard, slot));
                        }
                        None => {
                            warn!(peer = %address, cap = c.limits.max_connections, "connection refused: every connection is being answered");
                        }
                    },
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

/// Checks the pins, if any: a client passes when its fingerprint is listed, or when its subject
/// equals a listed one as a distinguished name (attribute by attribute, RFC 4514), never by text.
fn admit(settings: &crate::config::TlsSettings, conn: &rustls::ServerConnection) -> Result<Peer, String> {
    let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else {
        return Err("no client certificate".to_string());
    };
    let name = baton_tls::DistinguishedName::of_certificate(cert);
    let peer = Peer {
        subject: name
            .as_ref()
            .map_or_else(|| "(unparsable subject)".to_string(), ToString::to_string),
        sha256: baton_tls::sha256_hex(cert),
    };
    let subject_pinned = name
        .as_ref()
        .is_some_and(|n| settings.client_subjects.iter().any(|pin| pin == n));
    if !settings.pinned() || settings.client_sha256.contains(&peer.sha256) || subject_pinned {
        Ok(peer)
    } else {
        Err(format!(
            "client certificate not allowed here (subject {}, sha256 {})",
            peer.subject, peer.sha256
        ))
    }
}

impl Inner {
    /// Serves one connection until it ends, a request misses its deadline, or it is closed to
    /// make room for a new one.
    async fn connection(self: Arc<Self>, stream: TcpStream, address: SocketAddr, guard: SlotGuard, slot: Slot) {
        let request_timeout = self.config.limits.request_timeout;
        let progress = Progress {
            deadline: Arc::new(Mutex::new(Instant::now() + request_timeout)),
            answering: slot.answering.clone(),
            served: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            request_timeout,
        };
        self.serve_connection(stream, address, progress, slot.evict).await;
        drop(guard);
    }

    async fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        address: SocketAddr,
        progress: Progress,
        evict: Arc<tokio::sync::Notify>,
    ) {
        let made_room = || {
            warn!(peer = %address, "connection closed to make room: its request was the slowest at the connection cap");
        };
        // Answers are small and written in pieces: do not let Nagle hold them for an ACK.
        let _ = stream.set_nodelay(true);
        let accept = tokio::time::timeout(progress.remaining(), self.acceptor.accept(stream));
        let tls = tokio::select! {
            accepted = accept => match accepted {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    warn!(peer = %address, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    warn!(peer = %address, "TLS handshake timed out");
                    return;
                }
            },
            () = evict.notified() => return made_room(),
        };
        let peer = admit(&self.config.tls, tls.get_ref().1);
        match &peer {
            Ok(p) => info!(peer = %address, subject = %p.subject, "client admitted"),
            Err(why) => warn!(peer = %address, why = %why, "client refused"),
        }
        let headers_by = progress.remaining();
        let service = {
            let progress = progress.clone();
            hyper::service::service_fn(move |req| {
                let inner = self.clone();
                let peer = peer.clone();
                let progress = progress.clone();
                async move { Ok::<_, Infallible>(inner.respond(peer, req, progress).await) }
            })
        };
        // Kept open between requests (the dispatcher sends a run's exchanges on the connection
        // its precheck opened). The first request's deadline, taken at accept, bounds the
        // handshake, headers and body together; each later request's headers must come within
        // the same time of the connection going idle (hyper's header timer starts when it waits
        // for the next request: that is also how long an idle connection stays open), and its
        // body by the deadline taken when the answer before it was handed over.
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(headers_by)
            .serve_connection(TokioIo::new(tls), service);
        tokio::pin!(connection);
        let served = tokio::select! {
            served = connection.as_mut() => served,
            () = evict.notified() => {
                if !progress.served() {
                    return made_room();
                }
                // Idle since its last answer (one being answered is never chosen): close it,
                // after the answer it may still be writing.
                debug!(peer = %address, "idle connection closed to make room");
                connection.as_mut().graceful_shutdown();
                match tokio::time::timeout(EVICTED_GRACE, connection.as_mut()).await {
                    Ok(served) => served,
                    Err(_) => return,
                }
            }
        };
        if let Err(e) = served {
            debug!(peer = %address, error = %e, "connection ended with an error");
        }
    }

    async fn respond(
        self: Arc<Self>,
        peer: Result<Peer, String>,
        req: Request<Incoming>,
        progress: Progress,
    ) -> Response<Full<Bytes>> {
        let (status, body) = match self.route(peer, req, progress.clone()).await {
            Ok(reply) => reply,
            Err(e) => (e.error.status(), e.encode()),
        };
        progress.answered();
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() =
            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        response
    }

    async fn route(
        self: &Arc<Self>,
        peer: Result<Peer, String>,
        req: Request<Incoming>,
        progress: Progress,
    ) -> Result<Reply, ErrorBody> {
        let peer = peer.map_err(|why| refuse(ErrorKind::Forbidden, why))?;
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET, protocol::HEALTH_PATH) => {
                progress.complete();
                let agent = Agent { inner: self.clone() };
                Ok((200, agent.health().encode()))
            }
            (&Method::POST, protocol::ACTIONS_PATH) => {
                let body = self.read_body(req, &peer, &progress).await?;
                let call = ActionCall::decode(&body).map_err(|e| {
                    info!(subject = %peer.subject, error = %e, "call refused");
                    ErrorBody::from(e)
                })?;
                let answer = self.call(&peer, call).await?;
                Ok((200, answer.encode()))
            }
            (&Method::POST, protocol::KEYS_PATH) => {
                let body = self.read_body(req, &peer, &progress).await?;
                let query = KeyQuery::decode(&body).map_err(|e| {
                    info!(subject = %peer.subject, error = %e, "key query refused");
                    ErrorBody::from(e)
                })?;
                let state = self.lookup(&peer, query).await?;
                Ok((200, state.encode()))
            }
            (_, protocol::HEALTH_PATH | protocol::ACTIONS_PATH | protocol::KEYS_PATH) => Err(refuse(
                ErrorKind::MethodNotAllowed,
                format!("{} is not allowed on {path}", req.method()),
            )),
            _ => Err(refuse(
                ErrorKind::NotFound,
                format!("no such endpoint: {}", baton_runbook::names::shown(&path)),
            )),
        }
    }

    /// Reads a request's body within the request's deadline and the size bound; the request is
    /// complete once it is read.
    async fn read_body(&self, req: Request<Incoming>, peer: &Peer, progress: &Progress) -> Result<Bytes, ErrorBody> {
        let read = Limited::new(req.into_body(), protocol::MAX_BODY).collect();
        let body = tokio::time::timeout(progress.remaining(), read)
            .await
            .map_err(|_| {
                info!(subject = %peer.subject, "request body not complete at the deadline; closing");
                refuse(
                    ErrorKind::Timeout,
                    format!(
                        "the request was not complete within {}",
                        humantime::format_duration(self.config.limits.request_timeout)
                    ),
                )
            })?
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    ErrorBody::from(protocol::WireError::TooLarge)
                } else {
                    refuse(ErrorKind::BadRequest, format!("cannot read the request body: {e}"))
                }
            })?;
        progress.complete();
        Ok(body.to_bytes())
    }

    /// Checks that `action` is for this agent and enabled here.
    fn check_action(&self, action: &Action) -> Result<(), ErrorBody> {
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
        Ok(())
    }

    /// Answers what became of a key, running nothing (a key never received is retired).
    async fn lookup(self: &Arc<Self>, peer: &Peer, query: KeyQuery) -> Result<KeyState, ErrorBody> {
        let KeyQuery { key, action, .. } = &query;
        self.check_action(action)?;
        let looked = {
            let (journal, key, action) = (self.journal.clone(), key.clone(), action.clone());
            blocking(move || journal.lookup(&key, &action, now_ms())).await?
        }
        .map_err(|e| {
            error!(key = %key, error = %e, "the journal cannot answer a key query");
            refuse(ErrorKind::Internal, format!("the agent cannot read its journal: {e}"))
        })?;
        info!(key = %key, action = action.id(), subject = %peer.subject, found = ?std::mem::discriminant(&looked), "key query");
        match looked {
            Lookup::Retired(_) => {
                warn!(key = %key, action = action.id(), "asked about a key never received: retired, it will never run");
                Ok(KeyState::Retired { key: key.clone() })
            }
            Lookup::Done(answer) => Ok(KeyState::Recorded {
                answer: answer.replayed(),
            }),
            Lookup::Running { since } => {
                let entry = self
                    .running
                    .lock()
                    .expect("the running map is never held across a panic")
                    .get(key)
                    .cloned();
                let answer = match entry {
                    Some((started, rx)) => wait(key, started, rx, query.wait()).await,
                    None => ActionAnswer::Running {
                        key: key.clone(),
                        elapsed_ms: millis(since),
                    },
                };
                Ok(match answer {
                    ActionAnswer::Running { key, elapsed_ms } => KeyState::Running { key, elapsed_ms },
                    done => KeyState::Recorded { answer: done },
                })
            }
            Lookup::Conflict { recorded } => Err(refuse(
                ErrorKind::Conflict,
                format!(
                    "key {key} was used for another action: {}",
                    baton_runbook::names::shown(&recorded)
                ),
            )),
        }
    }

    /// Checks the call against this agent, then executes it once or reports what is recorded.
    async fn call(self: &Arc<Self>, peer: &Peer, call: ActionCall) -> Result<ActionAnswer, ErrorBody> {
        let ActionCall { key, action, .. } = &call;
        let c = &self.config;
        self.check_action(action)?;
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
            blocking(move || journal.begin(&key, &action, now_ms())).await?
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
                        match blocking(move || journal.begin(&k, &a, now_ms())).await? {
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
            Begin::Busy { key: running, since } => {
                warn!(key = %key, running = %running, action = action.id(), "refused: the same kind of action is running");
                Err(refuse(
                    ErrorKind::Busy,
                    format!(
                        "{} is already running on {} (key {running}, for {}); nothing was started",
                        action.id(),
                        c.host,
                        humantime::format_duration(Duration::from_secs(since.as_secs()))
                    ),
                ))
            }
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
        let journal = self.journal.clone();
        let recorded_key = key.clone();
        let finished = process::run(&invocation, timeout, move |pid| async move {
            let boot = process::boot_id();
            let k = recorded_key.clone();
            let recorded =
                tokio::task::spawn_blocking(move || journal.record_process(&k, i64::from(pid), boot.as_deref())).await;
            if !matches!(recorded, Ok(Ok(()))) {
                error!(key = %recorded_key, pid, result = ?recorded, "cannot record the action's process; a restarted agent could not end it");
            }
        })
        .await;
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
            tokio::task::spawn_blocking(move || journal.finish(&key, &answer, now_ms())).await
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
