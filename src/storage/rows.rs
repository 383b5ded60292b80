//! Row conversions: entity rows to domain types and back, and the bulk message INSERTs
//! (multi-row `VALUES` on SQLite, `UNNEST` arrays on PostgreSQL).
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::entities::{change, chat, message};
use super::{ROWS_PER_INSERT, storable};
use crate::model::MessageRef;
use crate::model::{
    Chat, Deletion, Forwarded, Message, MessageKind, MessageStatus, NewMessage, ReplyTo,
};

/// One row of the change log.
pub(super) fn change_row(
    session_id: &str,
    seq: u64,
    kind: i16,
    chat_id: String,
    message_id: Option<i64>,
    status: Option<i16>,
    at: i64,
) -> change::ActiveModel {
    change::ActiveModel {
        session_id: Set(session_id.to_owned()),
        seq: Set(seq as i64),
        kind: Set(kind),
        chat_id: Set(chat_id),
        message_id: Set(message_id),
        status: Set(status),
        at: Set(at),
        contact_id: Set(None),
        what: Set(None),
        error_code: Set(None),
        error_title: Set(None),
    }
}

pub(super) fn message_query(
    session_id: &str,
    reference: &MessageRef,
) -> sea_orm::Select<message::Entity> {
    let query = message::Entity::find().filter(message::Column::SessionId.eq(session_id));
    match reference {
        MessageRef::Id(id) => query.filter(message::Column::Id.eq(*id)),
        MessageRef::Provider {
            chat_id,
            provider_message_id,
        } => query
            .filter(message::Column::ChatId.eq(chat_id.as_str()))
            .filter(message::Column::ProviderMessageId.eq(provider_message_id.as_str())),
    }
}

pub(super) fn new_message_row(
    session_id: &str,
    chat_id: &str,
    new: &NewMessage,
    seq: u64,
    now: i64,
) -> message::ActiveModel {
    message::ActiveModel {
        id: NotSet,
        session_id: Set(session_id.to_owned()),
        chat_id: Set(chat_id.to_owned()),
        provider_message_id: Set(new.provider_message_id.clone()),
        client_message_id: Set(new.client_message_id.clone()),
        sender: Set(new.sender.clone()),
        text: Set(new.text.clone()),
        kind: Set(new.kind.as_i16()),
        status: Set(new.status.as_i16()),
        from_me: Set(new.from_me),
        sent_at: Set(new.sent_at_ms),
        seq: Set(seq as i64),
        updated_at: Set(now),
        reply_to: Set(new.reply_to.as_deref().map(|id| storable(id).into_owned())),
        forwarded: Set(stored_forwarded(new.forwarded)),
        forwarded_from: Set(new
            .forwarded_from
            .as_deref()
            .map(|name| storable(name).into_owned())),
        edited: Set(new.edited.then_some(true)),
        edited_at: Set(new.edited_at_ms),
        deleted_by: Set(None),
        deleted_at: Set(None),
    }
}

/// SQLite's bulk INSERT of `messages`, the i-th row taking its seq from `rows`: the same columns
/// and values as [`new_message_row`], as plain SQL text (`VALUES (?, …), …`, one row of
/// placeholders per message) and one value per placeholder, without building a sea-query
/// statement (an expression per value) first. The lifecycle columns (reply, forward, edit) are
/// written only when a row of the chunk has any ([`NewMessage::has_relations`]): an export
/// without them binds 12 values per row, not 17. At most [`ROWS_PER_INSERT`] rows.
pub(super) fn messages_insert_sqlite(
    session_id: &str,
    rows: &[(&str, &NewMessage, u64)],
    now: i64,
) -> sea_orm::Statement {
    use sea_orm::sea_query::Value;
    debug_assert!(rows.len() <= ROWS_PER_INSERT);
    let relations = rows.iter().any(|(_, new, _)| new.has_relations());
    let row = if relations {
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    } else {
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    };
    let mut sql = String::with_capacity(300 + rows.len() * (row.len() + 2));
    sql.push_str(
        "INSERT INTO messages (session_id, chat_id, provider_message_id, client_message_id, \
         sender, text, kind, status, from_me, sent_at, seq, updated_at",
    );
    sql.push_str(if relations {
        ", reply_to, forwarded, forwarded_from, edited, edited_at) VALUES "
    } else {
        ") VALUES "
    });
    let mut values: Vec<Value> = Vec::with_capacity(rows.len() * if relations { 17 } else { 12 });
    for (i, (chat_id, new, seq)) in rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
        values.extend([
            Value::from(session_id),
            Value::from(*chat_id),
            Value::from(new.provider_message_id.as_str()),
            Value::from(new.client_message_id.clone()),
            Value::from(storable(&new.sender).into_owned()),
            Value::from(storable(&new.text).into_owned()),
            Value::from(new.kind.as_i16()),
            Value::from(new.status.as_i16()),
            Value::from(new.from_me),
            Value::from(new.sent_at_ms),
            Value::from(*seq as i64),
            Value::from(now),
        ]);
        if relations {
            values.extend([
                Value::from(new.reply_to.as_deref().map(|id| storable(id).into_owned())),
                Value::from(stored_forwarded(new.forwarded)),
                Value::from(
                    new.forwarded_from
                        .as_deref()
                        .map(|name| storable(name).into_owned()),
                ),
                Value::from(new.edited.then_some(true)),
                Value::from(new.edited_at_ms),
            ]);
        }
    }
    sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Sqlite, sql, values)
}

