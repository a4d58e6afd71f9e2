//! The Batch API over HTTP against real loopback agents: every bad line named at upload, a
//! batch that the caller cannot pay for failed before anything runs, and each line charged
//! exactly once however the batch is read and cancelled meanwhile. (The official Python SDK's
//! flow is in `sdk.rs`.)

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, json_body, spawn_app_with};
use crate::test_agent::{Behaviour, TestAgent};

/// Uploads `content` as a batch input file (multipart, built by hand); the response.
async fn upload(app: &TestApp, key: &str, content: &str) -> reqwest::Response {
    upload_to(&app.address, key, content).await
}

/// Uploads `content` to the server at `base` as `token`'s batch input file.
pub(crate) async fn upload_to(base: &str, token: &str, content: &str) -> reqwest::Response {
    let boundary = "gavel-test-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{content}\r\n--{boundary}--\r\n"
    );
    reqwest::Client::new()
        .post(format!("{base}/v1/files"))
        .bearer_auth(token)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap()
}

pub(crate) fn job_line(i: usize, max_price: &str) -> String {
    json!({"custom_id": format!("line-{i}"), "method": "POST", "url": "/v1/jobs",
           "body": {"category": "ocr", "input": {"page": i}, "auction": {"max_price": max_price}}})
    .to_string()
}

async fn ocr_agent(app: &TestApp, owner: &TestUser, agent: &TestAgent, price: &str) {
    let body = json!({"name": "batch-ocr", "kind": "json", "categories": ["ocr"],
                      "endpoint": agent.url, "pricing": {"per_call": price}});
    app.register_agent(owner, &body).await;
}

/// Creates a batch of the uploaded `file` on `/v1/jobs`; the batch object.
async fn create_batch(app: &TestApp, key: &str, file: &Value) -> Value {
    let body =
        json!({"input_file_id": file["id"], "endpoint": "/v1/jobs", "completion_window": "24h"});
    json_body(app.post_json("/v1/batches", &body, Some(key)).await).await
}

async fn get(app: &TestApp, key: &str, path: &str) -> Value {
    json_body(app.get(path, Some(key)).await).await
}

/// The text of a batch's file, `file_id` as the batch object names it.
async fn file_text(app: &TestApp, key: &str, file_id: &Value) -> String {
    let path = format!("/v1/files/{}/content", file_id.as_str().unwrap());
    app.get(&path, Some(key)).await.text().await.unwrap()
}

