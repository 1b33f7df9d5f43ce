//! The REST half: Discord's `/api/v10` routes a chat bot uses, over plain HTTP (for
//! `HttpBuilder::proxy`) and HTTPS as `discord.com` (for a reqwest client that resolves
//! discord.com to loopback). Each request is checked (route, `Authorization`, `User-Agent`,
//! JSON body), rate limited per bucket with Discord's `X-RateLimit-*` headers, answered as
//! Discord answers, and recorded. Injected faults (429, 5xx) come first.

use super::config::intents;
use super::objects::{self, ThreadSpec};
use super::state::{Call, Fault, Origin, Place, Shared, State};
use super::validate::{self, ApiError, BodyKind, Callback, flags};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Largest body read (Discord's own limit for JSON is far lower than attachments').
const BODY_LIMIT: usize = 8 << 20;

/// Accepts connections on `listener` until `cancel`, over TLS when `tls` is given.
pub(super) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    loop {
        let tcp = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        let tls = tls.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let is_tls = tls.is_some();
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer_http(&shared, req, is_tls).await) }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    tokio::select! {
                        _ = builder.serve_connection(TokioIo::new(stream), service) => {}
                        _ = cancel.cancelled() => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = builder.serve_connection(TokioIo::new(tcp), service) => {}
                        _ = cancel.cancelled() => {}
                    }
                }
            }
        });
    }
}

async fn answer_http(shared: &Shared, req: Request<hyper::body::Incoming>, tls: bool) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return respond(Answer::error(ApiError::new(413, 0, "413: Request Entity Too Large"))),
    };
    let request = RestRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        raw_body: String::from_utf8_lossy(&bytes).into_owned(),
        tls,
    };
    respond(shared.with(|state| handle(state, request)))
}

fn respond(answer: Answer) -> Response<Full<Bytes>> {
    let mut builder =
        Response::builder().status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (k, v) in &answer.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = match &answer.body {
        Some(v) if answer.status != 204 => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        _ => Bytes::new(),
    };
    builder
        .body(Full::new(body))
        .expect("status and header values come from the stand-in and are valid")
}

/// One request as the handler sees it.
#[derive(Clone, Debug)]
pub(super) struct RestRequest {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: Option<String>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) raw_body: String,
    pub(super) tls: bool,
}

impl RestRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn query_flag(&self, name: &str) -> bool {
        self.query.as_deref().is_some_and(|q| {
            q.split('&')
                .any(|kv| kv == format!("{name}=true") || kv == format!("{name}=True"))
        })
    }
}

/// The answer to a request.
#[derive(Clone, Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Option<Value>,
    pub(super) headers: Vec<(String, String)>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }
    fn no_content() -> Answer {
        Answer {
            status: 204,
            body: None,
            headers: Vec::new(),
        }
    }
    fn error(e: ApiError) -> Answer {
        Answer::json(e.status, e.body)
    }
}

/// Who must authenticate a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    /// `Authorization: Bot <token>` is required.
    Bot,
    /// The interaction token in the path authenticates; an `Authorization` header, if sent,
    /// must still be the right one.
    TokenInPath,
    /// Public (`GET /gateway`).
    None,
}

/// The routes the stand-in models.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Gateway,
    GatewayBot,
    UsersMe,
    Channel {
        channel: u64,
    },
    CreateMessage {
        channel: u64,
    },
    Message {
        channel: u64,
        message: u64,
    },
    StartThread {
        channel: u64,
        message: u64,
    },
    Callback {
        interaction: u64,
        token: String,
    },
    ExecuteWebhook {
        app: u64,
        token: String,
    },
    WebhookMessage {
        app: u64,
        token: String,
        message: Option<u64>,
    },
}

