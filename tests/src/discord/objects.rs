//! Discord's JSON objects as the stand-in sends them: users, members, roles, channels, guilds,
//! messages, interactions, gateway frames and error bodies. Pure functions of their inputs; every
//! field serenity 0.12.5 requires is present (the unit tests parse each object with serenity and
//! show that leaving out a required field loses the event).

use super::config::{ChannelKind, ChannelSpec, GuildSpec, RoleSpec, StandInConfig, UserSpec};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

/// Discord's epoch (2015-01-01T00:00:00Z) in Unix milliseconds.
pub const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// `attachment_size_limit` of an interaction: 10 MiB, the limit of an unboosted guild.
pub const ATTACHMENT_SIZE_LIMIT: u64 = 10 * 1024 * 1024;

/// The permissions the bot and members get in interactions (VIEW_CHANNEL, SEND_MESSAGES,
/// EMBED_LINKS, READ_MESSAGE_HISTORY, USE_EXTERNAL_EMOJIS, CREATE_PUBLIC_THREADS,
/// SEND_MESSAGES_IN_THREADS), as the decimal string Discord uses.
pub const MEMBER_PERMISSIONS: &str = "309237763072";

/// Makes Discord-shaped snowflakes: milliseconds since the Discord epoch, worker 1, an increment.
#[derive(Debug, Default)]
pub struct Snowflakes {
    last_ms: u64,
    increment: u64,
}

impl Snowflakes {
    /// A fresh id, larger than every id made before by this generator.
    pub fn next(&mut self, now: SystemTime) -> u64 {
        let unix_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let ms = unix_ms.saturating_sub(DISCORD_EPOCH_MS).max(self.last_ms);
        if ms == self.last_ms {
            self.increment += 1;
            if self.increment >= 1 << 12 {
                // The increment is 12 bits: borrow the next millisecond, as Discord's workers do.
                self.last_ms += 1;
                self.increment = 0;
            }
        } else {
            self.last_ms = ms;
            self.increment = 0;
        }
        (self.last_ms << 22) | (1 << 17) | self.increment
    }
}

/// ISO 8601 with microseconds and `+00:00`, as Discord writes timestamps.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// A user object.
pub fn user(u: &UserSpec) -> Value {
    let mut v = json!({
        "id": u.id.to_string(),
        "username": u.name,
        "global_name": if u.bot { Value::Null } else { Value::from(u.name.clone()) },
        "discriminator": "0",
        "avatar": null,
        "public_flags": 0,
        "flags": 0,
        "banner": null,
        "accent_color": null,
        "avatar_decoration_data": null,
        "collectibles": null,
        "primary_guild": null,
    });
    if u.bot {
        v["bot"] = Value::Bool(true);
    }
    v
}

/// The author of a message sent through a webhook `webhook_id` named `name`.
pub fn webhook_author(webhook_id: u64, name: &str) -> Value {
    json!({
        "id": webhook_id.to_string(),
        "username": name,
        "avatar": null,
        "discriminator": "0000",
        "bot": true,
        "public_flags": 0,
        "flags": 0,
        "global_name": null,
    })
}

/// A guild member object without `user` (as in MESSAGE_CREATE), joined at `joined_at`.
pub fn member(u: &UserSpec, joined_at: &str) -> Value {
    json!({
        "roles": u.roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "nick": null,
        "avatar": null,
        "banner": null,
        "premium_since": null,
        "joined_at": joined_at,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "communication_disabled_until": null,
        "unusual_dm_activity_until": null,
        "avatar_decoration_data": null,
    })
}

/// A guild member object with `user` (as in GUILD_CREATE and interactions), with the channel
/// permissions interactions carry.
pub fn member_with_user(u: &UserSpec, joined_at: &str) -> Value {
    let mut m = member(u, joined_at);
    m["user"] = user(u);
    m["permissions"] = Value::from(MEMBER_PERMISSIONS);
    m
}

