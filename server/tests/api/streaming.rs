//! `stream: true` through the OpenAI wire format: server-sent events relayed from the winner,
//! keep-alives, fallback before the first byte, a cut stream, OpenAI's closing chunks.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, json_body, spawn_app_with};
use crate::test_agent::{Behaviour, TestAgent};

async fn app_with(keepalive_ms: u64) -> TestApp {
    spawn_app_with(|s| {
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
        s.dispatch.keepalive_ms = keepalive_ms;
    })
    .await
}

fn streaming(pieces: &[&str], first_after: Duration, cut: bool) -> Behaviour {
    Behaviour::Stream {
        pieces: pieces.iter().map(|p| p.to_string()).collect(),
        first_after,
        gap: Duration::from_millis(20),
        cut,
        usage: (!cut).then_some((9, 2)),
    }
}

async fn register(
    app: &TestApp,
    owner: &TestUser,
    name: &str,
    agent: &TestAgent,
    pricing: Value,
) -> String {
    let body = json!({
        "name": name, "kind": "openai-chat", "categories": ["chat"], "endpoint": agent.url,
        "upstream_model": "m", "pricing": pricing,
    });
    json_body(app.post_json("/api/agents", &body, Some(&owner.token)).await).await["slug"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The SSE body split into events: `Ok(json)` for data events, `Err(text)` for the rest
/// (comments, `[DONE]`).
fn events(body: &str) -> Vec<Result<Value, String>> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|event| match event.strip_prefix("data: ") {
            Some(data) => serde_json::from_str(data).map_err(|_| data.to_owned()),
            None => Err(event.to_owned()),
        })
        .collect()
}

async fn stream(app: &TestApp, caller: &TestUser, body: Value) -> reqwest::Response {
    app.post_json("/v1/chat/completions", &body, Some(&caller.token)).await
}

fn ask(max_price: Option<&str>) -> Value {
    let mut body = json!({"model": "auction", "stream": true, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    if let Some(max) = max_price {
        body["auction"] = json!({"max_price": max});
    }
    body
}

#[tokio::test]
async fn a_streamed_answer_arrives_chunk_by_chunk_and_ends_with_finish_reason_usage_and_done() {
    let app = app_with(2000).await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(streaming(&["Hel", "lo"], Duration::ZERO, false)).await;
    let slug = register(&app, &owner, "streamer", &agent, json!({"per_call": "1"})).await;

    let mut body = ask(Some("2"));
    body["stream_options"] = json!({"include_usage": true});
    let response = stream(&app, &caller, body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let job_id = response.headers()["x-gavel-job-id"].to_str().unwrap().to_owned();
    let body = response.text().await.unwrap();
    let events = events(&body);
    let data: Vec<&Value> = events.iter().filter_map(|e| e.as_ref().ok()).collect();
    assert_eq!(data.len(), 4, "two chunks, the closing chunk, the usage chunk: {body}");
    assert_eq!(data[0]["choices"][0]["delta"]["content"], "Hel");
    assert_eq!(data[1]["choices"][0]["delta"]["content"], "lo");
    assert_eq!(data[0]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(
        data[2]["choices"],
        json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        "the agent gave no finish_reason: Gavel closes with `stop`"
    );
    let created = data[0]["created"].as_i64().unwrap();
    assert!(created > 1_700_000_000, "{body}");
    for chunk in &data {
        assert_eq!(chunk["model"], slug.as_str());
        assert_eq!(chunk["id"], job_id.as_str());
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["created"], created);
    }
    assert_eq!(data[3]["choices"], json!([]));
    let usage = &data[3]["usage"];
    assert_eq!(
        (usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()),
        (Some(9), Some(2))
    );
    assert_eq!(usage["cost"], 2.0, "a lone bidder is paid its bid 1 (not the max 2), plus the fee");
    assert_eq!(events.last().unwrap().as_ref().unwrap_err(), "[DONE]");
    assert_eq!(app.credits(&caller).await, ("98".into(), "0".into()));
    let sent: Value = serde_json::from_str(&agent.last_request().unwrap().body).unwrap();
    assert_eq!(
        (sent["stream"].as_bool(), sent["stream_options"]["include_usage"].as_bool()),
        (Some(true), Some(true))
    );
}

#[tokio::test]
async fn without_include_usage_every_chunk_has_a_choice_and_the_agents_finish_reason_is_kept() {
    let app = app_with(2000).await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let events_sent = vec![
        json!({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}).to_string(),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "max_tokens"}]}).to_string(),
        json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).to_string(),
    ];
    // No `[DONE]`: a body that ends after its finish_reason is a clean end.
    let agent = TestAgent::start(Behaviour::Sse { events: events_sent, done: false }).await;
    register(&app, &owner, "terse", &agent, json!({"per_call": "1"})).await;

    let response = stream(&app, &caller, ask(Some("2"))).await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let events = events(&body);
    let data: Vec<&Value> = events.iter().filter_map(|e| e.as_ref().ok()).collect();
    assert_eq!(data.len(), 2, "{body}");
    assert!(data.iter().all(|chunk| chunk["choices"].as_array().is_some_and(|c| !c.is_empty())));
    assert_eq!(data[1]["choices"][0]["finish_reason"], "length", "in OpenAI's words");
    assert_eq!(events.last().unwrap().as_ref().unwrap_err(), "[DONE]");
    assert_eq!(app.credits(&caller).await, ("98".into(), "0".into()), "delivered and charged");
}

