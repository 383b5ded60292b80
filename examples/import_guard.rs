//! The work the instruction-count guard measures (`bench/guard.sh`, run by `scripts/test`):
//! one WhatsApp export parsed, and optionally imported into a fresh SQLite store, once, on one
//! thread of the async runtime, with no clock in the loop. Under `valgrind --tool=callgrind`
//! its instruction count is repeatable (the input is fixed, nothing waits on time), so a
//! count that grows says that the code does more work.
//!
//! Usage: `cargo run --release --example import_guard -- parse FILE` or
//! `... -- import FILE DIR [--batch N] [--no-search]`
//!
//! - `parse`: `sources::whatsapp::history_from_export` (the parse and id derivation of a sync),
//!   once;
//! - `import`: the same parse, then `Store::import` of the messages into a new SQLite database
//!   in DIR, in batches of N messages (default 10,000, a sync's batch), as a new chat;
//!   `--no-search` replaces the word indexes by tables that drop what they are given, and
//!   drops their triggers (for profiles of what the indexes cost).
//!
//! Prints one line, `messages=N stored=M`, and checks that every message was stored.
use std::path::PathBuf;

use chatsync::model::NO_PEOPLE;
use chatsync::sources::whatsapp::history_from_export;
use chatsync::sources::whatsapp::parser::ParseOptions;
use chatsync::storage::{ImportChat, Store};

/// What to run.
#[derive(clap::Subcommand)]
enum Mode {
    /// Parse the export only.
    Parse {
        /// The export file.
        file: PathBuf,
    },
    /// Parse the export, then import it into a new SQLite database.
    Import {
        /// The export file.
        file: PathBuf,
        /// An empty folder for the database.
        dir: PathBuf,
        /// Messages per import transaction.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Drop the word indexes (tables and triggers) before importing.
        #[arg(long)]
        no_search: bool,
    },
}

/// Parse, or parse and import, one export.
#[derive(clap::Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

const CHAT_ID: &str = "guard";

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    // One thread: the count does not depend on how work is spread over workers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.mode {
        Mode::Parse { file } => {
            let bytes = std::fs::read(file)?;
            let history =
                history_from_export(CHAT_ID, &bytes, &ParseOptions::default(), chrono_tz::UTC);
            println!("messages={} stored=0", history.messages.len());
        }
        Mode::Import {
            file,
            dir,
            batch,
            no_search,
        } => {
            let bytes = std::fs::read(file)?;
            let history =
                history_from_export(CHAT_ID, &bytes, &ParseOptions::default(), chrono_tz::UTC);
            let url = format!("sqlite://{}/guard.db", dir.display());
            let stored = runtime.block_on(async {
                let store = Store::connect(&url).await?;
                if no_search {
                    drop_search(&dir).await?;
                }
                store.ensure_session(CHAT_ID, "whatsapp-export").await?;
                let mut stored = 0;
                for slice in history.messages.chunks(batch.max(1)) {
                    let chat = ImportChat {
                        chat_id: CHAT_ID,
                        name: "Guard",
                        messages: slice,
                        // A new chat, as a sync's first import of a file.
                        may_be_stored: false,
                        people: &NO_PEOPLE,
                    };
                    stored += store.import(CHAT_ID, &[chat]).await?[0];
                }
                anyhow::Ok(stored)
            })?;
            println!("messages={} stored={stored}", history.messages.len());
            anyhow::ensure!(
                stored == history.messages.len() as u64,
                "stored {stored} of {} messages",
                history.messages.len()
            );
        }
    }
    Ok(())
}

/// Drops the word indexes' triggers and tables, on a connection of its own (the insert trigger
/// is gone since migration 19: the writer's own index inserts go to the plain tables below).
async fn drop_search(dir: &std::path::Path) -> anyhow::Result<()> {
    use sqlx::Connection;
    let url = format!("sqlite://{}/guard.db", dir.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await?;
    for sql in [
        "DROP TRIGGER messages_search_update",
        "DROP TRIGGER messages_search_delete",
        "DROP TABLE messages_fts",
        "DROP TABLE messages_fts_trigram",
        // What a bulk import writes to the indexes goes nowhere.
        "CREATE TABLE messages_fts (text)",
        "CREATE TABLE messages_fts_trigram (text)",
        "CREATE TRIGGER messages_fts_none BEFORE INSERT ON messages_fts \
         BEGIN SELECT RAISE(IGNORE); END",
        "CREATE TRIGGER messages_fts_trigram_none BEFORE INSERT ON messages_fts_trigram \
         BEGIN SELECT RAISE(IGNORE); END",
    ] {
        sqlx::query(sql).execute(&mut conn).await?;
    }
    conn.close().await?;
    Ok(())
}
