//! The credits ledger under concurrency and repetition, on every backend.

use std::sync::Arc;

use auction_engine::MicroCredits;
use chrono::{Duration, Utc};
use registry::RegistryError;
use registry::ledger::{
    self, Applied, Capture, HoldRequest, PLATFORM_REVENUE_ACCOUNT, Payee, Payout,
};
use uuid::Uuid;

use crate::helpers::{all_backends, assert_ledger_consistent, user};

fn credits(n: i64) -> MicroCredits {
    MicroCredits::from_credits(n).unwrap()
}

/// A capture of `charge` from `job_id`'s hold, paid out as `paid` to the platform.
fn to_platform(job_id: Uuid, charge: MicroCredits, paid: MicroCredits) -> Capture {
    Capture {
        job_id,
        charge,
        payouts: vec![Payout { payee: Payee::PlatformRevenue, amount: paid }],
        memo: None,
    }
}

fn hold(job_id: Uuid, payer: registry::UserId, amount: MicroCredits) -> HoldRequest {
    HoldRequest {
        job_id,
        payer,
        amount,
        expires_at: Utc::now() + Duration::minutes(15),
        from_line: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_holds_against_a_balance_for_a_hundred() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let payer = user(&db).await;
        assert_eq!(
            ledger::ensure_monthly_grant(&db, payer, credits(100), Utc::now()).await.unwrap(),
            Applied::Done
        );

        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    let job = Uuid::new_v4();
                    let result = ledger::place_hold(
                        &db,
                        hold(job, payer, credits(1)),
                        Uuid::new_v4(),
                        Utc::now(),
                    )
                    .await;
                    (job, result)
                })
            })
            .collect();
        let mut held_jobs = Vec::new();
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                (job, Ok(())) => held_jobs.push(job),
                (_, Err(RegistryError::InsufficientCredits { requested, available })) => {
                    assert_eq!(requested, credits(1));
                    assert!(
                        available < credits(1),
                        "{backend}: refused with {available} available"
                    );
                    refused += 1;
                }
                (_, Err(other)) => panic!("{backend}: unexpected error {other:?}"),
            }
        }
        assert_eq!(held_jobs.len(), 100, "{backend}: exactly the covered holds succeed");
        assert_eq!(refused, 900, "{backend}");
        let balance = ledger::balance(&db, payer).await.unwrap();
        assert_eq!(
            (balance.balance, balance.held, balance.available),
            (credits(100), credits(100), MicroCredits::ZERO),
            "{backend}"
        );

        // Capture every hold concurrently: the money goes to the platform.
        let captures: Vec<_> = held_jobs
            .iter()
            .map(|job| {
                let db = db.clone();
                let capture = to_platform(*job, credits(1), credits(1));
                tokio::spawn(async move { ledger::capture(&db, capture, Utc::now()).await })
            })
            .collect();
        for capture in captures {
            assert_eq!(capture.await.unwrap().unwrap(), Applied::Done, "{backend}");
        }
        let balance = ledger::balance(&db, payer).await.unwrap();
        assert_eq!(
            (balance.balance, balance.held),
            (MicroCredits::ZERO, MicroCredits::ZERO),
            "{backend}"
        );
        let page = ledger::entries(&db, payer, None, 200).await.unwrap();
        let sum: i64 = page.entries.iter().map(|e| e.amount.micros()).sum();
        assert_eq!(
            sum,
            balance.balance.micros(),
            "{backend}: balance equals the sum of its entries"
        );
        assert_eq!(page.entries.len(), 101, "{backend}: one grant and 100 charges");
        assert_ledger_consistent(&db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_monthly_grant_is_credited_once_under_fifty_concurrent_first_requests() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let payer = user(&db).await;
        let now = Utc::now();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    ledger::ensure_monthly_grant(&db, payer, credits(100), now).await
                })
            })
            .collect();
        let mut done = 0;
        for task in tasks {
            if task.await.unwrap().unwrap() == Applied::Done {
                done += 1;
            }
        }
        assert_eq!(done, 1, "{backend}: exactly one call grants");
        assert_eq!(ledger::balance(&db, payer).await.unwrap().balance, credits(100), "{backend}");

        // Next month: granted again, once.
        let next_month = now + Duration::days(32);
        assert_eq!(
            ledger::ensure_monthly_grant(&db, payer, credits(100), next_month).await.unwrap(),
            Applied::Done
        );
        assert_eq!(
            ledger::ensure_monthly_grant(&db, payer, credits(100), next_month).await.unwrap(),
            Applied::AlreadyDone
        );
        // A clock that steps back into the old month grants nothing.
        assert_eq!(
            ledger::ensure_monthly_grant(&db, payer, credits(100), now).await.unwrap(),
            Applied::AlreadyDone
        );
        assert_eq!(ledger::balance(&db, payer).await.unwrap().balance, credits(200), "{backend}");
        assert_ledger_consistent(&db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capture_and_release_repeated_twenty_times_change_nothing_after_the_first() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let caller = user(&db).await;
        let owner = user(&db).await;
        ledger::ensure_monthly_grant(&db, caller, credits(100), Utc::now()).await.unwrap();

        // Capture: caller pays 5 + 1 call fee; owner earns 5 - 1 win fee; platform takes 2.
        let job = Uuid::new_v4();
        ledger::place_hold(&db, hold(job, caller, credits(10)), Uuid::new_v4(), Utc::now())
            .await
            .unwrap();
        let capture = Capture {
            job_id: job,
            charge: credits(6),
            payouts: vec![
                Payout { payee: Payee::User(owner), amount: credits(4) },
                Payout { payee: Payee::PlatformRevenue, amount: credits(2) },
            ],
            memo: Some("job".into()),
        };
        let repeats: Vec<_> = (0..20)
            .map(|_| {
                let db = db.clone();
                let capture = capture.clone();
                tokio::spawn(
                    async move { ledger::capture(&db, capture, Utc::now()).await.unwrap() },
                )
            })
            .collect();
        let mut outcomes = Vec::new();
        for repeat in repeats {
            outcomes.push(repeat.await.unwrap());
        }
        assert_eq!(outcomes.iter().filter(|o| **o == Applied::Done).count(), 1, "{backend}");
        let caller_balance = ledger::balance(&db, caller).await.unwrap();
        assert_eq!(
            (caller_balance.balance, caller_balance.held),
            (credits(94), MicroCredits::ZERO),
            "{backend}"
        );
        assert_eq!(ledger::balance(&db, owner).await.unwrap().balance, credits(4), "{backend}");
        // Releasing a captured hold is refused and moves nothing.
        assert!(matches!(
            ledger::release(&db, job, Utc::now()).await,
            Err(RegistryError::HoldNotActive { .. })
        ));

        // Release: the whole hold comes back, once.
        let job = Uuid::new_v4();
        ledger::place_hold(&db, hold(job, caller, credits(30)), Uuid::new_v4(), Utc::now())
            .await
            .unwrap();
        assert_eq!(ledger::balance(&db, caller).await.unwrap().available, credits(64));
        let mut done = 0;
        for _ in 0..20 {
            if ledger::release(&db, job, Utc::now()).await.unwrap() == Applied::Done {
                done += 1;
            }
        }
        assert_eq!(done, 1, "{backend}");
        let after = ledger::balance(&db, caller).await.unwrap();
        assert_eq!(
            (after.balance, after.held, after.available),
            (credits(94), MicroCredits::ZERO, credits(94)),
            "{backend}"
        );
        // Capturing a released hold is refused and moves nothing.
        let late = to_platform(job, credits(1), credits(1));
        assert!(matches!(
            ledger::capture(&db, late, Utc::now()).await,
            Err(RegistryError::HoldNotActive { .. })
        ));
        assert_eq!(ledger::balance(&db, caller).await.unwrap().balance, credits(94));
        assert_ledger_consistent(&db).await;
    }
}

