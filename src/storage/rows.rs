//! Row conversions: entity rows to domain types and back, and the bulk message INSERTs
//! (multi-row `VALUES` on SQLite, `COPY` on PostgreSQL).
use std::fmt::Write as _;
use std::sync::Arc;

use sea_orm::sqlx::sqlite::SqliteArguments;
use sea_orm::sqlx::{Arguments as _, Encode, Sqlite, Type};

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::entities::{change, chat, message};
use super::{ROWS_PER_INSERT, storable};
use crate::error::{Error, Result};
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
/// placeholders per message) and sqlx's arguments, one per placeholder, built directly: no
/// sea-query statement (an expression per value) and no sea-query values (which sqlx would
/// convert again on the writer's critical path; this runs while the statement before it
/// executes, see `WriteTxn::insert_messages_sqlite`). The session and each chat id are bound as
/// one shared `Arc<str>` for all their rows. The lifecycle columns (reply, forward, edit) are
/// written only when a row of the chunk has any ([`NewMessage::has_relations`]): an export
/// without them binds 12 values per row, not 17. At most [`ROWS_PER_INSERT`] rows.
pub(super) fn messages_insert_sqlite(
    session_id: &str,
    rows: &[(&str, &NewMessage, u64)],
    now: i64,
) -> Result<(String, SqliteArguments)> {
    debug_assert!(rows.len() <= ROWS_PER_INSERT);
    let relations = rows.iter().any(|(_, new, _)| new.has_relations());
    let (row, columns) = if relations {
        ("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", 17)
    } else {
        ("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", 12)
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
    let mut arguments = SqliteArguments::default();
    arguments.reserve(rows.len() * columns, 0);
    let session: Arc<str> = Arc::from(session_id);
    let mut chat: Arc<str> = Arc::from("");
    for (i, (chat_id, new, seq)) in rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
        if *chat != **chat_id {
            chat = Arc::from(*chat_id);
        }
        let a = &mut arguments;
        bind(a, session.clone())?;
        bind(a, chat.clone())?;
        bind(a, new.provider_message_id.as_str())?;
        bind(a, new.client_message_id.as_deref())?;
        bind(a, storable(&new.sender))?;
        bind(a, storable(&new.text))?;
        bind(a, new.kind.as_i16())?;
        bind(a, new.status.as_i16())?;
        bind(a, new.from_me)?;
        bind(a, new.sent_at_ms)?;
        bind(a, *seq as i64)?;
        bind(a, now)?;
        if relations {
            bind(a, new.reply_to.as_deref().map(storable))?;
            bind(a, stored_forwarded(new.forwarded))?;
            bind(a, new.forwarded_from.as_deref().map(storable))?;
            bind(a, new.edited.then_some(true))?;
            bind(a, new.edited_at_ms)?;
        }
    }
    Ok((sql, arguments))
}

