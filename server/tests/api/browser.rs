//! The dashboard in headless Chromium (`scripts/web_check.py`, Playwright for Python): a
//! newcomer signs up, makes a key, runs a job with the official OpenAI SDK, finds it, reads
//! its transcript and rates it. Screenshots of every page land in `target/screenshots/`;
//! axe-core finds no serious violation on any page. What the pages showed is checked here
//! against the ledger. `scripts/test` installs Chromium (Debian's package), Playwright and
//! axe-core; outside CI a missing piece skips the test, saying so, and in CI it fails.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{json_body, spawn_app_with};
use crate::test_agent::{Behaviour, TestAgent};

/// Python with Playwright, Chromium, and axe-core's script, when all three are here.
fn tools() -> Option<(String, String, PathBuf)> {
    let python = std::env::var("GAVEL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_playwright = Command::new(&python)
        .args(["-c", "import playwright, openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    let chromium = std::env::var("GAVEL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let modules =
        std::env::var_os("GAVEL_TEST_NODE_MODULES").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/node/node_modules"))
        });
    let axe = modules.join("axe-core/axe.min.js");
    let found = has_playwright && PathBuf::from(&chromium).exists() && axe.exists();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium, Playwright and axe-core must be installed in CI (scripts/test does it)"
        );
        eprintln!("SKIPPED: Chromium, Playwright or axe-core is not available");
        return None;
    }
    Some((python, chromium, axe))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_signs_up_runs_a_job_reads_its_transcript_and_rates_it_in_chromium() {
    let Some((python, chromium, axe)) = tools() else { return };
    // The agents' owner is the operator too.
    let owner_email = "owner@example.com";
    let app = spawn_app_with(|s| {
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
        s.admin.emails = vec![owner_email.into()];
    })
    .await;
    let agent = TestAgent::start(Behaviour::Chat {
        content: "hello from a loopback agent".into(),
        prompt_tokens: 5,
        completion_tokens: 4,
    })
    .await;
    let owner = app.signup_as(owner_email).await;
    crate::jobs::chat_agent(&app, &owner, "helper", &agent, "1.5", json!({})).await;
    let dearer = TestAgent::start(Behaviour::Chat {
        content: "dear".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
    })
    .await;
    let (_, dearer_id) =
        crate::jobs::chat_agent(&app, &owner, "dearer", &dearer, "4", json!({})).await;

    // A caller with a finished two-line batch, for the batch pages.
    let batcher = app.signup_as("batcher@example.com").await;
    let (_, batch_key) = app.create_key(&batcher, "batch").await;
    let lines: Vec<String> = (0..2)
        .map(|i| {
            json!({"custom_id": format!("c{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "auction", "messages": [{"role": "user", "content": "hi"}]}})
            .to_string()
        })
        .collect();
    let upload = crate::batches::upload_to(&app.address, &batch_key, &lines.join("\n")).await;
    let file = json_body(upload).await;
    let body = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"});
    let batch = json_body(app.post_json("/v1/batches", &body, Some(&batch_key)).await).await;
    let path = format!("/v1/batches/{}", batch["id"].as_str().unwrap());
    for _ in 0..200 {
        let read = json_body(app.get(&path, Some(&batch_key)).await).await;
        if read["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let shots = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/web_check.py");
    let (url, shots_dir) = (app.address.clone(), shots.clone());
    let (owner_email, owner_password) = (owner.email.clone(), owner.password.clone());
    let batcher_password = batcher.password.clone();
    // The agent the owner registers through the form.
    let formed = TestAgent::start(Behaviour::Chat {
        content: "formed".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
    })
    .await;
    let form_agent_url = format!("{}/v1", formed.url);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("GAVEL_URL", url)
            .env("GAVEL_SCREENSHOTS", shots_dir)
            .env("GAVEL_AXE", axe)
            .env("GAVEL_CHROMIUM", chromium)
            .env("GAVEL_OWNER_EMAIL", owner_email)
            .env("GAVEL_FORM_AGENT_URL", form_agent_url)
            .env("GAVEL_OWNER_PASSWORD", owner_password)
            .env("GAVEL_BATCHER_EMAIL", "batcher@example.com")
            .env("GAVEL_BATCHER_PASSWORD", batcher_password)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "web_check.py failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(report["violations"], json!([]), "accessibility: {report}");
    for (name, page) in report["pages"].as_object().unwrap() {
        assert!(shots.join(format!("{name}.png")).exists(), "no screenshot of {name}");
        assert_eq!(page["reached_by_tab"], page["controls"], "{name}: a control Tab never reaches");
    }
    assert_eq!(report["answer"], "hello from a loopback agent");
    assert!(report["winner"].as_str().unwrap().ends_with("/helper"), "{report}");
    assert!(report["candidates"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["attempts"], 1);
    // The "try it" box's shortlist: both active agents, the cheaper first.
    let shortlist = report["shortlist"].as_array().unwrap();
    assert_eq!(shortlist.len(), 2, "{report}");
    assert!(shortlist[0].as_str().unwrap().contains("/helper"), "{report}");
    assert!(report["rating"].as_str().unwrap().contains("up: quick and right"));
    assert!(report["after_logout"].as_str().unwrap().ends_with("/login"));

    // What the pages showed is what the ledger holds.
    let job_id: uuid::Uuid = report["job_id"].as_str().unwrap().parse().unwrap();
    let email = registry::Email::parse("newcomer@example.com").unwrap();
    let caller =
        registry::find_credentials_by_email(&app.state.db, &email).await.unwrap().unwrap().user.id;
    let job = registry::jobs::find_job(&app.state.db, caller, job_id).await.unwrap().unwrap();
    let entries = registry::ledger::entries(&app.state.db, caller, None, 200).await.unwrap();
    let captured: i64 =
        entries.entries.iter().filter(|e| e.kind == "capture").map(|e| -e.amount.micros()).sum();
    let shown = |name: &str| report[name].as_str().unwrap().to_owned();
    assert_eq!(
        shown("spent_total"),
        auction_engine::MicroCredits::from_micros(captured).to_string()
    );
    assert_eq!(shown("spent_total_hourly"), shown("spent_total"), "per hour, the same sum");
    assert_eq!(shown("total_cost"), job.total_cost.to_string());
    // The key's row counts the one job run with it (the "try it" box ran as the session, not
    // the key), and what it cost.
    let key_rows = report["key_rows"].as_array().unwrap();
    let laptop = key_rows[0].as_str().unwrap();
    let usage = format!("\t1\t1\t{}\t", job.total_cost);
    assert!(laptop.starts_with("laptop") && laptop.contains(&usage), "{usage:?} in {laptop:?}");
    let balance = registry::ledger::balance(&app.state.db, caller).await.unwrap();
    assert_eq!(shown("available_after"), balance.available.to_string());
    assert_eq!(shown("available_before"), "100");
    let rating = registry::feedback::find_feedback(&app.state.db, caller, job_id).await.unwrap();
    assert_eq!(rating.unwrap().rating, registry::feedback::Rating::Up);

    // The owner saw the win in their earnings, the rating on their agent, and paused the other.
    let captured = async |account: uuid::Uuid| -> i64 {
        let page = registry::ledger::entries(&app.state.db, registry::UserId(account), None, 200);
        let entries = page.await.unwrap().entries;
        entries.iter().filter(|e| e.kind == "capture").map(|e| e.amount.micros()).sum()
    };
    let earned = captured(owner.id).await;
    assert!(earned > 0);
    assert_eq!(
        shown("owner_earned_total"),
        auction_engine::MicroCredits::from_micros(earned).to_string()
    );
    let rows = report["owner_agents"].as_array().unwrap();
    let helper = rows.iter().find(|r| r.as_str().unwrap().contains("/helper")).unwrap();
    assert!(helper.as_str().unwrap().contains("1 up, 0 down (1)"), "{helper}");
    let after = report["owner_agents_after_pause"].as_array().unwrap();
    let dearer_row = after.iter().find(|r| r.as_str().unwrap().contains("/dearer")).unwrap();
    assert!(dearer_row.as_str().unwrap().contains("paused"), "{dearer_row}");
    let stored =
        registry::agents::list_own_agents(&app.state.db, registry::UserId(owner.id)).await.unwrap();
    let dearer = stored.iter().find(|a| a.id.to_string() == dearer_id).unwrap();
    assert_eq!(dearer.state, registry::agents::AgentState::Paused);

    // The form refused the metadata address at its field, then registered the agent.
    assert!(shown("register_refusal").contains("points at"), "{report}");
    let registered = report["owner_agents_after_register"].as_array().unwrap();
    assert!(registered.iter().any(|r| r.as_str().unwrap().contains("/formed")), "{report}");
    let stored =
        registry::agents::list_own_agents(&app.state.db, registry::UserId(owner.id)).await.unwrap();
    let formed_agent = stored.iter().find(|a| a.slug.ends_with("/formed")).unwrap();
    assert_eq!(formed_agent.endpoint, format!("{}/v1", formed.url));
    // Then edited it: the new price is its second version, on the page and in the store.
    assert_eq!(formed_agent.price_version, 2, "{report}");
    assert_eq!(formed_agent.pricing.per_call.to_string(), "0.6");
    let edited = report["owner_agents_after_edit"].as_array().unwrap();
    let row = edited.iter().map(|r| r.as_str().unwrap()).find(|r| r.contains("/formed")).unwrap();
    assert!(row.contains("0.6") && row.contains("(v2)"), "{report}");

    // The batcher's pages: the finished batch and its two answered lines.
    assert_eq!((shown("batch_status"), shown("batch_completed")), ("completed".into(), "2".into()));

    // As the operator, the owner saw the platform's fees: its capture entries.
    let fees = captured(registry::ledger::PLATFORM_REVENUE_ACCOUNT).await;
    assert!(fees > 0);
    assert_eq!(
        shown("operator_fees_total"),
        auction_engine::MicroCredits::from_micros(fees).to_string()
    );
}
