//! What a Discord stand-in is started with: the bot's token and identity, the people, the guild
//! with its roles and channels, and the knobs that differ from Discord's defaults in tests
//! (heartbeat interval, rate limits, the interaction windows, the privileged intents "enabled in
//! the Developer Portal").

use std::time::Duration;

/// Gateway intent bits (Discord's `GatewayIntentBits`).
pub mod intents {
    pub const GUILDS: u64 = 1 << 0;
    pub const GUILD_MEMBERS: u64 = 1 << 1;
    pub const GUILD_PRESENCES: u64 = 1 << 8;
    pub const GUILD_MESSAGES: u64 = 1 << 9;
    pub const DIRECT_MESSAGES: u64 = 1 << 12;
    pub const MESSAGE_CONTENT: u64 = 1 << 15;
    /// The three intents that need to be switched on in the Developer Portal.
    pub const PRIVILEGED: u64 = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT;
    /// Every bit Discord knows: 0..=16, 20, 21, 24, 25. Anything else closes the gateway with 4013.
    pub const KNOWN: u64 = 0x1_FFFF | (1 << 20) | (1 << 21) | (1 << 24) | (1 << 25);
    /// What Baton asks for: GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT = 33281.
    pub const BATON: u64 = GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT;
}

/// A Discord account known to the stand-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSpec {
    pub id: u64,
    /// The `username` (also used as `global_name`).
    pub name: String,
    pub bot: bool,
    /// Guild roles this user holds (ids from [`GuildSpec::roles`]).
    pub roles: Vec<u64>,
}

impl UserSpec {
    /// A person.
    pub fn person(id: u64, name: &str) -> UserSpec {
        UserSpec {
            id,
            name: name.to_string(),
            bot: false,
            roles: Vec::new(),
        }
    }

    /// Another bot (not the one under test).
    pub fn bot(id: u64, name: &str) -> UserSpec {
        UserSpec {
            bot: true,
            ..UserSpec::person(id, name)
        }
    }

    /// The same user holding `roles` in the guild.
    pub fn with_roles(mut self, roles: &[u64]) -> UserSpec {
        self.roles = roles.to_vec();
        self
    }
}

/// A role of the guild (besides `@everyone`, whose id is the guild's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSpec {
    pub id: u64,
    pub name: String,
}

/// The one guild the bot is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuildSpec {
    pub id: u64,
    pub name: String,
    pub owner_id: u64,
    pub roles: Vec<RoleSpec>,
}

/// What kind of channel a [`ChannelSpec`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// A guild text channel (type 0).
    Text,
    /// A direct-message channel (type 1) between the bot and `recipient`.
    Dm { recipient: u64 },
}

/// A channel that exists when the stand-in starts. Threads are made at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSpec {
    pub id: u64,
    pub name: String,
    pub kind: ChannelKind,
}

/// A per-route bucket: `limit` calls per `window` for each (route, major parameter), as Discord
/// announces in `X-RateLimit-*` headers and enforces with 429.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub window: Duration,
}

impl RateLimit {
    /// Discord's limit on creating and editing messages in one channel: 5 per 5 s.
    pub const DISCORD_MESSAGES: RateLimit = RateLimit {
        limit: 5,
        window: Duration::from_secs(5),
    };
}

/// Everything a [`super::DiscordStandIn`] starts with.
#[derive(Clone, Debug)]
pub struct StandInConfig {
    /// The bot token, without the `Bot ` prefix.
    pub token: String,
    /// The bot's own user (`bot: true`).
    pub bot: UserSpec,
    /// The application id (Discord makes it equal to the bot user's id for new applications).
    pub application_id: u64,
    /// Everyone else: people, other bots.
    pub users: Vec<UserSpec>,
    pub guild: GuildSpec,
    pub channels: Vec<ChannelSpec>,
    /// Sent in HELLO (Discord: 41250 ms).
    pub heartbeat_interval: Duration,
    /// Applied to every bucketed route.
    pub rate_limit: RateLimit,
    /// Privileged intents switched on for the application; asking for another one closes the
    /// gateway with 4014 (Discord's "Disallowed intent(s)").
    pub privileged_intents_enabled: u64,
    /// How long after the click the initial callback is accepted (Discord: 3 s).
    pub interaction_response_window: Duration,
    /// How long the interaction token works for follow-ups and `@original` (Discord: 15 min).
    pub interaction_token_lifetime: Duration,
}

impl StandInConfig {
    /// A guild "Contoso Ops" (id 100) with channels `#incidents` (200) and `#random` (201), a DM
    /// channel with alice (300), the bot `baton` (id and application id 900), the people alice
    /// (1), bob (2), carol (3) and another bot `otherbot` (4); role `edge-admins` (500) held by
    /// alice and bob. Discord's timings and limits, MESSAGE_CONTENT enabled.
    pub fn example(token: &str) -> StandInConfig {
        StandInConfig {
            token: token.to_string(),
            bot: UserSpec::bot(900, "baton"),
            application_id: 900,
            users: vec![
                UserSpec::person(1, "alice").with_roles(&[500]),
                UserSpec::person(2, "bob").with_roles(&[500]),
                UserSpec::person(3, "carol"),
                UserSpec::bot(4, "otherbot"),
            ],
            guild: GuildSpec {
                id: 100,
                name: "Contoso Ops".to_string(),
                owner_id: 1,
                roles: vec![RoleSpec {
                    id: 500,
                    name: "edge-admins".to_string(),
                }],
            },
            channels: vec![
                ChannelSpec {
                    id: 200,
                    name: "incidents".to_string(),
                    kind: ChannelKind::Text,
                },
                ChannelSpec {
                    id: 201,
                    name: "random".to_string(),
                    kind: ChannelKind::Text,
                },
                ChannelSpec {
                    id: 300,
                    name: "alice".to_string(),
                    kind: ChannelKind::Dm { recipient: 1 },
                },
            ],
            heartbeat_interval: Duration::from_millis(41_250),
            rate_limit: RateLimit::DISCORD_MESSAGES,
            privileged_intents_enabled: intents::MESSAGE_CONTENT,
            interaction_response_window: Duration::from_secs(3),
            interaction_token_lifetime: Duration::from_secs(15 * 60),
        }
    }

    /// The user with `id`, the bot included.
    pub fn user(&self, id: u64) -> Option<&UserSpec> {
        if self.bot.id == id {
            return Some(&self.bot);
        }
        self.users.iter().find(|u| u.id == id)
    }
}
