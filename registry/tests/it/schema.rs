//! What the migrations leave behind: on Postgres, the compression of the large text columns a
//! job writes; on both backends, the hourly rollup filled from the captures already there.

use auction_engine::MicroCredits;
use chrono::{DateTime, NaiveDate, Utc};
use migrations::{Migrator, MigratorTrait};
use registry::figures::{DailyFlow, daily_flows};
use registry::ledger::PLATFORM_REVENUE_ACCOUNT;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uuid::Uuid;

use crate::helpers::{postgres_migrated, sqlite_migrated, user};

/// A capture written the way the ledger wrote them before the rollup existed: its transfer and
/// its entries, nothing else (the wallets' cached balances are left alone: the test reads
/// only the rollup).
async fn old_capture(db: &registry::DatabaseConnection, legs: &[(Uuid, i64)], when: DateTime<Utc>) {
    let backend = db.get_database_backend();
    let (transfer, job) = (Uuid::now_v7(), Uuid::now_v7());
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        "INSERT INTO transfers (id, kind, idempotency_key, job_id, created_at) \
         VALUES ($1, 'capture', $2, $3, $4)",
        [transfer.into(), format!("capture:{job}").into(), job.into(), when.into()],
    ))
    .await
    .unwrap();
    for &(account, amount) in legs {
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            "INSERT INTO ledger_entries (transfer_id, account_id, amount, kind, job_id, \
             created_at) VALUES ($1, $2, $3, 'capture', $4, $5)",
            [transfer.into(), account.into(), amount.into(), job.into(), when.into()],
        ))
        .await
        .unwrap();
    }
}

/// Captures on the ledger before migration 7 are summed into its rollup, hour by UTC hour, on
/// both backends: the rollup equals the entries, and the daily figures split at midnight.
#[tokio::test]
async fn the_hourly_rollup_starts_from_the_captures_already_on_the_ledger() {
    let mut dbs = vec![("sqlite", sqlite_migrated(Some(6)).await)];
    if let Some(pg) = postgres_migrated(Some(6)).await {
        dbs.push(("postgres", pg));
    }
    for (backend, test_db) in dbs {
        let db = test_db.db.clone();
        let (caller, owner) = (user(&db).await, user(&db).await);
        let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);
        let legs = |charge: i64| {
            [(caller.0, -charge), (owner.0, charge - 1), (PLATFORM_REVENUE_ACCOUNT, 1)]
        };
        old_capture(&db, &legs(3_000_000), at("2026-12-05T23:59:59.999Z")).await;
        old_capture(&db, &legs(5_000_000), at("2026-12-06T00:00:00Z")).await;
        old_capture(&db, &legs(7_000_000), at("2026-12-06T00:30:00.123456789Z")).await;
        Migrator::up(&db, None).await.unwrap();

        let audit = registry::ledger::audit_ledger(&db).await.unwrap();
        assert!(audit.flow_mismatches.is_empty(), "{backend}: {:?}", audit.flow_mismatches);
        let day = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap();
        let flow = |d: &str, spent: i64, earned: i64| DailyFlow {
            day: day(d),
            spent: MicroCredits::from_micros(spent),
            earned: MicroCredits::from_micros(earned),
        };
        assert_eq!(
            daily_flows(&db, caller, at("2026-12-05T12:00:00Z")).await.unwrap(),
            vec![flow("2026-12-05", 3_000_000, 0), flow("2026-12-06", 12_000_000, 0)],
            "{backend}"
        );
        assert_eq!(
            daily_flows(&db, owner, at("2026-12-06T12:00:00Z")).await.unwrap(),
            vec![flow("2026-12-06", 0, 11_999_998)],
            "{backend}"
        );
    }
}

/// The audit record and the output are stored with lz4 on a server that has it (this one
/// must: the CI's Postgres is built with lz4, as Debian's is).
#[tokio::test]
async fn postgres_compresses_records_and_outputs_with_lz4() {
    let Some(test_db) = crate::helpers::postgres().await else {
        eprintln!("SKIPPED: TEST_DATABASE_URL is not set; this test is about Postgres only");
        return;
    };
    for (table, column) in [("auctions", "record"), ("jobs", "output")] {
        let row = test_db
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT attcompression::text AS method FROM pg_attribute \
                 WHERE attrelid = $1::regclass AND attname = $2",
                [table.into(), column.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        let method: String = row.try_get("", "method").unwrap();
        assert_eq!(method, "l", "{table}.{column}");
    }
}

/// A new SQLite file is made of 1 KiB pages (a job's commit writes each page it dirties whole
/// into the WAL); a file that already exists keeps the page size it was made with.
#[tokio::test]
async fn a_new_sqlite_file_has_small_pages_and_an_old_one_keeps_its_own() {
    let page_size = |db: &registry::DatabaseConnection| {
        let db = db.clone();
        async move {
            let row = db
                .query_one_raw(Statement::from_string(DbBackend::Sqlite, "PRAGMA page_size"))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<i64>(0).unwrap()
        }
    };
    let fresh = sqlite_migrated(None).await;
    assert_eq!(page_size(&fresh.db).await, 1024);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.db");
    let old = rusqlite::Connection::open(&file).unwrap();
    old.execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
        .unwrap();
    drop(old);
    let db =
        registry::connect(&format!("sqlite://{}?mode=rwc", file.display()), Some(2)).await.unwrap();
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(page_size(&db).await, 4096);
}
