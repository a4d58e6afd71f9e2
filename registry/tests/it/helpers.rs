//! Fresh databases for tests: a temporary SQLite file, or a throw-away Postgres database
//! (see `registry::testing`).

use chrono::Utc;
use migrations::{Migrator, MigratorTrait};
use registry::testing::{TempPostgres, test_database_url};
use registry::{DatabaseConnection, Email, NewUser, UserId};
use uuid::Uuid;

/// A migrated database and whatever keeps it alive.
pub(crate) struct TestDb {
    pub(crate) db: DatabaseConnection,
    pub(crate) url: String,
    _sqlite_dir: Option<tempfile::TempDir>,
    _postgres: Option<TempPostgres>,
}

/// A migrated SQLite database in a temporary directory, with a pool of several connections so
/// that concurrency is real.
pub(crate) async fn sqlite() -> TestDb {
    sqlite_migrated(None).await
}

/// A SQLite database with the first `steps` migrations applied (all of them with `None`).
pub(crate) async fn sqlite_migrated(steps: Option<u32>) -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/test.db?mode=rwc", dir.path().display());
    let db = registry::connect(&url, Some(8)).await.unwrap();
    Migrator::up(&db, steps).await.unwrap();
    TestDb { db, url, _sqlite_dir: Some(dir), _postgres: None }
}

/// A migrated, empty Postgres database when `TEST_DATABASE_URL` is set.
pub(crate) async fn postgres() -> Option<TestDb> {
    postgres_migrated(None).await
}

/// A Postgres database with the first `steps` migrations applied, when configured.
pub(crate) async fn postgres_migrated(steps: Option<u32>) -> Option<TestDb> {
    let admin_url = test_database_url()?;
    let temp = TempPostgres::create(&admin_url).await.expect("TEST_DATABASE_URL must be reachable");
    let db = registry::connect(&temp.url, Some(16)).await.unwrap();
    Migrator::up(&db, steps).await.unwrap();
    Some(TestDb { db, url: temp.url.clone(), _sqlite_dir: None, _postgres: Some(temp) })
}

/// SQLite always, Postgres when configured.
pub(crate) async fn all_backends() -> Vec<(&'static str, TestDb)> {
    let mut dbs = vec![("sqlite", sqlite().await)];
    if let Some(pg) = postgres().await {
        dbs.push(("postgres", pg));
    }
    dbs
}

/// A user with a wallet, no credits yet.
pub(crate) async fn user(db: &DatabaseConnection) -> UserId {
    let id = Uuid::now_v7();
    let email = Email::parse(&format!("{}@example.com", id.simple())).unwrap();
    let new_user = NewUser { email, handle: None, password_hash: "not-a-real-hash".into() };
    registry::create_user(db, new_user, id, Utc::now()).await.unwrap().id
}

/// Asserts the ledger's invariants: every balance equals its entries, all entries sum to zero.
pub(crate) async fn assert_ledger_consistent(db: &DatabaseConnection) {
    let audit = registry::ledger::audit_ledger(db).await.unwrap();
    assert!(audit.mismatches.is_empty(), "balance != sum of entries: {:?}", audit.mismatches);
    assert_eq!(audit.total, 0, "entries do not sum to zero");
    assert!(
        audit.flow_mismatches.is_empty(),
        "the hourly rollup differs from the captures: {:?}",
        audit.flow_mismatches
    );
}

/// An uploaded input file of `owner`'s and a batch in progress on it, not yet stored: `lines`
/// lines, each holding `share` micro-credits of the batch's reservation.
pub(crate) async fn batch_rows(
    db: &DatabaseConnection,
    owner: UserId,
    lines: usize,
    share: i64,
    now_ms: i64,
) -> (registry::batches::NewBatch, Vec<registry::batches::NewLine>) {
    use registry::batches::{self, BatchStatus, NewBatch, NewFile, NewLine};
    let file = Uuid::now_v7();
    let upload = NewFile {
        id: file,
        owner,
        filename: "in.jsonl".into(),
        content: "{}".into(),
        lines: 1,
        created_at_ms: now_ms,
    };
    batches::insert_file(db, upload).await.unwrap();
    let batch = NewBatch {
        id: Uuid::now_v7(),
        owner,
        api_key: None,
        input_file: file,
        endpoint: "/v1/jobs".into(),
        metadata: None,
        status: BatchStatus::InProgress,
        errors: None,
        total: lines as i64,
        reserved: share * lines as i64,
        created_at_ms: now_ms,
        expires_at_ms: now_ms + 24 * 3_600_000,
        auction: None,
        max_price: None,
    };
    let lines = (0..lines)
        .map(|i| NewLine { custom_id: format!("c{i}"), body: "{}".into(), reserve: share })
        .collect();
    (batch, lines)
}
