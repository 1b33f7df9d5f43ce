//! Exhaustive table tests of the approval policy: every sender against every right, and review
//! sequences under each policy variant.

use baton_policies::*;
use chrono::{DateTime, Duration, Utc};

fn id(s: &str) -> Identity {
    Identity::parse(s).expect("test identities are well formed")
}

fn directory() -> Directory {
    Directory::new(
        [
            (
                PersonId::new("alice"),
                vec![id("console:alice"), id("xmpp:alice@contoso.com")],
            ),
            (PersonId::new("bob"), vec![id("console:bob"), id("discord:42")]),
            (PersonId::new("carol"), vec![id("console:carol")]),
            (PersonId::new("dave"), vec![id("console:dave")]),
            (PersonId::new("mallory"), vec![id("console:mallory")]),
        ],
        [
            (
                GroupName::new("edge-admins"),
                vec![PersonId::new("alice"), PersonId::new("bob"), PersonId::new("carol")],
            ),
            (GroupName::new("stoppers"), vec![PersonId::new("dave")]),
        ],
    )
    .expect("test directory is valid")
}

fn sender(name: &str) -> Sender {
    match name {
        "unverified" => Sender::Unverified {
            display: "bob".into(),
            why: "the room hides real JIDs".into(),
        },
        "stranger" => Sender::Verified(id("console:stranger")),
        "alice-xmpp" => Sender::Verified(id("xmpp:Alice@Contoso.com")),
        other => Sender::Verified(id(&format!("console:{other}"))),
    }
}

fn short(r: &Result<Actor, Refusal>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(Refusal::Unverified { .. }) => "unverified",
        Err(Refusal::UnknownIdentity { .. }) => "unknown",
        Err(Refusal::NotAllowed { .. }) => "no",
        Err(_) => "other",
    }
}

fn matrix(policy: &Policy) -> String {
    let dir = directory();
    let mut out = String::new();
    for who in [
        "alice",
        "alice-xmpp",
        "bob",
        "carol",
        "dave",
        "mallory",
        "stranger",
        "unverified",
    ] {
        let row: Vec<String> = Right::ALL
            .iter()
            .map(|r| format!("{:<11}", short(&policy.authorize(&dir, &sender(who), *r))))
            .collect();
        out.push_str(&format!("{who:<11}{}\n", row.join("").trim_end()));
    }
    out
}

#[test]
fn authorize_every_sender_for_every_right_default_policy() {
    // columns: view request approve deny abort retry
    let expect = "\
alice      ok         ok         ok         ok         ok         ok
alice-xmpp ok         ok         ok         ok         ok         ok
bob        ok         ok         ok         ok         ok         ok
carol      ok         ok         ok         ok         ok         ok
dave       ok         no         no         no         no         no
mallory    ok         no         no         no         no         no
stranger   ok         unknown    unknown    unknown    unknown    unknown
unverified ok         unverified unverified unverified unverified unverified
";
    assert_eq!(matrix(&Policy::default()), expect);
}

#[test]
fn authorize_every_sender_for_every_right_custom_policy() {
    let admins = vec![GroupName::new("edge-admins")];
    let policy = Policy {
        view: Some(admins.clone()),
        abort: vec![GroupName::new("edge-admins"), GroupName::new("stoppers")],
        retry: vec![],
        ..Policy::default()
    };
    let expect = "\
alice      ok         ok         ok         ok         ok         no
alice-xmpp ok         ok         ok         ok         ok         no
bob        ok         ok         ok         ok         ok         no
carol      ok         ok         ok         ok         ok         no
dave       no         no         no         no         ok         no
mallory    no         no         no         no         no         no
stranger   unknown    unknown    unknown    unknown    unknown    unknown
unverified unverified unverified unverified unverified unverified unverified
";
    assert_eq!(matrix(&policy), expect);
}

