//! Per-key rate limits: 429 with `Retry-After`, in process and shared through Redis.

use uuid::Uuid;

use crate::helpers::{TestApp, json_body, spawn_app_with};

async fn assert_budget_of_three(app: &TestApp, other: &TestApp, key: &str, other_key: &str) {
    for attempt in 0..3 {
        let target = if attempt % 2 == 0 { app } else { other };
        assert_eq!(target.get("/api/credits", Some(key)).await.status(), 200, "attempt {attempt}");
    }
    let limited = other.get("/api/credits", Some(key)).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(json_body(limited).await["error"]["code"], "rate_limited");
    // Another key has its own budget.
    assert_eq!(app.get("/api/credits", Some(other_key)).await.status(), 200);
}

#[tokio::test]
async fn a_key_over_its_budget_gets_429_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 3;
    })
    .await;
    let user = app.signup().await;
    let (_, key) = app.create_key(&user, "a").await;
    let (_, other_key) = app.create_key(&user, "b").await;
    assert_budget_of_three(&app, &app, &key, &other_key).await;
}

#[tokio::test]
async fn with_redis_two_instances_share_one_budget_per_key() {
    let Ok(redis_url) = std::env::var("TEST_REDIS_URL") else {
        assert!(std::env::var_os("CI").is_none(), "TEST_REDIS_URL must be set in CI");
        eprintln!("SKIPPED: TEST_REDIS_URL is not set");
        return;
    };
    let prefix = format!("gavel-test-{}:", Uuid::new_v4().simple());
    // Instances share a database on Postgres (a SQLite file takes one server).
    let Some(shared) = crate::helpers::shared_postgres().await else { return };
    let database_url = shared.url.clone();
    let configure = |s: &mut server::configuration::Settings| {
        s.database.url = Some(database_url.clone());
        s.redis.url = Some(redis_url.clone());
        s.redis.key_prefix = prefix.clone();
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 3;
    };
    // Two instances on one database and one Redis, as in a scaled-out deployment.
    let first = spawn_app_with(configure).await;
    let second = spawn_app_with(configure).await;
    let ready = json_body(first.get("/readyz", None).await).await;
    assert_eq!(ready["redis"], "ok");

    let user = first.signup().await;
    let (_, key) = first.create_key(&user, "a").await;
    let (_, other_key) = second.create_key(&user, "b").await;
    // Requests alternate between the instances and still draw on one budget.
    assert_budget_of_three(&first, &second, &key, &other_key).await;

    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut connection).await.unwrap();
    assert!(keys.iter().any(|k| k.starts_with(&format!("{prefix}rl:key:"))), "{keys:?}");
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut connection).await.unwrap();
}
