//! The real-time path: live bids under a deadline, circuit breakers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, json_body, spawn_app_with};
use crate::test_agent::{Behaviour, TestAgent};

async fn app_with(configure: impl FnOnce(&mut server::configuration::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
        configure(s);
    })
    .await
}

fn chat(content: &str) -> Behaviour {
    Behaviour::Chat { content: content.into(), prompt_tokens: 3, completion_tokens: 2 }
}

async fn agent(
    app: &TestApp,
    owner: &TestUser,
    name: &str,
    endpoint: &TestAgent,
    price: &str,
    bid_url: Option<&TestAgent>,
) -> String {
    let mut body = json!({
        "name": name, "kind": "openai-chat", "categories": ["chat"], "endpoint": endpoint.url,
        "upstream_model": "m", "pricing": {"per_call": price},
    });
    if let Some(bidder) = bid_url {
        body["bid_url"] = json!(format!("{}/bid", bidder.url));
    }
    let response = app.post_json("/api/agents", &body, Some(&owner.token)).await;
    let created = json_body(response).await;
    created["id"].as_str().unwrap_or_else(|| panic!("{created}")).to_owned()
}

fn ask() -> Value {
    json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}], "auction": {"max_price": "6", "objective": "cost"}})
}

async fn audit_of(app: &TestApp, caller: &TestUser, response: reqwest::Response) -> (Value, Value) {
    let auction_id = response.headers()["x-gavel-auction-id"].to_str().unwrap().to_owned();
    let body = json_body(response).await;
    (
        body,
        json_body(app.get(&format!("/api/auctions/{auction_id}"), Some(&caller.token)).await).await,
    )
}

#[tokio::test]
async fn a_live_bid_that_undercuts_the_sheet_wins_at_most_the_runner_up_price() {
    let app = app_with(|_| {}).await;
    let caller = app.signup().await;
    let (live_owner, sheet_owner) = (app.signup().await, app.signup().await);
    let endpoint = TestAgent::start(chat("live wins")).await;
    let bidder = TestAgent::start(Behaviour::Json(200, "{\"price\": \"1\"}".into())).await;
    let other = TestAgent::start(chat("sheet")).await;
    agent(&app, &live_owner, "live", &endpoint, "5", Some(&bidder)).await;
    agent(&app, &sheet_owner, "sheet", &other, "3", None).await;

    let response = app.post_json("/v1/chat/completions", &ask(), Some(&caller.token)).await;
    assert_eq!(response.status(), 200);
    let (body, audit) = audit_of(&app, &caller, response).await;
    assert_eq!(body["choices"][0]["message"]["content"], "live wins");
    assert_eq!(body["auction"]["clearing_price"], "3", "the runner-up's bid, not the sheet's 5");
    let winner = &audit["candidates"][0];
    assert_eq!(
        (winner["bid"].as_str(), winner["bid_source"].as_str(), winner["sheet_price"].as_str()),
        (Some("1"), Some("live"), Some("5"))
    );
    let asked: Value = serde_json::from_str(&bidder.last_request().unwrap().body).unwrap();
    assert_eq!(asked["category"], "chat");
    assert_eq!(asked["reserve"], "6");
    assert_eq!(asked["deadline_ms"], 150);
    assert!(asked["estimate"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_late_bid_is_ignored_without_delaying_the_job_past_the_deadline() {
    let app = app_with(|s| s.dispatch.bid_deadline_ms = 150).await;
    let caller = app.signup().await;
    let (late_owner, sheet_owner, greedy_owner) =
        (app.signup().await, app.signup().await, app.signup().await);
    let endpoint = TestAgent::start(chat("never")).await;
    let sleepy = TestAgent::start(Behaviour::Slow(Duration::from_secs(3))).await;
    let greedy = TestAgent::start(Behaviour::Json(200, "{\"price\": \"9\"}".into())).await;
    let sheet = TestAgent::start(chat("on time")).await;
    agent(&app, &late_owner, "late", &endpoint, "1", Some(&sleepy)).await;
    agent(&app, &greedy_owner, "greedy", &endpoint, "2", Some(&greedy)).await;
    agent(&app, &sheet_owner, "sheet", &sheet, "3", None).await;

    let started = Instant::now();
    let response = app.post_json("/v1/chat/completions", &ask(), Some(&caller.token)).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(elapsed < Duration::from_millis(1500), "the job waited {elapsed:?} for a bid");
    let (body, audit) = audit_of(&app, &caller, response).await;
    assert_eq!(body["choices"][0]["message"]["content"], "on time");
    let reasons: Vec<(String, String)> = audit["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "excluded")
        .map(|c| {
            (
                c["slug"].as_str().unwrap().split('/').nth(1).unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(reasons.contains(&("late".into(), "no_bid_late".into())), "{reasons:?}");
    assert!(reasons.contains(&("greedy".into(), "live_bid_above_sheet".into())), "{reasons:?}");
    assert_eq!(endpoint.requests(), 0);
}

#[tokio::test]
async fn a_failing_agent_stops_being_called_after_its_breaker_opens() {
    let app = app_with(|s| {
        s.dispatch.breaker_failures = 3;
        s.dispatch.breaker_cooldown_ms = 60_000;
    })
    .await;
    let caller = app.signup().await;
    let (bad_owner, good_owner) = (app.signup().await, app.signup().await);
    let broken = TestAgent::start(Behaviour::Json(500, "{}".into())).await;
    let healthy = TestAgent::start(chat("fine")).await;
    let broken_id = agent(&app, &bad_owner, "broken", &broken, "1", None).await;
    agent(&app, &good_owner, "healthy", &healthy, "2", None).await;

    let mut last = None;
    for _ in 0..6 {
        let response = app.post_json("/v1/chat/completions", &ask(), Some(&caller.token)).await;
        assert_eq!(response.status(), 200);
        last = Some(response);
    }
    assert_eq!(broken.requests(), 3, "called until the circuit opened, then left alone");
    assert_eq!(healthy.requests(), 6);
    let (_, audit) = audit_of(&app, &caller, last.unwrap()).await;
    let excluded: Vec<&str> = audit["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    assert_eq!(excluded, vec!["circuit_open"]);
    let shown = json_body(app.get(&format!("/api/agents/{broken_id}"), None).await).await;
    assert_eq!(shown["status"], "circuit_open");
}
