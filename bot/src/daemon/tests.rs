//! The daemon driven through the in-process chat platform (`adapters::memory`), with a real
//! SQLite store on disk and the simulated executor: one card per run per room edited in place
//! across a restart, a burst of updates coalesced, a refused click answered to the clicker only,
//! a slow platform that holds neither the run nor another platform's approval, and a mirror room
//! that refuses the bot.

use super::*;
use crate::adapters::memory::{MemoryAdapter, by_room};
use crate::config::Config;
use crate::config::secret::SecretEnv;
use crate::engine::EngineConfig;
use crate::store::SqliteStore;
use baton_actions::simulated::{SimulatedExecutor, SimulationConfig};
use baton_policies::Identity;
use std::path::{Path, PathBuf};

const ALICE: &str = "discord:80351110224678912";
const BOB: &str = "discord:80351110224678913";
const BOB_TEAMS: &str = "teams:7a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d";
const WAIT: Duration = Duration::from_secs(20);

fn who(s: &str) -> Identity {
    Identity::parse(s).expect("a valid identity")
}

fn config() -> Config {
    let var = |_: &str| None;
    let env = SecretEnv {
        var: &var,
        base: PathBuf::from("."),
    };
    Config::parse(crate::demo::EXAMPLE, "examples/contoso.toml", &env).expect("the example is valid")
}

fn cards(interval: Duration) -> Capabilities {
    Capabilities {
        cards: true,
        edit_interval: interval,
    }
}

struct Bot {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Bot {
    /// A daemon on the store in `dir`, with these platforms; actions take `delay` each.
    fn start(dir: &Path, delay: Duration, adapters: Vec<Arc<dyn ChatAdapter>>, mirrors: Vec<RoomRef>) -> Bot {
        Bot::start_with(dir, delay, adapters, mirrors, |_| {})
    }

