//! Connecting to the database and applying the ledger's transaction discipline.
//!
//! SQLite gets WAL, `synchronous=NORMAL`, a busy timeout and a small pool; write transactions
//! start with `BEGIN IMMEDIATE` so two writers queue on the lock instead of one failing when
//! it upgrades from reader to writer. Postgres gets a larger pool and its default isolation
//! (read committed), which is enough because every money-moving statement is a conditional
//! update on the rows it changes.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbErr,
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

/// Opens a pool. `max_connections` of `None` picks the backend's default (8 on SQLite, 32 on
/// Postgres).
pub async fn connect(url: &str, max_connections: Option<u32>) -> Result<DatabaseConnection, DbErr> {
    let backend = Backend::of_url(url).ok_or_else(|| {
        DbErr::Custom("database.url must start with sqlite: or postgres://".into())
    })?;
    let mut options = ConnectOptions::new(url.to_owned());
    options.sqlx_logging(false).acquire_timeout(Duration::from_secs(30));
    match backend {
        Backend::Sqlite => {
            options.max_connections(max_connections.unwrap_or(8));
            options.map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true)
            });
        }
        Backend::Postgres => {
            options.max_connections(max_connections.unwrap_or(32));
        }
    }
    Database::connect(options).await
}

/// Begins a transaction that will write. On SQLite it takes the write lock at once.
pub(crate) async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}
