//! The people of a WhatsApp export: every sender is a contact and a participant of the chat,
//! and the membership notices (joined, left, added, removed) set their join and leave times.
//!
//! Notices are the parser's system messages (no sender, see [`super::parser`]); their phrases
//! are matched in English and in the other languages whose group notices WhatsApp writes in the
//! exports this parser reads: German, Spanish, French and Portuguese. The exporting account
//! ("You", "Du", ...) names no contact.
//!
//! Contact ids are derived from what the export shows, so they are stable across re-exports:
//! `wa:phone:+<digits>` for a sender shown as a phone number (its `phone` is then the number as
//! written), else `wa:name:` and the first 16 hex digits of the SHA-256 of the name.
use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::parser::{clean_sender, mark_free_pieces};
use crate::model::{MemberEvent, Membership, MessageKind, NewContact, NewMessage, People};

/// A notice whose subject (the text before the phrase) joined or left.
const SUBJECT_PHRASES: &[(&str, Membership)] = &[
    (" joined using this group's invite link", Membership::Joined),
    (
        " joined using this community's invite link",
        Membership::Joined,
    ),
    (" joined", Membership::Joined),
    (" were added", Membership::Joined),
    (" was added", Membership::Joined),
    (" was removed", Membership::Left),
    (" left the group", Membership::Left),
    (" left", Membership::Left),
    (
        " ist über den einladungslink dieser gruppe beigetreten",
        Membership::Joined,
    ),
    (" ist beigetreten", Membership::Joined),
    (" hat die gruppe verlassen", Membership::Left),
    (
        " se unió usando el enlace de invitación de este grupo",
        Membership::Joined,
    ),
    (" se unió", Membership::Joined),
    (" salió del grupo", Membership::Left),
    (" salió", Membership::Left),
    (
        " a rejoint ce groupe via le lien d'invitation",
        Membership::Joined,
    ),
    (" a rejoint ce groupe", Membership::Joined),
    (" est parti(e)", Membership::Left),
    (" est parti", Membership::Left),
    (" est partie", Membership::Left),
    (" a quitté le groupe", Membership::Left),
    (
        " entrou usando o link de convite deste grupo",
        Membership::Joined,
    ),
    (" entrou", Membership::Joined),
    (" saiu", Membership::Left),
];

/// A notice where an actor (before `infix`) added or removed the people between `infix` and
/// `suffix`.
const OBJECT_PHRASES: &[(&str, &str, Membership)] = &[
    (" added ", "", Membership::Joined),
    (" removed ", "", Membership::Left),
    (" hat ", " hinzugefügt", Membership::Joined),
    (" hast ", " hinzugefügt", Membership::Joined),
    (" hat ", " entfernt", Membership::Left),
    (" hast ", " entfernt", Membership::Left),
    (" añadió a ", "", Membership::Joined),
    (" eliminó a ", "", Membership::Left),
    (" a ajouté ", "", Membership::Joined),
    (" avez ajouté ", "", Membership::Joined),
    (" a retiré ", "", Membership::Left),
    (" avez retiré ", "", Membership::Left),
    (" adicionou ", "", Membership::Joined),
    (" removeu ", "", Membership::Left),
];

/// Words that stand for the exporting account, not a contact (compared lower-cased).
const YOU: &[&str] = &["you", "du", "dich", "tú", "tu", "te", "vous", "você"];

/// Words that join the last two names of a list (", " separates the others).
const AND: &[&str] = &[" and ", " und ", " y ", " et ", " e "];

/// Objects that are not people ("X removed this group's icon").
const NOT_PEOPLE: &[&str] = &["group", "gruppe", "grupo", "groupe", "community"];

/// The contacts and membership events of an export's messages, in file order.
///
/// A sender writes many messages, so the same name comes back again and again; what storing
/// it again would change is nothing (see [`crate::storage`]'s people merge: a contact merged
/// twice in a row with the same fields, or a participant seen again, takes no seq). So each
/// name's contact is derived once, a contact is listed again only when its fields differ from
/// the last listing of its id (two spellings of one phone number), and a `Seen` event only
/// for a contact with no earlier event in the chat. Joins and leaves are all kept. What is
/// stored is the same as with one contact and one event per message, at one entry per sender
/// instead of one per message (a 134,000-message chat held about 45 MB of them).
pub(super) fn people(messages: &[NewMessage]) -> People {
    let mut people = People::default();
    // Per name as written: its contact, or `None` for no contact (empty, the account itself).
    let mut contacts: HashMap<String, Option<NewContact>> = HashMap::new();
    // Per contact id: the name of its last listing.
    let mut listed: HashMap<String, String> = HashMap::new();
    let mut add = |name: &str, membership: Membership, at_ms: i64| {
        if !contacts.contains_key(name) {
            contacts.insert(name.to_owned(), contact_named(name));
        }
        let Some(contact) = &contacts[name] else {
            return;
        };
        let id = &contact.contact_id;
        let earlier = listed.get(id);
        if membership != Membership::Seen || earlier.is_none() {
            people.members.push(MemberEvent {
                contact_id: id.clone(),
                membership,
                at_ms,
            });
        }
        if earlier != Some(&contact.display_name) {
            listed.insert(id.clone(), contact.display_name.clone());
            people.contacts.push(contact.clone());
        }
    };
    for message in messages {
        if !message.sender.is_empty() {
            add(&message.sender, Membership::Seen, message.sent_at_ms);
            continue;
        }
        if message.kind != MessageKind::System {
            continue;
        }
        let text: String = mark_free_pieces(&message.text).collect();
        let Some(notice) = notice(&text) else {
            continue;
        };
        if let Some(actor) = notice.actor {
            add(actor, Membership::Seen, message.sent_at_ms);
        }
        for name in notice.subjects {
            add(name, notice.membership, message.sent_at_ms);
        }
    }
    people
}

