//! How Baton's messages look on Discord, within Discord's limits. Pure.
//!
//! - [`rich`]: the message model as Discord markdown. Baton's words stay as written (commands
//!   in backticks show as code); text quoted from people has every markdown character escaped,
//!   so `*`, `<@…>`, `@everyone`, links and headings show as typed; a mention becomes `<@id>`
//!   for a person with a Discord identity (and that id alone is allowed to ping), or the
//!   person's name otherwise.
//! - [`card`]: a run card as one embed (title, colour by state, state and reason, a field per
//!   step with each host's command and outcome, warnings, footer) and, where commands are read,
//!   the Approve and Deny buttons whose `custom_id` carries the run and the plan hash. Every
//!   text is cut to Discord's limits (content 2000, title 256, field 1024, footer 2048, embed
//!   6000 characters in total) with a note of what was left out.
//! - [`split`]: a long line as several messages of at most 2000 characters, cut between lines.

use crate::chat::{ButtonIntent, Mark, Rich, RunCard, Span};
use baton_policies::Platform;

/// Discord's limit on a message's content, in characters.
pub const CONTENT_MAX: usize = 2000;
const TITLE_MAX: usize = 256;
const DESCRIPTION_MAX: usize = 4096;
const FIELD_NAME_MAX: usize = 256;
const FIELD_VALUE_MAX: usize = 1024;
const FOOTER_MAX: usize = 2048;
const FIELDS_MAX: usize = 25;
/// Discord's limit on all of a message's embed texts together.
const EMBED_TOTAL_MAX: usize = 6000;
/// Discord's limit on a button label.
const LABEL_MAX: usize = 80;

/// A text ready for Discord, with the users it may ping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    /// Ids of the people mentioned on purpose; nobody else is pinged.
    pub users: Vec<u64>,
}

