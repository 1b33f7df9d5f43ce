//! The gateway half: a plain `ws://` websocket speaking Discord's JSON text frames. HELLO on
//! connect; IDENTIFY checked (token, intents against the known and the enabled privileged ones,
//! properties, shard) and answered with READY and GUILD_CREATE; heartbeats acknowledged; RESUME
//! replays what the session missed after `seq`, then RESUMED, or answers INVALID_SESSION; the
//! driver can close a connection (close code, bare TCP close, or RECONNECT) and hold new
//! connections back. Every frame both ways is recorded.

use super::config::intents;
use super::objects;
use super::state::{
    Closed, ConnCmd, ConnLink, Connection, Direction, GatewayFrame, Identify, Resume, Session, Shared, State,
};
use futures::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::Value;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

/// Path of the URL `GET /gateway` gives.
pub(super) const GATEWAY_PATH: &str = "/gw";
/// Path of READY's `resume_gateway_url`, distinct so tests can tell where a client resumed.
pub(super) const RESUME_PATH: &str = "/resume";

/// Accepts gateway connections on `listener` until `cancel`.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let tcp = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        tokio::spawn(connection(tcp, shared.clone(), cancel.clone()));
    }
}

// The handshake callback's error type is tungstenite's `ErrorResponse`, large by its design.
#[allow(clippy::result_large_err)]
async fn connection(tcp: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    // While the driver holds the gateway, a connection waits here before its handshake.
    let mut hold = shared.hold.subscribe();
    while *hold.borrow_and_update() {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = hold.changed() => if changed.is_err() { return },
        }
    }
    let mut target = String::new();
    let handshake = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
        target = req.uri().to_string();
        let path = req.uri().path();
        if path == GATEWAY_PATH || path == RESUME_PATH {
            Ok(resp)
        } else {
            let mut refused = ErrorResponse::new(Some("not a gateway path".to_string()));
            *refused.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
            Err(refused)
        }
    });
    let Ok(ws) = handshake.await else { return };
    let (tx, mut rx) = mpsc::unbounded_channel::<ConnCmd>();
    let id = shared.with(|s| {
        let id = s.connections.len() as u64 + 1;
        s.connections.push(Connection {
            id,
            target: target.clone(),
            opened: SystemTime::now(),
            closed: None,
        });
        id
    });
    let (mut sink, mut stream) = ws.split();

    match query_problem(&target) {
        Some((code, reason)) => {
            let _ = tx.send(ConnCmd::Close(code, reason.to_string()));
        }
        None => {
            let interval = shared.read(|s| s.cfg.heartbeat_interval.as_millis() as u64);
            let _ = tx.send(ConnCmd::Frame(objects::hello(interval)));
        }
    }

    let mut identified = false;
    let mut closed = Closed::Lost;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            cmd = rx.recv() => match cmd {
                Some(ConnCmd::Frame(v)) => {
                    shared.with(|s| s.frames.push(GatewayFrame { at: SystemTime::now(), connection: id, direction: Direction::ToClient, payload: v.clone() }));
                    if sink.send(Message::Text(v.to_string())).await.is_err() {
                        break;
                    }
                }
                Some(ConnCmd::Close(code, reason)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.clone().into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    closed = Closed::ByStandIn { code, reason };
                    break;
                }
                Some(ConnCmd::Abort) | None => {
                    closed = Closed::DroppedByStandIn;
                    break;
                }
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    shared.with(|s| handle_text(s, id, &tx, &text, &mut identified));
                }
                Some(Ok(Message::Binary(_))) => {
                    let _ = tx.send(ConnCmd::Close(4002, "Error while decoding payload.".to_string()));
                }
                Some(Ok(Message::Close(frame))) => {
                    closed = Closed::ByClient { code: frame.map(|f| u16::from(f.code)) };
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    drop(sink);
    shared.with(|s| connection_ended(s, id, closed));
}

/// What is wrong with the connection URL's query, as Discord would close for it.
fn query_problem(target: &str) -> Option<(u16, &'static str)> {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    };
    if param("v") != Some("10") {
        return Some((4012, "Invalid API version."));
    }
    if param("encoding").is_some_and(|e| e != "json") {
        return Some((4002, "the Discord stand-in speaks encoding=json only"));
    }
    if param("compress").is_some() {
        return Some((4000, "the Discord stand-in does not model transport compression"));
    }
    None
}

