//! Outbound, the Bot Connector REST API v3: the bot's access token (client credentials,
//! cached, refreshed before it expires, sent only below the serviceUrl allowlist), posting to a
//! channel thread, starting a thread in a channel, updating an activity, Teams' rate limits
//! kept on Baton's side, and the Connector's answers mapped to [`DeliveryError`]: 429 waits for
//! its `Retry-After`, 5xx and lost connections are transient, 4xx (but 401) permanent.

use super::config::{ValidConfig, WebUrl};
use super::http::{Answer, Http, HttpError};
use super::limit::Limiter;
use crate::chat::DeliveryError;
use hyper::Method;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path segments are percent-encoded but for RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// A wait for the rate limit up to this long happens inside the delivery; longer ones hand the
/// message back to the room's queue with the time to wait.
const WAIT_INLINE: Duration = Duration::from_secs(3);

struct Token {
    value: SecretString,
    refresh_at: Instant,
}

/// The Connector client.
pub struct Connector {
    http: Http,
    cfg: Arc<ValidConfig>,
    token: tokio::sync::Mutex<Option<Token>>,
    limiter: Mutex<Limiter>,
}

/// Where an operation goes.
#[derive(Clone, Debug)]
pub enum Target<'a> {
    /// `POST v3/conversations/{id}/activities`: a message in a thread.
    Post { conversation: &'a str },
    /// `PUT v3/conversations/{id}/activities/{activity}`: replace a message.
    Update { conversation: &'a str, activity: &'a str },
    /// `POST v3/conversations`: a new thread in a channel.
    NewThread { channel: &'a str },
}

impl Target<'_> {
    fn channel(&self) -> &str {
        let id = match self {
            Target::Post { conversation } | Target::Update { conversation, .. } => conversation,
            Target::NewThread { channel } => channel,
        };
        super::activity::channel_of(id)
    }
}

/// What the Connector assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    /// The conversation the activity lives in (for a new thread: `<channel>;messageid=<id>`).
    pub conversation: String,
    pub activity: String,
}

fn transient(reason: impl Into<String>) -> DeliveryError {
    DeliveryError::transient(reason)
}

/// `Retry-After` in seconds (the form Teams uses); an HTTP date counts as five seconds.
fn retry_after(answer: &Answer) -> Duration {
    answer
        .header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)))
        .unwrap_or(Duration::from_secs(5))
}

/// The Connector's error message, if it sent one (`{"error":{"code","message"}}`).
fn reason(answer: &Answer) -> String {
    let v: Option<Value> = serde_json::from_slice(&answer.body).ok();
    let code = v
        .as_ref()
        .and_then(|v| v.pointer("/error/code"))
        .and_then(Value::as_str);
    let message = v
        .as_ref()
        .and_then(|v| v.pointer("/error/message").or_else(|| v.get("message")))
        .and_then(Value::as_str);
    let mut out = format!("HTTP {}", answer.status);
    for part in [code, message].into_iter().flatten() {
        out.push_str(": ");
        out.extend(part.chars().filter(|c| !c.is_control()).take(200));
    }
    out
}

impl Connector {
    pub fn new(http: Http, cfg: Arc<ValidConfig>) -> Connector {
        Connector {
            http,
            cfg,
            token: tokio::sync::Mutex::new(None),
            limiter: Mutex::new(Limiter::default()),
        }
    }

