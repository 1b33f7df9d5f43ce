//! The Teams adapter: Baton in Microsoft Teams channels over the Bot Framework protocol, without
//! an SDK (Microsoft archived them; the wire protocol is stable). Inbound, a messaging endpoint
//! that authenticates every activity completely before acting on it; outbound, the Bot
//! Connector REST API with the bot's own access token. A run's card is an Adaptive Card posted
//! once per channel thread and updated in place; its buttons are `Action.Execute`, answered to
//! the clicker in the invoke's HTTP response.
//!
//! Rooms: a command is read in a channel thread (`19:…@thread.tacv2;messageid=<root>`), and
//! that thread is its room: replies and the run's card go there. A mirror channel
//! (`19:…@thread.tacv2`) gets a new thread per run (`POST v3/conversations`), and the run's
//! later messages in that thread (while Baton runs; after a restart, a run's next message
//! there starts a new thread). The serviceUrl of a channel is the one its last activity named,
//! or the configured one.
//!
//! Files: `config.rs` (settings), `section.rs` (`[chat.teams]`), `auth.rs` (token checks),
//! `keys.rs` (the JWKS cache), `activity.rs` (activities in), `server.rs` (the endpoint),
//! `text.rs` and `card.rs` (messages and cards out), `connector.rs` (the Connector client),
//! `limit.rs` (Teams' rate limits), `http.rs` (the HTTP client).

pub mod activity;
pub mod auth;
pub mod card;
pub mod config;
pub mod connector;
pub mod http;
pub mod keys;
pub mod limit;
pub mod section;
pub mod server;
pub mod text;

pub use config::{TeamsConfig, ValidConfig};

use crate::chat::{Capabilities, ChatAdapter, Delivered, DeliveryError, Inbound, Link, MessageRef, Outbound};
use activity::{Activity, channel_of};
use anyhow::Context;
use async_trait::async_trait;
use baton_policies::Platform;
use config::WebUrl;
use connector::{Connector, Target};
use keys::Keys;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Waits between attempts while Teams is unreachable: from the first, doubling, at most the max.
const OUTAGE_FIRST: Duration = Duration::from_millis(250);
const OUTAGE_MAX: Duration = Duration::from_secs(5);

/// The longest text posted in one message (Teams refuses activities above about 28 KB).
const MAX_TEXT: usize = 20 * 1024;

/// What the adapter learnt from activities and deliveries.
#[derive(Default)]
struct References {
    /// The serviceUrl each channel's last activity named.
    service: HashMap<String, WebUrl>,
    /// The thread of a run in a channel where Baton started it (mirror channels).
    threads: HashMap<(String, u64), String>,
}

/// What the endpoint and the deliveries share.
pub struct Shared {
    cfg: Arc<ValidConfig>,
    keys: Keys,
    connector: Connector,
    refs: Mutex<References>,
    inbound: Mutex<Option<mpsc::Sender<Inbound>>>,
    link: watch::Sender<Link>,
    /// Deliveries failed in a row because Teams was unreachable.
    failures: AtomicU32,
}

impl Shared {
    fn refs(&self) -> std::sync::MutexGuard<'_, References> {
        self.refs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the serviceUrl of an authenticated, allowed activity's channel.
    fn seen(&self, a: &Activity) {
        let (Some(conversation), Some(url)) = (a.conversation_id(), a.service_url.as_deref()) else {
            return;
        };
        if let Ok(url) = WebUrl::parse(url) {
            self.refs().service.insert(channel_of(conversation).to_string(), url);
        }
        let room = conversation.to_string();
        if !self.link.borrow().joined.contains(&room) {
            self.link.send_modify(|l| {
                l.joined.insert(room);
            });
        }
    }

    /// Hands a message to the daemon, waiting at most `wait` for room in its queue.
    async fn hand_over(&self, m: Inbound, wait: Duration) -> bool {
        let tx = self.inbound.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(tx) = tx else {
            return false;
        };
        matches!(tokio::time::timeout(wait, tx.send(m)).await, Ok(Ok(())))
    }

    fn service_url(&self, channel: &str) -> WebUrl {
        self.refs()
            .service
            .get(channel)
            .cloned()
            .unwrap_or_else(|| self.cfg.service_url.clone())
    }

