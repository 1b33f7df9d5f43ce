//! e2e harness.
pub mod bind;