fn role_object(id: u64, name: &str, position: u64, permissions: &str) -> Value {
    json!({
        "id": id.to_string(),
        "name": name,
        "description": null,
        "color": 0,
        "colors": { "primary_color": 0, "secondary_color": null, "tertiary_color": null },
        "hoist": false,
        "icon": null,
        "unicode_emoji": null,
        "position": position,
        "permissions": permissions,
        "managed": false,
        "mentionable": false,
        "flags": 0,
    })
}

/// The guild's roles: `@everyone` (id = guild id) and the configured ones.
pub fn roles(guild: &GuildSpec) -> Vec<Value> {
    let mut all = vec![role_object(guild.id, "@everyone", 0, "2248473465835073")];
    all.extend(
        guild
            .roles
            .iter()
            .enumerate()
            .map(|(i, RoleSpec { id, name })| role_object(*id, name, i as u64 + 1, "2248473465835073")),
    );
    all
}

/// A guild text channel object as GET /channels/{id} answers it (`guild_id` included).
pub fn text_channel(spec: &ChannelSpec, guild_id: u64, position: usize) -> Value {
    json!({
        "id": spec.id.to_string(),
        "type": 0,
        "guild_id": guild_id.to_string(),
        "name": spec.name,
        "position": position,
        "permission_overwrites": [],
        "parent_id": null,
        "topic": null,
        "nsfw": false,
        "last_message_id": null,
        "rate_limit_per_user": 0,
        "flags": 0,
    })
}

/// A DM channel object.
pub fn dm_channel(spec: &ChannelSpec, recipient: &UserSpec) -> Value {
    json!({
        "id": spec.id.to_string(),
        "type": 1,
        "last_message_id": null,
        "flags": 0,
        "recipients": [user(recipient)],
    })
}

/// The channel object of `spec`, whichever kind it is.
pub fn channel(cfg: &StandInConfig, spec: &ChannelSpec, position: usize) -> Value {
    match &spec.kind {
        ChannelKind::Text => text_channel(spec, cfg.guild.id, position),
        ChannelKind::Dm { recipient } => {
            let fallback = UserSpec::person(*recipient, "unknown");
            dm_channel(spec, cfg.user(*recipient).unwrap_or(&fallback))
        }
    }
}

/// What a public thread started from a message is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadSpec {
    /// Discord gives a thread started from a message the message's id.
    pub id: u64,
    pub parent_id: u64,
    pub guild_id: u64,
    pub owner_id: u64,
    pub name: String,
    pub auto_archive_duration: u64,
    pub rate_limit_per_user: u64,
    pub created_at: String,
}

/// The channel object of a public thread (type 11), as POST …/threads answers it.
pub fn thread_channel(t: &ThreadSpec) -> Value {
    json!({
        "id": t.id.to_string(),
        "type": 11,
        "guild_id": t.guild_id.to_string(),
        "parent_id": t.parent_id.to_string(),
        "owner_id": t.owner_id.to_string(),
        "name": t.name,
        "last_message_id": null,
        "rate_limit_per_user": t.rate_limit_per_user,
        "message_count": 0,
        "member_count": 1,
        "total_message_sent": 0,
        "flags": 0,
        "thread_metadata": {
            "archived": false,
            "auto_archive_duration": t.auto_archive_duration,
            "archive_timestamp": t.created_at,
            "locked": false,
            "create_timestamp": t.created_at,
        },
        "member": {
            "id": t.id.to_string(),
            "user_id": t.owner_id.to_string(),
            "join_timestamp": t.created_at,
            "flags": 1,
            "muted": false,
            "mute_config": null,
        },
    })
}

