//! e2e harness.

pub mod agents;
pub mod baton;
pub mod bind;
pub mod discord;
pub mod discord_bot;
pub mod echo_bot;
pub mod prometheus;
pub mod prosody;
pub mod room;
pub mod stack;
pub mod stock_echo;
pub mod teams;
pub mod xmpp_client;
