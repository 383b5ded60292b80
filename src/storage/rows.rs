//! Row conversions: entity rows to domain types and back, and the bulk message INSERTs
//! (multi-row `VALUES` on SQLite, `UNNEST` arrays on PostgreSQL).
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::entities::{change, chat, message};
use super::{ROWS_PER_INSERT, storable};
use crate::model::MessageRef;
use crate::model::{Chat, Message, MessageKind, MessageStatus, NewMessage};

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
    }
}

/// SQLite's bulk INSERT of `messages`, the i-th row taking its seq from `rows`: the same columns
/// and values as [`new_message_row`], as
/// plain SQL text (`VALUES (?, …), …`, one row of 12 placeholders per message) and one value
/// per placeholder, without building a sea-query statement (an expression per value) first.
/// At most [`ROWS_PER_INSERT`] rows.
pub(super) fn messages_insert_sqlite(
    session_id: &str,
    rows: &[(&str, &NewMessage, u64)],
    now: i64,
) -> sea_orm::Statement {
    use sea_orm::sea_query::Value;
    debug_assert!(rows.len() <= ROWS_PER_INSERT);
    const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let mut sql = String::with_capacity(200 + rows.len() * (ROW.len() + 2));
    sql.push_str(
        "INSERT INTO messages (session_id, chat_id, provider_message_id, client_message_id, \
         sender, text, kind, status, from_me, sent_at, seq, updated_at) VALUES ",
    );
    let mut values: Vec<Value> = Vec::with_capacity(rows.len() * 12);
    for (i, (chat_id, new, seq)) in rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(ROW);
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
    }
    sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Sqlite, sql, values)
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
        // Filled in per page by `attachments::fill`.
        attachments: Vec::new(),
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