/// Adds one value to a statement's arguments. `Internal` when sqlx cannot encode it (its
/// encoders for text, integers and booleans only push the value).
fn bind<'q, T: Encode<'q, Sqlite> + Type<Sqlite>>(
    arguments: &mut SqliteArguments,
    value: T,
) -> Result<()> {
    arguments
        .add(value)
        .map_err(|error| Error::Internal(format!("binding a message's value: {error}")))
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

/// Rows per `COPY` on PostgreSQL: this only bounds the memory of one statement's data (about
/// 1 to 2 MB for 10,000 chat messages).
pub(super) const ROWS_PER_COPY: usize = 10_000;

/// The `COPY` statement of [`messages_copy`]'s data: the columns of [`messages_insert_sqlite`]
/// with the lifecycle columns, in PostgreSQL's text format.
pub(super) const MESSAGES_COPY: &str = "COPY messages (session_id, chat_id, provider_message_id, \
     client_message_id, sender, text, kind, status, from_me, sent_at, seq, updated_at, reply_to, \
     forwarded, forwarded_from, edited, edited_at) FROM STDIN";

/// PostgreSQL's bulk insert of `messages`: the rows of [`messages_insert_sqlite`], with the same
/// values, as the data of [`MESSAGES_COPY`] in COPY's text format
/// (<https://www.postgresql.org/docs/15/sql-copy.html>, "Text Format"): one line per row,
/// columns split by a tab, `\N` for NULL, and a backslash, tab, newline or carriage return in a
/// value escaped with a backslash. Booleans are `t`, numbers decimal.
pub(super) fn messages_copy(
    session_id: &str,
    rows: &[(&str, &NewMessage, u64)],
    now: i64,
) -> Vec<u8> {
    let mut data = String::with_capacity(rows.len() * 160);
    for (chat_id, new, seq) in rows {
        copy_text(&mut data, Some(session_id));
        copy_text(&mut data, Some(chat_id));
        copy_text(&mut data, Some(&new.provider_message_id));
        copy_text(&mut data, new.client_message_id.as_deref());
        copy_text(&mut data, Some(&storable(&new.sender)));
        copy_text(&mut data, Some(&storable(&new.text)));
        let from_me = if new.from_me { 't' } else { 'f' };
        let _ = write!(
            data,
            "{}\t{}\t{from_me}\t{}\t{}\t{now}\t",
            new.kind.as_i16(),
            new.status.as_i16(),
            new.sent_at_ms,
            seq
        );
        copy_text(&mut data, new.reply_to.as_deref().map(storable).as_deref());
        match stored_forwarded(new.forwarded) {
            Some(forwarded) => {
                let _ = write!(data, "{forwarded}\t");
            }
            None => data.push_str("\\N\t"),
        }
        copy_text(
            &mut data,
            new.forwarded_from.as_deref().map(storable).as_deref(),
        );
        data.push_str(if new.edited { "t\t" } else { "\\N\t" });
        match new.edited_at_ms {
            Some(edited_at) => {
                let _ = write!(data, "{edited_at}");
            }
            None => data.push_str("\\N"),
        }
        data.push('\n');
    }
    data.into_bytes()
}

/// Appends one text column and its tab in COPY's text format ([`messages_copy`]).
fn copy_text(data: &mut String, value: Option<&str>) {
    let Some(text) = value else {
        data.push_str("\\N\t");
        return;
    };
    if !text
        .bytes()
        .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
    {
        data.push_str(text);
    } else {
        for c in text.chars() {
            match c {
                '\\' => data.push_str("\\\\"),
                '\t' => data.push_str("\\t"),
                '\n' => data.push_str("\\n"),
                '\r' => data.push_str("\\r"),
                c => data.push(c),
            }
        }
    }
    data.push('\t');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// COPY's text format: NULL as `\N`, the four escaped characters escaped wherever they are,
    /// NUL replaced as every stored text is ([`storable`]), and the lifecycle columns present.
    #[test]
    fn copy_rows_escape_what_the_text_format_reads_as_syntax() {
        let plain = NewMessage {
            provider_message_id: "p1".into(),
            sender: "Ana".into(),
            text: "hello".into(),
            sent_at_ms: 1_000,
            ..Default::default()
        };
        let tricky = NewMessage {
            provider_message_id: "p\\2".into(),
            client_message_id: Some("key\t2".into()),
            sender: "B\0n".into(),
            text: "a\\b\tc\nd\re \\N \\.".into(),
            kind: MessageKind::System,
            from_me: true,
            sent_at_ms: -5,
            reply_to: Some("p1".into()),
            forwarded: Forwarded::Frequently,
            forwarded_from: Some("Cy\\".into()),
            edited: true,
            edited_at_ms: Some(7),
            ..Default::default()
        };
        let data = messages_copy("s", &[("c\n1", &plain, 1), ("c2", &tricky, 2)], 9);
        let expected = "s\tc\\n1\tp1\t\\N\tAna\thello\t1\t2\tf\t1000\t1\t9\t\\N\t\\N\t\\N\t\\N\t\\N\n\
             s\tc2\tp\\\\2\tkey\\t2\tB\u{FFFD}n\ta\\\\b\\tc\\nd\\re \\\\N \\\\.\t2\t2\tt\t-5\t2\t9\t\
             p1\t2\tCy\\\\\tt\t7\n";
        assert_eq!(String::from_utf8(data).unwrap(), expected);
        assert_eq!(MESSAGES_COPY.matches(", ").count() + 1, 17);
    }
}