    fn start_with(
        dir: &Path,
        delay: Duration,
        adapters: Vec<Arc<dyn ChatAdapter>>,
        mirrors: Vec<RoomRef>,
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Bot {
        let config = config();
        let store = SqliteStore::open(&dir.join("baton.sqlite")).expect("opens the store");
        let mut cfg = EngineConfig::from_config(&config, store.store_id());
        cfg.mirror_rooms = mirrors;
        tweak(&mut cfg);
        let sim = SimulationConfig {
            default_delay: delay,
            ..Default::default()
        };
        let executor = Arc::new(SimulatedExecutor::open(&dir.join("sim.sqlite"), sim).expect("opens the record"));
        let daemon = Daemon::new(cfg, Box::new(store), executor, adapters, Lifetime::Forever)
            .expect("starts")
            .with_mirror_give_up(Duration::from_millis(500));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(daemon.run(shutdown.clone()));
        Bot { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("joins").expect("the daemon ends cleanly");
    }
}

/// The kinds of the journal's events, read from the store file (WAL lets a reader in).
fn journal(dir: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join("baton.sqlite")).expect("opens");
    let mut stmt = conn.prepare("SELECT kind FROM events ORDER BY seq").expect("prepares");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("reads")
        .collect::<Result<_, _>>()
        .expect("reads")
}

/// The outbox rows neither delivered nor recorded undeliverable.
fn outbox_pending(dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("baton.sqlite")).expect("opens");
    conn.query_row("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL", [], |r| {
        r.get(0)
    })
    .expect("counts")
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn approve(run: u64, plan: &str) -> ButtonIntent {
    ButtonIntent::Approve {
        run: RunId(run),
        plan: plan.into(),
    }
}

#[tokio::test]
async fn one_card_per_run_edited_in_place_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let discord = Arc::new(MemoryAdapter::new(Platform::Discord, cards(Duration::ZERO), &["ops"]));
    let bot = Bot::start(dir.path(), Duration::from_millis(200), vec![discord.clone()], vec![]);
    discord
        .say("ops", &who(ALICE), "!failover xmpp EdgePool2 pool 1 lost power")
        .await;
    discord
        .wait_for(WAIT, |p| p.iter().any(|m| m.card.is_some()))
        .await
        .expect("the plan is posted as a card");
    let card = discord
        .posted("ops")
        .into_iter()
        .find(|m| m.card.is_some())
        .expect("a card");
    let plan = card.card.as_ref().expect("a card").plan.clone();
    assert_eq!(card.card.as_ref().expect("a card").buttons.len(), 2, "approve and deny");
    let reply = discord.click("ops", &who(BOB), approve(1, &plan)).await;
    assert!(matches!(reply, Some(InteractionReply::Accepted(Some(_)))), "{reply:?}");
    // Stop mid-run, once step 3 has started, and start again on the same store.
    until("step 3 under way", || {
        journal(dir.path()).iter().filter(|k| *k == "step_started").count() >= 3
    })
    .await;
    bot.stop().await;
    let bot = Bot::start(dir.path(), Duration::from_millis(20), vec![discord.clone()], vec![]);
    discord
        .wait_for(WAIT, |p| p.iter().any(|m| m.text.contains("#1 succeeded")))
        .await
        .expect("the run ends");
    discord
        .wait_for(WAIT, |p| {
            p.iter()
                .any(|m| m.card.as_ref().is_some_and(|c| c.mark == crate::chat::Mark::Ok))
        })
        .await
        .expect("the card shows the end");
    bot.stop().await;
    let posted = discord.posted("ops");
    let card_messages: Vec<_> = posted.iter().filter(|m| m.card.is_some()).collect();
    assert_eq!(card_messages.len(), 1, "one card for the run: {:#?}", by_room(&posted));
    assert_eq!(
        card_messages[0].reference, card.reference,
        "the same message, across the restart"
    );
    assert!(card_messages[0].edits >= 2, "edited in place as the run moved");
    let last = card_messages[0].card.as_ref().expect("a card");
    assert!(last.steps.iter().all(|s| s.mark == crate::chat::Mark::Ok), "{last:#?}");
    assert!(last.buttons.is_empty(), "no buttons once the run is under way");
    // Step lines are on the card, not posted; notices are.
    assert!(
        !posted.iter().any(|m| m.text.contains("[2/8]")),
        "{:#?}",
        by_room(&posted)
    );
    assert!(posted.iter().any(|m| m.text.contains("approved by bob")));
}

#[tokio::test]
async fn a_burst_of_updates_becomes_few_edits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let discord = Arc::new(MemoryAdapter::new(
        Platform::Discord,
        cards(Duration::from_millis(1500)),
        &["ops"],
    ));
    let bot = Bot::start(dir.path(), Duration::ZERO, vec![discord.clone()], vec![]);
    discord.say("ops", &who(ALICE), "!failover xmpp EdgePool2").await;
    discord
        .wait_for(WAIT, |p| p.iter().any(|m| m.card.is_some()))
        .await
        .expect("the card");
    let plan = discord.posted("ops")[0].card.as_ref().expect("a card").plan.clone();
    discord.click("ops", &who(BOB), approve(1, &plan)).await;
    discord
        .wait_for(WAIT, |p| {
            p.iter()
                .any(|m| m.card.as_ref().is_some_and(|c| c.mark == crate::chat::Mark::Ok))
        })
        .await
        .expect("the card shows the end");
    bot.stop().await;
    let edits = discord.attempts().iter().filter(|a| a.edit.is_some()).count();
    // Eight steps end within milliseconds; edits are spaced by 1.5 s, so they coalesce.
    assert!(edits <= 3, "{edits} edits for a burst of 8 step updates");
    let card = &discord.posted("ops")[0];
    assert!(
        card.card
            .as_ref()
            .expect("a card")
            .steps
            .iter()
            .all(|s| s.mark == crate::chat::Mark::Ok)
    );
}

