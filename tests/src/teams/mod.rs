//! A protocol-faithful local stand-in for Microsoft Teams (the Bot Framework protocol), so a
//! Teams adapter can be tested end to end on loopback: Activity JSON in, Bot Connector REST v3
//! out, RS256 JWTs from a local JWKS, a client-credentials token endpoint, and a real Adaptive
//! Card renderer check. Everything binds 127.0.0.1 only and nothing leaves the machine.
//!
//! # What runs
//!
//! [`TeamsStandIn::start`] generates two RSA-2048 keys and starts three loopback servers:
//!
//! | stands in for | URL (accessor) | serves |
//! |---|---|---|
//! | `login.botframework.com` | [`TeamsStandIn::openid_metadata_url`] | `GET /v1/.well-known/openidconfiguration` (`issuer` `https://api.botframework.com`, `jwks_uri`, `id_token_signing_alg_values_supported: ["RS256"]`) and `GET /v1/.well-known/keys` (JWKS: `kty, use, kid, x5t, n, e, x5c, endorsements`) |
//! | `login.microsoftonline.com` | [`TeamsStandIn::token_url`] = `http://127.0.0.1:<p>/<tenant>/oauth2/v2.0/token` | client-credentials tokens |
//! | the Bot Connector (`smba.trafficmanager.net`) | [`TeamsStandIn::service_url`] = `http://127.0.0.1:<p>/teams/` | `/v3/conversations…` |
//!
//! The adapter under test is configured with exactly these three URLs plus
//! [`TeamsStandIn::app_id`], [`TeamsStandIn::app_secret`] and [`TeamsStandIn::tenant_id`]
//! (and a serviceUrl allowlist that admits the loopback serviceUrl). There is no "auth off":
//! the adapter's real validator checks the stand-in's real signatures.
//!
//! # Inbound: activities to the bot
//!
//! ```ignore
//! let teams = TeamsStandIn::start(TeamsConfig::default()).await?;
//! let alice = TeamsUser::new("alice");                    // stable 29:… id and aadObjectId
//! let msg = teams.message(&alice, "!failover xmpp EdgePool2").build();
//! let reply = teams.send(&bot_endpoint, &msg).await?;     // POST with a valid Bearer token
//! assert_eq!(reply.status, 200);
//! ```
//!
//! - [`TeamsStandIn::message`] → [`MessageBuilder`]: a channel `message` with
//!   `text: "<at>Baton</at> …"`, a `mention` entity naming `28:<app id>`, a `clientInfo`
//!   entity, a `text/html` attachment, `conversation.id = "19:…@thread.tacv2;messageid=<id>"`
//!   (the message is its thread's root), `channelData.{teamsChannelId, teamsTeamId, channel,
//!   team, tenant}`, `serviceUrl` = the stand-in's. Options: `.without_mention()`,
//!   `.in_thread(root_id)` (adds `replyToId`), `.in_channel(&ch)`, `.tenant("other")`.
//!   The result is a `serde_json::Value`: tests may edit any field before sending.
//! - [`TeamsUser::without_aad_object_id`]: a sender without `from.aadObjectId` (approvals from
//!   such a sender must be refused). [`TeamsUser::baton_identity`] = `teams:<aadObjectId>`.
//! - [`TeamsStandIn::execute_action`]`(&bob, &card, "approve", json!({"req": "r1"}))`: the
//!   `invoke` named `adaptiveCard/action` with `value.action {type: "Action.Execute", verb,
//!   data}`, `value.trigger: "manual"` and `replyToId` = the card's activity id, in the card's
//!   conversation; `card` is an [`ActivityState`] the bot posted (from the Connector record).
//!   [`TeamsStandIn::execute_action_at`] takes raw conversation and activity ids instead.
//! - [`TeamsStandIn::submit_action`]`(&bob, &card, json!({"verb": "approve", "req": "r1"}))`:
//!   the `message` an `Action.Submit` fallback click sends: `value` = the data, `replyToId` =
//!   the card, and **no `text` field** (add `"text": ""` yourself to test that variant).
//! - [`TeamsStandIn::send`] POSTs with a valid token and returns [`BotReply`] (status, JSON
//!   body; for invokes the body is the invoke response, see [`BotReply::invoke_type`] and
//!   [`BotReply::invoke_value`]). The bot must answer within [`client::BOT_TIMEOUT`] (15 s).
//! - [`TeamsStandIn::send_with`]`(endpoint, &activity, Auth::Bad(bad))` sends a bad token. Loop
//!   over [`BadToken::ALL`]: `MissingHeader`, `WrongScheme`, `Malformed`, `BadSignature`,
//!   `UnknownKid`, `WrongIssuer`, `WrongAudience`, `Expired`, `NotYetValid` (both 15 min beyond
//!   the 5 min skew), `ServiceUrlMismatch`, `NotEndorsed` (a published key endorsing only
//!   `skype`/`slack`), `AlgNone`, `Hs256WithPublicKey`. [`BadToken::expected_status`] is 403
//!   for `NotEndorsed` and 401 for the rest (platforms.md A.4b). After each, the Connector
//!   record should show the bot made no call ([`Connector::calls`]).
//! - `Auth::Header(value)` sends any header, e.g. a token from [`IdentityProvider::sign_with`]
//!   over [`TeamsStandIn::valid_claims`] edited by the test.
//!
//! # Key rotation ([`TeamsStandIn::identity`] → [`IdentityProvider`])
//!
//! `add_key(kid, &["msteams"])` publishes a new key; `use_for_signing(kid)` makes valid
//! tokens use it (the bot must re-fetch the JWKS on the unknown kid); `remove_key(kid)` takes
//! a key out of the JWKS while the stand-in can still sign with it (`sign_with`), so a test
//! shows a token of a removed key is refused once the bot has refreshed;
//! `set_endorsements(kid, …)`; `jwks_fetches()`, `metadata_fetches()` and
//! `wait_for_jwks_fetches(n, timeout)` count fetches. `inject(fault, times)` fails the
//! metadata/JWKS endpoints.
//!
//! # Outbound: the token endpoint ([`TeamsStandIn::login`] → [`Login`])
//!
//! `POST /<tenant>/oauth2/v2.0/token`, `Content-Type: application/x-www-form-urlencoded`, body
//! `grant_type=client_credentials&client_id=<app id>&client_secret=<secret>&scope=https%3A%2F%2Fapi.botframework.com%2F.default`
//! answers `200 {"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":"…"}`.
//! Refusals are Entra-shaped (`{"error","error_description":"AADSTS…","error_codes",…}`):
//! unknown tenant 400 `invalid_request`; missing/unsupported grant 400 `invalid_request` /
//! `unsupported_grant_type`; wrong client id 400 `unauthorized_client`; wrong secret 401
//! `invalid_client`; wrong scope 400 `invalid_scope` / `invalid_resource`; not a form 400.
//! `set_token_lifetime(d)` sets `expires_in` of later tokens and how long the Connector accepts
//! them (force a refresh with a short one); `revoke_all()` makes the Connector refuse every
//! token issued so far; `requests()`, `request_count()`, `issued_count()`,
//! `wait_for_requests(n, timeout)`; `inject(fault, times)`.
//!
//! # Outbound: the Connector ([`TeamsStandIn::connector`] → [`Connector`])
//!
//! Routes, relative to the serviceUrl (so `http://127.0.0.1:<p>/teams/v3/…`; a double slash
//! `…/teams//v3/…` is a 404):
//!
//! | call | answer |
//! |---|---|
//! | `POST v3/conversations/{conversationId}/activities` | 201 `{"id":"<new activity id>"}` |
//! | `POST v3/conversations/{conversationId}/activities/{activityId}` (reply) | 201 `{"id":…}` |
//! | `PUT v3/conversations/{conversationId}/activities/{activityId}` (update) | 200 `{"id":…}` |
//! | `POST v3/conversations` `{"isGroup":true,"channelData":{"channel":{"id":"19:…"},…},"activity":{…}}` | 201 `{"id":"19:…;messageid=<id>","activityId":"<id>"}` |
//!
//! Path ids may be raw (`19:abc@thread.tacv2;messageid=1`) or percent-encoded; the record holds
//! them decoded. Checks, in order (each refusal is recorded too): fault injection; route (404,
//! 405); `Authorization: Bearer <a current token from the token endpoint>` (401
//! `{"message":"Authorization has been denied for this request."}`); `Content-Type:
//! application/json` (415); body over 28 KB (413); JSON (400); conversation in a known channel
//! (404 `ConversationNotFound`); for PUT, an activity the bot posted in that thread (404
//! `ActivityNotFoundInConversation`); the activity has a `type`, a message has text or
//! attachments, an Adaptive Card attachment has `type: AdaptiveCard` and a `version` (400
//! `BadArgument`). Errors are `{"error":{"code","message"}}`.
//!
//! The record: [`Connector::calls`] ([`Call`]: seq, time, method, raw path, [`CallKind`],
//! decoded conversation and activity ids, all headers, `authorization`, JSON body, status,
//! response, fault, the activity created/updated); [`Connector::activities`] and
//! [`Connector::activity`] ([`ActivityState`]: every version, `latest()`, `text()`,
//! `adaptive_cards()`, `updates()`) answer "what does the card look like now";
//! [`Connector::busiest`]`(window)` gives the most calls to one thread within a window (Teams
//! allows 7 per second). Waiting, without polling: `wait_for(|calls| Option<T>, timeout)`,
//! `wait_for_calls(n, timeout)`, `wait_for_activity(|state| bool, timeout)`; their errors list
//! every call seen.
//!
//! Faults (all three servers): `inject(Fault::Unavailable | Fault::TooManyRequests {
//! retry_after_secs } | Fault::CloseConnection, Times::Next(k) | Times::UntilCleared)`, then
//! `clear_faults()`. A 503/429 has a JSON error body; 429 carries `Retry-After`; a closed
//! connection gets no answer at all.
//!
//! # Adaptive Cards ([`cards`])
//!
//! [`cards::check_cards`] renders card JSON with Microsoft's `adaptivecards` library in headless
//! Debian Chromium (the Node harness in `tests/cards/`) and fails on any parse warning,
//! validation issue, console error or page error; it can write PNG screenshots. It accepts a
//! card, an attachment, or a whole activity (each Adaptive Card attachment is checked).
//!
//! # Not modelled
//!
//! Conversation members, deletes, personal and group chats (only team channels), the Teams
//! rate limit itself (measure with [`Connector::busiest`]), user-specific `refresh` views. A
//! card an invoke response carries is returned to the test in [`BotReply`]; it is not applied
//! to the Connector's record of the card message (a bot that must change the card for everyone
//! PUTs it, and that PUT is recorded).
//!
//! # Setup the tests need
//!
//! Debian's `chromium` and the card harness's modules (`npm ci --prefix tests/cards`); the
//! Rust side needs nothing else. Key generation takes a few hundred milliseconds per key in
//! the dev profile (`rsa` and `num-bigint-dig` are built with `opt-level = 3`); figures:
//! `cargo run -p baton-e2e --example teams_standin_figures`.

