//! The fault suite: the real binary under load meets a crash, a Redis restart, malicious
//! agents and callers who hang up. After each, money is exact (every account equals the sum of
//! its entries, the entries sum to zero, nothing stays held, and what each caller paid is what
//! its activity says) and the process's peak RSS stayed bounded.

use std::time::Duration;

use registry::ledger;
use serde_json::{Value, json};

use crate::helpers::json_body;
use crate::served::{Served, client, get, register, signup};
use crate::test_agent::{Behaviour, TestAgent};

/// Peak RSS allowed to a server process in these tests: idle it is ~20 MiB; the malicious
/// matrix once reached 164 MiB and stayed there.
const RSS_BOUND_MIB: u64 = 120;

/// What `token`'s user paid in all, by its activity (as caller): the sum of its amounts.
async fn paid_by_activity(base: &str, token: &str) -> f64 {
    let activity = get(base, token, "/api/activity?role=caller&limit=1000").await;
    assert_eq!(activity["has_more"], false);
    activity["data"].as_array().unwrap().iter().map(|row| -amount(&row["amount"])).sum()
}

fn amount(value: &Value) -> f64 {
    value.as_str().unwrap().parse().unwrap()
}

/// The ledger of the database at `url`: every account equals its entries, and they sum to 0.
/// Read once the servers are gone.
async fn assert_ledger_exact(url: &str) {
    let db = registry::connect(url, Some(1)).await.unwrap();
    let audit = ledger::audit_ledger(&db).await.unwrap();
    assert!(audit.mismatches.is_empty(), "{audit:?}");
    assert_eq!(audit.total, 0, "{audit:?}");
    assert!(audit.flow_mismatches.is_empty(), "{audit:?}");
    db.close().await.unwrap();
}

/// The caller's wallet matches its activity: `grant` less what the activity says it paid,
/// nothing held, no job still running.
async fn assert_wallet_matches_activity(base: &str, token: &str, grant: f64) {
    let running = get(base, token, "/api/activity?role=caller&status=running").await;
    assert_eq!(running["data"], json!([]), "{running}");
    let credits = get(base, token, "/api/credits").await;
    assert_eq!(credits["held"], "0", "{credits}");
    let paid = paid_by_activity(base, token).await;
    let balance = amount(&credits["balance"]);
    assert!((grant - paid - balance).abs() < 1e-6, "balance {balance}, paid {paid}");
}

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}/data/gavel.db?mode=rwc", dir.display())
}

