//! A run's card as an Adaptive Card (version 1.5, what Teams renders): the title and state in a
//! coloured header, the reason, the plan's warnings, a step × host grid with the exact command
//! per host and each one's state, the footer (who requested and approved, the plan's hash, the
//! expiry or the duration), and Approve / Deny as `Action.Execute` with an `Action.Submit`
//! fallback while the run waits for approval. Text from people and commands are `TextRun`s,
//! which Adaptive Cards never read as Markdown.

use super::text::Rendered;
use crate::chat::{ButtonIntent, CardStep, Mark, RunCard};
use serde_json::{Value, json};

/// The content type of an Adaptive Card attachment.
pub const CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
/// The card schema version Teams renders.
pub const VERSION: &str = "1.5";
/// Above this size a card is drawn compact (one row per step): Teams refuses activities over
/// about 28 KB.
pub const MAX_CARD_BYTES: usize = 22 * 1024;

fn label(mark: Mark) -> (&'static str, &'static str) {
    match mark {
        Mark::Waiting => ("waiting", "Default"),
        Mark::Running => ("running", "Accent"),
        Mark::Ok => ("ok", "Good"),
        Mark::Failed => ("FAILED", "Attention"),
        Mark::Stopped => ("not run", "Warning"),
    }
}

fn header_style(mark: Mark) -> &'static str {
    match mark {
        Mark::Waiting => "emphasis",
        Mark::Running => "accent",
        Mark::Ok => "good",
        Mark::Failed => "attention",
        Mark::Stopped => "warning",
    }
}

/// Plain text that is never read as Markdown.
fn run(text: &str) -> Value {
    json!({"type": "TextRun", "text": text})
}

fn rich(inlines: Vec<Value>) -> Value {
    json!({"type": "RichTextBlock", "inlines": inlines})
}

fn cell(items: Vec<Value>) -> Value {
    json!({"type": "TableCell", "items": items})
}

fn mark_run(mark: Mark) -> Value {
    let (text, color) = label(mark);
    let mut r = run(text);
    r["color"] = json!(color);
    r["weight"] = json!("Bolder");
    if mark == Mark::Waiting {
        r["isSubtle"] = json!(true);
    }
    r
}

fn step_cell(step: &CardStep) -> Value {
    let mut title = run(&format!("{}. {}", step.number, step.title));
    title["weight"] = json!("Bolder");
    cell(vec![rich(vec![title])])
}

fn header_row() -> Value {
    let head = |t: &str| {
        let mut r = run(t);
        r["weight"] = json!("Bolder");
        cell(vec![rich(vec![r])])
    };
    json!({"type": "TableRow", "style": "emphasis", "cells": [head("Step"), head("Where"), head("Command"), head("State")]})
}

/// One row per host of each step: the full grid.
fn full_rows(card: &RunCard) -> Vec<Value> {
    let mut rows = vec![header_row()];
    for step in &card.steps {
        for (i, a) in step.actions.iter().enumerate() {
            let step_cell = if i == 0 {
                step_cell(step)
            } else {
                cell(vec![rich(vec![run("")])])
            };
            let mut command = run(&a.command);
            command["fontType"] = json!("Monospace");
            command["size"] = json!("Small");
            let mut what = vec![rich(vec![command])];
            if let Some(detail) = &a.detail {
                let mut d = run(detail);
                d["isSubtle"] = json!(true);
                d["size"] = json!("Small");
                let mut line = rich(vec![d]);
                line["spacing"] = json!("None");
                what.push(line);
            }
            rows.push(json!({"type": "TableRow", "cells": [
                step_cell,
                cell(vec![rich(vec![run(&a.place)])]),
                cell(what),
                cell(vec![rich(vec![mark_run(a.mark)])]),
            ]}));
        }
        if step.actions.is_empty() {
            rows.push(json!({"type": "TableRow", "cells": [
                step_cell(step), cell(vec![rich(vec![run("")])]), cell(vec![rich(vec![run("")])]),
                cell(vec![rich(vec![mark_run(step.mark)])]),
            ]}));
        }
    }
    rows
}

/// One line per step, hosts listed with their state: for plans too large for the grid
/// (`hosts` false drops the hosts too).
fn compact_lines(card: &RunCard, hosts: bool) -> Vec<Value> {
    card.steps
        .iter()
        .map(|step| {
            let mut title = run(&format!("{}. {} ", step.number, step.title));
            title["weight"] = json!("Bolder");
            let mut inlines = vec![title, mark_run(step.mark)];
            if hosts {
                let places: Vec<String> = step
                    .actions
                    .iter()
                    .map(|a| format!("{} {}", a.place, label(a.mark).0))
                    .collect();
                inlines.push(run(&format!(" ({})", places.join(", "))));
            }
            rich(inlines)
        })
        .collect()
}

