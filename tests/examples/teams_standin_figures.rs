//! Figures for the Teams stand-in in the profile tests use (prints figures; asserts nothing):
//! RSA-2048 key generation, a whole stand-in's start, signing one inbound token, one Connector
//! POST with its checks and record, and one Adaptive Card render in headless Chromium.
//!
//! Run: `cargo run -p baton-e2e --example teams_standin_figures`

use baton_e2e::teams::cards::{self, RenderOptions};
use baton_e2e::teams::http;
use baton_e2e::teams::keys::SigningKey;
use baton_e2e::teams::{TeamsConfig, TeamsStandIn};
use hyper::Method;
use secrecy::ExposeSecret;
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let n = samples.len();
    let total: Duration = samples.iter().sum();
    println!(
        "{what:<44} n={n:<4} mean {:>9.3} ms  min {:>9.3} ms  median {:>9.3} ms  max {:>9.3} ms",
        ms(total / n as u32),
        ms(samples[0]),
        ms(samples[n / 2]),
        ms(samples[n - 1])
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!(
        "profile: {}",
        if cfg!(debug_assertions) {
            "dev (as in cargo test)"
        } else {
            "release"
        }
    );

    let mut keys = Vec::new();
    for i in 0..8 {
        let start = Instant::now();
        SigningKey::generate(&format!("k{i}"))?;
        keys.push(start.elapsed());
    }
    report("RSA-2048 key generation (one key)", keys);

    let mut starts = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let start = Instant::now();
        let teams = TeamsStandIn::start(TeamsConfig::default()).await?;
        starts.push(start.elapsed());
        last = Some(teams);
    }
    report("TeamsStandIn::start (two keys, three servers)", starts);
    let teams = last.expect("five stand-ins started");

    let mut signing = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        std::hint::black_box(teams.identity().valid_token());
        signing.push(start.elapsed());
    }
    report("sign one inbound token (RS256)", signing);

    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", teams.app_id())
        .append_pair("client_secret", teams.app_secret().expose_secret())
        .append_pair("scope", "https://api.botframework.com/.default")
        .finish();
    let answer = http::request(
        Method::POST,
        &teams.token_url(),
        &[("content-type", "application/x-www-form-urlencoded")],
        form.into_bytes(),
        Duration::from_secs(10),
    )
    .await?;
    let token = answer.json().expect("a JSON answer")["access_token"]
        .as_str()
        .expect("a token")
        .to_string();
    let url = format!(
        "{}v3/conversations/{}/activities",
        teams.service_url(),
        teams.channel().channel_id
    );
    let bearer = format!("Bearer {token}");
    let body = serde_json::json!({"type": "message", "text": "#1 [2/8] services: edge2a ok 1.0s"}).to_string();
    let mut posts = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let r = http::request(
            Method::POST,
            &url,
            &[("authorization", &bearer), ("content-type", "application/json")],
            body.clone().into_bytes(),
            Duration::from_secs(10),
        )
        .await?;
        posts.push(start.elapsed());
        assert_eq!(r.status, 201, "{}", r.text());
    }
    report("Connector POST (new connection each)", posts);

    let card = cards::harness_dir().join("fixtures/approval-request.json");
    let mut renders = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let outcome = cards::check_cards(std::slice::from_ref(&card), &RenderOptions::default()).await?;
        renders.push(start.elapsed());
        cards::assert_clean(&outcome.reports()?)?;
    }
    report("card check, 1 card (node + Chromium start)", renders);
    Ok(())
}
