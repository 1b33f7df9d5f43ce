//! The stand-in Bot Connector at `http://127.0.0.1:<port>/teams/`: the v3 conversation routes
//! a Teams bot calls, each call recorded with its headers and body, every activity's latest
//! state after updates, strict checks of token, content type, conversation and activity ids,
//! fault injection, and waits on the record.

use super::Directory;
use super::http::{self, Changes, Fault, Faults, Reply, Request, Times};
use super::login::Login;
use anyhow::{Result, anyhow};
use hyper::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The path prefix of the Connector; the serviceUrl is `http://127.0.0.1:<port>/teams/`.
pub const BASE_PATH: &str = "/teams";
/// The largest activity body Teams accepts (msteams-docs: messages over 28 KB get 413).
pub const MAX_MESSAGE_BYTES: usize = 28 * 1024;
/// The content type of Adaptive Card attachments.
pub const ADAPTIVE_CARD: &str = "application/vnd.microsoft.card.adaptive";

/// Which Connector operation a call was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `POST /v3/conversations/{id}/activities`
    SendToConversation,
    /// `POST /v3/conversations/{id}/activities/{activityId}`
    ReplyToActivity,
    /// `PUT /v3/conversations/{id}/activities/{activityId}`
    UpdateActivity,
    /// `POST /v3/conversations` (a new thread in a channel)
    CreateConversation,
    /// Anything else (answered 404 or 405).
    Other,
}

/// One request the Connector received, as recorded.
#[derive(Debug, Clone)]
pub struct Call {
    /// 0, 1, 2… in arrival order.
    pub seq: usize,
    pub at: Instant,
    pub method: String,
    /// The path as received (still percent-encoded), e.g. `/teams/v3/conversations/19%3A…/activities`.
    pub path: String,
    pub kind: CallKind,
    /// The conversation id from the path, percent-decoded.
    pub conversation_id: Option<String>,
    /// The activity id from the path, percent-decoded.
    pub activity_id: Option<String>,
    /// Every header, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// The body parsed as JSON, if it is JSON.
    pub body: Option<Value>,
    /// The body as text (lossy).
    pub raw_body: String,
    /// The answer's status; None when a fault closed the connection.
    pub status: Option<u16>,
    /// The answer's JSON body.
    pub response: Option<Value>,
    /// The fault that answered this call, if one did.
    pub fault: Option<Fault>,
    /// The activity this call created or updated, when it succeeded.
    pub result_activity_id: Option<String>,
}

impl Call {
    /// Whether the Connector accepted the call (2xx).
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The activity the call carried: the body, or `body.activity` for a new conversation.
    pub fn activity(&self) -> Option<&Value> {
        match self.kind {
            CallKind::CreateConversation => self.body.as_ref().and_then(|b| b.get("activity")),
            _ => self.body.as_ref(),
        }
    }

    /// The carried activity's `text`.
    pub fn text(&self) -> Option<&str> {
        self.activity().and_then(|a| a.get("text")).and_then(Value::as_str)
    }

    /// The Adaptive Cards (attachment `content`s) the carried activity holds.
    pub fn adaptive_cards(&self) -> Vec<Value> {
        self.activity().map(adaptive_cards).unwrap_or_default()
    }

    /// A one-line summary for failure messages.
    pub fn summary(&self) -> String {
        let status = self.status.map_or("closed".to_string(), |s| s.to_string());
        let text = self
            .text()
            .map(|t| {
                let short: String = t.chars().take(80).collect();
                let more = if short.len() < t.len() { "…" } else { "" };
                format!(" text={short:?}{more}")
            })
            .unwrap_or_default();
        let cards = match self.adaptive_cards().len() {
            0 => String::new(),
            n => format!(" cards={n}"),
        };
        format!("#{} {} {} -> {status}{text}{cards}", self.seq, self.method, self.path)
    }
}

