//! The versioned bot↔agent wire protocol: the only serde surface between `baton` and
//! `baton-agent`. Every type has its encoder and decoder here, so the two sides cannot drift.
//!
//! Exchanges (HTTPS with mutual TLS, JSON bodies):
//! - `GET /v1/health` answers [`Health`].
//! - `POST /v1/actions` takes an [`ActionCall`] and answers an [`ActionAnswer`]: the final result,
//!   or `running`. Polling is sending the same call again: the idempotency key makes that safe.
//! - Refusals answer an [`ErrorBody`] with a 4xx/5xx status ([`ErrorKind::status`]).
//!
//! Decoding is strict: unknown fields are rejected, every parameter is a validated type, and
//! every string of an action is checked once more against [`check_text`] (length, characters)
//! so that no shell or PowerShell metacharacter can reach an executor.

use crate::action::IdempotencyKey;
use crate::catalog::Action;
use crate::names::{Fqdn, SiteName, shown};
use serde::{Deserialize, Deserializer, Serialize};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The protocol version both sides send; a peer with another version is refused.
pub const VERSION: u32 = 1;
/// The path of the health check.
pub const HEALTH_PATH: &str = "/v1/health";
/// The path actions are posted to.
pub const ACTIONS_PATH: &str = "/v1/actions";
/// The largest request or answer body either side accepts.
pub const MAX_BODY: usize = 64 * 1024;
/// The longest string parameter an action may carry (a full DNS name).
pub const MAX_TEXT: usize = 253;
/// The longest time an action may be given.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest an agent holds one exchange open before it answers `running`.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// A message that could not be encoded or decoded, with a short reason fit for a 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("protocol version {got} is not supported (this side speaks {VERSION})")]
    Version { got: u32 },
}

impl WireError {
    /// Keeps serde's message without its position: a request is one line anyway.
    fn from_serde(e: serde_json::Error) -> WireError {
        let text = e.to_string();
        let text = text.rfind(" at line ").map_or(text.as_str(), |i| &text[..i]);
        WireError::Invalid(shown_long(text))
    }
}

/// A serde error can quote the offending input: keep at most 300 characters, escaped.
fn shown_long(s: &str) -> String {
    let mut out: String = s.chars().take(300).flat_map(char::escape_debug).collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, WireError> {
    if body.len() > MAX_BODY {
        return Err(WireError::TooLarge);
    }
    serde_json::from_slice(body).map_err(WireError::from_serde)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("wire types are plain data and always serialize")
}

/// Checks one string parameter: 1 to [`MAX_TEXT`] characters of `[A-Za-z0-9._:-]`. Names, IP
/// addresses and `host:port` pass; quotes, spaces, `;`, `|`, `&`, `$`, backticks, parentheses,
/// braces, redirections and control characters do not.
pub fn check_text(field: &str, value: &str) -> Result<(), WireError> {
    if value.is_empty() || value.len() > MAX_TEXT {
        return Err(WireError::Invalid(format!(
            "{field}: needs 1 to {MAX_TEXT} characters, got {}",
            value.len()
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(WireError::Invalid(format!(
            "{field}: '{}' carries the character {:?}, which is not allowed",
            shown(value),
            bad
        )));
    }
    Ok(())
}

/// Walks a JSON value and applies [`check_text`] to every string in it, naming the field.
fn check_strings(path: &str, value: &serde_json::Value) -> Result<(), WireError> {
    match value {
        serde_json::Value::String(s) => check_text(path, s),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_strings(&format!("{path}[{i}]"), v)),
        serde_json::Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| check_strings(&format!("{path}.{k}"), v)),
        _ => Ok(()),
    }
}

/// Refuses any object key of `raw` that the typed form does not have: the same strictness as
/// `deny_unknown_fields`, also for nested types that do not declare it.
fn extra_fields(path: &str, raw: &serde_json::Value, typed: &serde_json::Value) -> Result<(), WireError> {
    use serde_json::Value;
    match (raw, typed) {
        (Value::Object(r), Value::Object(t)) => r.iter().try_for_each(|(k, v)| match t.get(k) {
            Some(tv) => extra_fields(&format!("{path}.{k}"), v, tv),
            None => Err(WireError::Invalid(format!("{path}: unknown field `{}`", shown(k)))),
        }),
        (Value::Array(r), Value::Array(t)) => r
            .iter()
            .zip(t)
            .enumerate()
            .try_for_each(|(i, (rv, tv))| extra_fields(&format!("{path}[{i}]"), rv, tv)),
        _ => Ok(()),
    }
}

/// `GET /v1/health`: who the agent is and what it may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub protocol: u32,
    /// The agent's build version (`baton-agent 0.1.0`).
    pub agent_version: String,
    /// The host this agent serves; actions for any other host are refused.
    pub host: Fqdn,
    /// `command` or `powershell (Lync)` / `powershell (SkypeForBusiness)`.
    pub executor: String,
    /// The enabled action ids, sorted.
    pub actions: Vec<String>,
}

impl Health {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    pub fn decode(body: &[u8]) -> Result<Health, WireError> {
        let h: Health = decode(body)?;
        if h.protocol != VERSION {
            return Err(WireError::Version { got: h.protocol });
        }
        Ok(h)
    }
}

fn wire_key<'de, D: Deserializer<'de>>(d: D) -> Result<IdempotencyKey, D::Error> {
    let s = String::deserialize(d)?;
    IdempotencyKey::parse(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "key '{}' is not 1 to 200 characters of [A-Za-z0-9._/-]",
            shown(&s)
        ))
    })
}