impl Route {
    /// The route for `method` and `path` (below `/api/v10`); `Err(true)` when the path is known
    /// but not the method.
    fn parse(method: &str, path: &str) -> Result<Route, bool> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let id = |s: &str| s.parse::<u64>().ok();
        let (route, methods): (Route, &[&str]) = match segments.as_slice() {
            ["gateway"] => (Route::Gateway, &["GET"]),
            ["gateway", "bot"] => (Route::GatewayBot, &["GET"]),
            ["users", "@me"] => (Route::UsersMe, &["GET"]),
            ["channels", c] => (
                Route::Channel {
                    channel: id(c).ok_or(false)?,
                },
                &["GET"],
            ),
            ["channels", c, "messages"] => (
                Route::CreateMessage {
                    channel: id(c).ok_or(false)?,
                },
                &["POST"],
            ),
            ["channels", c, "messages", m] => (
                Route::Message {
                    channel: id(c).ok_or(false)?,
                    message: id(m).ok_or(false)?,
                },
                &["GET", "PATCH", "DELETE"],
            ),
            ["channels", c, "messages", m, "threads"] => (
                Route::StartThread {
                    channel: id(c).ok_or(false)?,
                    message: id(m).ok_or(false)?,
                },
                &["POST"],
            ),
            ["interactions", i, token, "callback"] => (
                Route::Callback {
                    interaction: id(i).ok_or(false)?,
                    token: token.to_string(),
                },
                &["POST"],
            ),
            ["webhooks", a, token] => (
                Route::ExecuteWebhook {
                    app: id(a).ok_or(false)?,
                    token: token.to_string(),
                },
                &["POST"],
            ),
            ["webhooks", a, token, "messages", m] => (
                Route::WebhookMessage {
                    app: id(a).ok_or(false)?,
                    token: token.to_string(),
                    message: if *m == "@original" {
                        None
                    } else {
                        Some(id(m).ok_or(false)?)
                    },
                },
                &["GET", "PATCH", "DELETE"],
            ),
            _ => return Err(false),
        };
        if methods.contains(&method) {
            Ok(route)
        } else {
            Err(true)
        }
    }

    fn template(&self, method: &str) -> &'static str {
        match (self, method) {
            (Route::Gateway, _) => "GET /gateway",
            (Route::GatewayBot, _) => "GET /gateway/bot",
            (Route::UsersMe, _) => "GET /users/@me",
            (Route::Channel { .. }, _) => "GET /channels/{channel_id}",
            (Route::CreateMessage { .. }, _) => "POST /channels/{channel_id}/messages",
            (Route::Message { .. }, "GET") => "GET /channels/{channel_id}/messages/{message_id}",
            (Route::Message { .. }, "PATCH") => "PATCH /channels/{channel_id}/messages/{message_id}",
            (Route::Message { .. }, _) => "DELETE /channels/{channel_id}/messages/{message_id}",
            (Route::StartThread { .. }, _) => "POST /channels/{channel_id}/messages/{message_id}/threads",
            (Route::Callback { .. }, _) => "POST /interactions/{interaction_id}/{token}/callback",
            (Route::ExecuteWebhook { .. }, _) => "POST /webhooks/{application_id}/{token}",
            (Route::WebhookMessage { message: None, .. }, "GET") => {
                "GET /webhooks/{application_id}/{token}/messages/@original"
            }
            (Route::WebhookMessage { message: None, .. }, "PATCH") => {
                "PATCH /webhooks/{application_id}/{token}/messages/@original"
            }
            (Route::WebhookMessage { message: None, .. }, _) => {
                "DELETE /webhooks/{application_id}/{token}/messages/@original"
            }
            (Route::WebhookMessage { .. }, "GET") => "GET /webhooks/{application_id}/{token}/messages/{message_id}",
            (Route::WebhookMessage { .. }, "PATCH") => "PATCH /webhooks/{application_id}/{token}/messages/{message_id}",
            (Route::WebhookMessage { .. }, _) => "DELETE /webhooks/{application_id}/{token}/messages/{message_id}",
        }
    }

    fn auth(&self) -> Auth {
        match self {
            Route::Gateway => Auth::None,
            Route::Callback { .. } | Route::ExecuteWebhook { .. } | Route::WebhookMessage { .. } => Auth::TokenInPath,
            _ => Auth::Bot,
        }
    }

    /// The rate-limit bucket: the route template and its major parameter.
    fn bucket(&self, method: &str) -> Option<String> {
        let major = match self {
            Route::Gateway => return None,
            Route::GatewayBot | Route::UsersMe => String::new(),
            Route::Channel { channel }
            | Route::CreateMessage { channel }
            | Route::Message { channel, .. }
            | Route::StartThread { channel, .. } => channel.to_string(),
            Route::Callback { interaction, .. } => interaction.to_string(),
            Route::ExecuteWebhook { app, token } | Route::WebhookMessage { app, token, .. } => format!("{app}/{token}"),
        };
        Some(format!("{}:{major}", self.template(method)))
    }
}

