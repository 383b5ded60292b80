//! Issue 22, part 2: PostgreSQL bulk loads through `COPY` against chatsync's
//! `INSERT … SELECT FROM UNNEST(arrays)`, the same rows into the same schema, in the same run.
//!
//! Usage: `cargo run --release --example pg_copy_unnest -- --source URL --target URL [--runs 3]
//! [--chunk 10000]`
//!
//! - `--source`: a database chatsync synced (its `messages` rows are the input, by seq);
//! - `--target`: a database with the same schema (`pg_dump --schema-only` of the source) and
//!   the source's `sessions` rows. Its `messages` table is emptied before each load.
//!
//! Each run loads every row twice, alternating which way goes first: in transactions of
//! `--chunk` rows (an import's batch), once as one `COPY messages (…) FROM STDIN` per chunk (text
//! format, sent with sqlx's `copy_in_raw`), once as one `INSERT … SELECT … FROM UNNEST($1::text[],
//! …)` per chunk with the columns bound as arrays (the statement chatsync's imports used
//! before 8825788 moved them to `COPY`). Before each load the table is truncated and a `CHECKPOINT`
//! taken. Prints one line per load and the medians, in rows/s; the ratio is COPY / UNNEST.
//!
//! The text format is PostgreSQL's (<https://www.postgresql.org/docs/15/sql-copy.html>, "Text
//! Format"): columns split by a tab, rows by a newline, `\N` for NULL, and a backslash, tab,
//! newline or carriage return inside a value escaped with a backslash.
use std::time::Instant;

use clap::Parser;
use sea_orm::sqlx::postgres::{PgConnection, PgPoolOptions};
use sea_orm::sqlx::{self, Connection, Row};

/// The options.
#[derive(Parser)]
struct Args {
    /// The database chatsync synced.
    #[arg(long)]
    source: String,
    /// A database with the same schema, whose `messages` are replaced.
    #[arg(long)]
    target: String,
    /// Loads of each kind.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Rows per transaction.
    #[arg(long, default_value_t = 10_000)]
    chunk: usize,
}

/// One `messages` row: the 12 columns an import writes.
struct MessageRow {
    session_id: String,
    chat_id: String,
    provider_message_id: String,
    client_message_id: Option<String>,
    sender: String,
    text: String,
    kind: i16,
    status: i16,
    from_me: bool,
    sent_at: i64,
    seq: i64,
    updated_at: i64,
}

