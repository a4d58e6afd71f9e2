//! The job writer: on a SQLite file it opens and finishes jobs with sealed scripts on a
//! connection of its own; anything short of a clean commit must fall back to the pooled path
//! and give exactly its answer. The same script runs on Postgres, where the writer is the
//! pooled path, so the two are held to one set of expectations.

use auction_engine::MicroCredits;
use chrono::{DateTime, Duration, Utc};
use registry::RegistryError;
use registry::UserId;
use registry::jobs::{
    self, AuctionEntry, JobKind, JobOutcome, JobStatus, JobWriter, NewJob, Settlement, WriterCounts,
};
use registry::ledger::{self, Capture, HoldRequest, PLATFORM_REVENUE_ACCOUNT, Payee, Payout};
use uuid::Uuid;

use crate::helpers::{all_backends, assert_ledger_consistent, user};

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
    };
    let auction = AuctionEntry {
        id: job.auction_id,
        category: "ocr".into(),
        winner: None,
        clearing_price: None,
        record: "{}".into(),
    };
    (job, auction)
}

fn hold(job: &NewJob, amount: MicroCredits, expires_at: DateTime<Utc>) -> (HoldRequest, Uuid) {
    (HoldRequest { job_id: job.id, payer: job.caller, amount, expires_at }, Uuid::now_v7())
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
async fn the_writer_commits_clean_jobs_and_gives_the_pooled_answer_to_every_refusal() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let writer = JobWriter::new(db.clone(), &test_db.url).await.unwrap();
        let (caller, owner) = (user(&db).await, user(&db).await);
        ledger::ensure_monthly_grant(&db, caller, credits(10), Utc::now()).await.unwrap();
        let later = Utc::now() + Duration::minutes(15);
        let platform_before = ledger::account_balance(&db, PLATFORM_REVENUE_ACCOUNT).await.unwrap();

        // A hold the caller can cover; then one it cannot, which writes nothing at all.
        let (a, a_auction) = new_job(caller);
        writer.open(a.clone(), a_auction, Some(hold(&a, credits(4), later))).await.unwrap();
        let (b, b_auction) = new_job(caller);
        let refused = writer.open(b.clone(), b_auction, Some(hold(&b, credits(7), later))).await;
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
        let again = NewJob { id: Uuid::now_v7(), ..again };
        let twice = writer
            .open(
                again.clone(),
                again_auction,
                Some((hold(&a, credits(1), later).0, Uuid::now_v7())),
            )
            .await;
        assert!(matches!(twice, Err(RegistryError::HoldExists { .. })), "{backend}: {twice:?}");
        assert!(jobs::find_job(&db, caller, again.id).await.unwrap().is_none(), "{backend}");

        // After the refusals the writer's connection is usable: no transaction was left open.
        let (c, c_auction) = new_job(caller);
        writer.open(c.clone(), c_auction, Some(hold(&c, credits(5), later))).await.unwrap();
        assert_eq!(ledger::balance(&db, caller).await.unwrap().held, credits(9), "{backend}");

        // A's capture, then the same capture again: the repeat changes nothing.
        for _ in 0..2 {
            writer
                .finish(a.id, outcome(JobStatus::Delivered), capture(a.id, 3, owner, 2), Vec::new())
                .await
                .unwrap();
        }
        let job = jobs::find_job(&db, caller, a.id).await.unwrap().unwrap();
        assert_eq!(job.status, "delivered", "{backend}");
        // The owner's share would take the owner below zero: refused, nothing written.
        let short = writer
            .finish(c.id, outcome(JobStatus::Delivered), capture(c.id, 1, owner, -3), Vec::new())
            .await;
        assert!(
            matches!(short, Err(RegistryError::AccountCannotCover { .. })),
            "{backend}: {short:?}"
        );
        assert_eq!(jobs::find_job(&db, caller, c.id).await.unwrap().unwrap().status, "running");
        writer
            .finish(c.id, outcome(JobStatus::Failed), Settlement::Release, Vec::new())
            .await
            .unwrap();

        // A hold the reaper voided cannot be captured any more.
        let (d, d_auction) = new_job(caller);
        let expired = Utc::now() - Duration::minutes(1);
        writer.open(d.clone(), d_auction, Some(hold(&d, credits(2), expired))).await.unwrap();
        assert_eq!(ledger::reap_expired_holds(&db, Utc::now(), 10).await.unwrap(), 1);
        let late = writer
            .finish(d.id, outcome(JobStatus::Delivered), capture(d.id, 1, owner, 1), Vec::new())
            .await;
        assert!(matches!(late, Err(RegistryError::HoldNotActive { .. })), "{backend}: {late:?}");

        let caller_balance = ledger::balance(&db, caller).await.unwrap();
        assert_eq!((caller_balance.balance, caller_balance.held), (credits(7), MicroCredits::ZERO));
        assert_eq!(ledger::balance(&db, owner).await.unwrap().balance, credits(2), "{backend}");
        assert_eq!(
            ledger::account_balance(&db, PLATFORM_REVENUE_ACCOUNT).await.unwrap(),
            platform_before.checked_add(credits(1)).unwrap(),
            "{backend}"
        );
        assert_ledger_consistent(&db).await;

        // Five clean transactions, five refusals. On a SQLite file the clean ones were sealed
        // (one or two round trips each) and the refusals were answered by the pooled path.
        let expected = match backend {
            "sqlite" => WriterCounts { sealed: 5, pooled: 5, batches: 5 },
            _ => WriterCounts { sealed: 0, pooled: 10, batches: 0 },
        };
        assert_eq!(writer.counts(), expected, "{backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_concurrent_jobs_against_credits_for_a_hundred_share_batches_exactly() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let writer = std::sync::Arc::new(JobWriter::new(db.clone(), &test_db.url).await.unwrap());
        let (caller, owner) = (user(&db).await, user(&db).await);
        ledger::ensure_monthly_grant(&db, caller, credits(100), Utc::now()).await.unwrap();
        let later = Utc::now() + Duration::minutes(15);
        let tasks: Vec<_> = (0..300)
            .map(|_| {
                let writer = std::sync::Arc::clone(&writer);
                tokio::spawn(async move {
                    let (job, auction) = new_job(caller);
                    let id = job.id;
                    match writer
                        .open(job.clone(), auction, Some(hold(&job, credits(1), later)))
                        .await
                    {
                        Ok(()) => {}
                        Err(RegistryError::InsufficientCredits { .. }) => return false,
                        Err(err) => panic!("open: {err:?}"),
                    }
                    writer
                        .finish(
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
        let caller_balance = ledger::balance(&db, caller).await.unwrap();
        assert_eq!(
            (caller_balance.balance, caller_balance.held),
            (MicroCredits::ZERO, MicroCredits::ZERO)
        );
        assert_eq!(ledger::balance(&db, owner).await.unwrap().balance, credits(100), "{backend}");
        assert_ledger_consistent(&db).await;
        let counts = writer.counts();
        if backend == "sqlite" {
            // 100 opens and 100 finishes committed sealed, in fewer transactions than that.
            assert_eq!(counts.sealed, 200, "{counts:?}");
            assert!(counts.batches < counts.sealed, "{counts:?}");
        }
    }
}

/// Two instances on one database: one stops heartbeating mid-job. The live one, past the
/// lease, fails the dead one's job, releases its hold and frees its in-flight key; its own work
/// and a live instance's are left alone.
#[tokio::test]
async fn a_live_instance_ends_a_dead_instances_work_and_only_that() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let writer = JobWriter::new(db.clone(), &test_db.url).await.unwrap();
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

/// The batch's read and its writes are two calls on the writer's connection. If the pool
/// replaced that connection between them (sqlx closes one past its lifetime when it is
/// returned), the read's `BEGIN` would end with the old connection and the writes would run
/// outside any transaction. Here the pool replaces it at every checkout: every job still
/// commits sealed, in one transaction each, and the ledger is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_holds_its_connection_from_begin_to_commit() {
    let test_db = crate::helpers::sqlite().await;
    let db = test_db.db.clone();
    let lifetime = Some(std::time::Duration::from_nanos(1));
    let writer =
        JobWriter::with_connection_lifetime(db.clone(), &test_db.url, lifetime).await.unwrap();
    let (caller, owner) = (user(&db).await, user(&db).await);
    ledger::ensure_monthly_grant(&db, caller, credits(20), Utc::now()).await.unwrap();
    let later = Utc::now() + Duration::minutes(15);
    for _ in 0..20 {
        let (job, auction) = new_job(caller);
        writer.open(job.clone(), auction, Some(hold(&job, credits(1), later))).await.unwrap();
        writer
            .finish(job.id, outcome(JobStatus::Delivered), capture(job.id, 1, owner, 1), Vec::new())
            .await
            .unwrap();
    }
    assert_eq!(writer.counts(), WriterCounts { sealed: 40, pooled: 0, batches: 40 });
    let caller_balance = ledger::balance(&db, caller).await.unwrap();
    assert_eq!(
        (caller_balance.balance, caller_balance.held),
        (MicroCredits::ZERO, MicroCredits::ZERO)
    );
    assert_eq!(ledger::balance(&db, owner).await.unwrap().balance, credits(20));
    assert_ledger_consistent(&db).await;
}