/// Answers `req` and records it.
pub(super) fn handle(state: &mut State, req: RestRequest) -> Answer {
    let now = Instant::now();
    let route = req
        .path
        .strip_prefix("/api/v10")
        .map(|rest| Route::parse(&req.method, rest));
    let template = match &route {
        Some(Ok(r)) => Some(r.template(&req.method)),
        _ => None,
    };
    let body: Option<Value> = if req.raw_body.trim().is_empty() {
        None
    } else {
        serde_json::from_str(&req.raw_body).ok()
    };
    let (answer, injected) = match route {
        None | Some(Err(false)) => (Answer::error(ApiError::new(404, 0, "404: Not Found")), false),
        Some(Err(true)) => (Answer::error(ApiError::new(405, 0, "405: Method Not Allowed")), false),
        Some(Ok(route)) => match take_fault(state, &req) {
            Some(Taken::Instead(answer)) => (answer, true),
            Some(Taken::After(status)) => {
                let _ = checked(state, &req, &route, body.as_ref(), now);
                (lost(status), true)
            }
            None => (checked(state, &req, &route, body.as_ref(), now), false),
        },
    };
    let since_start = now.duration_since(state.started);
    let index = state.calls.len();
    state.calls.push(Call {
        index,
        at: SystemTime::now(),
        since_start,
        tls: req.tls,
        method: req.method,
        path: req.path,
        query: req.query,
        headers: req.headers,
        body,
        raw_body: req.raw_body,
        route: template,
        status: answer.status,
        response: answer.body.clone(),
        response_headers: answer.headers.clone(),
        injected,
    });
    answer
}

/// An injected fault: an answer instead of the call's, or the call's effect with this status.
enum Taken {
    Instead(Answer),
    After(u16),
}

fn lost(status: u16) -> Answer {
    Answer::json(status, objects::error(0, &format!("{status}: injected fault")))
}