#[tokio::test]
async fn a_failure_before_the_first_byte_falls_back_to_the_next_agent() {
    let app = app_with(2000).await;
    let caller = app.signup().await;
    let (first_owner, second_owner) = (app.signup().await, app.signup().await);
    let broken = TestAgent::start(Behaviour::Json(500, "{}".into())).await;
    let working = TestAgent::start(streaming(&["from the second"], Duration::ZERO, false)).await;
    register(&app, &first_owner, "broken", &broken, json!({"per_call": "1"})).await;
    let slug = register(&app, &second_owner, "working", &working, json!({"per_call": "1.5"})).await;

    let mut body = ask(Some("2"));
    body["auction"]["objective"] = json!("cost");
    let response = stream(&app, &caller, body).await;
    assert_eq!(response.status(), 200);
    let job_id = response.headers()["x-gavel-job-id"].to_str().unwrap().to_owned();
    let text = response.text().await.unwrap();
    let data: Vec<Value> = events(&text).into_iter().filter_map(Result::ok).collect();
    assert_eq!(data[0]["choices"][0]["delta"]["content"], "from the second");
    assert_eq!(data[0]["model"], slug.as_str());
    assert_eq!(broken.requests(), 1);
    let generation =
        json_body(app.get(&format!("/v1/generation?id={job_id}"), Some(&caller.token)).await).await;
    let outcomes: Vec<&str> = generation["data"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["error", "success"]);
}

#[tokio::test]
async fn a_stream_cut_by_the_agent_ends_with_an_error_chunk_and_no_overcharge() {
    let app = app_with(2000).await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    // One credit per output token, one per call: a whole answer of 10 tokens would cost 11 + 1.
    let agent = TestAgent::start(streaming(&["abcd", "efgh"], Duration::ZERO, true)).await;
    register(
        &app,
        &owner,
        "flaky",
        &agent,
        json!({"per_call": "1", "per_million_output_tokens": "1000000"}),
    )
    .await;
    let platform_before = registry::ledger::account_balance(
        &app.state.db,
        registry::ledger::PLATFORM_REVENUE_ACCOUNT,
    )
    .await
    .unwrap();

    let mut body = ask(None);
    body["stream_options"] = json!({"include_usage": true});
    let response = stream(&app, &caller, body).await;
    assert_eq!(response.status(), 200);
    let job_id = response.headers()["x-gavel-job-id"].to_str().unwrap().to_owned();
    let text = response.text().await.unwrap();
    let events = events(&text);
    let data: Vec<&Value> = events.iter().filter_map(|e| e.as_ref().ok()).collect();
    assert_eq!(data.len(), 4, "two chunks, the usage chunk, the error event: {text}");
    assert_eq!(data[2]["usage"]["completion_tokens"], 2, "8 characters delivered");
    assert_eq!(
        data[2]["usage"]["cost"], 2.0,
        "the delivered tokens only: no per-call price, no fees"
    );
    assert_eq!(data[3]["error"]["code"], "agent_stream_cut", "an SSE error event: {text}");
    assert!(data[3].get("choices").is_none(), "no finish_reason outside OpenAI's set");
    assert_eq!(events.last().unwrap().as_ref().unwrap_err(), "[DONE]");

    assert_eq!(app.credits(&caller).await, ("98".into(), "0".into()));
    assert_eq!(app.credits(&owner).await.0, "102");
    let platform_after = registry::ledger::account_balance(
        &app.state.db,
        registry::ledger::PLATFORM_REVENUE_ACCOUNT,
    )
    .await
    .unwrap();
    assert_eq!(platform_before, platform_after);
    let job = json_body(app.get(&format!("/v1/jobs/{job_id}"), Some(&caller.token)).await).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["output"]["content"], "abcdefgh");
    let audit = registry::ledger::audit_ledger(&app.state.db).await.unwrap();
    assert!(audit.mismatches.is_empty() && audit.total == 0 && audit.flow_mismatches.is_empty());
}

#[tokio::test]
async fn keep_alive_comments_arrive_while_a_slow_agent_thinks() {
    let app = app_with(100).await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(streaming(&["at last"], Duration::from_millis(700), false)).await;
    register(&app, &owner, "thinker", &agent, json!({"per_call": "1"})).await;
    let response = stream(&app, &caller, ask(Some("2"))).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let first_data = text.find("data: ").unwrap();
    let keepalives = text[..first_data].matches(": keep-alive").count();
    assert!(keepalives >= 3, "{keepalives} keep-alives before the first chunk: {text}");
    assert!(text.contains("at last"));
}

#[tokio::test]
async fn when_every_agent_fails_before_anything_is_sent_the_error_is_plain_json() {
    let app = app_with(2000).await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let broken = TestAgent::start(Behaviour::Json(500, "{}".into())).await;
    register(&app, &owner, "broken", &broken, json!({"per_call": "1"})).await;
    let response = stream(&app, &caller, ask(Some("2"))).await;
    assert_eq!(response.status(), 502);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(json_body(response).await["error"]["code"], "all_agents_failed");
    assert_eq!(app.credits(&caller).await, ("100".into(), "0".into()));
}