#[tokio::test]
async fn a_hold_past_its_expiry_is_voided_by_the_reaper() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let caller = user(&db).await;
        ledger::ensure_monthly_grant(&db, caller, credits(100), Utc::now()).await.unwrap();
        let now = Utc::now();
        let stale = Uuid::new_v4();
        let fresh = Uuid::new_v4();
        let expiring = HoldRequest {
            job_id: stale,
            payer: caller,
            amount: credits(40),
            expires_at: now + Duration::seconds(60),
            from_line: None,
        };
        ledger::place_hold(&db, expiring, Uuid::new_v4(), now).await.unwrap();
        let lasting = HoldRequest {
            job_id: fresh,
            payer: caller,
            amount: credits(10),
            expires_at: now + Duration::hours(1),
            from_line: None,
        };
        ledger::place_hold(&db, lasting, Uuid::new_v4(), now).await.unwrap();
        assert_eq!(ledger::balance(&db, caller).await.unwrap().held, credits(50));

        assert_eq!(
            ledger::reap_expired_holds(&db, now, 100).await.unwrap(),
            0,
            "{backend}: nothing expired yet"
        );
        let later = now + Duration::seconds(61);
        assert_eq!(ledger::reap_expired_holds(&db, later, 100).await.unwrap(), 1, "{backend}");
        assert_eq!(
            ledger::reap_expired_holds(&db, later, 100).await.unwrap(),
            0,
            "{backend}: voided once"
        );
        let balance = ledger::balance(&db, caller).await.unwrap();
        assert_eq!((balance.balance, balance.held), (credits(100), credits(10)), "{backend}");
        // The job that crashed can no longer be captured; the live one still can.
        let capture = |job| to_platform(job, credits(1), credits(1));
        assert!(matches!(
            ledger::capture(&db, capture(stale), later).await,
            Err(RegistryError::HoldNotActive { .. })
        ));
        assert_eq!(ledger::capture(&db, capture(fresh), later).await.unwrap(), Applied::Done);
        assert_ledger_consistent(&db).await;
    }
}

