//! The bank: on a SQLite file the process is the authority (balances and holds in memory, one
//! group-committing writer); on Postgres the database is. Both are held to one set of
//! expectations: every refusal is decided and named, nothing refused is written, and the
//! ledger stays exact.

use std::sync::Arc;

use auction_engine::MicroCredits;
use chrono::{DateTime, Duration, Utc};
use registry::batches::{self, LineEnd};
use registry::jobs::{
    self, AuctionEntry, Entrant, JobKind, JobOutcome, JobStatus, NewJob, ReputationUpdate,
    Settlement,
};
use registry::ledger::{self, Capture, HoldRequest, PLATFORM_REVENUE_ACCOUNT, Payee, Payout};
use registry::{Bank, RegistryError, UserId};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use uuid::Uuid;

use crate::helpers::{all_backends, assert_ledger_consistent, batch_rows, user};

fn credits(n: i64) -> MicroCredits {
    MicroCredits::from_credits(n).unwrap()
}

fn new_job(caller: UserId) -> (NewJob, AuctionEntry) {
    let job = NewJob {
        id: Uuid::now_v7(),
        caller,
        kind: JobKind::Json,
        category: "ocr".into(),
        requested_model: "auction".into(),
        mode: "execute".into(),
        auction_id: Uuid::now_v7(),
        created_at: Utc::now(),
        instance: None,
        api_key: None,
        batch_line: None,
    };
    let auction = AuctionEntry {
        id: job.auction_id,
        category: "ocr".into(),
        winner: None,
        clearing_price: None,
        record: "{}".into(),
        entrants: entrants(caller).to_vec(),
    };
    (job, auction)
}

/// Two agents bid in each of `caller`'s auctions: the first wins at a price above its bid.
fn entrants(caller: UserId) -> [Entrant; 2] {
    let agent = |n: u128| Uuid::from_u128(caller.0.as_u128() ^ n);
    [
        Entrant { agent_id: agent(1), rank: 1, bid: credits(1), price: credits(2) },
        Entrant { agent_id: agent(2), rank: 2, bid: credits(3), price: credits(3) },
    ]
}

/// Asserts that `caller`'s `jobs` recorded auctions are each counted once in the owners'
/// rollup (`agent_auction_hours`): one entry for each entrant, one win for the first, its bid
/// and price summed. A refused opening, a rolled-back unit and a replayed batch count nothing
/// twice and nothing extra.
async fn assert_auction_hours(db: &DatabaseConnection, caller: UserId, jobs: i64, backend: &str) {
    let [first, second] = entrants(caller);
    let sql = "SELECT CAST(COALESCE(SUM(entered), 0) AS BIGINT) AS entered, \
               CAST(COALESCE(SUM(won), 0) AS BIGINT) AS won, \
               CAST(COALESCE(SUM(won_bid), 0) AS BIGINT) AS won_bid, \
               CAST(COALESCE(SUM(won_price), 0) AS BIGINT) AS won_price \
               FROM agent_auction_hours WHERE agent_id = $1";
    let sums = async |agent: Uuid| {
        let backend = db.get_database_backend();
        let row = db
            .query_one_raw(Statement::from_sql_and_values(backend, sql, [agent.into()]))
            .await
            .unwrap()
            .unwrap();
        let get = |column: &str| -> i64 { row.try_get::<i64>("", column).unwrap() };
        [get("entered"), get("won"), get("won_bid"), get("won_price")]
    };
    let million = 1_000_000;
    assert_eq!(
        sums(first.agent_id).await,
        [jobs, jobs, jobs * million, jobs * 2 * million],
        "{backend}"
    );
    assert_eq!(sums(second.agent_id).await, [jobs, 0, 0, 0], "{backend}");
}

/// A reputation update for an agent that does not exist: the unit carrying it fails after
/// writing its job's rows.
fn unknown_agent() -> Vec<ReputationUpdate> {
    vec![ReputationUpdate {
        agent: Uuid::now_v7(),
        outcome: auction_engine::reputation::Outcome::Success,
        latency_ms: 1.0,
        now_ms: 0,
        half_life_ms: 1,
    }]
}

fn hold(job: &NewJob, amount: MicroCredits, expires_at: DateTime<Utc>) -> (HoldRequest, Uuid) {
    (
        HoldRequest { job_id: job.id, payer: job.caller, amount, expires_at, from_line: None },
        Uuid::now_v7(),
    )
}

fn outcome(status: JobStatus) -> JobOutcome {
    JobOutcome {
        status,
        served: None,
        clearing_price: None,
        agent_cost: MicroCredits::ZERO,
        call_fee: MicroCredits::ZERO,
        win_fee: MicroCredits::ZERO,
        total_cost: MicroCredits::ZERO,
        input_tokens: None,
        output_tokens: None,
        latency_ms: None,
        output: Some("{\"text\":\"ok\"}".into()),
        error: None,
        attempts: Vec::new(),
        finished_at: Utc::now(),
    }
}

/// `charge` from the job's hold: `owner` gets `owner_share`, the platform the rest.
fn capture(job_id: Uuid, charge: i64, owner: UserId, owner_share: i64) -> Settlement {
    Settlement::Capture(Capture {
        job_id,
        charge: credits(charge),
        payouts: vec![
            Payout { payee: Payee::User(owner), amount: credits(owner_share) },
            Payout { payee: Payee::PlatformRevenue, amount: credits(charge - owner_share) },
        ],
        memo: None,
    })
}

