//! People and groups: the directory that turns a chat identity into a person, so that approvals
//! count people, not accounts.

use crate::identity::Identity;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// A person as named in the configuration (`[people.alice]`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PersonId(String);

impl PersonId {
    pub fn new(name: &str) -> PersonId {
        PersonId(name.to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group of people as named in the configuration (`[groups]`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupName(String);

impl GroupName {
    pub fn new(name: &str) -> GroupName {
        GroupName(name.to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("identity {identity} is claimed by both {first} and {second}")]
    SharedIdentity {
        identity: Identity,
        first: PersonId,
        second: PersonId,
    },
    #[error("group {group} names {person}, who is not in [people]")]
    UnknownMember { group: GroupName, person: PersonId },
    #[error("person {0} is listed twice")]
    DuplicatePerson(PersonId),
}

/// Who is who: people with their identities, and groups of people.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    people: BTreeMap<PersonId, Vec<Identity>>,
    by_identity: HashMap<Identity, PersonId>,
    groups: BTreeMap<GroupName, BTreeSet<PersonId>>,
}

impl Directory {
    /// Builds the directory, refusing an identity shared by two people (it would let one person
    /// count twice, or act as another) and groups naming unknown people.
    pub fn new(
        people: impl IntoIterator<Item = (PersonId, Vec<Identity>)>,
        groups: impl IntoIterator<Item = (GroupName, Vec<PersonId>)>,
    ) -> Result<Directory, Vec<DirectoryError>> {
        let mut dir = Directory::default();
        let mut errors = Vec::new();
        for (person, identities) in people {
            if dir.people.contains_key(&person) {
                errors.push(DirectoryError::DuplicatePerson(person));
                continue;
            }
            for identity in &identities {
                match dir.by_identity.get(identity) {
                    Some(first) if first != &person => errors.push(DirectoryError::SharedIdentity {
                        identity: identity.clone(),
                        first: first.clone(),
                        second: person.clone(),
                    }),
                    _ => {
                        dir.by_identity.insert(identity.clone(), person.clone());
                    }
                }
            }
            dir.people.insert(person, identities);
        }
        for (group, members) in groups {
            let mut set = BTreeSet::new();
            for person in members {
                if dir.people.contains_key(&person) {
                    set.insert(person);
                } else {
                    errors.push(DirectoryError::UnknownMember {
                        group: group.clone(),
                        person,
                    });
                }
            }
            dir.groups.insert(group, set);
        }
        if errors.is_empty() { Ok(dir) } else { Err(errors) }
    }

    /// The person behind an identity, if the directory knows it.
    pub fn person_of(&self, identity: &Identity) -> Option<&PersonId> {
        self.by_identity.get(identity)
    }

    pub fn contains(&self, person: &PersonId) -> bool {
        self.people.contains_key(person)
    }

    pub fn has_group(&self, group: &GroupName) -> bool {
        self.groups.contains_key(group)
    }

    /// Whether `person` belongs to at least one of `groups`.
    pub fn in_any(&self, person: &PersonId, groups: &[GroupName]) -> bool {
        groups
            .iter()
            .any(|g| self.groups.get(g).is_some_and(|members| members.contains(person)))
    }

    pub fn people(&self) -> impl Iterator<Item = &PersonId> {
        self.people.keys()
    }

    /// A person's identities on every platform (none for a person the directory does not know).
    pub fn identities(&self, person: &PersonId) -> &[Identity] {
        self.people.get(person).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        Identity::parse(s).expect("test identities are well formed")
    }

    #[test]
    fn maps_identities_to_people_and_groups() {
        let dir = Directory::new(
            [
                (
                    PersonId::new("alice"),
                    vec![id("xmpp:alice@contoso.com"), id("console:alice")],
                ),
                (PersonId::new("bob"), vec![id("discord:42")]),
            ],
            [(GroupName::new("edge-admins"), vec![PersonId::new("alice")])],
        )
        .expect("valid directory");
        assert_eq!(dir.person_of(&id("console:alice")), Some(&PersonId::new("alice")));
        assert_eq!(
            dir.person_of(&id("xmpp:ALICE@contoso.com")),
            Some(&PersonId::new("alice"))
        );
        assert_eq!(dir.person_of(&id("console:mallory")), None);
        assert!(dir.in_any(&PersonId::new("alice"), &[GroupName::new("edge-admins")]));
        assert!(!dir.in_any(&PersonId::new("bob"), &[GroupName::new("edge-admins")]));
        assert!(!dir.in_any(&PersonId::new("alice"), &[GroupName::new("nobody")]));
    }

    #[test]
    fn refuses_shared_identities_and_unknown_members() {
        let errors = Directory::new(
            [
                (PersonId::new("alice"), vec![id("console:alice")]),
                (PersonId::new("mallory"), vec![id("console:alice")]),
            ],
            [(GroupName::new("edge-admins"), vec![PersonId::new("carol")])],
        )
        .expect_err("invalid directory");
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            text,
            [
                "identity console:alice is claimed by both alice and mallory",
                "group edge-admins names carol, who is not in [people]",
            ]
        );
    }
}
