//! The official OpenAI SDKs, unchanged, against Gavel: Python (`scripts/sdk_check.py`) and Node
//! (`scripts/sdk_check.cjs`), with agents that stream as minimal upstreams do (no `created`, no
//! `finish_reason`, no usage). `scripts/test` installs both SDKs under `target/`; outside CI a
//! test says so and stops if its SDK is missing, in CI it fails.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, spawn_app_with};
use crate::test_agent::{Behaviour, TestAgent};

/// The Python with the `openai` package: `GAVEL_TEST_PYTHON` (set by `scripts/test`), else
/// `python3`.
fn python() -> Option<String> {
    let python = std::env::var("GAVEL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|output| output.status.success());
    ok.then_some(python)
}

/// `node_modules` holding the `openai` package: `GAVEL_TEST_NODE_MODULES` (set by
/// `scripts/test`), else `target/node/node_modules`.
fn node_modules() -> Option<PathBuf> {
    let dir = std::env::var_os("GAVEL_TEST_NODE_MODULES").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/node/node_modules"))
    });
    let found = dir.join("openai/package.json").exists()
        && Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    found.then_some(dir)
}

/// Outside CI a missing SDK skips the test (saying so); in CI it fails.
fn require<T>(found: Option<T>, what: &str) -> Option<T> {
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} must be installed in CI (scripts/test does it)"
        );
        eprintln!("SKIPPED: {what} is not available");
    }
    found
}

fn chunk(delta: Value) -> String {
    // As minimal as upstreams come: no `created`, no `finish_reason` key at all.
    json!({"id": "up", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": delta}]})
        .to_string()
}

/// An upstream that streams "Hello there" and stops at `[DONE]` without a `finish_reason`.
fn minimal_stream() -> Behaviour {
    Behaviour::Sse {
        events: vec![
            chunk(json!({"role": "assistant", "content": ""})),
            chunk(json!({"content": "Hello"})),
            chunk(json!({"content": " there"})),
        ],
        done: true,
    }
}

/// An upstream that streams one tool call in pieces, without a `finish_reason`.
fn tool_call_stream() -> Behaviour {
    Behaviour::Sse {
        events: vec![
            chunk(
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            ),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]})),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]})),
        ],
        done: true,
    }
}

async fn register(app: &TestApp, owner: &TestUser, body: Value) -> String {
    app.register_agent(owner, &body).await["slug"].as_str().unwrap().to_owned()
}

/// A chat agent at a flat per-call price; its slug.
async fn chat_agent(
    app: &TestApp,
    owner: &TestUser,
    name: &str,
    agent: &TestAgent,
    price: &str,
) -> String {
    crate::jobs::chat_agent(app, owner, name, agent, price, json!({})).await.0
}