#[tokio::test]
async fn a_refused_click_is_answered_to_the_clicker_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let discord = Arc::new(MemoryAdapter::new(Platform::Discord, cards(Duration::ZERO), &["ops"]));
    let bot = Bot::start(dir.path(), Duration::ZERO, vec![discord.clone()], vec![]);
    discord.say("ops", &who(ALICE), "!failover xmpp EdgePool2").await;
    discord
        .wait_for(WAIT, |p| p.iter().any(|m| m.card.is_some()))
        .await
        .expect("the card");
    let plan = discord.posted("ops")[0].card.as_ref().expect("a card").plan.clone();
    let reply = discord.click("ops", &who(ALICE), approve(1, &plan)).await;
    let Some(InteractionReply::Refused(why)) = reply else {
        panic!("the requester's own click is refused, got {reply:?}")
    };
    assert!(why.plain().contains("you requested this"), "{why}");
    // A click with a plan the run no longer has is refused with the current one.
    let reply = discord.click("ops", &who(BOB), approve(1, "abcdef123456")).await;
    let Some(InteractionReply::Refused(why)) = reply else {
        panic!("a click on another plan is refused, got {reply:?}")
    };
    assert!(why.plain().contains(&plan), "{why}");
    // Then a status question, so that everything before it is known to be delivered.
    discord.say("ops", &who(BOB), "!status 1").await;
    discord
        .wait_for(WAIT, |p| p.iter().any(|m| m.text.contains("pending approval")))
        .await
        .expect("status answered");
    bot.stop().await;
    let posted = discord.posted("ops");
    assert!(
        !posted.iter().any(|m| m.text.contains("Refused")),
        "refusals go to the clicker, not the room: {:#?}",
        by_room(&posted)
    );
    assert_eq!(posted[0].edits, 0, "the card did not change");
    assert!(
        journal(dir.path()).iter().filter(|k| *k == "refused").count() == 2,
        "refusals are journaled"
    );
}

/// Clicks refused again and again: five answers with the reason and journal rows, then a short
/// answer to the clicker alone (a click must be answered), with nothing journaled or said in the
/// room.
#[tokio::test]
async fn a_clicker_refused_too_often_is_answered_briefly_and_not_journaled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let discord = Arc::new(MemoryAdapter::new(Platform::Discord, cards(Duration::ZERO), &["ops"]));
    let bot = Bot::start(dir.path(), Duration::ZERO, vec![discord.clone()], vec![]);
    discord.say("ops", &who(ALICE), "!failover xmpp EdgePool2").await;
    discord
        .wait_for(WAIT, |p| p.iter().any(|m| m.card.is_some()))
        .await
        .expect("the card");
    let plan = discord.posted("ops")[0].card.as_ref().expect("a card").plan.clone();
    let mut answers = Vec::new();
    for _ in 0..7 {
        match discord.click("ops", &who(ALICE), approve(1, &plan)).await {
            Some(InteractionReply::Refused(why)) => answers.push(why.plain()),
            other => panic!("a refused click is answered as refused, got {other:?}"),
        }
    }
    assert!(
        answers[..5].iter().all(|a| a.contains("you requested this")),
        "{answers:#?}"
    );
    assert!(
        answers[5..].iter().all(|a| a.contains("had your refusals")),
        "{answers:#?}"
    );
    bot.stop().await;
    assert_eq!(journal(dir.path()).iter().filter(|k| *k == "refused").count(), 5);
    assert!(
        !discord.posted("ops").iter().any(|m| m.text.contains("Refused")),
        "nothing said in the room"
    );
}