/// `POST /v1/actions`: carry out one action once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionCall {
    pub protocol: u32,
    /// The same key always means the same execution: a repeated key is never executed again.
    #[serde(deserialize_with = "wire_key")]
    pub key: IdempotencyKey,
    /// The action and its typed parameters, in the catalog's wire form.
    pub action: Action,
    /// How long the action may run, in milliseconds (the agent may cap it lower).
    pub timeout_ms: u64,
    /// How long the agent may hold this exchange before answering `running`, in milliseconds.
    pub wait_ms: u64,
}

impl ActionCall {
    pub fn new(key: IdempotencyKey, action: Action, timeout: Duration, wait: Duration) -> ActionCall {
        ActionCall {
            protocol: VERSION,
            key,
            action,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes and validates a call: strict JSON, the protocol version, bounded times, and every
    /// string parameter through [`check_text`].
    pub fn decode(body: &[u8]) -> Result<ActionCall, WireError> {
        let call: ActionCall = decode(body)?;
        if call.protocol != VERSION {
            return Err(WireError::Version { got: call.protocol });
        }
        if call.timeout_ms == 0 || call.timeout() > MAX_TIMEOUT {
            return Err(WireError::Invalid(format!(
                "timeout_ms must be between 1 and {}, got {}",
                MAX_TIMEOUT.as_millis(),
                call.timeout_ms
            )));
        }
        if call.wait() > MAX_WAIT {
            return Err(WireError::Invalid(format!(
                "wait_ms must be at most {}, got {}",
                MAX_WAIT.as_millis(),
                call.wait_ms
            )));
        }
        let typed = serde_json::to_value(&call.action).expect("an action is plain data and always serializes");
        let raw: serde_json::Value = serde_json::from_slice(body).map_err(WireError::from_serde)?;
        extra_fields("action", &raw["action"], &typed)?;
        check_strings("action", &typed)?;
        Ok(call)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn wait(&self) -> Duration {
        Duration::from_millis(self.wait_ms)
    }
}

/// The state of one Lync/Skype for Business Windows service, as `Get-CsWindowsService` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceState {
    pub name: String,
    /// `Running`, `Stopped`, `StartPending`, …
    pub status: String,
}

/// One SRV record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrvRecord {
    pub target: Fqdn,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// What `services.*` report: every service of the host after the action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesReport {
    pub services: Vec<ServiceState>,
}

/// What `route.get` reports: the site's XMPP federation route, if it has one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteReport {
    pub site: SiteName,
    pub route: Option<String>,
}