#[test]
fn refusals_read_clearly() {
    let dir = directory();
    let p = Policy {
        retry: vec![],
        ..Policy::default()
    };
    let says = |who: &str, right| p.authorize(&dir, &sender(who), right).expect_err("refused").to_string();
    assert_eq!(
        says("mallory", Right::Approve),
        "mallory may not approve: only members of edge-admins may"
    );
    assert_eq!(
        says("stranger", Right::Request),
        "console:stranger is not mapped to any person in Baton's [people]"
    );
    assert_eq!(
        says("unverified", Right::Deny),
        "I cannot verify who you are here: the room hides real JIDs"
    );
    assert_eq!(
        says("alice", Right::Retry),
        "alice may not retry: nobody is allowed to by the policy"
    );
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T14:00:00Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

/// Plays a review: `steps` are `who@minute` approvals, `!hash` rebinding to a new plan hash.
/// Returns one line per step and the final tally.
fn play(policy: &Policy, steps: &[&str]) -> String {
    let dir = directory();
    let requester = policy
        .authorize(&dir, &sender("alice"), Right::Request)
        .expect("alice may request");
    let mut review = Review::open(policy, requester.person(), "h1", t0());
    let mut hash = "h1".to_string();
    let mut out = Vec::new();
    for step in steps {
        if let Some(new) = step.strip_prefix('!') {
            hash = new.to_string();
            let lapsed = review.rebind(new);
            out.push(format!("rebind {new}: lapsed {lapsed:?}"));
            continue;
        }
        let (who, minute) = step.split_once('@').expect("steps are who@minute");
        let now = t0() + Duration::minutes(minute.parse().expect("minute is a number"));
        let line = match policy.authorize(&dir, &sender(who), Right::Approve) {
            Err(e) => format!("{who}: {e}"),
            Ok(actor) => match review.check_approval(policy, &actor, &hash, now) {
                Err(e) => format!("{who}: {e}"),
                Ok(v) => format!("{who}: {:?}", review.record(policy, v)),
            },
        };
        out.push(line);
    }
    out.push(format!("final {:?}", review.tally(policy)));
    out.join("\n")
}

#[test]
fn two_person_rule_by_default() {
    let p = Policy::default();
    assert_eq!(
        play(&p, &["alice@1", "mallory@2", "unverified@2", "bob@3"]),
        "alice: you requested this; another person must approve it\n\
         mallory: mallory may not approve: only members of edge-admins may\n\
         unverified: I cannot verify who you are here: the room hides real JIDs\n\
         bob: Approved { approvers: [PersonId(\"bob\")] }\n\
         final Approved { approvers: [PersonId(\"bob\")] }"
    );
}

#[test]
fn one_person_on_two_platforms_counts_once() {
    let p = Policy {
        approvals_required: 2,
        ..Policy::default()
    };
    // bob approves from the console and again from Discord: still one person.
    let dir = directory();
    let requester = p
        .authorize(&dir, &sender("alice"), Right::Request)
        .expect("alice may request");
    let mut review = Review::open(&p, requester.person(), "h1", t0());
    let bob_console = p
        .authorize(&dir, &sender("bob"), Right::Approve)
        .expect("bob may approve");
    let v = review
        .check_approval(&p, &bob_console, "h1", t0())
        .expect("first approval");
    assert_eq!(review.record(&p, v), Tally::Pending { have: 1, need: 2 });
    let bob_discord = p
        .authorize(&dir, &Sender::Verified(id("discord:42")), Right::Approve)
        .expect("bob again");
    assert_eq!(
        review.check_approval(&p, &bob_discord, "h1", t0()),
        Err(Refusal::AlreadyApproved)
    );
    // alice's second identity is still alice, the requester.
    let alice_xmpp = p
        .authorize(&dir, &sender("alice-xmpp"), Right::Approve)
        .expect("alice may approve others");
    assert_eq!(
        review.check_approval(&p, &alice_xmpp, "h1", t0()),
        Err(Refusal::SelfApproval)
    );
}

#[test]
fn review_sequences_under_each_policy() {
    let cases: &[(Policy, &[&str], &str)] = &[
        (
            Policy {
                approvals_required: 2,
                ..Policy::default()
            },
            &["bob@1", "bob@2", "carol@3"],
            "bob: Pending { have: 1, need: 2 }\n\
             bob: you already approved this; another person must approve it\n\
             carol: Approved { approvers: [PersonId(\"bob\"), PersonId(\"carol\")] }\n\
             final Approved { approvers: [PersonId(\"bob\"), PersonId(\"carol\")] }",
        ),
        (
            Policy {
                requester_may_approve: true,
                ..Policy::default()
            },
            &["alice@1"],
            "alice: Approved { approvers: [PersonId(\"alice\")] }\n\
             final Approved { approvers: [PersonId(\"alice\")] }",
        ),
        (
            Policy {
                requester_may_approve: true,
                approvals_required: 2,
                ..Policy::default()
            },
            &["alice@1", "alice@2", "bob@3"],
            "alice: Pending { have: 1, need: 2 }\n\
             alice: you already approved this; another person must approve it\n\
             bob: Approved { approvers: [PersonId(\"alice\"), PersonId(\"bob\")] }\n\
             final Approved { approvers: [PersonId(\"alice\"), PersonId(\"bob\")] }",
        ),
        (
            Policy::default(),
            &["bob@15"],
            "bob: the request expired at 14:15:00 UTC\nfinal Pending { have: 0, need: 1 }",
        ),
        (
            Policy::default(),
            &["bob@14"],
            "bob: Approved { approvers: [PersonId(\"bob\")] }\nfinal Approved { approvers: [PersonId(\"bob\")] }",
        ),
        (
            Policy {
                expiry: std::time::Duration::from_secs(60),
                ..Policy::default()
            },
            &["bob@1"],
            "bob: the request expired at 14:01:00 UTC\nfinal Pending { have: 0, need: 1 }",
        ),
        (
            Policy {
                approvals_required: 2,
                ..Policy::default()
            },
            &["bob@1", "!h2", "carol@2", "bob@3"],
            "bob: Pending { have: 1, need: 2 }\n\
             rebind h2: lapsed [PersonId(\"bob\")]\n\
             carol: Pending { have: 1, need: 2 }\n\
             bob: Approved { approvers: [PersonId(\"carol\"), PersonId(\"bob\")] }\n\
             final Approved { approvers: [PersonId(\"carol\"), PersonId(\"bob\")] }",
        ),
        (
            Policy {
                approvals_required: 0,
                ..Policy::default()
            },
            &[],
            "final Pending { have: 0, need: 1 }",
        ),
    ];
    for (i, (policy, steps, expect)) in cases.iter().enumerate() {
        assert_eq!(play(policy, steps), *expect, "case {i}: {steps:?}");
    }
}

#[test]
fn approvals_for_a_stale_hash_are_refused_and_never_counted() {
    let p = Policy::default();
    let dir = directory();
    let requester = p
        .authorize(&dir, &sender("alice"), Right::Request)
        .expect("alice may request");
    let mut review = Review::open(&p, requester.person(), "h1", t0());
    let bob = p
        .authorize(&dir, &sender("bob"), Right::Approve)
        .expect("bob may approve");
    assert_eq!(review.check_approval(&p, &bob, "h0", t0()), Err(Refusal::PlanChanged));
    // Checked against h1, then the plan changes before the approval is recorded.
    let v = review.check_approval(&p, &bob, "h1", t0()).expect("valid for h1");
    review.rebind("h2");
    assert_eq!(review.record(&p, v), Tally::Pending { have: 0, need: 1 });
}

#[test]
fn only_an_approve_actor_can_approve_and_deny_needs_deny() {
    let p = Policy::default();
    let dir = directory();
    let alice = p
        .authorize(&dir, &sender("alice"), Right::Request)
        .expect("alice may request");
    let review = Review::open(&p, alice.person(), "h1", t0());
    let bob_abort = p.authorize(&dir, &sender("bob"), Right::Abort).expect("bob may abort");
    assert!(matches!(
        review.check_approval(&p, &bob_abort, "h1", t0()),
        Err(Refusal::NotAllowed { .. })
    ));
    assert!(matches!(
        review.check_deny(&p, &bob_abort, t0()),
        Err(Refusal::NotAllowed { .. })
    ));
    let alice_deny = p
        .authorize(&dir, &sender("alice"), Right::Deny)
        .expect("alice may deny");
    assert_eq!(review.check_deny(&p, &alice_deny, t0()), Ok(()));
    assert_eq!(
        review
            .check_deny(&p, &alice_deny, t0() + Duration::minutes(16))
            .expect_err("expired")
            .to_string(),
        "the request expired at 14:15:00 UTC"
    );
}

#[test]
fn the_approvers_of_a_request_are_the_approve_group_without_the_requester() {
    let dir = directory();
    let names = |p: &Policy, requester: &str| -> Vec<String> {
        p.approvers(&dir, &PersonId::new(requester))
            .iter()
            .map(|p| p.as_str().to_string())
            .collect()
    };
    let default = Policy::default();
    assert_eq!(names(&default, "alice"), ["bob", "carol"]);
    assert_eq!(names(&default, "dave"), ["alice", "bob", "carol"]);
    let own = Policy {
        requester_may_approve: true,
        ..Policy::default()
    };
    assert_eq!(names(&own, "bob"), ["alice", "carol"], "the requester is never called");
    let stoppers = Policy {
        approve: vec![GroupName::new("stoppers")],
        ..Policy::default()
    };
    assert_eq!(names(&stoppers, "alice"), ["dave"]);
    assert_eq!(names(&stoppers, "dave"), Vec::<String>::new());
    assert_eq!(
        dir.identities(&PersonId::new("bob")),
        [id("console:bob"), id("discord:42")]
    );
    assert!(dir.identities(&PersonId::new("nobody")).is_empty());
}
