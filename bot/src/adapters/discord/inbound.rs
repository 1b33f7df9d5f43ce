//! Which Discord events reach Baton, as pure rules over the facts of a message or a click:
//! only messages typed by people in a command channel of a configured guild become
//! [`Inbound`]s (a DM, a bot — Baton itself included —, a webhook, a system message, a mirror
//! or unknown channel change nothing); a click becomes a button press only there too, and
//! anything else is answered to the clicker alone with why.

use super::config::DiscordConfig;
use crate::chat::{ButtonIntent, Inbound, RoomRef};
use baton_policies::{Identity, Platform, Sender};

/// What a MESSAGE_CREATE says, as far as the rules need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageFacts {
    pub id: u64,
    pub channel: u64,
    /// `None` in a DM.
    pub guild: Option<u64>,
    pub author: u64,
    /// The author is a bot (Baton itself included).
    pub author_bot: bool,
    /// Posted through a webhook (its author is not a person of the guild).
    pub webhook: bool,
    /// A message people type (Discord's types 0 and 19, default and reply), not a system
    /// notice (joins, pins, thread starts).
    pub typed: bool,
    pub content: String,
}

/// Why a message was not taken (logged at debug level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    DirectMessage,
    OtherGuild,
    NotACommandChannel,
    FromABot,
    FromAWebhook,
    SystemMessage,
    Empty,
}

/// The room of a channel.
pub fn room(channel: u64) -> RoomRef {
    RoomRef::new(Platform::Discord, channel.to_string())
}

/// A person's identity.
pub fn identity(user: u64) -> Option<Identity> {
    Identity::new(Platform::Discord, &user.to_string()).ok()
}

/// The message as Baton's input, or why it is ignored.
pub fn message(config: &DiscordConfig, m: &MessageFacts) -> Result<Inbound, Ignored> {
    let Some(guild) = m.guild else {
        return Err(Ignored::DirectMessage);
    };
    if !config.guilds.contains(&guild) {
        return Err(Ignored::OtherGuild);
    }
    if !config.is_command_channel(m.channel) {
        return Err(Ignored::NotACommandChannel);
    }
    if m.webhook {
        return Err(Ignored::FromAWebhook);
    }
    if m.author_bot {
        return Err(Ignored::FromABot);
    }
    if !m.typed {
        return Err(Ignored::SystemMessage);
    }
    let Some(who) = identity(m.author).filter(|_| !m.content.trim().is_empty()) else {
        return Err(Ignored::Empty);
    };
    Ok(Inbound::text(
        room(m.channel),
        Sender::Verified(who),
        m.content.clone(),
        m.id.to_string(),
    ))
}

/// What an INTERACTION_CREATE for a component says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClickFacts {
    pub id: u64,
    pub channel: u64,
    pub guild: Option<u64>,
    pub user: u64,
    pub custom_id: String,
}

/// What to do with a click.
#[derive(Clone, Debug, PartialEq)]
pub enum Click {
    /// A press of one of Baton's buttons in a command channel: the daemon decides.
    Press(Inbound),
    /// Not for Baton to act on: tell the clicker this, and only them.
    Refuse(String),
}

