//! e2e harness.

pub mod agents;
pub mod baton;
pub mod bind;
pub mod prosody;
pub mod room;
pub mod stack;
pub mod xmpp_client;