    fn mark(&self, room: &str, result: &Result<Delivered, DeliveryError>) {
        let reachable = match result {
            Ok(_) | Err(DeliveryError::Permanent { .. }) => true,
            Err(DeliveryError::Transient { retry_after, .. }) => retry_after.is_some(),
        };
        let joined = result.is_ok() && !self.link.borrow().joined.contains(room);
        if self.link.borrow().online != reachable || joined {
            self.link.send_modify(|l| {
                l.online = reachable;
                if joined {
                    l.joined.insert(room.to_string());
                }
            });
        }
    }
}

/// The Teams chat adapter. Build it with [`TeamsAdapter::new`] (which binds the endpoint's
/// port), drive it with [`ChatAdapter::run`], post with [`ChatAdapter::deliver`].
pub struct TeamsAdapter {
    shared: Arc<Shared>,
    listener: Mutex<Option<std::net::TcpListener>>,
    local: SocketAddr,
    tls: Option<TlsAcceptor>,
}

impl TeamsAdapter {
    /// Validates the settings, loads the endpoint's TLS files and binds its port. Does not
    /// call anything yet.
    pub fn new(settings: TeamsConfig) -> anyhow::Result<TeamsAdapter> {
        let cfg = settings.validate().map_err(|problems| {
            let list: Vec<String> = problems.into_iter().map(|(k, m)| format!("teams.{k}: {m}")).collect();
            anyhow::anyhow!("invalid teams settings: {}", list.join("; "))
        })?;
        let needs_roots = [&cfg.openid_metadata, &cfg.token, &cfg.service_url]
            .iter()
            .any(|u| u.as_str().starts_with("https:"));
        let http = http::Http::new(settings.request_timeout, needs_roots)?;
        let tls = match &settings.tls {
            Some(t) => Some(tls_acceptor(&t.cert, &t.key)?),
            None => None,
        };
        let listener = std::net::TcpListener::bind(settings.listen)
            .with_context(|| format!("binding the Teams messaging endpoint to {}", settings.listen))?;
        listener
            .set_nonblocking(true)
            .context("preparing the endpoint's socket")?;
        let local = listener.local_addr().context("reading the endpoint's address")?;
        let cfg = Arc::new(cfg);
        let (link, _) = watch::channel(Link::default());
        let shared = Arc::new(Shared {
            keys: Keys::new(
                http.clone(),
                cfg.openid_metadata.clone(),
                settings.key_refetch_interval,
                settings.key_max_age,
            ),
            connector: Connector::new(http, cfg.clone()),
            cfg,
            refs: Mutex::new(References::default()),
            inbound: Mutex::new(None),
            link,
            failures: AtomicU32::new(0),
        });
        Ok(TeamsAdapter {
            shared,
            listener: Mutex::new(Some(listener)),
            local,
            tls,
        })
    }

    /// The address the messaging endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The endpoint's URL as reached on this machine (`http(s)://<addr>/api/messages`).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/api/messages", self.local)
    }

    /// Posts one item: a card (new, or an update of the card `message.edit` names) or a line.
    async fn post(&self, message: &Outbound) -> Result<Delivered, DeliveryError> {
        let room = message.room.id.as_str();
        let channel = channel_of(room);
        if message.room.platform != Platform::Teams || !self.shared.cfg.serves(channel) {
            return Err(DeliveryError::Permanent {
                reason: format!("{} is not a configured Teams channel", message.room),
            });
        }
        let service = self.shared.service_url(channel);
        let activity = match &message.card {
            Some(card) => json!({
                "type": "message",
                "summary": card.title,
                "attachments": [card::attachment(card, text::mentions_only(&message.body).as_ref())],
            }),
            None => text_activity(&message.body),
        };
        let c = &self.shared.connector;
        if let Some(reference) = &message.edit {
            if message.card.is_none() {
                return Err(DeliveryError::Permanent {
                    reason: "an edit without the card to show".into(),
                });
            }
            let Some((id, conversation)) = reference.0.split_once(' ') else {
                return Err(DeliveryError::Permanent {
                    reason: format!("{reference} is not a reference to a Teams activity"),
                });
            };
            let posted = c
                .send(
                    &service,
                    Target::Update {
                        conversation,
                        activity: id,
                    },
                    &activity,
                )
                .await?;
            if let Some(run) = message.run
                && conversation != room
            {
                self.shared
                    .refs()
                    .threads
                    .insert((channel.to_string(), run.0), posted.conversation);
            }
            return Ok(Delivered {
                reference: Some(reference.clone()),
            });
        }
        let thread = match (room.contains(";messageid="), message.run) {
            (true, _) => Some(room.to_string()),
            (false, Some(run)) => self.shared.refs().threads.get(&(channel.to_string(), run.0)).cloned(),
            (false, None) => None,
        };
        let posted = match &thread {
            Some(conversation) => c.send(&service, Target::Post { conversation }, &activity).await?,
            None => {
                let posted = c.send(&service, Target::NewThread { channel }, &activity).await?;
                if let Some(run) = message.run {
                    self.shared
                        .refs()
                        .threads
                        .insert((channel.to_string(), run.0), posted.conversation.clone());
                }
                posted
            }
        };
        Ok(Delivered {
            reference: Some(MessageRef(format!("{} {}", posted.activity, posted.conversation))),
        })
    }
}

