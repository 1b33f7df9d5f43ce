//! Answering the person who pressed a button, and only them, within Discord's 3 seconds: the
//! press goes to Baton with a [`ReplyHandle`]; when Baton decides within the configured time
//! (it answers an accepted press only once the journal holds it), the answer is Discord's
//! interaction response itself (a refusal as an ephemeral message, an accepted press as the
//! updated card without its buttons). Otherwise the click is acknowledged at once (a deferred
//! update) and the decision follows through the interaction's webhook when it comes: the
//! refusal as an ephemeral follow-up, the card as an edit of the clicked message.

use super::config::DiscordConfig;
use super::outbound;
use super::render::{self, Rendered};
use crate::chat::{Inbound, InteractionReply, ReplyHandle};
use serenity::all::{ComponentInteraction, CreateInteractionResponse, Http};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

/// How long after a click Baton may still answer through the interaction's webhook (Discord's
/// tokens last 15 minutes).
const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);

const NOT_TAKEN: &str = "Baton could not take this click just now; type the command instead.";

fn words(text: &str) -> Rendered {
    Rendered {
        text: text.to_string(),
        users: Vec::new(),
    }
}

/// Tells the clicker why nothing happens.
pub async fn refuse(http: &Http, ci: &ComponentInteraction, why: &str) {
    let answer = CreateInteractionResponse::Message(outbound::ephemeral(&words(why)));
    match ci.create_response(http, answer).await {
        Ok(()) => info!(interaction = %ci.id, user = %ci.user.id, "click refused before Baton saw it"),
        Err(e) => warn!(interaction = %ci.id, error = %outbound::Failure::of(&e).message, "cannot answer a click"),
    }
}

/// Hands a button press to Baton and answers the clicker with its decision.
pub async fn press(
    http: &Http,
    config: &DiscordConfig,
    ci: &ComponentInteraction,
    mut press: Inbound,
    inbound: &mpsc::Sender<Inbound>,
    received: Instant,
) {
    let (handle, answer) = ReplyHandle::new(received + TOKEN_LIFETIME);
    press.reply = Some(handle);
    let buttons = config.is_command_channel(ci.channel_id.get());
    let decision = async move {
        inbound.send(press).await.ok()?;
        answer.await.ok()
    };
    tokio::pin!(decision);
    // Zero means "always defer" (tests of the deferred path).
    let early = if config.answer_within.is_zero() {
        None
    } else {
        tokio::select! {
            d = &mut decision => Some(d),
            _ = tokio::time::sleep_until(received + config.answer_within) => None,
        }
    };
    let id = ci.id;
    let result = match early {
        Some(Some(reply)) => {
            info!(interaction = %id, user = %ci.user.id, refused = matches!(reply, InteractionReply::Refused(_)), deferred = false, "click answered");
            now(http, ci, reply, buttons).await
        }
        Some(None) => {
            let answer = CreateInteractionResponse::Message(outbound::ephemeral(&words(NOT_TAKEN)));
            ci.create_response(http, answer).await
        }
        None => {
            if let Err(e) = ci.create_response(http, CreateInteractionResponse::Acknowledge).await {
                warn!(interaction = %id, error = %outbound::Failure::of(&e).message, "cannot defer a click");
            }
            match tokio::time::timeout_at(received + TOKEN_LIFETIME, &mut decision).await {
                Ok(Some(reply)) => {
                    info!(interaction = %id, user = %ci.user.id, refused = matches!(reply, InteractionReply::Refused(_)), deferred = true, "click answered");
                    later(http, ci, reply, buttons).await
                }
                Ok(None) => ci
                    .create_followup(http, outbound::ephemeral_followup(&words(NOT_TAKEN)))
                    .await
                    .map(|_| ()),
                Err(_) => {
                    warn!(interaction = %id, "no decision on a click within the interaction's lifetime");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = result {
        warn!(interaction = %id, error = %outbound::Failure::of(&e).message, "cannot answer a click; the room shows the outcome");
    }
}

/// The decision as the interaction's response.
async fn now(http: &Http, ci: &ComponentInteraction, reply: InteractionReply, buttons: bool) -> serenity::Result<()> {
    let answer = match reply {
        InteractionReply::Refused(why) => {
            CreateInteractionResponse::Message(outbound::ephemeral(&render::content(&render::rich(&why))))
        }
        InteractionReply::Accepted(Some(card)) => {
            CreateInteractionResponse::UpdateMessage(outbound::card_update(&render::card(&card, buttons)))
        }
        InteractionReply::Accepted(None) => CreateInteractionResponse::Acknowledge,
    };
    ci.create_response(http, answer).await
}

/// The decision after the click was deferred.
async fn later(http: &Http, ci: &ComponentInteraction, reply: InteractionReply, buttons: bool) -> serenity::Result<()> {
    match reply {
        InteractionReply::Refused(why) => ci
            .create_followup(
                http,
                outbound::ephemeral_followup(&render::content(&render::rich(&why))),
            )
            .await
            .map(|_| ()),
        InteractionReply::Accepted(Some(card)) => ci
            .edit_response(http, outbound::card_update_later(&render::card(&card, buttons)))
            .await
            .map(|_| ()),
        InteractionReply::Accepted(None) => Ok(()),
    }
}