fn connection_ended(s: &mut State, id: u64, closed: Closed) {
    // Discord ends a session when the client closes with 1000 or 1001.
    let clean_client_close = matches!(
        closed,
        Closed::ByClient {
            code: Some(1000 | 1001)
        }
    );
    if let Some(c) = s.connections.iter_mut().find(|c| c.id == id)
        && c.closed.is_none()
    {
        c.closed = Some(closed);
    }
    if let Some(session) = s.session.as_mut()
        && session.conn.as_ref().is_some_and(|l| l.id == id)
    {
        session.conn = None;
        if clean_client_close {
            session.resumable = false;
        }
    }
}

fn handle_text(s: &mut State, id: u64, tx: &mpsc::UnboundedSender<ConnCmd>, text: &str, identified: &mut bool) {
    let payload: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            let _ = tx.send(ConnCmd::Close(4002, "Error while decoding payload.".to_string()));
            return;
        }
    };
    s.frames.push(GatewayFrame {
        at: SystemTime::now(),
        connection: id,
        direction: Direction::FromClient,
        payload: payload.clone(),
    });
    let d = payload.get("d").cloned().unwrap_or(Value::Null);
    match payload.get("op").and_then(Value::as_u64) {
        Some(1) => {
            let _ = tx.send(ConnCmd::Frame(objects::heartbeat_ack()));
        }
        Some(2) => match identify(s, id, tx, &d, *identified) {
            Ok(()) => *identified = true,
            Err((code, reason)) => {
                let _ = tx.send(ConnCmd::Close(code, reason.to_string()));
            }
        },
        Some(6) => match resume(s, id, tx, &d, *identified) {
            Ok(true) => *identified = true,
            Ok(false) => {}
            Err((code, reason)) => {
                let _ = tx.send(ConnCmd::Close(code, reason.to_string()));
            }
        },
        Some(3 | 4 | 8) if *identified => {}
        Some(3 | 4 | 8) => {
            let _ = tx.send(ConnCmd::Close(4003, "Not authenticated.".to_string()));
        }
        _ => {
            let _ = tx.send(ConnCmd::Close(4001, "Unknown opcode.".to_string()));
        }
    }
}

fn token_ok(s: &State, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    given.strip_prefix("Bot ").unwrap_or(given) == s.cfg.token
}

fn identify(
    s: &mut State,
    id: u64,
    tx: &mpsc::UnboundedSender<ConnCmd>,
    d: &Value,
    already: bool,
) -> Result<(), (u16, &'static str)> {
    let mut record = Identify {
        connection: id,
        token: d.get("token").and_then(Value::as_str).unwrap_or("").to_string(),
        intents: d.get("intents").and_then(Value::as_u64),
        properties: d.get("properties").cloned().unwrap_or(Value::Null),
        compress: d.get("compress").and_then(Value::as_bool),
        large_threshold: d.get("large_threshold").and_then(Value::as_u64),
        shard: d.get("shard").cloned(),
        presence: d.get("presence").cloned(),
        outcome: Err(0),
    };
    let verdict = check_identify(s, d, already);
    let intents_asked = record.intents.unwrap_or(0);
    match verdict {
        Err((code, reason)) => {
            record.outcome = Err(code);
            s.identifies.push(record);
            Err((code, reason))
        }
        Ok(()) => {
            let session_id: String = {
                let mut rng = rand::rng();
                (0..32).map(|_| format!("{:x}", rng.random_range(0..16u8))).collect()
            };
            record.outcome = Ok(session_id.clone());
            s.identifies.push(record);
            s.session = Some(Session {
                id: session_id.clone(),
                intents: intents_asked,
                seq: 0,
                log: Vec::new(),
                conn: Some(ConnLink { id, tx: tx.clone() }),
                resumable: true,
            });
            let ready = objects::ready(&s.cfg, &session_id, &s.resume_url, [0, 1]);
            s.dispatch("READY", ready, 0);
            let threads: Vec<Value> = s.threads.values().map(objects::thread_channel).collect();
            let guild = objects::guild_create(&s.cfg, &s.joined_at, &threads);
            s.dispatch("GUILD_CREATE", guild, intents::GUILDS);
            Ok(())
        }
    }
}

fn check_identify(s: &State, d: &Value, already: bool) -> Result<(), (u16, &'static str)> {
    if already {
        return Err((4005, "Already authenticated."));
    }
    if !d.is_object() {
        return Err((4002, "Error while decoding payload."));
    }
    if !token_ok(s, d.get("token").and_then(Value::as_str)) {
        return Err((4004, "Authentication failed."));
    }
    let properties_ok = ["os", "browser", "device"].iter().all(|k| {
        d.get("properties")
            .and_then(|p| p.get(*k))
            .is_some_and(Value::is_string)
    });
    if !properties_ok {
        return Err((4002, "Error while decoding payload."));
    }
    let Some(asked) = d.get("intents").and_then(Value::as_u64) else {
        return Err((4013, "Invalid intent(s)."));
    };
    if asked & !intents::KNOWN != 0 {
        return Err((4013, "Invalid intent(s)."));
    }
    if asked & intents::PRIVILEGED & !s.cfg.privileged_intents_enabled != 0 {
        return Err((4014, "Disallowed intent(s)."));
    }
    if let Some(shard) = d.get("shard").filter(|v| !v.is_null()) {
        let pair = shard
            .as_array()
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)));
        match pair {
            Some((0, 1)) => {}
            _ => return Err((4010, "Invalid shard.")),
        }
    }
    Ok(())
}

