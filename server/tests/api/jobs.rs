//! Jobs end to end against real HTTP agents on loopback: the auction's choice and price,
//! fallback, settlement on the ledger, idempotency, records and their scoping.

use auction_engine::MicroCredits;
use chrono::Utc;
use registry::UserId;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, json_body, spawn_app_on_postgres, spawn_app_with};
use crate::test_agent::{Behaviour, TestAgent};

async fn app() -> TestApp {
    spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await
}

fn chat(content: &str) -> Behaviour {
    Behaviour::Chat { content: content.into(), prompt_tokens: 12, completion_tokens: 5 }
}

/// Registers a chat agent for `owner` at a flat per-call price; returns its slug and id.
pub(crate) async fn chat_agent(
    app: &TestApp,
    owner: &TestUser,
    name: &str,
    agent: &TestAgent,
    price: &str,
    extra: Value,
) -> (String, String) {
    let mut body = json!({
        "name": name,
        "kind": "openai-chat",
        "categories": ["chat"],
        "endpoint": format!("{}/v1", agent.url),
        "upstream_model": format!("{name}-model"),
        "upstream_api_key": format!("key-of-{name}"),
        "pricing": {"per_call": price},
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let created = app.register_agent(owner, &body).await;
    (created["slug"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned())
}

fn ask(model: &str, auction: Value) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}], "auction": auction})
}

