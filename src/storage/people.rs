//! Contacts and chat participants: stored by imports, in the import's write transaction, and
//! listed by seq cursor.
//!
//! Each contact and each (chat, contact) participant is one row whose `seq` is its last change.
//! A change takes one seq and one `changes` row (kind [`change::KIND_CONTACT`] or
//! [`change::KIND_PARTICIPANT`]), so the change feed replays it like any change. An import
//! merges what the source says into what is stored (a contact's missing fields keep their
//! stored values; a participant keeps the latest join and the latest leave), so storing the
//! same export again changes nothing and takes no seq.
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{change, contact, participant};
use super::{Store, WriteTxn, statement_chunks, storable};
use crate::error::Result;
use crate::model::{Contact, MemberEvent, Membership, NewContact, Participant, People, now_ms};

/// Rows per key-list query (`IN (…)`).
const KEYS_PER_QUERY: usize = 512;

impl Store {
    /// Contacts with `seq > after_seq`, in seq order, at most `limit`.
    pub async fn list_contacts(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<Contact>> {
        Ok(contact::Entity::find()
            .filter(contact::Column::SessionId.eq(session_id))
            .filter(contact::Column::Seq.gt(seq_value(after_seq)))
            .order_by_asc(contact::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(contact_from_row)
            .collect())
    }

    /// Participants with `seq > after_seq`, optionally of one chat, in seq order, at most
    /// `limit`.
    pub async fn list_participants(
        &self,
        session_id: &str,
        chat_id: Option<&str>,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<Participant>> {
        let mut query = participant::Entity::find()
            .filter(participant::Column::SessionId.eq(session_id))
            .filter(participant::Column::Seq.gt(seq_value(after_seq)));
        if let Some(chat_id) = chat_id {
            query = query.filter(participant::Column::ChatId.eq(chat_id));
        }
        Ok(query
            .order_by_asc(participant::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(participant_from_row)
            .collect())
    }

    /// The stored contacts with these ids, by id (for the change feed).
    pub(super) async fn contacts_by_id(
        &self,
        session_id: &str,
        ids: &[String],
    ) -> Result<HashMap<String, Contact>> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(KEYS_PER_QUERY) {
            let rows = contact::Entity::find()
                .filter(contact::Column::SessionId.eq(session_id))
                .filter(contact::Column::ContactId.is_in(chunk.iter().cloned()))
                .all(&self.db)
                .await?;
            found.extend(
                rows.into_iter()
                    .map(|row| (row.contact_id.clone(), contact_from_row(row))),
            );
        }
        Ok(found)
    }

    /// The stored participants with these (chat id, contact id) keys (for the change feed).
    pub(super) async fn participants_by_key(
        &self,
        session_id: &str,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), Participant>> {
        let wanted: HashSet<&(String, String)> = keys.iter().collect();
        let mut found = HashMap::new();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let rows = participant::Entity::find()
                .filter(participant::Column::SessionId.eq(session_id))
                .filter(participant::Column::ChatId.is_in(chunk.iter().map(|k| k.0.clone())))
                .filter(participant::Column::ContactId.is_in(chunk.iter().map(|k| k.1.clone())))
                .all(&self.db)
                .await?;
            for row in rows {
                let key = (row.chat_id.clone(), row.contact_id.clone());
                if wanted.contains(&key) {
                    found.insert(key, participant_from_row(row));
                }
            }
        }
        Ok(found)
    }
}

/// A contact's stored fields, while an import merges into them.
#[derive(Clone, PartialEq, Eq)]
struct ContactFields {
    display_name: String,
    phone: Option<String>,
    matrix_id: Option<String>,
}

/// A participant's stored times, while an import merges into them.
#[derive(Clone, Copy, PartialEq, Eq)]
struct MemberTimes {
    joined_at: Option<i64>,
    left_at: Option<i64>,
}

impl WriteTxn {
    /// Stores the people of a batch's chats, given as `(chat_id, people)`: each contact and
    /// participant that is new or changed takes one seq (in the order first met) and one
    /// change row. Unchanged ones take nothing.
    pub(super) async fn store_people(&mut self, chats: &[(&str, &People)]) -> Result<()> {
        if chats.iter().all(|(_, people)| people.is_empty()) {
            return Ok(());
        }
        // PostgreSQL text cannot hold NUL: every text a source gave is made storable first.
        let cleaned: Vec<(&str, Cow<'_, People>)> = chats
            .iter()
            .map(|(chat_id, people)| (*chat_id, storable_people(people)))
            .collect();
        let chats: Vec<(&str, &People)> = cleaned
            .iter()
            .map(|(chat_id, people)| (*chat_id, people.as_ref()))
            .collect();
        let session_id = self.session_id().to_owned();
        let now = now_ms();

        // Contacts: stored fields, merged with what the source says, in order.
        let mut ids: Vec<&str> = chats
            .iter()
            .flat_map(|(_, people)| people.contacts.iter().map(|c| c.contact_id.as_str()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut stored: HashMap<String, ContactFields> = HashMap::new();
        for chunk in statement_chunks(&ids, KEYS_PER_QUERY) {
            let rows = contact::Entity::find()
                .filter(contact::Column::SessionId.eq(session_id.as_str()))
                .filter(contact::Column::ContactId.is_in(chunk.iter().copied()))
                .all(self.conn())
                .await?;
            stored.extend(rows.into_iter().map(|row| {
                (
                    row.contact_id,
                    ContactFields {
                        display_name: row.display_name,
                        phone: row.phone,
                        matrix_id: row.matrix_id,
                    },
                )
            }));
        }
        let mut merged: HashMap<&str, ContactFields> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        for new in chats.iter().flat_map(|(_, people)| &people.contacts) {
            let id = new.contact_id.as_str();
            let current = match merged.get(id) {
                Some(fields) => Some(fields.clone()),
                None => stored.get(id).cloned(),
            };
            let next = merge_contact(current.as_ref(), new);
            if current.as_ref() != Some(&next) {
                if !merged.contains_key(id) {
                    order.push(id);
                }
                merged.insert(id, next);
            }
        }

        // Participants: stored times, with each event folded in.
        let mut chat_ids: Vec<&str> = chats
            .iter()
            .filter(|(_, people)| !people.members.is_empty())
            .map(|(chat_id, _)| *chat_id)
            .collect();
        chat_ids.sort_unstable();
        chat_ids.dedup();
        let mut stored_members: HashMap<(String, String), MemberTimes> = HashMap::new();
        for chunk in statement_chunks(&chat_ids, KEYS_PER_QUERY) {
            let rows = participant::Entity::find()
                .filter(participant::Column::SessionId.eq(session_id.as_str()))
                .filter(participant::Column::ChatId.is_in(chunk.iter().copied()))
                .all(self.conn())
                .await?;
            stored_members.extend(rows.into_iter().map(|row| {
                (
                    (row.chat_id, row.contact_id),
                    MemberTimes {
                        joined_at: row.joined_at,
                        left_at: row.left_at,
                    },
                )
            }));
        }
        let mut members: HashMap<(&str, &str), MemberTimes> = HashMap::new();
        let mut member_order: Vec<(&str, &str)> = Vec::new();
        for (chat_id, people) in &chats {
            for event in &people.members {
                let key = (*chat_id, event.contact_id.as_str());
                let current = match members.get(&key) {
                    Some(times) => Some(*times),
                    None => stored_members
                        .get(&(key.0.to_owned(), key.1.to_owned()))
                        .copied(),
                };
                let mut next = current.unwrap_or(MemberTimes {
                    joined_at: None,
                    left_at: None,
                });
                match event.membership {
                    Membership::Seen => {}
                    Membership::Joined => next.joined_at = next.joined_at.max(Some(event.at_ms)),
                    Membership::Left => next.left_at = next.left_at.max(Some(event.at_ms)),
                }
                if current != Some(next) {
                    if !members.contains_key(&key) {
                        member_order.push(key);
                    }
                    members.insert(key, next);
                }
            }
        }

        // Seqs, rows and change rows.
        let mut change_rows = Vec::new();
        let mut new_contacts = Vec::new();
        for id in order {
            let fields = &merged[id];
            let seq = self.next_seq();
            change_rows.push(people_change(
                &session_id,
                seq,
                change::KIND_CONTACT,
                "",
                id,
                now,
            ));
            if stored.contains_key(id) {
                contact::Entity::update_many()
                    .col_expr(
                        contact::Column::DisplayName,
                        Expr::value(fields.display_name.clone()),
                    )
                    .col_expr(contact::Column::Phone, Expr::value(fields.phone.clone()))
                    .col_expr(
                        contact::Column::MatrixId,
                        Expr::value(fields.matrix_id.clone()),
                    )
                    .col_expr(contact::Column::Seq, Expr::value(seq as i64))
                    .col_expr(contact::Column::UpdatedAt, Expr::value(now))
                    .filter(contact::Column::SessionId.eq(session_id.as_str()))
                    .filter(contact::Column::ContactId.eq(id))
                    .exec(self.conn())
                    .await?;
            } else {
                new_contacts.push(contact::ActiveModel {
                    session_id: Set(session_id.clone()),
                    contact_id: Set(id.to_owned()),
                    display_name: Set(fields.display_name.clone()),
                    phone: Set(fields.phone.clone()),
                    matrix_id: Set(fields.matrix_id.clone()),
                    seq: Set(seq as i64),
                    updated_at: Set(now),
                });
            }
        }
        let mut new_members = Vec::new();
        for key in member_order {
            let times = members[&key];
            let seq = self.next_seq();
            change_rows.push(people_change(
                &session_id,
                seq,
                change::KIND_PARTICIPANT,
                key.0,
                key.1,
                now,
            ));
            if stored_members.contains_key(&(key.0.to_owned(), key.1.to_owned())) {
                participant::Entity::update_many()
                    .col_expr(participant::Column::JoinedAt, Expr::value(times.joined_at))
                    .col_expr(participant::Column::LeftAt, Expr::value(times.left_at))
                    .col_expr(participant::Column::Seq, Expr::value(seq as i64))
                    .col_expr(participant::Column::UpdatedAt, Expr::value(now))
                    .filter(participant::Column::SessionId.eq(session_id.as_str()))
                    .filter(participant::Column::ChatId.eq(key.0))
                    .filter(participant::Column::ContactId.eq(key.1))
                    .exec(self.conn())
                    .await?;
            } else {
                new_members.push(participant::ActiveModel {
                    session_id: Set(session_id.clone()),
                    chat_id: Set(key.0.to_owned()),
                    contact_id: Set(key.1.to_owned()),
                    joined_at: Set(times.joined_at),
                    left_at: Set(times.left_at),
                    seq: Set(seq as i64),
                    updated_at: Set(now),
                });
            }
        }
        self.insert_rows(&new_contacts).await?;
        self.insert_rows(&new_members).await?;
        self.insert_rows(&change_rows).await?;
        Ok(())
    }
}

/// A contact's fields after `new`: a non-empty name replaces the stored one (a new contact
/// without a name is named by its id); a phone or Matrix id the source does not give keeps
/// its stored value.
/// `people` with every NUL in its texts replaced as [`storable`] does; borrowed when there is
/// none (the usual case).
fn storable_people(people: &People) -> Cow<'_, People> {
    let has_nul = |text: &str| text.contains('\0');
    let dirty = people.contacts.iter().any(|contact| {
        has_nul(&contact.contact_id)
            || has_nul(&contact.display_name)
            || contact.phone.as_deref().is_some_and(has_nul)
            || contact.matrix_id.as_deref().is_some_and(has_nul)
    }) || people
        .members
        .iter()
        .any(|member| has_nul(&member.contact_id));
    if !dirty {
        return Cow::Borrowed(people);
    }
    let fix = |text: &str| storable(text).into_owned();
    Cow::Owned(People {
        contacts: people
            .contacts
            .iter()
            .map(|contact| NewContact {
                contact_id: fix(&contact.contact_id),
                display_name: fix(&contact.display_name),
                phone: contact.phone.as_deref().map(fix),
                matrix_id: contact.matrix_id.as_deref().map(fix),
            })
            .collect(),
        members: people
            .members
            .iter()
            .map(|member| MemberEvent {
                contact_id: fix(&member.contact_id),
                ..member.clone()
            })
            .collect(),
    })
}

fn merge_contact(current: Option<&ContactFields>, new: &NewContact) -> ContactFields {
    let display_name = match current {
        Some(current) if new.display_name.is_empty() => current.display_name.clone(),
        None if new.display_name.is_empty() => new.contact_id.clone(),
        _ => new.display_name.clone(),
    };
    ContactFields {
        display_name,
        phone: new
            .phone
            .clone()
            .or_else(|| current.and_then(|c| c.phone.clone())),
        matrix_id: new
            .matrix_id
            .clone()
            .or_else(|| current.and_then(|c| c.matrix_id.clone())),
    }
}

fn people_change(
    session_id: &str,
    seq: u64,
    kind: i16,
    chat_id: &str,
    contact_id: &str,
    at: i64,
) -> change::ActiveModel {
    change::ActiveModel {
        what: Set(None),
        session_id: Set(session_id.to_owned()),
        seq: Set(seq as i64),
        kind: Set(kind),
        chat_id: Set(chat_id.to_owned()),
        message_id: Set(None),
        status: Set(None),
        at: Set(at),
        contact_id: Set(Some(contact_id.to_owned())),
        error_code: Set(None),
        error_title: Set(None),
    }
}

fn seq_value(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn contact_from_row(row: contact::Model) -> Contact {
    Contact {
        contact_id: row.contact_id,
        display_name: row.display_name,
        phone: row.phone,
        matrix_id: row.matrix_id,
        seq: row.seq as u64,
    }
}

fn participant_from_row(row: participant::Model) -> Participant {
    Participant {
        chat_id: row.chat_id,
        contact_id: row.contact_id,
        joined_at_ms: row.joined_at,
        left_at_ms: row.left_at,
        seq: row.seq as u64,
    }
}
