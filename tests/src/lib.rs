//! e2e harness.

pub mod agents;
pub mod baton;
pub mod bind;
pub mod discord;
pub mod echo_bot;
pub mod postgres;
pub mod prosody;
pub mod replicas;
pub mod room;
pub mod stack;
pub mod teams;
pub mod xmpp_client;
