//! The Discord adapter: Baton in Discord channels through serenity 0.12. serenity keeps the
//! gateway connection (intents GUILDS, GUILD_MESSAGES and the privileged MESSAGE_CONTENT),
//! resumes it after a drop and paces every REST call with its ratelimiter. The adapter turns
//! typed commands and button presses in the configured channels into [`Inbound`]s, answers
//! each click to the clicker alone within Discord's 3 seconds (deferring when Baton's decision
//! waits for the journal), and delivers [`Outbound`]s: lines as messages, a run's card as a
//! message with an embed and Approve/Deny buttons, and card updates as edits of that message.
//!
//! serenity hands each gateway event to its own task, so two messages sent within a few
//! milliseconds of each other may reach Baton in either order; the outbox keeps Baton's own
//! messages in order.
//!
//! Files: `config.rs` (settings), `section.rs` (`[chat.discord]`), `inbound.rs` (which events
//! reach Baton), `render.rs` (messages and cards as Discord shows them), `outbound.rs` (request
//! bodies and what a failure means), `interaction.rs` (answering the clicker).

pub mod config;
pub mod inbound;
pub mod interaction;
pub mod outbound;
pub mod render;
pub mod section;

pub use config::{DiscordConfig, StandIn};

use crate::chat::{Capabilities, ChatAdapter, Delivered, DeliveryError, Inbound, Link, MessageRef, Outbound};
use anyhow::Context as _;
use async_trait::async_trait;
use baton_policies::Platform;
use inbound::{Click, ClickFacts, MessageFacts};
use outbound::Failure;
use secrecy::ExposeSecret;
use serenity::all::{
    ChannelId, ClientBuilder, ConnectionStage, Context, CreateAllowedMentions, EventHandler, GatewayIntents, Guild,
    Http, HttpBuilder, Interaction, Message, MessageId, MessageType, Ready, ResumedEvent, ShardStageUpdateEvent,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// What Baton asks the gateway for: guilds and their channels, guild messages, and the text of
/// those messages (privileged: switched on in the Developer Portal).
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILDS | GatewayIntents::GUILD_MESSAGES | GatewayIntents::MESSAGE_CONTENT
}

/// What the adapter and its event handler share.
struct Shared {
    config: DiscordConfig,
    /// Every REST call (deliveries, answers to clicks) goes through this client and its
    /// ratelimiter.
    http: Arc<Http>,
    link: watch::Sender<Link>,
    /// Distinguishes this process's message nonces from another's.
    nonce_tag: String,
}

/// The Discord chat adapter. Build it with [`DiscordAdapter::new`], drive it with
/// [`ChatAdapter::run`], and post with [`ChatAdapter::deliver`] from any task.
pub struct DiscordAdapter {
    shared: Arc<Shared>,
}

/// The REST client: serenity's ratelimiter on, requests bounded in time, and for a stand-in on
/// this machine, `discord.com` resolved to it with only its CA trusted.
fn http(config: &DiscordConfig) -> anyhow::Result<Http> {
    let mut client = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30));
    if let Some(s) = &config.stand_in {
        let pem = std::fs::read(&s.ca_file).with_context(|| format!("reading {}", s.ca_file.display()))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate", s.ca_file.display()))?;
        client = client
            .resolve("discord.com", s.address)
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca);
    }
    let client = client.build().context("building the HTTPS client")?;
    Ok(HttpBuilder::new(config.token.expose_secret())
        .client(client)
        .default_allowed_mentions(CreateAllowedMentions::new())
        .build())
}

/// A short tag that differs between two starts of Baton.
fn nonce_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let alphabet = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = (nanos / 1000) as u64;
    let mut tag = String::new();
    for _ in 0..5 {
        tag.push(alphabet[(n % 36) as usize] as char);
        n /= 36;
    }
    tag
}

impl DiscordAdapter {
    /// Validates the settings and prepares the HTTPS client (a bad CA file is reported here).
    /// Does not connect.
    pub fn new(config: DiscordConfig) -> anyhow::Result<DiscordAdapter> {
        if let Err(problems) = config.validate() {
            let all: Vec<String> = problems.into_iter().map(|(k, m)| format!("discord.{k}: {m}")).collect();
            anyhow::bail!("invalid discord settings: {}", all.join("; "));
        }
        let http = Arc::new(http(&config)?);
        let (link, _) = watch::channel(Link::default());
        Ok(DiscordAdapter {
            shared: Arc::new(Shared {
                config,
                http,
                link,
                nonce_tag: nonce_tag(),
            }),
        })
    }