pub mod activities;
pub mod cards;
pub mod client;
pub mod connector;
pub mod http;
pub mod identity;
pub mod keys;
pub mod login;
pub mod tokens;

pub use activities::{Channel, MessageBuilder, TeamsUser};
pub use client::{Auth, BotReply};
pub use connector::{ActivityState, Call, CallKind, Connector};
pub use http::{Fault, Times};
pub use identity::IdentityProvider;
pub use login::{Login, TokenRequest};
pub use tokens::BadToken;

use anyhow::Result;
use rand::Rng as _;
use secrecy::SecretString;
use serde_json::Value;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// What the stand-in is configured with; the adapter under test gets the same values.
#[derive(Debug, Clone)]
pub struct TeamsConfig {
    /// The bot's Microsoft App ID (token audience, `recipient.id = 28:<app id>`).
    pub app_id: String,
    /// The app's client secret the token endpoint expects.
    pub app_secret: SecretString,
    /// The Entra tenant (token URL path, `channelData.tenant.id`).
    pub tenant_id: String,
    /// The bot's display name, as mentioned: `<at>Baton</at>`.
    pub bot_name: String,
    /// `expires_in` of issued access tokens, and how long the Connector accepts them.
    pub token_lifetime: Duration,
}

impl Default for TeamsConfig {
    /// Fixed app and tenant ids, bot name `Baton`, one-hour tokens, and a random secret.
    fn default() -> Self {
        let secret: [u8; 24] = rand::rng().random();
        TeamsConfig {
            app_id: "8d4e6f0a-5b1c-4c3e-9f27-6a1d2b3c4d5e".to_string(),
            app_secret: SecretString::from(format!("standin~{}", keys::b64url(&secret))),
            tenant_id: "72f988bf-0000-4000-8000-00000000c0de".to_string(),
            bot_name: "Baton".to_string(),
            token_lifetime: Duration::from_secs(3600),
        }
    }
}

