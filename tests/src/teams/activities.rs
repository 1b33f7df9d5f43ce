//! Builders of the activities Teams sends a bot, written after Microsoft's documented JSON
//! (platforms.md A.1 and A.4), not after Baton's own types: a channel message that @mentions
//! the bot, an `adaptiveCard/action` invoke from an `Action.Execute` click, and the message an
//! `Action.Submit` fallback click sends. Also the test people and channels they come from.

use super::Shared;
use super::connector::{ActivityState, thread_of};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A Teams user. Ids are derived from the name, so they are stable across runs and can be
/// written into Baton's `[people]` configuration (`teams:<aadObjectId>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamsUser {
    /// Display name (`from.name`).
    pub name: String,
    /// The Teams-specific id (`from.id`, `29:…`).
    pub id: String,
    /// The Entra object id (`from.aadObjectId`); None for anonymous and some meeting users.
    pub aad_object_id: Option<String>,
}

impl TeamsUser {
    /// A user with a Teams id and an Entra object id derived from `name`.
    pub fn new(name: &str) -> TeamsUser {
        let mri = Sha256::digest(format!("teams-mri:{name}"));
        let aad = Sha256::digest(format!("aad-object-id:{name}"));
        let hex = hex::encode(&aad[..16]);
        TeamsUser {
            name: name.to_string(),
            id: format!(
                "29:1{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mri[..30])
            ),
            aad_object_id: Some(format!(
                "{}-{}-4{}-a{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[13..16],
                &hex[17..20],
                &hex[20..32]
            )),
        }
    }

    /// The same user without `aadObjectId`, as anonymous and some meeting users arrive.
    pub fn without_aad_object_id(mut self) -> TeamsUser {
        self.aad_object_id = None;
        self
    }

    /// The identity Baton's configuration names this person by: `teams:<aadObjectId>`.
    pub fn baton_identity(&self) -> Option<String> {
        self.aad_object_id.as_ref().map(|id| format!("teams:{id}"))
    }

    /// The `from` object (`ChannelAccount`).
    pub fn account(&self) -> Value {
        let mut account = json!({ "id": self.id, "name": self.name });
        if let Some(aad) = &self.aad_object_id {
            account["aadObjectId"] = json!(aad);
        }
        account
    }
}

/// A Teams channel in a team. Only conversations in known channels reach the Connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub team_id: String,
    pub team_name: String,
    /// The channel's conversation id, `19:…@thread.tacv2`.
    pub channel_id: String,
    pub channel_name: String,
}

impl Channel {
    /// A channel whose ids derive from `name`.
    pub fn new(team_name: &str, channel_name: &str) -> Channel {
        let team = hex::encode(&Sha256::digest(format!("team:{team_name}"))[..16]);
        let channel = hex::encode(&Sha256::digest(format!("channel:{team_name}/{channel_name}"))[..16]);
        Channel {
            team_id: format!("19:{team}@thread.tacv2"),
            team_name: team_name.to_string(),
            channel_id: format!("19:{channel}@thread.tacv2"),
            channel_name: channel_name.to_string(),
        }
    }

    /// `channelData` of an activity in this channel.
    fn channel_data(&self, tenant: &str) -> Value {
        json!({
            "teamsChannelId": self.channel_id,
            "teamsTeamId": self.team_id,
            "channel": { "id": self.channel_id },
            "team": { "id": self.team_id },
            "tenant": { "id": tenant },
        })
    }
}

fn timestamps() -> (String, String) {
    let now = chrono::Utc::now();
    (
        now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        now.format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string(),
    )
}

fn client_info() -> Value {
    json!({ "type": "clientInfo", "locale": "en-US", "country": "US", "platform": "Web", "timezone": "Europe/Paris" })
}

/// The text/html rendering Teams attaches to a channel message.
fn html_of(text: &str, mention: Option<&str>) -> String {
    let escape = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let at = mention
        .map(|name| {
            format!(
                "<span itemscope=\"\" itemtype=\"http://schema.skype.com/Mention\" itemid=\"0\">{}</span> ",
                escape(name)
            )
        })
        .unwrap_or_default();
    format!("<p>{at}{}</p>", escape(text))
}

fn conversation(tenant: &str, id: &str) -> Value {
    json!({ "isGroup": true, "conversationType": "channel", "tenantId": tenant, "id": id })
}

impl Shared {
    fn recipient(&self) -> Value {
        json!({ "id": format!("28:{}", self.app_id), "name": self.bot_name })
    }

    /// The fields every activity from Teams carries.
    fn envelope(&self, kind: &str, id: &str, from: &TeamsUser) -> Value {
        let (timestamp, local) = timestamps();
        json!({
            "type": kind,
            "id": id,
            "timestamp": timestamp,
            "localTimestamp": local,
            "channelId": "msteams",
            "serviceUrl": self.service_url,
            "from": from.account(),
            "recipient": self.recipient(),
            "locale": "en-US",
        })
    }

    /// `channelData` for an activity about a card in `conversation_id`.
    fn card_channel_data(&self, conversation_id: &str, card_id: &str, tenant: &str) -> Value {
        let mut data = match self.directory.channel_of(thread_of(conversation_id)) {
            Some(channel) => channel.channel_data(tenant),
            None => json!({ "tenant": { "id": tenant } }),
        };
        data["source"] = json!({ "name": "message" });
        data["legacy"] = json!({ "replyToId": card_id });
        data
    }
}

