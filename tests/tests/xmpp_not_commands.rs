//! What is never a command, through the whole of Baton (`baton run` against Prosody, with the
//! agents and BIND behind it): a correction (XEP-0308) that turns harmless text into a failover
//! gets one notice and starts nothing; private messages, through the room or one-to-one, get one
//! line naming the rooms and start nothing; and the notice of a room that hides real JIDs is said
//! once, not again when `baton run` starts again on the same store.

use anyhow::Result;
use baton::adapters::xmpp::inbound::{EDITS_NOTICE, HIDDEN_JIDS_NOTICE, private_notice};
use baton_e2e::baton::Baton;
use baton_e2e::prosody::{INCIDENT_ROOM, SEMI_ANONYMOUS_ROOM};
use baton_e2e::stack::{Stack, StackOptions};
use baton_e2e::xmpp_client::{JoinHistory, RoomMessage, TestClient};
use std::time::{Duration, Instant};

/// The longest any single wait may take.
const T: Duration = Duration::from_secs(60);

fn start() -> Result<(Stack, Baton)> {
    tokio::task::block_in_place(|| {
        let stack = Stack::start(StackOptions {
            xmpp_chat: true,
            ..StackOptions::default()
        })?;
        let bot = stack.start_bot()?;
        Ok((stack, bot))
    })
}

fn from_baton(m: &RoomMessage) -> bool {
    m.nick == "baton"
}

/// Says `!help` in `room` until the bot answers (it is in the room and reading); returns what
/// the client received meanwhile from the bot, the answer excluded.
async fn until_the_bot_answers(client: &mut TestClient, room: &str) -> Result<Vec<RoomMessage>> {
    let deadline = Instant::now() + T;
    let mut before = Vec::new();
    loop {
        client.send(room, "!help").await?;
        let answer = client
            .expect_message(
                |m| m.room == room && from_baton(m) && m.text.contains("Baton commands:"),
                Duration::from_secs(2),
            )
            .await;
        // Whatever else came stays buffered: take it, and drop the answers to earlier probes.
        before.extend(
            client
                .collect_for(Duration::ZERO)
                .await
                .into_iter()
                .filter(|m| from_baton(m) && !m.text.contains("Baton commands:")),
        );
        if answer.is_ok() {
            return Ok(before);
        }
        anyhow::ensure!(Instant::now() < deadline, "the bot did not answer !help in {room}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrections_and_private_messages_start_nothing() -> Result<()> {
    let (stack, bot) = start()?;
    let mut alice = TestClient::connect(&stack.prosody, "alice").await?;
    alice.join(INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    until_the_bot_answers(&mut alice, INCIDENT_ROOM).await?;

    // Harmless text, corrected into a failover request: one notice, no run.
    let first = alice.send(INCIDENT_ROOM, "harmless text").await?;
    alice
        .send_correction(INCIDENT_ROOM, "!failover xmpp EdgePool2 drill", &first)
        .await?;
    let notice = alice.expect_message(from_baton, T).await?;
    assert_eq!(notice.text, EDITS_NOTICE);

    // Private messages: through the room, and one-to-one from someone in no room.
    let rooms = [INCIDENT_ROOM.to_string(), SEMI_ANONYMOUS_ROOM.to_string()];
    alice
        .send_chat(&format!("{INCIDENT_ROOM}/baton"), "!failover xmpp EdgePool2 drill")
        .await?;
    let mut bob = TestClient::connect(&stack.prosody, "bob").await?;
    bob.send_chat(&stack.prosody.jid("baton"), "!failover xmpp EdgePool2 drill")
        .await?;
    for (who, client) in [("alice", &mut alice), ("bob", &mut bob)] {
        let deadline = Instant::now() + T;
        let mut got = Vec::new();
        while got.is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "{who} got no answer in private");
            got = client.chats_for(Duration::from_millis(500)).await;
        }
        // Anything more would have come with it.
        got.extend(client.chats_for(Duration::from_millis(500)).await);
        assert_eq!(got.len(), 1, "{who}: one line: {got:?}");
        assert_eq!(got[0].text, private_notice(&rooms), "{who}");
    }

    // The bot reads the room in order: once it answers this, it has seen all of the above.
    alice.send(INCIDENT_ROOM, "!runs").await?;
    let answer = alice.expect_message(from_baton, T).await?;
    let said: Vec<String> = alice
        .collect_for(Duration::ZERO)
        .await
        .into_iter()
        .filter(from_baton)
        .map(|m| m.text)
        .chain([answer.text])
        .collect();
    assert!(
        said.iter().all(|t| !t.contains("Run #1")),
        "nothing was requested: {said:#?}"
    );
    let kinds = tokio::task::block_in_place(|| stack.journal_kinds())?;
    assert!(kinds.is_empty(), "nothing reached the journal: {kinds:?}");
    let err = bot.stderr();
    assert!(!err.contains("panicked"), "baton panicked:\n{err}");
    alice.close().await;
    bob.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hidden_jids_notice_is_said_once_not_at_every_start() -> Result<()> {
    let (stack, mut bot) = start()?;
    let mut carol = TestClient::connect(&stack.prosody, "carol").await?;
    // With the room's history: Baton says the notice as soon as it has joined, which can be
    // before carol joins (it raced under load when she asked for none).
    carol.join(SEMI_ANONYMOUS_ROOM, "carol", JoinHistory::All).await?;
    let notice = carol
        .expect_message(|m| from_baton(m) && m.room == SEMI_ANONYMOUS_ROOM, T)
        .await?;
    assert_eq!(notice.text, HIDDEN_JIDS_NOTICE);
    until_the_bot_answers(&mut carol, SEMI_ANONYMOUS_ROOM).await?;

    // Baton is killed and started again on the same store.
    tokio::task::block_in_place(|| -> Result<()> {
        bot.kill9();
        bot.wait_exit(T)?;
        Ok(())
    })?;
    let again = tokio::task::block_in_place(|| stack.start_bot())?;
    // Back in the room (its join comes before its answer), and no notice on the way.
    let said = until_the_bot_answers(&mut carol, SEMI_ANONYMOUS_ROOM).await?;
    assert!(
        said.iter().all(|m| m.text != HIDDEN_JIDS_NOTICE),
        "the notice was said again: {said:#?}"
    );
    let err = again.stderr();
    assert!(!err.contains("panicked"), "baton panicked:\n{err}");
    carol.close().await;
    Ok(())
}