/// Runs a client script against `app` with `models` (role -> agent slug).
async fn run(
    program: Vec<String>,
    app: &TestApp,
    key: &str,
    models: &Value,
    node_path: Option<PathBuf>,
) -> Value {
    let base_url = format!("{}/v1", app.address);
    let (key, models) = (key.to_owned(), models.to_string());
    let name = program.last().cloned().unwrap_or_default();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(&program[0]);
        command
            .args(&program[1..])
            .env("GAVEL_BASE_URL", base_url)
            .env("GAVEL_API_KEY", key)
            .env("GAVEL_MODELS", models);
        if let Some(path) = node_path {
            command.env("NODE_PATH", path);
        }
        command.output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name} failed: {stderr}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_unchanged() {
    let Some(python) = require(python(), "python with the openai package") else { return };
    let app = spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let plain = TestAgent::start(Behaviour::Chat {
        content: "hello from the sdk test".into(),
        prompt_tokens: 7,
        completion_tokens: 3,
    })
    .await;
    let slug = chat_agent(&app, &owner, "sdk-agent", &plain, "1").await;
    // The others are dear: priced out of the capped auction, each called by name.
    let streamer = TestAgent::start(Behaviour::Stream {
        pieces: vec!["streamed ".into(), "through ".into(), "the SDK".into()],
        first_after: std::time::Duration::ZERO,
        gap: std::time::Duration::from_millis(10),
        cut: false,
        usage: Some((4, 6)),
    })
    .await;
    let minimal = TestAgent::start(minimal_stream()).await;
    let tools = TestAgent::start(tool_call_stream()).await;
    let cut = TestAgent::start(Behaviour::Stream {
        pieces: vec!["half an ".into(), "answer".into()],
        first_after: std::time::Duration::ZERO,
        gap: std::time::Duration::from_millis(10),
        cut: true,
        usage: None,
    })
    .await;
    let models = json!({
        "streamer": chat_agent(&app, &owner, "sdk-streamer", &streamer, "50").await,
        "minimal": chat_agent(&app, &owner, "sdk-minimal", &minimal, "5").await,
        "tools": chat_agent(&app, &owner, "sdk-tools", &tools, "5").await,
        "cut": chat_agent(&app, &owner, "sdk-cut", &cut, "5").await,
    });
    // A JSON agent in `ocr`: a chat to `auction/ocr` must not reach it.
    let ocr = TestAgent::start(Behaviour::Json(200, r#"{"text":"read"}"#.into())).await;
    let body = json!({"name": "sdk-ocr", "kind": "json", "categories": ["ocr"], "endpoint": ocr.url, "pricing": {"per_call": "0.5"}});
    register(&app, &owner, body).await;
    let (_, key) = app.create_key(&caller, "sdk").await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/sdk_check.py").to_owned();
    let seen = run(vec![python, script], &app, &key, &models, None).await;

    // Models: listed, and each retrievable by id, slugs with their slash included.
    let listed = seen["models"].as_array().unwrap();
    for expected in ["auction", "auction/chat", "auction/ocr", slug.as_str()] {
        assert!(listed.iter().any(|m| m == expected), "{expected} listed: {seen}");
    }
    assert_eq!(seen["retrieved"], seen["models"]);
    assert_eq!(seen["retrieve_missing"]["status"], 404);
    assert_eq!(seen["retrieve_missing"]["class"], "NotFoundError");
    assert_eq!(seen["retrieve_missing"]["code"], "model_not_found");

    // A plain completion, in OpenAI's shape, with a numeric cost.
    assert_eq!(seen["model"], slug.as_str());
    assert_eq!(seen["object"], "chat.completion");
    assert!(seen["created"].as_i64().unwrap() > 0, "{seen}");
    assert_eq!(seen["content"], "hello from the sdk test");
    assert_eq!(seen["finish_reason"], "stop");
    assert_eq!(seen["prompt_tokens"], 7);
    assert_eq!(seen["cost_is_number"], true);
    assert_eq!(seen["cost"], 2.0, "a lone bidder is paid its bid 1 (not the max 2), plus the fee");
    assert_eq!(seen["auction"]["winner"], slug.as_str());
    assert_eq!(seen["auction"]["id"], seen["auction_header"]);
    let sent: Value = serde_json::from_str(&plain.last_request().unwrap().body).unwrap();
    assert_eq!(sent["response_format"], json!({"type": "json_object"}), "passed through");

    // A chat never reaches a JSON agent.
    assert_eq!(seen["error"]["status"], 422);
    assert_eq!(seen["error"]["class"], "UnprocessableEntityError");
    assert_eq!(seen["error"]["code"], "no_eligible_agent");
    assert!(seen["error"]["message"].as_str().unwrap().contains("/v1/jobs"), "{seen}");
    assert_eq!(ocr.requests(), 0);
    assert_eq!(seen["auth_error"]["status"], 401);

    // Minimal upstream: the textbook loop sees a choice in every chunk and a closing `stop`.
    assert_eq!(seen["textbook"]["text"], "Hello there");
    assert_eq!(seen["textbook"]["finish_reason"], "stop");
    assert_eq!(seen["textbook"]["chunks"], 4, "three relayed, one closing: {seen}");
    assert_eq!(
        seen["textbook"]["created"].as_array().unwrap().len(),
        1,
        "one `created` per stream"
    );
    assert!(seen["textbook"]["created"][0].as_i64().unwrap() > 0);
    assert_eq!(seen["helper"], json!({"content": "Hello there", "finish_reason": "stop"}));

    // With include_usage: one usage chunk, its cost a number.
    assert_eq!(seen["stream"]["text"], "streamed through the SDK");
    assert_eq!(seen["stream"]["usage"], json!({"completion_tokens": 6, "cost": 51.0}));
    assert_eq!(seen["stream"]["chunks_without_choices"], 1);

    // A streamed tool call passes through and ends with `tool_calls`.
    assert_eq!(
        seen["tool_call"],
        json!({"finish_reason": "tool_calls", "id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
    );
    let sent: Value = serde_json::from_str(&tools.last_request().unwrap().body).unwrap();
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");

    // A stream cut by its agent raises in the SDK after what arrived.
    assert_eq!(seen["cut"]["raised"], "APIError", "{seen}");
    assert_eq!(seen["cut"]["text"], "half an answer");
    assert!(seen["cut"]["message"].as_str().unwrap().contains("broke off"), "{seen}");

    // Money: the completion 2, the streams: minimal 5+1 twice, tools 5+1, include_usage 50+1,
    // the cut stream only its delivered tokens (none priced): 100 - 2 - 12 - 6 - 51 = 29.
    assert_eq!(app.credits(&caller).await, ("29".into(), "0".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_node_sdk_final_chat_completion_works_on_minimal_streams() {
    let Some(modules) = require(node_modules(), "node with the openai package under target/node")
    else {
        return;
    };
    let app = spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let minimal = TestAgent::start(minimal_stream()).await;
    let tools = TestAgent::start(tool_call_stream()).await;
    let models = json!({
        "minimal": chat_agent(&app, &owner, "node-minimal", &minimal, "1").await,
        "tools": chat_agent(&app, &owner, "node-tools", &tools, "1").await,
    });
    let (_, key) = app.create_key(&caller, "node").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/sdk_check.cjs").to_owned();
    let seen = run(vec!["node".into(), script], &app, &key, &models, Some(modules)).await;
    assert_eq!(seen["retrieved"], json!(["auction", models["minimal"]]));
    assert_eq!(
        seen["final"],
        json!({"content": "Hello there", "finish_reason": "stop", "model": models["minimal"]})
    );
    assert_eq!(seen["loop_text"], "Hello there");
    assert_eq!(
        seen["tool_call"],
        json!({"finish_reason": "tool_calls", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_runs_a_batch_unchanged() {
    let Some(python) = require(python(), "python with the openai package") else { return };
    let app = spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(Behaviour::Chat {
        content: "hello from a batch".into(),
        prompt_tokens: 5,
        completion_tokens: 2,
    })
    .await;
    chat_agent(&app, &owner, "batch-agent", &agent, "1").await;
    let (_, key) = app.create_key(&caller, "sdk-batch").await;
    let (before, _) = app.credits(&caller).await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/batch_check.py").to_owned();
    let seen = run(vec![python, script], &app, &key, &json!({}), None).await;

    assert_eq!(seen["file"]["object"], "file", "{seen}");
    assert_eq!(seen["file"]["purpose"], "batch");
    assert_eq!(seen["file"]["filename"], "requests.jsonl");
    assert_eq!(seen["file_retrieved"], true);
    assert_eq!(seen["file_content_equal"], true);
    assert_eq!(seen["bad_file"]["status"], 422, "{seen}");
    let message = seen["bad_file"]["message"].as_str().unwrap();
    assert!(message.contains("line 31, `custom_id`"), "{message}");

    assert_eq!(seen["created_status"], "in_progress");
    assert_eq!(seen["status"], "completed", "{seen}");
    assert_eq!(seen["counts"], json!({"total": 30, "completed": 30, "failed": 0}));
    assert_eq!(seen["metadata"], json!({"run": "sdk"}));
    assert_eq!(seen["error_file_id"], Value::Null);
    assert_eq!(seen["cancel_after_end"], "completed");
    assert!(seen["listed"].as_array().unwrap().contains(&seen["batch_id"]));

    // Every line answered once, in input order, matched by custom_id.
    let output = seen["output"].as_array().unwrap();
    let ids: Vec<&str> = output.iter().map(|o| o["custom_id"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..30).map(|i| format!("request-{i}")).collect();
    assert_eq!(ids, expected);
    let mut jobs: Vec<&str> = output.iter().map(|o| o["request_id"].as_str().unwrap()).collect();
    jobs.sort_unstable();
    jobs.dedup();
    assert_eq!(jobs.len(), 30);
    assert!(output.iter().all(|o| o["content"] == "hello from a batch" && o["status_code"] == 200));
    // Charged exactly the 30 answers: a lone bidder at 1, plus the 1-credit fee, each.
    assert!(output.iter().all(|o| o["cost"] == 2.0), "{seen}");
    assert_eq!(agent.requests(), 30);
    let (after, held) = app.credits(&caller).await;
    let credits = |text: &str| text.parse::<f64>().unwrap();
    assert_eq!(credits(&before) - credits(&after), 60.0);
    assert_eq!(credits(&held), 0.0);
}
