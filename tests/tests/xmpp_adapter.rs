//! The XMPP adapter against a real Prosody, with real test users as XMPP clients: identities come
//! from real JIDs, semi-anonymous rooms give unverified senders (and one notice), history and
//! repeated ids produce nothing, sustained request/reply traffic does not stall, and a Prosody
//! restart is survived with deliveries refused while down and delivered in order after.

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
        let adapter = Arc::new(XmppAdapter::new(config).expect("valid config"));
        let (tx, inbound) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let adapter = adapter.clone();
            let shutdown = shutdown.clone();
            async move { adapter.run(tx, shutdown).await }
        });
        adapter.wait_until_joined(WAIT).await.expect("adapter joins both rooms");
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
        self.shutdown.cancel();
        let ended = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("adapter stops within the wait");
        ended
            .expect("adapter task did not panic")
            .expect("adapter ends cleanly");
    }
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