#[tokio::test]
async fn a_slow_platform_holds_neither_the_run_nor_another_platform() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Every delivery on the run's platform takes 10 s; the run has a dozen messages.
    let slow = Arc::new(MemoryAdapter::new(Platform::Discord, Capabilities::default(), &["ops"]));
    let teams = Arc::new(MemoryAdapter::new(
        Platform::Teams,
        Capabilities::default(),
        &["bridge"],
    ));
    let bot = Bot::start(
        dir.path(),
        Duration::from_millis(50),
        vec![slow.clone(), teams.clone()],
        vec![],
    );
    slow.say("ops", &who(ALICE), "!failover xmpp EdgePool2").await;
    slow.wait_for(WAIT, |p| !p.is_empty()).await.expect("the plan");
    slow.set_delay(Duration::from_secs(10));
    // Bob approves from the other platform: processed at once, not after the slow room.
    let asked = tokio::time::Instant::now();
    teams.say("bridge", &who(BOB_TEAMS), "!approve 1").await;
    until("the run started", || journal(dir.path()).iter().any(|k| k == "started")).await;
    let approved_after = asked.elapsed();
    until("the run ended", || journal(dir.path()).iter().any(|k| k == "succeeded")).await;
    let ended_after = asked.elapsed();
    // The run took eight 50 ms steps; the slow room needs 10 s per message, a dozen of them.
    assert!(
        approved_after < Duration::from_secs(2),
        "the approval waited {approved_after:?}"
    );
    assert!(
        ended_after < Duration::from_secs(6),
        "the run waited on the slow platform: {ended_after:?}"
    );
    slow.set_delay(Duration::ZERO);
    slow.wait_for(WAIT, |p| p.iter().any(|m| m.text.contains("#1 succeeded")))
        .await
        .expect("the slow room catches up");
    bot.stop().await;
    let texts: Vec<String> = slow.posted("ops").into_iter().map(|p| p.text).collect();
    let mut unique = texts.clone();
    unique.dedup();
    assert_eq!(texts, unique, "no message posted twice");
    let steps: Vec<usize> = texts
        .iter()
        .filter_map(|t| {
            t.split_once("#1 [")
                .and_then(|(_, r)| r.split('/').next()?.parse().ok())
        })
        .collect();
    assert_eq!(
        steps,
        (1..=8).collect::<Vec<_>>(),
        "every step line, in order: {texts:#?}"
    );
}

#[tokio::test]
async fn a_mirror_room_that_refuses_holds_nothing_and_is_reported_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let discord = Arc::new(MemoryAdapter::new(
        Platform::Discord,
        Capabilities::default(),
        &["ops", "mirror"],
    ));
    discord.refuse("mirror", true);
    let mirror = discord.room("mirror");
    let bot = Bot::start(
        dir.path(),
        Duration::from_millis(100),
        vec![discord.clone()],
        vec![mirror],
    );
    discord.say("ops", &who(ALICE), "!failover xmpp EdgePool2").await;
    discord.wait_for(WAIT, |p| !p.is_empty()).await.expect("the plan");
    discord.say("ops", &who(BOB), "!approve 1").await;
    discord.say("ops", &who(BOB), "!status").await;
    discord
        .wait_for(WAIT, |p| p.iter().any(|m| m.text.contains("#1 succeeded")))
        .await
        .expect("the incident room gets the whole run");
    discord.say("ops", &who(BOB), "!status 1").await;
    discord
        .wait_for(WAIT, |p| {
            p.iter()
                .any(|m| m.text.starts_with("#1 succeeded, ") || m.text.starts_with("#1 succeeded:"))
        })
        .await
        .expect("status answered after the run");
    // Every message to the mirror is recorded undeliverable soon after the run, not one per
    // backoff period (which grows to 30 s).
    let done = tokio::time::Instant::now();
    until("the mirror's messages recorded undeliverable", || {
        assert!(
            done.elapsed() < Duration::from_secs(3),
            "the mirror's messages still wait"
        );
        outbox_pending(dir.path()) == 0
    })
    .await;
    bot.stop().await;
    let ops: Vec<String> = discord.posted("ops").into_iter().map(|p| p.text).collect();
    let steps: Vec<usize> = ops
        .iter()
        .filter_map(|t| {
            t.split_once("#1 [")
                .and_then(|(_, r)| r.split('/').next()?.parse().ok())
        })
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>(), "every step line in order: {ops:#?}");
    let notices = ops
        .iter()
        .filter(|t| t.contains("mirror room mirror cannot be delivered"))
        .count();
    assert_eq!(notices, 1, "the mirror's failure is said once: {ops:#?}");
    assert!(discord.posted("mirror").is_empty());
}