    /// A live view of the connection.
    pub fn status(&self) -> watch::Receiver<Link> {
        self.shared.link.subscribe()
    }

    /// Waits (at most `timeout`) until a gateway session is established.
    pub async fn wait_until_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut status = self.status();
        tokio::time::timeout(timeout, status.wait_for(|s| s.online && s.sessions > 0))
            .await
            .map_err(|_| anyhow::anyhow!("no Discord session within {timeout:?}"))?
            .map(|_| ())
            .map_err(|_| anyhow::anyhow!("the Discord adapter stopped"))
    }

    /// One gateway client from `GET /gateway` to its end: Ok when shut down, Err when serenity
    /// gave up (a fatal close code, or the URL could not be had).
    async fn session(&self, inbound: &mpsc::Sender<Inbound>, shutdown: &CancellationToken) -> anyhow::Result<()> {
        // Asked here first: when it fails, serenity would fall back to Discord's public
        // gateway, which a stand-in's tests must never reach.
        let url = self
            .shared
            .http
            .get_gateway()
            .await
            .map_err(|e| anyhow::anyhow!("asking Discord for the gateway: {}", Failure::of(&e).message))?
            .url;
        let handler = Handler {
            shared: self.shared.clone(),
            inbound: inbound.clone(),
        };
        let mut client = ClientBuilder::new_with_http(http(&self.shared.config)?, intents())
            .event_handler(handler)
            .await
            .context("preparing the gateway client")?;
        *client.ws_url.lock().await = url;
        let manager = client.shard_manager.clone();
        tokio::select! {
            result = client.start() => result.map_err(|e| anyhow::anyhow!("the gateway session ended: {e}")),
            _ = shutdown.cancelled() => {
                manager.shutdown_all().await;
                Ok(())
            }
        }
    }

    fn set_link(&self, f: impl FnOnce(&mut Link)) {
        self.shared.link.send_modify(f);
    }
}

#[async_trait]
impl ChatAdapter for DiscordAdapter {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cards: true,
            edit_interval: self.shared.config.edit_interval,
        }
    }

    fn link(&self) -> Option<watch::Receiver<Link>> {
        Some(self.status())
    }

    async fn run(&self, inbound: mpsc::Sender<Inbound>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let config = &self.shared.config;
        if let Some(s) = &config.stand_in {
            warn!(address = %s.address, "talking to a Discord stand-in on this machine, not to discord.com");
        }
        let mut wait = config.reconnect_initial;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let sessions = self.shared.link.borrow().sessions;
            match self.session(&inbound, &shutdown).await {
                Ok(()) if shutdown.is_cancelled() => break,
                Ok(()) => warn!("the gateway client stopped; connecting again"),
                Err(e) => error!(error = %format!("{e:#}"), retry_in = ?wait, "Discord connection failed"),
            }
            self.set_link(|l| l.online = false);
            if self.shared.link.borrow().sessions > sessions {
                wait = config.reconnect_initial;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => break,
            }
            wait = (wait * 2).min(config.reconnect_max);
        }
        self.set_link(|l| {
            l.online = false;
            l.joined.clear();
        });
        Ok(())
    }

    async fn deliver(&self, message: &Outbound) -> Result<Delivered, DeliveryError> {
        let room = &message.room;
        let channel = match (room.platform, room.id.parse::<u64>()) {
            (Platform::Discord, Ok(c)) if c > 0 => c,
            _ => {
                return Err(DeliveryError::Permanent {
                    reason: format!("{room} is not a Discord channel"),
                });
            }
        };
        if self.shared.link.borrow().sessions == 0 {
            return Err(DeliveryError::transient("not connected to Discord yet"));
        }
        let shared = &self.shared;
        let http = shared.http.as_ref();
        let ch = ChannelId::new(channel);
        let text = render::rich(&message.body);
        let buttons = shared.config.is_command_channel(channel);
        let result = match (&message.card, &message.edit) {
            (Some(card), None) => {
                let view = render::card(card, buttons);
                let body = outbound::new_card(
                    &render::content(&text),
                    &view,
                    outbound::nonce(&shared.nonce_tag, message.id, 0),
                );
                ch.send_message(http, body).await.map(|m| Some(m.id))
            }
            (card, Some(reference)) => {
                let Ok(id) = reference.0.parse::<u64>() else {
                    return Err(DeliveryError::Permanent {
                        reason: format!("'{reference}' is not a Discord message id"),
                    });
                };
                let text = render::content(&text);
                let edit = match card {
                    Some(card) => outbound::card_edit(&text, &render::card(card, buttons)),
                    None => serenity::all::EditMessage::new()
                        .content(text.text.clone())
                        .allowed_mentions(outbound::allowed(&text.users)),
                };
                ch.edit_message(http, MessageId::new(id), edit)
                    .await
                    .map(|m| Some(m.id))
            }
            (None, None) => {
                let mut last = Ok(None);
                for (i, part) in render::split(&text).iter().enumerate() {
                    let body = outbound::line(part, outbound::nonce(&shared.nonce_tag, message.id, i));
                    last = ch.send_message(http, body).await.map(|m| Some(m.id));
                    if last.is_err() {
                        break;
                    }
                }
                last
            }
        };
        match result {
            Ok(id) => {
                debug!(
                    channel,
                    outbox = message.id,
                    edit = message.edit.is_some(),
                    "delivered to Discord"
                );
                Ok(Delivered {
                    reference: id.map(|id| MessageRef(id.get().to_string())),
                })
            }
            Err(e) => {
                let failure = Failure::of(&e);
                if failure.unknown_message() && message.edit.is_some() {
                    info!(
                        channel,
                        outbox = message.id,
                        "the card message is gone; a new one will be posted"
                    );
                }
                Err(failure.delivery())
            }
        }
    }
}

