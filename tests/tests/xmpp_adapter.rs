//! The XMPP adapter against a real Prosody, with real test users as XMPP clients: identities come
//! from real JIDs, semi-anonymous rooms give unverified senders (and one notice, not repeated
//! after a restart), history, repeated ids, corrections and private messages produce no command
//! (corrections get one notice per room, private senders one line), sustained request/reply
//! traffic does not stall, a Prosody restart is survived with deliveries refused while down and
//! delivered in order after, and the adapter stops cleanly in every state and runs again after.

use baton::adapters::xmpp::inbound::{EDITS_NOTICE, HIDDEN_JIDS_NOTICE, private_notice};
use baton::adapters::xmpp::{TlsMode, XmppAdapter, XmppConfig};
use baton::chat::{ChatAdapter, DeliveryError, Inbound, Outbound, RoomRef};
use baton_e2e::prosody::{INCIDENT_ROOM, Prosody, SEMI_ANONYMOUS_ROOM};
use baton_e2e::xmpp_client::{JoinHistory, RoomMessage, TestClient};
use baton_policies::{Identity, Platform, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// A running adapter with its inbound queue.
struct Bot {
    adapter: Arc<XmppAdapter>,
    inbound: mpsc::Receiver<Inbound>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Bot {
    async fn start(server: &Prosody) -> Bot {
        Bot::start_with(server, |_| {}).await
    }

    /// Starts the adapter with the test settings, changed by `tweak`, and waits until it is in
    /// both rooms.
    async fn start_with(server: &Prosody, tweak: impl FnOnce(&mut XmppConfig)) -> Bot {
        let bot = Bot::spawn(Bot::config(server, tweak));
        bot.adapter
            .wait_until_joined(WAIT)
            .await
            .expect("adapter joins both rooms");
        bot
    }

    fn config(server: &Prosody, tweak: impl FnOnce(&mut XmppConfig)) -> XmppConfig {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("baton=debug")
            .with_test_writer()
            .try_init();
        let mut config = XmppConfig::new(
            server.jid("baton"),
            server.password("baton").expect("baton is registered"),
            server.c2s_addr().to_string(),
            TlsMode::Plain,
        )
        .with_room(INCIDENT_ROOM, "baton")
        .with_room(SEMI_ANONYMOUS_ROOM, "baton");
        config.reconnect_initial = Duration::from_millis(100);
        config.reconnect_max = Duration::from_secs(1);
        config.delivery_timeout = Duration::from_secs(5);
        tweak(&mut config);
        config
    }

    /// Starts the adapter without waiting for it to connect.
    fn spawn(config: XmppConfig) -> Bot {
        Bot::run(Arc::new(XmppAdapter::new(config).expect("valid config")))
    }

    /// Runs `adapter` (again) in a task of its own.
    fn run(adapter: Arc<XmppAdapter>) -> Bot {
        let (tx, inbound) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let adapter = adapter.clone();
            let shutdown = shutdown.clone();
            async move { adapter.run(tx, shutdown).await }
        });
        Bot {
            adapter,
            inbound,
            shutdown,
            task,
        }
    }

    async fn next(&mut self) -> Inbound {
        tokio::time::timeout(WAIT, self.inbound.recv())
            .await
            .expect("an inbound message within the wait")
            .expect("adapter still running")
    }

    async fn assert_quiet(&mut self, window: Duration) {
        if let Ok(Some(extra)) = tokio::time::timeout(window, self.inbound.recv()).await {
            panic!("unexpected inbound: {extra:?}");
        }
    }

    async fn say(&self, id: i64, room: &str, text: &str) -> Result<(), DeliveryError> {
        let message = Outbound {
            id,
            room: RoomRef::new(Platform::Xmpp, room),
            run: None,
            body: text.into(),
            card: None,
            edit: None,
        };
        self.adapter.deliver(&message).await.map(|_| ())
    }

    async fn stop(self) {
        self.stop_keeping().await;
    }

    /// Stops the adapter; returns it, to run it again.
    async fn stop_keeping(self) -> Arc<XmppAdapter> {
        self.shutdown.cancel();
        let ended = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("adapter stops within the wait");
        ended
            .expect("adapter task did not panic")
            .expect("adapter ends cleanly");
        self.adapter
    }
}