#[tokio::test]
async fn a_slow_platform_does_not_hold_a_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slow = Arc::new(MemoryAdapter::new(Platform::Discord, Capabilities::default(), &["ops"]));
    let bot = Bot::start_with(dir.path(), Duration::ZERO, vec![slow.clone()], vec![], |cfg| {
        cfg.policy.expiry = Duration::from_secs(2);
    });
    slow.set_delay(Duration::from_secs(10));
    let asked = tokio::time::Instant::now();
    slow.say("ops", &who(ALICE), "!failover xmpp EdgePool2").await;
    until("the request expired", || {
        journal(dir.path()).iter().any(|k| k == "expired")
    })
    .await;
    // The request expires 2 s after it was made, while the plan's own delivery still takes 10 s.
    let expired_after = asked.elapsed();
    assert!(
        expired_after < Duration::from_secs(6),
        "the deadline waited on the platform: {expired_after:?}"
    );
    bot.stop().await;
}

#[test]
fn the_engine_clock_follows_the_monotonic_clock_not_the_wall() {
    // A clock that started "in 2020" five seconds ago reads 2020 plus five seconds, whatever
    // the system's wall clock says now: a wall-clock step while Baton runs changes nothing.
    let wall = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
        .expect("valid")
        .with_timezone(&Utc);
    let clock = Clock {
        wall,
        mono: Instant::now() - Duration::from_secs(5),
    };
    let elapsed = (clock.now() - wall).num_milliseconds();
    assert!((5000..6000).contains(&elapsed), "{elapsed} ms");
    let later = clock.now();
    assert!(later >= wall + chrono::Duration::seconds(5));
}

/// A platform whose first connection fails when told to (as an adapter whose stream ends).
struct Crashing {
    inner: Arc<MemoryAdapter>,
    crash: tokio::sync::Notify,
    crashed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl ChatAdapter for Crashing {
    fn platform(&self) -> Platform {
        self.inner.platform()
    }

    async fn run(&self, inbound: mpsc::Sender<Inbound>, shutdown: CancellationToken) -> anyhow::Result<()> {
        if self.crashed.load(std::sync::atomic::Ordering::Acquire) {
            return self.inner.run(inbound, shutdown).await;
        }
        let session = shutdown.child_token();
        let run = self.inner.run(inbound, session.clone());
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            _ = self.crash.notified() => {
                session.cancel();
                run.await?;
                self.crashed.store(true, std::sync::atomic::Ordering::Release);
                anyhow::bail!("the stream ended")
            }
        }
    }

    async fn deliver(&self, message: &Outbound) -> Result<crate::chat::Delivered, crate::chat::DeliveryError> {
        self.inner.deliver(message).await
    }
}

#[tokio::test]
async fn an_adapter_that_fails_is_started_again_and_the_bot_hears_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = Arc::new(MemoryAdapter::new(Platform::Discord, Capabilities::default(), &["ops"]));
    let crashing = Arc::new(Crashing {
        inner: inner.clone(),
        crash: tokio::sync::Notify::new(),
        crashed: false.into(),
    });
    let bot = Bot::start(dir.path(), Duration::ZERO, vec![crashing.clone()], vec![]);
    let answers =
        |p: &[crate::adapters::memory::Posted]| p.iter().filter(|m| m.text.contains("Baton commands:")).count();
    inner.say("ops", &who(ALICE), "!help").await;
    inner.wait_for(WAIT, |p| answers(p) == 1).await.expect("answered");
    crashing.crash.notify_one();
    until("the first session ended", || {
        crashing.crashed.load(std::sync::atomic::Ordering::Acquire)
    })
    .await;
    // Heard again once the daemon has started the adapter again (after 1 s).
    inner.say("ops", &who(ALICE), "!help").await;
    inner
        .wait_for(WAIT, |p| answers(p) == 2)
        .await
        .expect("answered after the restart");
    bot.stop().await;
}