/// The channels the stand-in knows and the activity id counter, shared by the builders and the
/// Connector.
pub(crate) struct Directory {
    channels: Mutex<Vec<Channel>>,
    next_id: AtomicU64,
}

impl Directory {
    fn new(first: Channel) -> Directory {
        // Teams message ids are epoch milliseconds; start there and count up so ids are unique.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_millis() as u64;
        Directory {
            channels: Mutex::new(vec![first]),
            next_id: AtomicU64::new(now),
        }
    }

    pub(crate) fn next_activity_id(&self) -> String {
        self.next_id.fetch_add(1, Ordering::SeqCst).to_string()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Channel>> {
        self.channels
            .lock()
            .expect("no code panics while holding the channel list")
    }

    pub(crate) fn default_channel(&self) -> Channel {
        self.lock()[0].clone()
    }

    pub(crate) fn channel_of(&self, channel_id: &str) -> Option<Channel> {
        self.lock().iter().find(|c| c.channel_id == channel_id).cloned()
    }

    /// Whether `conversation_id` (with or without `;messageid=`) lies in a known channel.
    pub(crate) fn knows_conversation(&self, conversation_id: &str) -> bool {
        self.channel_of(connector::thread_of(conversation_id)).is_some()
    }
}

/// What the activity builders need.
pub(crate) struct Shared {
    pub(crate) app_id: String,
    pub(crate) bot_name: String,
    pub(crate) tenant_id: String,
    pub(crate) service_url: String,
    pub(crate) directory: Arc<Directory>,
}

/// The running stand-in. Dropping it stops its servers.
pub struct TeamsStandIn {
    config: TeamsConfig,
    shared: Arc<Shared>,
    identity: IdentityProvider,
    login: Login,
    connector: Connector,
    shutdown: CancellationToken,
}

impl Drop for TeamsStandIn {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TeamsStandIn {
    /// Generates the keys and starts the three servers on 127.0.0.1. The default channel is
    /// `Contoso Ops / Incidents`.
    pub async fn start(config: TeamsConfig) -> Result<TeamsStandIn> {
        let shutdown = CancellationToken::new();
        let (connector_listener, service_url) = Connector::bind().await?;
        let identity = IdentityProvider::start(&config.app_id, &service_url, shutdown.clone()).await?;
        let login = Login::start(
            &config.tenant_id,
            &config.app_id,
            config.app_secret.clone(),
            config.token_lifetime,
            shutdown.clone(),
        )
        .await?;
        let directory = Arc::new(Directory::new(Channel::new("Contoso Ops", "Incidents")));
        let connector = Connector::start(
            connector_listener,
            service_url.clone(),
            directory.clone(),
            login.clone(),
            shutdown.clone(),
        );
        let shared = Arc::new(Shared {
            app_id: config.app_id.clone(),
            bot_name: config.bot_name.clone(),
            tenant_id: config.tenant_id.clone(),
            service_url,
            directory,
        });
        Ok(TeamsStandIn {
            config,
            shared,
            identity,
            login,
            connector,
            shutdown,
        })
    }

