//! Raw baseline for the full-sync benchmark: the same rows the service writes for a
//! `whatsapp-export` session, inserted into the same schema with plain prepared sqlx
//! statements, one row per `execute`, inside large transactions.
//!
//! Usage: `cargo run --release --example raw_baseline -- CORPUS_DIR DB_FILE`
//!
//! - The schema comes from the project's real migrations (`migrations::Migrator`), run once
//!   through SeaORM; every insert after that is plain sqlx on one connection.
//! - The database is opened as the service opens it: WAL, `synchronous = NORMAL`.
//! - The corpus is parsed with the project's own parser
//!   (`chatsync::sources::whatsapp::history_from_export`), so the rows, provider ids
//!   included, are the ones the service stores. Chats are taken in the order the service
//!   takes them (sorted by chat name) and get the same seqs: one seq for the chat (its
//!   `chats` row and its `changes` row), then one per message.
//! - Parsing (read + parse + id derivation) is timed apart from inserting. The output gives
//!   messages/s for "insert only" and for "parse+insert" (the sum), plus one machine-readable
//!   `RESULT` line for `bench/full_sync.sh`.
use std::path::{Path, PathBuf};
use std::time::Instant;

use chatsync::model::NewMessage;
use chatsync::sources::whatsapp::{
    chat_id_for_name, chat_name_from_path, history_from_export, parser::ParseOptions,
};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};

/// Rows (messages plus chat and change rows) per transaction.
const ROWS_PER_TRANSACTION: usize = 50_000;
const SESSION_ID: &str = "bench";

struct ParsedChat {
    chat_id: String,
    name: String,
    messages: Vec<NewMessage>,
}

/// Raw baseline for the full-sync benchmark: the service's rows, inserted with plain sqlx.
#[derive(clap::Parser)]
struct Args {
    /// A folder of WhatsApp `.txt` exports.
    corpus_dir: PathBuf,
    /// The SQLite file to create (it must not exist).
    db_file: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&args.corpus_dir, &args.db_file))
}

/// The export files of the corpus with their chat names and ids, in the service's order
/// (by name, then path). The corpus holds plain `.txt` exports only.
fn list_corpus(folder: &Path) -> anyhow::Result<Vec<(PathBuf, String, String)>> {
    let mut chats = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file_name.starts_with('.') || !file_name.to_lowercase().ends_with(".txt") {
            continue;
        }
        let name = chat_name_from_path(&path);
        let chat_id = chat_id_for_name(&name);
        chats.push((path, name, chat_id));
    }
    chats.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    Ok(chats)
}

