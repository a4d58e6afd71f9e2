//! Connecting to the database and applying the ledger's transaction discipline.
//!
//! SQLite gets 1 KiB pages in a new file, WAL, `synchronous=NORMAL`, a busy timeout and a small
//! pool; write transactions start with `BEGIN IMMEDIATE` so two writers queue on the lock
//! instead of one failing when it upgrades from reader to writer. Postgres gets a larger pool
//! and its default isolation (read committed), which is enough because every money-moving
//! statement is a conditional update on the rows it changes.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

/// Which engine a URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// The SQLite file a `sqlite:` URL names; `None` for an in-memory database or another backend.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// The page size of a new SQLite file (an existing file keeps its own; SQLite cannot change
/// it in WAL mode). A job's commit dirties about 28 pages, one per table and index it touches
/// (the right edges of the jobs, ledger and rollup b-trees, the API key's ledger leaves, page
/// 1), and the WAL takes each page whole: about 115 KB a job with 4 KiB pages, 30 KB with
/// 1 KiB. Measured with `scripts/bench` (alternating runs): a lone job added 402 to 432 us
/// with 1 KiB pages against 479 to 570 with 4 KiB (p99 1,221 to 1,284 against 1,695 to
/// 2,165), and hours later on a busier machine 459 to 501 against 501 to 539 (p99 1,473 to
/// 1,700 against 1,943 to 2,030); c=64 was the same within the noise, the file 6% smaller.
const SQLITE_PAGE_BYTES: u32 = 1024;

/// Opens a pool. `max_connections` of `None` picks the backend's default (8 on SQLite, 32 on
/// Postgres).
pub async fn connect(url: &str, max_connections: Option<u32>) -> Result<DatabaseConnection, DbErr> {
    let backend = Backend::of_url(url).ok_or_else(|| {
        DbErr::Custom("database.url must start with sqlite: or postgres://".into())
    })?;
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(std::env::var("GAVEL_SQL_LOG").is_ok())
        .acquire_timeout(Duration::from_secs(30));
    match backend {
        Backend::Sqlite => {
            // A pooled SQLite connection is a file handle in this process: it cannot go stale
            // the way a socket can, and pinging it first costs a worker-thread round trip on
            // every query.
            options.max_connections(max_connections.unwrap_or(8)).test_before_acquire(false);
            options.map_sqlx_sqlite_opts(|opts| {
                opts.page_size(SQLITE_PAGE_BYTES)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true)
            });
        }
        Backend::Postgres => {
            // Ping only connections that sat idle long enough for a server or a proxy to have
            // dropped them, not before every query.
            options
                .max_connections(max_connections.unwrap_or(32))
                .test_before_acquire_if_idle_for(Duration::from_secs(30));
        }
    }
    Database::connect(options).await
}

/// This process's queue for the SQLite write lock. SQLite lets one writer in at a time; a
/// connection that finds the lock taken sleeps in SQLite's busy handler (1 ms, 2 ms, 5 ms...
/// up to 100 ms) instead of being woken when it frees up. Queueing writers here first hands
/// the lock over at once, in arrival order. Other processes on the same file still queue on
/// SQLite's busy timeout.
static SQLITE_WRITE_GATE: LazyLock<Arc<tokio::sync::Mutex<()>>> =
    LazyLock::new(|| Arc::new(tokio::sync::Mutex::new(())));

/// Waits for this process's turn to write to SQLite.
async fn sqlite_write_gate() -> tokio::sync::OwnedMutexGuard<()> {
    Arc::clone(&SQLITE_WRITE_GATE).lock_owned().await
}

/// Held for the life of a write transaction (on SQLite; nothing on Postgres). Keep it in scope
/// until after `commit` or `rollback`.
pub(crate) type WriteGate = Option<tokio::sync::OwnedMutexGuard<()>>;

/// Begins a transaction that will write. On SQLite it waits its turn at this process's write
/// gate, then takes the database's write lock at once (`BEGIN IMMEDIATE`).
pub(crate) async fn begin_write(
    db: &DatabaseConnection,
) -> Result<(DatabaseTransaction, WriteGate), DbErr> {
    let gate = match db.get_database_backend() {
        DbBackend::Sqlite => Some(sqlite_write_gate().await),
        _ => None,
    };
    let txn = db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        })
        .await?;
    Ok((txn, gate))
}

/// How durable a write transaction's commit must be before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Flushed to disk (the default).
    Flushed,
    /// On Postgres, `synchronous_commit = off` for this transaction only: the commit returns
    /// before its WAL is flushed. Exact across any crash of Gavel; a crash of Postgres or its
    /// machine can lose the last such commits (up to 3 x `wal_writer_delay`, 600 ms by
    /// default), whole, never half. Used for jobs' writes, whose rows (the payer's, the
    /// owner's and the platform's accounts) would otherwise stay locked until the flush.
    /// Nothing on SQLite (WAL, `NORMAL` already loses nothing to a process crash).
    Relaxed,
}

/// Runs `work` in a write transaction: commits on `Ok`, rolls back on `Err`.
pub(crate) async fn in_write_txn<T>(
    db: &DatabaseConnection,
    work: impl AsyncFnOnce(&DatabaseTransaction) -> Result<T, crate::RegistryError>,
) -> Result<T, crate::RegistryError> {
    in_write_txn_with(db, Durability::Flushed, work).await
}

/// [`in_write_txn`] with the commit's durability chosen.
pub(crate) async fn in_write_txn_with<T>(
    db: &DatabaseConnection,
    durability: Durability,
    work: impl AsyncFnOnce(&DatabaseTransaction) -> Result<T, crate::RegistryError>,
) -> Result<T, crate::RegistryError> {
    use sea_orm::ConnectionTrait;
    let (txn, _gate) = begin_write(db).await?;
    if durability == Durability::Relaxed && db.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared("SET LOCAL synchronous_commit = off").await?;
    }
    match work(&txn).await {
        Ok(value) => {
            txn.commit().await?;
            Ok(value)
        }
        Err(err) => {
            txn.rollback().await?;
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sqlite_file;

    #[test]
    fn only_sqlite_files_are_files() {
        assert_eq!(sqlite_file("sqlite://data/gavel.db?mode=rwc"), Some("data/gavel.db".into()));
        assert_eq!(sqlite_file("sqlite:///tmp/x.db"), Some("/tmp/x.db".into()));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://file?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://localhost/test"), None);
    }
}
