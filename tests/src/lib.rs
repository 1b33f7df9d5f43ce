//! e2e harness.

pub mod agents;
pub mod baton;
pub mod bind;
pub mod discord;
pub mod echo_bot;
pub mod prosody;
pub mod room;
pub mod stack;
pub mod teams;
pub mod teams_bot;
pub mod xmpp_client;
