//! The review of one request: approvals bound to a plan hash, counted as distinct people,
//! expiring at a deadline.

use crate::directory::PersonId;
use crate::policy::{Actor, Policy, Refusal, Right};
use chrono::{DateTime, Utc};

/// An approval that passed [`Review::check_approval`]. Its fields are private, so the engine
/// cannot make one up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedApproval {
    person: PersonId,
    plan_hash: String,
    at: DateTime<Utc>,
}

impl VerifiedApproval {
    pub fn person(&self) -> &PersonId {
        &self.person
    }
    pub fn plan_hash(&self) -> &str {
        &self.plan_hash
    }
    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }
}

/// Where a review stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tally {
    /// Enough distinct people approved the current plan.
    Approved { approvers: Vec<PersonId> },
    /// `have` of `need` approvals so far.
    Pending { have: u32, need: u32 },
}

/// One request waiting for approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    requester: PersonId,
    plan_hash: String,
    expires_at: DateTime<Utc>,
    approvals: Vec<VerifiedApproval>,
}

impl Review {
    /// Opens a review for `plan_hash`, requested by `requester` at `now`.
    pub fn open(policy: &Policy, requester: &PersonId, plan_hash: &str, now: DateTime<Utc>) -> Review {
        let expiry = chrono::Duration::from_std(policy.expiry).unwrap_or(chrono::Duration::MAX);
        Review {
            requester: requester.clone(),
            plan_hash: plan_hash.to_string(),
            expires_at: now.checked_add_signed(expiry).unwrap_or(DateTime::<Utc>::MAX_UTC),
            approvals: Vec::new(),
        }
    }

    pub fn requester(&self) -> &PersonId {
        &self.requester
    }
    pub fn plan_hash(&self) -> &str {
        &self.plan_hash
    }
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
    pub fn approvals(&self) -> &[VerifiedApproval] {
        &self.approvals
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// Checks one approval of the plan whose hash the approver was shown.
    pub fn check_approval(
        &self,
        policy: &Policy,
        approver: &Actor,
        plan_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedApproval, Refusal> {
        if approver.right() != Right::Approve {
            return Err(Refusal::NotAllowed {
                person: approver.person().clone(),
                right: Right::Approve,
                groups: policy.approve.clone(),
            });
        }
        if self.is_expired(now) {
            return Err(Refusal::Expired { at: self.expires_at });
        }
        if plan_hash != self.plan_hash {
            return Err(Refusal::PlanChanged);
        }
        if approver.person() == &self.requester && !policy.requester_may_approve {
            return Err(Refusal::SelfApproval);
        }
        if self.approvals.iter().any(|a| a.person == *approver.person()) {
            return Err(Refusal::AlreadyApproved);
        }
        Ok(VerifiedApproval {
            person: approver.person().clone(),
            plan_hash: plan_hash.to_string(),
            at: now,
        })
    }

    /// Checks a deny. Any person allowed to deny may, the requester included (that withdraws
    /// the request), until it expires.
    pub fn check_deny(&self, policy: &Policy, denier: &Actor, now: DateTime<Utc>) -> Result<(), Refusal> {
        if denier.right() != Right::Deny {
            return Err(Refusal::NotAllowed {
                person: denier.person().clone(),
                right: Right::Deny,
                groups: policy.deny.clone(),
            });
        }
        if self.is_expired(now) {
            return Err(Refusal::Expired { at: self.expires_at });
        }
        Ok(())
    }

    /// Records a verified approval and returns the new tally. An approval for another plan
    /// (the plan changed between check and record) is not counted.
    pub fn record(&mut self, policy: &Policy, approval: VerifiedApproval) -> Tally {
        if approval.plan_hash == self.plan_hash && !self.approvals.iter().any(|a| a.person == approval.person) {
            self.approvals.push(approval);
        }
        self.tally(policy)
    }

    /// Counts distinct people who approved the current plan.
    pub fn tally(&self, policy: &Policy) -> Tally {
        let approvers: Vec<PersonId> = self
            .approvals
            .iter()
            .filter(|a| a.plan_hash == self.plan_hash)
            .filter(|a| policy.requester_may_approve || a.person != self.requester)
            .map(|a| a.person.clone())
            .collect();
        let need = policy.approvals_required.max(1);
        let have = u32::try_from(approvers.len()).unwrap_or(u32::MAX);
        if have >= need {
            Tally::Approved { approvers }
        } else {
            Tally::Pending { have, need }
        }
    }

    /// Withdraws a person's approval (the policy no longer lets them approve). Returns whether
    /// they had approved.
    pub fn withdraw(&mut self, person: &PersonId) -> bool {
        let before = self.approvals.len();
        self.approvals.retain(|a| &a.person != person);
        self.approvals.len() != before
    }

    /// Binds the review to a new plan: earlier approvals lapse. Returns who had approved.
    pub fn rebind(&mut self, plan_hash: &str) -> Vec<PersonId> {
        if plan_hash == self.plan_hash {
            return Vec::new();
        }
        self.plan_hash = plan_hash.to_string();
        std::mem::take(&mut self.approvals)
            .into_iter()
            .map(|a| a.person)
            .collect()
    }
}
