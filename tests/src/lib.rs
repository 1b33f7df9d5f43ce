//! e2e harness.

pub mod prosody;
pub mod xmpp_client;
