//! Baton's messages as Teams shows them: the [`Rich`] model rendered as Teams' XML text format
//! (a subset of HTML). Everything is escaped, so text typed by people (reasons, names) shows as
//! written, with no markup and no `<at>` mention of its own; Baton's own commands in backticks
//! become code; line breaks and indentation are kept; a mentioned person with a Teams identity
//! becomes an `<at>` mention with its entity (by Entra object id), anyone else their name.

use crate::chat::{Mention, Rich, Span};
use baton_policies::Platform;
use serde_json::{Value, json};

/// The text format of every message Baton posts.
pub const TEXT_FORMAT: &str = "xml";

/// A message ready for an activity: `text` and its mention `entities`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub entities: Vec<Value>,
}

/// Escapes the characters XML and Teams treat as markup.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// The text being written: keeps line breaks and runs of spaces (indentation, aligned
/// columns), which Teams would otherwise fold.
struct Out {
    text: String,
    /// The last character written was a space or a line break (or nothing yet).
    after_space: bool,
}

impl Out {
    fn new() -> Out {
        Out {
            text: String::new(),
            after_space: true,
        }
    }

    /// Writes plain text, escaped.
    fn plain(&mut self, s: &str) {
        for c in escape(s).chars() {
            match c {
                '\n' => {
                    self.text.push_str("<br>");
                    self.after_space = true;
                }
                ' ' if self.after_space => self.text.push_str("&nbsp;"),
                ' ' => {
                    self.text.push(' ');
                    self.after_space = true;
                }
                c => {
                    self.text.push(c);
                    self.after_space = false;
                }
            }
        }
    }

    /// Writes markup as is.
    fn markup(&mut self, s: &str) {
        self.text.push_str(s);
        self.after_space = false;
    }

    /// Baton's own words: backticked commands become code.
    fn own_words(&mut self, s: &str) {
        let parts: Vec<&str> = s.split('`').collect();
        for (i, part) in parts.iter().enumerate() {
            let code = i % 2 == 1 && i + 1 < parts.len();
            if code {
                self.markup("<code>");
                self.plain(part);
                self.markup("</code>");
            } else {
                if i % 2 == 1 {
                    // An unpaired backtick stays as typed.
                    self.plain("`");
                }
                self.plain(part);
            }
        }
    }
}

/// The `<at>` tag and entity of a mention, or the name when the person has no Teams identity.
fn mention(m: &Mention, out: &mut Out, entities: &mut Vec<Value>) {
    match m.on(Platform::Teams) {
        Some(identity) => {
            let tag = format!("<at>{}</at>", escape(&m.person));
            if !entities.iter().any(|e| e["text"] == tag.as_str()) {
                entities.push(json!({
                    "type": "mention",
                    "text": tag,
                    "mentioned": { "id": identity.account(), "name": m.person },
                }));
            }
            out.markup(&tag);
        }
        None => out.plain(&m.person),
    }
}

/// Renders a message.
pub fn render(body: &Rich) -> Rendered {
    let mut entities = Vec::new();
    let mut out = Out::new();
    for span in &body.0 {
        match span {
            Span::Text(t) => out.own_words(t),
            Span::Quoted(t) => out.plain(t),
            Span::Mention(m) => mention(m, &mut out, &mut entities),
        }
    }
    Rendered {
        text: out.text,
        entities,
    }
}

/// The mentions of a message alone (for a card, which carries its own text), with the line
/// that names them.
pub fn mentions_only(body: &Rich) -> Option<Rendered> {
    let mut entities = Vec::new();
    let mut out = Out::new();
    for m in body.0.iter().filter_map(|s| match s {
        Span::Mention(m) => Some(m),
        _ => None,
    }) {
        if !out.text.is_empty() {
            out.plain(", ");
        }
        mention(m, &mut out, &mut entities);
    }
    (!out.text.is_empty()).then_some(Rendered {
        text: out.text,
        entities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_policies::Identity;
    use expect_test::expect;

    fn bob() -> Mention {
        Mention {
            person: "bob".into(),
            identities: vec![
                Identity::parse("xmpp:bob@contoso.com").expect("an identity"),
                Identity::parse("teams:7A2B3C4D-5E6F-4A1B-9C2D-3E4F5A6B7C8D").expect("an identity"),
            ],
        }
    }

    fn carol() -> Mention {
        Mention {
            person: "carol".into(),
            identities: vec![Identity::parse("xmpp:carol@contoso.com").expect("an identity")],
        }
    }

    #[test]
    fn quoted_text_is_shown_as_written() {
        let m = Rich::from("Reason: ").quoted("<at>Everyone</at> **now** & <script>x</script>");
        expect![[r#"Reason: &lt;at&gt;Everyone&lt;/at&gt; **now** &amp; &lt;script&gt;x&lt;/script&gt;"#]]
            .assert_eq(&render(&m).text);
        assert!(render(&m).entities.is_empty(), "typed mentions are not mentions");
    }

    #[test]
    fn commands_are_code_and_layout_is_kept() {
        let m =
            Rich::from("Plan:\n  1. precheck  agents answer\nType `!approve 7` or `!deny 7 <why>`. A lone ` stays.");
        expect![[r#"Plan:<br>&nbsp;&nbsp;1. precheck &nbsp;agents answer<br>Type <code>!approve 7</code> or <code>!deny 7 &lt;why&gt;</code>. A lone ` stays."#]]
            .assert_eq(&render(&m).text);
    }

    #[test]
    fn people_with_a_teams_identity_are_mentioned() {
        let m = Rich::from("Waiting for ")
            .mention(bob())
            .text(" or ")
            .mention(carol())
            .text(", ")
            .mention(bob());
        let r = render(&m);
        assert_eq!(r.text, "Waiting for <at>bob</at> or carol, <at>bob</at>");
        assert_eq!(
            r.entities,
            vec![json!({"type": "mention", "text": "<at>bob</at>",
                        "mentioned": {"id": "7a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d", "name": "bob"}})],
            "one entity per person"
        );
        let only = mentions_only(&m).expect("mentions");
        assert_eq!(only.text, "<at>bob</at>, carol, <at>bob</at>");
        assert_eq!(only.entities.len(), 1);
        assert_eq!(mentions_only(&Rich::from("nobody")), None);
    }
}
