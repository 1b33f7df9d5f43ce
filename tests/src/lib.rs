//! e2e harness.

pub mod prosody;
