//! The batch benchmark (DESIGN §9): a 10,000-line chat batch against zero-delay mock agents
//! (a 10-agent auction per line), from `POST /v1/batches` to `completed`, through the
//! release binary on SQLite (or `GAVEL__DATABASE__URL`). `BENCH_LINES` changes the size.
//!
//! Run with `scripts/bench batch`, which builds the release binary first. After the batch
//! Gavel is killed and the ledger checked: one capture per answered line, every balance the
//! sum of its entries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::{bench_env, gavel_bin, seed_market, start_gavel, start_mock_agent};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let lines: usize =
        std::env::var("BENCH_LINES").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let agent = start_mock_agent().await;
    let data = tempfile::tempdir().unwrap();
    let bin = gavel_bin();
    let env = bench_env(data.path());
    let (mut gavel, base) = start_gavel(&bin, &env);
    let client = reqwest::Client::new();
    let (caller, _) = seed_market(&client, &bin, &env, &base, &agent, "batch-caller").await;

    let content: Vec<String> = (0..lines)
        .map(|i| {
            json!({"custom_id": format!("line-{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "auction", "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": 16, "auction": {"max_price": "2"}}})
            .to_string()
        })
        .collect();
    let content = content.join("\n");
    let boundary = "gavel-bench-boundary";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.jsonl\"\r\n\r\n\
         {content}\r\n--{boundary}--\r\n"
    );
    let started = Instant::now();
    let file: Value = client
        .post(format!("{base}/v1/files"))
        .bearer_auth(&caller.1)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uploaded = started.elapsed();
    let created = Instant::now();
    let body = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let batch: Value = client
        .post(format!("{base}/v1/batches"))
        .bearer_auth(&caller.1)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(batch["status"], "in_progress", "{batch}");
    let validated = created.elapsed();
    let path = format!("{base}/v1/batches/{}", batch["id"].as_str().unwrap());
    let ended = loop {
        let read: Value =
            client.get(&path).bearer_auth(&caller.1).send().await.unwrap().json().await.unwrap();
        if read["status"] != "in_progress" {
            break read;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = created.elapsed();
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["request_counts"]["completed"], lines, "{ended}");
    // The output file, streamed page by page.
    let read = Instant::now();
    let output = client
        .get(format!("{base}/v1/files/{}/content", ended["output_file_id"].as_str().unwrap()))
        .bearer_auth(&caller.1)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let read = read.elapsed();
    assert_eq!(output.lines().count(), lines, "every line in the output file");
    let _ = gavel.kill();
    let _ = gavel.wait();
    let database = std::env::var("GAVEL__DATABASE__URL")
        .unwrap_or_else(|_| format!("sqlite://{}/gavel.db", data.path().display()));
    let db = registry::connect(&database, Some(1)).await.unwrap();
    let audit = registry::ledger::audit_ledger(&db).await.unwrap();
    let captures = registry::ledger::count_transfers(&db, "capture").await.unwrap();

    println!(
        "\nGavel batch benchmark ({lines} chat lines, 10-agent auction each, zero-delay agents, {})",
        if std::env::var_os("GAVEL__DATABASE__URL").is_some() { "Postgres" } else { "SQLite" }
    );
    println!("| phase | time |");
    println!("|---|---|");
    println!(
        "| upload ({} bytes, every line checked) | {:.2} s |",
        content.len(),
        uploaded.as_secs_f64()
    );
    println!(
        "| create (every body parsed, cost bound checked) | {:.2} s |",
        validated.as_secs_f64()
    );
    println!(
        "| create to `completed` | **{:.2} s** ({:.0} lines/s; DESIGN §9: <= 10 s) |",
        elapsed.as_secs_f64(),
        lines as f64 / elapsed.as_secs_f64()
    );
    println!(
        "| read the output file ({} bytes, {lines} lines) | {:.2} s |",
        output.len(),
        read.as_secs_f64()
    );
    println!(
        "\nledger after SIGKILL: {captures} captures for {lines} answered lines; {} balance mismatches; entries sum to {}",
        audit.mismatches.len(),
        audit.total
    );
    assert_eq!(captures, lines as u64, "one capture per line");
    assert!(audit.mismatches.is_empty() && audit.total == 0, "{audit:?}");
}