/// What `route.set` reports: the `Set-CsSite` parameter used, the value given, and the route
/// read back with `Get-CsSite` before and after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteChangeReport {
    pub site: SiteName,
    /// `XmppFederationRoute` (documented) or `XmppExternalFederationRoute` (the runbook's).
    pub parameter: String,
    pub value: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// What `dns.set_a` reports: the A records of the name after the change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsAReport {
    pub name: Fqdn,
    pub addresses: Vec<Ipv4Addr>,
}

/// What `dns.ensure_srv` reports: the SRV records of the name after the action, and whether the
/// wanted one had to be created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSrvReport {
    pub name: Fqdn,
    pub records: Vec<SrvRecord>,
    pub created: bool,
}

/// The typed result of a successful action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionResult {
    Services(ServicesReport),
    Route(RouteReport),
    RouteChange(RouteChangeReport),
    DnsA(DnsAReport),
    DnsSrv(DnsSrvReport),
}

/// The agent's answer to an [`ActionCall`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase", deny_unknown_fields)]
pub enum ActionAnswer {
    /// The action ran and its effect was verified.
    Ok {
        key: IdempotencyKey,
        /// One short sentence for the status line.
        detail: String,
        result: ActionResult,
        elapsed_ms: u64,
        /// True when this answer is the recorded result of an earlier execution.
        replayed: bool,
    },
    /// The action failed, timed out, or was interrupted by an agent restart.
    Failed {
        key: IdempotencyKey,
        /// One short sentence saying what went wrong.
        error: String,
        elapsed_ms: u64,
        replayed: bool,
        /// The end of the executor's standard output and error (bounded).
        stdout_tail: String,
        stderr_tail: String,
    },
    /// The action is still running: send the same call again to wait for it.
    Running { key: IdempotencyKey, elapsed_ms: u64 },
}

impl ActionAnswer {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    pub fn decode(body: &[u8]) -> Result<ActionAnswer, WireError> {
        decode(body)
    }

    pub fn key(&self) -> &IdempotencyKey {
        match self {
            ActionAnswer::Ok { key, .. } | ActionAnswer::Failed { key, .. } | ActionAnswer::Running { key, .. } => key,
        }
    }

    /// The same answer marked as a replay of a recorded execution.
    pub fn replayed(mut self) -> ActionAnswer {
        if let ActionAnswer::Ok { replayed, .. } | ActionAnswer::Failed { replayed, .. } = &mut self {
            *replayed = true;
        }
        self
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Malformed, unknown action, extra fields, invalid parameters, wrong host.
    BadRequest,
    /// The client certificate is valid but not pinned.
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// The key was used before for another action.
    Conflict,
    TooLarge,
    /// The agent could not record the request; nothing was executed.
    Internal,
    /// The agent is shutting down.
    Unavailable,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Conflict => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }
}

/// The body of every refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub protocol: u32,
    pub error: ErrorKind,
    pub message: String,
}

impl ErrorBody {
    pub fn new(error: ErrorKind, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            protocol: VERSION,
            error,
            message: message.into(),
        }
    }
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    pub fn decode(body: &[u8]) -> Result<ErrorBody, WireError> {
        decode(body)
    }
}