/// The click as a button press, or the refusal to show the clicker.
pub fn click(config: &DiscordConfig, c: &ClickFacts) -> Click {
    let home = config
        .channels
        .first()
        .map(|ch| format!(" Use <#{ch}>."))
        .unwrap_or_default();
    let in_guild = c.guild.is_some_and(|g| config.guilds.contains(&g));
    if !in_guild || !config.is_command_channel(c.channel) {
        return Click::Refuse(format!("Baton takes approvals only in its incident channels.{home}"));
    }
    let Some(intent) = ButtonIntent::decode(&c.custom_id) else {
        return Click::Refuse("This button is not one Baton knows.".to_string());
    };
    let Some(who) = identity(c.user) else {
        return Click::Refuse("Discord did not say who clicked.".to_string());
    };
    let mut press = Inbound::text(room(c.channel), Sender::Verified(who), "", c.id.to_string());
    press.button = Some(intent);
    Click::Press(press)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunId;
    use secrecy::SecretString;

    const GUILD: u64 = 100;
    const INCIDENTS: u64 = 200;
    const AUDIT: u64 = 201;

    fn config() -> DiscordConfig {
        let mut c = DiscordConfig::new(SecretString::from("t"), vec![GUILD], vec![INCIDENTS]);
        c.mirror_channels = vec![AUDIT];
        c
    }

    fn typed(channel: u64, content: &str) -> MessageFacts {
        MessageFacts {
            id: 9001,
            channel,
            guild: Some(GUILD),
            author: 1,
            author_bot: false,
            webhook: false,
            typed: true,
            content: content.into(),
        }
    }

    #[test]
    fn a_person_in_a_command_channel_is_heard() {
        let got = message(&config(), &typed(INCIDENTS, "!status")).expect("taken");
        assert_eq!(got.room, RoomRef::new(Platform::Discord, "200"));
        assert_eq!(
            got.sender,
            Sender::Verified(Identity::parse("discord:1").expect("valid"))
        );
        assert_eq!(got.text, "!status");
        assert_eq!(got.message_id, "9001");
        assert!(got.button.is_none() && got.reply.is_none());
    }

    #[test]
    fn everything_else_is_ignored_with_its_reason() {
        let c = config();
        let cases: Vec<(MessageFacts, Ignored)> = vec![
            (
                MessageFacts {
                    guild: None,
                    ..typed(300, "!approve 1")
                },
                Ignored::DirectMessage,
            ),
            (
                MessageFacts {
                    guild: Some(999),
                    ..typed(INCIDENTS, "!approve 1")
                },
                Ignored::OtherGuild,
            ),
            (typed(AUDIT, "!approve 1"), Ignored::NotACommandChannel),
            (typed(202, "!approve 1"), Ignored::NotACommandChannel),
            (
                MessageFacts {
                    author_bot: true,
                    ..typed(INCIDENTS, "!approve 1")
                },
                Ignored::FromABot,
            ),
            (
                MessageFacts {
                    webhook: true,
                    ..typed(INCIDENTS, "!approve 1")
                },
                Ignored::FromAWebhook,
            ),
            (
                MessageFacts {
                    typed: false,
                    ..typed(INCIDENTS, "!approve 1")
                },
                Ignored::SystemMessage,
            ),
            (typed(INCIDENTS, "  "), Ignored::Empty),
        ];
        for (facts, why) in cases {
            assert_eq!(message(&c, &facts).map(|_| ()), Err(why), "{facts:?}");
        }
    }

    fn clicked(channel: u64, custom_id: &str) -> ClickFacts {
        ClickFacts {
            id: 77,
            channel,
            guild: Some(GUILD),
            user: 2,
            custom_id: custom_id.into(),
        }
    }

    #[test]
    fn a_click_on_a_baton_button_is_a_press() {
        let Click::Press(p) = click(&config(), &clicked(INCIDENTS, "approve:7:d974d3765c60")) else {
            panic!("taken")
        };
        assert_eq!(
            p.button,
            Some(ButtonIntent::Approve {
                run: RunId(7),
                plan: "d974d3765c60".into()
            })
        );
        assert_eq!(p.message_id, "77");
        assert_eq!(p.sender, Sender::Verified(Identity::parse("discord:2").expect("valid")));
    }

    #[test]
    fn other_clicks_are_refused_to_the_clicker() {
        let c = config();
        let elsewhere = "Baton takes approvals only in its incident channels. Use <#200>.";
        for (facts, says) in [
            (clicked(AUDIT, "approve:7:d974d3765c60"), elsewhere),
            (
                ClickFacts {
                    guild: None,
                    ..clicked(INCIDENTS, "approve:7:d974d3765c60")
                },
                elsewhere,
            ),
            (clicked(INCIDENTS, "approve:7"), "This button is not one Baton knows."),
            (
                clicked(INCIDENTS, "retry:7:d974d3765c60"),
                "This button is not one Baton knows.",
            ),
        ] {
            assert_eq!(click(&c, &facts), Click::Refuse(says.to_string()), "{facts:?}");
        }
    }
}