#[tokio::test]
async fn the_bank_commits_jobs_and_decides_every_refusal() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let bank = Bank::new(db.clone(), &test_db.url).await.unwrap();
        assert_eq!(bank.is_authority(), backend == "sqlite");
        // Users who sign up after the bank started are read into it when first needed.
        let (caller, owner) = (user(&db).await, user(&db).await);
        bank.ensure_monthly_grant(caller, credits(10), Utc::now()).await.unwrap();
        let later = Utc::now() + Duration::minutes(15);
        let platform_before = ledger::account_balance(&db, PLATFORM_REVENUE_ACCOUNT).await.unwrap();

        // A hold the caller can cover; then one it cannot, which writes nothing at all.
        let (a, a_auction) = new_job(caller);
        bank.open(a.clone(), a_auction, Some(hold(&a, credits(4), later))).await.unwrap();
        let (b, b_auction) = new_job(caller);
        let refused = bank.open(b.clone(), b_auction, Some(hold(&b, credits(7), later))).await;
        assert!(
            matches!(
                refused,
                Err(RegistryError::InsufficientCredits { requested, available })
                    if requested == credits(7) && available == credits(6)
            ),
            "{backend}: {refused:?}"
        );
        assert!(jobs::find_job(&db, caller, b.id).await.unwrap().is_none(), "{backend}");
        // A second hold on one job is refused too.
        let (again, again_auction) = new_job(caller);
        let twice = bank
            .open(
                again.clone(),
                again_auction,
                Some((hold(&a, credits(1), later).0, Uuid::now_v7())),
            )
            .await;
        assert!(matches!(twice, Err(RegistryError::HoldExists { .. })), "{backend}: {twice:?}");
        assert!(jobs::find_job(&db, caller, again.id).await.unwrap().is_none(), "{backend}");

        let (c, c_auction) = new_job(caller);
        bank.open(c.clone(), c_auction, Some(hold(&c, credits(5), later))).await.unwrap();
        assert_eq!(bank.balance(caller).await.unwrap().held, credits(9), "{backend}");

        // A's capture; a second one charges nothing more.
        bank.finish(a.id, outcome(JobStatus::Delivered), capture(a.id, 3, owner, 2), Vec::new())
            .await
            .unwrap();
        let repeat = bank
            .finish(a.id, outcome(JobStatus::Delivered), capture(a.id, 3, owner, 2), Vec::new())
            .await;
        assert!(
            matches!(repeat, Ok(()) | Err(RegistryError::NotFound { .. })),
            "{backend}: {repeat:?}"
        );
        let job = jobs::find_job(&db, caller, a.id).await.unwrap().unwrap();
        assert_eq!(job.status, "delivered", "{backend}");
        // The owner's share would take the owner below zero: refused, and the job can still end.
        let short = bank
            .finish(c.id, outcome(JobStatus::Delivered), capture(c.id, 1, owner, -3), Vec::new())
            .await;
        assert!(
            matches!(short, Err(RegistryError::AccountCannotCover { .. })),
            "{backend}: {short:?}"
        );
        bank.finish(c.id, outcome(JobStatus::Failed), Settlement::Release, Vec::new())
            .await
            .unwrap();

        // A job whose hold expired is ended by the reaper and cannot be captured any more.
        let (d, d_auction) = new_job(caller);
        let expired = Utc::now() - Duration::minutes(1);
        bank.open(d.clone(), d_auction, Some(hold(&d, credits(2), expired))).await.unwrap();
        assert_eq!(bank.reap_expired(Utc::now()).await.unwrap(), 1, "{backend}");
        let late = bank
            .finish(d.id, outcome(JobStatus::Delivered), capture(d.id, 1, owner, 1), Vec::new())
            .await;
        assert!(
            matches!(
                late,
                Err(RegistryError::HoldNotActive { .. } | RegistryError::NotFound { .. })
            ),
            "{backend}: {late:?}"
        );

        let caller_balance = bank.balance(caller).await.unwrap();
        assert_eq!((caller_balance.balance, caller_balance.held), (credits(7), MicroCredits::ZERO));
        assert_eq!(ledger::balance(&db, caller).await.unwrap().balance, credits(7), "{backend}");
        assert_eq!(bank.balance(owner).await.unwrap().balance, credits(2), "{backend}");
        assert_eq!(
            ledger::account_balance(&db, PLATFORM_REVENUE_ACCOUNT).await.unwrap(),
            platform_before.checked_add(credits(1)).unwrap(),
            "{backend}"
        );
        assert_ledger_consistent(&db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_concurrent_jobs_against_credits_for_a_hundred_share_batches_exactly() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let bank = Arc::new(Bank::new(db.clone(), &test_db.url).await.unwrap());
        let (caller, owner) = (user(&db).await, user(&db).await);
        bank.ensure_monthly_grant(caller, credits(100), Utc::now()).await.unwrap();
        let later = Utc::now() + Duration::minutes(15);
        let tasks: Vec<_> = (0..300)
            .map(|_| {
                let bank = Arc::clone(&bank);
                tokio::spawn(async move {
                    let (job, auction) = new_job(caller);
                    let id = job.id;
                    match bank.open(job.clone(), auction, Some(hold(&job, credits(1), later))).await
                    {
                        Ok(()) => {}
                        Err(RegistryError::InsufficientCredits { .. }) => return false,
                        Err(err) => panic!("open: {err:?}"),
                    }
                    bank.finish(
                        id,
                        outcome(JobStatus::Delivered),
                        capture(id, 1, owner, 1),
                        Vec::new(),
                    )
                    .await
                    .unwrap();
                    true
                })
            })
            .collect();
        let mut delivered = 0;
        for task in tasks {
            delivered += usize::from(task.await.unwrap());
        }
        assert_eq!(delivered, 100, "{backend}");
        assert_auction_hours(&db, caller, 100, backend).await;
        let caller_balance = bank.balance(caller).await.unwrap();
        assert_eq!(
            (caller_balance.balance, caller_balance.held),
            (MicroCredits::ZERO, MicroCredits::ZERO)
        );
        assert_eq!(bank.balance(owner).await.unwrap().balance, credits(100), "{backend}");
        assert_ledger_consistent(&db).await;
        let counts = bank.counts();
        // On a SQLite file 100 jobs and the grant, each one unit; on Postgres 100 openings
        // and 100 endings. In fewer transactions than units.
        let units = if backend == "sqlite" { 101 } else { 200 };
        assert!(counts.units >= units, "{backend}: {counts:?}");
        assert!(counts.batches < counts.units, "{backend}: {counts:?}");
    }
}

