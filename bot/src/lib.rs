//! Baton, the chat-ops bot: configuration, commands, the run engine, the store, and the chat
//! adapters. The binary in `main.rs` is a thin command-line shell over this library.

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
pub mod outbox;
pub mod render;
pub mod run;
pub mod store;