/// `Ok(true)`: resumed; `Ok(false)`: answered INVALID_SESSION.
fn resume(
    s: &mut State,
    id: u64,
    tx: &mpsc::UnboundedSender<ConnCmd>,
    d: &Value,
    already: bool,
) -> Result<bool, (u16, &'static str)> {
    let session_id = d.get("session_id").and_then(Value::as_str).unwrap_or("").to_string();
    let seq = d.get("seq").and_then(Value::as_u64);
    let mut record = Resume {
        connection: id,
        session_id: session_id.clone(),
        seq,
        replayed: None,
    };
    if already {
        s.resumes.push(record);
        return Err((4005, "Already authenticated."));
    }
    if !token_ok(s, d.get("token").and_then(Value::as_str)) {
        s.resumes.push(record);
        return Err((4004, "Authentication failed."));
    }
    let usable = s
        .session
        .as_ref()
        .is_some_and(|sess| sess.id == session_id && sess.resumable);
    let last = s.session.as_ref().map(|sess| sess.seq).unwrap_or(0);
    if !usable {
        s.resumes.push(record);
        let _ = tx.send(ConnCmd::Frame(objects::invalid_session(false)));
        return Ok(false);
    }
    let from = seq.unwrap_or(0);
    if from > last {
        s.resumes.push(record);
        return Err((4007, "Invalid seq."));
    }
    let session = s.session.as_mut().expect("checked usable above under the same lock");
    // A connection still attached (the client did not notice it died) is cut loose.
    if let Some(old) = session.conn.take() {
        let _ = old.tx.send(ConnCmd::Abort);
    }
    let missed: Vec<(u64, Value)> = session.log.iter().filter(|(n, _)| *n > from).cloned().collect();
    for (_, frame) in &missed {
        let _ = tx.send(ConnCmd::Frame(frame.clone()));
    }
    session.conn = Some(ConnLink { id, tx: tx.clone() });
    record.replayed = Some(missed.iter().map(|(n, _)| *n).collect());
    s.resumes.push(record);
    s.dispatch("RESUMED", objects::resumed(), 0);
    Ok(true)
}

/// How the driver ends the current gateway connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropMode {
    /// A close frame with this code (4000 "Unknown error" is resumable; 1000/1001 from a server
    /// are too, for serenity).
    Close(u16),
    /// End the TCP connection without a close frame.
    Tcp,
    /// Send op 7 RECONNECT and let the client close and resume.
    Reconnect,
}

/// Detaches the session's connection and ends it as `mode` says. Returns false when no
/// connection was attached.
pub(super) fn drop_connection(s: &mut State, mode: DropMode) -> bool {
    let Some(link) = s.session.as_mut().and_then(|sess| sess.conn.take()) else {
        return false;
    };
    let cmd = match mode {
        DropMode::Close(code) => ConnCmd::Close(code, "stand-in dropped the connection".to_string()),
        DropMode::Tcp => ConnCmd::Abort,
        DropMode::Reconnect => ConnCmd::Frame(objects::reconnect()),
    };
    link.tx.send(cmd).is_ok()
}

/// Asks the connected client for an immediate heartbeat (op 1).
pub(super) fn request_heartbeat(s: &mut State) -> bool {
    match s.session.as_ref().and_then(|sess| sess.conn.as_ref()) {
        Some(link) => link.tx.send(ConnCmd::Frame(objects::heartbeat_request())).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_urls() {
        assert_eq!(query_problem("/gw?v=10"), None);
        assert_eq!(query_problem("/gw?v=10&encoding=json"), None);
        assert_eq!(query_problem("/gw").map(|p| p.0), Some(4012));
        assert_eq!(query_problem("/gw?v=9").map(|p| p.0), Some(4012));
        assert_eq!(query_problem("/gw?v=10&encoding=etf").map(|p| p.0), Some(4002));
        assert_eq!(query_problem("/gw?v=10&compress=zlib-stream").map(|p| p.0), Some(4000));
    }
}
