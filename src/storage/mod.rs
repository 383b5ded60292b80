//! Storage: the only module that talks to the database.
//!
//! Contract:
//! - **One write path.** Every write goes through a [`write::WriteTxn`], which takes the
//!   session's lock *before* it reads anything it decides on: on PostgreSQL the session row
//!   (`SELECT … FOR UPDATE` as the transaction's first statement), on SQLite the in-process
//!   writer queue plus `BEGIN IMMEDIATE`. Only then does a write read (stored status, existing
//!   idempotency key, existing chat, stored provider ids), decide, take seqs, write, commit and
//!   announce. Writers of one session are serialised across every process on the database, so
//!   seqs are gapless, commit order equals seq order, and the committed seqs of a session always
//!   form a prefix: a reader that has seen seq N can read `seq > N` later and never miss a change.
//! - **Announcements only wake.** After each commit the new head seq is published on the
//!   session's [`Store::heads`] watch channel. On PostgreSQL a task of the process then sends
//!   `NOTIFY chatsync_heads, '<session_id> <head_seq>'` (after the commit; the writer does
//!   not wait), and every process listens and re-reads its watched heads each second
//!   ([`heads`]), so a commit on one replica wakes subscribers on all of them. Readers always
//!   read the rows from storage.
//! - Bulk imports insert in multi-row statements, never row by row: on SQLite at most
//!   [`ROWS_PER_INSERT`] rows a statement (below its 32,766 bound-variable limit), on
//!   PostgreSQL one `COPY … FROM STDIN` per 10,000 rows (`rows::messages_copy`).
//! - **SQLite is one process.** `FILE.lock` beside the database file is locked (`flock`) for
//!   the life of the store; a second server on the same file is refused at start.
//!
//! Layout: [`write`] (the write transaction), [`group`] (group commit of sends and status
//! changes), [`heads`] (announcements and the PostgreSQL
//! listener), [`sessions`] (session rows, sync state, leases, source cursors), [`import`]
//! (bulk import), [`people`] (contacts and participants), [`files`] (source-file fingerprints), [`messages`] (sends and statuses), [`lifecycle`] (edits, deletions, reactions,
//! receipts, and the details filled into read messages), [`changes`] (listings and the
//! change feed), [`snapshot`] (GetSnapshot's one consistent read), [`attachments`] (message
//! files: written with their message, read per page), [`rows`] (row conversions).
pub mod attachments;
pub mod changes;
mod checkpoint;
pub mod entities;
pub mod files;
pub mod group;
pub mod heads;
pub mod import;
pub mod lifecycle;
pub mod messages;
pub mod people;
mod rows;
pub mod search;
mod search_index;
pub mod send_claims;
pub mod sessions;
pub mod snapshot;
pub mod webhook_inbox;
pub mod webhooks;
pub mod write;
pub mod write_conn;

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

use crate::error::{Error, Result};
pub use files::{FileFingerprint, FileRecord};
pub use group::GroupCommitStats;
pub use import::ImportChat;
pub use lifecycle::{MessageOp, Outcome};
pub use sessions::{
    Fence, LEASE_EXPIRED, LeaseKind, PUSHED_RUN_HOLDER, RunClaim, SessionRecord, SyncRecord,
};
pub use snapshot::{Snapshot, SnapshotChat};
pub use write::WriteTxn;

/// The most page cache one SQLite connection keeps, in KiB (`PRAGMA cache_size`).
pub const SQLITE_CACHE_KIB: u32 = 32 * 1024;

/// Rows per multi-row INSERT: at most 18 message columns (with the lifecycle columns) × 1,800
/// rows = 32,400 bound variables, under SQLite's limit of 32,766.
pub const ROWS_PER_INSERT: usize = 1_800;

/// Splits `items` into runs of `max` items, then the rest into runs whose lengths are
/// distinct powers of two (largest first). A multi-row statement's SQL depends on its row
/// count, and each connection caches one prepared statement per SQL text: with these sizes an
/// import prepares at most about log2(`max`) + 1 statements per table and reuses them, instead
/// of preparing (and caching, each up to `max` rows of parameters) one more for every batch's
/// tail.
pub(crate) fn statement_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let take = if rest.len() >= max {
            max
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        Some(chunk)
    })
}

/// PostgreSQL connections per process unless configured (`database_max_connections`).
pub const DEFAULT_POOL_SIZE: u32 = 16;
/// The lease time [`Store::connect`] bounds PostgreSQL's waits by: `lease_secs`' default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Which end of a seq range a listing takes when the range holds more than its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Oldest,
    Newest,
}

/// Open connections of the database pool, by what they are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolUsage {
    /// Connections lent out to a query or transaction.
    pub in_use: u32,
    /// Open connections waiting in the pool.
    pub idle: u32,
}