/// Escapes Discord markdown and mention syntax in text typed by people: every character that
/// markdown, mentions, emoji, timestamps or links could use gets a backslash, which Discord
/// drops when it shows the text.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '#' | '-' | '[' | ']' | '(' | ')' | ':' | '@' | '.'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The message model as Discord markdown.
pub fn rich(message: &Rich) -> Rendered {
    let mut users = Vec::new();
    let text = message.render(|span| match span {
        Span::Text(t) => t.clone(),
        Span::Quoted(t) => escape(t),
        Span::Mention(m) => match m.on(Platform::Discord).and_then(|i| i.account().parse::<u64>().ok()) {
            Some(id) => {
                if !users.contains(&id) {
                    users.push(id);
                }
                format!("<@{id}>")
            }
            None => escape(&m.person),
        },
    });
    Rendered { text, users }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The first `max` characters of `s`, ending in `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if chars(s) <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    // A cut right after an escaping backslash would escape the ellipsis instead.
    if out.ends_with('\\') && !out.ends_with("\\\\") {
        out.pop();
    }
    out.push('…');
    out
}

/// As many whole lines of `lines` as fit in `max` characters; when some are left out, the last
/// line says how many. A first line too long on its own is cut.
fn fit_lines(lines: &[String], max: usize) -> String {
    let n = lines.len();
    // prefix[k]: the characters of the first k lines joined by newlines.
    let mut prefix = vec![0usize; n + 1];
    for (i, l) in lines.iter().enumerate() {
        prefix[i + 1] = prefix[i] + chars(l) + usize::from(i > 0);
    }
    if prefix[n] <= max {
        return lines.join("\n");
    }
    for k in (1..n).rev() {
        let note = format!("… {} more", n - k);
        if prefix[k] + 1 + chars(&note) <= max {
            return format!("{}\n{note}", lines[..k].join("\n"));
        }
    }
    match lines {
        [] => String::new(),
        [only] => clip(only, max),
        [first, ..] => {
            let note = format!("… {} more", n - 1);
            match max.checked_sub(chars(&note) + 1) {
                Some(room) if room > 0 => format!("{}\n{note}", clip(first, room)),
                _ => clip(first, max),
            }
        }
    }
}

/// Content for a message: cut between lines to fit Discord's limit, mentions kept only when
/// they survived the cut.
pub fn content(r: &Rendered) -> Rendered {
    if chars(&r.text) <= CONTENT_MAX {
        return r.clone();
    }
    let lines: Vec<String> = r.text.lines().map(str::to_string).collect();
    let text = fit_lines(&lines, CONTENT_MAX);
    let users = r
        .users
        .iter()
        .copied()
        .filter(|id| text.contains(&format!("<@{id}>")))
        .collect();
    Rendered { text, users }
}

/// A long text as several messages of at most [`CONTENT_MAX`] characters, cut between lines
/// (an overlong line at a space, else anywhere). Each part keeps the mentions it contains.
pub fn split(r: &Rendered) -> Vec<Rendered> {
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in r.text.lines() {
        let sep = usize::from(!current.is_empty());
        if chars(&current) + sep + chars(line) <= CONTENT_MAX {
            if sep == 1 {
                current.push('\n');
            }
            current.push_str(line);
            continue;
        }
        if !current.is_empty() {
            parts.push(std::mem::take(&mut current));
        }
        let mut rest: Vec<char> = line.chars().collect();
        while rest.len() > CONTENT_MAX {
            let window = &rest[..CONTENT_MAX];
            let cut = match window.iter().rposition(|c| *c == ' ') {
                Some(space) if space > CONTENT_MAX / 2 => space + 1,
                _ => CONTENT_MAX,
            };
            parts.push(rest[..cut].iter().collect::<String>().trim_end().to_string());
            rest.drain(..cut);
        }
        current = rest.into_iter().collect();
    }
    if !current.trim().is_empty() {
        parts.push(current);
    }
    parts.retain(|p| !p.trim().is_empty());
    parts
        .into_iter()
        .map(|text| {
            let users = r
                .users
                .iter()
                .copied()
                .filter(|id| text.contains(&format!("<@{id}>")))
                .collect();
            Rendered { text, users }
        })
        .collect()
}

/// A button as Discord shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Button {
    pub custom_id: String,
    pub label: String,
    /// Discord's button style: 3 success (green), 4 danger (red).
    pub style: u8,
}

/// A run card as one Discord embed and its buttons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardView {
    pub title: String,
    pub colour: u32,
    pub description: String,
    /// (name, value) per step, shown one under the other.
    pub fields: Vec<(String, String)>,
    pub footer: String,
    pub buttons: Vec<Button>,
}

impl CardView {
    /// Every embed text together, as Discord counts it against 6000.
    pub fn total(&self) -> usize {
        chars(&self.title)
            + chars(&self.description)
            + chars(&self.footer)
            + self.fields.iter().map(|(n, v)| chars(n) + chars(v)).sum::<usize>()
    }
}

fn icon(mark: Mark) -> &'static str {
    match mark {
        Mark::Waiting => "⏳",
        Mark::Running => "🔄",
        Mark::Ok => "✅",
        Mark::Failed => "❌",
        Mark::Stopped => "⏹️",
    }
}

fn colour(mark: Mark) -> u32 {
    match mark {
        Mark::Waiting => 0xF1C40F,
        Mark::Running => 0x3498DB,
        Mark::Ok => 0x2ECC71,
        Mark::Failed => 0xE74C3C,
        Mark::Stopped => 0x95A5A6,
    }
}

/// A command as inline code: backticks inside would end the code span, so they are shown as
/// a look-alike (PowerShell's escape character is the only one expected).
fn code(s: &str) -> String {
    format!("`{}`", s.replace('`', "ˋ"))
}

/// A run card as Discord shows it. `buttons` is false where commands are not read (mirror
/// channels): the card shows the run, and approvals happen in the run's own channel.
pub fn card(card: &RunCard, buttons: bool) -> CardView {
    let title = clip(&card.title, TITLE_MAX);
    let mut description = format!("**{}**", escape(&card.state));
    if let Some(reason) = &card.reason {
        description.push_str("\nReason: ");
        description.push_str(&escape(reason));
    }
    for w in &card.warnings {
        description.push_str("\n⚠️ ");
        description.push_str(&escape(w));
    }
    let description = clip(&description, DESCRIPTION_MAX);
    let footer = clip(&card.footer, FOOTER_MAX);
    let steps: Vec<(String, Vec<String>)> = card
        .steps
        .iter()
        .map(|s| {
            let name = clip(&format!("{} {}. {}", icon(s.mark), s.number, s.title), FIELD_NAME_MAX);
            let mut lines = vec![escape(&s.summary)];
            for a in &s.actions {
                let outcome = match &a.detail {
                    Some(d) => escape(d),
                    None => code(&a.command),
                };
                lines.push(format!("{} **{}** {outcome}", icon(a.mark), escape(&a.place)));
            }
            (name, lines)
        })
        .collect();
    let fixed = chars(&title) + chars(&description) + chars(&footer);
    let fields = fit_fields(steps, EMBED_TOTAL_MAX.saturating_sub(fixed));
    let buttons = if buttons {
        card.buttons
            .iter()
            .map(|b| Button {
                custom_id: b.encode(),
                label: clip(
                    match b {
                        ButtonIntent::Approve { .. } => "Approve",
                        ButtonIntent::Deny { .. } => "Deny",
                    },
                    LABEL_MAX,
                ),
                style: match b {
                    ButtonIntent::Approve { .. } => 3,
                    ButtonIntent::Deny { .. } => 4,
                },
            })
            .collect()
    } else {
        Vec::new()
    };
    CardView {
        title,
        colour: colour(card.mark),
        description,
        fields,
        footer,
        buttons,
    }
}