/// The contact a name as written stands for; `None` when it names none (empty once cleaned,
/// or the exporting account).
fn contact_named(name: &str) -> Option<NewContact> {
    let name = clean_sender(name);
    if name.is_empty() || YOU.iter().any(|you| name.to_lowercase() == *you) {
        return None;
    }
    Some(contact(&name))
}

/// What a membership notice says.
struct Notice<'a> {
    /// Who added or removed (a participant).
    actor: Option<&'a str>,
    /// Who joined or left.
    subjects: Vec<&'a str>,
    membership: Membership,
}

/// Reads a membership notice (without its format characters); `None` for any other text.
/// Phrases match case-insensitively, without the final period.
fn notice(text: &str) -> Option<Notice<'_>> {
    let text = text.trim();
    if text.contains('\n') {
        return None;
    }
    let text = text.trim_end_matches('.');
    // Offsets found in the lower-cased text index the text as written only when every
    // character lower-cases to one character of the same UTF-8 length (the total length alone
    // can match while single characters shrink and grow: `Ω` U+2126 and `İ`).
    let same_offsets = text.chars().all(|c| {
        let mut lower = c.to_lowercase();
        matches!((lower.next(), lower.next()), (Some(l), None) if l.len_utf8() == c.len_utf8())
    });
    if !same_offsets {
        return None;
    }
    let lower = text.to_lowercase();
    for (infix, suffix, membership) in OBJECT_PHRASES {
        let Some(body) = lower.strip_suffix(suffix) else {
            continue;
        };
        let Some(at) = body.find(infix) else {
            continue;
        };
        let actor = &text[..at];
        let objects = &text[at + infix.len()..body.len()];
        let objects_lower = &lower[at + infix.len()..body.len()];
        if actor.is_empty()
            || objects.is_empty()
            || NOT_PEOPLE.iter().any(|word| objects_lower.contains(word))
        {
            continue;
        }
        return Some(Notice {
            actor: Some(actor),
            subjects: names(objects),
            membership: *membership,
        });
    }
    for (suffix, membership) in SUBJECT_PHRASES {
        if let Some(body) = lower.strip_suffix(suffix)
            && !body.is_empty()
        {
            return Some(Notice {
                actor: None,
                subjects: names(&text[..body.len()]),
                membership: *membership,
            });
        }
    }
    None
}

/// The names of a list: `A, B and C`.
fn names(list: &str) -> Vec<&str> {
    let mut names: Vec<&str> = list.split(", ").collect();
    if let Some(last) = names.pop() {
        match AND.iter().find_map(|and| last.split_once(and)) {
            Some((one, two)) => names.extend([one, two]),
            None => names.push(last),
        }
    }
    names
        .into_iter()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect()
}

/// The contact a name (as the export shows it) stands for.
pub(super) fn contact(name: &str) -> NewContact {
    match phone_digits(name) {
        Some(digits) => NewContact {
            contact_id: format!("wa:phone:+{digits}"),
            display_name: name.to_owned(),
            phone: Some(name.to_owned()),
            matrix_id: None,
        },
        None => {
            let digest = Sha256::digest(name.as_bytes());
            NewContact {
                contact_id: format!("wa:name:{}", hex::encode(&digest[..8])),
                display_name: name.to_owned(),
                phone: None,
                matrix_id: None,
            }
        }
    }
}

