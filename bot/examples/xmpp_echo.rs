//! A bare XMPP echo bot, the baseline for Baton's command->reply latency: the same connector
//! (TCP_NODELAY, fixed address) and the same single-task `StanzaStream` loop as the adapter, but
//! no room bookkeeping, no engine and no delivery confirmation. It answers every groupchat
//! message starting with its prefix (`!`, or `--prefix`) from someone else with `echo: <text>`. It prints `joined <room>`
//! once the room confirms its join, so a benchmark knows when to start.
//!
//! ```text
//! XMPP_PASSWORD=... cargo run -p baton --example xmpp_echo -- \
//!     --jid echo@contoso.test --server 127.0.0.1:5222 --plain \
//!     --room incident@conference.contoso.test --nick echo
//! ```

use anyhow::{Context, bail};
use baton::adapters::xmpp::TlsMode;
use baton::adapters::xmpp::connect::{Backoff, Connector, stanza_stream};
use baton::adapters::xmpp::inbound::best_body;
use baton::adapters::xmpp::outbound::groupchat;
use clap::Parser;
use futures::StreamExt;
use secrecy::SecretString;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::MessageType;
use tokio_xmpp::parsers::muc::muc::{History, Muc};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::stanzastream::{Event, StreamEvent};

#[derive(Parser)]
struct Args {
    /// The echo bot's account (bare JID).
    #[arg(long)]
    jid: String,
    /// The server's client port as host:port.
    #[arg(long)]
    server: String,
    /// The room to join.
    #[arg(long)]
    room: String,
    #[arg(long, default_value = "echo")]
    nick: String,
    /// Environment variable holding the password.
    #[arg(long, default_value = "XMPP_PASSWORD")]
    password_env: String,
    /// Plain TCP (loopback test servers only); default is STARTTLS with the system roots.
    #[arg(long)]
    plain: bool,
    /// Answer only messages starting with this (another prefix than Baton's lets both bots
    /// share a room, each answering its own commands).
    #[arg(long, default_value = "!")]
    prefix: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let password = SecretString::from(
        std::env::var(&args.password_env)
            .with_context(|| format!("reading the password from ${}", args.password_env))?,
    );
    let jid = BareJid::new(&args.jid).context("parsing --jid")?;
    let room = BareJid::new(&args.room).context("parsing --room")?;
    let tls = if args.plain {
        TlsMode::Plain
    } else {
        TlsMode::StartTls {
            ca_file: None,
            server_name: None,
        }
    };
    let connector = Connector::new(&args.server, &tls, jid.domain().as_str())?;
    let stop = CancellationToken::new();
    let backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(5),
    };
    let mut stream = stanza_stream(connector, jid, password, backoff, Duration::from_secs(10), stop.clone());
    let mut sent = 0u64;
    // One listener for the whole run: a new one per turn would miss a Ctrl-C that arrives while
    // an event is being handled.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let event = tokio::select! {
            _ = &mut interrupted => break,
            event = stream.next() => event,
        };
        let Some(event) = event else { bail!("stream ended") };
        match event {
            Event::Stream(StreamEvent::Reset { .. }) => {
                let occupant = room.with_resource_str(&args.nick).context("nickname")?;
                let join = Presence::available()
                    .with_to(Jid::from(occupant))
                    .with_payload(Muc::new().with_history(History::new().with_maxstanzas(0)));
                stream.send(Box::new(Stanza::Presence(join))).await;
            }
            Event::Stanza(Stanza::Presence(p)) => {
                // The room confirms the join with the bot's own presence (status 110).
                let own = p
                    .from
                    .as_ref()
                    .is_some_and(|f| f.to_bare() == room && f.resource().is_some_and(|n| n.as_str() == args.nick));
                if own && p.type_ == tokio_xmpp::parsers::presence::Type::None {
                    println!("joined {room}");
                }
            }
            Event::Stanza(Stanza::Message(m)) if m.type_ == MessageType::Groupchat => {
                let from_other = m
                    .from
                    .as_ref()
                    .and_then(|f| f.resource())
                    .is_some_and(|n| n.as_str() != args.nick);
                let Some(text) = best_body(&m).filter(|t| t.starts_with(args.prefix.as_str())) else {
                    continue;
                };
                if from_other && m.payloads.iter().all(|p| !p.is("delay", "urn:xmpp:delay")) {
                    sent += 1;
                    let reply = groupchat(&room, format!("echo-{sent}"), format!("echo: {text}"));
                    stream.send(Box::new(Stanza::Message(reply))).await;
                }
            }
            _ => {}
        }
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.close()).await;
    Ok(())
}