/// Fields of a message object being made.
#[derive(Clone, Debug)]
pub struct MessageParts {
    pub id: u64,
    pub channel_id: u64,
    pub author: Value,
    pub content: String,
    pub timestamp: String,
    pub embeds: Vec<Value>,
    pub components: Vec<Value>,
    pub mentions: Vec<Value>,
    pub mention_roles: Vec<String>,
    pub mention_everyone: bool,
    /// Message type: 0 default, 19 reply.
    pub kind: u64,
    pub flags: u64,
    pub tts: bool,
    pub nonce: Option<Value>,
    pub webhook_id: Option<u64>,
    pub application_id: Option<u64>,
    pub message_reference: Option<Value>,
    pub referenced_message: Option<Value>,
    pub interaction_metadata: Option<Value>,
}

impl MessageParts {
    /// A plain message by `author` with `content`.
    pub fn new(id: u64, channel_id: u64, author: Value, content: &str, timestamp: String) -> MessageParts {
        MessageParts {
            id,
            channel_id,
            author,
            content: content.to_string(),
            timestamp,
            embeds: Vec::new(),
            components: Vec::new(),
            mentions: Vec::new(),
            mention_roles: Vec::new(),
            mention_everyone: false,
            kind: 0,
            flags: 0,
            tts: false,
            nonce: None,
            webhook_id: None,
            application_id: None,
            message_reference: None,
            referenced_message: None,
            interaction_metadata: None,
        }
    }
}

/// A message object as REST answers it (no `guild_id`, no `member`).
pub fn message(p: &MessageParts) -> Value {
    let mut v = json!({
        "id": p.id.to_string(),
        "channel_id": p.channel_id.to_string(),
        "author": p.author,
        "content": p.content,
        "timestamp": p.timestamp,
        "edited_timestamp": null,
        "tts": p.tts,
        "mention_everyone": p.mention_everyone,
        "mentions": p.mentions,
        "mention_roles": p.mention_roles,
        "attachments": [],
        "embeds": p.embeds,
        "components": p.components,
        "pinned": false,
        "type": p.kind,
        "flags": p.flags,
    });
    let extra: [(&str, Option<Value>); 6] = [
        ("nonce", p.nonce.clone()),
        ("webhook_id", p.webhook_id.map(|w| Value::from(w.to_string()))),
        ("application_id", p.application_id.map(|a| Value::from(a.to_string()))),
        ("message_reference", p.message_reference.clone()),
        ("referenced_message", p.referenced_message.clone()),
        ("interaction_metadata", p.interaction_metadata.clone()),
    ];
    for (key, value) in extra {
        if let Some(value) = value {
            v[key] = value;
        }
    }
    v
}

/// The gateway form of a stored message: the REST object plus `guild_id` and, for a guild
/// member's message, `member`.
pub fn gateway_message(rest: &Value, guild_id: Option<u64>, member: Option<Value>) -> Value {
    let mut v = rest.clone();
    if let Some(guild_id) = guild_id {
        v["guild_id"] = Value::from(guild_id.to_string());
        v["channel_type"] = Value::from(0);
    } else {
        v["channel_type"] = Value::from(1);
    }
    if let Some(member) = member {
        v["member"] = member;
    }
    v
}

/// Where a component interaction happens.
#[derive(Clone, Debug)]
pub enum InteractionPlace<'a> {
    /// In the guild's channel `channel`; the clicker is a member.
    Guild { cfg: &'a StandInConfig, channel: Value },
    /// In a DM channel; the clicker is a plain user.
    Dm { channel: Value },
}

/// An INTERACTION_CREATE payload (type 3, message component) for a click on the button
/// `custom_id` (component id `component_id`) of `message` by `clicker`.
pub struct ComponentClick<'a> {
    pub id: u64,
    pub application_id: u64,
    pub token: &'a str,
    pub custom_id: &'a str,
    pub component_id: Option<u64>,
    pub clicker: &'a UserSpec,
    pub joined_at: &'a str,
    pub channel_id: u64,
    pub message: &'a Value,
    pub place: InteractionPlace<'a>,
}