/// The database handle plus the per-session head-seq announcements. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Where write transactions ([`Store::write`]) run. SQLite: a pool of one connection of
    /// its own, so that every write finds the same warm page cache and prepared statements
    /// (writes take turns anyway; spread over the readers' pool, each connection filled a
    /// cache of its own with the same pages). PostgreSQL: the same pool as `db`.
    writer_db: DatabaseConnection,
    heads: heads::Heads,
    /// Where this process's writers queue before they take a connection: SQLite has one queue
    /// for the whole file (instead of meeting in `BEGIN IMMEDIATE`, where SQLite's busy
    /// handler would make them sleep and retry); PostgreSQL one per session, so that writers
    /// waiting for one busy session's row lock never hold every pooled connection.
    writers: write::WriterQueues,
    /// Group commit of sends and status changes, per session ([`group`]).
    groups: Arc<group::Groups>,
    /// Webhook acknowledgements waiting for the next shared cursor transaction
    /// ([`Store::acknowledge_webhook`]).
    acks: Arc<webhooks::Acks>,
    /// SQLite only: the open database file, locked so that no second process serves it.
    _sqlite_lock: Option<Arc<std::fs::File>>,
    /// SQLite only: the task that checkpoints the WAL off the write path ([`checkpoint`]),
    /// ended when the last clone of the store is dropped.
    _checkpoints: Option<Arc<checkpoint::CheckpointTask>>,
    /// Set on a store handed to a lease holder's work ([`Store::fenced`]): every write checks
    /// the fence first.
    fence: Option<Arc<Fenced>>,
}

/// A lease holder's fence, and the token its work stops on.
struct Fenced {
    fence: Fence,
    lost: tokio_util::sync::CancellationToken,
}

impl Store {
    /// This store for the work of a lease holder: every write transaction ([`Store::write`])
    /// first checks, under the session's lock, that `fence` still names the current tenure of
    /// its lease; when it does not (another replica took over, or the lease lapsed), the write
    /// fails with `LeaseLost`, nothing is written, and `lost` is cancelled so that the work
    /// stops. Reads are unchanged.
    pub fn fenced(&self, fence: Fence, lost: tokio_util::sync::CancellationToken) -> Store {
        Store {
            fence: Some(Arc::new(Fenced { fence, lost })),
            ..self.clone()
        }
    }
}

