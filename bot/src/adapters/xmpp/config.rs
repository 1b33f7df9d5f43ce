//! The XMPP adapter's settings: account, server address, TLS mode, rooms, message size and
//! reconnect backoff, as a plain struct that the config loader fills and [`XmppConfig::validate`]
//! checks in one pass, reporting every problem with its key.

use secrecy::SecretString;
use std::path::PathBuf;
use std::time::Duration;
use tokio_xmpp::jid::{BareJid, Jid};

/// How the connection to the server is secured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS, the server's certificate verified against the system's roots (`ca_file: None`)
    /// or against the CA certificates in a PEM file. `server_name` overrides the name checked
    /// in the certificate (default: the JID's domain).
    StartTls {
        ca_file: Option<PathBuf>,
        server_name: Option<String>,
    },
    /// Plain TCP, no encryption: only when the config says so explicitly (loopback test servers).
    Plain,
}

/// One MUC room the bot joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    /// The room's bare JID, e.g. `incident@conference.contoso.com`.
    pub jid: String,
    /// The bot's nickname in that room.
    pub nick: String,
}

/// Everything the XMPP adapter needs.
#[derive(Clone, Debug)]
pub struct XmppConfig {
    /// The bot's account, a bare JID like `baton@contoso.com`.
    pub jid: String,
    pub password: SecretString,
    /// `host:port` of the server's client port; no SRV lookup is made.
    pub server: String,
    pub tls: TlsMode,
    /// Rooms whose messages are read as commands (replies and status go there too).
    pub rooms: Vec<RoomConfig>,
    /// Rooms the bot joins only to post copies of run status; messages there are not read.
    pub mirror_rooms: Vec<RoomConfig>,
    /// Longest message body in bytes; longer texts are split at line boundaries.
    pub max_message_bytes: usize,
    /// First wait after a failed connection attempt; doubled after each failure.
    pub reconnect_initial: Duration,
    /// Longest wait between connection attempts.
    pub reconnect_max: Duration,
    /// How long one connection attempt (TCP, TLS, authentication) may take.
    pub connect_timeout: Duration,
    /// How long `deliver` waits for the room to reflect a posted message before counting it
    /// late (tracked, and sent again after a reconnect only if the room's history lacks it).
    pub delivery_timeout: Duration,
    /// Where the rooms already told about hidden JIDs are remembered across restarts (beside
    /// the store in `baton run`); `None`: for the process only.
    pub notices_file: Option<PathBuf>,
}

impl XmppConfig {
    /// Settings with the defaults for everything but the account, server and rooms.
    pub fn new(jid: impl Into<String>, password: SecretString, server: impl Into<String>, tls: TlsMode) -> XmppConfig {
        XmppConfig {
            jid: jid.into(),
            password,
            server: server.into(),
            tls,
            rooms: Vec::new(),
            mirror_rooms: Vec::new(),
            max_message_bytes: 3000,
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            delivery_timeout: Duration::from_secs(10),
            notices_file: None,
        }
    }

    pub fn with_room(mut self, jid: impl Into<String>, nick: impl Into<String>) -> XmppConfig {
        self.rooms.push(RoomConfig {
            jid: jid.into(),
            nick: nick.into(),
        });
        self
    }

    pub fn with_mirror_room(mut self, jid: impl Into<String>, nick: impl Into<String>) -> XmppConfig {
        self.mirror_rooms.push(RoomConfig {
            jid: jid.into(),
            nick: nick.into(),
        });
        self
    }

    /// Checks every setting and returns all problems at once, each prefixed with its key.
    pub fn validate(&self) -> Result<ValidConfig, Vec<String>> {
        let mut errors = Vec::new();
        let jid = match BareJid::new(&self.jid) {
            Ok(j) if j.node().is_some() => Some(j),
            Ok(_) => {
                errors.push(format!(
                    "xmpp.jid: '{}' has no local part (expected like baton@contoso.com)",
                    self.jid
                ));
                None
            }
            Err(e) => {
                errors.push(format!("xmpp.jid: '{}' is not a bare JID: {e}", self.jid));
                None
            }
        };
        match self.server.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
                if self.tls == TlsMode::Plain && !is_loopback(host) {
                    errors.push(format!(
                        "xmpp.tls: \"plain\" would send the password and every message unencrypted to {host}; \
                         it is only for a server on loopback (127.0.0.1, ::1, localhost): use \"starttls\""
                    ));
                }
            }
            _ => errors.push(format!(
                "xmpp.server: '{}' must be host:port (no SRV lookup is made)",
                self.server
            )),
        }
        if let TlsMode::StartTls {
            ca_file: Some(path), ..
        } = &self.tls
            && !path.is_file()
        {
            errors.push(format!("xmpp.tls.ca_file: {} is not a readable file", path.display()));
        }
        if self.rooms.is_empty() {
            errors.push("xmpp.rooms: at least one room is needed".to_string());
        }
        let mut rooms = Vec::new();
        let all = self
            .rooms
            .iter()
            .map(|r| (r, false))
            .chain(self.mirror_rooms.iter().map(|r| (r, true)));
        for (room, mirror) in all {
            let key = if mirror { "xmpp.mirror_rooms" } else { "xmpp.rooms" };
            let bare = match BareJid::new(&room.jid) {
                Ok(j) if j.node().is_some() => Some(j),
                _ => {
                    errors.push(format!(
                        "{key}: '{}' is not a room JID like incident@conference.contoso.com",
                        room.jid
                    ));
                    None
                }
            };
            let nick_ok = bare.as_ref().is_some_and(|b| b.with_resource_str(&room.nick).is_ok());
            if room.nick.trim().is_empty() || !nick_ok {
                errors.push(format!(
                    "{key}: nickname '{}' for {} is not a valid nickname",
                    room.nick, room.jid
                ));
            }
            if let Some(bare) = bare {
                if rooms.iter().any(|r: &ValidRoom| r.jid == bare) {
                    errors.push(format!("{key}: {} is listed twice", room.jid));
                } else if nick_ok {
                    rooms.push(ValidRoom {
                        jid: bare,
                        nick: room.nick.clone(),
                        mirror_only: mirror,
                    });
                }
            }
        }
        if self.max_message_bytes < 200 {
            errors.push(format!(
                "xmpp.max_message_bytes: {} is too small (at least 200)",
                self.max_message_bytes
            ));
        }
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            errors.push("xmpp.reconnect: initial must be above zero and not above max".to_string());
        }
        for (key, d) in [
            ("xmpp.connect_timeout", self.connect_timeout),
            ("xmpp.delivery_timeout", self.delivery_timeout),
        ] {
            if d.is_zero() {
                errors.push(format!("{key}: must be above zero"));
            }
        }
        match (errors.is_empty(), jid) {
            (true, Some(jid)) => Ok(ValidConfig {
                jid,
                rooms,
                settings: self.clone(),
            }),
            _ => Err(errors),
        }
    }
}