    /// The access token, fetched when there is none or it is due for refresh.
    async fn token(&self) -> Result<SecretString, DeliveryError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.value.clone());
        }
        let s = &self.cfg.settings;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &s.app_id)
            .append_pair("client_secret", s.app_secret.expose_secret())
            .append_pair("scope", &s.token_scope)
            .finish();
        let headers = [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )];
        let answer = self
            .http
            .call(Method::POST, &self.cfg.token, &headers, Some(form.into_bytes()))
            .await
            .map_err(|e| transient(format!("token endpoint: {e}")))?;
        if !answer.ok() {
            let v: Option<Value> = serde_json::from_slice(&answer.body).ok();
            let error = v
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            tracing::error!(status = answer.status, error = %error, "the token endpoint refused the app's credentials");
            return Err(transient(format!("token endpoint: HTTP {} ({error})", answer.status)));
        }
        let v: Value = serde_json::from_slice(&answer.body).map_err(|_| transient("token endpoint: not JSON"))?;
        let Some(token) = v.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
            return Err(transient("token endpoint: no access_token"));
        };
        let lifetime = Duration::from_secs(v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600));
        // Refresh five minutes early, or at four fifths of a short lifetime.
        let margin = (lifetime / 5).min(Duration::from_secs(300));
        let value = SecretString::from(token.to_string());
        *slot = Some(Token {
            value: value.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        tracing::debug!(expires_in = lifetime.as_secs(), "access token obtained");
        Ok(value)
    }

    /// Fetches the token now (warming it at start); failures are left to the first delivery.
    pub async fn warm(&self) {
        if let Err(e) = self.token().await {
            tracing::warn!(error = %e, "no access token yet; the first delivery tries again");
        }
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// Waits for the rate limit of the target's channel (briefly inline, else hands back).
    async fn admit(&self, channel: &str) -> Result<(), DeliveryError> {
        loop {
            let verdict = self
                .limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(channel, Instant::now());
            match verdict {
                Ok(()) => return Ok(()),
                Err(wait) if wait <= WAIT_INLINE => tokio::time::sleep(wait).await,
                Err(wait) => {
                    return Err(DeliveryError::Transient {
                        reason: "Teams' rate limit for this channel".into(),
                        retry_after: Some(wait),
                    });
                }
            }
        }
    }

    /// Sends `activity` to `target` through the Connector at `service_url`.
    pub async fn send(
        &self,
        service_url: &WebUrl,
        target: Target<'_>,
        activity: &Value,
    ) -> Result<Posted, DeliveryError> {
        let base = service_url.with_slash();
        let enc = |s: &str| utf8_percent_encode(s, SEGMENT).to_string();
        let (method, url, body) = match &target {
            Target::Post { conversation } => (
                Method::POST,
                format!("{base}v3/conversations/{}/activities", enc(conversation)),
                activity.clone(),
            ),
            Target::Update {
                conversation,
                activity: id,
            } => {
                let mut body = activity.clone();
                body["id"] = Value::String(id.to_string());
                (
                    Method::PUT,
                    format!("{base}v3/conversations/{}/activities/{}", enc(conversation), enc(id)),
                    body,
                )
            }
            Target::NewThread { channel } => (
                Method::POST,
                format!("{base}v3/conversations"),
                serde_json::json!({
                    "isGroup": true,
                    "channelData": {
                        "channel": {"id": channel},
                        "tenant": {"id": self.cfg.settings.tenant_id},
                    },
                    "activity": activity,
                }),
            ),
        };
        let url = WebUrl::parse(&url).map_err(|e| DeliveryError::Permanent { reason: e })?;
        if !self.cfg.may_receive_token(&url) {
            return Err(DeliveryError::Permanent {
                reason: format!(
                    "{} is outside the serviceUrl allowlist; the token is not sent there",
                    service_url.as_str()
                ),
            });
        }
        self.admit(target.channel()).await?;
        let token = self.token().await?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| transient("the access token is not a header value"))?;
        let headers: [(HeaderName, HeaderValue); 2] = [
            (AUTHORIZATION, bearer),
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            ),
        ];
        let started = Instant::now();
        let answer = match self
            .http
            .call(method.clone(), &url, &headers, Some(body.to_string().into_bytes()))
            .await
        {
            Ok(a) => a,
            Err(e @ (HttpError::Connect(_) | HttpError::Timeout(_) | HttpError::Body(_))) => {
                return Err(transient(format!("Teams is unreachable: {e}")));
            }
            Err(e @ HttpError::Url(_)) => return Err(DeliveryError::Permanent { reason: e.to_string() }),
        };
        tracing::debug!(method = %method, status = answer.status, elapsed_ms = started.elapsed().as_millis() as u64, "connector call");
        match answer.status {
            200..=299 => {
                let v: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
                let id = v.get("activityId").or_else(|| v.get("id")).and_then(Value::as_str);
                Ok(match (&target, id) {
                    (Target::NewThread { .. }, Some(activity)) => Posted {
                        conversation: v.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                        activity: activity.to_string(),
                    },
                    (Target::Update { conversation, activity }, _) => Posted {
                        conversation: conversation.to_string(),
                        activity: activity.to_string(),
                    },
                    (Target::Post { conversation }, Some(activity)) => Posted {
                        conversation: conversation.to_string(),
                        activity: activity.to_string(),
                    },
                    _ => return Err(transient("the Connector did not say which activity it created")),
                })
            }
            429 => Err(DeliveryError::Transient {
                reason: reason(&answer),
                retry_after: Some(retry_after(&answer)),
            }),
            401 => {
                // The token may have been revoked or expired early: get a new one next time.
                self.forget_token().await;
                Err(transient(reason(&answer)))
            }
            500..=599 | 408 => Err(transient(reason(&answer))),
            _ => Err(DeliveryError::Permanent {
                reason: reason(&answer),
            }),
        }
    }
}
