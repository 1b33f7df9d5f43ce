//! The Discord adapter's settings: the bot token, the guilds and channels Baton serves and
//! mirrors, the card edit interval and reconnect backoff, and (for tests only) a Discord
//! stand-in on this machine; [`DiscordConfig::validate`] checks them in one pass and reports
//! every problem with its key.

use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A Discord stand-in on this machine (tests): `discord.com` resolves to `address`, and its
/// certificate must chain to the CA in `ca_file` (the system's roots are not trusted then).
/// Only loopback addresses are accepted, so the token can never be sent off the machine this
/// way; without it Baton talks to discord.com with the system's roots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandIn {
    pub address: SocketAddr,
    pub ca_file: PathBuf,
}

/// Everything the Discord adapter needs.
#[derive(Clone, Debug)]
pub struct DiscordConfig {
    /// The bot's token (Developer Portal, Bot, Reset Token).
    pub token: SecretString,
    /// Guilds (servers) whose channels Baton serves; messages from any other guild are ignored.
    pub guilds: Vec<u64>,
    /// Channels whose messages are read as commands (replies, plans and cards go there too).
    pub channels: Vec<u64>,
    /// Channels that receive a copy of every run message, without buttons; nothing is read
    /// there.
    pub mirror_channels: Vec<u64>,
    /// The least time between two edits of one run's card (Discord allows 5 messages or edits
    /// per 5 s in a channel).
    pub edit_interval: Duration,
    /// First wait after a failed connection attempt; doubled after each failure.
    pub reconnect_initial: Duration,
    /// Longest wait between connection attempts.
    pub reconnect_max: Duration,
    /// How long a button press waits for Baton's decision before it is deferred (Discord wants
    /// an answer within 3 s of the click); zero defers every click. Not read from the
    /// configuration file.
    pub answer_within: Duration,
    /// Talk to a stand-in on this machine instead of discord.com (tests).
    pub stand_in: Option<StandIn>,
}

/// Discord's limit on how long an interaction may go unanswered.
pub const DISCORD_ANSWER_WINDOW: Duration = Duration::from_secs(3);

impl DiscordConfig {
    /// Settings with the defaults for everything but the token, guilds and channels.
    pub fn new(token: SecretString, guilds: Vec<u64>, channels: Vec<u64>) -> DiscordConfig {
        DiscordConfig {
            token,
            guilds,
            channels,
            mirror_channels: Vec::new(),
            edit_interval: Duration::from_secs(1),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(120),
            answer_within: Duration::from_millis(2000),
            stand_in: None,
        }
    }

    /// Whether `channel` is one where commands are read.
    pub fn is_command_channel(&self, channel: u64) -> bool {
        self.channels.contains(&channel)
    }

    /// Whether Baton posts in `channel` at all.
    pub fn is_known_channel(&self, channel: u64) -> bool {
        self.channels.contains(&channel) || self.mirror_channels.contains(&channel)
    }

    /// Checks every setting; returns all problems at once as (key, message), the key relative
    /// to `[chat.discord]`.
    pub fn validate(&self) -> Result<(), Vec<(&'static str, String)>> {
        let mut errors: Vec<(&'static str, String)> = Vec::new();
        if self.guilds.is_empty() {
            errors.push(("guilds", "at least one guild id is needed".into()));
        }
        if self.channels.is_empty() {
            errors.push(("channels", "at least one channel id is needed".into()));
        }
        for (key, list) in [
            ("guilds", &self.guilds),
            ("channels", &self.channels),
            ("mirror_channels", &self.mirror_channels),
        ] {
            for (i, id) in list.iter().enumerate() {
                if list[..i].contains(id) {
                    errors.push((key, format!("{id} is listed twice")));
                }
            }
        }
        for id in &self.mirror_channels {
            if self.channels.contains(id) {
                errors.push((
                    "mirror_channels",
                    format!("{id} is also a command channel; a channel is one or the other"),
                ));
            }
        }
        if self.edit_interval < Duration::from_millis(200) || self.edit_interval > Duration::from_secs(60) {
            errors.push((
                "edit_interval",
                format!(
                    "{} is out of range (200ms to 60s)",
                    humantime::format_duration(self.edit_interval)
                ),
            ));
        }
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            errors.push((
                "reconnect_initial",
                "must be above zero and not above reconnect_max".into(),
            ));
        }
        if self.answer_within >= DISCORD_ANSWER_WINDOW {
            errors.push((
                "answer_within",
                "must leave time within Discord's 3 s to answer a click".into(),
            ));
        }
        if let Some(s) = &self.stand_in {
            if !s.address.ip().is_loopback() {
                errors.push((
                    "stand_in",
                    format!(
                        "address {} is not a loopback address: a stand-in runs on this machine (Baton talks to discord.com otherwise)",
                        s.address
                    ),
                ));
            }
            if !s.ca_file.is_file() {
                errors.push((
                    "stand_in",
                    format!("ca_file {} is not a readable file", s.ca_file.display()),
                ));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> DiscordConfig {
        DiscordConfig::new(SecretString::from("tok"), vec![100], vec![200])
    }

    fn check(config: DiscordConfig, expect: &[&str]) {
        let got: Vec<String> = match config.validate() {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_iter().map(|(k, m)| format!("{k}: {m}")).collect(),
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn accepts_a_good_config() {
        check(base(), &[]);
        let mut mirrored = base();
        mirrored.mirror_channels = vec![201];
        check(mirrored, &[]);
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let mut bad = base();
        bad.guilds.clear();
        bad.channels = vec![200, 200];
        bad.mirror_channels = vec![200];
        bad.edit_interval = Duration::from_millis(10);
        bad.answer_within = Duration::from_secs(3);
        bad.stand_in = Some(StandIn {
            address: "192.0.2.7:443".parse().expect("an address"),
            ca_file: "/nonexistent/ca.pem".into(),
        });
        check(
            bad,
            &[
                "guilds: at least one guild id is needed",
                "channels: 200 is listed twice",
                "mirror_channels: 200 is also a command channel; a channel is one or the other",
                "edit_interval: 10ms is out of range (200ms to 60s)",
                "answer_within: must leave time within Discord's 3 s to answer a click",
                "stand_in: address 192.0.2.7:443 is not a loopback address: a stand-in runs on this machine (Baton talks to discord.com otherwise)",
                "stand_in: ca_file /nonexistent/ca.pem is not a readable file",
            ],
        );
        let mut none = base();
        none.channels.clear();
        none.reconnect_max = Duration::ZERO;
        check(
            none,
            &[
                "channels: at least one channel id is needed",
                "reconnect_initial: must be above zero and not above reconnect_max",
            ],
        );
    }

    #[test]
    fn debug_output_hides_the_token() {
        let mut config = base();
        config.token = SecretString::from("MTIz.discord-token-secret");
        let shown = format!("{config:?} {:?}", config.validate());
        assert!(!shown.contains("discord-token-secret"), "{shown}");
    }
}
