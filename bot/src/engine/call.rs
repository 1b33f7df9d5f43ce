//! Whom an approval request calls by name: the people who may approve it and can see it now.
//! Pure: the presence the platforms reported is an input like any other.

use crate::chat::{Mention, Presence, RoomRef};
use baton_policies::{Directory, PersonId, Policy};

/// The approvers an approval request in `room` calls: everyone the policy lets approve a
/// request by `requester` (never the requester), who has not approved yet, and who
/// - where the room's platform reports presence (`presence` is `Some`), is in the room now;
/// - elsewhere, has an identity on the room's platform (the platform can address them; whether
///   they read the room, Baton cannot know).
pub fn to_call(
    policy: &Policy,
    dir: &Directory,
    requester: &PersonId,
    approved: &[PersonId],
    room: &RoomRef,
    presence: Option<&Presence>,
) -> Vec<PersonId> {
    policy
        .approvers(dir, requester)
        .into_iter()
        .filter(|p| !approved.contains(p))
        .filter(|p| {
            let mut ids = dir.identities(p).iter().filter(|i| i.platform() == room.platform);
            match presence {
                Some(presence) => ids.any(|i| presence.name_in(&room.id, i).is_some()),
                None => ids.next().is_some(),
            }
        })
        .collect()
}

/// A person to call, with every identity the directory knows for them (adapters pick theirs).
pub fn mention(dir: &Directory, person: &PersonId) -> Mention {
    Mention {
        person: person.as_str().to_string(),
        identities: dir.identities(person).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_policies::{GroupName, Identity, Platform};
    use std::collections::BTreeMap;

    fn id(s: &str) -> Identity {
        Identity::parse(s).expect("test identities are well formed")
    }

    fn dir() -> Directory {
        Directory::new(
            [
                (
                    PersonId::new("alice"),
                    vec![id("xmpp:alice@contoso.com"), id("discord:1")],
                ),
                (PersonId::new("bob"), vec![id("xmpp:bob@contoso.com"), id("discord:2")]),
                (PersonId::new("carol"), vec![id("xmpp:carol@contoso.com")]),
                (
                    PersonId::new("dave"),
                    vec![id("xmpp:dave@contoso.com"), id("discord:4")],
                ),
                (PersonId::new("erin"), vec![id("xmpp:erin@contoso.com")]),
            ],
            [(
                GroupName::new("edge-admins"),
                vec![
                    PersonId::new("alice"),
                    PersonId::new("bob"),
                    PersonId::new("carol"),
                    PersonId::new("dave"),
                ],
            )],
        )
        .expect("test directory is valid")
    }

    fn present(room: &str, people: &[(&str, &str)]) -> Presence {
        let occupants = people.iter().map(|(jid, nick)| (id(jid), nick.to_string())).collect();
        Presence {
            rooms: BTreeMap::from([(room.to_string(), occupants)]),
        }
    }

    /// Whom a request by `requester` in `room` calls, given who approved and who is present.
    fn check(requester: &str, approved: &[&str], room: RoomRef, presence: Option<&Presence>) -> Vec<String> {
        let approved: Vec<PersonId> = approved.iter().map(|p| PersonId::new(p)).collect();
        to_call(
            &Policy::default(),
            &dir(),
            &PersonId::new(requester),
            &approved,
            &room,
            presence,
        )
        .iter()
        .map(|p| p.as_str().to_string())
        .collect()
    }

    #[test]
    fn xmpp_calls_the_approvers_in_the_room_and_nobody_else() {
        let room = RoomRef::new(Platform::Xmpp, "ops@conf.contoso.com");
        let here = present(
            "ops@conf.contoso.com",
            &[
                ("xmpp:alice@contoso.com", "alice"),
                ("xmpp:bob@contoso.com", "Bobby"),
                ("xmpp:erin@contoso.com", "erin"),
            ],
        );
        // carol and dave are away; erin is here but may not approve; alice asked.
        assert_eq!(check("alice", &[], room.clone(), Some(&here)), ["bob"]);
        assert_eq!(check("bob", &[], room.clone(), Some(&here)), ["alice"]);
        assert_eq!(
            check("alice", &["bob"], room.clone(), Some(&here)),
            Vec::<String>::new()
        );
        // Presence of another room does not count here.
        let elsewhere = present("other@conf.contoso.com", &[("xmpp:bob@contoso.com", "bob")]);
        assert_eq!(
            check("alice", &[], room.clone(), Some(&elsewhere)),
            Vec::<String>::new()
        );
        assert_eq!(
            check("alice", &[], room, Some(&Presence::default())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn platforms_without_presence_call_every_approver_they_can_address() {
        let room = RoomRef::new(Platform::Discord, "123");
        assert_eq!(check("alice", &[], room.clone(), None), ["bob", "dave"]);
        assert_eq!(check("dave", &["bob"], room, None), ["alice"]);
    }

    #[test]
    fn a_mention_carries_every_identity() {
        let m = mention(&dir(), &PersonId::new("bob"));
        assert_eq!(m.person, "bob");
        assert_eq!(m.on(Platform::Discord), Some(&id("discord:2")));
        assert_eq!(m.on(Platform::Teams), None);
    }
}