/// The `d` of an INTERACTION_CREATE for a button click.
pub fn component_interaction(c: &ComponentClick<'_>) -> Value {
    let mut data = json!({ "custom_id": c.custom_id, "component_type": 2 });
    if let Some(component_id) = c.component_id {
        data["id"] = Value::from(component_id);
    }
    let mut v = json!({
        "id": c.id.to_string(),
        "application_id": c.application_id.to_string(),
        "type": 3,
        "data": data,
        "channel_id": c.channel_id.to_string(),
        "token": c.token,
        "version": 1,
        "message": c.message,
        "app_permissions": MEMBER_PERMISSIONS,
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
    });
    match &c.place {
        InteractionPlace::Guild { cfg, channel } => {
            v["guild_id"] = Value::from(cfg.guild.id.to_string());
            v["guild"] = json!({ "id": cfg.guild.id.to_string(), "locale": "en-US", "features": [] });
            v["guild_locale"] = Value::from("en-US");
            v["channel"] = channel.clone();
            v["member"] = member_with_user(c.clicker, c.joined_at);
            v["authorizing_integration_owners"] = json!({ "0": cfg.guild.id.to_string() });
            v["context"] = Value::from(0);
        }
        InteractionPlace::Dm { channel } => {
            v["channel"] = channel.clone();
            v["user"] = user(c.clicker);
            v["authorizing_integration_owners"] = json!({ "0": "0" });
            v["context"] = Value::from(1);
        }
    }
    v
}

/// The `d` of READY.
pub fn ready(cfg: &StandInConfig, session_id: &str, resume_gateway_url: &str, shard: [u64; 2]) -> Value {
    json!({
        "v": 10,
        "user": {
            "id": cfg.bot.id.to_string(),
            "username": cfg.bot.name,
            "global_name": null,
            "discriminator": "0",
            "avatar": null,
            "bot": true,
            "verified": true,
            "mfa_enabled": false,
            "email": null,
            "flags": 0,
        },
        "guilds": [{ "id": cfg.guild.id.to_string(), "unavailable": true }],
        "session_id": session_id,
        "session_type": "normal",
        "resume_gateway_url": resume_gateway_url,
        "shard": shard,
        "application": { "id": cfg.application_id.to_string(), "flags": 0 },
        "private_channels": [],
        "presences": [],
        "relationships": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": ["loopback"],
        "user_settings": {},
        "_trace": ["[\"baton-discord-stand-in\"]"],
    })
}

/// The `d` of GUILD_CREATE: the whole guild with its channels and active threads. Without the
/// GUILD_MEMBERS intent Discord lists only the bot's own member, and so does this.
pub fn guild_create(cfg: &StandInConfig, joined_at: &str, threads: &[Value]) -> Value {
    let channels: Vec<Value> = cfg
        .channels
        .iter()
        .filter(|c| c.kind == ChannelKind::Text)
        .enumerate()
        .map(|(i, c)| {
            let mut ch = text_channel(c, cfg.guild.id, i);
            // Channels inside GUILD_CREATE carry no guild_id.
            if let Some(map) = ch.as_object_mut() {
                map.remove("guild_id");
            }
            ch
        })
        .collect();
    let mut guild = json!({
        "id": cfg.guild.id.to_string(),
        "name": cfg.guild.name,
        "icon": null,
        "icon_hash": null,
        "splash": null,
        "discovery_splash": null,
        "owner_id": cfg.guild.owner_id.to_string(),
        "afk_channel_id": null,
        "afk_timeout": 300,
        "widget_enabled": false,
        "widget_channel_id": null,
        "verification_level": 1,
        "default_message_notifications": 1,
        "explicit_content_filter": 0,
        "roles": roles(&cfg.guild),
        "emojis": [],
        "features": [],
        "mfa_level": 0,
        "application_id": null,
        "system_channel_id": null,
        "system_channel_flags": 0,
        "rules_channel_id": null,
        "max_presences": null,
        "max_members": 500000,
        "vanity_url_code": null,
        "description": null,
        "banner": null,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "public_updates_channel_id": null,
        "max_video_channel_users": 25,
        "max_stage_video_channel_users": 50,
    });
    let more = json!({
        "nsfw_level": 0,
        "nsfw": false,
        "stickers": [],
        "premium_progress_bar_enabled": false,
        "safety_alerts_channel_id": null,
        "incidents_data": null,
        "hub_type": null,
        "lazy": true,
        "joined_at": joined_at,
        "large": false,
        "unavailable": false,
        "member_count": cfg.users.len() + 1,
        "voice_states": [],
        "members": [member_with_user(&cfg.bot, joined_at)],
        "channels": channels,
        "threads": threads,
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "embedded_activities": [],
        "activity_instances": [],
    });
    if let (Value::Object(g), Value::Object(m)) = (&mut guild, more) {
        g.extend(m);
    }
    guild
}

