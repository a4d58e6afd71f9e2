//! The market through the HTTP API with real agents on loopback: competition sets the price
//! (not the caller's cap), a cheaper reliable newcomer breaks in against a proven incumbent,
//! and a lone bidder's price does not feed on itself.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, json_body, spawn_app_with};
use crate::jobs::chat_agent;
use crate::test_agent::{Behaviour, TestAgent};

async fn app() -> TestApp {
    spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await
}

async fn funded(app: &TestApp, credits: i64) -> TestUser {
    let user = app.signup().await;
    let amount = auction_engine::MicroCredits::from_credits(credits).unwrap();
    let user_id = registry::UserId(user.id);
    app.state.bank.admin_grant(user_id, amount, Uuid::now_v7(), chrono::Utc::now()).await.unwrap();
    user
}

fn chat(content: &str) -> Behaviour {
    Behaviour::Chat { content: content.into(), prompt_tokens: 10, completion_tokens: 5 }
}

/// Runs one chat auction capped at `max_price`; returns (winner slug, clearing price, cost).
async fn auction(app: &TestApp, caller: &TestUser, max_price: &str) -> (String, String, f64) {
    let body = json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}], "auction": {"max_price": max_price}});
    let response = app.post_json("/v1/chat/completions", &body, Some(&caller.token)).await;
    assert_eq!(response.status(), 200);
    let body: Value = json_body(response).await;
    (
        body["auction"]["winner"].as_str().unwrap().to_owned(),
        body["auction"]["clearing_price"].as_str().unwrap().to_owned(),
        body["usage"]["cost"].as_f64().unwrap(),
    )
}

#[tokio::test]
async fn with_equal_quality_competition_sets_the_price_not_the_callers_cap() {
    let app = app().await;
    let caller = funded(&app, 200).await;
    let mut slugs = Vec::new();
    let mut agents = Vec::new();
    for (name, price) in [("one", "1"), ("onetwo", "1.2"), ("onefive", "1.5")] {
        let owner = app.signup().await;
        let agent = TestAgent::start(chat(name)).await;
        slugs.push(chat_agent(&app, &owner, name, &agent, price, json!({})).await.0);
        agents.push(agent);
    }
    // Newcomers and, later, proven agents alike: the cheapest wins and is paid the runner-up's
    // bid, 1.2, never the cap 3.
    for job in 0..40 {
        if job == 20 {
            // Registering an agent reloads the index, records included: from here on "one"
            // is measured and the others are newcomers to it.
            let owner = app.signup().await;
            let idle = TestAgent::start(chat("idle")).await;
            chat_agent(&app, &owner, "dear", &idle, "2.9", json!({})).await;
        }
        let (winner, price, cost) = auction(&app, &caller, "3").await;
        assert_eq!(winner, slugs[0], "job {job}");
        let price: f64 = price.parse().unwrap();
        assert!((1.15..=1.25).contains(&price), "job {job}: paid {price}");
        assert!((cost - price - 1.0).abs() < 1e-9, "the caller pays the price plus the fee");
    }
}

#[tokio::test]
async fn a_cheaper_reliable_newcomer_wins_against_a_proven_incumbent_at_once() {
    let app = app().await;
    let caller = funded(&app, 500).await;
    let (incumbent_owner, rival_owner, newcomer_owner) =
        (app.signup().await, app.signup().await, app.signup().await);
    let incumbent = TestAgent::start(chat("incumbent")).await;
    let rival = TestAgent::start(chat("rival")).await;
    let (incumbent_slug, _) =
        chat_agent(&app, &incumbent_owner, "incumbent", &incumbent, "1", json!({})).await;
    chat_agent(&app, &rival_owner, "rival", &rival, "1.5", json!({})).await;
    for _ in 0..30 {
        assert_eq!(auction(&app, &caller, "3").await.0, incumbent_slug);
    }
    // A newcomer bidding a third less, as reliable as the incumbent turns out to be.
    let newcomer = TestAgent::start(chat("newcomer")).await;
    let (newcomer_slug, _) =
        chat_agent(&app, &newcomer_owner, "newcomer", &newcomer, "0.67", json!({})).await;
    let mut first_win = None;
    let mut wins = 0;
    for job in 0..20 {
        let (winner, price, _) = auction(&app, &caller, "3").await;
        if winner == newcomer_slug {
            first_win.get_or_insert(job);
            wins += 1;
            // Paid about the incumbent's bid (the quality ratio is close to one), not the cap.
            let price: f64 = price.parse().unwrap();
            assert!((0.9..=1.1).contains(&price), "job {job}: paid {price}");
        }
    }
    assert_eq!(first_win, Some(0), "the newcomer starts at what the category achieves");
    assert!(wins >= 18, "the newcomer won {wins} of 20");
}