/// The Adaptive Cards in an activity's attachments.
pub fn adaptive_cards(activity: &Value) -> Vec<Value> {
    activity
        .get("attachments")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|a| a.get("contentType").and_then(Value::as_str) == Some(ADAPTIVE_CARD))
                .filter_map(|a| a.get("content").cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// An activity the bot posted, with every version of it (the post, then each update).
#[derive(Debug, Clone)]
pub struct ActivityState {
    /// The id the Connector gave it.
    pub id: String,
    /// The conversation it was posted to (percent-decoded), e.g. `19:…@thread.tacv2;messageid=…`.
    pub conversation_id: String,
    /// How it was created.
    pub created_by: CallKind,
    /// The posted activity, then each PUT body, in order.
    pub versions: Vec<Value>,
}

impl ActivityState {
    /// What the message looks like now.
    pub fn latest(&self) -> &Value {
        self.versions
            .last()
            .expect("an activity state is created with its first version")
    }

    /// The latest `text`.
    pub fn text(&self) -> Option<&str> {
        self.latest().get("text").and_then(Value::as_str)
    }

    /// The latest Adaptive Cards.
    pub fn adaptive_cards(&self) -> Vec<Value> {
        adaptive_cards(self.latest())
    }

    /// How many times it was updated.
    pub fn updates(&self) -> usize {
        self.versions.len() - 1
    }
}

#[derive(Default)]
struct Record {
    calls: Vec<Call>,
    activities: Vec<ActivityState>,
}

struct Inner {
    service_url: String,
    directory: Arc<Directory>,
    login: Login,
    record: Mutex<Record>,
    changes: Changes,
    faults: Faults,
}

/// The Connector. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

impl Connector {
    /// Binds the listener; the serviceUrl is known before the server starts.
    pub(crate) async fn bind() -> Result<(tokio::net::TcpListener, String)> {
        let (listener, address) = http::bind_loopback().await?;
        Ok((listener, format!("http://{address}{BASE_PATH}/")))
    }

    pub(crate) fn start(
        listener: tokio::net::TcpListener,
        service_url: String,
        directory: Arc<Directory>,
        login: Login,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Connector {
        let inner = Arc::new(Inner {
            service_url,
            directory,
            login,
            record: Mutex::new(Record::default()),
            changes: Changes::default(),
            faults: Faults::default(),
        });
        let served = inner.clone();
        let handler: http::Handler = Arc::new(move |req| {
            let inner = served.clone();
            Box::pin(async move { inner.handle(req) })
        });
        tokio::spawn(http::serve(listener, shutdown, handler));
        Connector { inner }
    }

    /// `http://127.0.0.1:<port>/teams/`, the `serviceUrl` of every activity the stand-in sends.
    pub fn service_url(&self) -> &str {
        &self.inner.service_url
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().calls.clone()
    }

    /// Every activity the bot posted, in creation order, each at its latest version.
    pub fn activities(&self) -> Vec<ActivityState> {
        self.inner.lock().activities.clone()
    }

    /// The activity with this id, if the bot posted it.
    pub fn activity(&self, id: &str) -> Option<ActivityState> {
        self.inner.lock().activities.iter().find(|a| a.id == id).cloned()
    }

    /// Waits until `predicate` over the recorded calls yields a value, re-checking on every new
    /// call (no polling). The error lists the calls seen.
    pub async fn wait_for<T>(&self, predicate: impl FnMut(&[Call]) -> Option<T>, timeout: Duration) -> Result<T> {
        let mut predicate = predicate;
        let found = self
            .inner
            .changes
            .wait(timeout, || predicate(&self.inner.lock().calls))
            .await;
        found.ok_or_else(|| anyhow!("condition not met within {timeout:?}; calls:\n{}", self.describe()))
    }

    /// Waits until at least `n` calls have arrived; returns all calls.
    pub async fn wait_for_calls(&self, n: usize, timeout: Duration) -> Result<Vec<Call>> {
        self.wait_for(|calls| (calls.len() >= n).then(|| calls.to_vec()), timeout)
            .await
    }

    /// Waits until some posted activity, at its latest version, satisfies `predicate`; returns
    /// it ("what does the card look like now").
    pub async fn wait_for_activity(
        &self,
        predicate: impl FnMut(&ActivityState) -> bool,
        timeout: Duration,
    ) -> Result<ActivityState> {
        let mut predicate = predicate;
        let found = self
            .inner
            .changes
            .wait(timeout, || {
                self.inner.lock().activities.iter().find(|a| predicate(a)).cloned()
            })
            .await;
        found.ok_or_else(|| anyhow!("no activity matched within {timeout:?}; calls:\n{}", self.describe()))
    }

    /// The recorded calls, one summary line each.
    pub fn describe(&self) -> String {
        let record = self.inner.lock();
        if record.calls.is_empty() {
            return "  (none)".to_string();
        }
        record
            .calls
            .iter()
            .map(|c| format!("  {}", c.summary()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The most successful calls made to one thread (conversation id without `;messageid=`)
    /// within any `window`, e.g. to check the bot stays under Teams' 7 per second.
    pub fn busiest(&self, window: Duration) -> usize {
        let record = self.inner.lock();
        let mut best = 0;
        let ok: Vec<&Call> = record.calls.iter().filter(|c| c.succeeded()).collect();
        for (i, first) in ok.iter().enumerate() {
            let thread = first.conversation_id.as_deref().map(thread_of);
            let n = ok[i..]
                .iter()
                .take_while(|c| c.at.duration_since(first.at) < window)
                .filter(|c| c.conversation_id.as_deref().map(thread_of) == thread)
                .count();
            best = best.max(n);
        }
        best
    }

    /// Answers the next calls with `fault` (before routing and authentication).
    pub fn inject(&self, fault: Fault, times: Times) {
        self.inner.faults.inject(fault, times);
    }

    /// Serves normally again.
    pub fn clear_faults(&self) {
        self.inner.faults.clear();
    }

    /// The message `id` is gone from its conversation (deleted in Teams): updates of it are
    /// answered 404 `ActivityNotFoundInConversation` from now on. False when there was no such
    /// message.
    pub fn delete_activity(&self, id: &str) -> bool {
        let mut record = self.inner.lock();
        let before = record.activities.len();
        record.activities.retain(|a| a.id != id);
        before != record.activities.len()
    }
}

/// A conversation id without its `;messageid=…` suffix: the channel.
pub fn thread_of(conversation_id: &str) -> &str {
    conversation_id.split(';').next().unwrap_or(conversation_id)
}

fn decode(segment: &str) -> Option<String> {
    percent_decode_str(segment).decode_utf8().ok().map(|s| s.into_owned())
}

fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    (status, json!({"error": {"code": code, "message": message}}))
}

/// The route of a path below the Connector's base: kind, conversation id, activity id.
fn route(method: &Method, path: &str) -> (CallKind, Option<String>, Option<String>) {
    let Some(rest) = path.strip_prefix(BASE_PATH) else {
        return (CallKind::Other, None, None);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["", "v3", "conversations"]) => (CallKind::CreateConversation, None, None),
        (&Method::POST, ["", "v3", "conversations", conv, "activities"]) if !conv.is_empty() => {
            (CallKind::SendToConversation, decode(conv), None)
        }
        (m, ["", "v3", "conversations", conv, "activities", id]) if !conv.is_empty() && !id.is_empty() => {
            let kind = match *m {
                Method::POST => CallKind::ReplyToActivity,
                Method::PUT => CallKind::UpdateActivity,
                _ => CallKind::Other,
            };
            (kind, decode(conv), decode(id))
        }
        _ => (CallKind::Other, None, None),
    }
}

/// Checks an activity the bot sends: an object with a `type`; a message has text or
/// attachments; Adaptive Card attachments hold an `AdaptiveCard` with a version.
fn check_activity(activity: &Value) -> Result<(), String> {
    let Some(object) = activity.as_object() else {
        return Err("the activity must be a JSON object".into());
    };
    let Some(kind) = object.get("type").and_then(Value::as_str) else {
        return Err("the activity has no 'type'".into());
    };
    if kind != "message" {
        return Ok(());
    }
    let text = object
        .get("text")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.trim().is_empty());
    let attachments = match object.get("attachments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err("'attachments' must be an array".into()),
    };
    if !text && attachments.is_empty() {
        return Err("a message needs text or attachments".into());
    }
    for a in &attachments {
        let Some(content_type) = a.get("contentType").and_then(Value::as_str) else {
            return Err("an attachment has no 'contentType'".into());
        };
        if content_type == ADAPTIVE_CARD {
            let content = a.get("content");
            if content.and_then(|c| c.get("type")).and_then(Value::as_str) != Some("AdaptiveCard") {
                return Err("an Adaptive Card attachment's content must have type 'AdaptiveCard'".into());
            }
            if content.and_then(|c| c.get("version")).and_then(Value::as_str).is_none() {
                return Err("an Adaptive Card must state its 'version'".into());
            }
        }
    }
    Ok(())
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record
            .lock()
            .expect("no code panics while holding the connector record")
    }

    fn handle(&self, req: Request) -> Reply {
        let (kind, conversation_id, activity_id) = route(&req.method, &req.path);
        let mut call = Call {
            seq: 0,
            at: Instant::now(),
            method: req.method.to_string(),
            path: req.path.clone(),
            kind,
            conversation_id,
            activity_id,
            headers: req
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            authorization: req.header("authorization").map(str::to_string),
            body: serde_json::from_slice(&req.body).ok(),
            raw_body: String::from_utf8_lossy(&req.body).into_owned(),
            status: None,
            response: None,
            fault: None,
            result_activity_id: None,
        };
        let reply = if let Some(fault) = self.faults.take() {
            call.fault = Some(fault);
            call.status = match fault {
                Fault::Unavailable => Some(503),
                Fault::TooManyRequests { .. } => Some(429),
                Fault::CloseConnection => None,
            };
            Faults::reply(fault)
        } else {
            let (status, body) = self.serve(&req, &mut call);
            call.status = Some(status.as_u16());
            call.response = Some(body.clone());
            Reply::json(status, &body)
        };
        {
            let mut record = self.lock();
            call.seq = record.calls.len();
            record.calls.push(call);
        }
        self.changes.bump();
        reply
    }

    /// Checks and applies one call; returns the answer.
    fn serve(&self, req: &Request, call: &mut Call) -> (StatusCode, Value) {
        if call.kind == CallKind::Other {
            return if route(&Method::POST, &req.path).0 != CallKind::Other
                || route(&Method::PUT, &req.path).0 != CallKind::Other
            {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "method not allowed on this route",
                )
            } else {
                error(StatusCode::NOT_FOUND, "NotFound", "no such Connector route")
            };
        }
        let bearer = call.authorization.as_deref().and_then(|v| v.strip_prefix("Bearer "));
        if !bearer.is_some_and(|t| self.login.is_current(t)) {
            return (
                StatusCode::UNAUTHORIZED,
                json!({"message": "Authorization has been denied for this request."}),
            );
        }
        let json_type = req
            .header("content-type")
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        if !json_type {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "the body must be application/json",
            );
        }
        if req.body.len() > MAX_MESSAGE_BYTES {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "MessageSizeTooBig",
                "the message exceeds 28 KB",
            );
        }
        let Some(body) = call.body.clone() else {
            return error(StatusCode::BAD_REQUEST, "BadSyntax", "the body is not JSON");
        };
        match call.kind {
            CallKind::CreateConversation => self.create_conversation(&body, call),
            CallKind::SendToConversation | CallKind::ReplyToActivity => self.post(&body, call),
            CallKind::UpdateActivity => self.update(&body, call),
            CallKind::Other => unreachable!("handled above"),
        }
    }

    fn post(&self, body: &Value, call: &mut Call) -> (StatusCode, Value) {
        let conversation = call.conversation_id.clone().unwrap_or_default();
        if !self.directory.knows_conversation(&conversation) {
            return error(StatusCode::NOT_FOUND, "ConversationNotFound", "Conversation not found.");
        }
        if let Err(why) = check_activity(body) {
            return error(StatusCode::BAD_REQUEST, "BadArgument", &why);
        }
        let id = self.directory.next_activity_id();
        let mut stored = body.clone();
        stored["id"] = json!(id);
        self.lock().activities.push(ActivityState {
            id: id.clone(),
            conversation_id: conversation,
            created_by: call.kind,
            versions: vec![stored],
        });
        call.result_activity_id = Some(id.clone());
        (StatusCode::CREATED, json!({ "id": id }))
    }

    fn update(&self, body: &Value, call: &mut Call) -> (StatusCode, Value) {
        let conversation = call.conversation_id.clone().unwrap_or_default();
        let id = call.activity_id.clone().unwrap_or_default();
        if !self.directory.knows_conversation(&conversation) {
            return error(StatusCode::NOT_FOUND, "ConversationNotFound", "Conversation not found.");
        }
        if let Err(why) = check_activity(body) {
            return error(StatusCode::BAD_REQUEST, "BadArgument", &why);
        }
        let mut stored = body.clone();
        stored["id"] = json!(id);
        let mut record = self.lock();
        let state = record
            .activities
            .iter_mut()
            .find(|a| a.id == id && thread_of(&a.conversation_id) == thread_of(&conversation));
        let Some(state) = state else {
            return error(
                StatusCode::NOT_FOUND,
                "ActivityNotFoundInConversation",
                "The activity was not found in this conversation, or it is not the bot's.",
            );
        };
        state.versions.push(stored);
        call.result_activity_id = Some(id.clone());
        (StatusCode::OK, json!({ "id": id }))
    }

    fn create_conversation(&self, body: &Value, call: &mut Call) -> (StatusCode, Value) {
        let Some(channel) = body
            .pointer("/channelData/channel/id")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "BadArgument",
                "channelData.channel.id is required to start a thread in a channel",
            );
        };
        if !self.directory.knows_conversation(&channel) || channel.contains(';') {
            return error(StatusCode::NOT_FOUND, "ConversationNotFound", "Channel not found.");
        }
        let Some(activity) = body.get("activity") else {
            return error(StatusCode::BAD_REQUEST, "BadArgument", "'activity' is required");
        };
        if let Err(why) = check_activity(activity) {
            return error(StatusCode::BAD_REQUEST, "BadArgument", &why);
        }
        let id = self.directory.next_activity_id();
        let conversation = format!("{channel};messageid={id}");
        let mut stored = activity.clone();
        stored["id"] = json!(id);
        self.lock().activities.push(ActivityState {
            id: id.clone(),
            conversation_id: conversation.clone(),
            created_by: CallKind::CreateConversation,
            versions: vec![stored],
        });
        call.conversation_id = Some(conversation.clone());
        call.result_activity_id = Some(id.clone());
        (StatusCode::CREATED, json!({ "id": conversation, "activityId": id }))
    }
}
