//! Abuse from the room, through `baton run` in Prosody's incident room: concurrent
//! `!status xmpp` asks share one look (counted where looks start: `Get-CsSite` runs of the
//! management agent's simulator), and a later ask within the cache is answered from it with its
//! age; a sender spamming commands they may not use gets a bounded number of refusals, and only
//! those are journaled; a flood of chatter from one occupant leaves Baton's memory bounded and
//! its commands answered.

use baton_actions::Fqdn;
use baton_e2e::measure;
use baton_e2e::prosody::INCIDENT_ROOM;
use baton_e2e::room::{BOT_NICK, Follower};
use baton_e2e::stack::{MANAGEMENT, Stack, StackOptions};
use baton_e2e::xmpp_client::{JoinHistory, TestClient};
use std::time::{Duration, Instant};

/// The longest any single wait may take.
const T: Duration = Duration::from_secs(60);

fn xmpp_stack() -> anyhow::Result<Stack> {
    tokio::task::block_in_place(|| {
        Stack::start(StackOptions {
            xmpp_chat: true,
            ..StackOptions::default()
        })
    })
}

/// How many `route.get` (`Get-CsSite`) runs the management agent's simulator recorded: each
/// look reads the route of every site once.
fn route_reads(stack: &Stack) -> anyhow::Result<usize> {
    let mgmt = Fqdn::parse(MANAGEMENT)?;
    Ok(stack
        .fleet
        .executions(&mgmt)?
        .iter()
        .filter(|(_, action, _)| action == "route.get")
        .count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_status_looks_share_one_look_and_a_short_cache() -> anyhow::Result<()> {
    let stack = xmpp_stack()?;
    let _bot = tokio::task::block_in_place(|| stack.start_bot())?;
    let server = &stack.prosody;
    let mut alice = Follower::join(server, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    let mut bob = Follower::join(server, "bob", INCIDENT_ROOM, "bob", JoinHistory::None).await?;
    let mut carol = Follower::join(server, "carol", INCIDENT_ROOM, "carol", JoinHistory::None).await?;
    let mut mallory = Follower::join(server, "mallory", INCIDENT_ROOM, "mallory", JoinHistory::None).await?;
    alice.presence_of(INCIDENT_ROOM, "mallory", T).await?;
    let before = tokio::task::block_in_place(|| route_reads(&stack))?;

    // Four people ask at once (mallory may only look, which is all this is).
    let (a, b, c, m) = tokio::join!(
        alice.say(INCIDENT_ROOM, "!status xmpp"),
        bob.say(INCIDENT_ROOM, "!status xmpp"),
        carol.say(INCIDENT_ROOM, "!status xmpp"),
        mallory.say(INCIDENT_ROOM, "!status xmpp"),
    );
    for sent in [a, b, c, m] {
        sent?;
    }
    // Every ask is answered.
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(
            alice
                .bot_says(INCIDENT_ROOM, "XMPP federation of contoso.test", T)
                .await?
                .text,
        );
    }
    let sites = 2;
    let reads = tokio::task::block_in_place(|| route_reads(&stack))? - before;
    assert_eq!(
        reads, sites,
        "one look for four asks: one route read per site, not {reads}"
    );

    // Asked again within the cache: answered from the last look, saying how old it is.
    bob.say(INCIDENT_ROOM, "!status xmpp").await?;
    let cached = alice
        .bot_says(INCIDENT_ROOM, "XMPP federation of contoso.test", T)
        .await?
        .text;
    assert!(
        cached
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("(As looked ") && l.ends_with(" ago: one look answers every ask for 10s.)")),
        "{cached}"
    );
    assert_eq!(
        tokio::task::block_in_place(|| route_reads(&stack))? - before,
        sites,
        "no new look"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spammer_gets_a_bounded_number_of_refusals_and_journal_rows() -> anyhow::Result<()> {
    let stack = xmpp_stack()?;
    let _bot = tokio::task::block_in_place(|| stack.start_bot())?;
    let server = &stack.prosody;
    let mut alice = Follower::join(server, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    let mut mallory = Follower::join(server, "mallory", INCIDENT_ROOM, "mallory", JoinHistory::None).await?;
    alice.presence_of(INCIDENT_ROOM, "mallory", T).await?;

    // mallory may not approve: twelve tries within the minute.
    for i in 0..12 {
        mallory.say(INCIDENT_ROOM, &format!("!approve {}", i + 1)).await?;
    }
    // Once the room has relayed the twelfth back to mallory, all twelve reached Baton before
    // alice's question; messages are handled in order, so once it is answered, all twelve were.
    mallory
        .wait_for(|m| m.nick == "mallory" && m.text == "!approve 12", T)
        .await?;
    alice.say(INCIDENT_ROOM, "!runs").await?;
    alice.bot_says(INCIDENT_ROOM, "No runs yet.", T).await?;
    let refusals: Vec<String> = alice
        .bot_lines(INCIDENT_ROOM)
        .into_iter()
        .filter(|l| l.starts_with("Refused (!approve"))
        .collect();
    assert_eq!(
        refusals.len(),
        5,
        "five refusals a minute, then silence:\n{}",
        refusals.join("\n")
    );
    let kinds = tokio::task::block_in_place(|| stack.journal_kinds())?;
    assert_eq!(
        kinds.iter().filter(|k| *k == "refused").count(),
        5,
        "only the answered refusals are journaled: {kinds:?}"
    );
    // The others still get their answers: alice may approve, and is refused for a real reason.
    alice.say(INCIDENT_ROOM, "!approve 1").await?;
    alice.bot_says(INCIDENT_ROOM, "There is no run #1", T).await?;
    Ok(())
}

/// Says `text` as `client` and waits for the bot's answer containing `needle`, dropping the
/// chatter received meanwhile.
async fn ask(client: &mut TestClient, text: &str, needle: &str, within: Duration) -> anyhow::Result<String> {
    client.send(INCIDENT_ROOM, text).await?;
    let m = client
        .expect_message_dropping_others(|m| m.nick == BOT_NICK && m.text.contains(needle), within)
        .await?;
    Ok(m.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_chatter_leaves_memory_bounded_and_commands_answered() -> anyhow::Result<()> {
    let stack = xmpp_stack()?;
    let bot = tokio::task::block_in_place(|| stack.start_bot())?;
    let server = &stack.prosody;
    let mut alice = TestClient::connect(server, "alice").await?;
    alice.join(INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    let ready = Instant::now() + T;
    // Until the bot is in the room, probes go unanswered.
    while ask(&mut alice, "!help", "Baton commands:", Duration::from_secs(2))
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < ready, "the bot did not answer in the room");
    }
    let start = measure::memory(bot.pid());

    // mallory floods the room: big lines first, then many short ones.
    let count = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    // Sizes can be raised for a longer flood (BATON_FLOOD_BIG, BATON_FLOOD_SHORT).
    let big = count("BATON_FLOOD_BIG", 300);
    let short = count("BATON_FLOOD_SHORT", 20_000);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = sent.clone();
    let mut flooder = TestClient::connect(server, "mallory").await?;
    flooder.join(INCIDENT_ROOM, "mallory", JoinHistory::None).await?;
    let big_line = "chatter ".repeat(100 * 1024 / 8);
    let flood = tokio::spawn(async move {
        let began = Instant::now();
        for i in 0..big + short {
            let line = if i < big {
                format!("{i} {big_line}")
            } else {
                format!("short chatter {i}")
            };
            flooder.send(INCIDENT_ROOM, &line).await?;
            progress.store(i + 1, std::sync::atomic::Ordering::Relaxed);
            if i % 64 == 0 {
                flooder.discard_received().await;
            }
        }
        anyhow::Ok((flooder, began.elapsed()))
    });
    // While the flood goes on, alice's commands are answered; Baton's memory is sampled.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut asked = 0;
    let mut peak = start.rss_kib;
    while !flood.is_finished() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the flood did not end within 240 s ({} of {} lines sent, {asked} commands answered)",
            sent.load(std::sync::atomic::Ordering::Relaxed),
            big + short
        );
        ask(&mut alice, "!runs", "No runs yet.", T).await?;
        asked += 1;
        peak = peak.max(measure::memory(bot.pid()).rss_kib);
    }
    let (flooder, took) = flood.await??;
    ask(&mut alice, "!runs", "No runs yet.", T).await?;
    let end = measure::memory(bot.pid());
    peak = peak.max(end.hwm_kib);
    let sent_mib = (big * 100 * 1024 + short * 20) / (1024 * 1024);
    println!(
        "flood of {sent_mib} MiB ({big} lines of 100 KiB, {short} short lines) in {took:?}; {asked} commands answered meanwhile; \
         baton's memory: {} at start, peak {}, {} at the end",
        measure::mib(start.rss_kib),
        measure::mib(peak),
        measure::mib(end.rss_kib)
    );
    assert!(asked >= 1, "a command was answered during the flood");
    // Bounded: the daemon's backlog (1 MiB), the adapter's (4 MiB), the channel between them
    // and what the XMPP stream parses; far below what the room carried.
    assert!(
        peak < start.rss_kib + 96 * 1024,
        "memory grew from {} to a peak of {} during a flood of {sent_mib} MiB",
        measure::mib(start.rss_kib),
        measure::mib(peak)
    );
    flooder.close().await;
    alice.close().await;
    Ok(())
}
