//! Figures for Baton in Teams (prints figures; asserts nothing):
//!
//! 1. token validation per request: Baton's validator (header, RS256 signature, claims,
//!    endorsement and serviceurl) on a stand-in token, keys in memory.
//! 2. inbound activity -> first Connector call, for `!status` and for `!failover` (until the
//!    approval card is POSTed): `baton run` on the full stack with both its XMPP and its Teams
//!    adapter; a signed activity is POSTed to the messaging endpoint and timed until the
//!    stand-in's Connector records Baton's answer (both clocks are this process's). The
//!    baseline is the same command on XMPP in the same run, round by round (the order of the
//!    two alternates): alice's client in the Prosody room, timed until it reads Baton's answer.
//!    Every failover is withdrawn at once (a Deny click on Teams, `!deny` on XMPP; also timed),
//!    as one route has one active run at a time. Teams rounds are spread over ten channels and
//!    paced so that Baton's own rate limit for Teams (60 operations per 30 s per channel) never
//!    delays them.
//! 3. resident memory of `baton run` with Teams (and XMPP) enabled: idle, after the commands,
//!    during an approved failover.
//!
//! ```text
//! cargo build --release -p baton -p baton-actions --bins
//! cargo bench -p baton-e2e --bench teams_latency [-- ROUNDS]
//! ```

use anyhow::{Context, bail};
use baton::adapters::teams::auth;
use baton_e2e::measure::{memory, mib, ms, percentile};
use baton_e2e::prosody::INCIDENT_ROOM;
use baton_e2e::stack::{Stack, StackOptions};
use baton_e2e::teams::{ActivityState, Auth, Channel, TeamsConfig, TeamsStandIn, TeamsUser};
use baton_e2e::teams_bot::{free_port, stack_teams, wait_for_endpoint};
use baton_e2e::xmpp_client::{JoinHistory, TestClient};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
const WARM_UP: usize = 20;
const CHANNELS: usize = 10;
/// One `!status` round every this often: each of the ten channels gets one per 0.6 s, under
/// the 2 per second Teams allows per thread over 30 s.
const PACE: Duration = Duration::from_millis(60);
/// One failover round every this often: a Teams failover costs its channel three operations
/// (the card, the withdrawal's line, the card's update), so each channel gets one per 2 s.
const FAILOVER_PACE: Duration = Duration::from_millis(200);
/// The failover requested in every round (the requester withdraws it at once).
const FAILOVER: &str = "!failover xmpp EdgePool2 bench";