/// The steps as fields within `budget` characters in all: each field gets an equal share of
/// what is left (a short step leaves its unused share to the later ones), and a step that does
/// not fit its share shows its first lines and how many more there are.
fn fit_fields(steps: Vec<(String, Vec<String>)>, budget: usize) -> Vec<(String, String)> {
    let steps: Vec<(String, Vec<String>)> = steps.into_iter().take(FIELDS_MAX).collect();
    let mut left = budget;
    let mut out = Vec::new();
    let count = steps.len();
    for (i, (name, lines)) in steps.into_iter().enumerate() {
        let share = left / (count - i).max(1);
        let room = share.saturating_sub(chars(&name)).clamp(1, FIELD_VALUE_MAX);
        let value = fit_lines(&lines, room);
        let value = if value.is_empty() { "-".to_string() } else { value };
        left = left.saturating_sub(chars(&name) + chars(&value));
        out.push((name, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{CardAction, CardStep, Mention};
    use crate::run::RunId;
    use baton_policies::Identity;

    fn bob(with_discord: bool) -> Mention {
        let mut identities = vec![Identity::parse("xmpp:bob@contoso.com").expect("valid")];
        if with_discord {
            identities.push(Identity::parse("discord:80351110224678913").expect("valid"));
        }
        Mention {
            person: "bob".into(),
            identities,
        }
    }

    #[test]
    fn quoted_text_shows_as_typed_and_pings_nobody() {
        let r = rich(
            &Rich::from("Reason: ")
                .quoted("@everyone <@123> **now** see https://x.test/a_b `rm` # head")
                .text(" (`!approve 1`)"),
        );
        assert_eq!(
            r.text,
            r"Reason: \@everyone \<\@123\> \*\*now\*\* see https\://x\.test/a\_b \`rm\` \# head (`!approve 1`)"
        );
        assert!(r.users.is_empty());
        // Every markdown character typed comes back when Discord drops the backslashes.
        let unescaped = r.text.replace('\\', "");
        assert!(unescaped.contains("@everyone <@123> **now** see https://x.test/a_b `rm` # head"));
    }

    #[test]
    fn mentions_ping_people_with_a_discord_identity_only() {
        let r = rich(
            &Rich::from("Waiting for ")
                .mention(bob(true))
                .text(" and ")
                .mention(Mention {
                    person: "carol_x".into(),
                    identities: vec![],
                }),
        );
        assert_eq!(r.text, "Waiting for <@80351110224678913> and carol\\_x");
        assert_eq!(r.users, vec![80351110224678913]);
        let r = rich(
            &Rich::from("ask ")
                .mention(bob(false))
                .mention(bob(true))
                .mention(bob(true)),
        );
        assert_eq!(r.text, "ask bob<@80351110224678913><@80351110224678913>");
        assert_eq!(r.users, vec![80351110224678913], "each id once");
    }

    #[test]
    fn long_texts_split_between_lines_and_keep_their_mentions() {
        let line = "x".repeat(900);
        let text = format!("{line}\n{line}\n<@7> {line}\n{}", "y".repeat(4500));
        let parts = split(&Rendered {
            text: text.clone(),
            users: vec![7],
        });
        assert!(
            parts.iter().all(|p| chars(&p.text) <= CONTENT_MAX),
            "{:?}",
            parts.iter().map(|p| chars(&p.text)).collect::<Vec<_>>()
        );
        assert_eq!(parts[0].text, format!("{line}\n{line}"));
        assert_eq!(parts[1].users, vec![7]);
        assert!(parts[0].users.is_empty());
        let joined: String = parts.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined.replace('\n', ""), text.replace('\n', ""), "nothing lost");
        assert!(split(&Rendered::default()).is_empty());
    }

    #[test]
    fn content_is_cut_between_lines_with_a_note() {
        let lines: Vec<String> = (0..100).map(|i| format!("line {i:03} {}", "z".repeat(40))).collect();
        let c = content(&Rendered {
            text: format!("<@9> asks\n{}", lines.join("\n")),
            users: vec![9],
        });
        assert!(chars(&c.text) <= CONTENT_MAX, "{}", chars(&c.text));
        assert!(c.text.ends_with(" more"), "{}", &c.text[c.text.len() - 30..]);
        assert_eq!(c.users, vec![9]);
        let short = Rendered {
            text: "hi".into(),
            users: vec![],
        };
        assert_eq!(content(&short), short);
    }

    fn sample(hosts: usize, detail: usize) -> RunCard {
        let actions = (0..hosts)
            .map(|h| CardAction {
                place: format!("edge{h}"),
                command: format!("Stop-CsWindowsService on edge{h}.contoso.com"),
                mark: if h % 2 == 0 { Mark::Ok } else { Mark::Running },
                detail: (h % 2 == 0).then(|| "d".repeat(detail)),
            })
            .collect::<Vec<_>>();
        RunCard {
            run: RunId(7),
            title: "#7 XMPP federation EdgePool1 -> EdgePool2".into(),
            mark: Mark::Running,
            state: "running, step 2/8 (services)".into(),
            reason: Some("pool *1* lost @everyone".into()),
            steps: (1..=8)
                .map(|n| CardStep {
                    number: n,
                    title: format!("step{n}"),
                    summary: format!("summary of step {n}"),
                    mark: Mark::Waiting,
                    actions: actions.clone(),
                })
                .collect(),
            footer: "requested by alice at 10:00:00 UTC; plan sha256 d974d3765c60".into(),
            plan: "d974d3765c60".into(),
            buttons: vec![
                ButtonIntent::Approve {
                    run: RunId(7),
                    plan: "d974d3765c60".into(),
                },
                ButtonIntent::Deny {
                    run: RunId(7),
                    plan: "d974d3765c60".into(),
                },
            ],
            warnings: vec!["Stopping the services interrupts federation.".into()],
        }
    }

    #[test]
    fn a_card_shows_every_step_and_its_buttons() {
        let v = card(&sample(2, 10), true);
        assert_eq!(v.title, "#7 XMPP federation EdgePool1 -> EdgePool2");
        assert_eq!(v.colour, 0x3498DB);
        assert_eq!(
            v.description,
            "**running, step 2/8 \\(services\\)**\nReason: pool \\*1\\* lost \\@everyone\n⚠️ Stopping the services interrupts federation\\."
        );
        assert_eq!(v.fields.len(), 8);
        assert_eq!(v.fields[0].0, "⏳ 1. step1");
        assert_eq!(
            v.fields[0].1,
            "summary of step 1\n✅ **edge0** dddddddddd\n🔄 **edge1** `Stop-CsWindowsService on edge1.contoso.com`"
        );
        let ids: Vec<&str> = v.buttons.iter().map(|b| b.custom_id.as_str()).collect();
        assert_eq!(ids, ["approve:7:d974d3765c60", "deny:7:d974d3765c60"]);
        assert_eq!(v.buttons[0].style, 3);
        assert_eq!(v.buttons[1].label, "Deny");
        assert!(
            card(&sample(2, 10), false).buttons.is_empty(),
            "no buttons in mirror channels"
        );
    }

    #[test]
    fn a_card_of_a_hundred_hosts_fits_discords_limits() {
        for (hosts, detail) in [(100, 60), (3, 3000), (40, 1)] {
            let v = card(&sample(hosts, detail), true);
            assert!(v.total() <= EMBED_TOTAL_MAX, "{hosts} hosts: {} characters", v.total());
            assert!(v.fields.len() <= FIELDS_MAX);
            for (name, value) in &v.fields {
                assert!(chars(name) <= FIELD_NAME_MAX && chars(value) <= FIELD_VALUE_MAX && !value.is_empty());
            }
            assert!(
                v.fields.iter().all(|(_, val)| val.starts_with("summary of step")),
                "{hosts}"
            );
        }
        let v = card(&sample(100, 60), true);
        assert!(v.fields[0].1.ends_with(" more"), "{}", v.fields[0].1);
    }

    #[test]
    fn fitting_lines_keeps_whole_lines_and_counts_the_rest() {
        let lines: Vec<String> = ["aaaa", "bbbb", "cccc"].iter().map(|s| s.to_string()).collect();
        assert_eq!(fit_lines(&lines, 100), "aaaa\nbbbb\ncccc");
        assert_eq!(fit_lines(&lines, 14), "aaaa\nbbbb\ncccc");
        assert_eq!(fit_lines(&lines, 13), "aaaa\n… 2 more");
        assert_eq!(fit_lines(&["x".repeat(50)], 10), "xxxxxxxxx…");
        assert!(chars(&fit_lines(&["x".repeat(50), "y".into()], 20)) <= 20);
        assert_eq!(clip("ab\\*cd", 4), "ab…");
    }
}