impl From<WireError> for ErrorBody {
    fn from(e: WireError) -> ErrorBody {
        let kind = if e == WireError::TooLarge {
            ErrorKind::TooLarge
        } else {
            ErrorKind::BadRequest
        };
        ErrorBody::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> IdempotencyKey {
        IdempotencyKey::new("st", 7, 1, 0, "edge2a", 1)
    }

    fn call_json(action: &str) -> String {
        format!(r#"{{"protocol":1,"key":"st/r7/s2/a1-edge2a/t1","action":{action},"timeout_ms":5000,"wait_ms":1000}}"#)
    }

    /// Decodes a call and shows the result or the refusal.
    fn check(action: &str, expect: &str) {
        let got = match ActionCall::decode(call_json(action).as_bytes()) {
            Ok(c) => format!("ok {}", c.action.id()),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expect, "action {action}");
    }

    #[test]
    fn calls_round_trip() {
        let action = Action::RouteSet {
            host: Fqdn::parse("mgmt1.contoso.com").expect("valid"),
            site: SiteName::parse("Site2").expect("valid"),
            edge_pool: Fqdn::parse("edgepool2.contoso.com").expect("valid"),
        };
        let call = ActionCall::new(key(), action, Duration::from_secs(120), Duration::from_secs(10));
        let bytes = call.encode();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"protocol":1,"key":"st/r7/s2/a1-edge2a/t1","action":{"action":"route.set","host":"mgmt1.contoso.com","site":"Site2","edge_pool":"edgepool2.contoso.com"},"timeout_ms":120000,"wait_ms":10000}"#
        );
        assert_eq!(ActionCall::decode(&bytes), Ok(call));
    }

