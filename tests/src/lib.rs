//! e2e harness.
pub mod agents;