fn main() -> anyhow::Result<()> {
    let rounds = match std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        Some(a) => a
            .parse::<usize>()
            .with_context(|| format!("rounds must be a number, got {a:?}"))?,
        None => 300,
    };
    if rounds < 200 {
        bail!("use at least 200 rounds (p99 needs them)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(rounds))
}

/// What the bench drives: the stand-in, Baton's endpoint, alice on XMPP, the channels.
struct Bench {
    teams: TeamsStandIn,
    endpoint: String,
    alice: TestClient,
    channels: Vec<Channel>,
    /// One valid token for every activity, as the Connector reuses its tokens while they are
    /// valid (so the stand-in's RSA signing stays out of the figures).
    auth: Auth,
    /// The number the next run gets.
    next_run: u64,
}

/// One round's samples.
#[derive(Default)]
struct Samples {
    teams: Vec<Duration>,
    xmpp: Vec<Duration>,
    /// Until the messaging endpoint's HTTP answer (Teams gives up after about 15 s).
    acked: Vec<Duration>,
}

async fn bench(rounds: usize) -> anyhow::Result<()> {
    println!(
        "profile of this harness: {}",
        if cfg!(debug_assertions) { "dev" } else { "release" }
    );
    let teams = TeamsStandIn::start(TeamsConfig::default()).await?;
    validation_cost(&teams)?;

    let more: Vec<_> = (1..CHANNELS)
        .map(|i| teams.add_channel("Contoso Ops", &format!("Bench {i}")))
        .collect();
    let listen = free_port()?;
    let stack = tokio::task::block_in_place(|| {
        Stack::start(StackOptions {
            xmpp_chat: true,
            sim_args: vec!["--delay-ms".into(), "300".into()],
            teams: Some(stack_teams(&teams, listen, &more, None)),
            ..StackOptions::default()
        })
    })?;
    let mut bot = tokio::task::block_in_place(|| stack.start_bot())?;
    let endpoint = format!("http://{listen}/api/messages");
    wait_for_endpoint(&teams, &endpoint, &TeamsUser::new("carol"), Duration::from_secs(30)).await?;
    let mut alice = TestClient::connect(&stack.prosody, "alice").await?;
    alice.join(INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    wait_for_xmpp(&mut alice).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = memory(bot.pid());
    let channels = std::iter::once(teams.channel()).chain(more).collect();
    let auth = Auth::Header(teams.authorization(&Auth::Valid).await?.context("a valid token")?);
    let mut b = Bench {
        teams,
        endpoint,
        alice,
        channels,
        auth,
        next_run: 1,
    };

    // `!status`, round by round, the order alternating.
    let mut status = Samples::default();
    for n in 0..rounds + WARM_UP {
        let next = Instant::now() + PACE;
        let channel = b.channels[n % CHANNELS].clone();
        let ((a, t), x) = if n % 2 == 0 {
            let t = b.teams_status(&channel).await?;
            (t, xmpp_round(&mut b.alice).await?)
        } else {
            let x = xmpp_round(&mut b.alice).await?;
            (b.teams_status(&channel).await?, x)
        };
        if n >= WARM_UP {
            status.acked.push(a);
            status.teams.push(t);
            status.xmpp.push(x);
        }
        tokio::time::sleep_until(next.into()).await;
    }

    // `!failover` until the approval card (Teams) or the request (XMPP), then its withdrawal.
    let mut request = Samples::default();
    let mut withdraw = Samples::default();
    for n in 0..rounds + WARM_UP {
        let next = Instant::now() + FAILOVER_PACE;
        let channel = b.channels[n % CHANNELS].clone();
        let ((tr, tw), (xr, xw)) = if n % 2 == 0 {
            let t = b.teams_failover(&channel).await?;
            (t, b.xmpp_failover().await?)
        } else {
            let x = b.xmpp_failover().await?;
            (b.teams_failover(&channel).await?, x)
        };
        if n >= WARM_UP {
            request.teams.push(tr);
            request.xmpp.push(xr);
            withdraw.teams.push(tw);
            withdraw.xmpp.push(xw);
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let after_commands = memory(bot.pid());

    // A failover requested in Teams and approved there while alice keeps asking on XMPP.
    let run = b.next_run;
    let first = b.channels[0].clone();
    let card = b.teams_request(&first).await?.1;
    let plan = plan_of(&card)?;
    let click = b.teams.execute_action(
        &TeamsUser::new("bob"),
        &card,
        "approve",
        serde_json::json!({"run": run.to_string(), "plan": plan}),
    );
    b.teams.send(&b.endpoint, &click).await?;
    let mut peak = 0u64;
    let started = Instant::now();
    let done = format!("#{run} succeeded");
    loop {
        peak = peak.max(memory(bot.pid()).rss_kib);
        xmpp_round(&mut b.alice).await?;
        let finished = b
            .teams
            .connector()
            .calls()
            .iter()
            .any(|c| c.text().is_some_and(|t| t.contains(&done)));
        if finished || started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    let after_run = memory(bot.pid());
    bot.kill9();

    println!();
    println!(
        "inbound -> Baton's first answer, {rounds} rounds each after {WARM_UP} warm-up, Teams and XMPP alternating, same baton run"
    );
    header();
    row("Teams !status: activity POSTed -> endpoint's HTTP 200", &status.acked);
    row(
        "Teams !status: activity POSTed -> Connector call recorded",
        &status.teams,
    );
    row("XMPP  !status: alice sends -> alice reads the answer", &status.xmpp);
    ratio("Teams / XMPP, !status", &status);
    row(
        "Teams !failover: activity POSTed -> approval card recorded",
        &request.teams,
    );
    row("XMPP  !failover: alice sends -> alice reads the request", &request.xmpp);
    ratio("Teams / XMPP, !failover", &request);
    row(
        "Teams Deny click: invoke POSTed -> invoke response read",
        &withdraw.teams,
    );
    row("XMPP  !deny: alice sends -> alice reads the denial", &withdraw.xmpp);
    ratio("Teams / XMPP, withdrawal", &withdraw);
    println!();
    println!("resident memory (VmRSS) of baton run with XMPP and Teams enabled:");
    println!("  idle, before any command            {}", mib(idle.rss_kib));
    println!(
        "  after {:>4} commands and clicks      {}",
        6 * (rounds + WARM_UP),
        mib(after_commands.rss_kib)
    );
    println!("  during a failover (peak of samples) {}", mib(peak));
    println!(
        "  after the run                       {} (VmHWM: {})",
        mib(after_run.rss_kib),
        mib(after_run.hwm_kib)
    );
    Ok(())
}

impl Bench {
    /// Carol asks `!status` in `channel`: the time until the endpoint's HTTP answer, and until
    /// Baton's answer reaches the Connector.
    async fn teams_status(&self, channel: &Channel) -> anyhow::Result<(Duration, Duration)> {
        let activity = self
            .teams
            .message(&TeamsUser::new("carol"), "!status")
            .in_channel(channel)
            .build();
        let conversation = activity["conversation"]["id"]
            .as_str()
            .context("a conversation")?
            .to_string();
        let before = self.teams.connector().calls().len();
        let sent = Instant::now();
        let reply = self.teams.send_with(&self.endpoint, &activity, &self.auth).await?;
        let acked = sent.elapsed();
        anyhow::ensure!(reply.status == 200, "the endpoint answered {}", reply.status);
        let call = self
            .teams
            .connector()
            .wait_for(
                |calls| {
                    calls[before..]
                        .iter()
                        .find(|c| c.conversation_id.as_deref() == Some(&conversation))
                        .cloned()
                },
                WAIT,
            )
            .await?;
        anyhow::ensure!(
            call.succeeded() && call.text().is_some_and(|t| t.starts_with("XMPP federation route:")),
            "unexpected call {}",
            call.summary()
        );
        Ok((acked, call.at.duration_since(sent)))
    }

    /// Alice requests the failover in a new thread of `channel`: the time until the approval
    /// card reaches the Connector, and the card.
    async fn teams_request(&mut self, channel: &Channel) -> anyhow::Result<(Duration, ActivityState)> {
        let activity = self
            .teams
            .message(&TeamsUser::new("alice"), FAILOVER)
            .in_channel(channel)
            .build();
        let conversation = activity["conversation"]["id"]
            .as_str()
            .context("a conversation")?
            .to_string();
        let before = self.teams.connector().calls().len();
        let sent = Instant::now();
        let reply = self.teams.send_with(&self.endpoint, &activity, &self.auth).await?;
        anyhow::ensure!(reply.status == 200, "the endpoint answered {}", reply.status);
        let call = self
            .teams
            .connector()
            .wait_for(
                |calls| {
                    calls[before..]
                        .iter()
                        .find(|c| c.conversation_id.as_deref() == Some(&conversation) && !c.adaptive_cards().is_empty())
                        .cloned()
                },
                WAIT,
            )
            .await?;
        let took = call.at.duration_since(sent);
        let title = format!("#{} XMPP federation", self.next_run);
        anyhow::ensure!(
            call.succeeded() && call.adaptive_cards()[0].to_string().contains(&title),
            "expected the card of run {}: {}",
            self.next_run,
            call.summary()
        );
        let id = call.result_activity_id.clone().context("the card's activity id")?;
        let card = self.teams.connector().activity(&id).context("the card's activity")?;
        self.next_run += 1;
        Ok((took, card))
    }

    /// A Teams failover round: the request until its card, then alice's Deny click until its
    /// invoke response.
    async fn teams_failover(&mut self, channel: &Channel) -> anyhow::Result<(Duration, Duration)> {
        let run = self.next_run;
        let (requested, card) = self.teams_request(channel).await?;
        let click = self.teams.execute_action(
            &TeamsUser::new("alice"),
            &card,
            "deny",
            serde_json::json!({"run": run.to_string(), "plan": plan_of(&card)?}),
        );
        let sent = Instant::now();
        let reply = self.teams.send_with(&self.endpoint, &click, &self.auth).await?;
        let withdrawn = sent.elapsed();
        let shown = reply.invoke_value().map(|v| v.to_string()).unwrap_or_default();
        anyhow::ensure!(
            reply.status == 200 && shown.contains("denied"),
            "the Deny click was answered {}: {}",
            reply.status,
            reply.text
        );
        Ok((requested, withdrawn))
    }

    /// An XMPP failover round: `!failover` until alice reads the request, then `!deny` until
    /// she reads the denial.
    async fn xmpp_failover(&mut self) -> anyhow::Result<(Duration, Duration)> {
        let run = self.next_run;
        let requested = format!("Run #{run} requested by alice");
        let sent = Instant::now();
        self.alice.send(INCIDENT_ROOM, FAILOVER).await?;
        self.alice
            .expect_message(|m| m.nick == "baton" && m.text.starts_with(&requested), WAIT)
            .await
            .context("waiting for Baton's request on XMPP")?;
        let asked = sent.elapsed();
        self.next_run += 1;
        let denied = format!("#{run} denied by alice");
        let sent = Instant::now();
        self.alice.send(INCIDENT_ROOM, &format!("!deny {run} bench")).await?;
        self.alice
            .expect_message(|m| m.nick == "baton" && m.text.starts_with(&denied), WAIT)
            .await
            .context("waiting for Baton's denial on XMPP")?;
        Ok((asked, sent.elapsed()))
    }
}

/// The plan hash the card's buttons carry.
fn plan_of(card: &ActivityState) -> anyhow::Result<String> {
    card.adaptive_cards()
        .first()
        .and_then(|c| c["actions"][0]["data"]["plan"].as_str())
        .map(str::to_string)
        .context("the card's plan")
}

/// Baton's validator on stand-in tokens, keys in memory: the cost per request.
fn validation_cost(teams: &TeamsStandIn) -> anyhow::Result<()> {
    let jwks = teams.identity().jwks().to_string();
    let (keys, _) = auth::parse_jwks(jwks.as_bytes()).map_err(anyhow::Error::msg)?;
    let algorithms = vec!["RS256".to_string()];
    let expected = auth::Expected {
        issuer: "https://api.botframework.com",
        audience: teams.app_id(),
        algorithms: &algorithms,
    };
    let claimed = auth::Claimed {
        service_url: teams.service_url(),
        channel_id: "msteams",
    };
    let authorization = format!("Bearer {}", teams.identity().valid_token());
    let mut samples = Vec::new();
    for n in 0..2200 {
        let start = Instant::now();
        let bearer = auth::bearer(Some(&authorization)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let key = keys.get(&bearer.kid).context("the signing key")?;
        let claims = auth::verify(&bearer, key, &expected).map_err(|e| anyhow::anyhow!("{e}"))?;
        auth::binds(&claims, key, claimed).map_err(|e| anyhow::anyhow!("{e}"))?;
        if n >= 200 {
            samples.push(start.elapsed());
        }
    }
    println!("Bot Connector token validation (RS256, 2048-bit key), per request:");
    header();
    row("header + signature + claims + endorsement + serviceurl", &samples);
    Ok(())
}

async fn xmpp_round(alice: &mut TestClient) -> anyhow::Result<Duration> {
    let started = Instant::now();
    alice.send(INCIDENT_ROOM, "!status").await?;
    alice
        .expect_message(
            |m| m.nick == "baton" && m.text.starts_with("XMPP federation route:"),
            WAIT,
        )
        .await
        .context("waiting for Baton's answer on XMPP")?;
    Ok(started.elapsed())
}

async fn wait_for_xmpp(alice: &mut TestClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if xmpp_round(alice).await.is_ok() {
            alice.collect_for(Duration::from_millis(500)).await;
            return Ok(());
        }
    }
    bail!("baton did not answer on XMPP within 30 s")
}

fn header() {
    println!("{:<62} {:>10} {:>10} {:>10} {:>6}", "", "p50", "p90", "p99", "n");
}

fn row(name: &str, samples: &[Duration]) {
    let cell = |p| format!("{:.3} ms", ms(percentile(samples, p)));
    println!(
        "{name:<62} {:>10} {:>10} {:>10} {:>6}",
        cell(50),
        cell(90),
        cell(99),
        samples.len()
    );
}

/// Teams' percentiles divided by XMPP's.
fn ratio(name: &str, s: &Samples) {
    let cell = |p| {
        let x = ms(percentile(&s.xmpp, p));
        if x > 0.0 {
            format!("{:.2}x", ms(percentile(&s.teams, p)) / x)
        } else {
            "-".to_string()
        }
    };
    println!(
        "{:<62} {:>10} {:>10} {:>10}",
        format!("  ratio {name}"),
        cell(50),
        cell(90),
        cell(99)
    );
}