    /// The bot's Microsoft App ID.
    pub fn app_id(&self) -> &str {
        &self.config.app_id
    }

    /// The app's client secret (write it to the file or env var the bot's config names).
    pub fn app_secret(&self) -> &SecretString {
        &self.config.app_secret
    }

    /// The tenant id.
    pub fn tenant_id(&self) -> &str {
        &self.config.tenant_id
    }

    /// The bot's display name.
    pub fn bot_name(&self) -> &str {
        &self.config.bot_name
    }

    /// The OpenID metadata URL for the bot's validator.
    pub fn openid_metadata_url(&self) -> String {
        self.identity.openid_metadata_url()
    }

    /// The token URL for the bot's Connector client.
    pub fn token_url(&self) -> String {
        self.login.token_url()
    }

    /// `http://127.0.0.1:<port>/teams/`: every activity's `serviceUrl`.
    pub fn service_url(&self) -> &str {
        self.connector.service_url()
    }

    /// The identity provider (keys, JWKS, signing).
    pub fn identity(&self) -> &IdentityProvider {
        &self.identity
    }

    /// The token endpoint.
    pub fn login(&self) -> &Login {
        &self.login
    }

    /// The Bot Connector and its record.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The default channel.
    pub fn channel(&self) -> Channel {
        self.shared.directory.default_channel()
    }