#[tokio::test]
async fn bad_settlements_are_refused_before_anything_is_written() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let caller = user(&db).await;
        let owner = user(&db).await;
        ledger::ensure_monthly_grant(&db, caller, credits(100), Utc::now()).await.unwrap();
        let job = Uuid::new_v4();
        ledger::place_hold(&db, hold(job, caller, credits(5)), Uuid::new_v4(), Utc::now())
            .await
            .unwrap();

        let unbalanced = to_platform(job, credits(3), credits(2));
        assert!(
            matches!(
                ledger::capture(&db, unbalanced, Utc::now()).await,
                Err(RegistryError::Unbalanced(_))
            ),
            "{backend}"
        );
        let over_hold = to_platform(job, credits(6), credits(6));
        assert!(
            matches!(
                ledger::capture(&db, over_hold, Utc::now()).await,
                Err(RegistryError::Unbalanced(_))
            ),
            "{backend}"
        );
        // The owner has nothing, so a win fee above the price cannot be covered.
        let owner_short = Capture {
            job_id: job,
            charge: credits(1),
            payouts: vec![
                Payout { payee: Payee::User(owner), amount: credits(-1) },
                Payout { payee: Payee::PlatformRevenue, amount: credits(2) },
            ],
            memo: None,
        };
        assert!(
            matches!(
                ledger::capture(&db, owner_short, Utc::now()).await,
                Err(RegistryError::AccountCannotCover { .. })
            ),
            "{backend}"
        );
        // Nothing moved, and the hold is still there to settle properly.
        let balance = ledger::balance(&db, caller).await.unwrap();
        assert_eq!((balance.balance, balance.held), (credits(100), credits(5)), "{backend}");
        assert!(matches!(
            ledger::place_hold(&db, hold(job, caller, credits(1)), Uuid::new_v4(), Utc::now())
                .await,
            Err(RegistryError::HoldExists { .. })
        ));
        assert_eq!(ledger::release(&db, job, Utc::now()).await.unwrap(), Applied::Done);
        assert_ledger_consistent(&db).await;
    }
}