/// A line as a Teams message activity.
fn text_activity(body: &crate::chat::Rich) -> Value {
    let mut r = text::render(body);
    if r.text.len() > MAX_TEXT {
        let mut cut = MAX_TEXT;
        while !r.text.is_char_boundary(cut) {
            cut -= 1;
        }
        // Never cut inside an entity or a tag.
        if let Some(open) = r.text[..cut].rfind(['&', '<'])
            && !r.text[open..cut].contains([';', '>'])
        {
            cut = open;
        }
        r.text.truncate(cut);
        r.text.push_str(" … (cut: too long for Teams)");
    }
    let mut a = json!({"type": "message", "textFormat": text::TEXT_FORMAT, "text": r.text});
    if !r.entities.is_empty() {
        a["entities"] = Value::Array(r.entities);
    }
    a
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<TlsAcceptor> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the endpoint's certificate and key")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[async_trait]
impl ChatAdapter for TeamsAdapter {
    fn platform(&self) -> Platform {
        Platform::Teams
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cards: true,
            edit_interval: self.shared.cfg.settings.edit_interval,
        }
    }

    fn link(&self) -> Option<watch::Receiver<Link>> {
        Some(self.shared.link.subscribe())
    }

    async fn run(&self, inbound: mpsc::Sender<Inbound>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .context("the Teams adapter is already running")?;
        let listener = tokio::net::TcpListener::from_std(listener).context("listening on the endpoint")?;
        *self.shared.inbound.lock().unwrap_or_else(|p| p.into_inner()) = Some(inbound);
        let channels = self.shared.cfg.settings.channels.iter();
        let mirrors = self.shared.cfg.settings.mirror_channels.iter();
        let joined = channels.chain(mirrors).cloned().collect();
        self.shared.link.send_modify(|l| {
            l.online = true;
            l.joined = joined;
            l.sessions += 1;
        });
        tracing::info!(endpoint = %self.endpoint(), "Teams messaging endpoint listening");
        let warm = self.shared.clone();
        tokio::spawn(async move {
            tokio::join!(warm.keys.warm(), warm.connector.warm());
        });
        server::serve(self.shared.clone(), listener, self.tls.clone(), shutdown).await;
        *self.shared.inbound.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.shared.link.send_modify(|l| l.online = false);
        Ok(())
    }

    async fn deliver(&self, message: &Outbound) -> Result<Delivered, DeliveryError> {
        let result = self.post(message).await;
        self.shared.mark(&message.room.id, &result);
        match result {
            // Teams unreachable: try again soon, but not sooner and sooner (the room's own
            // backoff would grow to half a minute; Teams' outages are short).
            Err(DeliveryError::Transient {
                reason,
                retry_after: None,
            }) => {
                let n = self.shared.failures.fetch_add(1, Ordering::AcqRel).min(5);
                let wait = (OUTAGE_FIRST * 2u32.pow(n)).min(OUTAGE_MAX);
                Err(DeliveryError::Transient {
                    reason,
                    retry_after: Some(wait),
                })
            }
            other => {
                if other.is_ok() {
                    self.shared.failures.store(0, Ordering::Release);
                }
                other
            }
        }
    }
}
