//! The dashboard's figures equal sums over the ledger, day by UTC day, on both backends: a
//! capture a millisecond before midnight and one at midnight fall on their own days.

use auction_engine::MicroCredits;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use registry::figures::{
    DailyFlow, HourlyFlow, MarketActivity, MarketDay, active_agents_by_category, daily_flows,
    hourly_flows, market_activity, market_days,
};
use registry::ledger::{self, Capture, HoldRequest, Payee, Payout};
use uuid::Uuid;

use crate::helpers::{all_backends, assert_ledger_consistent, user};

fn credits(n: i64) -> MicroCredits {
    MicroCredits::from_credits(n).unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// A job of `caller` served by `owner`'s agent at `when`: `charge` from the caller, all but
/// one credit to the owner, one to the platform.
async fn job(
    db: &registry::DatabaseConnection,
    caller: registry::UserId,
    owner: registry::UserId,
    charge: i64,
    when: DateTime<Utc>,
) {
    let job_id = Uuid::now_v7();
    let hold = HoldRequest {
        job_id,
        payer: caller,
        amount: credits(charge),
        expires_at: when + Duration::minutes(15),
        from_line: None,
    };
    ledger::place_hold(db, hold, Uuid::now_v7(), when).await.unwrap();
    let capture = Capture {
        job_id,
        charge: credits(charge),
        payouts: vec![
            Payout { payee: Payee::User(owner), amount: credits(charge - 1) },
            Payout { payee: Payee::PlatformRevenue, amount: credits(1) },
        ],
        memo: None,
    };
    ledger::capture(db, capture, when).await.unwrap();
}

#[tokio::test]
async fn daily_flows_split_at_utc_midnight_and_sum_to_the_ledger() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let caller = user(&db).await;
        let owner = user(&db).await;
        let stranger = user(&db).await;
        let granted = at("2026-12-01T12:00:00Z");
        for wallet in [caller, stranger] {
            ledger::ensure_monthly_grant(&db, wallet, credits(100), granted).await.unwrap();
        }

        job(&db, caller, owner, 3, at("2026-12-05T23:59:59.999Z")).await;
        job(&db, caller, owner, 5, at("2026-12-06T00:00:00Z")).await;
        job(&db, caller, owner, 7, at("2026-12-06T23:00:00Z")).await;
        // Another caller's job the same day counts for the owner, never for the caller.
        job(&db, stranger, owner, 11, at("2026-12-06T01:00:00Z")).await;
        // A day before the window.
        job(&db, caller, owner, 2, at("2026-12-04T10:00:00Z")).await;

        let day = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap();
        let since = at("2026-12-05T00:00:00Z");
        let flow = |d: &str, spent: i64, earned: i64| DailyFlow {
            day: day(d),
            spent: credits(spent),
            earned: credits(earned),
        };
        assert_eq!(
            daily_flows(&db, caller, since).await.unwrap(),
            vec![flow("2026-12-05", 3, 0), flow("2026-12-06", 12, 0)],
            "{backend}"
        );
        assert_eq!(
            daily_flows(&db, owner, since).await.unwrap(),
            vec![flow("2026-12-05", 0, 2), flow("2026-12-06", 0, 4 + 6 + 10)],
            "{backend}"
        );
        // A window that starts at midnight leaves out the millisecond before it.
        assert_eq!(
            daily_flows(&db, caller, at("2026-12-06T00:00:00Z")).await.unwrap(),
            vec![flow("2026-12-06", 12, 0)],
            "{backend}"
        );

        // Over all time the days sum to the wallet's job entries, which sum to its change.
        let all = daily_flows(&db, caller, at("2000-01-01T00:00:00Z")).await.unwrap();
        let spent: i64 = all.iter().map(|f| f.spent.micros()).sum();
        let entries = ledger::entries(&db, caller, None, 200).await.unwrap().entries;
        let captured: i64 =
            entries.iter().filter(|e| e.kind == "capture").map(|e| -e.amount.micros()).sum();
        assert_eq!(spent, captured, "{backend}");
        assert_eq!(
            ledger::balance(&db, caller).await.unwrap().balance,
            credits(100 - 3 - 5 - 7 - 2),
            "{backend}"
        );

        // By hour: the millisecond before midnight in its own hour.
        let hour = |text: &str, spent: i64| HourlyFlow {
            hour: at(text),
            spent: credits(spent),
            earned: MicroCredits::ZERO,
        };
        assert_eq!(
            hourly_flows(&db, caller, at("2026-12-05T23:30:00Z")).await.unwrap(),
            vec![
                hour("2026-12-05T23:00:00Z", 3),
                hour("2026-12-06T00:00:00Z", 5),
                hour("2026-12-06T23:00:00Z", 7)
            ],
            "{backend}"
        );

        // The market: every wallet's charges and the platform's fee (one credit a job), per
        // day.
        let market = market_days(&db, since).await.unwrap();
        let day_of_market = |d: &str, volume: i64, fees: i64| MarketDay {
            day: day(d),
            volume: credits(volume),
            fees: credits(fees),
        };
        assert_eq!(
            market,
            vec![day_of_market("2026-12-05", 3, 1), day_of_market("2026-12-06", 5 + 7 + 11, 3)],
            "{backend}"
        );
        // No jobs or auctions were run here (captures only), and no agent is registered.
        assert_eq!(
            market_activity(&db, at("2000-01-01T00:00:00Z")).await.unwrap(),
            MarketActivity::default(),
            "{backend}"
        );
        assert!(active_agents_by_category(&db).await.unwrap().is_empty(), "{backend}");
        assert_ledger_consistent(&db).await;
    }
}