/// `kill -9` of the real binary while 16 callers run jobs, then a restart: the dead process's
/// jobs are failed and their holds released at once, every wallet matches its activity, every
/// 200 a caller received is a delivered job it paid for once, the jobs paid for without a 200
/// number at most the requests in flight at the kill, and the ledger is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_then_restart_leaves_money_exact() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(Behaviour::Slow(Duration::from_millis(150))).await;
    let first = spawn_served(dir.path(), vec![]).await;
    let base = first.base.clone();
    let owner = signup(&base, "owner@example.com").await;
    register(
        &base,
        &owner,
        json!({"name": "worker", "kind": "json", "categories": ["ocr"],
        "endpoint": agent.url, "pricing": {"per_call": "0.5"}}),
    )
    .await;
    let mut callers = Vec::new();
    for i in 0..4 {
        callers.push(signup(&base, &format!("caller{i}@example.com")).await);
    }
    // Four loops per caller; each counts the 200s it received before the server died.
    let load: Vec<_> = (0..16)
        .map(|i| {
            let (base, token) = (base.clone(), callers[i % 4].clone());
            tokio::spawn(async move {
                let job = json!({"category": "ocr", "input": {"n": i}});
                let mut received = 0_usize;
                loop {
                    let sent = client()
                        .post(format!("{base}/v1/jobs"))
                        .bearer_auth(&token)
                        .json(&job)
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 200 => {
                            // A 200 counts once its body has arrived whole.
                            if response.bytes().await.is_ok() {
                                received += 1;
                            } else {
                                return (i % 4, received);
                            }
                        }
                        Ok(response) => panic!("{}", response.status()),
                        Err(_) => return (i % 4, received), // the server is gone
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let peak = first.peak_rss_mib();
    tokio::task::spawn_blocking(move || first.kill_9()).await.unwrap();
    let mut received = [0_usize; 4];
    for task in load {
        let (caller, count) = task.await.unwrap();
        received[caller] += count;
    }
    assert!(peak < RSS_BOUND_MIB, "peak RSS {peak} MiB");

    let second = spawn_served(dir.path(), vec![]).await;
    for (idx, token) in callers.iter().enumerate() {
        assert_wallet_matches_activity(&second.base, token, 100.0).await;
        let activity = get(&second.base, token, "/api/activity?role=caller&limit=1000").await;
        let rows = activity["data"].as_array().unwrap();
        let delivered = rows.iter().filter(|row| row["status"] == "delivered").count();
        // Only delivered jobs cost anything.
        for row in rows.iter().filter(|row| row["status"] != "delivered") {
            assert_eq!(amount(&row["amount"]), 0.0, "{row}");
        }
        // Each caller had four requests in flight at most when the server died.
        eprintln!("caller {idx}: {} 200s received, {delivered} jobs delivered", received[idx]);
        assert!(
            received[idx] <= delivered && delivered <= received[idx] + 4,
            "caller {idx}: {} received, {delivered} delivered",
            received[idx]
        );
    }
    assert!(received.iter().sum::<usize>() > 0, "load ran before the kill");
    drop(second);
    assert_ledger_exact(&sqlite_url(dir.path())).await;
}

/// Two instances on one Postgres: a key revoked, an agent paused or repriced on one holds on
/// the other from its very next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_a_pause_and_a_reprice_on_one_instance_hold_on_the_other_at_once() {
    let Some(admin_url) = registry::testing::test_database_url() else {
        assert!(std::env::var_os("CI").is_none(), "CI must set TEST_DATABASE_URL");
        eprintln!("SKIPPED: TEST_DATABASE_URL is not set");
        return;
    };
    let postgres = registry::testing::TempPostgres::create(&admin_url).await.unwrap();
    let env = vec![("GAVEL__DATABASE__URL".to_owned(), postgres.url.clone())];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_served(dir_a.path(), env.clone()).await;
    let b = spawn_served(dir_b.path(), env).await;
    let agent = TestAgent::start(Behaviour::Json(200, r#"{"text":"ok"}"#.into())).await;
    let owner = signup(&a.base, "owner@example.com").await;
    let created = register(
        &a.base,
        &owner,
        json!({"name": "worker", "kind": "json", "categories": ["ocr"],
        "endpoint": agent.url, "pricing": {"per_call": "0.25"}}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let caller = signup(&a.base, "caller@example.com").await;
    let key: Value = json_body(
        client()
            .post(format!("{}/api/keys", a.base))
            .bearer_auth(&caller)
            .json(&json!({"name": "k"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let (key, key_id) = (key["key"].as_str().unwrap(), key["id"].as_str().unwrap());
    let job = json!({"category": "ocr", "input": {}});
    let run_on_b =
        || client().post(format!("{}/v1/jobs", b.base)).bearer_auth(key).json(&job).send();
    let first = json_body(run_on_b().await.unwrap()).await;
    assert_eq!(first["auction"]["clearing_price"], "0.25", "{first}");

    // Reprice on A: B's next auction clears at the new price.
    let patch = json!({"pricing": {"per_call": "0.5"}});
    let response = client()
        .patch(format!("{}/api/agents/{id}", a.base))
        .bearer_auth(&owner)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let repriced = json_body(run_on_b().await.unwrap()).await;
    assert_eq!(repriced["auction"]["clearing_price"], "0.5", "{repriced}");

    // Pause on A: B's next job finds no eligible agent.
    let paused = client()
        .post(format!("{}/api/agents/{id}/pause", a.base))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    let refused = run_on_b().await.unwrap();
    assert_eq!(refused.status(), 422);
    assert_eq!(json_body(refused).await["error"]["code"], "no_eligible_agent");

    // Revoke on A: B refuses the key on its next request.
    let revoked = client()
        .delete(format!("{}/api/keys/{key_id}", a.base))
        .bearer_auth(&caller)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(run_on_b().await.unwrap().status(), 401);
    drop((a, b));
}

async fn spawn_served(dir: &std::path::Path, env: Vec<(String, String)>) -> Served {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Served::start_with(&dir, &env)
    })
    .await
    .unwrap()
}

/// A Redis server of the test's own on a free port, restartable.
struct OwnRedis {
    port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        // Owned at once, so that Drop kills it even if it never answers.
        let redis = OwnRedis { port, child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on {port}");
    }

    fn restart(mut self) -> OwnRedis {
        let _ = self.child.kill();
        let _ = self.child.wait();
        OwnRedis::start(self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two instances on one Postgres share a Redis of the test's own; it is restarted while both
/// serve jobs. No request gets a 5xx other than 503, both instances serve again once Redis is
/// back, and the money is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_two_instances_loses_no_money() {
    let Some(admin_url) = registry::testing::test_database_url() else {
        assert!(std::env::var_os("CI").is_none(), "CI must set TEST_DATABASE_URL");
        eprintln!("SKIPPED: TEST_DATABASE_URL is not set");
        return;
    };
    let postgres = registry::testing::TempPostgres::create(&admin_url).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = tokio::task::spawn_blocking(move || OwnRedis::start(port)).await.unwrap();
    let env = vec![
        ("GAVEL__CREDITS__MONTHLY_GRANT".to_owned(), "100000".to_owned()),
        ("GAVEL__DATABASE__URL".to_owned(), postgres.url.clone()),
        ("GAVEL__REDIS__URL".to_owned(), format!("redis://127.0.0.1:{port}")),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_served(dir_a.path(), env.clone()).await;
    let b = spawn_served(dir_b.path(), env).await;
    let agent = TestAgent::start(Behaviour::Slow(Duration::from_millis(50))).await;
    let owner = signup(&a.base, "owner@example.com").await;
    register(
        &a.base,
        &owner,
        json!({"name": "worker", "kind": "json", "categories": ["ocr"],
        "endpoint": agent.url, "pricing": {"per_call": "0.25"}}),
    )
    .await;
    let caller = signup(&b.base, "caller@example.com").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = [a.base.clone(), b.base.clone(), a.base.clone(), b.base.clone()]
        .into_iter()
        .map(|base| {
            let (token, stop) = (caller.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let job = json!({"category": "ocr", "input": {}});
                    let response = client()
                        .post(format!("{base}/v1/jobs"))
                        .bearer_auth(&token)
                        .json(&job)
                        .send()
                        .await
                        .unwrap();
                    statuses.push(response.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let redis = tokio::task::spawn_blocking(move || redis.restart()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses = Vec::new();
    for task in load {
        statuses.extend(task.await.unwrap());
    }
    assert!(statuses.iter().all(|s| [200, 402, 429, 503].contains(s)), "{statuses:?}");
    // Both instances serve once Redis is back.
    for base in [&a.base, &b.base] {
        let job = json!({"category": "ocr", "input": {}});
        let response = client()
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(&caller)
            .json(&job)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{base}");
    }
    assert_wallet_matches_activity(&a.base, &caller, 100_000.0).await;
    for served in [&a, &b] {
        assert!(served.peak_rss_mib() < RSS_BOUND_MIB, "peak RSS {} MiB", served.peak_rss_mib());
    }
    drop((a, b, redis));
    assert_ledger_exact(&postgres.url).await;
}

/// The malicious-agent matrix of findings 1 and 6, against the real binary: a stream that
/// never ends an event, a stream of endless comments, endless one-character chunks, a body of
/// 64 MB, a body that is not JSON, usage of 10^12 tokens, an answer that never comes. Each
/// call ends within its deadline with a bounded answer, the server stays responsive, and
/// afterwards the wallet matches the activity, the ledger is exact and RSS stayed bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_agents_cannot_stall_bloat_or_overcharge() {
    let dir = tempfile::tempdir().unwrap();
    let served = spawn_served(
        dir.path(),
        vec![("GAVEL__DISPATCH__TIMEOUT_MS".to_owned(), "3000".to_owned())],
    )
    .await;
    let base = served.base.clone();
    let owner = signup(&base, "owner@example.com").await;
    let caller = signup(&base, "caller@example.com").await;
    let matrix: Vec<(&str, Behaviour)> = vec![
        ("no-blank-line", Behaviour::Flood { head: "data: ".into(), unit: "x".repeat(4096) }),
        (
            "comments",
            Behaviour::Flood { head: String::new(), unit: format!(": {}\n", "c".repeat(4000)) },
        ),
        (
            "one-char-chunks",
            Behaviour::Flood {
                head: String::new(),
                unit: "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n"
                    .into(),
            },
        ),
        ("huge-body", Behaviour::Big(64 * 1024 * 1024)),
        ("garbage", Behaviour::Garbage),
        (
            "usage-inflation",
            Behaviour::Chat {
                content: "hi".into(),
                prompt_tokens: 1_000_000_000_000,
                completion_tokens: 1_000_000_000_000,
            },
        ),
        ("never-answers", Behaviour::Slow(Duration::from_secs(60))),
    ];
    let mut agents = Vec::new();
    for (name, behaviour) in matrix {
        let agent = TestAgent::start(behaviour).await;
        let created = register(
            &base,
            &owner,
            json!({"name": name, "kind": "openai-chat",
            "categories": ["chat"], "endpoint": format!("{}/v1", agent.url), "upstream_model": "m",
            "pricing": {"per_call": "0.1", "per_million_output_tokens": "1"}}),
        )
        .await;
        agents.push((created["slug"].as_str().unwrap().to_owned(), agent));
    }
    for (slug, _) in &agents {
        for stream in [false, true] {
            let body = json!({"model": slug, "stream": stream, "max_tokens": 100,
                "messages": [{"role": "user", "content": "hi"}]});
            let started = std::time::Instant::now();
            let response = client()
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&caller)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{slug} stream={stream}: {:?}",
                started.elapsed()
            );
            // At most `max_response_bytes` (8 MiB) is read from an agent; relayed, each chunk is
            // re-stamped with the job's id, model and time, so one-character chunks arrive
            // about 3.7 times their size (30.6 MB measured).
            assert!(text.len() < 40 * 1024 * 1024, "{slug} stream={stream}: {} bytes", text.len());
            assert!(
                [200, 422, 502].contains(&status),
                "{slug} stream={stream}: {status} {}",
                &text[..text.len().min(300)]
            );
            let health = client()
                .get(format!("{base}/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .unwrap();
            assert_eq!(health.status(), 200, "after {slug}");
        }
    }
    // The inflated usage was settled on max_tokens: the 1-credit call fee, the 0.1 per call
    // and 100 tokens at 1 per million; never 10^6 credits.
    let activity = get(&base, &caller, "/api/activity?role=caller&limit=100").await;
    for row in activity["data"].as_array().unwrap() {
        assert!(-amount(&row["amount"]) <= 1.1001 + 1e-9, "{row}");
        if row["agent"] == "owner/usage-inflation" && row["status"] == "delivered" {
            assert_eq!(row["amount"], "-1.1001", "{row}");
        }
    }
    assert_wallet_matches_activity(&base, &caller, 100.0).await;
    let peak = served.peak_rss_mib();
    drop(served);
    assert!(peak < RSS_BOUND_MIB, "peak RSS {peak} MiB");
    assert_ledger_exact(&sqlite_url(dir.path())).await;
    drop(agents);
}

/// Callers who hang up mid-stream: the job still ends (settled for what was sent), nothing
/// stays held, and the money is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_hanging_up_mid_stream_leave_money_exact() {
    let dir = tempfile::tempdir().unwrap();
    let served = spawn_served(dir.path(), vec![]).await;
    let base = served.base.clone();
    let agent = TestAgent::start(Behaviour::Stream {
        pieces: (0..40).map(|i| format!("piece {i} ")).collect(),
        first_after: Duration::from_millis(10),
        gap: Duration::from_millis(25),
        cut: false,
        usage: Some((5, 40)),
    })
    .await;
    let owner = signup(&base, "owner@example.com").await;
    let caller = signup(&base, "caller@example.com").await;
    let created = register(
        &base,
        &owner,
        json!({"name": "streamer", "kind": "openai-chat",
        "categories": ["chat"], "endpoint": format!("{}/v1", agent.url), "upstream_model": "m",
        "pricing": {"per_call": "0.2"}}),
    )
    .await;
    let slug = created["slug"].as_str().unwrap().to_owned();
    let hang_ups: Vec<_> = (0..8)
        .map(|i| {
            let (base, token, slug) = (base.clone(), caller.clone(), slug.clone());
            tokio::spawn(async move {
                let body = json!({"model": slug, "stream": true, "messages": [{"role": "user", "content": "go"}]});
                let mut response = client().post(format!("{base}/v1/chat/completions")).bearer_auth(&token).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
                // Read a few chunks (none for some), then hang up.
                for _ in 0..(i % 4) {
                    let _ = response.chunk().await;
                }
                drop(response);
            })
        })
        .collect();
    for task in hang_ups {
        task.await.unwrap();
    }
    // Let the relays notice and settle.
    let mut held = Value::Null;
    for _ in 0..100 {
        held = get(&base, &caller, "/api/credits").await["held"].clone();
        if held == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(held, "0");
    assert_wallet_matches_activity(&base, &caller, 100.0).await;
    let peak = served.peak_rss_mib();
    drop(served);
    assert!(peak < RSS_BOUND_MIB, "peak RSS {peak} MiB");
    assert_ledger_exact(&sqlite_url(dir.path())).await;
}

/// Starts a batch of `lines` OCR lines (max price 0.5) as `token` on `base`; its path.
async fn start_batch(base: &str, token: &str, lines: usize) -> String {
    let content: Vec<String> = (0..lines).map(|i| crate::batches::job_line(i, "0.5")).collect();
    let file = json_body(crate::batches::upload_to(base, token, &content.join("\n")).await).await;
    let body =
        json!({"input_file_id": file["id"], "endpoint": "/v1/jobs", "completion_window": "24h"});
    let batch = json_body(
        client()
            .post(format!("{base}/v1/batches"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(batch["status"], "in_progress", "{batch}");
    format!("/v1/batches/{}", batch["id"].as_str().unwrap())
}

/// Polls the batch on `base` until `done(batch)` or `limit`; the last read.
async fn batch_until(
    base: &str,
    token: &str,
    path: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let batch = get(base, token, path).await;
        if done(&batch) || std::time::Instant::now() > deadline {
            return batch;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After a batch ended `completed` on `base`: every line is in the output once, answered by a
/// job of its own, and the caller paid for exactly those jobs.
async fn assert_each_line_answered_and_paid_once(
    base: &str,
    token: &str,
    batch: &Value,
    lines: usize,
) {
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["request_counts"]["completed"], lines, "{batch}");
    let output = client()
        .get(format!("{base}/v1/files/{}/content", batch["output_file_id"].as_str().unwrap()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows: Vec<Value> = output.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut ids: Vec<&str> = rows.iter().map(|r| r["custom_id"].as_str().unwrap()).collect();
    let mut jobs: Vec<&str> =
        rows.iter().map(|r| r["response"]["request_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    jobs.sort_unstable();
    jobs.dedup();
    assert_eq!((ids.len(), jobs.len()), (lines, lines));
    let activity = get(base, token, "/api/activity?role=caller&limit=1000").await;
    let rows = activity["data"].as_array().unwrap();
    let delivered = rows.iter().filter(|row| row["status"] == "delivered").count();
    assert_eq!(delivered, lines, "one charged job per line, none twice");
    for row in rows.iter().filter(|row| row["status"] != "delivered") {
        assert_eq!(amount(&row["amount"]), 0.0, "{row}");
    }
    assert_wallet_matches_activity(base, token, 100.0).await;
}

/// `kill -9` of the real binary in the middle of a batch, then a restart on the same SQLite
/// file: the batch resumes (the dead worker's leases lapse), ends `completed`, and every line
/// was charged exactly once; the agent ran a line twice at most for the lines in flight at
/// the kill, which were never charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_then_restart_finishes_every_line_charged_once() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(Behaviour::Slow(Duration::from_millis(100))).await;
    let env = vec![
        ("GAVEL__BATCH__LEASE_MS".to_owned(), "1000".to_owned()),
        ("GAVEL__BATCH__CONCURRENCY".to_owned(), "8".to_owned()),
    ];
    let first = spawn_served(dir.path(), env.clone()).await;
    let owner = signup(&first.base, "owner@example.com").await;
    register(
        &first.base,
        &owner,
        json!({"name": "worker", "kind": "json", "categories": ["ocr"],
        "endpoint": agent.url, "pricing": {"per_call": "0.5"}}),
    )
    .await;
    let caller = signup(&first.base, "caller@example.com").await;
    // 60 lines that may cost 1.5 each: 90 of the 100 free credits.
    let path = start_batch(&first.base, &caller, 60).await;
    let midway = batch_until(&first.base, &caller, &path, Duration::from_secs(30), |b| {
        b["request_counts"]["completed"].as_i64().unwrap_or(0) >= 16
    })
    .await;
    tokio::task::spawn_blocking(move || first.kill_9()).await.unwrap();
    let before_kill = midway["request_counts"]["completed"].as_i64().unwrap();
    assert!(before_kill < 60, "killed mid-batch: {midway}");

    let second = spawn_served(dir.path(), env).await;
    // The restarted process holds again what the unfinished lines still hold: never less
    // than each such line's 1.5 credits (nothing more, while none of its jobs is open).
    let credits = get(&second.base, &caller, "/api/credits").await;
    let counts = get(&second.base, &caller, &path).await["request_counts"].clone();
    let unfinished =
        60 - counts["completed"].as_i64().unwrap() - counts["failed"].as_i64().unwrap();
    let held = amount(&credits["held"]);
    assert!(held >= 1.5 * unfinished as f64, "{credits} for {unfinished} lines");
    let ended = batch_until(&second.base, &caller, &path, Duration::from_secs(60), |b| {
        b["status"] != "in_progress"
    })
    .await;
    assert_each_line_answered_and_paid_once(&second.base, &caller, &ended, 60).await;
    let credits = get(&second.base, &caller, "/api/credits").await;
    assert_eq!(amount(&credits["held"]), 0.0, "nothing held once the batch ended: {credits}");
    let ran = agent.requests();
    assert!(
        (60..=68).contains(&ran),
        "the agent ran {ran} lines: 60, plus at most the 8 in flight"
    );
    drop(second);
    assert_ledger_exact(&sqlite_url(dir.path())).await;
}

/// Two instances on one Postgres work one batch; one is killed (`kill -9`) midway. The other
/// takes over the dead worker's lines when their leases lapse and ends the batch: both
/// delivered lines, none twice, and the dead instance's open jobs are ended and their holds
/// released (after its heartbeat lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_share_a_batch_and_one_dying_loses_no_line() {
    let Some(admin_url) = registry::testing::test_database_url() else {
        assert!(std::env::var_os("CI").is_none(), "CI must set TEST_DATABASE_URL");
        eprintln!("SKIPPED: TEST_DATABASE_URL is not set");
        return;
    };
    let postgres = registry::testing::TempPostgres::create(&admin_url).await.unwrap();
    let env = vec![
        ("GAVEL__DATABASE__URL".to_owned(), postgres.url.clone()),
        ("GAVEL__BATCH__LEASE_MS".to_owned(), "1000".to_owned()),
        ("GAVEL__BATCH__CONCURRENCY".to_owned(), "4".to_owned()),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_served(dir_a.path(), env.clone()).await;
    let b = spawn_served(dir_b.path(), env).await;
    let agent = TestAgent::start(Behaviour::Slow(Duration::from_millis(60))).await;
    let owner = signup(&a.base, "owner@example.com").await;
    register(
        &a.base,
        &owner,
        json!({"name": "worker", "kind": "json", "categories": ["ocr"],
        "endpoint": agent.url, "pricing": {"per_call": "0.5"}}),
    )
    .await;
    let caller = signup(&a.base, "caller@example.com").await;
    let path = start_batch(&a.base, &caller, 60).await;
    batch_until(&b.base, &caller, &path, Duration::from_secs(30), |batch| {
        batch["request_counts"]["completed"].as_i64().unwrap_or(0) >= 16
    })
    .await;
    tokio::task::spawn_blocking(move || a.kill_9()).await.unwrap();
    let ended = batch_until(&b.base, &caller, &path, Duration::from_secs(60), |batch| {
        batch["status"] != "in_progress"
    })
    .await;
    // The dead instance's open jobs end once its heartbeat is 15 s old.
    let running = "/api/activity?role=caller&status=running";
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while get(&b.base, &caller, running).await["data"] != json!([])
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_each_line_answered_and_paid_once(&b.base, &caller, &ended, 60).await;
    let credits = get(&b.base, &caller, "/api/credits").await;
    assert_eq!(amount(&credits["held"]), 0.0, "the batch's hold is all spent or freed: {credits}");
    let db = registry::connect(&postgres.url, Some(1)).await.unwrap();
    let workers = sea_orm::ConnectionTrait::query_one_raw(
        &db,
        sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT COUNT(DISTINCT instance_id) AS n FROM jobs \
             WHERE batch_line_id IS NOT NULL AND status = 'delivered'",
        ),
    )
    .await
    .unwrap()
    .unwrap()
    .try_get::<i64>("", "n")
    .unwrap();
    assert_eq!(workers, 2, "both instances delivered lines");
    db.close().await.unwrap();
    drop(b);
    assert_ledger_exact(&postgres.url).await;
}