/// `messages.forwarded` for a message: NULL when it was not forwarded.
pub(super) fn stored_forwarded(forwarded: Forwarded) -> Option<i16> {
    (forwarded != Forwarded::No).then_some(forwarded as i16)
}

pub(super) fn message_from_row(row: message::Model) -> Message {
    Message {
        id: row.id,
        session_id: row.session_id,
        chat_id: row.chat_id,
        provider_message_id: row.provider_message_id,
        client_message_id: row.client_message_id,
        sender: row.sender,
        text: row.text,
        kind: MessageKind::from_i16(row.kind),
        status: MessageStatus::from_i16(row.status),
        from_me: row.from_me,
        sent_at_ms: row.sent_at,
        seq: row.seq as u64,
        reply_to: row.reply_to.map(|provider_message_id| ReplyTo {
            provider_message_id,
            message_id: None,
        }),
        forwarded: row.forwarded.map_or(Forwarded::No, Forwarded::from_i16),
        forwarded_from: row.forwarded_from,
        edited: row.edited.unwrap_or(false),
        edited_at_ms: row.edited_at,
        deletion: row.deleted_at.map(|deleted_at_ms| Deletion {
            deleted_by: row.deleted_by.unwrap_or_default(),
            deleted_at_ms,
        }),
        // Filled in per page by `details::fill`, with the reply's server id.
        attachments: Vec::new(),
        earlier_texts: Vec::new(),
        reactions: Vec::new(),
        receipts: Vec::new(),
    }
}

pub(super) fn chat_from_row(row: chat::Model) -> Chat {
    Chat {
        chat_id: row.chat_id,
        name: row.name,
        seq: row.seq as u64,
    }
}

/// Rows per `UNNEST` INSERT on PostgreSQL: the rows travel as 10 array parameters, so there is
/// no bound-variable limit; this only bounds one statement's memory.
pub(super) const ROWS_PER_UNNEST: usize = 10_000;

/// PostgreSQL's bulk INSERT of `messages`: the same columns and values as
/// [`messages_insert_sqlite`],
/// sent as one array per column and expanded by `UNNEST` on the server, so a batch costs one
/// short statement and a handful of parameters instead of 12 per row.
pub(super) fn messages_unnest(
    session_id: &str,
    rows: &[(&str, &NewMessage, u64)],
    now: i64,
) -> sea_orm::Statement {
    use sea_orm::sea_query::{ArrayType, Value};
    let strings = |values: Vec<Value>| Value::Array(ArrayType::String, Some(Box::new(values)));
    let column = |f: &dyn Fn(&(&str, &NewMessage, u64)) -> Value| -> Vec<Value> {
        rows.iter().map(f).collect()
    };
    let values: Vec<Value> = vec![
        session_id.into(),
        strings(column(&|(chat_id, _, _)| (*chat_id).into())),
        strings(column(&|(_, m, _)| m.provider_message_id.as_str().into())),
        // Arrays of text cannot carry NULL here: a flag array says which keys are absent.
        strings(column(&|(_, m, _)| {
            m.client_message_id.as_deref().unwrap_or_default().into()
        })),
        strings(column(&|(_, m, _)| storable(&m.sender).as_ref().into())),
        strings(column(&|(_, m, _)| storable(&m.text).as_ref().into())),
        rows.iter()
            .map(|(_, m, _)| m.kind.as_i16())
            .collect::<Vec<i16>>()
            .into(),
        rows.iter()
            .map(|(_, m, _)| m.status.as_i16())
            .collect::<Vec<i16>>()
            .into(),
        rows.iter()
            .map(|(_, m, _)| m.from_me)
            .collect::<Vec<bool>>()
            .into(),
        rows.iter()
            .map(|(_, m, _)| m.sent_at_ms)
            .collect::<Vec<i64>>()
            .into(),
        rows.iter()
            .map(|(_, _, seq)| *seq as i64)
            .collect::<Vec<i64>>()
            .into(),
        now.into(),
        rows.iter()
            .map(|(_, m, _)| m.client_message_id.is_some())
            .collect::<Vec<bool>>()
            .into(),
    ];
    if rows.iter().any(|(_, m, _)| m.has_relations()) {
        return messages_unnest_with_relations(rows, values);
    }
    sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "INSERT INTO messages (session_id, chat_id, provider_message_id, client_message_id, \
         sender, text, kind, status, from_me, sent_at, seq, updated_at) \
         SELECT $1, u.c, u.p, CASE WHEN u.h THEN u.k END, u.s, u.t, u.kind, u.st, u.f, u.sa, \
         u.seq, $12 FROM UNNEST($2::text[], $3::text[], $4::text[], $13::bool[], $5::text[], \
         $6::text[], $7::int2[], $8::int2[], $9::bool[], $10::int8[], $11::int8[]) \
         AS u(c, p, k, h, s, t, kind, st, f, sa, seq)",
        values,
    )
}