/// serenity's event handler: each event on its own task.
struct Handler {
    shared: Arc<Shared>,
    inbound: mpsc::Sender<Inbound>,
}

impl Handler {
    fn set_link(&self, f: impl FnOnce(&mut Link)) {
        self.shared.link.send_modify(f);
    }
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _: Context, ready: Ready) {
        self.shared.http.set_application_id(ready.application.id);
        let config = &self.shared.config;
        let channels = config
            .channels
            .iter()
            .chain(&config.mirror_channels)
            .map(u64::to_string);
        self.set_link(|l| {
            l.online = true;
            l.sessions += 1;
            l.joined = channels.collect();
        });
        info!(user = %ready.user.id, guilds = ready.guilds.len(), "Discord session ready");
    }

    async fn resume(&self, _: Context, _: ResumedEvent) {
        self.set_link(|l| {
            l.online = true;
            l.sessions += 1;
        });
        info!("Discord session resumed");
    }

    async fn shard_stage_update(&self, _: Context, event: ShardStageUpdateEvent) {
        let connected = event.new == ConnectionStage::Connected;
        if !connected {
            debug!(stage = %event.new, "Discord gateway connection not ready");
        }
        // REST deliveries go on meanwhile; this is what health checks and tests read.
        self.set_link(|l| l.online = connected && l.sessions > 0);
    }

    async fn guild_create(&self, _: Context, guild: Guild, _: Option<bool>) {
        let config = &self.shared.config;
        if !config.guilds.contains(&guild.id.get()) {
            warn!(guild = %guild.id, "the bot is in a guild Baton is not configured for; it is ignored");
            return;
        }
        for c in config.channels.iter().chain(&config.mirror_channels) {
            if !guild.channels.contains_key(&ChannelId::new(*c)) {
                debug!(channel = c, guild = %guild.id, "a configured channel is not in this guild");
            }
        }
    }

    async fn message(&self, _: Context, msg: Message) {
        let facts = MessageFacts {
            id: msg.id.get(),
            channel: msg.channel_id.get(),
            guild: msg.guild_id.map(|g| g.get()),
            author: msg.author.id.get(),
            author_bot: msg.author.bot,
            webhook: msg.webhook_id.is_some(),
            typed: matches!(msg.kind, MessageType::Regular | MessageType::InlineReply),
            content: msg.content,
        };
        match inbound::message(&self.shared.config, &facts) {
            Ok(m) => {
                if self.inbound.send(m).await.is_err() {
                    debug!("Baton no longer listens; message dropped");
                }
            }
            Err(why) => debug!(channel = facts.channel, id = facts.id, ?why, "message ignored"),
        }
    }

    async fn interaction_create(&self, _: Context, interaction: Interaction) {
        let Interaction::Component(ci) = interaction else {
            return;
        };
        let received = tokio::time::Instant::now();
        let facts = ClickFacts {
            id: ci.id.get(),
            channel: ci.channel_id.get(),
            guild: ci.guild_id.map(|g| g.get()),
            user: ci.user.id.get(),
            custom_id: ci.data.custom_id.clone(),
        };
        match inbound::click(&self.shared.config, &facts) {
            Click::Refuse(why) => {
                interaction::refuse(&self.shared.http, &ci, &why).await;
            }
            Click::Press(press) => {
                interaction::press(
                    &self.shared.http,
                    &self.shared.config,
                    &ci,
                    press,
                    &self.inbound,
                    received,
                )
                .await;
            }
        }
    }
}