/// A dispatch frame (op 0).
pub fn dispatch_frame(t: &str, seq: u64, d: Value) -> Value {
    json!({ "op": 0, "t": t, "s": seq, "d": d })
}

/// HELLO (op 10).
pub fn hello(heartbeat_interval_ms: u64) -> Value {
    json!({ "op": 10, "t": null, "s": null, "d": {
        "heartbeat_interval": heartbeat_interval_ms,
        "_trace": ["[\"baton-discord-stand-in\"]"],
    }})
}

/// HEARTBEAT_ACK (op 11).
pub fn heartbeat_ack() -> Value {
    json!({ "op": 11, "t": null, "s": null, "d": null })
}

/// HEARTBEAT (op 1) sent by the gateway to ask for an immediate heartbeat.
pub fn heartbeat_request() -> Value {
    json!({ "op": 1, "t": null, "s": null, "d": null })
}

/// INVALID_SESSION (op 9); `resumable` is `d`.
pub fn invalid_session(resumable: bool) -> Value {
    json!({ "op": 9, "t": null, "s": null, "d": resumable })
}

/// RECONNECT (op 7).
pub fn reconnect() -> Value {
    json!({ "op": 7, "t": null, "s": null, "d": null })
}

/// The `d` of RESUMED.
pub fn resumed() -> Value {
    json!({ "_trace": ["[\"baton-discord-stand-in\"]"] })
}

/// A JSON error body `{code, message}`.
pub fn error(code: u64, message: &str) -> Value {
    json!({ "message": message, "code": code })
}

#[cfg(test)]
mod tests {
    //! Every object parses with serenity 0.12.5; leaving out what serenity requires does not.
    use super::*;
    use serenity::model::prelude::*;

    fn cfg() -> StandInConfig {
        StandInConfig::example("t")
    }

    fn sample_message(cfg: &StandInConfig) -> Value {
        let mut p = MessageParts::new(10, 200, user(&cfg.bot), "plan", timestamp(Utc::now()));
        p.components = vec![json!({"type": 1, "id": 1, "components": [
            {"type": 2, "id": 2, "style": 3, "label": "Approve", "custom_id": "approve:7"}]})];
        message(&p)
    }

    fn click_payload(cfg: &StandInConfig) -> Value {
        let msg = sample_message(cfg);
        let channel = text_channel(&cfg.channels[0], cfg.guild.id, 0);
        component_interaction(&ComponentClick {
            id: 11,
            application_id: cfg.application_id,
            token: "tok",
            custom_id: "approve:7",
            component_id: Some(2),
            clicker: &cfg.users[1],
            joined_at: "2025-01-01T00:00:00.000000+00:00",
            channel_id: 200,
            message: &msg,
            place: InteractionPlace::Guild { cfg, channel },
        })
    }

