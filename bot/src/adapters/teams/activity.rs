//! Inbound activities, the pure part: the fields of a Bot Framework activity that Baton reads
//! (Microsoft's documented JSON; everything else is ignored), and what an authenticated one
//! becomes: a typed command from a person, a card button pressed, or nothing. The tenant and the
//! channel are checked here; the sender is `teams:<from.aadObjectId>` or, without one, a sender
//! that may read but never request or approve.

use super::config::ValidConfig;
use crate::chat::ButtonIntent;
use baton_policies::{Identity, Platform, Sender};
use serde::Deserialize;
use serde_json::Value;

/// The fields of an activity Baton reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Activity {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
    pub name: Option<String>,
    pub channel_id: Option<String>,
    pub service_url: Option<String>,
    pub from: Option<Account>,
    pub conversation: Option<Conversation>,
    pub text: Option<String>,
    pub entities: Vec<Value>,
    pub channel_data: Option<ChannelData>,
    pub reply_to_id: Option<String>,
    pub value: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Account {
    pub id: Option<String>,
    pub name: Option<String>,
    pub aad_object_id: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Conversation {
    pub id: Option<String>,
    pub tenant_id: Option<String>,
    pub conversation_type: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ChannelData {
    pub tenant: Option<IdOnly>,
    pub channel: Option<IdOnly>,
    pub team: Option<IdOnly>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct IdOnly {
    pub id: Option<String>,
}

impl Activity {
    /// The activity's tenant: `channelData.tenant.id`, else `conversation.tenantId`.
    pub fn tenant(&self) -> Option<&str> {
        self.channel_data
            .as_ref()
            .and_then(|c| c.tenant.as_ref())
            .and_then(|t| t.id.as_deref())
            .or_else(|| self.conversation.as_ref().and_then(|c| c.tenant_id.as_deref()))
    }

    /// The conversation id (`19:…@thread.tacv2;messageid=…` in a channel).
    pub fn conversation_id(&self) -> Option<&str> {
        self.conversation.as_ref().and_then(|c| c.id.as_deref())
    }
}

/// A conversation id without its `;messageid=…` suffix: the channel.
pub fn channel_of(conversation_id: &str) -> &str {
    conversation_id.split(';').next().unwrap_or(conversation_id)
}

/// Why an authenticated activity is still refused (HTTP 403).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forbidden {
    /// From a tenant the configuration does not allow.
    Tenant,
    /// From a conversation that is not a configured channel.
    Channel,
    /// Its serviceUrl is outside the allowlist: Baton would not send its token there.
    ServiceUrl,
}

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Forbidden::Tenant => "the activity's tenant is not allowed",
            Forbidden::Channel => "the activity's conversation is not a configured channel",
            Forbidden::ServiceUrl => "the activity's serviceUrl is outside the allowlist",
        })
    }
}

/// What an authenticated, allowed activity is for Baton.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Text typed in a command channel, mentions removed.
    Text {
        conversation: String,
        sender: Sender,
        text: String,
        id: String,
    },
    /// A card button pressed; `invoke` when it came as `adaptiveCard/action` (answered in the
    /// HTTP response), otherwise an `Action.Submit` fallback message.
    Button {
        conversation: String,
        sender: Sender,
        intent: ButtonIntent,
        id: String,
        invoke: bool,
    },
    /// A button that is not one of Baton's (or stale data): the clicker is told so.
    UnknownButton { invoke: bool },
    /// Nothing to do (another activity type, typing in a mirror channel, an empty message).
    Ignored(&'static str),
}

/// Checks the tenant, the channel and the serviceUrl of an authenticated activity, then says
/// what it is.
pub fn classify(a: &Activity, cfg: &ValidConfig) -> Result<Incoming, Forbidden> {
    if !a.tenant().is_some_and(|t| cfg.tenant_allowed(t)) {
        return Err(Forbidden::Tenant);
    }
    let conversation = a.conversation_id().unwrap_or_default().to_string();
    let channel = channel_of(&conversation);
    if !cfg.serves(channel) {
        return Err(Forbidden::Channel);
    }
    let service_ok = a
        .service_url
        .as_deref()
        .and_then(|u| super::config::WebUrl::parse(u).ok())
        .is_some_and(|u| cfg.may_receive_token(&u));
    if !service_ok {
        return Err(Forbidden::ServiceUrl);
    }
    let id = a.id.clone().unwrap_or_default();
    let sender = sender_of(a);
    match a.kind.as_str() {
        "invoke" if a.name.as_deref() == Some("adaptiveCard/action") => {
            let action = a.value.as_ref().and_then(|v| v.get("action"));
            let verb = action.and_then(|x| x.get("verb")).and_then(Value::as_str);
            let data = action.and_then(|x| x.get("data"));
            Ok(match button(verb, data) {
                Some(intent) => Incoming::Button {
                    conversation,
                    sender,
                    intent,
                    id,
                    invoke: true,
                },
                None => Incoming::UnknownButton { invoke: true },
            })
        }
        "invoke" => Ok(Incoming::Ignored("an invoke Baton does not handle")),
        "message" => {
            let typed = a.text.as_deref().is_some_and(|t| !t.trim().is_empty());
            if let (Some(value), false) = (&a.value, typed) {
                // An Action.Submit click: the data (with its verb) arrives as the value.
                let verb = value.get("verb").and_then(Value::as_str);
                return Ok(match button(verb, Some(value)) {
                    Some(intent) => Incoming::Button {
                        conversation,
                        sender,
                        intent,
                        id,
                        invoke: false,
                    },
                    None => Incoming::UnknownButton { invoke: false },
                });
            }
            if !cfg.is_command_channel(channel) {
                return Ok(Incoming::Ignored("typed in a mirror channel"));
            }
            let text = command_text(a);
            if text.is_empty() {
                return Ok(Incoming::Ignored("an empty message"));
            }
            Ok(Incoming::Text {
                conversation,
                sender,
                text,
                id,
            })
        }
        _ => Ok(Incoming::Ignored("an activity type Baton does not handle")),
    }
}