impl Store {
    /// Connects to `url` (`sqlite://FILE` or `postgres://...`) and runs the migrations.
    ///
    /// SQLite files are created when missing and opened in WAL mode with
    /// `synchronous = NORMAL`, a 10 s busy timeout, up to [`SQLITE_CACHE_KIB`] of page cache
    /// per connection, statement journals in memory and WAL checkpoints in a task of their own
    /// once the WAL holds 8,192 pages (storage's `checkpoint` module), with a pool of readers
    /// and one connection for write transactions; writers are queued in process. The file is
    /// then locked for this process: `FailedPrecondition` when another process holds it.
    ///
    /// PostgreSQL: migrations run under an advisory lock, so replicas starting together
    /// migrate once; a listener on `chatsync_heads` and `chatsync_runs` is started (see
    /// [`heads`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, DEFAULT_POOL_SIZE, DEFAULT_LEASE).await
    }

    /// [`Store::connect`] with at most `pool_size` PostgreSQL connections (plus one for the
    /// listener; ignored on SQLite, which keeps 8 readers), and PostgreSQL's waits bounded by
    /// `lease` (the cluster's lease time): each connection sets
    ///
    /// - `lock_timeout` = `lease`: a write that waits longer for a lock (a session's row,
    ///   held by a stalled replica) fails with SQLSTATE 55P03, answered UNAVAILABLE;
    /// - `idle_in_transaction_session_timeout` = `lease`: the server ends a transaction left
    ///   idle that long (its replica paused or cut off), releasing its locks;
    /// - `tcp_keepalives_idle` = `lease`/2, `tcp_keepalives_interval` = `lease`/6 (at least
    ///   1 s), `tcp_keepalives_count` = 3 and `tcp_user_timeout` = `lease`: the server drops
    ///   the connection of a replica that the network cut off within about a lease, not the
    ///   kernel's two hours.
    pub async fn connect_with(url: &str, pool_size: u32, lease: Duration) -> Result<Self> {
        let mut options = ConnectOptions::new(url.to_owned());
        options.sqlx_logging(false);
        let sqlite = url.starts_with("sqlite:");
        let mut checkpoints = None;
        if sqlite {
            options
                .max_connections(8)
                .min_connections(1)
                // A local file cannot drop a connection: no ping before every query.
                .test_before_acquire(false)
                .map_sqlx_sqlite_opts(|opts| {
                    opts.create_if_missing(true)
                        .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                        .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(10))
                        // A page cache of up to SQLITE_CACHE_KIB per connection (grown only as
                        // pages are used): the default 2 MB spilled a large import's index
                        // pages to the WAL and read them back.
                        .pragma("cache_size", format!("-{SQLITE_CACHE_KIB}"))
                        // Statement journals (a multi-row INSERT inside a transaction keeps
                        // one) in memory instead of temporary files.
                        .pragma("temp_store", "memory")
                });
            // WAL checkpoints run in a task of their own, not in the commit that fills the WAL
            // (`checkpoint`): each pooled connection gets the WAL hook that signals it.
            let signal =
                *checkpoints.insert(checkpoint::Checkpoints::leak(checkpoint::CHECKPOINT_PAGES));
            options.map_sqlx_sqlite_pool_opts(move |pool| {
                pool.after_connect(move |conn, _| Box::pin(signal.install(conn)))
            });
        } else {
            let settings = postgres_session_settings(lease);
            options
                .max_connections(pool_size.max(2))
                .map_sqlx_postgres_opts(move |opts| opts.options(settings.clone()));
        }
        let writer_options = sqlite.then(|| {
            let mut writer = options.clone();
            writer.max_connections(1).min_connections(1);
            writer
        });
        let db = Database::connect(options).await?;
        let sqlite_lock = if sqlite { lock_sqlite_file(url)? } else { None };
        if db.get_database_backend() == DbBackend::Postgres {
            // On connections of their own, without the session settings: the migration lock
            // and schema changes wait as long as they must (a replica starting beside one that
            // migrates, or beside running transactions), not a lease.
            let mut plain = ConnectOptions::new(url.to_owned());
            plain.sqlx_logging(false).max_connections(2);
            let migrating = Database::connect(plain).await?;
            let migrated = migrate_postgres(&migrating).await;
            let _ = migrating.close().await;
            migrated?;
        } else {
            <migrations::Migrator as migrations::MigratorTrait>::up(&db, None).await?;
            // The file lock proves that no other process is alive on this database, so every
            // lease left behind belongs to a dead one: each is ended (its row kept, so that
            // epochs only grow). A pushed run's lease is no process's, and stays.
            use sea_orm::sea_query::Expr;
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
            entities::lease::Entity::update_many()
                .col_expr(entities::lease::Column::Holder, Expr::value(""))
                .col_expr(entities::lease::Column::ExpiresAt, Expr::value(0i64))
                .filter(entities::lease::Column::Holder.ne(PUSHED_RUN_HOLDER))
                .exec(&db)
                .await?;
        }
        let heads = if db.get_database_backend() == DbBackend::Postgres {
            heads::Heads::listening(db.clone())
        } else {
            heads::Heads::default()
        };
        let writer_db = match writer_options {
            Some(options) => Database::connect(options).await?,
            None => db.clone(),
        };
        Ok(Self {
            db,
            writer_db,
            heads,
            writers: write::WriterQueues::new(sqlite),
            groups: Arc::default(),
            acks: Arc::default(),
            _sqlite_lock: sqlite_lock.map(Arc::new),
            _checkpoints: checkpoints.map(|signal| Arc::new(signal.spawn(url))),
            fence: None,
        })
    }

    /// The connection pool's use right now (PostgreSQL's listening connection is not
    /// counted). For the `chatsync_db_pool_connections` gauge.
    pub fn pool_usage(&self) -> PoolUsage {
        let (size, idle) = match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DbBackend::Sqlite => {
                let (readers, writer) = (
                    self.db.get_sqlite_connection_pool(),
                    self.writer_db.get_sqlite_connection_pool(),
                );
                (
                    readers.size() + writer.size(),
                    readers.num_idle() + writer.num_idle(),
                )
            }
            _ => (0, 0),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
        PoolUsage {
            in_use: size - idle,
            idle,
        }
    }

    /// Whether this store is on PostgreSQL (several processes may share it).
    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
    }

    /// A watch channel carrying the session's committed head seq. It starts at least at the
    /// stored head (read from the database, so a cursor from another replica is never ahead of
    /// it) and only moves forward.
    pub async fn heads(&self, session_id: &str) -> Result<tokio::sync::watch::Receiver<u64>> {
        let head = self.head_seq(session_id).await?;
        let receiver = self.heads.subscribe_from(session_id, head);
        // A commit announced between that read and the subscription found nobody watching
        // (announcements to unwatched sessions are dropped): read once more.
        let head = self.head_seq(session_id).await?;
        self.heads.announce(session_id, head);
        Ok(receiver)
    }

    async fn head_seq(&self, session_id: &str) -> Result<u64> {
        use sea_orm::{EntityTrait, QuerySelect};
        let head: Option<i64> = entities::session::Entity::find_by_id(session_id)
            .select_only()
            .column(entities::session::Column::HeadSeq)
            .into_tuple()
            .one(&self.db)
            .await?;
        head.map(|head| head as u64)
            .ok_or_else(|| Error::NotFound(format!("session {session_id:?}")))
    }
}