fn button(b: &ButtonIntent) -> Value {
    let (title, style) = match b {
        ButtonIntent::Approve { .. } => ("Approve", "positive"),
        ButtonIntent::Deny { .. } => ("Deny", "destructive"),
    };
    let run = b.run().0.to_string();
    json!({
        "type": "Action.Execute",
        "title": title,
        "verb": b.verb(),
        "style": style,
        "data": {"run": run, "plan": b.plan()},
        "fallback": {
            "type": "Action.Submit",
            "title": title,
            "data": {"verb": b.verb(), "run": run, "plan": b.plan()},
        },
    })
}

/// How much of the plan a card shows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// The step × host grid with every command.
    Grid,
    /// A line per step with its hosts' states.
    Hosts,
    /// A line per step.
    Steps,
}

fn build(card: &RunCard, mentions: Option<&Rendered>, detail: Detail) -> Value {
    let (_, color) = label(card.mark);
    let mut title = run(&card.title);
    title["weight"] = json!("Bolder");
    title["size"] = json!("Medium");
    let mut state = run(&card.state);
    state["color"] = json!(color);
    state["weight"] = json!("Bolder");
    let mut body = vec![json!({
        "type": "Container",
        "style": header_style(card.mark),
        "bleed": true,
        "items": [rich(vec![title]), rich(vec![state])],
    })];
    if let Some(reason) = &card.reason {
        let mut head = run("Reason: ");
        head["weight"] = json!("Bolder");
        body.push(rich(vec![head, run(reason)]));
    }
    for w in &card.warnings {
        let mut r = run(&format!("Warning: {w}"));
        r["color"] = json!("Warning");
        body.push(rich(vec![r]));
    }
    match detail {
        Detail::Grid => body.push(json!({
            "type": "Table",
            "spacing": "Medium",
            "firstRowAsHeader": true,
            "showGridLines": false,
            "columns": [{"width": 2}, {"width": 2}, {"width": 6}, {"width": 2}],
            "rows": full_rows(card),
        })),
        Detail::Hosts | Detail::Steps => body.push(json!({
            "type": "Container",
            "spacing": "Medium",
            "items": compact_lines(card, detail == Detail::Hosts),
        })),
    }
    let mut footer = run(&card.footer);
    footer["isSubtle"] = json!(true);
    footer["size"] = json!("Small");
    body.push(rich(vec![footer]));
    let mut content = json!({
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": VERSION,
        "msteams": {"width": "Full"},
        "body": body,
    });
    if let Some(m) = mentions {
        // Mentions live in a TextBlock, where Teams looks for the `<at>` tags of its entities.
        content["body"]
            .as_array_mut()
            .expect("the body was built as an array")
            .push(json!({"type": "TextBlock", "text": m.text, "wrap": true}));
        content["msteams"]["entities"] = json!(m.entities);
    }
    if !card.buttons.is_empty() {
        content["actions"] = Value::Array(card.buttons.iter().map(button).collect());
    }
    content
}

/// The Adaptive Card of a run (more compact when the full grid would be too large).
pub fn adaptive_card(card: &RunCard, mentions: Option<&Rendered>) -> Value {
    for detail in [Detail::Grid, Detail::Hosts] {
        let c = build(card, mentions, detail);
        if c.to_string().len() <= MAX_CARD_BYTES {
            return c;
        }
    }
    build(card, mentions, Detail::Steps)
}

