//! The messaging endpoint, `POST /api/messages`: every request is authenticated completely
//! (the Bot Connector's JWT, then the tenant, the channel and the serviceUrl) before anything
//! else happens; a refused one gets 401 (403 for an unendorsed key, a foreign tenant, a channel
//! Baton does not serve), changes nothing and calls nothing. An accepted message is handed to
//! the daemon and answered at once; a card click waits (at most `click_wait`) for Baton's
//! answer to the clicker, which becomes the invoke response.

use super::Shared;
use super::activity::{self, Activity, Incoming};
use super::auth::{self, Claimed, Expected, Refusal};
use crate::chat::{Inbound, InteractionReply, ReplyHandle, RoomRef};
use baton_policies::Platform;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming as Body};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The largest activity accepted.
const MAX_BODY: usize = 256 * 1024;
/// How long handing a message to a busy daemon may take before Teams is told to try later.
const HAND_OVER: Duration = Duration::from_secs(5);
/// How long one connection may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The invoke response types (`AdaptiveCardInvokeResponse.type`).
const MESSAGE: &str = "application/vnd.microsoft.activity.message";

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, body: Option<Value>) -> Answer {
    let mut r = Response::new(Full::new(
        body.as_ref().map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
    ));
    *r.status_mut() = status;
    if body.is_some() {
        r.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    r
}

/// A refusal: the status and a generic body (the reason is logged, not told).
fn refused(status: u16, why: &str) -> Answer {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
    warn!(status = status.as_u16(), reason = %why, "request to the messaging endpoint refused");
    let word = status.canonical_reason().unwrap_or("Refused");
    answer(
        status,
        Some(json!({"error": {"code": word.replace(' ', ""), "message": word}})),
    )
}

/// An invoke response telling the clicker `text`.
fn tell(text: &str) -> Answer {
    answer(
        StatusCode::OK,
        Some(json!({"statusCode": 200, "type": MESSAGE, "value": text})),
    )
}

/// Serves the endpoint on `listener` until `shutdown`.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, tls: Option<TlsAcceptor>, shutdown: CancellationToken) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (shared, tls) = (shared.clone(), tls.clone());
                connections.spawn(async move {
                    match tls {
                        Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => connection(shared, s).await,
                            Ok(Err(e)) => debug!(peer = %peer, error = %e, "TLS handshake failed"),
                            Err(_) => debug!(peer = %peer, "TLS handshake timed out"),
                        },
                        None => connection(shared, stream).await,
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(shared: Arc<Shared>, stream: S) {
    let service = hyper::service::service_fn(move |req: Request<Body>| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&shared, req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        debug!(error = %e, "messaging endpoint connection ended with an error");
    }
}

/// One request.
pub async fn handle(shared: &Shared, req: Request<Body>) -> Answer {
    if req.uri().path() != "/api/messages" {
        return answer(StatusCode::NOT_FOUND, None);
    }
    if req.method() != Method::POST {
        return answer(StatusCode::METHOD_NOT_ALLOWED, None);
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return refused(413, "the activity is too large"),
    };
    let authorization = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    match accept(shared, authorization, &body).await {
        Ok(activity) => dispatch(shared, activity).await,
        Err(a) => a,
    }
}

/// Authenticates and authorises a request; the activity when it passes.
async fn accept(shared: &Shared, authorization: Option<&str>, body: &[u8]) -> Result<Activity, Answer> {
    let deny = |r: Refusal| refused(r.status(), &r.to_string());
    let bearer = auth::bearer(authorization).map_err(deny)?;
    let found = match shared.keys.find(&bearer.kid).await {
        Ok(Some(found)) => found,
        Ok(None) => return Err(deny(Refusal::UnknownKey)),
        Err(r) => return Err(deny(r)),
    };
    let s = &shared.cfg.settings;
    let expected = Expected {
        issuer: &s.issuer,
        audience: &s.app_id,
        algorithms: &found.algorithms,
    };
    let claims = auth::verify(&bearer, &found.key, &expected).map_err(deny)?;
    let activity: Activity = serde_json::from_slice(body).map_err(|_| refused(400, "the body is not an activity"))?;
    let claimed = Claimed {
        service_url: activity.service_url.as_deref().unwrap_or_default(),
        channel_id: activity.channel_id.as_deref().unwrap_or_default(),
    };
    auth::binds(&claims, &found.key, claimed).map_err(deny)?;
    Ok(activity)
}

/// Acts on an authenticated activity.
async fn dispatch(shared: &Shared, a: Activity) -> Answer {
    let incoming = match activity::classify(&a, &shared.cfg) {
        Ok(i) => i,
        Err(why) => {
            // What the operator needs to allow it, if it should be (none of it is secret).
            warn!(
                tenant = a.tenant().unwrap_or("-"),
                channel = activity::channel_of(a.conversation_id().unwrap_or("-")),
                service_url = a.service_url.as_deref().unwrap_or("-"),
                "an authenticated activity from outside the configured tenants, channels or serviceUrls"
            );
            return refused(403, &why.to_string());
        }
    };
    shared.seen(&a);
    match incoming {
        Incoming::Ignored(why) => {
            debug!(kind = %a.kind, why, "activity ignored");
            answer(StatusCode::OK, None)
        }
        Incoming::UnknownButton { invoke } => {
            info!(id = ?a.id, "a button that is not one of Baton's");
            if invoke {
                tell("This button is not one of Baton's, or its card is out of date.")
            } else {
                answer(StatusCode::OK, None)
            }
        }
        Incoming::Text {
            conversation,
            sender,
            text,
            id,
        } => {
            info!(conversation = %conversation, id = %id, "message received");
            let m = Inbound::text(RoomRef::new(Platform::Teams, conversation), sender, text, id);
            match shared.hand_over(m, HAND_OVER).await {
                true => answer(StatusCode::OK, None),
                false => refused(503, "Baton is not taking messages"),
            }
        }
        Incoming::Button {
            conversation,
            sender,
            intent,
            id,
            invoke,
        } => {
            info!(conversation = %conversation, id = %id, run = %intent.run(), verb = intent.verb(), invoke, "card button pressed");
            let mut m = Inbound::text(RoomRef::new(Platform::Teams, conversation), sender, "", id);
            m.button = Some(intent.clone());
            if !invoke {
                // Action.Submit: no answer to the clicker; the room shows the outcome.
                return match shared.hand_over(m, HAND_OVER).await {
                    true => answer(StatusCode::OK, None),
                    false => refused(503, "Baton is not taking messages"),
                };
            }
            let wait = shared.cfg.settings.click_wait;
            let (handle, reply) = ReplyHandle::new(tokio::time::Instant::now() + wait);
            m.reply = Some(handle);
            if !shared.hand_over(m, HAND_OVER.min(wait)).await {
                return refused(503, "Baton is not taking messages");
            }
            match tokio::time::timeout(wait, reply).await {
                Ok(Ok(InteractionReply::Refused(why))) => tell(&why.plain()),
                Ok(Ok(InteractionReply::Accepted(Some(card)))) => answer(
                    StatusCode::OK,
                    Some(json!({
                        "statusCode": 200,
                        "type": super::card::CONTENT_TYPE,
                        "value": super::card::adaptive_card(&card, None),
                    })),
                ),
                Ok(Ok(InteractionReply::Accepted(None))) => tell("Done; the channel shows the outcome."),
                Ok(Err(_)) | Err(_) => tell("Baton is still working on it; the channel will show the outcome."),
            }
        }
    }
}