/// The SQLite store, slowed down: every write of a group takes 100 ms (a slow disk), and the
/// size of each group is recorded.
struct SlowDisk {
    inner: SqliteStore,
    groups: Arc<std::sync::Mutex<Vec<usize>>>,
    /// Once set, every write fails as on a full disk.
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl crate::store::Store for SlowDisk {
    fn store_id(&self) -> &str {
        self.inner.store_id()
    }
    fn load(&mut self) -> Result<Vec<crate::event::Recorded>, StoreError> {
        self.inner.load()
    }
    fn export(&mut self) -> Result<Vec<crate::store::RawEvent>, StoreError> {
        self.inner.export()
    }
    fn commit(&mut self, batch: &Batch) -> Result<Vec<Queued>, StoreError> {
        self.commit_all(std::slice::from_ref(batch))
            .pop()
            .expect("one result per batch")
    }
    fn commit_all(&mut self, batches: &[Batch]) -> Vec<Result<Vec<Queued>, StoreError>> {
        self.groups.lock().expect("not poisoned").push(batches.len());
        if self.full.load(std::sync::atomic::Ordering::Acquire) {
            let full = || StoreError::Sqlite {
                path: "baton.sqlite".into(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(13),
                    Some("database or disk is full".into()),
                ),
            };
            return batches.iter().map(|_| Err(full())).collect();
        }
        std::thread::sleep(Duration::from_millis(100));
        self.inner.commit_all(batches)
    }
    fn handled_since(&mut self, since: chrono::DateTime<Utc>) -> Result<Vec<Handled>, StoreError> {
        self.inner.handled_since(since)
    }
    fn outbox(&mut self) -> Result<Vec<Queued>, StoreError> {
        self.inner.outbox()
    }
    fn outbox_len(&mut self) -> Result<usize, StoreError> {
        self.inner.outbox_len()
    }
    fn delivered(&mut self, id: i64, dropped: Option<&str>) -> Result<(), StoreError> {
        self.inner.delivered(id, dropped)
    }
    fn cards(&mut self) -> Result<Vec<(RoomRef, RunId, crate::chat::MessageRef)>, StoreError> {
        self.inner.cards()
    }
    fn set_card(
        &mut self,
        room: &RoomRef,
        run: RunId,
        reference: Option<&crate::chat::MessageRef>,
    ) -> Result<(), StoreError> {
        self.inner.set_card(room, run, reference)
    }
    fn journal(&mut self, run: Option<RunId>) -> Result<Vec<crate::store::JournalRow>, StoreError> {
        self.inner.journal(run)
    }
    fn verify_chain(&mut self) -> Result<crate::store::ChainReport, StoreError> {
        self.inner.verify_chain()
    }
    fn forged(&mut self) -> Result<Vec<Queued>, StoreError> {
        self.inner.forged()
    }
    fn chain_seal(&mut self) -> Result<Option<String>, StoreError> {
        self.inner.chain_seal()
    }
    fn adopt(&mut self) -> Result<crate::store::Adopted, StoreError> {
        self.inner.adopt()
    }
}

#[tokio::test]
async fn batches_decided_while_the_disk_is_busy_are_written_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let console = Arc::new(MemoryAdapter::new(Platform::Discord, Capabilities::default(), &["ops"]));
    let groups = Arc::new(std::sync::Mutex::new(Vec::new()));
    let config = config();
    let inner = SqliteStore::open(&dir.path().join("baton.sqlite")).expect("opens the store");
    let cfg = EngineConfig::from_config(&config, inner.store_id());
    let store = SlowDisk {
        inner,
        groups: groups.clone(),
        full: Arc::default(),
    };
    let executor = Arc::new(
        SimulatedExecutor::open(&dir.path().join("sim.sqlite"), SimulationConfig::default()).expect("opens the record"),
    );
    let adapters: Vec<Arc<dyn ChatAdapter>> = vec![console.clone()];
    let daemon = Daemon::new(cfg, Box::new(store), executor, adapters, Lifetime::Forever).expect("starts");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon.run(shutdown.clone()));
    // Five commands at once: the first is journaled (100 ms); the answers to the other four
    // wait behind it for their room and go to the store as one group.
    for n in 0..5 {
        console
            .say("ops", &who(ALICE), &format!("!failover xmpp EdgePool2 burst {n}"))
            .await;
    }
    console
        .wait_for(WAIT, |p| p.iter().filter(|m| m.text.contains("Run #")).count() >= 1)
        .await
        .expect("the request is answered");
    until("every command handled", || {
        console.posted("ops").len() >= 5 && groups.lock().expect("not poisoned").iter().sum::<usize>() >= 5
    })
    .await;
    shutdown.cancel();
    task.await.expect("joins").expect("the daemon ends cleanly");
    let groups = groups.lock().expect("not poisoned").clone();
    assert!(
        groups.iter().any(|n| *n > 1),
        "batches that piled up behind a 100 ms write go to the disk together: {groups:?}"
    );
    assert!(groups.len() < groups.iter().sum::<usize>(), "{groups:?}");
    // Every batch is on the disk, in order, on one intact chain.
    let mut store = SqliteStore::open(&dir.path().join("baton.sqlite")).expect("reopens");
    assert!(store.verify_chain().expect("verifies").intact());
    assert!(
        journal(dir.path()).iter().any(|k| k == "requested"),
        "{:?}",
        journal(dir.path())
    );
}

