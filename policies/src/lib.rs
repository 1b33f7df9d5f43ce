//! Baton's approval policy: who is who across chat platforms, who may do what, and when a
//! request has enough distinct approvals to run.
//!
//! Everything here is pure: no IO, no clock (time is passed in), no randomness. The engine in
//! `bot/` asks this crate for decisions and records the answers; it cannot count an approval that
//! did not pass [`Review::check_approval`], because only that function builds a
//! [`VerifiedApproval`].

mod directory;
mod identity;
mod policy;
mod review;

pub use directory::{Directory, DirectoryError, GroupName, PersonId};
pub use identity::{Identity, IdentityError, Platform};
pub use policy::{Actor, Policy, Refusal, Right, Sender};
pub use review::{Review, Tally, VerifiedApproval};
