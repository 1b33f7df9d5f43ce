//! The latency benchmarks' floor: a minimal XMPP answering bot on stock tokio-xmpp (its `Client`,
//! its XML stream set-up and login; nothing of Baton's connector), over plain TCP with
//! TCP_NODELAY on loopback. It joins one room and answers every groupchat message from someone
//! else that starts with its prefix: `<prefix>help` with a text as long as Baton's help (Baton's
//! own help text, for that prefix), `<prefix>status` with a line as long as Baton's status line,
//! anything else with `echo: <text>`. So a comparison with Baton measures Baton's work, not the
//! size of its answers. A benchmark runs it as a process of its own: the benchmark's executable
//! started again with [`ARG`] first ([`serve_if_asked`]), so it is built with the same profile
//! as everything it is compared with.

use anyhow::{Context, bail};
use futures::StreamExt;
use sasl::common::ChannelBinding;
use std::borrow::Cow;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, BufStream};
use tokio::net::TcpStream;
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::muc::muc::{History, Muc};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::xmlstream::{PendingFeaturesRecv, StreamHeader, Timeouts, initiate_stream};
use tokio_xmpp::{Client, Event, Stanza};

/// The first argument that makes a benchmark's executable run the echo bot instead.
pub const ARG: &str = "--stock-echo-bot";

/// The floor's answer to `<prefix>status`: as long as Baton's status line on the test stack.
pub const STATUS_ANSWER: &str = "XMPP federation route: EdgePool1 (as Baton last set or was configured).";

/// What the floor answers to `text` (which starts with `prefix`).
pub fn answer(prefix: &str, text: &str) -> String {
    match text.strip_prefix(prefix) {
        Some("help") => baton::command::help_text(prefix),
        Some("status") => STATUS_ANSWER.to_string(),
        _ => format!("echo: {text}"),
    }
}

/// Plain TCP to a fixed address with TCP_NODELAY, then tokio-xmpp's own stream set-up: the
/// same as its `TcpServerConnector` but for Nagle's algorithm, which would hold small answers.
#[derive(Clone, Debug)]
struct NoDelayTcp(SocketAddr);

impl ServerConnector for NoDelayTcp {
    type Stream = BufStream<TcpStream>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let tcp = TcpStream::connect(self.0).await?;
        tcp.set_nodelay(true)?;
        let header = StreamHeader {
            to: Some(Cow::Borrowed(jid.domain().as_str())),
            from: None,
            id: None,
        };
        let pending = initiate_stream(BufStream::new(tcp), ns, header, timeouts).await?;
        Ok((pending, ChannelBinding::None))
    }
}

/// When the process was started with [`ARG`] first, runs the echo bot until its input closes or
/// it is interrupted and returns true; otherwise returns false at once.
pub fn serve_if_asked() -> anyhow::Result<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some(ARG) {
        return Ok(false);
    }
    let [_, jid, server, room, nick, prefix] = <[String; 6]>::try_from(args)
        .map_err(|a| anyhow::anyhow!("usage: {ARG} JID SERVER ROOM NICK PREFIX, got {a:?}"))?;
    let password = std::env::var("XMPP_PASSWORD").context("reading $XMPP_PASSWORD")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(&jid, &server, &room, &nick, &prefix, password))?;
    Ok(true)
}

async fn serve(jid: &str, server: &str, room: &str, nick: &str, prefix: &str, password: String) -> anyhow::Result<()> {
    let jid = BareJid::new(jid).context("parsing the JID")?;
    let room = BareJid::new(room).context("parsing the room")?;
    let server: SocketAddr = server.parse().context("parsing the server address")?;
    let mut client = Client::new_with_connector(jid, password, NoDelayTcp(server), Timeouts::default());
    // The benchmark closes our stdin to stop us (a signal would need a handler of our own).
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut sent = 0u64;
    loop {
        let event = tokio::select! {
            line = stdin.next_line() => match line {
                Ok(Some(_)) => continue,
                _ => break,
            },
            event = client.next() => event,
        };
        match event {
            None => bail!("the client ended"),
            Some(Event::Disconnected(e)) => bail!("disconnected: {e}"),
            Some(Event::Online { .. }) => {
                let occupant = room.with_resource_str(nick).context("nickname")?;
                let join = Presence::available()
                    .with_to(Jid::from(occupant))
                    .with_payload(Muc::new().with_history(History::new().with_maxstanzas(0)));
                client.send_stanza(Stanza::Presence(join)).await?;
            }
            Some(Event::Stanza(Stanza::Presence(p))) => {
                let own = p
                    .from
                    .as_ref()
                    .is_some_and(|f| f.to_bare() == room && f.resource().is_some_and(|n| n.as_str() == nick));
                if own && p.type_ == PresenceType::None {
                    println!("joined {room}");
                }
            }
            Some(Event::Stanza(Stanza::Message(m))) if m.type_ == MessageType::Groupchat => {
                let from_other = m
                    .from
                    .as_ref()
                    .and_then(|f| f.resource())
                    .is_some_and(|n| n.as_str() != nick);
                let delayed = m.payloads.iter().any(|p| p.is("delay", "urn:xmpp:delay"));
                let Some((_, body)) = m.get_best_body(vec!["", "en"]) else {
                    continue;
                };
                if from_other && !delayed && body.starts_with(prefix) {
                    sent += 1;
                    let mut reply =
                        Message::groupchat(Some(Jid::from(room.clone()))).with_body(Lang::new(), answer(prefix, body));
                    reply.id = Some(tokio_xmpp::parsers::message::Id(format!("echo-{sent}")));
                    client.send_stanza(Stanza::Message(reply)).await?;
                }
            }
            Some(_) => {}
        }
    }
    let _ = client.send_end().await;
    Ok(())
}
