//! The approval request calls the approvers in the room: through `baton run` in Prosody's
//! incident room, the request names by nickname the people who may approve and are present (so
//! their clients highlight it), never the requester, someone who may not approve, or an approver
//! who is not in the room; `!status N` of the pending run says how long it has waited and who was
//! asked.

use baton_e2e::prosody::INCIDENT_ROOM;
use baton_e2e::room::Follower;
use baton_e2e::stack::{Stack, StackOptions};
use baton_e2e::xmpp_client::JoinHistory;
use std::time::Duration;

/// The longest any single wait may take.
const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_names_the_approvers_present_by_their_nicknames() -> anyhow::Result<()> {
    let stack = tokio::task::block_in_place(|| {
        Stack::start(StackOptions {
            xmpp_chat: true,
            ..StackOptions::default()
        })
    })?;
    let _bot = tokio::task::block_in_place(|| stack.start_bot())?;
    let server = &stack.prosody;
    let mut alice = Follower::join(server, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    // bob goes by "Bobby" in this room; mallory is here but may not approve; carol, an
    // approver, is not in the room.
    let mut bob = Follower::join(server, "bob", INCIDENT_ROOM, "Bobby", JoinHistory::None).await?;
    let _mallory = Follower::join(server, "mallory", INCIDENT_ROOM, "mallory", JoinHistory::None).await?;
    alice.presence_of(INCIDENT_ROOM, "mallory", T).await?;

    alice.say(INCIDENT_ROOM, "!failover xmpp EdgePool2 dc1 down").await?;
    let request = bob.bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T).await?.text;
    let last = request.lines().last().unwrap_or_default();
    assert_eq!(last, "Asking Bobby.", "the request's call:\n{request}");
    assert!(!request.contains("carol"), "carol is not in the room:\n{request}");
    assert!(!request.contains("mallory"), "mallory may not approve:\n{request}");
    let journaled = tokio::task::block_in_place(|| stack.journal_times("requested"))?;
    assert_eq!(journaled[0].1["asked"], serde_json::json!(["bob"]), "{journaled:?}");

    alice.say(INCIDENT_ROOM, "!status 1").await?;
    let status = alice.bot_says(INCIDENT_ROOM, "#1 pending approval", T).await?.text;
    let waiting = status
        .lines()
        .find(|l| l.trim_start().starts_with("waiting "))
        .unwrap_or_else(|| panic!("no waiting line in\n{status}"));
    assert!(
        waiting.trim_start().starts_with("waiting ") && waiting.ends_with(" for approval; asked: bob"),
        "{status}"
    );

    // Once carol is in the room, a new request calls her too (bob approves nothing here).
    let mut carol = Follower::join(server, "carol", INCIDENT_ROOM, "carol", JoinHistory::None).await?;
    alice.presence_of(INCIDENT_ROOM, "carol", T).await?;
    alice.say(INCIDENT_ROOM, "!abort 1").await?;
    alice.bot_says(INCIDENT_ROOM, "#1 aborted", T).await?;
    alice
        .say(INCIDENT_ROOM, "!failover xmpp EdgePool2 dc1 still down")
        .await?;
    let again = carol
        .bot_says(INCIDENT_ROOM, "Run #2 requested by alice", T)
        .await?
        .text;
    assert_eq!(again.lines().last(), Some("Asking Bobby and carol."), "{again}");
    Ok(())
}
