//! A caller that disconnects mid-stream, and a graceful shutdown with jobs in flight: in both,
//! the upstream call stops or finishes and the money settles.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, json_body, spawn_app_with};
use crate::test_agent::{Behaviour, TestAgent};

async fn app() -> TestApp {
    spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await
}

async fn register(app: &TestApp, owner: &TestUser, agent: &TestAgent, pricing: Value) {
    let body = json!({"name": "a", "kind": "openai-chat", "categories": ["chat"], "endpoint": agent.url, "upstream_model": "m", "pricing": pricing});
    assert_eq!(app.post_json("/api/agents", &body, Some(&owner.token)).await.status(), 201);
}

async fn held(app: &TestApp, user: &TestUser) -> (String, String) {
    let credits = json_body(app.get("/api/credits", Some(&user.token)).await).await;
    (credits["balance"].as_str().unwrap().to_owned(), credits["held"].as_str().unwrap().to_owned())
}

/// Polls `condition` every 20 ms for up to `limit`: for work that finishes on another task.
async fn eventually<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_caller_that_disconnects_stops_the_upstream_call_and_the_job_settles() {
    let app = app().await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let pieces: Vec<String> = (0..50).map(|i| format!("w{i:02} ")).collect();
    let agent = TestAgent::start(Behaviour::Stream {
        pieces,
        first_after: Duration::ZERO,
        gap: Duration::from_millis(50),
        cut: false,
        usage: None,
    })
    .await;
    // 1 credit per call, 1 per output token: the full answer would be far more than what is read.
    register(
        &app,
        &owner,
        &agent,
        json!({"per_call": "1", "per_million_output_tokens": "1000000"}),
    )
    .await;

    let body = json!({"model": "auction", "stream": true, "max_tokens": 60, "messages": [{"role": "user", "content": "go"}]});
    let mut response = app.post_json("/v1/chat/completions", &body, Some(&caller.token)).await;
    assert_eq!(response.status(), 200);
    let job_id = response.headers()["x-gavel-job-id"].to_str().unwrap().to_owned();
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("w00"));
    drop(response);

    let settled =
        eventually(Duration::from_secs(5), || async { held(&app, &caller).await.1 == "0" }).await;
    assert!(settled, "the hold was settled after the caller left");
    // A write into a socket the peer has just closed can still succeed once; after that the
    // agent's writes fail and it stops: the count settles far below the 50 pieces.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_then = agent.pieces_sent();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(agent.pieces_sent(), sent_then, "the upstream call was stopped");
    assert!(sent_then < 25, "{sent_then} pieces went out");
    let job = json_body(app.get(&format!("/v1/jobs/{job_id}"), Some(&caller.token)).await).await;
    assert_eq!(job["error"], "the caller disconnected");
    let balance: f64 = held(&app, &caller).await.0.parse().unwrap();
    assert!(
        balance > 100.0 - 1.0 - 1.0 - 50.0 && balance < 100.0,
        "charged for what was delivered only: {balance}"
    );
}

#[tokio::test]
async fn a_graceful_shutdown_finishes_and_settles_the_jobs_in_flight() {
    let app = app().await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let slow = TestAgent::start(Behaviour::Stream {
        pieces: vec!["still ".into(), "here".into()],
        first_after: Duration::from_millis(400),
        gap: Duration::from_millis(200),
        cut: false,
        usage: Some((3, 2)),
    })
    .await;
    register(&app, &owner, &slow, json!({"per_call": "1"})).await;
    let body = json!({"model": "auction", "stream": true, "messages": [{"role": "user", "content": "go"}], "auction": {"max_price": "1"}});
    let request = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&caller.token)
        .json(&body)
        .send();
    let in_flight = tokio::spawn(async move {
        let response = request.await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    });
    assert!(eventually(Duration::from_secs(5), || async { slow.requests() == 1 }).await);

    app.handle.stop(true).await;
    let (status, text) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        text.contains("still ") && text.contains("here") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    let health = app.url("/healthz");
    let client = app.client.clone();
    app.stopped.await.unwrap().unwrap();
    // The server is gone, but the money settled before it went.
    let balance =
        registry::ledger::balance(&app.state.db, registry::UserId(caller.id)).await.unwrap();
    assert_eq!((balance.balance.to_string(), balance.held.to_string()), ("98".into(), "0".into()));
    assert!(client.get(health).send().await.is_err(), "no new connections after the stop");
}

/// The embedded database takes one server: a second `gavel serve` on the same SQLite file
/// stops at start, naming the file and the way out, and the first keeps serving. Once the
/// first is killed (`kill -9`: no cleanup), a new one starts at once: no stale lock.
#[test]
fn a_second_server_on_the_same_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = crate::served::Served::start(dir.path());
    let second = crate::served::output_within(
        &mut crate::served::Served::command(dir.path(), &[]),
        std::time::Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(stderr.contains("another Gavel server is running on"), "{stderr}");
    assert!(stderr.contains("gavel.db"), "{stderr}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let health = runtime.block_on(reqwest::get(format!("{}/healthz", first.base))).unwrap();
    assert_eq!(health.status(), 200);
    first.kill_9();
    let third = crate::served::Served::start(dir.path());
    let health = runtime.block_on(reqwest::get(format!("{}/healthz", third.base))).unwrap();
    assert_eq!(health.status(), 200);
}

/// On a SQLite file the running server is the authority for money, so `gavel admin grant`
/// beside it goes through it (its loopback door) and the grant shows at once; a request at
/// the door without its token is refused. With the server stopped the CLI writes to the file
/// itself, and the next server loads both grants from the ledger.
#[test]
fn admin_grant_goes_through_the_running_server_and_works_without_one() {
    use crate::served::{Served, get, output_within, signup};
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let first = Served::start(dir.path());
    let token = runtime.block_on(signup(&first.base, "granted@example.com"));
    let grant = |credits: &str| {
        let mut command = Served::command(dir.path(), &[]);
        command.args(["admin", "grant", "--email", "granted@example.com", "--credits", credits]);
        output_within(&mut command, std::time::Duration::from_secs(60))
    };
    let output = grant("25");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("through the running server"), "{stderr}");
    let credits = runtime.block_on(get(&first.base, &token, "/api/credits"));
    assert_eq!(credits["balance"], "125", "{credits}");

    // The door answers only with its token.
    let door = dir.path().join("data/gavel.db.admin");
    assert!(door.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&door).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the door is the server user's alone");
    }
    let forged = runtime.block_on(
        reqwest::Client::new()
            .post(format!("{}/internal/admin/grant", first.base))
            .bearer_auth("not-the-token")
            .json(&serde_json::json!({"email": "granted@example.com", "credits": "1000",
                "transfer_id": uuid::Uuid::now_v7()}))
            .send(),
    );
    assert_eq!(forged.unwrap().status(), 401);

    first.kill_9();
    let output = grant("5");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("through the running server"), "{stderr}");
    let second = Served::start(dir.path());
    let credits = runtime.block_on(get(&second.base, &token, "/api/credits"));
    assert_eq!(credits["balance"], "130", "{credits}");
}
