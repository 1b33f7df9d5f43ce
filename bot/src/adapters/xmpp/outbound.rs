//! Turning an outbound text into groupchat stanzas: long texts are split under the configured
//! size at line boundaries (a single overlong line at a space, else at a character boundary),
//! and each part gets an id derived from the outbox sequence number (sent as the stanza id and
//! the XEP-0359 origin id) so that the room's echo of the last part proves delivery. Pure.

use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Id, Lang, Message};
use tokio_xmpp::parsers::stanza_id::OriginId;

/// Splits `text` into parts of at most `max_bytes` bytes, cutting between lines where possible.
/// Parts are never empty; an empty text gives no parts.
pub fn split_text(text: &str, max_bytes: usize) -> Vec<String> {
    let max = max_bytes.max(8);
    let mut parts = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let needed = if current.is_empty() {
            line.len()
        } else {
            current.len() + 1 + line.len()
        };
        if needed <= max {
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(line);
            continue;
        }
        if !current.is_empty() {
            parts.push(std::mem::take(&mut current));
        }
        let mut rest = line;
        while rest.len() > max {
            let cut = cut_point(rest, max);
            parts.push(rest[..cut].trim_end().to_string());
            rest = rest[cut..].trim_start();
        }
        current.push_str(rest);
    }
    if !current.trim().is_empty() {
        parts.push(current);
    }
    parts.retain(|p| !p.trim().is_empty());
    parts
}

/// Where to cut an overlong line: the last space within `max` bytes, else the last character
/// boundary within it.
fn cut_point(line: &str, max: usize) -> usize {
    let mut limit = max;
    while !line.is_char_boundary(limit) {
        limit -= 1;
    }
    match line[..limit].rfind(' ') {
        Some(space) if space > limit / 2 => space + 1,
        _ => limit,
    }
}

/// The stanza id of part `index` of outbox message `outbox_id`.
pub fn part_id(outbox_id: i64, index: usize) -> String {
    format!("baton-{outbox_id}-{index}")
}

/// A groupchat message to `room` with one plain body. The id is also sent as the XEP-0359
/// origin id, which servers that rewrite stanza ids keep, so the room's echo still names it.
pub fn groupchat(room: &BareJid, id: String, body: String) -> Message {
    let mut message = Message::groupchat(Some(Jid::from(room.clone()))).with_body(Lang::new(), body);
    message.payloads.push(OriginId { id: id.clone() }.into());
    message.id = Some(Id(id));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, max: usize, expect: &[&str]) {
        let got = split_text(text, max);
        assert_eq!(got, expect, "text {text:?} max {max}");
        assert!(
            got.iter().all(|p| p.len() <= max.max(8)),
            "a part is over {max}: {got:?}"
        );
    }

    #[test]
    fn splits_at_lines_then_spaces_then_characters() {
        check("short", 100, &["short"]);
        check("", 100, &[]);
        check("\n\n", 100, &[]);
        check(
            "line one\nline two\nline three",
            18,
            &["line one\nline two", "line three"],
        );
        check("aaaa bbbb cccc dddd", 10, &["aaaa bbbb", "cccc dddd"]);
        check("abcdefghijklmnop", 10, &["abcdefghij", "klmnop"]);
        check("été été été", 11, &["été été", "été"]);
        check("ééééé", 8, &["éééé", "é"]);
    }

    #[test]
    fn a_plan_is_split_under_the_limit_without_losing_lines() {
        let plan: String = (1..=40)
            .map(|i| format!("  {i}. step {i} on edge{i}.contoso.com\n"))
            .collect();
        let parts = split_text(&plan, 200);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.len() <= 200));
        assert_eq!(parts.join("\n"), plan.trim_end());
    }
}