#[tokio::test]
async fn a_lone_bidder_is_paid_the_same_for_the_same_job_job_after_job() {
    let app = app().await;
    let caller = funded(&app, 100).await;
    let owner = app.signup().await;
    let ocr = TestAgent::start(Behaviour::Json(200, r#"{"text":"read"}"#.into())).await;
    let body = json!({"name": "lone", "kind": "json", "categories": ["ocr"], "endpoint": ocr.url, "pricing": {"per_call": "0.5"}});
    app.register_agent(&owner, &body).await;
    let job = json!({"category": "ocr", "input": {"image_url": "https://example.com/scan.png"}});
    for n in 0..12 {
        let result = json_body(app.post_json("/v1/jobs", &job, Some(&caller.token)).await).await;
        assert_eq!(result["status"], "delivered", "{result}");
        assert_eq!(result["auction"]["clearing_price"], "0.5", "job {n}: its own bid, every time");
        assert_eq!(result["cost"], "1.5", "job {n}");
    }
    assert_eq!(app.credits(&caller).await, ("182".into(), "0".into()));
}

#[tokio::test]
async fn deleting_a_failing_agent_and_registering_again_keeps_the_owners_record() {
    let app = app().await;
    let caller = funded(&app, 300).await;
    let (good_owner, bad_owner) = (app.signup().await, app.signup().await);
    let good = TestAgent::start(chat("good")).await;
    let broken = TestAgent::start(Behaviour::Json(500, "{}".into())).await;
    chat_agent(&app, &good_owner, "good", &good, "1", json!({})).await;
    let (_, bad_id) = chat_agent(&app, &bad_owner, "bad", &broken, "0.5", json!({})).await;
    // The cheap agent wins, fails, and the good one serves, until its breaker opens after five
    // failures: a record of failures.
    for _ in 0..12 {
        auction(&app, &caller, "3").await;
    }
    assert_eq!(broken.requests(), 5, "five failures on record");
    let gone = app.delete(&format!("/api/agents/{bad_id}"), Some(&bad_owner.token)).await;
    assert!(gone.status().is_success(), "{}", gone.status());
    let again = TestAgent::start(Behaviour::Json(500, "{}".into())).await;
    let (again_slug, _) = chat_agent(&app, &bad_owner, "bad-again", &again, "0.5", json!({})).await;
    let body = json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}], "auction": {"max_price": "3"}});
    let response = app.post_json("/v1/chat/completions", &body, Some(&caller.token)).await;
    let id = json_body(response).await["auction"]["id"].as_str().unwrap().to_owned();
    let audit = json_body(app.get(&format!("/api/auctions/{id}"), Some(&caller.token)).await).await;
    let candidate = audit["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["slug"] == again_slug.as_str())
        .unwrap()
        .clone();
    let prior = candidate["quality"]["prior_mean"].as_f64().unwrap();
    // Afresh it would start at the good owner's 100 %; on its owner's record it starts at
    // (2 x 1.0 + 0) / (2 + 5) = 0.29.
    assert!(prior < 0.35, "the new agent starts from its owner's record, not afresh: {prior}");
    assert_eq!(again.requests(), 0, "and does not win: {}", audit["outcome"]["explanation"]);
}