    #[test]
    fn serenity_parses_every_object() {
        let cfg = cfg();
        let now = timestamp(Utc::now());
        let msg = sample_message(&cfg);
        let parsed: Message = serde_json::from_value(msg.clone()).expect("message parses");
        assert_eq!(parsed.components.len(), 1);
        let gw = gateway_message(&msg, Some(100), Some(member(&cfg.users[0], &now)));
        let parsed: Message = serde_json::from_value(gw).expect("gateway message parses");
        assert_eq!(parsed.guild_id, Some(GuildId::new(100)));
        let _: GuildChannel = serde_json::from_value(text_channel(&cfg.channels[0], 100, 0)).expect("text channel");
        let _: PrivateChannel = serde_json::from_value(channel(&cfg, &cfg.channels[2], 0)).expect("dm channel");
        let thread = thread_channel(&ThreadSpec {
            id: 10,
            parent_id: 200,
            guild_id: 100,
            owner_id: 900,
            name: "run".into(),
            auto_archive_duration: 1440,
            rate_limit_per_user: 0,
            created_at: now.clone(),
        });
        let parsed: GuildChannel = serde_json::from_value(thread).expect("thread parses");
        assert_eq!(parsed.kind, ChannelType::PublicThread);
        let ready: Ready = serde_json::from_value(ready(&cfg, "s", "ws://x/gw", [0, 1])).expect("ready parses");
        assert_eq!(ready.application.id, ApplicationId::new(900));
        let frame = dispatch_frame("GUILD_CREATE", 2, guild_create(&cfg, &now, &[]));
        let event: GatewayEvent = serde_json::from_value(frame).expect("guild create parses");
        let GatewayEvent::Dispatch(2, Event::GuildCreate(g)) = event else {
            panic!("not a guild create: {event:?}")
        };
        assert_eq!(g.guild.channels.len(), 2);
        assert_eq!(g.guild.roles.len(), 2);
        for frame in [hello(1000), heartbeat_ack(), invalid_session(false), reconnect()] {
            let _: GatewayEvent = serde_json::from_value(frame).expect("control frame parses");
        }
        let _: GatewayEvent = serde_json::from_value(dispatch_frame("RESUMED", 5, resumed())).expect("resumed");
    }

    #[test]
    fn serenity_parses_a_click_and_copies_the_member_user() {
        let cfg = cfg();
        let frame = dispatch_frame("INTERACTION_CREATE", 3, click_payload(&cfg));
        let event: GatewayEvent = serde_json::from_value(frame).expect("interaction parses");
        let GatewayEvent::Dispatch(_, Event::InteractionCreate(ev)) = event else {
            panic!("not an interaction")
        };
        let Interaction::Component(ci) = ev.interaction else {
            panic!("not a component interaction")
        };
        assert_eq!(ci.user.id, UserId::new(2));
        assert_eq!(ci.data.custom_id, "approve:7");
        assert_eq!(ci.member.expect("member").roles, vec![RoleId::new(500)]);
    }

    #[test]
    fn serenity_loses_a_click_missing_a_required_field() {
        let cfg = cfg();
        for field in [
            "locale",
            "entitlements",
            "attachment_size_limit",
            "token",
            "message",
            "version",
        ] {
            let mut d = click_payload(&cfg);
            d.as_object_mut().expect("object").remove(field);
            let frame = dispatch_frame("INTERACTION_CREATE", 3, d);
            // Serenity falls back to `Event::Unknown` (or fails): either way no handler sees a click.
            let parsed = serde_json::from_value::<GatewayEvent>(frame);
            assert!(
                !matches!(parsed, Ok(GatewayEvent::Dispatch(_, Event::InteractionCreate(_)))),
                "serenity accepted a click without {field}"
            );
        }
    }

    #[test]
    fn snowflakes_grow_and_carry_the_time() {
        let mut ids = Snowflakes::default();
        let now = SystemTime::now();
        let a = ids.next(now);
        let b = ids.next(now);
        assert!(b > a);
        let ms = (a >> 22) + DISCORD_EPOCH_MS;
        let unix_ms = now.duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64;
        assert_eq!(ms, unix_ms);
    }
}
