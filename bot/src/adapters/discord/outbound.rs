//! Posting to Discord: the request bodies (through serenity's builders) of a line, a run card
//! and a card edit, every one with `allowed_mentions` that lets only the people mentioned on
//! purpose be pinged, and new messages with a nonce Discord enforces (a retry after a lost
//! answer returns the message already made instead of posting it twice); and what a failed
//! call means for the room's queue (try again later, or never).

use super::render::{CardView, Rendered};
use crate::chat::DeliveryError;
use serenity::all::{
    ButtonStyle, CreateActionRow, CreateAllowedMentions, CreateButton, CreateEmbed, CreateEmbedFooter,
    CreateInteractionResponseFollowup, CreateInteractionResponseMessage, CreateMessage, EditInteractionResponse,
    EditMessage, Nonce, UserId,
};
use std::time::Duration;

/// Only these users may be pinged: no `@everyone`, no roles, no one named in quoted text.
pub fn allowed(users: &[u64]) -> CreateAllowedMentions {
    CreateAllowedMentions::new()
        .users(users.iter().map(|u| UserId::new(*u)))
        .replied_user(false)
}

pub fn embed(v: &CardView) -> CreateEmbed {
    let mut e = CreateEmbed::new()
        .title(v.title.clone())
        .colour(v.colour)
        .description(v.description.clone())
        .footer(CreateEmbedFooter::new(v.footer.clone()));
    for (name, value) in &v.fields {
        e = e.field(name.clone(), value.clone(), false);
    }
    e
}

/// The card's buttons; an empty list removes them from an edited message.
pub fn components(v: &CardView) -> Vec<CreateActionRow> {
    if v.buttons.is_empty() {
        return Vec::new();
    }
    let buttons = v
        .buttons
        .iter()
        .map(|b| {
            CreateButton::new(b.custom_id.clone())
                .label(b.label.clone())
                .style(if b.style == 3 {
                    ButtonStyle::Success
                } else {
                    ButtonStyle::Danger
                })
        })
        .collect();
    vec![CreateActionRow::Buttons(buttons)]
}

/// The nonce of part `part` of outbox message `id` in this process (`tag`), when it fits
/// Discord's 25 characters.
pub fn nonce(tag: &str, id: i64, part: usize) -> Option<String> {
    let n = format!("{tag}.{id}.{part}");
    (n.len() <= 25).then_some(n)
}

fn with_nonce(m: CreateMessage, nonce: Option<String>) -> CreateMessage {
    match nonce {
        Some(n) => m.nonce(Nonce::String(n)).enforce_nonce(true),
        None => m,
    }
}

/// A line (or one part of a long one).
pub fn line(text: &Rendered, nonce: Option<String>) -> CreateMessage {
    with_nonce(
        CreateMessage::new()
            .content(text.text.clone())
            .allowed_mentions(allowed(&text.users)),
        nonce,
    )
}

/// A new run card: the line that opened it above the card, and its buttons.
pub fn new_card(text: &Rendered, view: &CardView, nonce: Option<String>) -> CreateMessage {
    let mut m = CreateMessage::new()
        .content(text.text.clone())
        .embed(embed(view))
        .allowed_mentions(allowed(&text.users));
    let rows = components(view);
    if !rows.is_empty() {
        m = m.components(rows);
    }
    with_nonce(m, nonce)
}

/// A card edit: the latest line about the run above the card as it is now.
pub fn card_edit(text: &Rendered, view: &CardView) -> EditMessage {
    EditMessage::new()
        .content(text.text.clone())
        .embed(embed(view))
        .components(components(view))
        .allowed_mentions(allowed(&text.users))
}

/// An answer only the clicker sees.
pub fn ephemeral(text: &Rendered) -> CreateInteractionResponseMessage {
    CreateInteractionResponseMessage::new()
        .content(text.text.clone())
        .allowed_mentions(allowed(&text.users))
        .ephemeral(true)
}

/// The same, after the click was deferred.
pub fn ephemeral_followup(text: &Rendered) -> CreateInteractionResponseFollowup {
    CreateInteractionResponseFollowup::new()
        .content(text.text.clone())
        .allowed_mentions(allowed(&text.users))
        .ephemeral(true)
}

