//! Schemathesis against the real binary: every operation of `/openapi.json`, with a funded key,
//! generated from the schema (examples, coverage of its edges, random fuzzing, and stateful
//! sequences along the spec's links: register an agent, then get, patch and delete it; create
//! a key, then revoke it; run a job, then read it, its generation and its auction). Every
//! check is on (`--checks all`): no 5xx, every status and body as documented, bad input
//! refused, good input accepted. Schemathesis is installed by `scripts/test` into
//! `target/python`; its settings are `scripts/schemathesis.toml`.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::served::Served;
use crate::test_agent::{Behaviour, TestAgent};

/// The Python that has schemathesis: `GAVEL_TEST_PYTHON` (set by `scripts/test`), else
/// `python3`.
fn python() -> Option<String> {
    let python = std::env::var("GAVEL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import schemathesis"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis must be installed in CI (scripts/test does it)"
        );
        eprintln!("SKIPPED: schemathesis is not installed");
    }
    ok.then_some(python)
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_the_schema() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start_with(
        dir.path(),
        &[
            ("GAVEL__CREDITS__MONTHLY_GRANT", "1000000"),
            ("GAVEL__RATE_LIMIT__PER_SECOND", "100000"),
            ("GAVEL__RATE_LIMIT__BURST", "100000"),
        ],
    );
    let base = served.base.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Two live agents on loopback, so that jobs run: a chat model and a JSON agent.
    let chat = runtime.block_on(TestAgent::start(Behaviour::Chat {
        content: "Hello".into(),
        prompt_tokens: 5,
        completion_tokens: 2,
    }));
    let echo = runtime.block_on(TestAgent::start(Behaviour::Echo));
    let key = runtime.block_on(async {
        let client = reqwest::Client::new();
        let signup: Value = client
            .post(format!("{base}/api/auth/signup"))
            .json(&json!({"email": "fuzz@example.com", "password": "a long enough password"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = signup["access_token"].as_str().unwrap().to_owned();
        for agent in [
            json!({"name": "chatter", "kind": "openai-chat", "categories": ["chat"],
                   "endpoint": format!("{}/v1", chat.url), "upstream_model": "m",
                   "pricing": {"per_call": "0.01"}}),
            json!({"name": "echo", "kind": "json", "categories": ["ocr", "scrape"],
                   "endpoint": echo.url, "pricing": {"per_call": "0.01"}}),
        ] {
            let response = client
                .post(format!("{base}/api/agents"))
                .bearer_auth(&token)
                .json(&agent)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        }
        let key: Value = client
            .post(format!("{base}/api/keys"))
            .bearer_auth(&token)
            .json(&json!({"name": "schemathesis"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        key["key"].as_str().unwrap().to_owned()
    });

    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/schemathesis.toml");
    let report_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/schemathesis");
    let mut command = Command::new(&python);
    command
        .args(["-m", "schemathesis.cli", "--config-file", config, "run"])
        .arg(format!("{base}/openapi.json"))
        .args(["--checks", "all", "--request-timeout", "30", "--header"])
        .arg(format!("Authorization: Bearer {key}"))
        .args(["--report", "junit", "--report-dir", report_dir, "--no-color"])
        .env("PYTHONUNBUFFERED", "1");
    // About 20 s on two cores; ten minutes means something hangs.
    let output = crate::served::output_within(&mut command, Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The summary, for the log: how many operations and cases ran.
    eprintln!("{stdout}\n{stderr}");
    assert!(output.status.success(), "schemathesis found failures; see above");
    // "  2458 generated, 2458 passed, 32 skipped": every generated case passed, and there were
    // enough of them to mean something; every phase ran and passed.
    let cases = stdout.lines().skip_while(|l| !l.starts_with("Test cases:")).nth(1).unwrap_or("");
    let counts: Vec<u64> =
        cases.split(',').filter_map(|part| part.split_whitespace().next()?.parse().ok()).collect();
    assert!(counts.len() >= 2 && counts[0] == counts[1] && counts[0] >= 1000, "{cases}");
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(stdout.contains(&format!("✅ {phase}")), "{phase} did not pass");
    }
    std::thread::sleep(Duration::from_millis(100));
    let errors: Vec<String> = served.log().into_iter().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:?}");
    drop((chat, echo));
}