fn take_fault(state: &mut State, req: &RestRequest) -> Option<Taken> {
    let position = state
        .faults
        .iter()
        .position(|f| f.filter.accepts(&req.method, &req.path))?;
    let pending = &mut state.faults[position];
    pending.remaining -= 1;
    let fault = pending.fault.clone();
    if pending.remaining == 0 {
        state.faults.remove(position);
    }
    Some(Taken::Instead(match fault {
        Fault::LostAnswer(status) => return Some(Taken::After(status)),
        Fault::RateLimited { retry_after, global } => {
            let secs = retry_after.as_secs_f64();
            let mut answer = Answer::json(
                429,
                json!({ "message": "You are being rate limited.", "retry_after": secs, "global": global }),
            );
            answer.headers = vec![
                ("retry-after".to_string(), format!("{}", secs.ceil() as u64)),
                ("x-ratelimit-limit".to_string(), state.cfg.rate_limit.limit.to_string()),
                ("x-ratelimit-remaining".to_string(), "0".to_string()),
                ("x-ratelimit-reset-after".to_string(), format!("{secs:.3}")),
                (
                    "x-ratelimit-reset".to_string(),
                    format!("{:.3}", unix_secs(SystemTime::now() + retry_after)),
                ),
                (
                    "x-ratelimit-scope".to_string(),
                    if global { "global" } else { "user" }.to_string(),
                ),
            ];
            if global {
                answer
                    .headers
                    .push(("x-ratelimit-global".to_string(), "true".to_string()));
            }
            answer
        }
        Fault::Status(status) => lost(status),
    }))
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Authentication, User-Agent, body type and rate limit, then the route itself.
fn checked(state: &mut State, req: &RestRequest, route: &Route, body: Option<&Value>, now: Instant) -> Answer {
    let expected = format!("Bot {}", state.cfg.token);
    let authorization = req.header("authorization");
    let auth_ok = match (route.auth(), authorization) {
        (Auth::None, _) => true,
        (Auth::TokenInPath, None) => true,
        (_, Some(given)) => given == expected,
        (Auth::Bot, None) => false,
    };
    if !auth_ok {
        return Answer::error(ApiError::new(401, 0, "401: Unauthorized"));
    }
    if !req
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("DiscordBot ("))
    {
        return Answer::error(ApiError::new(
            400,
            0,
            "the Discord stand-in requires the User-Agent Discord documents: DiscordBot ($url, $versionNumber)",
        ));
    }
    if !req.raw_body.trim().is_empty() {
        let content_type = req.header("content-type").unwrap_or("");
        if content_type.starts_with("multipart/") {
            return Answer::error(ApiError::unsupported("multipart bodies (attachments)"));
        }
        if !content_type.starts_with("application/json") || body.is_none() {
            return Answer::error(ApiError::new(400, 50109, "The request body contains invalid JSON."));
        }
    }

    let mut limit_headers = Vec::new();
    if let Some(bucket_key) = route.bucket(&req.method) {
        let limit = state.cfg.rate_limit;
        let bucket = state.buckets.entry(bucket_key.clone()).or_insert(super::state::Bucket {
            window_start: now,
            used: 0,
        });
        if now.duration_since(bucket.window_start) >= limit.window {
            bucket.window_start = now;
            bucket.used = 0;
        }
        let reset_after = (bucket.window_start + limit.window).saturating_duration_since(now);
        let reset_at = SystemTime::now() + reset_after;
        let hash = format!("{:016x}", fnv(bucket_key.split(':').next().unwrap_or("")));
        if bucket.used >= limit.limit {
            let secs = reset_after.as_secs_f64();
            let mut answer = Answer::json(
                429,
                json!({ "message": "You are being rate limited.", "retry_after": secs, "global": false }),
            );
            answer.headers = vec![
                ("retry-after".to_string(), format!("{}", secs.ceil() as u64)),
                ("x-ratelimit-limit".to_string(), limit.limit.to_string()),
                ("x-ratelimit-remaining".to_string(), "0".to_string()),
                ("x-ratelimit-reset".to_string(), format!("{:.3}", unix_secs(reset_at))),
                ("x-ratelimit-reset-after".to_string(), format!("{secs:.3}")),
                ("x-ratelimit-bucket".to_string(), hash),
                ("x-ratelimit-scope".to_string(), "user".to_string()),
            ];
            return answer;
        }
        bucket.used += 1;
        limit_headers = vec![
            ("x-ratelimit-limit".to_string(), limit.limit.to_string()),
            (
                "x-ratelimit-remaining".to_string(),
                (limit.limit - bucket.used).to_string(),
            ),
            ("x-ratelimit-reset".to_string(), format!("{:.3}", unix_secs(reset_at))),
            (
                "x-ratelimit-reset-after".to_string(),
                format!("{:.3}", reset_after.as_secs_f64()),
            ),
            ("x-ratelimit-bucket".to_string(), hash),
        ];
    }

    let mut answer = match route_answer(state, req, route, body, now) {
        Ok(answer) => answer,
        Err(e) => Answer::error(e),
    };
    answer.headers.extend(limit_headers);
    answer
}

