//! Credits over HTTP: the monthly grant under concurrency, the ledger and its pagination, on
//! SQLite and on Postgres.

use auction_engine::MicroCredits;
use chrono::{Duration, Utc};
use registry::UserId;
use registry::jobs::{AuctionEntry, JobKind, JobOutcome, JobStatus, NewJob, Settlement};
use registry::ledger::{self, Capture, HoldRequest, Payee, Payout};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, json_body, spawn_app, spawn_app_on_postgres, spawn_app_with};

async fn apps() -> Vec<TestApp> {
    let mut apps = vec![spawn_app().await];
    if let Some(pg) = spawn_app_on_postgres().await {
        apps.push(pg);
    }
    apps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_first_requests_of_the_month_grant_once() {
    for app in apps().await {
        // A user that exists but has made no request this month yet (created directly, as an
        // import would), with an API key.
        let user_id = Uuid::now_v7();
        let email = registry::Email::parse(&format!("{}@example.com", user_id.simple())).unwrap();
        let new_user = registry::NewUser { email, handle: None, password_hash: "unused".into() };
        registry::create_user(&app.state.db, new_user, user_id, Utc::now()).await.unwrap();
        let name = registry::KeyName::parse("k").unwrap();
        let key = registry::create_api_key(
            &app.state.db,
            UserId(user_id),
            name,
            Uuid::now_v7(),
            Utc::now(),
        )
        .await
        .unwrap()
        .secret;
        // On Postgres, a second instance on the same database, as in a scaled-out deployment:
        // neither remembers anything about this user, only the ledger's guard can keep it to
        // one grant. (A SQLite file takes one server: there the book's check and the writer's
        // conditional update do it.)
        let fresh = if app.state.bank.is_authority() {
            None
        } else {
            let database_url = app.state.settings.database_url.clone();
            Some(spawn_app_with(|s| s.database.url = Some(database_url)).await)
        };
        let requests: Vec<_> = (0..50)
            .map(|i| {
                let target = fresh.as_ref().filter(|_| i % 2 == 1).unwrap_or(&app);
                let client = target.client.clone();
                let url = target.url("/api/credits");
                let key = key.clone();
                tokio::spawn(async move {
                    client.get(url).bearer_auth(key).send().await.unwrap().status()
                })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap(), 200);
        }
        let credits = json_body(app.get("/api/credits", Some(&key)).await).await;
        assert_eq!(credits["balance"], "100", "{credits}");
        let ledger = json_body(app.get("/api/credits/ledger", Some(&key)).await).await;
        assert_eq!(ledger["data"].as_array().unwrap().len(), 1, "one grant entry: {ledger}");
        let audit = ledger::audit_ledger(&app.state.db).await.unwrap();
        assert!(
            audit.mismatches.is_empty() && audit.total == 0 && audit.flow_mismatches.is_empty()
        );
    }
}

#[tokio::test]
async fn the_ledger_pages_newest_first_with_decimal_amounts() {
    for app in apps().await {
        let user = app.signup().await;
        let payer = UserId(user.id);
        // Five settled jobs of 1.5 credits each, through the bank the job path uses.
        for _ in 0..5 {
            let job = NewJob {
                id: Uuid::now_v7(),
                caller: payer,
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
                entrants: vec![],
            };
            let hold = HoldRequest {
                job_id: job.id,
                payer,
                amount: registry_credits("2"),
                expires_at: Utc::now() + Duration::minutes(5),
                from_line: None,
            };
            let job_id = job.id;
            app.state.bank.open(job, auction, Some((hold, Uuid::now_v7()))).await.unwrap();
            let capture = Capture {
                job_id,
                charge: registry_credits("1.5"),
                payouts: vec![Payout {
                    payee: Payee::PlatformRevenue,
                    amount: registry_credits("1.5"),
                }],
                memo: None,
            };
            let outcome = JobOutcome {
                status: JobStatus::Delivered,
                served: None,
                clearing_price: None,
                agent_cost: registry_credits("0.5"),
                call_fee: registry_credits("1"),
                win_fee: MicroCredits::ZERO,
                total_cost: registry_credits("1.5"),
                input_tokens: None,
                output_tokens: None,
                latency_ms: None,
                output: None,
                error: None,
                attempts: Vec::new(),
                finished_at: Utc::now(),
            };
            let settlement = Settlement::Capture(capture);
            app.state.bank.finish(job_id, outcome, settlement, Vec::new()).await.unwrap();
        }
        let credits = json_body(app.get("/api/credits", Some(&user.token)).await).await;
        assert_eq!(credits["balance"], "92.5");
        assert_eq!(credits["available"], "92.5");

        let first =
            json_body(app.get("/api/credits/ledger?limit=4", Some(&user.token)).await).await;
        let entries = first["data"].as_array().unwrap();
        assert_eq!(entries.len(), 4);
        assert!(entries.iter().all(|e| e["amount"] == "-1.5" && e["kind"] == "capture"));
        assert_eq!(first["has_more"], true);
        let cursor = first["next_cursor"].as_str().unwrap();
        let second = json_body(
            app.get(&format!("/api/credits/ledger?limit=4&cursor={cursor}"), Some(&user.token))
                .await,
        )
        .await;
        let rest = second["data"].as_array().unwrap();
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0]["amount"], "-1.5");
        assert_eq!(rest[1]["amount"], "100");
        assert_eq!(rest[1]["kind"], "grant");
        assert_eq!(second["next_cursor"], Value::Null);
        let ids: Vec<i64> = entries
            .iter()
            .chain(rest)
            .map(|e| e["id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, no overlap: {ids:?}");

        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=201", "limit"),
            ("limit=x", "limit"),
            ("cursor=abc", "cursor"),
        ] {
            let response =
                app.get(&format!("/api/credits/ledger?{query}"), Some(&user.token)).await;
            assert_eq!(response.status(), 422, "{query}");
            assert_eq!(json_body(response).await["error"]["field"], field);
        }
    }
}

#[tokio::test]
async fn another_users_ledger_is_invisible() {
    let app = spawn_app().await;
    let alice = app.signup().await;
    let bob = app.signup().await;
    let bobs = json_body(app.get("/api/credits/ledger", Some(&bob.token)).await).await;
    let entries = bobs["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "only bob's own grant");
    let alices = json_body(app.get("/api/credits/ledger", Some(&alice.token)).await).await;
    assert_ne!(alices["data"][0]["id"], entries[0]["id"]);
}

fn registry_credits(text: &str) -> auction_engine::MicroCredits {
    auction_engine::MicroCredits::parse_decimal(text).unwrap()
}
