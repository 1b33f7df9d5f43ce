//! e2e harness.

pub mod agents;
pub mod baton;
pub mod bind;
pub mod discord;
pub mod discord_bot;
pub mod echo_bot;
pub mod postgres;
pub mod prometheus;
pub mod prosody;
pub mod proxy;
pub mod replicas;
pub mod room;
pub mod stack;
pub mod teams;
pub mod teams_bot;
pub mod xmpp_client;
