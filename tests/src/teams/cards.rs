//! The Adaptive Card check: runs `tests/cards/render.mjs`, which renders cards with Microsoft's
//! `adaptivecards` library in headless Debian Chromium and fails on any parse warning,
//! validation issue, console error or page error, optionally writing PNG screenshots.
//!
//! Needs `node`, the harness's modules (`npm ci --prefix tests/cards`) and Debian's `chromium`
//! (`/usr/bin/chromium`, or the path in `BATON_CHROMIUM`). A missing Chromium fails the check,
//! unless `BATON_SKIP_CARD_RENDER_WITHOUT_CHROMIUM=1` is set: then [`check_cards`] returns
//! [`Outcome::Skipped`] with a message saying so. Nothing else is ever skipped.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable that allows skipping when Chromium is missing (value `1`).
pub const SKIP_ENV: &str = "BATON_SKIP_CARD_RENDER_WITHOUT_CHROMIUM";
/// The environment variable naming another Chromium binary.
pub const CHROMIUM_ENV: &str = "BATON_CHROMIUM";
/// Debian's Chromium.
pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
/// The Adaptive Card version Teams renders.
pub const TEAMS_CARD_VERSION: &str = "1.5";
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The harness folder, `tests/cards`.
pub fn harness_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cards")
}

/// How to render.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Write `<file stem>-<index>.png` per card here.
    pub screenshots: Option<PathBuf>,
    /// The host's highest card version; cards declaring a higher one fail.
    pub target_version: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            screenshots: None,
            target_version: TEAMS_CARD_VERSION.to_string(),
        }
    }
}

/// An action as the renderer saw it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RenderedAction {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: Option<String>,
    pub verb: Option<String>,
}

/// The result for one card.
#[derive(Debug, Clone, Deserialize)]
pub struct CardReport {
    pub file: PathBuf,
    /// The card's index within its file (activities can hold several).
    pub index: usize,
    /// No issue at all.
    pub ok: bool,
    /// Every parse warning, validation issue, console message and page error.
    pub issues: Vec<String>,
    /// The rendered card's visible text.
    pub text: String,
    /// The card's top-level actions.
    pub actions: Vec<RenderedAction>,
    pub screenshot: Option<PathBuf>,
}

/// What a check came to.
#[derive(Debug)]
pub enum Outcome {
    /// The cards were rendered; each report says whether its card was clean.
    Rendered(Vec<CardReport>),
    /// Chromium is missing and the skip variable allows it; the message says so.
    Skipped(String),
}

impl Outcome {
    /// The reports, or an error when skipped.
    pub fn reports(self) -> Result<Vec<CardReport>> {
        match self {
            Outcome::Rendered(reports) => Ok(reports),
            Outcome::Skipped(why) => bail!("{why}"),
        }
    }
}

/// Renders the cards in `files` (each a card, an attachment or an activity). Errors: the
/// harness could not run (no node, no modules, Chromium missing without the skip variable,
/// Chromium would not start, a file unreadable). Unclean cards are not errors: see
/// [`CardReport::ok`], or use [`assert_clean`].
pub async fn check_cards(files: &[PathBuf], options: &RenderOptions) -> Result<Outcome> {
    let chromium = std::env::var(CHROMIUM_ENV).unwrap_or_else(|_| DEFAULT_CHROMIUM.to_string());
    let skip_allowed = std::env::var(SKIP_ENV).as_deref() == Ok("1");
    check_cards_using(Path::new(&chromium), skip_allowed, files, options).await
}

/// [`check_cards`] with the Chromium binary and the skip permission given instead of read from
/// the environment.
pub async fn check_cards_using(
    chromium: &Path,
    skip_allowed: bool,
    files: &[PathBuf],
    options: &RenderOptions,
) -> Result<Outcome> {
    let chromium = chromium.display().to_string();
    if !Path::new(&chromium).exists() {
        if skip_allowed {
            let why = format!(
                "Adaptive Card render check SKIPPED: {chromium} is missing and {SKIP_ENV}=1 allows it \
                 (install Debian's chromium to run it)"
            );
            eprintln!("{why}");
            return Ok(Outcome::Skipped(why));
        }
        bail!(
            "Adaptive Card render check: {chromium} is missing. Install it (apt-get install chromium), \
             or set {SKIP_ENV}=1 to skip this check where Chromium cannot be installed"
        );
    }
    let dir = harness_dir();
    if !dir
        .join("node_modules/adaptivecards/dist/adaptivecards.min.js")
        .exists()
        || !dir.join("node_modules/playwright-core").exists()
    {
        bail!(
            "the card harness's modules are missing: run `npm ci --prefix {}`",
            dir.display()
        );
    }
    let mut command = tokio::process::Command::new("node");
    command
        .arg(dir.join("render.mjs"))
        .arg("--target-version")
        .arg(&options.target_version)
        .env(CHROMIUM_ENV, &chromium)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(shots) = &options.screenshots {
        command.arg("--screenshots").arg(shots);
    }
    command.args(files);
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .with_context(|| format!("the card harness did not finish within {RUN_LIMIT:?}"))?
        .context("running node (is Node.js installed?)")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) | Some(1) => {}
        _ => bail!("the card harness failed ({}): {}", output.status, stderr.trim()),
    }
    let reports = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<CardReport>(l).with_context(|| format!("harness output line {l:?}")))
        .collect::<Result<Vec<_>>>()?;
    if reports.is_empty() {
        bail!("the card harness reported no card: {}", stderr.trim());
    }
    if output.status.code() == Some(1) && reports.iter().all(|r| r.ok) {
        bail!("the card harness failed without naming a card: {}", stderr.trim());
    }
    Ok(Outcome::Rendered(reports))
}

/// Writes each card (or activity, or attachment) to a temporary file and checks them.
pub async fn check_values(values: &[Value], options: &RenderOptions) -> Result<Outcome> {
    let dir = tempfile::Builder::new()
        .prefix("baton-cards-")
        .tempdir()
        .context("creating a folder for the cards")?;
    let mut files = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let path = dir.path().join(format!("card-{i}.json"));
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(value).expect("a JSON value always serialises"),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    check_cards(&files, options).await
}

/// Fails, listing every issue, unless every report is clean.
pub fn assert_clean(reports: &[CardReport]) -> Result<()> {
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} #{}: {}", r.file.display(), r.index, r.issues.join("; ")))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        bail!("cards did not render cleanly:\n  {}", bad.join("\n  "))
    }
}
