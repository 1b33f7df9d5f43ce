//! Baton, the chat-ops bot: configuration, commands, the run engine, the store, and the chat
//! adapters. The binary in `main.rs` is a thin command-line shell over this library.

pub mod chat;
pub mod command;
pub mod run;
pub mod config;
pub mod engine;
pub mod event;
pub mod render;