/// A stable bucket hash (FNV-1a), standing in for Discord's opaque `X-RateLimit-Bucket`.
fn fnv(s: &str) -> u64 {
    s.bytes()
        .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

fn require_body(body: Option<&Value>) -> Result<&Value, ApiError> {
    body.ok_or_else(|| ApiError::new(400, 50109, "The request body contains invalid JSON."))
}

fn route_answer(
    state: &mut State,
    req: &RestRequest,
    route: &Route,
    body: Option<&Value>,
    now: Instant,
) -> Result<Answer, ApiError> {
    match route {
        Route::Gateway => Ok(Answer::json(200, json!({ "url": state.gateway_url }))),
        Route::GatewayBot => Ok(Answer::json(
            200,
            json!({
                "url": state.gateway_url,
                "shards": 1,
                "session_start_limit": { "total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1 },
            }),
        )),
        Route::UsersMe => {
            let mut me = objects::user(&state.cfg.bot);
            me["verified"] = Value::Bool(true);
            me["mfa_enabled"] = Value::Bool(false);
            Ok(Answer::json(200, me))
        }
        Route::Channel { channel } => state
            .channel_json(*channel)
            .map(|c| Answer::json(200, c))
            .ok_or_else(unknown_channel),
        Route::CreateMessage { channel } => create_message(state, *channel, require_body(body)?),
        Route::Message { channel, message } => match req.method.as_str() {
            "GET" => visible_message(state, *channel, *message).map(|m| Answer::json(200, m)),
            "PATCH" => edit_channel_message(state, *channel, *message, require_body(body)?),
            _ => delete_channel_message(state, *channel, *message),
        },
        Route::StartThread { channel, message } => start_thread(state, *channel, *message, require_body(body)?),
        Route::Callback { interaction, token } => {
            interaction_callback(state, *interaction, token, body, req.query_flag("with_response"), now)
        }
        Route::ExecuteWebhook { app, token } => followup(state, *app, token, require_body(body)?, now),
        Route::WebhookMessage { app, token, message } => {
            webhook_message(state, &req.method, *app, token, *message, body, now)
        }
    }
}

fn unknown_channel() -> ApiError {
    ApiError::new(404, 10003, "Unknown Channel")
}

fn unknown_message() -> ApiError {
    ApiError::new(404, 10008, "Unknown Message")
}

/// A non-ephemeral, undeleted message of `channel`.
fn visible_message(state: &State, channel: u64, message: u64) -> Result<Value, ApiError> {
    state.channel_place(channel).ok_or_else(unknown_channel)?;
    match state.message(message) {
        Some(m) if m.channel_id == channel && !m.deleted && m.ephemeral_for.is_none() => Ok(m.json.clone()),
        _ => Err(unknown_message()),
    }
}

fn create_message(state: &mut State, channel: u64, body: &Value) -> Result<Answer, ApiError> {
    let place = state.channel_place(channel).ok_or_else(unknown_channel)?;
    let parsed = validate::message_body(body, BodyKind::Create)?;
    let mut reference = None;
    if let Some(r) = &parsed.message_reference {
        let target_channel = r.channel_id.unwrap_or(channel);
        let found = state.message(r.message_id).filter(|m| {
            m.channel_id == channel && target_channel == channel && !m.deleted && m.ephemeral_for.is_none()
        });
        match found {
            Some(m) => reference = Some(m.json.clone()),
            None if r.fail_if_not_exists => {
                return Err(ApiError::form(&[validate::FieldError {
                    path: vec!["message_reference".to_string()],
                    code: "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                    message: "Unknown message".to_string(),
                }]));
            }
            None => {}
        }
    }
    // Discord: with `enforce_nonce`, a nonce the author used in the last minutes returns the
    // message made then, and nothing new is made.
    let nonce_key = match (&parsed.nonce, parsed.enforce_nonce) {
        (Some(n), true) => Some((state.cfg.bot.id, n.to_string())),
        _ => None,
    };
    if let Some(key) = &nonce_key
        && let Some((earlier, at)) = state.nonces.get(key)
        && at.elapsed() < NONCE_WINDOW
        && let Some(m) = state.message(*earlier).filter(|m| !m.deleted)
    {
        return Ok(Answer::json(200, m.json.clone()));
    }
    let guild_id = (!matches!(place, Place::Dm { .. })).then_some(state.cfg.guild.id);
    let id = state.new_bot_message(channel, &parsed, Origin::Rest, |parts| {
        if let Some(referenced) = reference {
            parts.kind = 19;
            let mut r = json!({ "type": 0, "channel_id": channel.to_string(), "message_id": referenced["id"] });
            if let Some(g) = guild_id {
                r["guild_id"] = Value::from(g.to_string());
            }
            parts.message_reference = Some(r);
            parts.referenced_message = Some(referenced);
        }
    });
    if let Some(key) = nonce_key {
        state.nonces.insert(key, (id, Instant::now()));
    }
    state.dispatch_message("MESSAGE_CREATE", id);
    Ok(Answer::json(
        200,
        state.message(id).expect("stored just above").json.clone(),
    ))
}

/// How long an enforced nonce is remembered ("the past few minutes" in Discord's docs).
const NONCE_WINDOW: Duration = Duration::from_secs(5 * 60);

fn edit_channel_message(state: &mut State, channel: u64, message: u64, body: &Value) -> Result<Answer, ApiError> {
    visible_message(state, channel, message)?;
    if state.message(message).map(|m| m.author_id()) != Some(state.cfg.bot.id) {
        return Err(ApiError::new(
            403,
            50005,
            "Cannot edit a message authored by another user",
        ));
    }
    let parsed = validate::message_body(body, BodyKind::Edit)?;
    state.edit_message(message, &parsed)?;
    state.dispatch_message("MESSAGE_UPDATE", message);
    Ok(Answer::json(
        200,
        state.message(message).expect("edited just above").json.clone(),
    ))
}

fn delete_channel_message(state: &mut State, channel: u64, message: u64) -> Result<Answer, ApiError> {
    visible_message(state, channel, message)?;
    if state.message(message).map(|m| m.author_id()) != Some(state.cfg.bot.id) {
        return Err(ApiError::new(403, 50013, "Missing Permissions"));
    }
    delete_message(state, message);
    Ok(Answer::no_content())
}

fn delete_message(state: &mut State, message: u64) {
    let Some(m) = state.messages.get_mut(&message) else {
        return;
    };
    m.deleted = true;
    let (channel, ephemeral) = (m.channel_id, m.ephemeral_for.is_some());
    if ephemeral {
        return;
    }
    let in_guild = !matches!(state.channel_place(channel), Some(Place::Dm { .. }));
    let mut d = json!({ "id": message.to_string(), "channel_id": channel.to_string() });
    if in_guild {
        d["guild_id"] = Value::from(state.cfg.guild.id.to_string());
    }
    let needs = if in_guild {
        intents::GUILD_MESSAGES
    } else {
        intents::DIRECT_MESSAGES
    };
    state.dispatch("MESSAGE_DELETE", d, needs);
}

fn start_thread(state: &mut State, channel: u64, message: u64, body: &Value) -> Result<Answer, ApiError> {
    match state.channel_place(channel) {
        None => return Err(unknown_channel()),
        Some(Place::GuildText) => {}
        Some(_) => return Err(ApiError::new(400, 50024, "Cannot execute action on this channel type")),
    }
    visible_message(state, channel, message)?;
    if state.threads.contains_key(&message) {
        return Err(ApiError::new(
            400,
            160004,
            "A thread has already been created for this message",
        ));
    }
    let parsed = validate::thread_body(body)?;
    let thread = ThreadSpec {
        id: message,
        parent_id: channel,
        guild_id: state.cfg.guild.id,
        owner_id: state.cfg.bot.id,
        name: parsed.name,
        auto_archive_duration: parsed.auto_archive_duration,
        rate_limit_per_user: parsed.rate_limit_per_user,
        created_at: state.now_ts(),
    };
    let channel_json = objects::thread_channel(&thread);
    state.threads.insert(message, thread);
    if let Some(m) = state.messages.get_mut(&message) {
        m.json["thread"] = channel_json.clone();
    }
    let mut d = channel_json.clone();
    d["newly_created"] = Value::Bool(true);
    state.dispatch("THREAD_CREATE", d, intents::GUILDS);
    Ok(Answer::json(201, channel_json))
}

fn unknown_interaction() -> ApiError {
    ApiError::new(404, 10062, "Unknown interaction")
}

fn interaction_callback(
    state: &mut State,
    interaction: u64,
    token: &str,
    body: Option<&Value>,
    with_response: bool,
    now: Instant,
) -> Result<Answer, ApiError> {
    let window = state.cfg.interaction_response_window;
    let Some(record) = state.interactions.get(&interaction).filter(|i| i.token == token) else {
        return Err(unknown_interaction());
    };
    let after = now.saturating_duration_since(record.created);
    let verdict = if record.accepted().is_some() {
        Err(ApiError::new(400, 40060, "Interaction has already been acknowledged."))
    } else if after > window {
        Err(unknown_interaction())
    } else {
        match body {
            Some(b) => validate::callback(b),
            None => Err(ApiError::new(400, 50109, "The request body contains invalid JSON.")),
        }
    };
    let kind = body.and_then(|b| b.get("type")).and_then(Value::as_u64);
    let callback = match verdict {
        Ok(c) => c,
        Err(e) => {
            let record = state
                .interactions
                .get_mut(&interaction)
                .expect("looked up above under the same lock");
            record.callbacks.push(super::state::CallbackAttempt {
                at: SystemTime::now(),
                after,
                kind,
                body: body.cloned(),
                status: e.status,
                error: Some(e.body.clone()),
            });
            return Err(e);
        }
    };
    let (message_id, channel_id, user_id) = {
        let r = &state.interactions[&interaction];
        (r.message_id, r.channel_id, r.user_id)
    };
    if let Callback::Update(parsed) = &callback {
        let edited = match state.message(message_id) {
            Some(m) if !m.deleted => state.edit_message(message_id, parsed),
            _ => Err(unknown_message()),
        };
        if let Err(e) = edited {
            let record = state
                .interactions
                .get_mut(&interaction)
                .expect("looked up above under the same lock");
            record.callbacks.push(super::state::CallbackAttempt {
                at: SystemTime::now(),
                after,
                kind,
                body: body.cloned(),
                status: e.status,
                error: Some(e.body.clone()),
            });
            return Err(e);
        }
        state.dispatch_message("MESSAGE_UPDATE", message_id);
    }
    let original = match &callback {
        Callback::Message(parsed) => Some(interaction_message(
            state,
            interaction,
            channel_id,
            message_id,
            user_id,
            parsed,
            None,
        )),
        Callback::DeferredMessage { ephemeral } => {
            let parsed = validate::MessageBody {
                flags: Some(flags::LOADING | if *ephemeral { flags::EPHEMERAL } else { 0 }),
                ..Default::default()
            };
            Some(interaction_message(
                state,
                interaction,
                channel_id,
                message_id,
                user_id,
                &parsed,
                None,
            ))
        }
        Callback::DeferredUpdate | Callback::Update(_) => Some(message_id),
        Callback::Modal(_) => None,
    };
    let record = state
        .interactions
        .get_mut(&interaction)
        .expect("looked up above under the same lock");
    record.callbacks.push(super::state::CallbackAttempt {
        at: SystemTime::now(),
        after,
        kind,
        body: body.cloned(),
        status: if with_response { 200 } else { 204 },
        error: None,
    });
    record.original_message = original;
    if !with_response {
        return Ok(Answer::no_content());
    }
    let message = original.and_then(|id| state.message(id)).map(|m| m.json.clone());
    let mut resource = json!({ "type": callback.kind() });
    if let Some(m) = &message {
        resource["message"] = m.clone();
    }
    Ok(Answer::json(
        200,
        json!({
            "interaction": {
                "id": interaction.to_string(),
                "type": 3,
                "activity_instance_id": null,
                "response_message_id": original.map(|id| id.to_string()),
                "response_message_loading": matches!(callback, Callback::DeferredMessage { .. }),
                "response_message_ephemeral": message.as_ref().is_some_and(|m| m["flags"].as_u64().unwrap_or(0) & flags::EPHEMERAL != 0),
            },
            "resource": resource,
        }),
    ))
}

/// Makes the message of a type 4/5 response or a follow-up: by the bot through the application's
/// webhook, replying to the component's message, with `interaction_metadata`.
fn interaction_message(
    state: &mut State,
    interaction: u64,
    channel: u64,
    component_message: u64,
    user_id: u64,
    body: &validate::MessageBody,
    original_response: Option<u64>,
) -> u64 {
    let app = state.cfg.application_id;
    let guild_id = state.cfg.guild.id;
    let in_guild = !matches!(state.channel_place(channel), Some(Place::Dm { .. }));
    let clicker = state.cfg.user(user_id).map(objects::user).unwrap_or(Value::Null);
    let id = state.new_bot_message(channel, body, Origin::Interaction { interaction_id: interaction }, |parts| {
        parts.kind = 19;
        parts.webhook_id = Some(app);
        parts.application_id = Some(app);
        let mut r = json!({ "type": 0, "channel_id": channel.to_string(), "message_id": component_message.to_string() });
        if in_guild {
            r["guild_id"] = Value::from(guild_id.to_string());
        }
        parts.message_reference = Some(r);
        let mut meta = json!({
            "id": interaction.to_string(),
            "type": 3,
            "user": clicker,
            "authorizing_integration_owners": { "0": if in_guild { guild_id.to_string() } else { "0".to_string() } },
            "interacted_message_id": component_message.to_string(),
        });
        if let Some(o) = original_response {
            meta["original_response_message_id"] = Value::from(o.to_string());
        }
        parts.interaction_metadata = Some(meta);
    });
    state.dispatch_message("MESSAGE_CREATE", id);
    id
}

/// The interaction an interaction webhook (`/webhooks/{app}/{token}`) belongs to, if the
/// token still works.
fn webhook_interaction(state: &State, app: u64, token: &str, now: Instant) -> Result<u64, ApiError> {
    if app != state.cfg.application_id {
        return Err(ApiError::new(404, 10015, "Unknown Webhook"));
    }
    let lifetime = state.cfg.interaction_token_lifetime;
    match state.interactions.values().find(|i| i.token == token) {
        Some(i) if now.saturating_duration_since(i.created) <= lifetime => Ok(i.id),
        _ => Err(ApiError::new(401, 50027, "Invalid Webhook Token")),
    }
}

fn followup(state: &mut State, app: u64, token: &str, body: &Value, now: Instant) -> Result<Answer, ApiError> {
    let interaction = webhook_interaction(state, app, token, now)?;
    let record = &state.interactions[&interaction];
    if record.accepted().is_none() {
        return Err(ApiError::new(404, 10015, "Unknown Webhook"));
    }
    let (channel, message, user, original) = (
        record.channel_id,
        record.message_id,
        record.user_id,
        record.original_message,
    );
    let parsed = validate::message_body(body, BodyKind::InteractionMessage)?;
    let id = interaction_message(state, interaction, channel, message, user, &parsed, original);
    state
        .interactions
        .get_mut(&interaction)
        .expect("looked up above under the same lock")
        .followups
        .push(id);
    Ok(Answer::json(
        200,
        state.message(id).expect("stored just above").json.clone(),
    ))
}

fn webhook_message(
    state: &mut State,
    method: &str,
    app: u64,
    token: &str,
    message: Option<u64>,
    body: Option<&Value>,
    now: Instant,
) -> Result<Answer, ApiError> {
    let interaction = webhook_interaction(state, app, token, now)?;
    let record = &state.interactions[&interaction];
    let target = match message {
        None => record.original_message,
        Some(id) if record.followups.contains(&id) || record.original_message == Some(id) => Some(id),
        Some(_) => None,
    };
    let target = target
        .filter(|id| state.message(*id).is_some_and(|m| !m.deleted))
        .ok_or_else(unknown_message)?;
    match method {
        "GET" => Ok(Answer::json(
            200,
            state.message(target).expect("checked above").json.clone(),
        )),
        "PATCH" => {
            let parsed = validate::message_body(require_body(body)?, BodyKind::Edit)?;
            state.edit_message(target, &parsed)?;
            state.dispatch_message("MESSAGE_UPDATE", target);
            Ok(Answer::json(
                200,
                state.message(target).expect("checked above").json.clone(),
            ))
        }
        _ => {
            delete_message(state, target);
            Ok(Answer::no_content())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |m: &str, p: &str| Route::parse(m, p).map(|r| r.template(m));
        assert_eq!(r("GET", "/gateway"), Ok("GET /gateway"));
        assert_eq!(
            r("POST", "/channels/1/messages"),
            Ok("POST /channels/{channel_id}/messages")
        );
        assert_eq!(r("GET", "/channels/1/messages"), Err(true));
        assert_eq!(r("POST", "/channels/abc/messages"), Err(false));
        assert_eq!(
            r("PATCH", "/webhooks/9/tok/messages/@original"),
            Ok("PATCH /webhooks/{application_id}/{token}/messages/@original")
        );
        assert_eq!(
            r("POST", "/interactions/5/tok/callback"),
            Ok("POST /interactions/{interaction_id}/{token}/callback")
        );
        assert_eq!(r("POST", "/guilds/1/channels"), Err(false));
    }
}