#[tokio::test]
async fn the_auction_picks_and_prices_as_the_engine_says_and_records_everything() {
    let app = app().await;
    let caller = app.signup().await;
    let (cheap_owner, mid_owner, dear_owner, idle_owner, pricey_owner) = (
        app.signup().await,
        app.signup().await,
        app.signup().await,
        app.signup().await,
        app.signup().await,
    );
    let cheap = TestAgent::start(chat("hello from cheap")).await;
    let mid = TestAgent::start(chat("hello from mid")).await;
    let dear = TestAgent::start(chat("hello from dear")).await;
    let (cheap_slug, _) = chat_agent(&app, &cheap_owner, "cheap", &cheap, "1", json!({})).await;
    let (mid_slug, _) = chat_agent(&app, &mid_owner, "mid", &mid, "2", json!({})).await;
    chat_agent(&app, &dear_owner, "dear", &dear, "2.4", json!({})).await;
    let (_, idle_id) = chat_agent(&app, &idle_owner, "idle", &dear, "0.5", json!({})).await;
    app.post_json(&format!("/api/agents/{idle_id}/pause"), &json!({}), Some(&idle_owner.token))
        .await;
    chat_agent(&app, &pricey_owner, "pricey", &dear, "9", json!({})).await;

    let response = app
        .post_json(
            "/v1/chat/completions",
            &ask("auction", json!({"max_price": "2.5", "objective": "cost"})),
            Some(&caller.token),
        )
        .await;
    assert_eq!(response.status(), 200);
    let auction_id = response.headers()["x-gavel-auction-id"].to_str().unwrap().to_owned();
    let body = json_body(response).await;
    assert_eq!(body["model"], cheap_slug.as_str());
    assert_eq!(body["choices"][0]["message"]["content"], "hello from cheap");
    assert_eq!(body["auction"]["winner"], cheap_slug.as_str());
    assert_eq!(body["auction"]["clearing_price"], "2", "second price: the runner-up's bid");
    assert_eq!(body["auction"]["id"], auction_id.as_str());
    assert_eq!(body["auction"]["candidates"], 5);
    assert_eq!(body["usage"]["cost"], 3.0, "price 2 + call fee 1");
    assert_eq!(body["usage"]["prompt_tokens"], 12);
    assert_eq!(body["object"], "chat.completion");

    // The agent got the caller's request with its own upstream model and key.
    let seen = cheap.last_request().unwrap();
    assert!(seen.head.starts_with("POST /v1/chat/completions"), "{}", seen.head);
    assert!(seen.head.to_lowercase().contains("authorization: bearer key-of-cheap"));
    let sent: Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(sent["model"], "cheap-model");
    assert!(sent.get("auction").is_none(), "Gavel's extensions are not forwarded");
    assert_eq!(mid.requests() + dear.requests(), 0, "only the winner is called");

    // Money: caller -3, winner's owner +2 -1, platform +2.
    assert_eq!(app.credits(&caller).await, ("97".into(), "0".into()));
    assert_eq!(app.credits(&cheap_owner).await.0, "101");
    assert_eq!(app.credits(&mid_owner).await.0, "100");

    // The audit names every candidate: three ranked, two excluded with their reasons.
    let audit =
        json_body(app.get(&format!("/api/auctions/{auction_id}"), Some(&caller.token)).await).await;
    let candidates = audit["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 5);
    let by_status = |status: &str| candidates.iter().filter(|c| c["status"] == status).count();
    assert_eq!((by_status("ranked"), by_status("excluded")), (3, 2));
    let reasons: Vec<&str> = candidates.iter().filter_map(|c| c["reason"].as_str()).collect();
    assert!(reasons.contains(&"paused") && reasons.contains(&"max_price"), "{reasons:?}");
    let winner = &candidates[0];
    assert_eq!(
        (winner["rank"].as_u64(), winner["bid"].as_str(), winner["price"].as_str()),
        (Some(1), Some("1"), Some("2"))
    );
    assert_eq!(winner["price_basis"]["rule"], "second_score");
    assert_eq!(winner["price_basis"]["runner_up_slug"], mid_slug.as_str());
    assert!(audit["outcome"]["explanation"].as_str().unwrap().contains("won"), "{audit}");
    assert_eq!(audit["settlement"]["caller_paid"], "3");
    assert_eq!(audit["attempts"][0]["outcome"], "success");
    assert_eq!(audit["inputs"]["constraints"]["max_price"], "2.5");
}

#[tokio::test]
async fn fallback_after_an_error_garbage_and_a_timeout_serves_from_the_next_and_charges_once() {
    let app = app().await;
    let caller = app.signup().await;
    let failing = TestAgent::start(Behaviour::Json(500, "{\"error\":\"boom\"}".into())).await;
    let garbage = TestAgent::start(Behaviour::Garbage).await;
    let slow = TestAgent::start(Behaviour::Slow(Duration::from_secs(10))).await;
    let good = TestAgent::start(chat("finally")).await;
    let mut slugs = Vec::new();
    let mut ids = Vec::new();
    for (name, agent, price, extra) in [
        ("failing", &failing, "1", json!({})),
        ("garbage", &garbage, "1.1", json!({})),
        ("slow", &slow, "1.2", json!({"max_latency_ms": 300})),
        ("good", &good, "1.3", json!({})),
    ] {
        let owner = app.signup().await;
        let (slug, id) = chat_agent(&app, &owner, name, agent, price, extra).await;
        slugs.push(slug);
        ids.push(id);
    }
    let response = app
        .post_json(
            "/v1/chat/completions",
            &ask("auction", json!({"max_price": "2", "objective": "cost"})),
            Some(&caller.token),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body = json_body(response).await;
    assert_eq!(body["model"], slugs[3].as_str());
    assert_eq!(body["choices"][0]["message"]["content"], "finally");
    // The last fallback has no competitor left below it: it is paid the reserve (the max
    // price), which its own bid cannot move.
    assert_eq!(body["usage"]["cost"], 3.0);
    assert_eq!(app.credits(&caller).await, ("97".into(), "0".into()), "charged once");
    assert_eq!(
        (failing.requests(), garbage.requests(), slow.requests(), good.requests()),
        (1, 1, 1, 1)
    );

    let generation = json_body(
        app.get(
            &format!("/v1/generation?id={}", body["id"].as_str().unwrap()),
            Some(&caller.token),
        )
        .await,
    )
    .await;
    let outcomes: Vec<&str> = generation["data"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["error", "invalid_output", "timeout", "success"]);
    assert_eq!(generation["data"]["attempts"][0]["http_status"], 500);
    assert_eq!(generation["data"]["cost"], "3");
    assert_eq!(generation["data"]["fees"]["call"], "1");

    // Each attempt moved the agent's reputation.
    for (id, field) in [
        (&ids[0], "errors"),
        (&ids[1], "invalid_outputs"),
        (&ids[2], "timeouts"),
        (&ids[3], "successes"),
    ] {
        let agent = json_body(app.get(&format!("/api/agents/{id}"), None).await).await;
        assert_eq!(agent["reputation"][field], 1, "{field}: {agent}");
    }
    let ledger = json_body(app.get("/api/credits/ledger", Some(&caller.token)).await).await;
    let charges: Vec<&Value> =
        ledger["data"].as_array().unwrap().iter().filter(|e| e["kind"] == "capture").collect();
    assert_eq!(charges.len(), 1);
}

#[tokio::test]
async fn when_every_agent_fails_the_answer_is_502_listing_them_and_no_money_moves() {
    let app = app().await;
    let caller = app.signup().await;
    let broken = TestAgent::start(Behaviour::Json(503, "{}".into())).await;
    let garbage = TestAgent::start(Behaviour::Garbage).await;
    for (name, agent) in [("down", &broken), ("noise", &garbage)] {
        let owner = app.signup().await;
        chat_agent(&app, &owner, name, agent, "1", json!({})).await;
    }
    let platform_before = registry::ledger::account_balance(
        &app.state.db,
        registry::ledger::PLATFORM_REVENUE_ACCOUNT,
    )
    .await
    .unwrap();
    let response = app
        .post_json(
            "/v1/chat/completions",
            &ask("auction", json!({"max_price": "5"})),
            Some(&caller.token),
        )
        .await;
    assert_eq!(response.status(), 502);
    let error = json_body(response).await;
    assert_eq!(error["error"]["code"], "all_agents_failed");
    assert_eq!(error["error"]["type"], "server_error");
    let attempts = error["error"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(error["error"]["message"].as_str().unwrap().contains("http_503"));
    assert_eq!(app.credits(&caller).await, ("100".into(), "0".into()));
    let platform_after = registry::ledger::account_balance(
        &app.state.db,
        registry::ledger::PLATFORM_REVENUE_ACCOUNT,
    )
    .await
    .unwrap();
    assert_eq!(platform_before, platform_after);
}

#[tokio::test]
async fn insufficient_credits_are_402_and_no_eligible_agent_names_the_constraint() {
    let app = app().await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(chat("hi")).await;
    chat_agent(&app, &owner, "dear", &agent, "150", json!({})).await;

    let response = app
        .post_json(
            "/v1/chat/completions",
            &ask("auction", json!({"max_price": "200"})),
            Some(&caller.token),
        )
        .await;
    assert_eq!(response.status(), 402);
    let error = json_body(response).await;
    assert_eq!(error["error"]["code"], "insufficient_credits");
    assert_eq!(app.credits(&caller).await, ("100".into(), "0".into()), "nothing moved");
    assert_eq!(agent.requests(), 0, "nothing was executed");

    let response = app
        .post_json(
            "/v1/chat/completions",
            &ask("auction", json!({"max_price": "10"})),
            Some(&caller.token),
        )
        .await;
    assert_eq!(response.status(), 422);
    let error = json_body(response).await;
    assert_eq!(error["error"]["code"], "no_eligible_agent");
    assert_eq!(error["error"]["param"], "auction.max_price", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("max price"), "{error}");

    let response = app
        .post_json("/v1/chat/completions", &ask("auction/ocr", json!({})), Some(&caller.token))
        .await;
    assert_eq!(response.status(), 422);
    let response = app
        .post_json("/v1/chat/completions", &ask("nobody/nothing", json!({})), Some(&caller.token))
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(json_body(response).await["error"]["param"], "model");
}

async fn concurrent_jobs_against_a_balance_for_a_hundred(app: &TestApp) {
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(chat("ok")).await;
    chat_agent(app, &owner, "solo", &agent, "1", json!({})).await;
    // 100 free + 100 granted = 200 credits; each job holds and costs exactly 2 (price 1 + fee 1).
    app.state
        .bank
        .admin_grant(
            UserId(caller.id),
            MicroCredits::from_credits(100).unwrap(),
            Uuid::now_v7(),
            Utc::now(),
        )
        .await
        .unwrap();
    let (_, key) = app.create_key(&caller, "load").await;
    let platform_before = registry::ledger::account_balance(
        &app.state.db,
        registry::ledger::PLATFORM_REVENUE_ACCOUNT,
    )
    .await
    .unwrap();

    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let url = app.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let body = ask("auction", json!({"max_price": "1"}));
                client
                    .post(url)
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for task in tasks {
        *statuses.entry(task.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&200), Some(&100), "{statuses:?}");
    assert_eq!(statuses.get(&402), Some(&900), "{statuses:?}");
    assert_eq!(agent.requests(), 100, "exactly the paid jobs were executed");
    assert_eq!(app.credits(&caller).await, ("0".into(), "0".into()));
    assert_eq!(app.credits(&owner).await.0, "100", "each win paid 1 and cost the 1 win fee");
    let platform_after = registry::ledger::account_balance(
        &app.state.db,
        registry::ledger::PLATFORM_REVENUE_ACCOUNT,
    )
    .await
    .unwrap();
    assert_eq!(
        platform_after.micros() - platform_before.micros(),
        MicroCredits::from_credits(200).unwrap().micros()
    );
    let audit = registry::ledger::audit_ledger(&app.state.db).await.unwrap();
    assert!(
        audit.mismatches.is_empty() && audit.total == 0 && audit.flow_mismatches.is_empty(),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_jobs_on_a_balance_for_a_hundred_deliver_exactly_a_hundred() {
    concurrent_jobs_against_a_balance_for_a_hundred(&app().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_jobs_on_postgres_deliver_exactly_a_hundred() {
    let Some(pg) = spawn_app_on_postgres().await else { return };
    // The Postgres app was spawned without the loopback opening; a second instance on the same
    // database with it does the work.
    let database_url = pg.state.settings.database_url.clone();
    let app = spawn_app_with(|s| {
        s.database.url = Some(database_url);
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
    })
    .await;
    concurrent_jobs_against_a_balance_for_a_hundred(&app).await;
}

#[tokio::test]
async fn the_same_idempotency_key_twice_runs_once_charges_once_and_answers_the_same() {
    let app = app().await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(chat("once")).await;
    chat_agent(&app, &owner, "once", &agent, "1", json!({})).await;
    let body = ask("auction", json!({"max_price": "2"}));
    let send = |body: Value| {
        app.client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&caller.token)
            .header("idempotency-key", "abc-123")
            .json(&body)
            .send()
    };
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    let first_auction = first.headers()["x-gavel-auction-id"].clone();
    let first_body = first.text().await.unwrap();
    let second = send(body.clone()).await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(second.headers()["x-gavel-auction-id"], first_auction);
    assert_eq!(second.text().await.unwrap(), first_body);
    assert_eq!(agent.requests(), 1, "executed once");
    assert_eq!(app.credits(&caller).await.0, "98", "charged once: a lone bid of 1 + the fee");

    let different = send(ask("auction", json!({"max_price": "3"}))).await.unwrap();
    assert_eq!(different.status(), 422);
    assert_eq!(json_body(different).await["error"]["param"], "Idempotency-Key");
}

#[tokio::test]
async fn json_jobs_run_and_recommendations_charge_only_the_call_fee() {
    let app = app().await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let ocr = TestAgent::start(Behaviour::Echo).await;
    let body = json!({"name": "reader", "kind": "json", "categories": ["ocr"], "endpoint": format!("{}/ocr", ocr.url), "pricing": {"per_call": "0.5"}});
    let slug =
        json_body(app.post_json("/api/agents", &body, Some(&owner.token)).await).await["slug"]
            .as_str()
            .unwrap()
            .to_owned();

    let job = json!({"category": "ocr", "input": {"image_url": "https://example.com/scan.png"}, "auction": {"max_price": "1"}});
    let response = app.post_json("/v1/jobs", &job, Some(&caller.token)).await;
    assert_eq!(response.status(), 200);
    let result = json_body(response).await;
    assert_eq!(result["object"], "job");
    assert_eq!(result["status"], "delivered");
    assert_eq!(result["agent"], slug.as_str());
    assert_eq!(
        result["output"]["echo"]["image_url"], "https://example.com/scan.png",
        "the agent got `input` as its body"
    );
    assert_eq!(result["cost"], "1.5", "a lone bidder is paid its bid, not the max price 1");
    let fetched = json_body(
        app.get(&format!("/v1/jobs/{}", result["id"].as_str().unwrap()), Some(&caller.token)).await,
    )
    .await;
    assert_eq!(fetched["output"], result["output"]);
    assert_eq!(fetched["status"], "delivered");

    let recommend =
        json!({"category": "ocr", "input": {}, "auction": {"mode": "recommend", "top_k": 3}});
    let result = json_body(app.post_json("/v1/jobs", &recommend, Some(&caller.token)).await).await;
    assert_eq!(result["status"], "recommended");
    assert_eq!(result["output"][0]["agent"], slug.as_str());
    assert_eq!(result["cost"], "1");
    assert_eq!(ocr.requests(), 1, "a recommendation executes nothing");
    assert_eq!(app.credits(&caller).await.0, "97.5", "1.5 for the job, 1 for the recommendation");

    let activity = json_body(app.get("/api/activity", Some(&caller.token)).await).await;
    let rows = activity["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["amount"].as_str()),
        (Some("recommended"), Some("-1"))
    );
    let owner_view = json_body(app.get("/api/activity?role=owner", Some(&owner.token)).await).await;
    assert_eq!(owner_view["data"].as_array().unwrap().len(), 1);
    assert_eq!(owner_view["data"][0]["amount"], "-0.5", "earned its bid 0.5 less the 1 win fee");
    let csv = app.get("/api/activity?format=csv", Some(&caller.token)).await;
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    assert!(text.starts_with("id,created_at,role,category,model,agent,status,amount,error\n"));
    assert_eq!(text.lines().count(), 3);
}

#[tokio::test]
async fn another_users_job_generation_and_auction_are_404() {
    let app = app().await;
    let alice = app.signup().await;
    let bob = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(chat("private")).await;
    chat_agent(&app, &owner, "agent", &agent, "1", json!({})).await;
    let response = app
        .post_json(
            "/v1/chat/completions",
            &ask("auction", json!({"max_price": "2"})),
            Some(&alice.token),
        )
        .await;
    let auction_id = response.headers()["x-gavel-auction-id"].to_str().unwrap().to_owned();
    let job_id = json_body(response).await["id"].as_str().unwrap().to_owned();
    for path in [
        format!("/v1/jobs/{job_id}"),
        format!("/v1/generation?id={job_id}"),
        format!("/api/auctions/{auction_id}"),
    ] {
        assert_eq!(app.get(&path, Some(&bob.token)).await.status(), 404, "{path}");
        assert_eq!(app.get(&path, Some(&alice.token)).await.status(), 200, "{path}");
    }
    let bobs = json_body(app.get("/api/activity", Some(&bob.token)).await).await;
    assert_eq!(bobs["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_named_agent_is_called_directly_with_its_fallbacks() {
    let app = app().await;
    let caller = app.signup().await;
    let down = TestAgent::start(Behaviour::Json(500, "{}".into())).await;
    let up = TestAgent::start(chat("from the fallback")).await;
    let owner = app.signup().await;
    let (down_slug, _) = chat_agent(&app, &owner, "down", &down, "1", json!({})).await;
    let (up_slug, _) = chat_agent(&app, &owner, "up", &up, "2", json!({})).await;
    let mut body = ask(&down_slug, json!({}));
    body["models"] = json!([up_slug]);
    let response = app.post_json("/v1/chat/completions", &body, Some(&caller.token)).await;
    assert_eq!(response.status(), 200);
    let body = json_body(response).await;
    assert_eq!(body["model"], up_slug.as_str());
    assert_eq!(body["usage"]["cost"], 3.0, "a named agent is paid its posted price");
    let mut no_fallback = ask(&down_slug, json!({}));
    no_fallback["models"] = json!([up_slug]);
    no_fallback["provider"] = json!({"allow_fallbacks": false});
    assert_eq!(
        app.post_json("/v1/chat/completions", &no_fallback, Some(&caller.token)).await.status(),
        502
    );
}