/// One unit that fails (its reputation update names no agent) is answered with its error; the
/// units committed beside it stand. On a SQLite file it is rolled back to its savepoint and
/// its hold is free again; on Postgres the batch misses and is replayed unit by unit, and the
/// failed job stays open with its hold (for a retry, or the reaper).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_unit_does_not_spoil_its_batch() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let bank = Arc::new(Bank::new(db.clone(), &test_db.url).await.unwrap());
        let (caller, owner) = (user(&db).await, user(&db).await);
        bank.ensure_monthly_grant(caller, credits(50), Utc::now()).await.unwrap();
        let later = Utc::now() + Duration::minutes(15);
        let mut opened = Vec::new();
        for _ in 0..50 {
            let (job, auction) = new_job(caller);
            bank.open(job.clone(), auction, Some(hold(&job, credits(1), later))).await.unwrap();
            opened.push(job.id);
        }
        let before = bank.counts();
        let bad = opened[25];
        let tasks: Vec<_> = opened
            .iter()
            .map(|&id| {
                let bank = Arc::clone(&bank);
                tokio::spawn(async move {
                    let reputation = if id == bad { unknown_agent() } else { Vec::new() };
                    bank.finish(
                        id,
                        outcome(JobStatus::Delivered),
                        capture(id, 1, owner, 1),
                        reputation,
                    )
                    .await
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        for (id, result) in opened.iter().zip(&results) {
            if *id == bad {
                assert!(
                    matches!(result, Err(RegistryError::NotFound { what: "agent" })),
                    "{backend}: {result:?}"
                );
                let row = jobs::find_job(&db, caller, *id).await.unwrap();
                match backend {
                    "sqlite" => assert!(row.is_none()),
                    _ => assert_eq!(row.unwrap().status, "running"),
                }
            } else {
                assert!(result.is_ok(), "{backend}: {result:?}");
                let row = jobs::find_job(&db, caller, *id).await.unwrap().unwrap();
                assert_eq!(row.status, "delivered", "{backend}");
            }
        }
        // On a SQLite file the bad job's unit (job, record and all) was rolled back; on
        // Postgres its opening stands.
        let recorded = if backend == "sqlite" { 49 } else { 50 };
        assert_auction_hours(&db, caller, recorded, backend).await;
        let held = if backend == "sqlite" { MicroCredits::ZERO } else { credits(1) };
        let caller_balance = bank.balance(caller).await.unwrap();
        assert_eq!((caller_balance.balance, caller_balance.held), (credits(1), held), "{backend}");
        assert_eq!(ledger::balance(&db, owner).await.unwrap().balance, credits(49), "{backend}");
        let counts = bank.counts();
        let (units, batches) = (counts.units - before.units, counts.batches - before.batches);
        assert_eq!(units, 49, "{backend}: {counts:?}");
        assert!(batches < units, "{backend}: the finishes shared commits: {counts:?}");
        // On a SQLite file the batch that held the bad unit ran again, once, unit by unit (or
        // the bad unit had the writer to itself); on Postgres its batch was split and replayed.
        let reruns = counts.reruns - before.reruns;
        match backend {
            "sqlite" => assert!(reruns <= 1, "{counts:?}"),
            _ => assert!(reruns >= 1, "{counts:?}"),
        }
        assert_ledger_consistent(&db).await;
    }
}

/// A batch runs straight through, without a savepoint per unit; when one of its units fails,
/// the whole transaction is rolled back and the batch runs again with a savepoint per unit.
/// Made certain here: a second connection holds the file's write lock while the finishes
/// queue, so the first waits alone in the writer and the other nine share the next batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_with_a_failing_unit_runs_again_unit_by_unit() {
    let test_db = crate::helpers::sqlite().await;
    let db = test_db.db.clone();
    let bank = Arc::new(Bank::new(db.clone(), &test_db.url).await.unwrap());
    let (caller, owner) = (user(&db).await, user(&db).await);
    bank.ensure_monthly_grant(caller, credits(20), Utc::now()).await.unwrap();
    let later = Utc::now() + Duration::minutes(15);
    let mut opened = Vec::new();
    for _ in 0..10 {
        let (job, auction) = new_job(caller);
        bank.open(job.clone(), auction, Some(hold(&job, credits(1), later))).await.unwrap();
        opened.push(job.id);
    }
    let file = test_db.url.trim_start_matches("sqlite://").split('?').next().unwrap().to_owned();
    let blocker = rusqlite::Connection::open(file).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let before = bank.counts();
    let bad = opened[5];
    let finish = |id: Uuid| {
        let bank = Arc::clone(&bank);
        tokio::spawn(async move {
            let reputation = if id == bad { unknown_agent() } else { Vec::new() };
            bank.finish(id, outcome(JobStatus::Delivered), capture(id, 1, owner, 1), reputation)
                .await
        })
    };
    let mut tasks = vec![finish(opened[0])];
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    tasks.extend(opened[1..].iter().map(|&id| finish(id)));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    blocker.execute_batch("COMMIT").unwrap();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    for (id, result) in opened.iter().zip(&results) {
        if *id == bad {
            assert!(matches!(result, Err(RegistryError::NotFound { what: "agent" })), "{result:?}");
            assert!(jobs::find_job(&db, caller, *id).await.unwrap().is_none());
        } else {
            assert!(result.is_ok(), "{result:?}");
            let row = jobs::find_job(&db, caller, *id).await.unwrap().unwrap();
            assert_eq!(row.status, "delivered");
        }
    }
    let counts = bank.counts();
    assert_eq!(
        (counts.units - before.units, counts.batches - before.batches, counts.reruns),
        (9, 2, 1),
        "the first finish alone, then nine in one batch, run again once: {counts:?}"
    );
    let caller_balance = bank.balance(caller).await.unwrap();
    assert_eq!((caller_balance.balance, caller_balance.held), (credits(11), MicroCredits::ZERO));
    assert_eq!(ledger::balance(&db, owner).await.unwrap().balance, credits(9));
    // The rollups are summed per batch: the rerun counts the nine committed jobs once each
    // and the rolled-back one not at all.
    assert_auction_hours(&db, caller, 9, "sqlite").await;
    assert_ledger_consistent(&db).await;
}

/// A lone unit commits without a savepoint: when it fails after writing part of its rows, the
/// whole transaction rolls back, so nothing of it stays, and the next lone unit commits.
#[tokio::test]
async fn a_lone_failing_unit_leaves_nothing_behind() {
    let test_db = crate::helpers::sqlite().await;
    let db = test_db.db.clone();
    let bank = Bank::new(db.clone(), &test_db.url).await.unwrap();
    let (caller, owner) = (user(&db).await, user(&db).await);
    bank.ensure_monthly_grant(caller, credits(10), Utc::now()).await.unwrap();
    let later = Utc::now() + Duration::minutes(15);
    let (bad, auction) = new_job(caller);
    bank.open(bad.clone(), auction, Some(hold(&bad, credits(2), later))).await.unwrap();
    // The job's row and its auction record are written before the unknown agent's reputation
    // is read, and refused.
    let unknown = unknown_agent();
    let result = bank
        .finish(bad.id, outcome(JobStatus::Delivered), capture(bad.id, 2, owner, 1), unknown)
        .await;
    assert!(matches!(result, Err(RegistryError::NotFound { what: "agent" })), "{result:?}");
    assert!(jobs::find_job(&db, caller, bad.id).await.unwrap().is_none(), "no job row");
    assert!(jobs::find_auction(&db, caller, bad.auction_id).await.unwrap().is_none(), "no record");
    let wallet = bank.balance(caller).await.unwrap();
    assert_eq!((wallet.balance, wallet.held), (credits(10), MicroCredits::ZERO), "nothing moved");

    let (good, auction) = new_job(caller);
    bank.open(good.clone(), auction, Some(hold(&good, credits(2), later))).await.unwrap();
    let settled = capture(good.id, 2, owner, 1);
    bank.finish(good.id, outcome(JobStatus::Delivered), settled, Vec::new()).await.unwrap();
    assert!(jobs::find_job(&db, caller, good.id).await.unwrap().is_some());
    assert_eq!(bank.balance(caller).await.unwrap().balance, credits(8));
    assert_ledger_consistent(&db).await;
}

/// Under steady writes the WAL stays bounded: the checkpointer restarts it past 32 MiB, so it
/// holds that plus what arrives between two checkpoints. (With passive checkpoints alone it
/// grew by every unit's pages until the writes paused: 1.3 GB after 12 s of sequential jobs.)
/// One task finishes jobs back to back, each with a 10 KB audit record, over 400 MB of log in
/// all; the file is watched as they go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_steady_writes() {
    let test_db = crate::helpers::sqlite().await;
    let db = test_db.db.clone();
    let bank = Arc::new(Bank::new(db.clone(), &test_db.url).await.unwrap());
    let wal = format!("{}-wal", registry::sqlite_file(&test_db.url).unwrap().display());
    let (caller, owner) = (user(&db).await, user(&db).await);
    bank.ensure_monthly_grant(caller, credits(1_000_000), Utc::now()).await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (done, wal) = (Arc::clone(&done), wal.clone());
        tokio::spawn(async move {
            let mut largest = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            largest
        })
    };
    let later = Utc::now() + Duration::minutes(15);
    for _ in 0..6_000 {
        let (job, mut auction) = new_job(caller);
        // Random hex does not compress: each record still puts 10 KB into the log.
        auction.record = (0..313).map(|_| Uuid::new_v4().simple().to_string()).collect();
        bank.open(job.clone(), auction, Some(hold(&job, credits(2), later))).await.unwrap();
        let settled = capture(job.id, 2, owner, 1);
        bank.finish(job.id, outcome(JobStatus::Delivered), settled, Vec::new()).await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let largest = watcher.await.unwrap();
    // Unbounded, the log would pass 400 MB here. Bounded, it holds 32 MiB plus what arrives
    // between two checkpoints, which grows when the checkpointer thread waits for a core: a
    // fresh-clone CI run beside a release build saw 161 MiB, hence the margin.
    assert!(largest < 256 << 20, "the WAL reached {} MiB", largest >> 20);
    assert_ledger_consistent(&db).await;
}