/// Whether `host` (from `host:port`, IPv6 possibly in brackets) names this machine's loopback
/// interface: the only place an unencrypted stream may go.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A room after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ValidRoom {
    pub jid: BareJid,
    pub nick: String,
    pub mirror_only: bool,
}

/// Settings that passed [`XmppConfig::validate`].
#[derive(Clone, Debug)]
pub struct ValidConfig {
    pub(crate) jid: BareJid,
    pub(crate) rooms: Vec<ValidRoom>,
    pub(crate) settings: XmppConfig,
}

impl ValidConfig {
    pub fn jid(&self) -> Jid {
        Jid::from(self.jid.clone())
    }

    pub fn settings(&self) -> &XmppConfig {
        &self.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> XmppConfig {
        XmppConfig::new(
            "baton@contoso.test",
            SecretString::from("pw"),
            "127.0.0.1:5222",
            TlsMode::Plain,
        )
        .with_room("incident@conference.contoso.test", "baton")
    }

    fn check(config: XmppConfig, expect: &[&str]) {
        let got = match config.validate() {
            Ok(_) => Vec::new(),
            Err(errors) => errors,
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn accepts_a_good_config() {
        check(base(), &[]);
        check(base().with_mirror_room("audit@conference.contoso.test", "baton"), &[]);
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let mut bad = base();
        bad.jid = "contoso.test".into();
        bad.server = "localhost".into();
        bad.max_message_bytes = 10;
        bad.rooms.push(RoomConfig {
            jid: "incident@conference.contoso.test".into(),
            nick: "b".into(),
        });
        bad.rooms.push(RoomConfig {
            jid: "not a jid@".into(),
            nick: "".into(),
        });
        check(
            bad,
            &[
                "xmpp.jid: 'contoso.test' has no local part (expected like baton@contoso.com)",
                "xmpp.server: 'localhost' must be host:port (no SRV lookup is made)",
                "xmpp.rooms: incident@conference.contoso.test is listed twice",
                "xmpp.rooms: 'not a jid@' is not a room JID like incident@conference.contoso.com",
                "xmpp.rooms: nickname '' for not a jid@ is not a valid nickname",
                "xmpp.max_message_bytes: 10 is too small (at least 200)",
            ],
        );
        let mut none = base();
        none.rooms.clear();
        none.tls = TlsMode::StartTls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            server_name: None,
        };
        check(
            none,
            &[
                "xmpp.tls.ca_file: /nonexistent/ca.pem is not a readable file",
                "xmpp.rooms: at least one room is needed",
            ],
        );
    }

    #[test]
    fn plain_tcp_is_for_loopback_only() {
        for host in ["127.0.0.1:5222", "127.0.0.53:5222", "localhost:5222", "[::1]:5222"] {
            let mut c = base();
            c.server = host.into();
            check(c, &[]);
        }
        for host in ["xmpp.contoso.test:5222", "10.0.0.5:5222", "[2001:db8::1]:5222"] {
            let mut c = base();
            c.server = host.into();
            let h = host.rsplit_once(':').map(|(h, _)| h).unwrap_or_default();
            let want = format!(
                "xmpp.tls: \"plain\" would send the password and every message unencrypted to {h}; it is only \
                 for a server on loopback (127.0.0.1, ::1, localhost): use \"starttls\""
            );
            check(c.clone(), &[want.as_str()]);
            c.tls = TlsMode::StartTls {
                ca_file: None,
                server_name: None,
            };
            check(c, &[]);
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let mut config = base();
        config.password = SecretString::from("hunter2-secret");
        let shown = format!("{config:?} {:?}", config.validate());
        assert!(!shown.contains("hunter2-secret"), "{shown}");
    }
}