/// Panics anywhere in this test binary whose message names tokio-xmpp's reconnect failure
/// (they happen in the library's own tasks, which nobody joins).
fn reconnect_panics() -> Arc<std::sync::Mutex<Vec<String>>> {
    static SEEN: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<String>>>> = std::sync::OnceLock::new();
    SEEN.get_or_init(|| {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = seen.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info.to_string();
            if text.contains("reconnect") || text.contains("background workers") {
                keep.lock().unwrap_or_else(|p| p.into_inner()).push(text);
            }
            previous(info);
        }));
        seen
    })
    .clone()
}

/// A server, the bot in both rooms, and alice in the incident room.
async fn incident_room_with_alice() -> (Prosody, Bot, TestClient) {
    let server = Prosody::start().expect("prosody starts");
    let bot = Bot::start(&server).await;
    let mut alice = TestClient::connect(&server, "alice").await.expect("alice connects");
    alice
        .join(INCIDENT_ROOM, "alice", JoinHistory::None)
        .await
        .expect("alice joins");
    (server, bot, alice)
}

fn verified(who: &str) -> Sender {
    Sender::Verified(Identity::parse(&format!("xmpp:{who}@contoso.test")).expect("valid identity"))
}

fn from_nick(nick: &'static str) -> impl Fn(&RoomMessage) -> bool {
    move |m| m.nick == nick
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_are_real_jids_never_nicknames() {
    let (server, mut bot, mut alice) = incident_room_with_alice().await;
    alice.send(INCIDENT_ROOM, "!status").await.expect("alice sends");
    let got = bot.next().await;
    assert_eq!(got.room, RoomRef::new(Platform::Xmpp, INCIDENT_ROOM));
    assert_eq!(got.text, "!status");
    assert_eq!(got.sender, verified("alice"));

    // mallory takes the nickname "bob": she is still mallory.
    let mut mallory = TestClient::connect(&server, "mallory").await.expect("mallory connects");
    mallory
        .join(INCIDENT_ROOM, "bob", JoinHistory::None)
        .await
        .expect("mallory joins as bob");
    mallory.send(INCIDENT_ROOM, "!approve 7").await.expect("mallory sends");
    let got = bot.next().await;
    assert_eq!(got.text, "!approve 7");
    assert_eq!(got.sender, verified("mallory"));

    // Replies reach the room, attributed to the bot.
    bot.say(1, INCIDENT_ROOM, "refused: mallory is not an approver")
        .await
        .expect("delivered");
    let seen = alice
        .expect_message(from_nick("baton"), WAIT)
        .await
        .expect("alice sees the reply");
    assert_eq!(seen.text, "refused: mallory is not an approver");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semi_anonymous_room_senders_are_unverified_and_the_bot_says_why_once() {
    let server = Prosody::start().expect("prosody starts");
    let mut alice = TestClient::connect(&server, "alice").await.expect("alice connects");
    alice
        .join(SEMI_ANONYMOUS_ROOM, "alice", JoinHistory::None)
        .await
        .expect("alice joins");
    let mut bot = Bot::start(&server).await;
    let notice = alice
        .expect_message(from_nick("baton"), WAIT)
        .await
        .expect("the bot explains the room setting");
    assert!(notice.text.contains("semi-anonymous"), "{}", notice.text);
    assert!(
        notice.text.contains("will not accept requests or approvals"),
        "{}",
        notice.text
    );

    alice
        .send(SEMI_ANONYMOUS_ROOM, "!approve 7")
        .await
        .expect("alice sends");
    let got = bot.next().await;
    match got.sender {
        Sender::Unverified { display, why } => {
            assert_eq!(display, "alice");
            assert!(why.contains("semi-anonymous"), "{why}");
        }
        other => panic!("expected an unverified sender, got {other:?}"),
    }
    // The notice is not repeated.
    let later = alice.collect_for(Duration::from_millis(800)).await;
    assert!(later.iter().all(|m| m.nick != "baton"), "notice repeated: {later:?}");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_repeated_ids_produce_no_inbound() {
    let (server, mut bot, mut alice) = incident_room_with_alice().await;

    alice
        .send_with_id(INCIDENT_ROOM, "!failover xmpp EdgePool2", "fixed-id")
        .await
        .expect("sent");
    alice
        .send_with_id(INCIDENT_ROOM, "!failover xmpp EdgePool2 again", "fixed-id")
        .await
        .expect("sent");
    alice.send(INCIDENT_ROOM, "!status").await.expect("sent");
    assert_eq!(bot.next().await.text, "!failover xmpp EdgePool2");
    assert_eq!(bot.next().await.text, "!status", "the repeated id was dropped");

    // The bot leaves and comes back: the room holds history, none of it is a command again.
    bot.stop().await;
    let mut bot = Bot::start(&server).await;
    bot.assert_quiet(Duration::from_millis(1500)).await;

    // A user who rejoins with full history sees it replayed (the room does keep it) ...
    let live = alice.collect_for(Duration::from_millis(200)).await;
    assert!(
        live.iter().all(|m| !m.delayed),
        "alice joined without history: {live:?}"
    );
    alice.leave(INCIDENT_ROOM, "alice").await.expect("alice leaves");
    alice
        .join(INCIDENT_ROOM, "alice", JoinHistory::All)
        .await
        .expect("alice rejoins");
    let replay = alice
        .expect_message(|m| m.text == "!status", WAIT)
        .await
        .expect("history replayed to alice");
    assert!(replay.delayed, "history carries a delay stamp");
    // ... and the bot still sees only live messages.
    bot.assert_quiet(Duration::from_millis(500)).await;
    alice.send(INCIDENT_ROOM, "!runs").await.expect("sent");
    assert_eq!(bot.next().await.text, "!runs");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_round_trips_do_not_stall() {
    let (_server, mut bot, mut alice) = incident_room_with_alice().await;
    let started = Instant::now();
    for n in 0..1000 {
        alice.send(INCIDENT_ROOM, &format!("!ping {n}")).await.expect("sent");
        let got = bot.next().await;
        assert_eq!(got.text, format!("!ping {n}"));
        bot.say(n, INCIDENT_ROOM, &format!("pong {n}"))
            .await
            .expect("reply delivered");
        let want = format!("pong {n}");
        alice
            .expect_message(|m| m.nick == "baton" && m.text == want, WAIT)
            .await
            .expect("alice gets the reply");
    }
    println!("1000 round trips in {:?}", started.elapsed());
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_restart_refuses_deliveries_while_down_then_delivers_in_order() {
    let mut server = Prosody::start().expect("prosody starts");
    let bot = Bot::start(&server).await;
    let mut status = bot.adapter.status();
    let sessions_before = status.borrow().sessions;

    tokio::task::block_in_place(|| server.stop()).expect("prosody stops");
    tokio::time::timeout(WAIT, status.wait_for(|s| !s.online))
        .await
        .expect("adapter notices")
        .expect("status open");
    for id in 1..=3 {
        match bot.say(id, INCIDENT_ROOM, &format!("status {id}")).await {
            Err(DeliveryError::Transient { .. }) => {}
            other => panic!("delivery {id} while down: expected transient, got {other:?}"),
        }
    }

    tokio::task::block_in_place(|| server.start_again()).expect("prosody starts again");
    bot.adapter
        .wait_until_joined(Duration::from_secs(20))
        .await
        .expect("adapter reconnects and rejoins");
    assert!(
        status.borrow().sessions > sessions_before,
        "a new session was established"
    );

    let mut alice = TestClient::connect(&server, "alice").await.expect("alice connects");
    alice
        .join(INCIDENT_ROOM, "alice", JoinHistory::None)
        .await
        .expect("alice joins");
    for id in 1..=3 {
        bot.say(id, INCIDENT_ROOM, &format!("status {id}"))
            .await
            .expect("delivered after reconnect");
    }
    let seen: Vec<String> = alice
        .collect_for(Duration::from_secs(1))
        .await
        .into_iter()
        .filter(|m| m.nick == "baton")
        .map(|m| m.text)
        .collect();
    assert_eq!(seen, ["status 1", "status 2", "status 3"]);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_receiver_does_not_block_deliveries() {
    let (_server, mut bot, mut alice) = incident_room_with_alice().await;
    // More messages than the inbound queue holds, while nobody reads it ...
    for n in 0..100 {
        alice.send(INCIDENT_ROOM, &format!("!status {n}")).await.expect("sent");
    }
    alice
        .expect_message(|m| m.text == "!status 99", WAIT)
        .await
        .expect("the room relayed them all");
    // ... and a delivery still gets its confirmation.
    bot.say(1, INCIDENT_ROOM, "still here")
        .await
        .expect("delivered while the receiver is busy");
    for n in 0..100 {
        assert_eq!(bot.next().await.text, format!("!status {n}"));
    }
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrections_are_never_commands_and_the_room_is_told_once() {
    let (_server, mut bot, mut alice) = incident_room_with_alice().await;
    let first = alice.send(INCIDENT_ROOM, "harmless text").await.expect("sent");
    assert_eq!(
        bot.next().await.text,
        "harmless text",
        "ordinary messages still reach the bot"
    );
    // XEP-0308: the harmless text becomes a command, and an old approval is corrected.
    alice
        .send_correction(INCIDENT_ROOM, "!failover xmpp EdgePool2 now", &first)
        .await
        .expect("sent");
    let notice = alice
        .expect_message(from_nick("baton"), WAIT)
        .await
        .expect("the bot says edits are not commands");
    assert_eq!(notice.text, EDITS_NOTICE);
    let approve = alice.send(INCIDENT_ROOM, "!approve 1").await.expect("sent");
    assert_eq!(bot.next().await.text, "!approve 1");
    alice
        .send_correction(INCIDENT_ROOM, "!approve 1 ", &approve)
        .await
        .expect("sent");
    bot.assert_quiet(Duration::from_millis(1500)).await;
    let later = alice.collect_for(Duration::from_millis(300)).await;
    assert!(later.iter().all(|m| m.nick != "baton"), "told once: {later:?}");
    alice.send(INCIDENT_ROOM, "!status").await.expect("sent");
    assert_eq!(bot.next().await.text, "!status", "new messages are read as before");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_messages_get_one_line_and_are_never_commands() {
    let (server, mut bot, mut alice) = incident_room_with_alice().await;
    let private = format!("{INCIDENT_ROOM}/baton");
    alice.send_chat(&private, "!approve 1").await.expect("sent");
    let got = alice.chats_for(Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].from, private);
    // The bot of these tests reads commands in both rooms.
    let rooms = [INCIDENT_ROOM.to_string(), SEMI_ANONYMOUS_ROOM.to_string()];
    assert_eq!(got[0].text, private_notice(&rooms));
    // Again at once: not answered again.
    alice.send_chat(&private, "!approve 1").await.expect("sent");
    assert!(alice.chats_for(Duration::from_millis(800)).await.is_empty());
    // One-to-one, outside the rooms: one line to carol, who is in no room.
    let mut carol = TestClient::connect(&server, "carol").await.expect("carol connects");
    carol
        .send_chat(&server.jid("baton"), "!failover xmpp EdgePool2")
        .await
        .expect("sent");
    let got = carol.chats_for(Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].from.starts_with("baton@contoso.test/"), "{got:?}");
    assert_eq!(got[0].text, private_notice(&rooms), "{got:?}");
    carol.send_chat(&server.jid("baton"), "hello?").await.expect("sent");
    assert!(carol.chats_for(Duration::from_millis(800)).await.is_empty());
    // None of it reached the engine, and the room heard nothing.
    bot.assert_quiet(Duration::from_millis(300)).await;
    let room = alice.collect_for(Duration::from_millis(300)).await;
    assert!(room.iter().all(|m| m.nick != "baton"), "{room:?}");
    bot.stop().await;
    carol.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hidden_jids_notice_is_said_once_per_room_not_at_every_restart() {
    let server = Prosody::start().expect("prosody starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("baton.sqlite.xmpp-notices.json");
    let mut alice = TestClient::connect(&server, "alice").await.expect("alice connects");
    alice
        .join(SEMI_ANONYMOUS_ROOM, "alice", JoinHistory::None)
        .await
        .expect("alice joins");
    let remembering = |c: &mut XmppConfig| c.notices_file = Some(file.clone());
    let bot = Bot::start_with(&server, remembering).await;
    let notice = alice
        .expect_message(from_nick("baton"), WAIT)
        .await
        .expect("the bot explains the room setting");
    assert_eq!(notice.text, HIDDEN_JIDS_NOTICE);
    bot.stop().await;
    // Restarted (a new adapter, as a new process would have): nothing said.
    let bot = Bot::start_with(&server, remembering).await;
    let heard = alice.collect_for(Duration::from_secs(2)).await;
    assert!(heard.iter().all(|m| m.nick != "baton"), "said again: {heard:?}");
    bot.stop().await;
    // Without the file it would have been said again: the check above can fail.
    let bot = Bot::start(&server).await;
    let again = alice
        .expect_message(from_nick("baton"), WAIT)
        .await
        .expect("a bot that remembers nothing says it again");
    assert_eq!(again.text, HIDDEN_JIDS_NOTICE);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_stops_cleanly_in_every_state_and_runs_again() {
    let panics = reconnect_panics();
    let mut server = Prosody::start().expect("prosody starts");

    // Connected and in its rooms; then the same adapter runs again and delivers.
    let bot = Bot::start(&server).await;
    let adapter = bot.stop_keeping().await;
    assert!(!adapter.status().borrow().online, "stopped means offline");
    let bot = Bot::run(adapter);
    bot.adapter.wait_until_joined(WAIT).await.expect("runs again");
    let mut alice = TestClient::connect(&server, "alice").await.expect("alice connects");
    alice
        .join(INCIDENT_ROOM, "alice", JoinHistory::None)
        .await
        .expect("alice joins");
    bot.say(1, INCIDENT_ROOM, "back again").await.expect("delivered");
    alice
        .expect_message(|m| m.nick == "baton" && m.text == "back again", WAIT)
        .await
        .expect("alice sees it");
    // A second run while one is running is refused.
    let (tx, _rx) = mpsc::channel(1);
    let err = bot
        .adapter
        .run(tx, CancellationToken::new())
        .await
        .expect_err("already running");
    assert!(err.to_string().contains("already running"), "{err}");

    // The server goes away: stopped while it reconnects (between attempts and mid-attempt).
    let mut status = bot.adapter.status();
    tokio::task::block_in_place(|| server.stop()).expect("prosody stops");
    tokio::time::timeout(WAIT, status.wait_for(|s| !s.online))
        .await
        .expect("adapter notices")
        .expect("status open");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let adapter = bot.stop_keeping().await;

    // Never connected: nothing listens where it connects.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let bot = Bot::spawn(Bot::config(&server, |c| c.server = nowhere.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bot.stop().await;

    // Mid-login: a proxy that accepts and then passes nothing.
    tokio::task::block_in_place(|| server.start_again()).expect("prosody starts again");
    let proxy = baton_e2e::proxy::Proxy::start(server.c2s_addr()).expect("proxy");
    proxy.hold(baton_e2e::proxy::Direction::Up);
    proxy.hold(baton_e2e::proxy::Direction::Down);
    let through = proxy.addr().to_string();
    let bot = Bot::spawn(Bot::config(&server, |c| c.server = through.clone()));
    let deadline = Instant::now() + WAIT;
    while proxy.accepted() == 0 {
        assert!(Instant::now() < deadline, "the adapter never connected to the proxy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bot.stop().await;

    // The adapter stopped during the outage runs again once the server is back.
    let bot = Bot::run(adapter);
    bot.adapter
        .wait_until_joined(Duration::from_secs(20))
        .await
        .expect("runs again after the outage");
    bot.stop().await;
    // The library's reconnect tasks end too; give a panic there the time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = panics.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(seen.is_empty(), "tokio-xmpp panicked: {seen:#?}");
}