/// The settings every PostgreSQL connection starts with (see [`Store::connect_with`]), as
/// (name, value) pairs in milliseconds or seconds as each setting counts.
fn postgres_session_settings(lease: Duration) -> Vec<(&'static str, String)> {
    let lease_ms = lease.as_millis().max(1000);
    let lease_s = lease_ms.div_ceil(1000);
    vec![
        ("lock_timeout", lease_ms.to_string()),
        ("idle_in_transaction_session_timeout", lease_ms.to_string()),
        ("tcp_keepalives_idle", (lease_s / 2).max(1).to_string()),
        ("tcp_keepalives_interval", (lease_s / 6).max(1).to_string()),
        ("tcp_keepalives_count", "3".to_owned()),
        ("tcp_user_timeout", lease_ms.to_string()),
    ]
}

/// Runs the migrations while holding a PostgreSQL advisory lock, so that replicas started
/// together on a fresh database do not race to create the same tables.
async fn migrate_postgres(db: &DatabaseConnection) -> Result<()> {
    use sea_orm::sqlx;
    // Any constant key works; this one spells "chatsync" in ASCII.
    const MIGRATION_LOCK: i64 = 0x6368_6174_7379_6e63;
    let pool = db.get_postgres_connection_pool();
    let mut lock = pool.acquire().await.map_err(Error::from)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *lock)
        .await
        .map_err(Error::from)?;
    let migrated = <migrations::Migrator as migrations::MigratorTrait>::up(db, None).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *lock)
        .await;
    migrated?;
    unlocked.map_err(Error::from)?;
    Ok(())
}

/// The database file a `sqlite:` URL names, read as sqlx reads it
/// (`SqliteConnectOptions::from_str`: percent-decoding, `?mode=…` and the rest); `None` for an
/// in-memory database, a URL sqlx refuses, or one that is not SQLite's.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    use sea_orm::sqlx::sqlite::SqliteConnectOptions;
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let file = options.get_filename();
    // sqlx names the database of `sqlite::memory:` `file:sqlx-in-memory-N`, and keeps the file
    // name of one opened `?mode=memory`, with no getter for either.
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let in_memory = file.to_string_lossy().starts_with("file:sqlx-in-memory-")
        || query.split('&').any(|pair| pair == "mode=memory");
    (!in_memory && !file.as_os_str().is_empty()).then(|| file.to_path_buf())
}

/// Locks `FILE.lock` beside a SQLite database `FILE` for this process (`flock`, released when
/// the process ends). `None` for an in-memory database.
fn lock_sqlite_file(url: &str) -> Result<Option<std::fs::File>> {
    let Some(path) = sqlite_file(url) else {
        return Ok(None);
    };
    let path = path.display();
    let lock_path = format!("{path}.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::Internal(format!("cannot open the lock file {lock_path}: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::FailedPrecondition(format!(
            "the SQLite database {path} is in use by another chatsync process; SQLite serves \
             one process only (run several replicas on PostgreSQL)"
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Internal(format!(
            "cannot lock the database file {path}: {e}"
        ))),
    }
}

/// Text as storage writes it: PostgreSQL text cannot hold NUL, and a NUL from a source is never
/// meant, so it becomes U+FFFD on every backend alike.
fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn sqlite_urls_name_their_file() {
        use std::path::PathBuf;
        assert_eq!(
            sqlite_file("sqlite:///var/lib/chatsync/c.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/chatsync/c.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:data/my%20chats.db"),
            Some(PathBuf::from("data/my chats.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://a.db?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }
    use super::{sqlite_file, statement_chunks};

    #[test]
    fn statement_chunks_cover_everything_in_few_distinct_sizes() {
        for n in [0usize, 1, 2, 3, 1_999, 2_000, 2_001, 4_095, 10_000, 12_345] {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = statement_chunks(&items, 2_000).collect();
            assert_eq!(chunks.concat(), items, "n = {n}");
            for chunk in &chunks {
                assert!(chunk.len() == 2_000 || chunk.len().is_power_of_two());
            }
            let tails: Vec<usize> = chunks
                .iter()
                .map(|c| c.len())
                .filter(|&l| l < 2_000)
                .collect();
            let mut distinct = tails.clone();
            distinct.dedup();
            assert_eq!(tails, distinct, "each tail size once, n = {n}");
        }
    }
}