/// The digits of a name written as an international phone number (`+1 555-0100`,
/// `+44 (20) 7946 0958`): a `+`, then digits, spaces, dashes, dots and parentheses, with 6 to
/// 15 digits.
fn phone_digits(name: &str) -> Option<String> {
    let rest = name.strip_prefix('+')?;
    if !rest
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'))
    {
        return None;
    }
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    (6..=15).contains(&digits.len()).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Option<(Option<&str>, Vec<&str>, Membership)> {
        notice(text).map(|n| (n.actor, n.subjects, n.membership))
    }

    #[test]
    fn characters_that_change_length_when_lower_cased_do_not_panic() {
        // `Ω` (U+2126, 3 bytes) lower-cases to `ω` (2 bytes) and `İ` (2 bytes) to `i̇` (3):
        // the total length is unchanged, the offsets are not.
        assert_eq!(read("\u{2126} added Bob\u{130}"), None);
        assert_eq!(read("\u{130}\u{2126} left"), None);
        // Scripts whose lower case keeps the offsets are read.
        assert_eq!(
            read("Σοφία added Νίκος"),
            Some((Some("Σοφία"), vec!["Νίκος"], Membership::Joined))
        );
    }

    #[test]
    fn notices_in_each_language() {
        use Membership::{Joined, Left};
        let cases: &[(&str, Option<&str>, &[&str], Membership)] = &[
            ("Ann added Bob", Some("Ann"), &["Bob"], Joined),
            (
                "Ann added Bob, Cy and Dee",
                Some("Ann"),
                &["Bob", "Cy", "Dee"],
                Joined,
            ),
            ("You removed Mallory", Some("You"), &["Mallory"], Left),
            (
                "+1 555 0100 joined using this group's invite link",
                None,
                &["+1 555 0100"],
                Joined,
            ),
            ("Priya left", None, &["Priya"], Left),
            ("Tony Stark was added", None, &["Tony Stark"], Joined),
            (
                "Anna hat Bernd hinzugefügt",
                Some("Anna"),
                &["Bernd"],
                Joined,
            ),
            ("Anna hat Bernd entfernt", Some("Anna"), &["Bernd"], Left),
            ("Bernd hat die Gruppe verlassen", None, &["Bernd"], Left),
            (
                "Lucía añadió a Pedro y Ana",
                Some("Lucía"),
                &["Pedro", "Ana"],
                Joined,
            ),
            ("Pedro salió del grupo", None, &["Pedro"], Left),
            ("Marie a ajouté Luc", Some("Marie"), &["Luc"], Joined),
            ("Luc est parti", None, &["Luc"], Left),
            ("João adicionou Maria", Some("João"), &["Maria"], Joined),
            ("Maria saiu", None, &["Maria"], Left),
        ];
        for (text, actor, subjects, membership) in cases {
            assert_eq!(
                read(text),
                Some((*actor, subjects.to_vec(), *membership)),
                "{text}"
            );
        }
        for text in [
            "Ann removed this group's icon",
            "Ann changed the subject to \"Left\"",
            "Messages and calls are end-to-end encrypted.",
            "Ann created group \"Trip\"",
        ] {
            assert!(read(text).is_none(), "{text}");
        }
    }

    #[test]
    fn contact_ids_are_stable_and_phones_recognised() {
        let phone = contact("+1 555-0100");
        assert_eq!(phone.contact_id, "wa:phone:+15550100");
        assert_eq!(phone.phone.as_deref(), Some("+1 555-0100"));
        let name = contact("Ann");
        assert!(name.contact_id.starts_with("wa:name:"));
        assert_eq!(name.contact_id.len(), "wa:name:".len() + 16);
        assert_eq!(name, contact("Ann"));
        assert_ne!(name.contact_id, contact("Bob").contact_id);
        assert!(contact("+12").phone.is_none());
    }

    /// One entry per sender, not per message: a name's contact is listed again only when its
    /// fields differ from its id's last listing, and `Seen` only for a contact with no event
    /// before it; joins and leaves are kept.
    #[test]
    fn people_lists_each_sender_once_and_keeps_membership_events() {
        let message = |sender: &str, text: &str, at_ms: i64| NewMessage {
            sender: sender.into(),
            text: text.into(),
            kind: if sender.is_empty() {
                MessageKind::System
            } else {
                MessageKind::Text
            },
            sent_at_ms: at_ms,
            ..NewMessage::default()
        };
        let messages = [
            message("Ann", "hi", 1),
            message("Bob", "hello", 2),
            message("Ann", "again", 3),
            message("+1 555-0100", "one spelling", 4),
            message("+1 555 0100", "the same number, written otherwise", 5),
            message("+1 555 0100", "again", 6),
            message("", "Ann added Carol", 7),
            message("Carol", "thanks", 8),
            message("", "Carol left", 9),
            message("You", "the account itself", 10),
            message("Ann", "last", 11),
        ];
        let people = people(&messages);
        let names: Vec<&str> = people
            .contacts
            .iter()
            .map(|c| c.display_name.as_str())
            .collect();
        assert_eq!(
            names,
            ["Ann", "Bob", "+1 555-0100", "+1 555 0100", "Carol"],
            "each name once, the phone number once per spelling"
        );
        let id = |name: &str| contact(name).contact_id;
        let events: Vec<(String, Membership, i64)> = people
            .members
            .iter()
            .map(|e| (e.contact_id.clone(), e.membership, e.at_ms))
            .collect();
        assert_eq!(
            events,
            [
                (id("Ann"), Membership::Seen, 1),
                (id("Bob"), Membership::Seen, 2),
                (id("+1 555-0100"), Membership::Seen, 4),
                (id("Carol"), Membership::Joined, 7),
                (id("Carol"), Membership::Left, 9),
            ]
        );
    }
}
