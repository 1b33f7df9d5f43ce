#!/usr/bin/env node
// Renders Adaptive Cards with Microsoft's `adaptivecards` library in headless Debian Chromium and
// fails on any parse warning, validation issue, console error or page error.
//
// Usage: node render.mjs [--screenshots DIR] [--target-version 1.5] FILE...
// Each FILE holds a card ({"type":"AdaptiveCard",…}), an attachment ({"contentType":
// "application/vnd.microsoft.card.adaptive","content":{…}}), or an activity whose attachments
// hold cards. One JSON line per card goes to stdout:
//   {"file","index","ok","issues":[…],"text","actions":[…],"screenshot"}
// Exit status: 0 every card rendered cleanly, 1 some card did not, 2 the harness itself failed
// (bad arguments, unreadable file, Chromium would not start).
//
// Chromium is Debian's (/usr/bin/chromium, or $BATON_CHROMIUM), started with the flags this
// machine's closed network needs and a fresh user-data-dir; nothing is downloaded.

import { chromium } from "playwright-core";
import { readFileSync, mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, basename, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const ADAPTIVE = "application/vnd.microsoft.card.adaptive";
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

function fail(message) {
  process.stderr.write(`render.mjs: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const options = { screenshots: null, targetVersion: "1.5", files: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--screenshots") options.screenshots = argv[++i] ?? fail("--screenshots needs a directory");
    else if (a === "--target-version") options.targetVersion = argv[++i] ?? fail("--target-version needs a version");
    else if (a.startsWith("--")) fail(`unknown option ${a}`);
    else options.files.push(a);
  }
  if (options.files.length === 0) fail("no card files given");
  return options;
}

// The cards a file holds: a card, an attachment, or an activity's Adaptive Card attachments.
function cardsOf(file) {
  let json;
  try {
    json = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    fail(`${file}: ${e.message}`);
  }
  if (json && json.contentType === ADAPTIVE) return [json.content];
  if (json && Array.isArray(json.attachments)) {
    const cards = json.attachments.filter((a) => a && a.contentType === ADAPTIVE).map((a) => a.content);
    if (cards.length === 0) fail(`${file}: the activity has no Adaptive Card attachment`);
    return cards;
  }
  return [json];
}

// Runs in the page: parse with the library's serialization context, validate, render, and
// report every event the library logged.
function renderInPage({ card, targetVersion }) {
  const AC = window.AdaptiveCards;
  const issues = [];
  const describe = (e) => `${AC.ValidationPhase[e.phase]}: ${AC.ValidationEvent[e.event]}: ${e.message}`;
  const version = AC.Version.parse(targetVersion, new AC.SerializationContext());
  const context = new AC.SerializationContext(version);
  const adaptiveCard = new AC.AdaptiveCard();
  // Teams renders a Markdown subset; the harness only escapes the text, which keeps the
  // library from warning that no Markdown processor is set.
  AC.AdaptiveCard.onProcessMarkdown = (text, result) => {
    const escaped = document.createElement("span");
    escaped.textContent = text;
    result.outputHtml = escaped.innerHTML;
    result.didProcess = true;
  };
  if (!card || typeof card !== "object" || card.type !== "AdaptiveCard") {
    issues.push(`Parse: MissingCardType: the card's "type" must be "AdaptiveCard" (got ${JSON.stringify(card && card.type)})`);
  }
  if (card && typeof card.version === "string") {
    const declared = AC.Version.parse(card.version, new AC.SerializationContext());
    if (!declared || !declared.isValid) issues.push(`Parse: InvalidPropertyValue: version ${JSON.stringify(card.version)} is not a version`);
    else if (declared.compareTo(version) > 0)
      issues.push(`Parse: UnsupportedCardVersion: card version ${card.version} is above the host's ${targetVersion}`);
  } else {
    issues.push(`Parse: PropertyCantBeNull: the card has no "version"`);
  }
  adaptiveCard.parse(card, context);
  for (let i = 0; i < context.eventCount; i++) issues.push(describe(context.getEventAt(i)));
  const validation = adaptiveCard.validateProperties();
  for (const e of validation.validationEvents) issues.push(describe(e));
  const host = document.getElementById("card");
  host.innerHTML = "";
  const rendered = adaptiveCard.render();
  if (!rendered) issues.push("Render: the library rendered nothing");
  else host.appendChild(rendered);
  const actions = [];
  for (let i = 0; i < adaptiveCard.getActionCount(); i++) {
    const a = adaptiveCard.getActionAt(i);
    actions.push({ type: a.getJsonTypeName(), title: a.title ?? null, verb: a.verb ?? null });
  }
  return { issues, text: rendered ? rendered.innerText : "", actions };
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const executablePath = process.env.BATON_CHROMIUM || "/usr/bin/chromium";
  const library = join(here, "node_modules", "adaptivecards", "dist", "adaptivecards.min.js");
  const userDataDir = mkdtempSync(join(tmpdir(), "baton-cards-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args: FLAGS,
      timeout: 30000,
      viewport: { width: 520, height: 400 },
    });
  } catch (e) {
    rmSync(userDataDir, { recursive: true, force: true });
    fail(`Chromium (${executablePath}) did not start: ${e.message.split("\n")[0]}`);
  }
  let failed = false;
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const consoleErrors = [];
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") consoleErrors.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on("pageerror", (e) => consoleErrors.push(`page error: ${e.message}`));
    await page.setContent(
      '<!doctype html><html><head><meta charset="utf-8"><title>card</title></head>' +
        '<body style="margin:0;background:#fff;font-family:sans-serif"><div id="card" style="width:500px;padding:10px"></div></body></html>',
    );
    await page.addStyleTag({ path: join(here, "node_modules", "adaptivecards", "dist", "adaptivecards.css") });
    await page.addScriptTag({ path: library });
    if (options.screenshots) mkdirSync(options.screenshots, { recursive: true });
    for (const file of options.files) {
      const cards = cardsOf(file);
      for (let index = 0; index < cards.length; index++) {
        consoleErrors.length = 0;
        let result;
        try {
          result = await page.evaluate(renderInPage, { card: cards[index], targetVersion: options.targetVersion });
        } catch (e) {
          result = { issues: [`Render: threw: ${e.message.split("\n")[0]}`], text: "", actions: [] };
        }
        const issues = [...result.issues, ...consoleErrors];
        let screenshot = null;
        if (options.screenshots) {
          screenshot = join(options.screenshots, `${basename(file).replace(/\.json$/, "")}-${index}.png`);
          await page.locator("#card").screenshot({ path: screenshot });
        }
        const ok = issues.length === 0;
        if (!ok) failed = true;
        process.stdout.write(
          JSON.stringify({ file, index, ok, issues, text: result.text, actions: result.actions, screenshot }) + "\n",
        );
      }
    }
  } finally {
    await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
  process.exit(failed ? 1 : 0);
}

main().catch((e) => fail(e.stack || String(e)));