/// The SQLite writer stores an audit record lz4-compressed (`auctions.record_lz4`, `record`
/// left empty), and the record reads back byte for byte. A record whose stored bytes are
/// damaged is an error naming the auction, not a wrong record or a huge allocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_stored_compressed_and_reads_back_whole() {
    let test_db = crate::helpers::sqlite().await;
    let db = test_db.db.clone();
    let bank = Bank::new(db.clone(), &test_db.url).await.unwrap();
    let (caller, owner) = (user(&db).await, user(&db).await);
    bank.ensure_monthly_grant(caller, credits(10), Utc::now()).await.unwrap();
    let (job, mut auction) = new_job(caller);
    // Shaped like a real record: ten candidates, the same keys each time.
    let candidates: Vec<serde_json::Value> = (0..10)
        .map(|rank| {
            serde_json::json!({"status": "ranked", "agent_id": Uuid::now_v7(), "rank": rank,
                "bid": format!("1.00{rank}"), "quality": {"reliability": 0.999_876_5,
                "reliability_source": "posterior_mean", "evidence": 4727.99 + f64::from(rank)},
                "price_basis": {"rule": "second_score", "runner_up": Uuid::now_v7(),
                "formula": "price = runner_up_effective_price x quality.factor"}})
        })
        .collect();
    let record = serde_json::json!({"id": auction.id, "candidates": candidates}).to_string();
    auction.record = record.clone();
    let later = Utc::now() + Duration::minutes(15);
    bank.open(job.clone(), auction, Some(hold(&job, credits(2), later))).await.unwrap();
    bank.finish(job.id, outcome(JobStatus::Delivered), capture(job.id, 2, owner, 1), Vec::new())
        .await
        .unwrap();

    let stored = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT record, length(record_lz4) AS packed FROM auctions WHERE id = $1",
            [job.auction_id.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    let text: String = stored.try_get("", "record").unwrap();
    let packed: i64 = stored.try_get("", "packed").unwrap();
    assert_eq!(text, "", "the text column is left empty");
    assert!(packed * 3 < record.len() as i64, "{packed} bytes for a {}-byte record", record.len());
    let audit = jobs::find_auction(&db, caller, job.auction_id).await.unwrap().unwrap();
    assert_eq!(audit.record, record);

    // A damaged length prefix (4 GiB) is refused before anything is allocated.
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE auctions SET record_lz4 = $1 WHERE id = $2",
        [vec![0xffu8, 0xff, 0xff, 0xff, 0x10, 0x61].into(), job.auction_id.into()],
    ))
    .await
    .unwrap();
    let damaged = jobs::find_auction(&db, caller, job.auction_id).await;
    assert!(
        matches!(&damaged, Err(RegistryError::Storage(text)) if text.contains(&job.auction_id.to_string())),
        "{damaged:?}"
    );
    // Reverting the migration would drop the only copy of the record: refused.
    use migrations::MigratorTrait;
    let reverted = migrations::Migrator::down(&db, Some(1)).await;
    assert!(reverted.is_err_and(|err| err.to_string().contains("record_lz4")));
}

