//! Who may do what: rights granted to groups, and the check that turns a chat sender into an
//! [`Actor`] holding one right.

use crate::directory::{Directory, GroupName, PersonId};
use crate::identity::Identity;
use chrono::{DateTime, Utc};
use std::fmt;
use std::time::Duration;

/// What a person may be allowed to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Right {
    /// Read-only commands: `!plan`, `!status`, `!runs`, `!help`.
    View,
    /// `!failover`.
    Request,
    Approve,
    Deny,
    Abort,
    Retry,
}

impl Right {
    pub const ALL: [Right; 6] = [
        Right::View,
        Right::Request,
        Right::Approve,
        Right::Deny,
        Right::Abort,
        Right::Retry,
    ];

    pub fn verb(self) -> &'static str {
        match self {
            Right::View => "view runs",
            Right::Request => "request a failover",
            Right::Approve => "approve",
            Right::Deny => "deny",
            Right::Abort => "abort",
            Right::Retry => "retry",
        }
    }
}

/// Who sent a command, as the chat adapter could establish it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sender {
    /// The platform vouches for this account (XMPP: the occupant's real bare JID).
    Verified(Identity),
    /// The platform does not show who this is (e.g. a semi-anonymous XMPP room): `why` says so
    /// in words the operator can act on.
    Unverified { display: String, why: String },
}

/// The approval policy, as configured in `[policy]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Groups whose members may use read-only commands; `None`: anyone in the room.
    pub view: Option<Vec<GroupName>>,
    pub request: Vec<GroupName>,
    pub approve: Vec<GroupName>,
    pub deny: Vec<GroupName>,
    pub abort: Vec<GroupName>,
    pub retry: Vec<GroupName>,
    /// Distinct people who must approve (other than the requester unless
    /// `requester_may_approve`). At least 1.
    pub approvals_required: u32,
    pub requester_may_approve: bool,
    /// How long a request waits for approvals.
    pub expiry: Duration,
    /// Whether `!retry` needs fresh approvals before the failed step runs again.
    pub retry_needs_approval: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        let admins = vec![GroupName::new("edge-admins")];
        Policy {
            view: None,
            request: admins.clone(),
            approve: admins.clone(),
            deny: admins.clone(),
            abort: admins.clone(),
            retry: admins,
            approvals_required: 1,
            requester_may_approve: false,
            expiry: Duration::from_secs(15 * 60),
            retry_needs_approval: false,
        }
    }
}

/// A person who passed the policy check for one right. Only [`Policy::authorize`] and
/// [`Policy::authorize_person`] build one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    person: PersonId,
    right: Right,
}

impl Actor {
    pub fn person(&self) -> &PersonId {
        &self.person
    }
    pub fn right(&self) -> Right {
        self.right
    }
}

/// Why the policy said no. The `Display` text is what the chat user reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Unverified {
        why: String,
    },
    UnknownIdentity {
        identity: Identity,
    },
    NotAllowed {
        person: PersonId,
        right: Right,
        groups: Vec<GroupName>,
    },
    SelfApproval,
    AlreadyApproved,
    Expired {
        at: DateTime<Utc>,
    },
    PlanChanged,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unverified { why } => write!(f, "I cannot verify who you are here: {why}"),
            Refusal::UnknownIdentity { identity } => {
                write!(f, "{identity} is not mapped to any person in Baton's [people]")
            }
            Refusal::NotAllowed { person, right, groups } => {
                if groups.is_empty() {
                    write!(
                        f,
                        "{person} may not {}: nobody is allowed to by the policy",
                        right.verb()
                    )
                } else {
                    let names: Vec<&str> = groups.iter().map(GroupName::as_str).collect();
                    write!(
                        f,
                        "{person} may not {}: only members of {} may",
                        right.verb(),
                        names.join(", ")
                    )
                }
            }
            Refusal::SelfApproval => write!(f, "you requested this; another person must approve it"),
            Refusal::AlreadyApproved => write!(f, "you already approved this; another person must approve it"),
            Refusal::Expired { at } => write!(f, "the request expired at {} UTC", at.format("%H:%M:%S")),
            Refusal::PlanChanged => write!(f, "the plan changed since it was posted; review the new plan"),
        }
    }
}

impl Policy {
    fn groups_for(&self, right: Right) -> Option<&[GroupName]> {
        match right {
            Right::View => self.view.as_deref(),
            Right::Request => Some(&self.request),
            Right::Approve => Some(&self.approve),
            Right::Deny => Some(&self.deny),
            Right::Abort => Some(&self.abort),
            Right::Retry => Some(&self.retry),
        }
    }

    /// Checks a chat sender for one right.
    ///
    /// Read-only commands are open to anyone when `view` is unset, even to unknown or unverified
    /// senders: the incident room is already the audience. Every other right needs a verified
    /// identity mapped to a person in one of the right's groups.
    pub fn authorize(&self, dir: &Directory, sender: &Sender, right: Right) -> Result<Actor, Refusal> {
        if right == Right::View && self.view.is_none() {
            let person = match sender {
                Sender::Verified(identity) => dir
                    .person_of(identity)
                    .cloned()
                    .unwrap_or_else(|| PersonId::new(&identity.to_string())),
                Sender::Unverified { display, .. } => PersonId::new(display),
            };
            return Ok(Actor { person, right });
        }
        let identity = match sender {
            Sender::Verified(identity) => identity,
            Sender::Unverified { why, .. } => return Err(Refusal::Unverified { why: why.clone() }),
        };
        let person = dir.person_of(identity).ok_or_else(|| Refusal::UnknownIdentity {
            identity: identity.clone(),
        })?;
        self.authorize_person(dir, person, right)
    }

    /// Everyone who may approve a request by `requester`, in the directory's order: the people
    /// the approval request calls. The requester is never among them (even where the policy lets
    /// a requester approve, calling them to their own request would call nobody new).
    pub fn approvers(&self, dir: &Directory, requester: &PersonId) -> Vec<PersonId> {
        dir.people()
            .filter(|p| *p != requester && self.authorize_person(dir, p, Right::Approve).is_ok())
            .cloned()
            .collect()
    }

    /// Checks a known person for one right (used when replaying the journal, where the person
    /// was recorded rather than the chat sender).
    pub fn authorize_person(&self, dir: &Directory, person: &PersonId, right: Right) -> Result<Actor, Refusal> {
        match self.groups_for(right) {
            None => Ok(Actor {
                person: person.clone(),
                right,
            }),
            Some(groups) if dir.contains(person) && dir.in_any(person, groups) => Ok(Actor {
                person: person.clone(),
                right,
            }),
            Some(groups) => Err(Refusal::NotAllowed {
                person: person.clone(),
                right,
                groups: groups.to_vec(),
            }),
        }
    }
}