#[tokio::test]
async fn a_store_that_cannot_be_written_stops_baton_and_the_rooms_are_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chat = Arc::new(MemoryAdapter::new(Platform::Discord, Capabilities::default(), &["ops"]));
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config = config();
    let inner = SqliteStore::open(&dir.path().join("baton.sqlite")).expect("opens the store");
    let cfg = EngineConfig::from_config(&config, inner.store_id());
    let store = SlowDisk {
        inner,
        groups: Arc::default(),
        full: full.clone(),
    };
    let executor = Arc::new(
        SimulatedExecutor::open(&dir.path().join("sim.sqlite"), SimulationConfig::default()).expect("opens the record"),
    );
    let adapters: Vec<Arc<dyn ChatAdapter>> = vec![chat.clone()];
    let daemon = Daemon::new(cfg, Box::new(store), executor, adapters, Lifetime::Forever).expect("starts");
    let task = tokio::spawn(daemon.run(CancellationToken::new()));
    chat.say("ops", &who(ALICE), "!failover xmpp EdgePool2 drill").await;
    chat.wait_for(WAIT, |p| p.iter().any(|m| m.text.contains("Run #1 requested")))
        .await
        .expect("the request is posted");
    // The disk fills: the approval cannot be journaled, so Baton stops, and says why first.
    full.store(true, std::sync::atomic::Ordering::Release);
    chat.say("ops", &who(BOB), "!approve 1").await;
    let result = tokio::time::timeout(WAIT, task)
        .await
        .expect("stops")
        .expect("no panic");
    let error = result.expect_err("a journal that cannot be written stops the daemon");
    assert!(format!("{error:#}").contains("disk is full"), "{error:#}");
    let posted = chat.posted("ops");
    assert!(
        posted
            .iter()
            .any(|m| m.text.contains("Baton has stopped: it could not write its journal")
                && m.text.contains("disk is full")),
        "{posted:?}"
    );
    assert!(
        !posted.iter().any(|m| m.text.contains("approved by bob")),
        "nothing unjournaled was said"
    );
}