/// The sender: verified by the Entra object id the (authenticated) activity names.
pub fn sender_of(a: &Activity) -> Sender {
    let from = a.from.clone().unwrap_or_default();
    let display: String = from
        .name
        .as_deref()
        .unwrap_or("someone")
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    match from
        .aad_object_id
        .as_deref()
        .map(|id| Identity::new(Platform::Teams, id))
    {
        Some(Ok(identity)) => Sender::Verified(identity),
        _ => Sender::Unverified {
            display,
            why: "Teams did not say which Entra account you are (guests, anonymous and some meeting users); \
                  only signed-in members of the tenant may request or approve"
                .to_string(),
        },
    }
}

/// A button's verb and data (`{"run": "7", "plan": "d974d3765c60"}`) as a button intent.
fn button(verb: Option<&str>, data: Option<&Value>) -> Option<ButtonIntent> {
    let data = data?;
    let run = match data.get("run")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let plan = data.get("plan")?.as_str()?;
    ButtonIntent::decode(&format!("{}:{run}:{plan}", verb?))
}

/// The text of a message with every mention its entities list removed, Teams' non-breaking
/// spaces made plain, and trimmed.
pub fn command_text(a: &Activity) -> String {
    let mut text = a.text.clone().unwrap_or_default();
    for e in &a.entities {
        if e.get("type").and_then(Value::as_str) == Some("mention")
            && let Some(m) = e.get("text").and_then(Value::as_str)
            && !m.is_empty()
        {
            text = text.replace(m, " ");
        }
    }
    text.replace("&nbsp;", " ").replace('\u{a0}', " ").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::teams::config::TeamsConfig;
    use crate::run::RunId;
    use secrecy::SecretString;
    use serde_json::json;

    const TENANT: &str = "72f988bf-0000-4000-8000-00000000c0de";
    const CHANNEL: &str = "19:aaaa@thread.tacv2";
    const MIRROR: &str = "19:bbbb@thread.tacv2";
    const SERVICE: &str = "https://smba.trafficmanager.net/emea/";
    const BOB: &str = "7a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d";

    fn cfg() -> ValidConfig {
        let mut c = TeamsConfig::new(
            "8d4e6f0a-5b1c-4c3e-9f27-6a1d2b3c4d5e",
            SecretString::from("s"),
            TENANT,
            "127.0.0.1:0".parse().expect("an address"),
        );
        c.channels.push(CHANNEL.into());
        c.mirror_channels.push(MIRROR.into());
        c.validate().expect("valid")
    }

    fn message(text: &str) -> serde_json::Value {
        json!({
            "type": "message", "id": "1700000000001", "channelId": "msteams", "serviceUrl": SERVICE,
            "from": {"id": "29:1abc", "name": "Bob", "aadObjectId": BOB.to_uppercase()},
            "conversation": {"isGroup": true, "conversationType": "channel", "tenantId": TENANT,
                             "id": format!("{CHANNEL};messageid=1700000000001")},
            "text": text, "textFormat": "plain",
            "entities": [{"type": "mention", "text": "<at>Baton</at>", "mentioned": {"id": "28:app", "name": "Baton"}},
                         {"type": "clientInfo", "locale": "en-US"}],
            "channelData": {"tenant": {"id": TENANT}, "channel": {"id": CHANNEL}},
        })
    }

    fn check(v: serde_json::Value) -> Result<Incoming, Forbidden> {
        let a: Activity = serde_json::from_value(v).expect("an activity");
        classify(&a, &cfg())
    }

    fn bob() -> Sender {
        Sender::Verified(Identity::parse(&format!("teams:{BOB}")).expect("an identity"))
    }

    #[test]
    fn a_mention_is_stripped_and_the_sender_is_the_entra_object() {
        let got = check(message(
            "<at>Baton</at>&nbsp;!failover xmpp EdgePool2 <at>Baton</at> now",
        ));
        assert_eq!(
            got,
            Ok(Incoming::Text {
                conversation: format!("{CHANNEL};messageid=1700000000001"),
                sender: bob(),
                text: "!failover xmpp EdgePool2   now".into(),
                id: "1700000000001".into(),
            })
        );
    }

    #[test]
    fn without_an_entra_object_id_the_sender_is_unverified() {
        let mut m = message("<at>Baton</at> !status");
        m["from"].as_object_mut().expect("an object").remove("aadObjectId");
        let Ok(Incoming::Text { sender, .. }) = check(m.clone()) else {
            panic!("still a message")
        };
        assert!(
            matches!(sender, Sender::Unverified { ref display, .. } if display == "Bob"),
            "{sender:?}"
        );
        m["from"]["aadObjectId"] = json!("not-a-guid");
        let Ok(Incoming::Text { sender, .. }) = check(m) else {
            panic!("still a message")
        };
        assert!(matches!(sender, Sender::Unverified { .. }));
    }

    #[test]
    fn tenant_channel_and_service_url_are_checked() {
        let mut m = message("!status");
        m["channelData"]["tenant"]["id"] = json!("00000000-0000-4000-8000-000000000bad");
        assert_eq!(check(m), Err(Forbidden::Tenant));
        let mut m = message("!status");
        m["channelData"] = json!({});
        m["conversation"].as_object_mut().expect("an object").remove("tenantId");
        assert_eq!(check(m), Err(Forbidden::Tenant), "no tenant at all");
        let mut m = message("!status");
        m["conversation"]["id"] = json!("19:cccc@thread.tacv2;messageid=1");
        assert_eq!(check(m), Err(Forbidden::Channel));
        let mut m = message("!status");
        m["conversation"]["id"] = json!("a:1personal-chat");
        assert_eq!(check(m), Err(Forbidden::Channel));
        let mut m = message("!status");
        m["serviceUrl"] = json!("https://evil.example/");
        assert_eq!(check(m), Err(Forbidden::ServiceUrl));
    }

    #[test]
    fn typing_in_a_mirror_channel_is_not_read_but_clicks_there_count() {
        let mut m = message("<at>Baton</at> !failover xmpp EdgePool2");
        m["conversation"]["id"] = json!(format!("{MIRROR};messageid=5"));
        assert_eq!(check(m.clone()), Ok(Incoming::Ignored("typed in a mirror channel")));
        m["type"] = json!("invoke");
        m["name"] = json!("adaptiveCard/action");
        m["value"] = json!({"action": {"type": "Action.Execute", "verb": "approve", "data": {"run": "3", "plan": "d974d3765c60"}}, "trigger": "manual"});
        let Ok(Incoming::Button {
            intent,
            invoke,
            conversation,
            ..
        }) = check(m)
        else {
            panic!("a click")
        };
        assert!(invoke);
        assert_eq!(conversation, format!("{MIRROR};messageid=5"));
        assert_eq!(
            intent,
            ButtonIntent::Approve {
                run: RunId(3),
                plan: "d974d3765c60".into()
            }
        );
    }

    #[test]
    fn submit_fallbacks_and_bad_buttons() {
        let mut m = message("");
        m.as_object_mut().expect("an object").remove("text");
        m["value"] = json!({"verb": "deny", "run": 4, "plan": "ABCDEF"});
        assert_eq!(
            check(m.clone()),
            Ok(Incoming::Button {
                conversation: format!("{CHANNEL};messageid=1700000000001"),
                sender: bob(),
                intent: ButtonIntent::Deny {
                    run: RunId(4),
                    plan: "abcdef".into()
                },
                id: "1700000000001".into(),
                invoke: false,
            })
        );
        for bad in [
            json!({"verb": "retry", "run": 4, "plan": "abcdef"}),
            json!({"verb": "approve", "run": 0, "plan": "abcdef"}),
            json!({"verb": "approve", "run": "4; rm -rf", "plan": "abcdef"}),
            json!({"verb": "approve", "run": 4}),
            json!("approve"),
        ] {
            m["value"] = bad.clone();
            assert_eq!(check(m.clone()), Ok(Incoming::UnknownButton { invoke: false }), "{bad}");
        }
        let mut i = message("");
        i["type"] = json!("invoke");
        i["name"] = json!("adaptiveCard/action");
        i["value"] = json!({"action": {"verb": "approve", "data": {"req": "r1"}}});
        assert_eq!(check(i.clone()), Ok(Incoming::UnknownButton { invoke: true }));
        i["name"] = json!("task/fetch");
        assert_eq!(check(i), Ok(Incoming::Ignored("an invoke Baton does not handle")));
        let mut u = message("");
        u["type"] = json!("conversationUpdate");
        assert_eq!(
            check(u),
            Ok(Incoming::Ignored("an activity type Baton does not handle"))
        );
        assert_eq!(
            check(message("<at>Baton</at>")),
            Ok(Incoming::Ignored("an empty message"))
        );
    }
}
