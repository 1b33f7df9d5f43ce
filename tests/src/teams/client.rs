//! The Teams side of an inbound request: POSTs a signed activity to the bot's messaging
//! endpoint (`/api/messages`) the way the Bot Connector does, and reads the bot's answer.

use super::http;
use super::tokens::BadToken;
use anyhow::{Context, Result};
use hyper::Method;
use serde_json::Value;
use std::time::Duration;

/// How long the Bot Framework waits for a bot's answer before it gives up (about 15 s).
pub const BOT_TIMEOUT: Duration = Duration::from_secs(15);

/// The `Authorization` header a request to the bot carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A valid Bot Connector token from the stand-in's current signing key.
    Valid,
    /// One of the bad tokens a validator must refuse.
    Bad(BadToken),
    /// This exact header value (e.g. `Bearer <token signed with a removed key>`).
    Header(String),
}

/// The bot's answer to one activity.
#[derive(Debug, Clone)]
pub struct BotReply {
    pub status: u16,
    /// `Content-Type` of the answer.
    pub content_type: Option<String>,
    /// The body as JSON, when it is JSON. For an `adaptiveCard/action` invoke this is the
    /// invoke response `{"statusCode":…,"type":…,"value":…}`.
    pub body: Option<Value>,
    /// The body as text.
    pub text: String,
}

impl BotReply {
    /// `body.type` of an invoke response (`application/vnd.microsoft.card.adaptive`,
    /// `application/vnd.microsoft.activity.message`, `application/vnd.microsoft.error`).
    pub fn invoke_type(&self) -> Option<&str> {
        self.body.as_ref()?.get("type")?.as_str()
    }

    /// `body.value` of an invoke response (the new card, the message text, or the error).
    pub fn invoke_value(&self) -> Option<&Value> {
        self.body.as_ref()?.get("value")
    }
}

/// POSTs `activity` to `endpoint` with `authorization` (None sends no header) and reads the
/// answer within [`BOT_TIMEOUT`].
pub(crate) async fn post(endpoint: &str, activity: &Value, authorization: Option<&str>) -> Result<BotReply> {
    let body = serde_json::to_vec(activity).expect("a JSON value always serialises");
    let mut headers = vec![("content-type", "application/json; charset=utf-8")];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    let response = http::request(Method::POST, endpoint, &headers, body, BOT_TIMEOUT)
        .await
        .with_context(|| format!("posting a {} activity to the bot at {endpoint}", activity["type"]))?;
    Ok(BotReply {
        status: response.status,
        content_type: response.header("content-type").map(str::to_string),
        body: response.json(),
        text: response.text(),
    })
}