/// The old sealed writer's hazard was a `BEGIN` and its writes on two pool checkouts. The
/// writer now owns one connection on one thread, so there is no pool to swap it: twenty jobs
/// in a row each commit whole, and the ledger is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_holds_its_connection_from_begin_to_commit() {
    let test_db = crate::helpers::sqlite().await;
    let db = test_db.db.clone();
    let bank = Bank::new(db.clone(), &test_db.url).await.unwrap();
    let (caller, owner) = (user(&db).await, user(&db).await);
    bank.ensure_monthly_grant(caller, credits(20), Utc::now()).await.unwrap();
    let later = Utc::now() + Duration::minutes(15);
    for _ in 0..20 {
        let (job, auction) = new_job(caller);
        bank.open(job.clone(), auction, Some(hold(&job, credits(1), later))).await.unwrap();
        bank.finish(
            job.id,
            outcome(JobStatus::Delivered),
            capture(job.id, 1, owner, 1),
            Vec::new(),
        )
        .await
        .unwrap();
    }
    // The caller read into the book, the grant, twenty jobs: a unit each. (The owner is only
    // ever credited, so it is never read: the file has its balance.)
    assert_eq!(bank.counts().units, 22);
    let caller_balance = ledger::balance(&db, caller).await.unwrap();
    assert_eq!(
        (caller_balance.balance, caller_balance.held),
        (MicroCredits::ZERO, MicroCredits::ZERO)
    );
    assert_eq!(ledger::balance(&db, owner).await.unwrap().balance, credits(20));
    assert_ledger_consistent(&db).await;
}

/// A process that stops with jobs open (a crash, as far as the file knows) leaves no trace of
/// them: the next bank on the file loads every balance from the entries, nothing held.
#[tokio::test]
async fn a_new_bank_on_the_file_starts_from_the_entries() {
    let test_db = crate::helpers::sqlite().await;
    let db = test_db.db.clone();
    let (caller, owner) = (user(&db).await, user(&db).await);
    let later = Utc::now() + Duration::minutes(15);
    let open_job = {
        let bank = Bank::new(db.clone(), &test_db.url).await.unwrap();
        bank.ensure_monthly_grant(caller, credits(10), Utc::now()).await.unwrap();
        let (job, auction) = new_job(caller);
        bank.open(job.clone(), auction, Some(hold(&job, credits(3), later))).await.unwrap();
        bank.finish(
            job.id,
            outcome(JobStatus::Delivered),
            capture(job.id, 3, owner, 2),
            Vec::new(),
        )
        .await
        .unwrap();
        let (open, auction) = new_job(caller);
        bank.open(open.clone(), auction, Some(hold(&open, credits(5), later))).await.unwrap();
        assert_eq!(bank.balance(caller).await.unwrap().held, credits(5));
        open.id
    };
    let bank = Bank::new(db.clone(), &test_db.url).await.unwrap();
    let caller_balance = bank.balance(caller).await.unwrap();
    assert_eq!((caller_balance.balance, caller_balance.held), (credits(7), MicroCredits::ZERO));
    assert_eq!(bank.balance(owner).await.unwrap().balance, credits(2));
    assert!(jobs::find_job(&db, caller, open_job).await.unwrap().is_none());
    // The month's grant is remembered: asking again grants nothing.
    let again = bank.ensure_monthly_grant(caller, credits(10), Utc::now()).await.unwrap();
    assert_eq!(again, ledger::Applied::AlreadyDone);
    assert_ledger_consistent(&db).await;
}

#[tokio::test]
async fn admin_grants_are_once_per_transfer_id() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let bank = Bank::new(db.clone(), &test_db.url).await.unwrap();
        let user = user(&db).await;
        let id = Uuid::now_v7();
        for expected in [ledger::Applied::Done, ledger::Applied::AlreadyDone] {
            let applied = bank.admin_grant(user, credits(5), id, Utc::now()).await.unwrap();
            assert_eq!(applied, expected, "{backend}");
        }
        assert_eq!(bank.balance(user).await.unwrap().balance, credits(5), "{backend}");
        let refused = bank.admin_grant(user, MicroCredits::ZERO, Uuid::now_v7(), Utc::now()).await;
        assert!(matches!(refused, Err(RegistryError::Invalid { .. })), "{backend}: {refused:?}");
        assert_ledger_consistent(&db).await;
    }
}

/// Two instances on one Postgres database: one stops heartbeating mid-job. The live one, past the
/// lease, fails the dead one's job, releases its hold and frees its in-flight key; its own work
/// and a live instance's are left alone.
#[tokio::test]
async fn a_live_instance_ends_a_dead_instances_work_and_only_that() {
    // Instances share a database on Postgres only: a SQLite file has one server (the data
    // lock), whose open jobs live in its memory and end with it.
    let Some(test_db) = crate::helpers::postgres().await else { return };
    let backend = "postgres";
    {
        let db = test_db.db.clone();
        let writer = Bank::new(db.clone(), &test_db.url).await.unwrap();
        assert!(!writer.is_authority());
        let caller = user(&db).await;
        ledger::ensure_monthly_grant(&db, caller, credits(10), Utc::now()).await.unwrap();
        let long_ago = Utc::now() - Duration::minutes(1);
        let (dead, live, me) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        registry::instances::register(&db, dead, long_ago).await.unwrap();
        registry::instances::register(&db, live, Utc::now()).await.unwrap();
        registry::instances::register(&db, me, Utc::now()).await.unwrap();
        let later = Utc::now() + Duration::minutes(15);
        let mut jobs_of = Vec::new();
        for owner in [dead, live, me] {
            let (job, auction) = new_job(caller);
            let job = NewJob { instance: Some(owner), ..job };
            writer.open(job.clone(), auction, Some(hold(&job, credits(2), later))).await.unwrap();
            registry::idempotency::begin_idempotent(
                &db,
                caller,
                &owner.to_string(),
                "h",
                Utc::now(),
                owner,
            )
            .await
            .unwrap();
            jobs_of.push(job.id);
        }
        assert_eq!(ledger::balance(&db, caller).await.unwrap().held, credits(6), "{backend}");

        let now = Utc::now();
        let reaped =
            registry::instances::reap_dead(&db, me, Some(now - Duration::seconds(15)), now)
                .await
                .unwrap();
        assert_eq!(
            (reaped.instances, reaped.jobs, reaped.holds, reaped.keys),
            (1, 1, 1, 1),
            "{backend}"
        );
        assert_eq!(ledger::balance(&db, caller).await.unwrap().held, credits(4), "{backend}");
        let status = |id| {
            let db = db.clone();
            async move { jobs::find_job(&db, caller, id).await.unwrap().unwrap().status }
        };
        assert_eq!(status(jobs_of[0]).await, JobStatus::Failed.as_str(), "{backend}");
        assert_eq!(status(jobs_of[1]).await, JobStatus::Running.as_str(), "{backend}");
        assert_eq!(status(jobs_of[2]).await, JobStatus::Running.as_str(), "{backend}");
        // The dead instance's key is free again; the live ones' are still in flight.
        let again =
            registry::idempotency::begin_idempotent(&db, caller, &dead.to_string(), "h", now, me)
                .await
                .unwrap();
        assert!(matches!(again, registry::idempotency::IdempotencyStart::Proceed), "{backend}");
        let busy =
            registry::idempotency::begin_idempotent(&db, caller, &live.to_string(), "h", now, me)
                .await
                .unwrap();
        assert!(matches!(busy, registry::idempotency::IdempotencyStart::InFlight), "{backend}");
        assert_ledger_consistent(&db).await;
    }
}