/// Reads the batch at `path` until it reaches `status` (10 s at most); the last read.
async fn until_status(app: &TestApp, key: &str, path: &str, status: &str) -> Value {
    let mut batch = Value::Null;
    for _ in 0..200 {
        batch = get(app, key, path).await;
        if batch["status"] == status {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    batch
}

fn micros(credits: &str) -> i64 {
    let (whole, frac) = credits.split_once('.').unwrap_or((credits, ""));
    let frac = format!("{frac:0<6}");
    whole.parse::<i64>().unwrap() * 1_000_000 + frac[..6].parse::<i64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_naming_every_bad_line_and_field() {
    let app = spawn_app_with(|_| {}).await;
    let caller = app.signup().await;
    let (_, key) = app.create_key(&caller, "batch").await;
    let content = [
        job_line(1, "1"),
        "{not json".into(),
        json!({"custom_id": "line-1", "method": "POST", "url": "/v1/jobs", "body": {}}).to_string(),
        json!({"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {}})
            .to_string(),
    ]
    .join("\n");
    let response = upload(&app, &key, &content).await;
    assert_eq!(response.status(), 422);
    let body = json_body(response).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 2, `line`"), "{message}");
    assert!(
        message.contains("line 3, `custom_id`: `line-1` is used by an earlier line"),
        "{message}"
    );
    assert!(message.contains("line 4, `url`"), "{message}");
    assert_eq!(body["error"]["param"], "file");

    // A good file whose bodies do not parse as the endpoint's requests: the batch fails,
    // each bad line named in `errors`, and nothing runs or is charged.
    let content = [
        job_line(1, "1"),
        json!({"custom_id": "b", "method": "POST", "url": "/v1/jobs", "body": {"input": {}}})
            .to_string(),
    ]
    .join("\n");
    let file = json_body(upload(&app, &key, &content).await).await;
    let before = app.credits(&caller).await;
    let batch = create_batch(&app, &key, &file).await;
    assert_eq!(batch["status"], "failed", "{batch}");
    assert_eq!(batch["errors"]["data"][0]["line"], 2, "{batch}");
    assert!(batch["errors"]["data"][0]["param"].as_str().unwrap().starts_with("body."), "{batch}");
    assert_eq!(app.credits(&caller).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_caller_cannot_cover_fails_with_insufficient_credits() {
    let app = spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(Behaviour::Json(200, r#"{"text":"read"}"#.into())).await;
    ocr_agent(&app, &owner, &agent, "1").await;
    let (_, key) = app.create_key(&caller, "batch").await;
    // 100 free credits; 60 lines that may cost 2 credits each plus the fee cannot fit.
    let content: Vec<String> = (0..60).map(|i| job_line(i, "2")).collect();
    let file = json_body(upload(&app, &key, &content.join("\n")).await).await;
    let batch = create_batch(&app, &key, &file).await;
    assert_eq!(batch["status"], "failed", "{batch}");
    assert_eq!(batch["errors"]["data"][0]["code"], "insufficient_credits", "{batch}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(agent.requests(), 0, "nothing ran");
}

/// The batch's one hold: its most is reserved at creation, so a job elsewhere that would eat
/// into it is refused while the batch runs, and every line still runs and is paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_holds_its_most_at_creation_and_other_spending_cannot_take_it() {
    let app = spawn_app_with(|s| {
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
        s.batch.concurrency = 2;
    })
    .await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(Behaviour::Slow(Duration::from_millis(30))).await;
    ocr_agent(&app, &owner, &agent, "0.5").await;
    let dear = TestAgent::start(Behaviour::Json(200, r#"{"text":"dear"}"#.into())).await;
    let body = json!({"name": "dear-ocr", "kind": "json", "categories": ["ocr"],
                      "endpoint": dear.url, "pricing": {"per_call": "15"}});
    app.register_agent(&owner, &body).await;
    let (_, key) = app.create_key(&caller, "batch").await;
    // 60 lines of at most 0.5 + the 1-credit fee: 90 of the 100 free credits, held at once.
    let content: Vec<String> = (0..60).map(|i| job_line(i, "0.5")).collect();
    let file = json_body(upload(&app, &key, &content.join("\n")).await).await;
    let batch = create_batch(&app, &key, &file).await;
    assert_eq!(batch["status"], "in_progress", "{batch}");
    let (balance, held) = app.credits(&caller).await;
    let available = micros(&balance) - micros(&held);
    assert!(available <= 10_000_000, "90 credits held for the batch: {balance} / {held}");
    // A job that could cost 16 credits (the dear agent) cannot take them from the batch.
    let job = json!({"category": "ocr", "input": {"page": 0}, "auction": {"max_price": "20"}});
    let refused = app.post_json("/v1/jobs", &job, Some(&key)).await;
    assert_eq!(refused.status(), 402);
    assert_eq!(json_body(refused).await["error"]["code"], "insufficient_credits");
    let path = format!("/v1/batches/{}", batch["id"].as_str().unwrap());
    let ended = until_status(&app, &key, &path, "completed").await;
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["request_counts"]["completed"], 60, "every line ran and was paid: {ended}");
    let (_, held) = app.credits(&caller).await;
    assert_eq!(micros(&held), 0, "nothing stays held once the batch has ended");
}

/// `batch.per_agent_concurrency`: however many lines the process runs at once, one agent
/// never serves more than its slots; the batch still completes. Each line's call carries its
/// `Idempotency-Key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_serves_at_most_its_slots_of_batch_lines_at_once() {
    let app = spawn_app_with(|s| {
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
        s.batch.concurrency = 8;
        s.batch.per_agent_concurrency = 2;
    })
    .await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(Behaviour::Slow(Duration::from_millis(60))).await;
    ocr_agent(&app, &owner, &agent, "0.1").await;
    let (_, key) = app.create_key(&caller, "batch").await;
    let content: Vec<String> = (0..12).map(|i| job_line(i, "0.1")).collect();
    let file = json_body(upload(&app, &key, &content.join("\n")).await).await;
    let batch = create_batch(&app, &key, &file).await;
    let path = format!("/v1/batches/{}", batch["id"].as_str().unwrap());
    let ended = until_status(&app, &key, &path, "completed").await;
    assert_eq!(ended["request_counts"]["completed"], 12, "{ended}");
    assert_eq!(agent.most_at_once(), 2, "8 lines at once in the process, 2 on the agent");
    // Each line's call names the line, for agents that honour `Idempotency-Key`; a real-time
    // job's call does not carry one.
    let head = agent.last_request().unwrap().head.to_ascii_lowercase();
    assert!(head.contains("idempotency-key: batch_line_"), "{head}");
    let job = json!({"category": "ocr", "input": {"page": 99}});
    assert_eq!(app.post_json("/v1/jobs", &job, Some(&key)).await.status(), 200);
    let head = agent.last_request().unwrap().head.to_ascii_lowercase();
    assert!(!head.contains("idempotency-key"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_line_is_charged_once_through_retrieve_storms_and_repeated_cancels() {
    let app = spawn_app_with(|s| {
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
        s.batch.concurrency = 4;
        s.rate_limit.per_second = 10_000;
        s.rate_limit.burst = 10_000;
    })
    .await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(Behaviour::Slow(Duration::from_millis(40))).await;
    ocr_agent(&app, &owner, &agent, "0.5").await;
    let (_, key) = app.create_key(&caller, "batch").await;
    let (balance_before, _) = app.credits(&caller).await;
    // 60 lines that may cost 0.6 + the 1-credit fee each: 96 of the 100 free credits.
    let content: Vec<String> = (0..60).map(|i| job_line(i, "0.6")).collect();
    let file = json_body(upload(&app, &key, &content.join("\n")).await).await;
    let batch = create_batch(&app, &key, &file).await;
    assert_eq!(batch["status"], "in_progress", "{batch}");
    let path = format!("/v1/batches/{}", batch["id"].as_str().unwrap());
    // A storm of reads while it runs, then cancels, again and again, still reading.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let storm: Vec<_> = (0..40).map(|_| get(&app, &key, &path)).collect();
    for read in futures::future::join_all(storm).await {
        assert_eq!(read["request_counts"]["total"], 60, "{read}");
    }
    let cancel = format!("{path}/cancel");
    let empty = json!({});
    let cancels: Vec<_> = (0..5).map(|_| app.post_json(&cancel, &empty, Some(&key))).collect();
    for response in futures::future::join_all(cancels).await {
        assert_eq!(response.status(), 200);
        let status = json_body(response).await["status"].as_str().unwrap().to_owned();
        assert!(status == "cancelling" || status == "cancelled", "{status}");
    }
    let ended = until_status(&app, &key, &path, "cancelled").await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    let done = ended["request_counts"]["completed"].as_i64().unwrap();
    assert!(done > 0 && done < 60, "some lines ran before the cancel, not all: {ended}");

    let output = file_text(&app, &key, &ended["output_file_id"]).await;
    let errors = file_text(&app, &key, &ended["error_file_id"]).await;
    let parse = |text: &str| -> Vec<Value> {
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (output, errors) = (parse(&output), parse(&errors));
    assert_eq!(output.len() as i64, done);
    assert_eq!(output.len() + errors.len(), 60, "every line in one file or the other");
    assert!(errors.iter().all(|e| e["error"]["code"] == "batch_cancelled"), "{errors:?}");
    let mut ids: Vec<String> =
        output.iter().chain(&errors).map(|l| l["custom_id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 60, "no line twice");

    // Money: the agent ran each answered line once, and the caller paid for exactly those.
    let mut paid = 0;
    let mut jobs = Vec::new();
    for line in &output {
        assert_eq!(line["response"]["status_code"], 200);
        let job = line["response"]["request_id"].as_str().unwrap().to_owned();
        let generation = get(&app, &key, &format!("/v1/generation?id={job}")).await;
        assert_eq!(generation["data"]["status"], "delivered");
        paid += micros(generation["data"]["cost"].as_str().unwrap());
        jobs.push(job);
    }
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len() as i64, done, "one job per answered line");
    assert_eq!(agent.requests() as i64, done, "no line ran twice");
    let (balance_after, held) = app.credits(&caller).await;
    assert_eq!(
        micros(&balance_before) - micros(&balance_after),
        paid,
        "charged = the answered lines"
    );
    assert_eq!(micros(&held), 0, "nothing left held");
    // Reading the ended batch again moves nothing.
    for _ in 0..10 {
        get(&app, &key, &path).await;
    }
    assert_eq!(app.credits(&caller).await.0, balance_after);
}

/// A batch auction: both agents quote for the whole batch, one re-bids lower during the
/// window and so takes the lines its capacity allows (the re-bid changed the award), the
/// other takes the rest; a bid after the deadline is refused and changes nothing. Each
/// awarded line is paid its agent's final bid, and the record shows every bid and the award.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebid_in_the_window_changes_the_award_and_a_late_bid_does_not() {
    let app = spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await;
    let caller = app.signup().await;
    let (owner_a, owner_b) = (app.signup().await, app.signup().await);
    let quote_a =
        TestAgent::start(Behaviour::Json(200, r#"{"price":"0.5","capacity":1000}"#.into())).await;
    let quote_b = TestAgent::start(Behaviour::Json(200, r#"{"price":"0.4"}"#.into())).await;
    let serve_a = TestAgent::start(Behaviour::Json(200, r#"{"by":"a"}"#.into())).await;
    let serve_b = TestAgent::start(Behaviour::Json(200, r#"{"by":"b"}"#.into())).await;
    let mut ids = Vec::new();
    for (owner, name, serve, quote) in
        [(&owner_a, "alpha", &serve_a, &quote_a), (&owner_b, "beta", &serve_b, &quote_b)]
    {
        let body = json!({"name": name, "kind": "json", "categories": ["ocr"], "endpoint": serve.url,
                          "bid_url": quote.url, "pricing": {"per_call": "1"}});
        ids.push(app.register_agent(owner, &body).await["id"].as_str().unwrap().to_owned());
    }
    let (_, key) = app.create_key(&caller, "batch").await;
    let (before, _) = app.credits(&caller).await;
    let content: Vec<String> = (0..6).map(|i| job_line(i, "1")).collect();
    let file = json_body(upload(&app, &key, &content.join("\n")).await).await;
    let body = json!({"input_file_id": file["id"], "endpoint": "/v1/jobs", "completion_window": "24h",
                      "auction": {"bidding_window_s": 2}});
    let batch = json_body(app.post_json("/v1/batches", &body, Some(&key)).await).await;
    assert_eq!(batch["status"], "in_progress", "{batch}");
    assert!(batch["auction"]["bidding_until"].is_number(), "{batch}");
    let id = batch["id"].as_str().unwrap().to_owned();

    // Both were asked once, for the whole batch; nothing runs during the window.
    for _ in 0..100 {
        if quote_a.requests() == 1 && quote_b.requests() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rfq: Value = serde_json::from_str(&quote_a.last_request().unwrap().body).unwrap();
    assert_eq!(
        (rfq["type"].as_str(), rfq["lines"].as_i64()),
        (Some("batch_rfq"), Some(6)),
        "{rfq}"
    );
    assert_eq!(rfq["category"], "ocr");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Alpha quoted 0.5 against beta's 0.4; it re-bids 0.3 for at most 4 lines.
    let rebid = json!({"agent_id": ids[0], "price": "0.3", "capacity": 4});
    let bids = format!("/api/batches/{id}/bids");
    let response = app.post_json(&bids, &rebid, Some(&owner_a.token)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json_body(response).await["version"], 2);
    // Another owner cannot bid for alpha.
    let forged = app.post_json(&bids, &rebid, Some(&owner_b.token)).await;
    assert_eq!(forged.status(), 404);
    assert_eq!(serve_a.requests() + serve_b.requests(), 0, "nothing runs during the window");

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let late = json!({"agent_id": ids[1], "price": "0.1"});
    let response = app.post_json(&bids, &late, Some(&owner_b.token)).await;
    assert_eq!(response.status(), 409);
    assert_eq!(json_body(response).await["error"]["code"], "bidding_closed");

    let path = format!("/v1/batches/{id}");
    let ended = until_status(&app, &key, &path, "completed").await;
    assert_eq!(ended["status"], "completed", "{ended}");
    let record = &ended["auction"]["record"];
    let award: Vec<(String, i64)> = record["award"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["agent"].as_str().unwrap().to_owned(), a["lines"].as_i64().unwrap()))
        .collect();
    assert!(award[0].0.ends_with("/alpha") && award[0].1 == 4, "{record}");
    assert!(award[1].0.ends_with("/beta") && award[1].1 == 2, "{record}");
    let bids: Vec<(String, i64, String)> = record["bids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["price"].as_str().unwrap().to_owned(),
                b["version"].as_i64().unwrap(),
                b["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(bids.len(), 3, "two quotes and the re-bid; the late bid is not there: {record}");
    assert!(bids.contains(&("0.3".into(), 2, "rebid".into())), "{record}");
    assert!(!bids.iter().any(|b| b.0 == "0.1"), "{record}");
    assert_eq!((serve_a.requests(), serve_b.requests()), (4, 2));
    // Paid as bid: 4 x (0.3 + the 1-credit fee) + 2 x (0.4 + 1).
    let (after, held) = app.credits(&caller).await;
    assert_eq!(micros(&before) - micros(&after), 8_000_000);
    assert_eq!(micros(&held), 0);

    // The batch's page shows the same award, agent by agent.
    let mut session = crate::web::Session::new(&app);
    let form = session.get("/login").await.text().await.unwrap();
    let csrf = crate::web::csrf_of(&form);
    let login = [("csrf", csrf.as_str()), ("email", &caller.email), ("password", &caller.password)];
    assert_eq!(session.post("/login", &login).await.status(), 303);
    let page = session.get(&format!("/batches/{id}")).await.text().await.unwrap();
    let table = &page[page.find("<table id=\"award\">").expect("the award table")..];
    let rows: Vec<&str> = table[..table.find("</table>").unwrap()].split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].contains("/alpha</td><td class=\"num\">4<"), "{table}");
    assert!(rows[1].contains("/beta</td><td class=\"num\">2<"), "{table}");
}

/// A batch larger than a page of its output file (200 lines): the file streams whole, in
/// input order, each line once, and its size is what `GET /v1/files/{id}` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_file_of_many_pages_streams_whole_and_in_order() {
    let app = spawn_app_with(|s| {
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
        s.batch.concurrency = 64;
    })
    .await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(Behaviour::Json(200, r#"{"text":"read"}"#.into())).await;
    // Priced at the win fee: the owner never pays part of it from its wallet.
    ocr_agent(&app, &owner, &agent, "1").await;
    app.state
        .bank
        .admin_grant(
            registry::UserId(caller.id),
            auction_engine::MicroCredits::from_micros(1_000_000_000),
            uuid::Uuid::now_v7(),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let (_, key) = app.create_key(&caller, "batch").await;
    let lines = 450;
    let content: Vec<String> = (0..lines).map(|i| job_line(i, "1")).collect();
    let file = json_body(upload(&app, &key, &content.join("\n")).await).await;
    let batch = create_batch(&app, &key, &file).await;
    let path = format!("/v1/batches/{}", batch["id"].as_str().unwrap());
    let mut ended = Value::Null;
    for _ in 0..600 {
        ended = get(&app, &key, &path).await;
        if ended["status"] != "in_progress" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ended["status"], "completed", "{ended}");
    if let Some(errors) = ended["error_file_id"].as_str() {
        let text =
            app.get(&format!("/v1/files/{errors}/content"), Some(&key)).await.text().await.unwrap();
        panic!("lines failed: {}", text.lines().take(3).collect::<Vec<_>>().join("\n"));
    }
    assert_eq!(ended["request_counts"]["completed"], lines, "{ended}");
    let output_id = ended["output_file_id"].as_str().unwrap();
    let text =
        app.get(&format!("/v1/files/{output_id}/content"), Some(&key)).await.text().await.unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["custom_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: Vec<String> = (0..lines).map(|i| format!("line-{i}")).collect();
    assert_eq!(ids, expected);
    let info = get(&app, &key, &format!("/v1/files/{output_id}")).await;
    assert_eq!(info["bytes"].as_u64().unwrap(), text.len() as u64, "{info}");
    assert_eq!(info["purpose"], "batch_output");
}

/// The dashboard's batch pages show what the API shows: the counts, the money (spent equals
/// what the caller's balance lost, nothing left held), the same output file to download; a
/// batch waiting for its auction is cancelled from its page (CSRF-checked) and frees its hold;
/// another user sees none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_pages_show_the_apis_figures_and_cancel_frees_the_hold() {
    use crate::web::{Session, csrf_of};
    let app = spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await;
    let owner = app.signup().await;
    let agent = TestAgent::start(Behaviour::Json(200, r#"{"text":"read"}"#.into())).await;
    ocr_agent(&app, &owner, &agent, "0.5").await;
    let mut session = Session::new(&app);
    session.sign_up("batcher@example.com").await;
    let page = session.get("/").await.text().await.unwrap();
    let created = session.post("/keys", &[("csrf", &csrf_of(&page)), ("name", "batch")]).await;
    let page = created.text().await.unwrap();
    let at = page.find("value=\"gvl_").unwrap() + 7;
    let key = page[at..at + 52].to_owned();
    let balance = |credits: Value| micros(credits["balance"].as_str().unwrap());
    let before = balance(get(&app, &key, "/api/credits").await);

    let content: Vec<String> = (0..5).map(|i| job_line(i, "0.5")).collect();
    let file = json_body(upload(&app, &key, &content.join("\n")).await).await;
    let batch = create_batch(&app, &key, &file).await;
    let id = batch["id"].as_str().unwrap().trim_start_matches("batch_").to_owned();
    let ended = until_status(&app, &key, &format!("/v1/batches/batch_{id}"), "completed").await;
    assert_eq!(ended["request_counts"]["completed"], 5, "{ended}");
    let spent = before - balance(get(&app, &key, "/api/credits").await);

    let list = session.get("/batches").await.text().await.unwrap();
    assert!(list.contains(&format!("batch_{id}")), "{list}");
    let page = session.get(&format!("/batches/{id}")).await.text().await.unwrap();
    let field = |name: &str| {
        let start = page.find(&format!("id=\"{name}\">")).unwrap() + name.len() + 6;
        page[start..start + page[start..].find('<').unwrap()].to_owned()
    };
    assert_eq!(field("status"), "completed");
    assert_eq!(
        (field("completed"), field("failed"), field("open")),
        ("5".into(), "0".into(), "0".into())
    );
    assert_eq!(micros(&field("spent")), spent, "spent = what the balance lost");
    assert_eq!(micros(&field("held")), 0);
    let api_output = file_text(&app, &key, &ended["output_file_id"]).await;
    let download = session.get(&format!("/batches/{id}/output.jsonl")).await;
    assert_eq!(download.status(), 200);
    assert!(download.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    assert_eq!(download.text().await.unwrap(), api_output);

    // A batch waiting for its bidding window holds its most; cancelling it from its page
    // frees all of it.
    let body = json!({"input_file_id": file["id"], "endpoint": "/v1/jobs", "completion_window": "24h",
                      "auction": {"bidding_window_s": 600}});
    let waiting = json_body(app.post_json("/v1/batches", &body, Some(&key)).await).await;
    let waiting_id = waiting["id"].as_str().unwrap().trim_start_matches("batch_").to_owned();
    let held = |credits: Value| micros(credits["held"].as_str().unwrap());
    assert_eq!(held(get(&app, &key, "/api/credits").await), 5 * 1_500_000, "5 lines of 1.5");
    let page = session.get(&format!("/batches/{waiting_id}")).await.text().await.unwrap();
    let cancel = format!("/batches/{waiting_id}/cancel");
    assert_eq!(session.post(&cancel, &[("csrf", "forged")]).await.status(), 403);
    let response = session.post(&cancel, &[("csrf", &csrf_of(&page))]).await;
    assert_eq!(response.status(), 303);
    let cancelled = get(&app, &key, &format!("/v1/batches/batch_{waiting_id}")).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(held(get(&app, &key, "/api/credits").await), 0, "the cancel freed the hold");
    assert_eq!(agent.requests(), 5, "the cancelled batch ran nothing");

    // Another user sees neither the batch nor its files.
    let mut stranger = Session::new(&app);
    stranger.sign_up("stranger@example.com").await;
    assert_eq!(stranger.get(&format!("/batches/{id}")).await.status(), 404);
    assert_eq!(stranger.get(&format!("/batches/{id}/output.jsonl")).await.status(), 404);
    let theirs = stranger.get("/batches").await.text().await.unwrap();
    assert!(!theirs.contains(&id), "a stranger's list shows the batch");
}

/// `auction.max_price` on the batch caps every line (a line's own lower cap still holds): the
/// batch reserves at that cap, shows it, and no line goes to an agent priced above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_wide_max_price_caps_every_line_and_its_reservation() {
    let app = spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let cheap = TestAgent::start(Behaviour::Json(200, r#"{"text":"cheap"}"#.into())).await;
    let dear = TestAgent::start(Behaviour::Json(200, r#"{"text":"dear"}"#.into())).await;
    ocr_agent(&app, &owner, &cheap, "0.3").await;
    let body = json!({"name": "dear-ocr", "kind": "json", "categories": ["ocr"],
                      "endpoint": dear.url, "pricing": {"per_call": "2"}});
    app.register_agent(&owner, &body).await;
    let (_, key) = app.create_key(&caller, "batch").await;
    let uncapped = |i: usize| {
        json!({"custom_id": format!("u{i}"), "method": "POST", "url": "/v1/jobs",
               "body": {"category": "ocr", "input": {"page": i}}})
        .to_string()
    };
    let content = [uncapped(0), uncapped(1), job_line(2, "0.5")].join("\n");
    let file = json_body(upload(&app, &key, &content).await).await;
    let create = |auction: Value| {
        json!({"input_file_id": file["id"], "endpoint": "/v1/jobs", "completion_window": "24h",
               "auction": auction})
    };
    let empty = app.post_json("/v1/batches", &create(json!({})), Some(&key)).await;
    assert_eq!(empty.status(), 422);
    assert_eq!(json_body(empty).await["error"]["param"], "auction");

    // Held while its window is open: 1 + 1 for each uncapped line, 0.5 + 1 for the capped one.
    let waiting = create(json!({"bidding_window_s": 600, "max_price": "1"}));
    let batch = json_body(app.post_json("/v1/batches", &waiting, Some(&key)).await).await;
    assert_eq!(batch["auction"]["max_price"], "1", "{batch}");
    let (_, held) = app.credits(&caller).await;
    assert_eq!(micros(&held), 5_500_000, "{batch}");
    let cancel = format!("/v1/batches/{}/cancel", batch["id"].as_str().unwrap());
    app.post_json(&cancel, &json!({}), Some(&key)).await;

    // Without a window the lines run at once, each under the cap.
    let capped = create(json!({"max_price": "1"}));
    let batch = json_body(app.post_json("/v1/batches", &capped, Some(&key)).await).await;
    assert_eq!(batch["auction"]["bidding_until"], Value::Null, "{batch}");
    let path = format!("/v1/batches/{}", batch["id"].as_str().unwrap());
    let ended = until_status(&app, &key, &path, "completed").await;
    assert_eq!(ended["request_counts"]["completed"], 3, "{ended}");
    assert_eq!((cheap.requests(), dear.requests()), (3, 0));
    assert_eq!(micros(&app.credits(&caller).await.1), 0);
}