/// A channel message to the bot. Build it with [`MessageBuilder::build`].
#[must_use]
pub struct MessageBuilder {
    shared: Arc<Shared>,
    from: TeamsUser,
    text: String,
    mention: bool,
    channel: Channel,
    thread_root: Option<String>,
    tenant: String,
}

impl MessageBuilder {
    pub(crate) fn new(shared: Arc<Shared>, from: &TeamsUser, text: &str) -> MessageBuilder {
        let channel = shared.directory.default_channel();
        let tenant = shared.tenant_id.clone();
        MessageBuilder {
            shared,
            from: from.clone(),
            text: text.to_string(),
            mention: true,
            channel,
            thread_root: None,
            tenant,
        }
    }

    /// Sends the text without the `<at>Bot</at>` mention (and without its entity).
    pub fn without_mention(mut self) -> MessageBuilder {
        self.mention = false;
        self
    }

    /// Posts in another known channel (see `TeamsStandIn::add_channel`).
    pub fn in_channel(mut self, channel: &Channel) -> MessageBuilder {
        self.channel = channel.clone();
        self
    }

    /// Posts as a reply in the thread whose root message is `root_activity_id`.
    pub fn in_thread(mut self, root_activity_id: &str) -> MessageBuilder {
        self.thread_root = Some(root_activity_id.to_string());
        self
    }

    /// Claims another tenant (in `channelData.tenant.id` and `conversation.tenantId`), as an
    /// activity from a foreign tenant would.
    pub fn tenant(mut self, tenant_id: &str) -> MessageBuilder {
        self.tenant = tenant_id.to_string();
        self
    }

    /// The activity, with a fresh id. A new post is its own thread's root, so its conversation
    /// id is `<channel>;messageid=<its id>`; a reply in a thread carries `replyToId` = the root.
    pub fn build(self) -> Value {
        let s = &self.shared;
        let id = s.directory.next_activity_id();
        let root = self.thread_root.clone().unwrap_or_else(|| id.clone());
        let mention = format!("<at>{}</at>", s.bot_name);
        let mut entities = Vec::new();
        let text = if self.mention {
            entities.push(json!({
                "type": "mention",
                "text": mention,
                "mentioned": s.recipient(),
            }));
            format!("{mention} {}", self.text)
        } else {
            self.text.clone()
        };
        entities.push(client_info());
        let mut activity = s.envelope("message", &id, &self.from);
        activity["conversation"] = conversation(&self.tenant, &format!("{};messageid={root}", self.channel.channel_id));
        activity["text"] = json!(text);
        activity["textFormat"] = json!("plain");
        // Teams also sends the message as HTML in a text/html attachment.
        activity["attachments"] = json!([{
            "contentType": "text/html",
            "content": html_of(&self.text, self.mention.then_some(s.bot_name.as_str())),
        }]);
        activity["entities"] = json!(entities);
        activity["channelData"] = self.channel.channel_data(&self.tenant);
        if self.thread_root.is_some() {
            activity["replyToId"] = json!(root);
        }
        activity
    }
}

/// An `invoke` named `adaptiveCard/action`: what Teams sends when `from` clicks an
/// `Action.Execute` with `verb` and `data` on the card message `card_id` in `conversation_id`.
pub(crate) fn execute_action(
    shared: &Shared,
    from: &TeamsUser,
    conversation_id: &str,
    card_id: &str,
    verb: &str,
    data: Value,
) -> Value {
    let id = shared.directory.next_activity_id();
    let tenant = &shared.tenant_id;
    let mut activity = shared.envelope("invoke", &id, from);
    activity["name"] = json!("adaptiveCard/action");
    activity["conversation"] = conversation(tenant, conversation_id);
    activity["channelData"] = shared.card_channel_data(conversation_id, card_id, tenant);
    activity["replyToId"] = json!(card_id);
    activity["entities"] = json!([client_info()]);
    activity["value"] = json!({
        "action": { "type": "Action.Execute", "verb": verb, "data": data },
        "trigger": "manual",
    });
    activity
}

/// The `message` Teams sends when `from` clicks an `Action.Submit` (a fallback) on the card
/// message `card_id`: no `text`, `value` = the action's data merged with the card's inputs.
pub(crate) fn submit_action(
    shared: &Shared,
    from: &TeamsUser,
    conversation_id: &str,
    card_id: &str,
    value: Value,
) -> Value {
    let id = shared.directory.next_activity_id();
    let tenant = &shared.tenant_id;
    let mut activity = shared.envelope("message", &id, from);
    activity["conversation"] = conversation(tenant, conversation_id);
    activity["channelData"] = shared.card_channel_data(conversation_id, card_id, tenant);
    activity["replyToId"] = json!(card_id);
    activity["entities"] = json!([client_info()]);
    activity["value"] = value;
    activity
}

/// The invoke for a click on a card the bot posted (see [`execute_action`]).
pub(crate) fn execute_on(shared: &Shared, from: &TeamsUser, card: &ActivityState, verb: &str, data: Value) -> Value {
    execute_action(shared, from, &card.conversation_id, &card.id, verb, data)
}

/// The submit message for a click on a card the bot posted (see [`submit_action`]).
pub(crate) fn submit_on(shared: &Shared, from: &TeamsUser, card: &ActivityState, value: Value) -> Value {
    submit_action(shared, from, &card.conversation_id, &card.id, value)
}