fn attempt(
    rank: u32,
    agent: Uuid,
    outcome: &str,
    latency_ms: u64,
    started_at: DateTime<Utc>,
) -> registry::jobs::Attempt {
    registry::jobs::Attempt {
        rank,
        agent_id: agent,
        agent_slug: "x/y".into(),
        price: credits(1),
        outcome: outcome.into(),
        http_status: None,
        error_code: None,
        latency_ms,
        started_at,
    }
}

fn update(
    agent: Uuid,
    outcome: auction_engine::reputation::Outcome,
    latency_ms: f64,
    now_ms: i64,
) -> ReputationUpdate {
    ReputationUpdate { agent, outcome, latency_ms, now_ms, half_life_ms: 7 * 86_400_000 }
}

/// Every finished job's attempts are counted once in `agent_service_hours`, on both backends,
/// concurrently (so batches carry several jobs of one agent and hour): the first-ranked agent's
/// errors, the second's successes as fallbacks in their latency bucket, and each agent's
/// reputation as the last write left it, equal to its stored reputation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_hours_count_every_attempt_once_with_the_latest_reputation() {
    use registry::agents::{self, AgentSpec, RawAgentSpec, RawPricing};
    use registry::figures;

    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let bank = Arc::new(Bank::new(db.clone(), &test_db.url).await.unwrap());
        let (caller, owner) = (user(&db).await, user(&db).await);
        let register = async |name: &str| {
            let spec = AgentSpec::parse(RawAgentSpec {
                name: Some(name.into()),
                kind: Some("json".into()),
                categories: Some(vec!["ocr".into()]),
                endpoint: Some("https://ocr.example.com/run".into()),
                pricing: Some(RawPricing {
                    per_call: Some("0.5".into()),
                    per_million_input_tokens: None,
                    per_million_output_tokens: None,
                }),
                ..RawAgentSpec::default()
            })
            .unwrap();
            agents::register_agent(&db, owner, spec, Uuid::now_v7(), Utc::now()).await.unwrap().id
        };
        let (failing, fallback) = (register("failing").await, register("fallback").await);
        let now = Utc::now();
        let jobs = 40_i64;
        let tasks: Vec<_> = (0..jobs)
            .map(|k| {
                let bank = Arc::clone(&bank);
                tokio::spawn(async move {
                    let (job, auction) = new_job(caller);
                    bank.open(job.clone(), auction, None).await.unwrap();
                    let mut ended = outcome(JobStatus::Delivered);
                    ended.finished_at = now;
                    ended.attempts = vec![
                        attempt(1, failing, if k % 2 == 0 { "error" } else { "timeout" }, 3, now),
                        attempt(2, fallback, "success", 120, now),
                    ];
                    use auction_engine::reputation::Outcome as Seen;
                    let at = now.timestamp_millis() + k;
                    let reputation = vec![
                        update(failing, Seen::Error, 3.0, at),
                        update(fallback, Seen::Success, 120.0, at),
                    ];
                    bank.finish(job.id, ended, Settlement::Nothing, reputation).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let hours =
            figures::agent_service_hours(&db, owner, now - Duration::hours(1)).await.unwrap();
        assert_eq!(hours.len(), 2, "{backend}: {hours:?}");
        let of = |agent: Uuid| hours.iter().find(|h| h.agent_id == agent).unwrap();
        let stored = async |agent: Uuid| {
            agents::list_own_agents(&db, owner)
                .await
                .unwrap()
                .into_iter()
                .find(|a| a.id == agent)
                .unwrap()
                .reputation
        };
        let failed = of(failing);
        assert_eq!(
            (failed.attempts, failed.successes, failed.errors, failed.timeouts, failed.fallbacks),
            (jobs, 0, jobs / 2, jobs / 2, 0),
            "{backend}"
        );
        let served = of(fallback);
        assert_eq!(
            (served.attempts, served.successes, served.errors, served.fallbacks),
            (jobs, jobs, 0, jobs),
            "{backend}"
        );
        // 120 ms is in the fourth bucket (up to 250 ms).
        assert_eq!(served.latency_buckets, [0, 0, 0, jobs, 0, 0, 0, 0, 0, 0], "{backend}");
        for (agent, hour) in [(failing, failed), (fallback, served)] {
            let now_stored = stored(agent).await;
            let snapshot = hour.reputation.unwrap();
            assert_eq!(
                (snapshot.successes, snapshot.failures, snapshot.updated_at_ms),
                (now_stored.successes, now_stored.failures, now_stored.updated_at_ms),
                "{backend}: the hour's reputation is the latest"
            );
        }
        // The pooled path (Postgres's replay of a missed batch) adds to the same rows.
        let (job, auction) = new_job(caller);
        jobs::open_job_with_hold(&db, job.clone(), auction, None).await.unwrap();
        let mut ended = outcome(JobStatus::Delivered);
        ended.finished_at = now;
        ended.attempts = vec![attempt(1, fallback, "success", 20, now)];
        let seen = auction_engine::reputation::Outcome::Success;
        let reputation = vec![update(fallback, seen, 20.0, now.timestamp_millis() + jobs)];
        jobs::finish_job(&db, job.id, ended, Settlement::Nothing, reputation).await.unwrap();
        let hours =
            figures::agent_service_hours(&db, owner, now - Duration::hours(1)).await.unwrap();
        let served = hours.iter().find(|h| h.agent_id == fallback).unwrap();
        assert_eq!(
            (served.attempts, served.successes, served.fallbacks),
            (jobs + 1, jobs + 1, jobs)
        );
        assert_eq!(served.latency_buckets[0], 1, "{backend}: 20 ms is in the first bucket");
        assert_eq!(
            served.reputation.unwrap().updated_at_ms,
            stored(fallback).await.updated_at_ms,
            "{backend}"
        );
        // Nobody else's rollup shows another owner's agents.
        let stranger = user(&db).await;
        let none = figures::agent_service_hours(&db, stranger, now - Duration::hours(1)).await;
        assert!(none.unwrap().is_empty(), "{backend}");
    }
}

/// Each finished job counts once for the API key that ran it, on both backends and through
/// the pooled path: jobs, delivered jobs and their `total_cost`, equal to the jobs' own rows;
/// a job run with no key (an access token) counts for none; one user never sees another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_usage_counts_each_finished_job_once_for_its_key() {
    use registry::figures;

    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let bank = Arc::new(Bank::new(db.clone(), &test_db.url).await.unwrap());
        let (caller, owner) = (user(&db).await, user(&db).await);
        bank.ensure_monthly_grant(caller, credits(100), Utc::now()).await.unwrap();
        let key = |name: &str| {
            let db = db.clone();
            let name = registry::KeyName::parse(name).unwrap();
            async move {
                registry::create_api_key(&db, caller, name, Uuid::now_v7(), Utc::now())
                    .await
                    .unwrap()
                    .info
                    .id
            }
        };
        let (first, second) = (key("first").await, key("second").await);
        let later = Utc::now() + Duration::minutes(15);
        // 12 jobs on the first key (every third one failed, nothing charged), 5 on the
        // second, 3 with no key: concurrently, so batches mix them.
        let plan: Vec<(Option<Uuid>, bool)> = (0..20)
            .map(|k| match k {
                0..12 => (Some(first), k % 3 != 0),
                12..17 => (Some(second), true),
                _ => (None, true),
            })
            .collect();
        let tasks: Vec<_> = plan
            .iter()
            .map(|&(api_key, delivered)| {
                let bank = Arc::clone(&bank);
                tokio::spawn(async move {
                    let (mut job, auction) = new_job(caller);
                    job.api_key = api_key;
                    bank.open(job.clone(), auction, Some(hold(&job, credits(2), later)))
                        .await
                        .unwrap();
                    let (status, settlement, cost) = if delivered {
                        (JobStatus::Delivered, capture(job.id, 2, owner, 1), credits(2))
                    } else {
                        (JobStatus::Failed, Settlement::Release, MicroCredits::ZERO)
                    };
                    let mut ended = outcome(status);
                    ended.total_cost = cost;
                    bank.finish(job.id, ended, settlement, Vec::new()).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // The pooled path: one more delivered job on the second key.
        let (mut job, auction) = new_job(caller);
        job.api_key = Some(second);
        jobs::open_job_with_hold(&db, job.clone(), auction, None).await.unwrap();
        let mut ended = outcome(JobStatus::Delivered);
        ended.total_cost = credits(3);
        jobs::finish_job(&db, job.id, ended, Settlement::Nothing, Vec::new()).await.unwrap();

        let since = Utc::now() - Duration::days(1);
        let days = figures::key_usage_days(&db, caller, since).await.unwrap();
        let total = |key: Uuid| {
            days.iter().filter(|d| d.api_key_id == key).fold((0, 0, 0), |(j, d, s), day| {
                (j + day.jobs, d + day.delivered, s + day.spent.micros())
            })
        };
        assert_eq!(total(first), (12, 8, 16_000_000), "{backend}: {days:?}");
        assert_eq!(total(second), (6, 6, 13_000_000), "{backend}: {days:?}");
        assert_eq!(days.iter().map(|d| d.jobs).sum::<i64>(), 18, "{backend}: no keyless job");
        // The jobs' own rows say the same.
        let sql = "SELECT CAST(COUNT(*) AS BIGINT) AS jobs, \
                   CAST(COALESCE(SUM(total_cost), 0) AS BIGINT) AS spent \
                   FROM jobs WHERE api_key_id = $1";
        for (key, expected) in [(first, (12, 16_000_000)), (second, (6, 13_000_000))] {
            let row = db
                .query_one_raw(Statement::from_sql_and_values(
                    db.get_database_backend(),
                    sql,
                    [key.into()],
                ))
                .await
                .unwrap()
                .unwrap();
            let counted: (i64, i64) =
                (row.try_get("", "jobs").unwrap(), row.try_get("", "spent").unwrap());
            assert_eq!(counted, expected, "{backend}");
        }
        assert!(figures::key_usage_days(&db, owner, since).await.unwrap().is_empty(), "{backend}");
        assert_ledger_consistent(&db).await;
    }
}

/// A batch of `lines` lines, each holding `share` credits of its reservation, stored through
/// the bank: `Err` when its owner cannot cover the whole reservation.
async fn batch_through(
    bank: &Bank,
    db: &DatabaseConnection,
    owner: UserId,
    lines: usize,
    share: i64,
    now_ms: i64,
) -> Result<Uuid, RegistryError> {
    let (batch, lines) = batch_rows(db, owner, lines, credits(share).micros(), now_ms).await;
    let id = batch.id;
    bank.create_batch(batch, lines).await.map(|()| id)
}

/// A batch line's job: its hold drawn from the line's share.
fn line_job(
    line: &batches::ClaimedLine,
    amount: i64,
) -> (NewJob, AuctionEntry, (HoldRequest, Uuid)) {
    let (mut job, auction) = new_job(line.owner);
    job.batch_line = Some(line.id);
    let from_line = line.share.map(|amount| ledger::LineShare { line: line.id, amount });
    let request = HoldRequest {
        job_id: job.id,
        payer: line.owner,
        amount: credits(amount),
        expires_at: Utc::now() + Duration::minutes(15),
        from_line,
    };
    (job, auction, (request, Uuid::now_v7()))
}

/// A batch reserves its most in one hold; spending elsewhere cannot touch it; each line's job
/// draws its hold from the line's share (a hold above the share takes the rest from the
/// wallet); a line that ends without a hold frees its share; cancel and expiry free what
/// unstarted lines held; a restart on a SQLite file reserves exactly what the lines still
/// hold; and the wallet's `held` is back to zero when every batch has ended.
#[tokio::test]
async fn a_batch_holds_once_and_each_line_draws_or_frees_its_share() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let mut bank = Bank::new(db.clone(), &test_db.url).await.unwrap();
        let (caller, owner) = (user(&db).await, user(&db).await);
        bank.ensure_monthly_grant(caller, credits(10), Utc::now()).await.unwrap();
        let now = Utc::now().timestamp_millis();
        let held = async |bank: &Bank| {
            let balance = bank.balance(caller).await.unwrap();
            (balance.balance, balance.held)
        };

        // Four lines of 2 credits: 8 held at once, 2 left available.
        let id = batch_through(&bank, &db, caller, 4, 2, now).await.unwrap();
        assert_eq!(held(&bank).await, (credits(10), credits(8)), "{backend}");
        // Neither a second batch nor a job elsewhere can take the first batch's credits.
        let second = batch_through(&bank, &db, caller, 2, 2, now).await;
        assert!(
            matches!(second, Err(RegistryError::InsufficientCredits { requested, available })
                if requested == credits(4) && available == credits(2)),
            "{backend}: {second:?}"
        );
        assert_eq!(batches::list_batches(&db, caller, None, 10).await.unwrap().len(), 1);
        let (elsewhere, auction) = new_job(caller);
        let later = Utc::now() + Duration::minutes(15);
        let refused =
            bank.open(elsewhere.clone(), auction, Some(hold(&elsewhere, credits(3), later)));
        assert!(
            matches!(refused.await, Err(RegistryError::InsufficientCredits { .. })),
            "{backend}"
        );

        let worker = Uuid::now_v7();
        let mut lines = batches::claim_lines(&db, worker, now, 600_000, 3, 100).await.unwrap();
        assert_eq!(lines.len(), 3, "{backend}");
        assert!(lines.iter().all(|line| line.share == Some(credits(2))), "{backend}");
        let (l3, l2, l1) = (lines.pop().unwrap(), lines.pop().unwrap(), lines.pop().unwrap());

        // Line 1: a hold of 2 drawn whole from its share (nothing more held), 1 captured.
        let (job, auction, request) = line_job(&l1, 2);
        bank.open(job.clone(), auction, Some(request)).await.unwrap();
        assert_eq!(held(&bank).await, (credits(10), credits(8)), "{backend}: drawn, not added");
        bank.finish(
            job.id,
            outcome(JobStatus::Delivered),
            capture(job.id, 1, owner, 1),
            Vec::new(),
        )
        .await
        .unwrap();
        let answered = LineEnd::Answered { job_id: job.id, body: "{}".into() };
        let recorded = bank.finish_line(worker, &l1, answered, now + 1).await.unwrap();
        assert_eq!((recorded.recorded, recorded.freed), (true, 0), "{backend}");
        assert_eq!(held(&bank).await, (credits(9), credits(6)), "{backend}");

        // Line 2: a hold of 3, one more than its share, then released.
        let (job, auction, request) = line_job(&l2, 3);
        bank.open(job.clone(), auction, Some(request)).await.unwrap();
        assert_eq!(held(&bank).await, (credits(9), credits(7)), "{backend}");
        bank.finish(job.id, outcome(JobStatus::Failed), Settlement::Release, Vec::new())
            .await
            .unwrap();
        let refused_line = |job_id| LineEnd::Refused {
            job_id,
            status_code: 502,
            code: "upstream_failed".into(),
            message: "x".into(),
        };
        let recorded = bank.finish_line(worker, &l2, refused_line(Some(job.id)), now + 2).await;
        assert_eq!(recorded.unwrap().freed, 0, "{backend}: its share went with its hold");
        // Line 3 ends before any hold: its share is freed with its end.
        let recorded = bank.finish_line(worker, &l3, refused_line(None), now + 3).await.unwrap();
        assert_eq!(recorded.freed, credits(2).micros(), "{backend}");
        assert_eq!(held(&bank).await, (credits(9), credits(2)), "{backend}: line 4's share");

        // A restart reads what the lines still hold.
        if bank.is_authority() {
            drop(bank);
            bank = Bank::new(db.clone(), &test_db.url).await.unwrap();
            assert_eq!(held(&bank).await, (credits(9), credits(2)), "{backend}: after restart");
        }

        // Cancel frees line 4's share; the batch has ended.
        let cancelled = bank.cancel_batch(caller, id, now + 4).await.unwrap().unwrap();
        assert_eq!(cancelled.status, batches::BatchStatus::Cancelled, "{backend}");
        assert_eq!(held(&bank).await, (credits(9), MicroCredits::ZERO), "{backend}");

        // Expiry frees what unstarted lines held.
        let expiring = batch_through(&bank, &db, caller, 3, 3, now).await.unwrap();
        assert_eq!(held(&bank).await, (credits(9), credits(9)), "{backend}");
        assert_eq!(bank.close_batches(now + 24 * 3_600_000 + 1).await.unwrap(), 1, "{backend}");
        let expired = batches::find_batch(&db, caller, expiring).await.unwrap().unwrap();
        assert_eq!(expired.status, batches::BatchStatus::Expired, "{backend}");
        assert_eq!(held(&bank).await, (credits(9), MicroCredits::ZERO), "{backend}");
        if !bank.is_authority() {
            // The database's own figure agrees.
            assert_eq!(ledger::balance(&db, caller).await.unwrap().held, MicroCredits::ZERO);
        }
        assert_ledger_consistent(&db).await;
    }
}