/// The attachment carrying the card.
pub fn attachment(card: &RunCard, mentions: Option<&Rendered>) -> Value {
    json!({"contentType": CONTENT_TYPE, "content": adaptive_card(card, mentions)})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::CardAction;
    use crate::run::RunId;

    fn sample(mark: Mark, buttons: bool) -> RunCard {
        let plan = "d974d3765c60".to_string();
        RunCard {
            run: RunId(7),
            title: "#7 XMPP federation EdgePool1 -> EdgePool2".into(),
            mark,
            state: "running, step 2/2 (services)".into(),
            reason: Some("pool 1 **lost** power <at>everyone</at>".into()),
            steps: vec![
                CardStep {
                    number: 1,
                    title: "dns SRV".into(),
                    summary: "_xmpp-server._tcp.contoso.com -> xmpp.contoso.com:5269".into(),
                    mark: Mark::Ok,
                    actions: vec![CardAction {
                        place: "dns".into(),
                        command: "ensure _xmpp-server._tcp.contoso.com SRV 0 0 5269 xmpp.contoso.com".into(),
                        mark: Mark::Ok,
                        detail: Some("present once (0.3s)".into()),
                    }],
                },
                CardStep {
                    number: 2,
                    title: "services".into(),
                    summary: "Start-CsWindowsService on edge2a, edge2b".into(),
                    mark: Mark::Running,
                    actions: vec![
                        CardAction {
                            place: "edge2a".into(),
                            command: "Start-CsWindowsService".into(),
                            mark: Mark::Ok,
                            detail: Some("ok (1.0s)".into()),
                        },
                        CardAction {
                            place: "edge2b".into(),
                            command: "Start-CsWindowsService".into(),
                            mark: Mark::Running,
                            detail: None,
                        },
                    ],
                },
            ],
            footer: "requested by alice at 09:47:23 UTC, approved by bob; plan sha256 d974d3765c60".into(),
            plan: plan.clone(),
            buttons: if buttons {
                vec![
                    ButtonIntent::Approve {
                        run: RunId(7),
                        plan: plan.clone(),
                    },
                    ButtonIntent::Deny { run: RunId(7), plan },
                ]
            } else {
                Vec::new()
            },
            warnings: vec!["Stopping the services interrupts federation.".into()],
        }
    }

    /// Every `text` in the card, in order.
    fn texts(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(t)) = m.get("text") {
                    out.push(t.clone());
                }
                for (_, x) in m {
                    texts(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| texts(x, out)),
            _ => {}
        }
    }

    #[test]
    fn the_card_holds_the_plan_the_grid_and_the_buttons() {
        let card = adaptive_card(&sample(Mark::Running, true), None);
        assert_eq!(card["version"], "1.5");
        let mut all = Vec::new();
        texts(&card, &mut all);
        for needed in [
            "#7 XMPP federation EdgePool1 -> EdgePool2",
            "running, step 2/2 (services)",
            "pool 1 **lost** power <at>everyone</at>",
            "ensure _xmpp-server._tcp.contoso.com SRV 0 0 5269 xmpp.contoso.com",
            "edge2b",
        ] {
            assert!(all.iter().any(|t| t == needed), "{needed} in {all:#?}");
        }
        // Text from people and commands is never a TextBlock (which reads Markdown).
        let s = card.to_string();
        assert!(!s.contains("\"TextBlock\""), "{s}");
        let actions = card["actions"].as_array().expect("buttons while pending");
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[0]["type"], "Action.Execute");
        assert_eq!(actions[0]["verb"], "approve");
        assert_eq!(actions[0]["data"], json!({"run": "7", "plan": "d974d3765c60"}));
        assert_eq!(
            actions[1]["fallback"]["data"],
            json!({"verb": "deny", "run": "7", "plan": "d974d3765c60"})
        );
        // Rows: a header, one per host.
        assert_eq!(card["body"][3]["rows"].as_array().expect("rows").len(), 4);
        assert!(adaptive_card(&sample(Mark::Ok, false), None).get("actions").is_none());
    }

    #[test]
    fn mentions_ride_in_a_text_block_with_their_entities() {
        let m = Rendered {
            text: "<at>bob</at>".into(),
            entities: vec![json!({"type": "mention", "text": "<at>bob</at>", "mentioned": {"id": "x", "name": "bob"}})],
        };
        let card = adaptive_card(&sample(Mark::Waiting, true), Some(&m));
        assert_eq!(card["msteams"]["entities"][0]["text"], "<at>bob</at>");
        let body = card["body"].as_array().expect("a body");
        assert_eq!(body.last().expect("an element")["text"], "<at>bob</at>");
    }

    #[test]
    fn a_huge_plan_is_drawn_compact_and_stays_small() {
        let mut big = sample(Mark::Running, true);
        let template = big.steps[1].clone();
        for n in 0..40 {
            let mut s = template.clone();
            s.number = n + 3;
            s.actions = (0..12)
                .map(|h| CardAction {
                    place: format!("edge{h:02}"),
                    command: "Start-CsWindowsService -ComputerName edge.contoso.com -Verbose -Confirm:$false".into(),
                    mark: Mark::Waiting,
                    detail: None,
                })
                .collect();
            big.steps.push(s);
        }
        let card = adaptive_card(&big, None);
        let size = card.to_string().len();
        assert!(size < 28 * 1024, "{size} bytes");
        assert_eq!(
            card["body"][3]["items"].as_array().expect("lines").len(),
            42,
            "one line per step"
        );
    }
}