/// The clicked card as it is now (content left as it was).
pub fn card_update(view: &CardView) -> CreateInteractionResponseMessage {
    CreateInteractionResponseMessage::new()
        .embed(embed(view))
        .components(components(view))
}

/// The same, after the click was deferred.
pub fn card_update_later(view: &CardView) -> EditInteractionResponse {
    EditInteractionResponse::new()
        .embed(embed(view))
        .components(components(view))
}

/// What a failed call said, without its URL (interaction URLs carry the interaction's token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status, when Discord answered.
    pub status: Option<u16>,
    /// Discord's JSON error code (10008 Unknown Message, 50013 Missing Permissions, …).
    pub code: Option<isize>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn of(err: &serenity::Error) -> Failure {
        use serenity::http::HttpError;
        let plain = |message: String| Failure {
            status: None,
            code: None,
            message,
            retry_after: None,
        };
        match err {
            serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => Failure {
                status: Some(r.status_code.as_u16()),
                code: Some(r.error.code),
                message: r.error.message.clone(),
                retry_after: None,
            },
            serenity::Error::Http(HttpError::Request(e)) => {
                let mut text = e.to_string();
                if let Some(url) = e.url() {
                    text = text.replace(url.as_str(), "(Discord)");
                }
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    text.push_str(": ");
                    text.push_str(&s.to_string());
                    source = s.source();
                }
                plain(text)
            }
            serenity::Error::Http(other) => plain(format!("http: {other}")),
            serenity::Error::Model(m) => Failure {
                status: Some(400),
                code: None,
                message: format!("refused before sending: {m}"),
                retry_after: None,
            },
            other => plain(other.to_string()),
        }
    }

    /// What the room's queue should do: a message Discord refuses (unknown channel or message,
    /// no permission, invalid body) will never go; anything else (no answer, a server error, a
    /// rate limit, a token Discord does not take right now) is tried again in order.
    pub fn delivery(&self) -> DeliveryError {
        let reason = match (self.status, self.code) {
            (Some(s), Some(c)) if c != 0 => format!("discord answered {s} (code {c}): {}", self.message),
            (Some(s), _) => format!("discord answered {s}: {}", self.message),
            (None, _) => format!("no answer from discord: {}", self.message),
        };
        match self.status {
            Some(400 | 403 | 404 | 405 | 413) => DeliveryError::Permanent { reason },
            _ => DeliveryError::Transient {
                reason,
                retry_after: self.retry_after,
            },
        }
    }

    /// Whether the message to edit is gone (deleted, or never existed).
    pub fn unknown_message(&self) -> bool {
        self.code == Some(10008)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: Option<u16>, code: Option<isize>) -> Failure {
        Failure {
            status,
            code,
            message: "m".into(),
            retry_after: None,
        }
    }

    #[test]
    fn refusals_are_permanent_and_the_rest_transient() {
        let permanent = |f: Failure| matches!(f.delivery(), DeliveryError::Permanent { .. });
        assert!(permanent(failure(Some(404), Some(10003))), "unknown channel");
        assert!(permanent(failure(Some(404), Some(10008))), "unknown message");
        assert!(permanent(failure(Some(403), Some(50013))), "missing permissions");
        assert!(permanent(failure(Some(400), Some(50035))), "invalid form body");
        assert!(!permanent(failure(Some(500), Some(0))));
        assert!(!permanent(failure(Some(502), None)));
        assert!(!permanent(failure(Some(429), None)));
        assert!(
            !permanent(failure(Some(401), Some(0))),
            "a token problem is fixed by the operator"
        );
        assert!(!permanent(failure(None, None)), "no answer");
        assert_eq!(
            failure(Some(404), Some(10008)).delivery().to_string(),
            "cannot be delivered: discord answered 404 (code 10008): m"
        );
        assert!(failure(Some(404), Some(10008)).unknown_message());
    }

    #[test]
    fn nonces_fit_discords_25_characters() {
        assert_eq!(nonce("k3x9z", 42, 0).as_deref(), Some("k3x9z.42.0"));
        assert_eq!(
            nonce("k3x9z", -1_733_000_000_123, 2).as_deref(),
            Some("k3x9z.-1733000000123.2")
        );
        assert_eq!(nonce("k3x9z", i64::MIN, 10), None);
    }
}
