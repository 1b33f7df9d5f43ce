//! Chat adapters, one folder per platform, each implementing [`crate::chat::ChatAdapter`].

pub mod console;
pub mod xmpp;