/// [`messages_unnest`] for rows with lifecycle columns: the same 13 parameters and five more
/// arrays (reply_to and forwarded_from with presence flags, as for `client_message_id`).
fn messages_unnest_with_relations(
    rows: &[(&str, &NewMessage, u64)],
    mut values: Vec<sea_orm::sea_query::Value>,
) -> sea_orm::Statement {
    use sea_orm::sea_query::{ArrayType, Value};
    let strings = |values: Vec<Value>| Value::Array(ArrayType::String, Some(Box::new(values)));
    let optional = |get: &dyn Fn(&NewMessage) -> Option<&str>| -> [Value; 2] {
        [
            strings(
                rows.iter()
                    .map(|(_, m, _)| storable(get(m).unwrap_or_default()).as_ref().into())
                    .collect(),
            ),
            rows.iter()
                .map(|(_, m, _)| get(m).is_some())
                .collect::<Vec<bool>>()
                .into(),
        ]
    };
    values.extend(optional(&|m| m.reply_to.as_deref()));
    values.push(
        rows.iter()
            .map(|(_, m, _)| m.forwarded as i16)
            .collect::<Vec<i16>>()
            .into(),
    );
    values.extend(optional(&|m| m.forwarded_from.as_deref()));
    values.push(
        rows.iter()
            .map(|(_, m, _)| m.edited)
            .collect::<Vec<bool>>()
            .into(),
    );
    // An absent edit time travels as i64::MIN with the flag below false.
    values.push(
        rows.iter()
            .map(|(_, m, _)| m.edited_at_ms.unwrap_or(i64::MIN))
            .collect::<Vec<i64>>()
            .into(),
    );
    values.push(
        rows.iter()
            .map(|(_, m, _)| m.edited_at_ms.is_some())
            .collect::<Vec<bool>>()
            .into(),
    );
    sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "INSERT INTO messages (session_id, chat_id, provider_message_id, client_message_id, \
         sender, text, kind, status, from_me, sent_at, seq, updated_at, reply_to, forwarded, \
         forwarded_from, edited, edited_at) \
         SELECT $1, u.c, u.p, CASE WHEN u.h THEN u.k END, u.s, u.t, u.kind, u.st, u.f, u.sa, \
         u.seq, $12, CASE WHEN u.rh THEN u.r END, NULLIF(u.fw, 0), \
         CASE WHEN u.ffh THEN u.ff END, NULLIF(u.e, false), \
         CASE WHEN u.eah THEN u.ea END \
         FROM UNNEST($2::text[], $3::text[], $4::text[], $13::bool[], $5::text[], \
         $6::text[], $7::int2[], $8::int2[], $9::bool[], $10::int8[], $11::int8[], \
         $14::text[], $15::bool[], $16::int2[], $17::text[], $18::bool[], $19::bool[], \
         $20::int8[], $21::bool[]) \
         AS u(c, p, k, h, s, t, kind, st, f, sa, seq, r, rh, fw, ff, ffh, e, ea, eah)",
        values,
    )
}