/// A long random sequence of grants, holds, captures (with random splits) and releases from
/// several users at once keeps every invariant.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_concurrent_traffic_keeps_the_ledger_balanced() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let mut users = Vec::new();
        for _ in 0..4 {
            let id = user(&db).await;
            ledger::ensure_monthly_grant(&db, id, credits(100), Utc::now()).await.unwrap();
            users.push(id);
        }
        let users = Arc::new(users);
        let workers: Vec<_> = (0..8_u64)
            .map(|worker| {
                let db = db.clone();
                let users = Arc::clone(&users);
                tokio::spawn(async move {
                    // A small deterministic generator per worker (xorshift).
                    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (worker + 1);
                    let mut next = move || {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state
                    };
                    for _ in 0..40 {
                        let payer = users[(next() % 4) as usize];
                        let payee = users[(next() % 4) as usize];
                        let job = Uuid::new_v4();
                        let amount = MicroCredits::from_micros((next() % 20_000_000) as i64 + 1);
                        if ledger::place_hold(
                            &db,
                            hold(job, payer, amount),
                            Uuid::new_v4(),
                            Utc::now(),
                        )
                        .await
                        .is_err()
                        {
                            continue;
                        }
                        if next() % 3 == 0 {
                            ledger::release(&db, job, Utc::now()).await.unwrap();
                            continue;
                        }
                        let charge =
                            MicroCredits::from_micros((next() % amount.micros() as u64) as i64 + 1);
                        let fee = MicroCredits::from_micros(charge.micros() / 10);
                        let capture = Capture {
                            job_id: job,
                            charge,
                            payouts: vec![
                                Payout {
                                    payee: Payee::User(payee),
                                    amount: charge.checked_sub(fee).unwrap(),
                                },
                                Payout { payee: Payee::PlatformRevenue, amount: fee },
                            ],
                            memo: None,
                        };
                        ledger::capture(&db, capture, Utc::now()).await.unwrap();
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        assert_ledger_consistent(&db).await;
        let mut total = 0;
        for id in users.iter() {
            let balance = ledger::balance(&db, *id).await.unwrap();
            assert!(
                balance.available.micros() >= 0 && balance.held == MicroCredits::ZERO,
                "{backend}: {balance:?}"
            );
            total += balance.balance.micros();
        }
        // Money is conserved: what users hold plus platform revenue is what was granted.
        let platform = ledger::account_balance(&db, PLATFORM_REVENUE_ACCOUNT).await.unwrap();
        assert_eq!(total + platform.micros(), credits(400).micros(), "{backend}");
        assert!(platform.micros() > 0, "{backend}: some traffic was captured");
    }
}

#[tokio::test]
async fn a_job_cut_off_by_a_crash_is_marked_failed_and_its_hold_voided() {
    use registry::jobs::{self, AuctionEntry, JobKind, NewJob};
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let caller = user(&db).await;
        ledger::ensure_monthly_grant(&db, caller, credits(100), Utc::now()).await.unwrap();
        let opened = Utc::now() - Duration::hours(7);
        let job_id = Uuid::now_v7();
        let job = NewJob {
            id: job_id,
            caller,
            kind: JobKind::Chat,
            category: "chat".into(),
            requested_model: "auction".into(),
            mode: "execute".into(),
            auction_id: Uuid::now_v7(),
            created_at: opened,
            instance: None,
            api_key: None,
            batch_line: None,
        };
        let auction = AuctionEntry {
            id: job.auction_id,
            category: "chat".into(),
            winner: None,
            clearing_price: None,
            record: "{}".into(),
            entrants: vec![],
        };
        let hold = HoldRequest {
            job_id,
            payer: caller,
            amount: credits(5),
            expires_at: opened + Duration::minutes(15),
            from_line: None,
        };
        jobs::open_job_with_hold(&db, job, auction, Some((hold, Uuid::now_v7()))).await.unwrap();
        assert_eq!(ledger::balance(&db, caller).await.unwrap().held, credits(5), "{backend}");

        // The sweep the server runs: holds first, then jobs.
        assert_eq!(ledger::reap_expired_holds(&db, Utc::now(), 100).await.unwrap(), 1, "{backend}");
        assert_eq!(
            jobs::fail_abandoned_jobs(&db, Utc::now() - Duration::hours(6), Utc::now())
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            jobs::fail_abandoned_jobs(&db, Utc::now() - Duration::hours(6), Utc::now())
                .await
                .unwrap(),
            0
        );
        let job = jobs::find_job(&db, caller, job_id).await.unwrap().unwrap();
        assert_eq!(job.status, "failed", "{backend}");
        let balance = ledger::balance(&db, caller).await.unwrap();
        assert_eq!(
            (balance.balance, balance.held),
            (credits(100), MicroCredits::ZERO),
            "{backend}: nothing charged"
        );
        assert_ledger_consistent(&db).await;
    }
}
