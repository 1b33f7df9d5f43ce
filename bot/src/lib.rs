//! Baton, the chat-ops bot: configuration, commands, the run engine, the store, and the chat
//! adapters. The binary in `main.rs` is a thin command-line shell over this library.

/// This build's version line: `0.1.0 (3eb58dd)`, the commit from `build.rs`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BATON_GIT_COMMIT"), ")");

pub mod adapters;
pub mod assemble;
pub mod chat;
pub mod command;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod event;
pub mod fleet;
pub mod metrics;
pub mod outbox;
pub mod readiness;
pub mod render;
pub mod run;
pub mod server;
pub mod store;
pub mod watch;
