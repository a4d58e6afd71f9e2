//! The official OpenAI Python SDK, unchanged, against Gavel (`scripts/sdk_check.py`).
//! `scripts/test` installs the SDK; outside CI the test says so and stops if it is missing.

use serde_json::{Value, json};

use crate::helpers::{json_body, spawn_app_with};
use crate::test_agent::{Behaviour, TestAgent};

fn sdk_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|output| output.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_unchanged() {
    if !sdk_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the openai Python package must be installed in CI (scripts/test does it)"
        );
        eprintln!("SKIPPED: python3 with the openai package is not available");
        return;
    }
    let app = spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(Behaviour::Chat {
        content: "hello from the sdk test".into(),
        prompt_tokens: 7,
        completion_tokens: 3,
    })
    .await;
    let body = json!({
        "name": "sdk-agent", "kind": "openai-chat", "categories": ["chat"], "endpoint": agent.url,
        "upstream_model": "m", "pricing": {"per_call": "1"},
    });
    let slug =
        json_body(app.post_json("/api/agents", &body, Some(&owner.token)).await).await["slug"]
            .as_str()
            .unwrap()
            .to_owned();
    // A dear streaming agent: priced out of the capped auction above, called by name below.
    let streamer = TestAgent::start(Behaviour::Stream {
        pieces: vec!["streamed ".into(), "through ".into(), "the SDK".into()],
        first_after: std::time::Duration::ZERO,
        gap: std::time::Duration::from_millis(10),
        cut: false,
        usage: Some((4, 6)),
    })
    .await;
    let body = json!({
        "name": "sdk-streamer", "kind": "openai-chat", "categories": ["chat"], "endpoint": streamer.url,
        "upstream_model": "s", "pricing": {"per_call": "50"},
    });
    let stream_slug = json_body(app.post_json("/api/agents", &body, Some(&owner.token)).await)
        .await["slug"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, key) = app.create_key(&caller, "sdk").await;

    let base_url = format!("{}/v1", app.address);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/sdk_check.py");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .env("GAVEL_BASE_URL", base_url)
            .env("GAVEL_API_KEY", key)
            .env("GAVEL_STREAM_MODEL", stream_slug)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sdk_check.py failed: {stderr}");
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(seen["models"].as_array().unwrap().iter().any(|m| m == "auction"), "{seen}");
    assert!(seen["models"].as_array().unwrap().iter().any(|m| *m == slug.as_str()), "{seen}");
    assert_eq!(seen["model"], slug.as_str());
    assert_eq!(seen["content"], "hello from the sdk test");
    assert_eq!(seen["prompt_tokens"], 7);
    assert_eq!(seen["cost"], "3", "a lone bidder paid the max price 2, plus the call fee");
    assert_eq!(seen["auction"]["winner"], slug.as_str());
    assert_eq!(seen["auction"]["id"], seen["auction_header"]);
    assert_eq!(seen["error"]["status"], 422);
    assert_eq!(seen["error"]["class"], "UnprocessableEntityError");
    assert_eq!(seen["error"]["code"], "no_eligible_agent");
    assert_eq!(seen["auth_error"], 401);
    assert_eq!(seen["stream"]["text"], "streamed through the SDK");
    assert_eq!(seen["stream"]["usage"]["completion_tokens"], 6);
    assert_eq!(
        seen["stream"]["usage"]["cost"], "51",
        "a named agent's posted price plus the call fee"
    );
}