    #[test]
    fn calls_are_validated() {
        check(
            r#"{"action":"services.stop","host":"edge2a.contoso.com"}"#,
            "ok services.stop",
        );
        check(
            r#"{"action":"route.get","host":"mgmt1.contoso.com","site":"Site2"}"#,
            "ok route.get",
        );
        check(
            r#"{"action":"shell","cmd":"rm -rf /"}"#,
            "invalid request: unknown variant `shell`, expected one of `health`, `services.stop`, `services.start`, `services.status`, `route.get`, `route.set`, `dns.set_a`, `dns.ensure_srv`, `port.check`, `verify`",
        );
        check(
            r#"{"action":"services.stop","host":"edge2a.contoso.com","force":true}"#,
            "invalid request: unknown field `force`, expected `host`",
        );
        check(
            r#"{"action":"route.get","host":"mgmt1.contoso.com","site":"Site2; Stop-Computer"}"#,
            "invalid request: \\'Site2; Stop-Computer\\' is not a valid site name: use 1 to 64 letters, digits, \\'-\\', \\'_\\' or \\'.\\', starting with a letter or digit",
        );
        check(
            r#"{"action":"services.stop","host":"edge2a.contoso.com$(Stop-Computer)"}"#,
            "invalid request: \\'edge2a.contoso.com$(Stop-Computer)\\' is not a valid host name: labels may hold only letters, digits and \\'-\\'",
        );
        // A raw string field of the catalog (the RFC 2136 server) is checked too.
        check(
            r#"{"action":"dns.set_a","dns":{"provider":"rfc2136","server":"ns1`whoami`:53","zone":"contoso.com"},"name":"xmpp.contoso.com","address":"203.0.113.20","ttl":300}"#,
            "invalid request: action.dns.server: 'ns1`whoami`:53' carries the character '`', which is not allowed",
        );
        check(
            r#"{"action":"dns.set_a","dns":{"provider":"agent","host":"dns1.contoso.com","zone":"contoso.com","x":1},"name":"xmpp.contoso.com","address":"203.0.113.20","ttl":300}"#,
            "invalid request: action.dns: unknown field `x`",
        );
        let long = format!(
            r#"{{"action":"route.get","host":"mgmt1.contoso.com","site":"{}"}}"#,
            "S".repeat(300)
        );
        assert!(
            ActionCall::decode(call_json(&long).as_bytes())
                .expect_err("too long")
                .to_string()
                .contains("is not a valid site name")
        );
        let extra = call_json(r#"{"action":"services.stop","host":"edge2a.contoso.com"}"#)
            .replace("\"wait_ms\"", "\"x\":1,\"wait_ms\"");
        assert!(
            ActionCall::decode(extra.as_bytes())
                .expect_err("extra")
                .to_string()
                .contains("unknown field `x`")
        );
        let bad_key = call_json(r#"{"action":"services.stop","host":"edge2a.contoso.com"}"#).replace("st/r7", "st r7;");
        assert!(
            ActionCall::decode(bad_key.as_bytes())
                .expect_err("key")
                .to_string()
                .contains("is not 1 to 200 characters")
        );
        let v2 = call_json(r#"{"action":"services.stop","host":"edge2a.contoso.com"}"#)
            .replace("\"protocol\":1", "\"protocol\":2");
        assert_eq!(ActionCall::decode(v2.as_bytes()), Err(WireError::Version { got: 2 }));
        let zero = call_json(r#"{"action":"services.stop","host":"edge2a.contoso.com"}"#).replace("5000", "0");
        assert!(ActionCall::decode(zero.as_bytes()).is_err());
        assert_eq!(ActionCall::decode(&vec![b' '; MAX_BODY + 1]), Err(WireError::TooLarge));
    }

    #[test]
    fn text_checks() {
        for ok in [
            "edge2a.contoso.com",
            "203.0.113.20",
            "2001:db8::1",
            "ns1.contoso.com:53",
            "Site_2",
        ] {
            assert_eq!(check_text("f", ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "a b", "a;b", "a|b", "a&b", "$x", "`x`", "a'b", "a\"b", "(x)", "{x}", "a>b", "a\nb", "é",
        ] {
            assert!(check_text("f", bad).is_err(), "{bad:?}");
        }
        assert!(check_text("f", &"a".repeat(MAX_TEXT + 1)).is_err());
    }

    #[test]
    fn answers_round_trip_and_are_strict() {
        let ok = ActionAnswer::Ok {
            key: key(),
            detail: "2 services stopped".into(),
            result: ActionResult::Services(ServicesReport {
                services: vec![ServiceState {
                    name: "RTCSRV".into(),
                    status: "Stopped".into(),
                }],
            }),
            elapsed_ms: 2100,
            replayed: false,
        };
        let bytes = ok.encode();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"status":"ok","key":"st/r7/s2/a1-edge2a/t1","detail":"2 services stopped","result":{"kind":"services","services":[{"name":"RTCSRV","status":"Stopped"}]},"elapsed_ms":2100,"replayed":false}"#
        );
        assert_eq!(ActionAnswer::decode(&bytes), Ok(ok.clone()));
        assert!(matches!(ok.replayed(), ActionAnswer::Ok { replayed: true, .. }));
        let running = br#"{"status":"running","key":"k","elapsed_ms":5}"#;
        assert!(matches!(
            ActionAnswer::decode(running),
            Ok(ActionAnswer::Running { .. })
        ));
        let extra = br#"{"status":"running","key":"k","elapsed_ms":5,"x":1}"#;
        assert!(ActionAnswer::decode(extra).is_err());
        let nested = br#"{"status":"ok","key":"k","detail":"d","result":{"kind":"route","site":"Site2","route":null,"x":1},"elapsed_ms":1,"replayed":false}"#;
        assert!(
            ActionAnswer::decode(nested).is_err(),
            "unknown fields inside a result are refused too"
        );
        let err = ErrorBody::new(ErrorKind::Forbidden, "client certificate not allowed");
        assert_eq!(ErrorBody::decode(&err.encode()), Ok(err));
        assert_eq!(ErrorKind::Conflict.status(), 409);
    }

    #[test]
    fn health_round_trips() {
        let h = Health {
            protocol: VERSION,
            agent_version: "baton-agent 0.1.0".into(),
            host: Fqdn::parse("edge2a.contoso.com").expect("valid"),
            executor: "command".into(),
            actions: vec!["services.start".into(), "services.stop".into()],
        };
        assert_eq!(Health::decode(&h.encode()), Ok(h));
        assert!(
            Health::decode(br#"{"protocol":1,"agent_version":"x","host":"a.b","executor":"c","actions":[],"extra":0}"#)
                .is_err()
        );
    }
}