async fn run(corpus: &Path, db_file: &Path) -> anyhow::Result<()> {
    if db_file.exists() {
        anyhow::bail!("{} exists; give a fresh file", db_file.display());
    }

    // Schema: the real migrations, through SeaORM, on a connection used only for that.
    let url = format!("sqlite://{}?mode=rwc", db_file.display());
    let migrate_db = sea_orm::Database::connect(&url).await?;
    <migrations::Migrator as migrations::MigratorTrait>::up(&migrate_db, None).await?;
    migrate_db.close().await?;

    // Parse: read every file, parse it, derive ids. Timed on its own.
    let parse_started = Instant::now();
    let options = ParseOptions::default();
    let mut chats = Vec::new();
    let mut n_messages = 0usize;
    for (path, name, chat_id) in list_corpus(corpus)? {
        let bytes = std::fs::read(&path)?;
        let history = history_from_export(&chat_id, &bytes, &options, chrono_tz::Tz::UTC);
        n_messages += history.messages.len();
        chats.push(ParsedChat {
            chat_id,
            name,
            messages: history.messages,
        });
    }
    let parse_secs = parse_started.elapsed().as_secs_f64();

    // Insert: plain sqlx, one prepared single-row INSERT per row, large transactions.
    let options = SqliteConnectOptions::new()
        .filename(db_file)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(std::time::Duration::from_secs(10));
    let mut conn = SqliteConnection::connect_with(&options).await?;

    let insert_started = Instant::now();
    let now = chatsync::model::now_ms();
    sqlx::query(
        "INSERT INTO sessions (id, source, head_seq, sync_state) VALUES (?, 'whatsapp-export', 0, 1)",
    )
    .bind(SESSION_ID)
    .execute(&mut conn)
    .await?;

    let insert_chat =
        "INSERT INTO chats (session_id, chat_id, name, seq, created_at) VALUES (?, ?, ?, ?, ?)";
    let insert_change = "INSERT INTO changes (session_id, seq, kind, chat_id, message_id, status, at) \
                         VALUES (?, ?, 2, ?, NULL, NULL, ?)";
    let insert_message = "INSERT INTO messages (session_id, chat_id, provider_message_id, \
                          client_message_id, sender, text, kind, status, from_me, sent_at, seq, \
                          updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

    let mut seq: i64 = 0;
    let mut rows_in_txn = 0usize;
    let mut transactions = 1usize;
    let mut txn = conn.begin().await?;
    for chat in &chats {
        seq += 1;
        sqlx::query(insert_chat)
            .bind(SESSION_ID)
            .bind(&chat.chat_id)
            .bind(&chat.name)
            .bind(seq)
            .bind(now)
            .execute(&mut *txn)
            .await?;
        sqlx::query(insert_change)
            .bind(SESSION_ID)
            .bind(seq)
            .bind(&chat.chat_id)
            .bind(now)
            .execute(&mut *txn)
            .await?;
        rows_in_txn += 2;
        for message in &chat.messages {
            seq += 1;
            sqlx::query(insert_message)
                .bind(SESSION_ID)
                .bind(&chat.chat_id)
                .bind(&message.provider_message_id)
                .bind(message.client_message_id.as_deref())
                .bind(&message.sender)
                .bind(&message.text)
                .bind(message.kind.as_i16())
                .bind(message.status.as_i16())
                .bind(message.from_me)
                .bind(message.sent_at_ms)
                .bind(seq)
                .bind(now)
                .execute(&mut *txn)
                .await?;
            rows_in_txn += 1;
            if rows_in_txn >= ROWS_PER_TRANSACTION {
                sqlx::query("UPDATE sessions SET head_seq = ? WHERE id = ?")
                    .bind(seq)
                    .bind(SESSION_ID)
                    .execute(&mut *txn)
                    .await?;
                txn.commit().await?;
                txn = conn.begin().await?;
                transactions += 1;
                rows_in_txn = 0;
            }
        }
    }
    sqlx::query("UPDATE sessions SET head_seq = ? WHERE id = ?")
        .bind(seq)
        .bind(SESSION_ID)
        .execute(&mut *txn)
        .await?;
    txn.commit().await?;
    let insert_secs = insert_started.elapsed().as_secs_f64();
    conn.close().await?;

    let insert_rate = n_messages as f64 / insert_secs;
    let total_rate = n_messages as f64 / (parse_secs + insert_secs);
    println!(
        "raw baseline: {} chats, {} messages, {} transactions of up to {} rows",
        chats.len(),
        n_messages,
        transactions,
        ROWS_PER_TRANSACTION
    );
    println!(
        "parse (read+parse+ids): {:.3} s = {:.0} messages/s",
        parse_secs,
        n_messages as f64 / parse_secs
    );
    println!("insert only:            {insert_secs:.3} s = {insert_rate:.0} messages/s");
    println!(
        "parse+insert:           {:.3} s = {total_rate:.0} messages/s",
        parse_secs + insert_secs
    );
    println!(
        "RESULT chats={} messages={} parse_s={:.4} insert_s={:.4} insert_rate={:.0} total_rate={:.0}",
        chats.len(),
        n_messages,
        parse_secs,
        insert_secs,
        insert_rate,
        total_rate
    );
    Ok(())
}
