//! Holds on Postgres: one conditional update (what Gavel does) against a Redis script (the
//! alternative the money-path design asked to measure), at concurrency 64, every hold on one
//! payer (a caller with many jobs in flight: the row every hold of theirs must lock).
//!
//! - `postgres`: `registry::ledger::place_hold`, one transaction: the conditional update of
//!   the payer's `held` (`balance - held >= amount`) and the hold's row.
//! - `redis script`: the same check and reservation in one Lua script on a hash per payer.
//!   Redis here keeps nothing on disk, and the database stays the authority, so a real design
//!   would still write each hold's row: that is the third path.
//! - `redis script + hold row`: the script, then the hold's row inserted in Postgres (no
//!   update of the payer's row, so no lock shared by the payer's holds).
//!
//! Run with `scripts/bench holds` (Postgres and Redis from `TEST_DATABASE_URL` and
//! `TEST_REDIS_URL`, the development machine's by default). One run: quote its medians.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use auction_engine::MicroCredits;
use chrono::Utc;
use registry::UserId;
use registry::ledger::HoldRequest;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use uuid::Uuid;

const CONCURRENCY: usize = 64;
const HOLDS: usize = 10_000;

/// Reserves ARGV[1] micro-credits of hash KEYS[1] (fields `balance`, `held`) if available;
/// 1 when reserved, 0 when short.
const RESERVE: &str = r"
local balance = tonumber(redis.call('HGET', KEYS[1], 'balance') or '0')
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
local amount = tonumber(ARGV[1])
if balance - held < amount then return 0 end
redis.call('HINCRBY', KEYS[1], 'held', amount)
return 1
";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let redis_url =
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = redis::Client::open(redis_url).unwrap();
    let conn = redis::aio::ConnectionManager::new(redis).await.unwrap();
    // Gavel's job transactions commit with `synchronous_commit = off`; `place_hold` alone does
    // not. Both settings, for every path alike (set on the whole database).
    for synchronous_commit in ["on", "off"] {
        let temp = registry::testing::TempPostgres::create(&admin).await.unwrap();
        let setup = registry::connect(&temp.url, Some(1)).await.unwrap();
        let database = temp.url.rsplit('/').next().unwrap().to_owned();
        setup
            .execute_unprepared(&format!(
                "ALTER DATABASE \"{database}\" SET synchronous_commit = {synchronous_commit}"
            ))
            .await
            .unwrap();
        drop(setup);
        let db = registry::connect(&temp.url, Some(CONCURRENCY as u32)).await.unwrap();
        {
            use migrations::MigratorTrait;
            migrations::Migrator::up(&db, None).await.unwrap();
        }
        let rows = compare(&db, &conn).await;
        println!(
            "\nHolds on one payer, {HOLDS} at concurrency {CONCURRENCY}, \
             synchronous_commit = {synchronous_commit}"
        );
        println!("| path | holds/s | p50 | p99 |");
        println!("|---|---|---|---|");
        for (name, (rate, latencies)) in rows {
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
            println!("| {name} | {rate:.0} | {:.0} us | {:.0} us |", us(p(0.5)), us(p(0.99)));
        }
    }
}

type Row = (&'static str, (f64, Vec<Duration>));

/// The three paths on `db`, one after the other.
async fn compare(db: &DatabaseConnection, conn: &redis::aio::ConnectionManager) -> Vec<Row> {
    let payer = payer(db).await;
    let key = format!("gavel-bench:holds:{}", Uuid::now_v7());
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("balance")
        .arg(i64::MAX / 4)
        .arg("held")
        .arg(0)
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    let script = Arc::new(redis::Script::new(RESERVE));

    let pool = db.clone();
    let postgres = run(move || {
        let db = pool.clone();
        async move {
            let request = HoldRequest {
                job_id: Uuid::now_v7(),
                payer,
                amount: MicroCredits::from_micros(1),
                expires_at: Utc::now() + chrono::Duration::minutes(10),
                from_line: None,
            };
            registry::ledger::place_hold(&db, request, Uuid::now_v7(), Utc::now()).await.unwrap();
        }
    })
    .await;
    let (c, s, k) = (conn.clone(), Arc::clone(&script), key.clone());
    let redis_only = run(move || {
        let (mut conn, script, key) = (c.clone(), Arc::clone(&s), k.clone());
        async move {
            let reserved: i64 = script.key(&key).arg(1).invoke_async(&mut conn).await.unwrap();
            assert_eq!(reserved, 1);
        }
    })
    .await;
    let (c, s, k, pool) = (conn.clone(), Arc::clone(&script), key.clone(), db.clone());
    let redis_and_row = run(move || {
        let (mut conn, script, key, db) = (c.clone(), Arc::clone(&s), k.clone(), pool.clone());
        async move {
            let reserved: i64 = script.key(&key).arg(1).invoke_async(&mut conn).await.unwrap();
            assert_eq!(reserved, 1);
            insert_hold_row(&db, payer).await;
        }
    })
    .await;
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn.clone()).await.unwrap();
    vec![
        ("postgres: conditional update + hold row (Gavel)", postgres),
        ("redis script alone (not durable)", redis_only),
        ("redis script + hold row in postgres", redis_and_row),
    ]
}

/// A user with a wallet holding plenty.
async fn payer(db: &DatabaseConnection) -> UserId {
    let email = registry::Email::parse("payer@bench.example.com").unwrap();
    let new_user = registry::NewUser { email, handle: None, password_hash: "not a hash".into() };
    let user = registry::create_user(db, new_user, Uuid::now_v7(), Utc::now()).await.unwrap();
    let amount = MicroCredits::from_micros(i64::MAX / 4);
    registry::ledger::admin_grant(db, user.id, amount, Uuid::now_v7(), Utc::now()).await.unwrap();
    user.id
}

/// A hold's row, as `place_hold` writes it, without touching the payer's row.
async fn insert_hold_row(db: &DatabaseConnection, payer: UserId) {
    let statement = sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "INSERT INTO holds (id, job_id, account_id, amount, status, expires_at_ms, created_at) \
         VALUES ($1, $2, $3, 1, 'active', $4, $5)",
        [
            Uuid::now_v7().into(),
            Uuid::now_v7().into(),
            payer.0.into(),
            (Utc::now().timestamp_millis() + 600_000).into(),
            Utc::now().into(),
        ],
    );
    db.execute_raw(statement).await.unwrap();
}

/// `HOLDS` calls of `hold` over `CONCURRENCY` tasks: (holds per second, sorted latencies).
async fn run<F, Fut>(hold: F) -> (f64, Vec<Duration>)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (hold, counter) = (hold.clone(), Arc::clone(&counter));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while counter.fetch_add(1, Ordering::Relaxed) < HOLDS {
                    let begun = Instant::now();
                    hold().await;
                    latencies.push(begun.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(HOLDS);
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}