const COLUMNS: &str = "session_id, chat_id, provider_message_id, client_message_id, sender, \
                       text, kind, status, from_me, sent_at, seq, updated_at";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let source = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.source)
        .await?;
    let rows: Vec<MessageRow> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM messages ORDER BY seq"
    )))
    .fetch_all(&source)
    .await?
    .into_iter()
    .map(|r| MessageRow {
        session_id: r.get(0),
        chat_id: r.get(1),
        provider_message_id: r.get(2),
        client_message_id: r.get(3),
        sender: r.get(4),
        text: r.get(5),
        kind: r.get(6),
        status: r.get(7),
        from_me: r.get(8),
        sent_at: r.get(9),
        seq: r.get(10),
        updated_at: r.get(11),
    })
    .collect();
    source.close().await;
    if rows.is_empty() {
        return Err("the source database has no messages".into());
    }
    let mut target = PgConnection::connect(&args.target).await?;
    let mut copy = Vec::new();
    let mut unnest = Vec::new();
    for run in 0..args.runs {
        for copy_first in [run % 2 == 0, run % 2 != 0] {
            sqlx::raw_sql("TRUNCATE messages; CHECKPOINT")
                .execute(&mut target)
                .await?;
            let start = Instant::now();
            if copy_first {
                for chunk in rows.chunks(args.chunk) {
                    load_copy(&mut target, chunk).await?;
                }
            } else {
                for chunk in rows.chunks(args.chunk) {
                    load_unnest(&mut target, chunk).await?;
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
                .fetch_one(&mut target)
                .await?;
            if stored != rows.len() as i64 {
                return Err(format!("stored {stored} rows of {}", rows.len()).into());
            }
            let rate = rows.len() as f64 / seconds;
            let way = if copy_first { "COPY" } else { "UNNEST" };
            println!("run {} {way}: {seconds:.3} s, {rate:.0} rows/s", run + 1);
            if copy_first {
                copy.push(rate);
            } else {
                unnest.push(rate);
            }
        }
    }
    let (copy, unnest) = (median(copy), median(unnest));
    println!(
        "rows={} chunk={} median COPY {copy:.0} rows/s, UNNEST {unnest:.0} rows/s, COPY/UNNEST {:.2}",
        rows.len(),
        args.chunk,
        copy / unnest
    );
    Ok(())
}

/// One transaction: the chunk as one `COPY … FROM STDIN` in text format.
async fn load_copy(conn: &mut PgConnection, rows: &[MessageRow]) -> sqlx::Result<()> {
    let mut data = String::with_capacity(rows.len() * 128);
    for row in rows {
        for (i, value) in [
            Some(row.session_id.as_str()),
            Some(&row.chat_id),
            Some(&row.provider_message_id),
            row.client_message_id.as_deref(),
            Some(&row.sender),
            Some(&row.text),
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                data.push('\t');
            }
            match value {
                Some(text) => escape_text(&mut data, text),
                None => data.push_str("\\N"),
            }
        }
        use std::fmt::Write;
        let from_me = if row.from_me { 't' } else { 'f' };
        let _ = writeln!(
            data,
            "\t{}\t{}\t{from_me}\t{}\t{}\t{}",
            row.kind, row.status, row.sent_at, row.seq, row.updated_at
        );
    }
    let mut tx = conn.begin().await?;
    let mut copy = tx
        .copy_in_raw(&format!("COPY messages ({COLUMNS}) FROM STDIN"))
        .await?;
    copy.send(data.into_bytes()).await?;
    copy.finish().await?;
    tx.commit().await
}

/// Appends `text` in COPY's text format: backslash, tab, newline and carriage return escaped.
fn escape_text(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// One transaction: the chunk as one `INSERT … SELECT FROM UNNEST` of column arrays.
async fn load_unnest(conn: &mut PgConnection, rows: &[MessageRow]) -> sqlx::Result<()> {
    let strings = |f: &dyn Fn(&MessageRow) -> &str| -> Vec<String> {
        rows.iter().map(|r| f(r).to_owned()).collect()
    };
    let mut tx = conn.begin().await?;
    sqlx::query(
        "INSERT INTO messages (session_id, chat_id, provider_message_id, client_message_id, \
         sender, text, kind, status, from_me, sent_at, seq, updated_at) \
         SELECT $1, u.c, u.p, CASE WHEN u.h THEN u.k END, u.s, u.t, u.kind, u.st, u.f, u.sa, \
         u.seq, $12 FROM UNNEST($2::text[], $3::text[], $4::text[], $13::bool[], $5::text[], \
         $6::text[], $7::int2[], $8::int2[], $9::bool[], $10::int8[], $11::int8[]) \
         AS u(c, p, k, h, s, t, kind, st, f, sa, seq)",
    )
    .bind(&rows[0].session_id)
    .bind(strings(&|r| &r.chat_id))
    .bind(strings(&|r| &r.provider_message_id))
    .bind(strings(&|r| {
        r.client_message_id.as_deref().unwrap_or_default()
    }))
    .bind(strings(&|r| &r.sender))
    .bind(strings(&|r| &r.text))
    .bind(rows.iter().map(|r| r.kind).collect::<Vec<i16>>())
    .bind(rows.iter().map(|r| r.status).collect::<Vec<i16>>())
    .bind(rows.iter().map(|r| r.from_me).collect::<Vec<bool>>())
    .bind(rows.iter().map(|r| r.sent_at).collect::<Vec<i64>>())
    .bind(rows.iter().map(|r| r.seq).collect::<Vec<i64>>())
    .bind(rows[0].updated_at)
    .bind(
        rows.iter()
            .map(|r| r.client_message_id.is_some())
            .collect::<Vec<bool>>(),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The median of `values` (the mean of the middle two when even).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