    /// Adds a channel the Connector will accept conversations in.
    pub fn add_channel(&self, team_name: &str, channel_name: &str) -> Channel {
        let channel = Channel::new(team_name, channel_name);
        let mut channels = self.shared.directory.lock();
        if !channels.contains(&channel) {
            channels.push(channel.clone());
        }
        channel
    }

    /// A channel message from `from` that @mentions the bot (see [`MessageBuilder`]).
    pub fn message(&self, from: &TeamsUser, text: &str) -> MessageBuilder {
        MessageBuilder::new(self.shared.clone(), from, text)
    }

    /// The `adaptiveCard/action` invoke for `from` clicking `Action.Execute` (`verb`, `data`)
    /// on the card message `card` the bot posted.
    pub fn execute_action(&self, from: &TeamsUser, card: &ActivityState, verb: &str, data: Value) -> Value {
        activities::execute_on(&self.shared, from, card, verb, data)
    }

    /// [`TeamsStandIn::execute_action`] for a card named by conversation and activity id.
    pub fn execute_action_at(
        &self,
        from: &TeamsUser,
        conversation_id: &str,
        card_id: &str,
        verb: &str,
        data: Value,
    ) -> Value {
        activities::execute_action(&self.shared, from, conversation_id, card_id, verb, data)
    }

    /// The message for `from` clicking an `Action.Submit` with `value` on the card `card`.
    pub fn submit_action(&self, from: &TeamsUser, card: &ActivityState, value: Value) -> Value {
        activities::submit_on(&self.shared, from, card, value)
    }

    /// [`TeamsStandIn::submit_action`] for a card named by conversation and activity id.
    pub fn submit_action_at(&self, from: &TeamsUser, conversation_id: &str, card_id: &str, value: Value) -> Value {
        activities::submit_action(&self.shared, from, conversation_id, card_id, value)
    }

    /// The claims of a valid inbound token, for tests that edit one claim and sign with
    /// [`IdentityProvider::sign_with`].
    pub fn valid_claims(&self) -> Value {
        tokens::valid_claims(&self.config.app_id, self.service_url())
    }

    /// The `Authorization` header value for `auth` (None: no header).
    pub async fn authorization(&self, auth: &Auth) -> Result<Option<String>> {
        match auth {
            Auth::Valid => Ok(Some(format!("Bearer {}", self.identity.valid_token()))),
            Auth::Bad(bad) => self.identity.bad_authorization(*bad).await,
            Auth::Header(value) => Ok(Some(value.clone())),
        }
    }

    /// POSTs `activity` to the bot's `endpoint` with a valid token, as the Connector does.
    pub async fn send(&self, endpoint: &str, activity: &Value) -> Result<BotReply> {
        self.send_with(endpoint, activity, &Auth::Valid).await
    }

    /// POSTs `activity` to the bot's `endpoint` with the given authorization.
    pub async fn send_with(&self, endpoint: &str, activity: &Value, auth: &Auth) -> Result<BotReply> {
        let header = self.authorization(auth).await?;
        client::post(endpoint, activity, header.as_deref()).await
    }
}
