//! Regression tests for the attacks and faults of the hardening issue: each one reproduces a
//! finding (it failed before its fix) and checks what must hold now.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, json_body, spawn_app_with};
use crate::jobs::chat_agent;
use crate::served::Served;
use crate::test_agent::{Behaviour, TestAgent};

async fn app() -> TestApp {
    spawn_app_with(|s| {
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
        s.dispatch.max_response_bytes = 4 * 1024 * 1024;
    })
    .await
}

fn ask_stream(model: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

/// Finding 1: a stream that never ends an event (or floods comments, or usage-only chunks)
/// is cut at a byte cap within its deadline, the server stays responsive meanwhile, and the
/// job falls back to an honest agent; nothing is charged for the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_stream_is_cut_and_the_server_stays_responsive() {
    let floods = [
        ("endless-line", "data: ", "x", "event_too_large"),
        ("comments", "", ": keep reading this\n", "response_too_large"),
        (
            "usage-only",
            "",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n",
            "response_too_large",
        ),
    ];
    for (name, head, unit, code) in floods {
        let app = app().await;
        let caller = app.signup().await;
        let (bad_owner, good_owner) = (app.signup().await, app.signup().await);
        let flood =
            TestAgent::start(Behaviour::Flood { head: head.into(), unit: unit.into() }).await;
        let (flood_slug, _) =
            chat_agent(&app, &bad_owner, name, &flood, "0.1", json!({"max_latency_ms": 3000}))
                .await;
        let honest = TestAgent::start(Behaviour::Stream {
            pieces: vec!["honest".into()],
            first_after: Duration::ZERO,
            gap: Duration::ZERO,
            cut: false,
            usage: Some((1, 1)),
        })
        .await;
        chat_agent(&app, &good_owner, "honest", &honest, "0.2", json!({})).await;

        let started = Instant::now();
        let mut body = ask_stream("auction");
        body["auction"] = json!({"objective": "cost"});
        let request = app.post_json("/v1/chat/completions", &body, Some(&caller.token));
        let health = async {
            // Meanwhile the server answers its health check promptly, again and again.
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let asked = Instant::now();
                let response = app.get("/healthz", None).await;
                assert_eq!(response.status(), 200);
                assert!(
                    asked.elapsed() < Duration::from_secs(1),
                    "{name}: /healthz took {:?}",
                    asked.elapsed()
                );
            }
        };
        let (response, ()) = tokio::join!(request, health);
        assert_eq!(response.status(), 200, "{name}");
        let text = response.text().await.unwrap();
        assert!(text.contains("honest"), "{name}: the honest agent served: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name}: took {:?}",
            started.elapsed()
        );
        // The cap is 4 MiB read; loopback socket buffers hold a few MiB more in flight.
        assert!(
            flood.pieces_sent() <= 24 * 1024 * 1024,
            "{name}: {} bytes of the flood written",
            flood.pieces_sent()
        );
        let job = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let job: Value = serde_json::from_str(job).unwrap();
        let generation = json_body(
            app.get(
                &format!("/v1/generation?id={}", job["id"].as_str().unwrap()),
                Some(&caller.token),
            )
            .await,
        )
        .await;
        let attempts = generation["data"]["attempts"].as_array().unwrap();
        assert_eq!(attempts[0]["agent"], flood_slug.as_str(), "{name}");
        assert_ne!(attempts[0]["outcome"], "success", "{name}: {generation}");
        assert_eq!(attempts[0]["error"], code, "{name}: {generation}");
        assert_eq!(
            generation["data"]["agent_cost"], "0.2",
            "{name}: only the honest agent is paid"
        );
    }
}

/// Findings 2 and 3: wrong passwords meet a tight budget per account and per IP (429 with
/// `Retry-After`), apart from the API's, and at most about one hash per core runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_ins_have_a_tight_budget_of_their_own() {
    let app = spawn_app_with(|s| {
        s.rate_limit.auth_per_minute = 6;
        s.rate_limit.auth_burst = 3;
    })
    .await;
    let (_, key) = {
        // The first sign-up spends one of the three.
        let user = app.signup().await;
        app.create_key(&user, "k").await
    };
    let wrong = json!({"email": "someone@example.com", "password": "not the right password"});
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = app.post_json("/api/auth/login", &wrong, None).await;
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        vec![401, 401, 429, 429, 429, 429],
        "burst 3, one of them spent on sign-up"
    );
    // The API budget is separate: the key still works.
    assert_eq!(app.get("/api/credits", Some(&key)).await.status(), 200);
    assert_eq!(app.state.hashing.idle(), app.state.hashing.threads(), "every hash finished");
}

/// Finding 2: 48 concurrent wrong-password logins against the real binary. Unbounded, each
/// ran an argon2 hash of 19 MiB at once (5.3 GB RSS at 64); bounded to one per core, the
/// server's peak RSS stays small and the excess waits or is shed with a 503.
#[test]
fn password_hashing_is_bounded_to_the_cores() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path());
    let base = served.base.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let statuses = runtime.block_on(async {
        let client = reqwest::Client::new();
        let logins = (0..48).map(|i| {
            let body = json!({"email": format!("nobody{i}@example.com"), "password": "wrong password here"});
            let request = client.post(format!("{base}/api/auth/login")).json(&body).send();
            async move { request.await.unwrap().status().as_u16() }
        });
        futures::future::join_all(logins).await
    });
    let peak_kib = served.peak_rss_mib() * 1024;
    drop(served);
    assert!(statuses.iter().all(|s| [401, 503].contains(s)), "{statuses:?}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    // One hash is 19 MiB: the cores' worth plus the server's own ~40 MiB (65 MiB measured on
    // 2 cores; 444 MiB before the fix, the blocking pool's threads each keeping theirs and
    // each hash fragmenting the heap).
    assert!(
        peak_kib < (cores * 19 + 60) * 1024,
        "peak RSS {} MiB with {cores} cores",
        peak_kib / 1024
    );
}

/// Finding 6: an agent reporting 10^12 completion tokens for `max_tokens: 100` is settled on
/// at most 100, at its own price (never the dearer fallback's the hold covers), and the caller
/// sees the validated usage.
#[tokio::test]
async fn reported_usage_is_clamped_and_settled_at_the_agents_own_price() {
    let app = app().await;
    let caller = app.signup().await;
    // One owner: the greedy agent is paid its own bid, and the dear one stands by as its
    // fallback, so the caller's hold covers the dear one's price too.
    let owner = app.signup().await;
    let greedy = TestAgent::start(Behaviour::Chat {
        content: "short".into(),
        prompt_tokens: 1_000_000_000_000,
        completion_tokens: 1_000_000_000_000,
    })
    .await;
    let priced = |per_million: &str| json!({"pricing": {"per_call": "0", "per_million_output_tokens": per_million}});
    // 100 output tokens at 5,000 credits a million: 0.5. The dear agent would cost 5.
    chat_agent(&app, &owner, "greedy", &greedy, "0", priced("5000")).await;
    let dear = TestAgent::start(Behaviour::Chat {
        content: "x".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
    })
    .await;
    chat_agent(&app, &owner, "dear", &dear, "0", priced("50000")).await;
    let body = json!({"model": "auction", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], "auction": {"objective": "cost"}});
    let response = app.post_json("/v1/chat/completions", &body, Some(&caller.token)).await;
    assert_eq!(response.status(), 200);
    let body = json_body(response).await;
    assert_eq!(body["usage"]["completion_tokens"], 100, "{body}");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() < 1000, "{body}");
    assert_eq!(body["auction"]["clearing_price"], "0.5", "{body}");
    assert_eq!(body["usage"]["cost"], 1.5, "its own price and the fee, not the hold's 6: {body}");
    assert_eq!(app.credits(&caller).await, ("98.5".into(), "0".into()));
}

/// Finding 4: a malformed message is refused naming it, before any agent sees it; and a request
/// every agent rejects as invalid is the caller's fault, so no caller can open an agent's
/// breaker or cut its reputation with bad requests. A rejection that another agent does not
/// share is the agent's fault and counts.
#[tokio::test]
async fn callers_cannot_knock_agents_out_with_bad_requests() {
    let app = app().await;
    let caller = app.signup().await;
    let (picky_owner, other_owner) = (app.signup().await, app.signup().await);
    let picky =
        TestAgent::start(Behaviour::Json(400, r#"{"error":{"message":"bad request"}}"#.into()))
            .await;
    let (picky_slug, picky_id) =
        chat_agent(&app, &picky_owner, "picky", &picky, "1", json!({})).await;
    let also =
        TestAgent::start(Behaviour::Json(422, r#"{"error":{"message":"invalid"}}"#.into())).await;
    chat_agent(&app, &other_owner, "also-picky", &also, "1.5", json!({})).await;

    let malformed = json!({"model": "auction", "messages": [1]});
    for _ in 0..6 {
        let response = app.post_json("/v1/chat/completions", &malformed, Some(&caller.token)).await;
        assert_eq!(response.status(), 422);
        assert_eq!(json_body(response).await["error"]["param"], "messages[0]");
    }
    let bad_role = json!({"model": "auction", "messages": [{"role": "wizard", "content": "hi"}]});
    let response = app.post_json("/v1/chat/completions", &bad_role, Some(&caller.token)).await;
    assert_eq!(json_body(response).await["error"]["param"], "messages[0].role");
    assert_eq!(picky.requests() + also.requests(), 0, "no agent saw a malformed message");

    // Well-formed, but every agent rejects it: 422 to the caller, no agent blamed.
    let ask = json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}], "auction": {"objective": "cost"}});
    for _ in 0..6 {
        let response = app.post_json("/v1/chat/completions", &ask, Some(&caller.token)).await;
        assert_eq!(response.status(), 422);
        assert_eq!(json_body(response).await["error"]["code"], "rejected_by_agents");
    }
    assert_eq!(picky.requests(), 6, "six tries, and its breaker (five failures) never opened");
    let agent =
        json_body(app.get(&format!("/api/agents/{picky_id}"), Some(&picky_owner.token)).await)
            .await;
    assert_eq!(agent["reputation"]["errors"], 0, "{agent}");
    assert_eq!(app.credits(&caller).await, ("100".into(), "0".into()), "nothing charged");

    // Once another agent takes the same input, the rejection is the picky agent's fault.
    let good = TestAgent::start(Behaviour::Chat {
        content: "fine".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
    })
    .await;
    let good_owner = app.signup().await;
    chat_agent(&app, &good_owner, "good", &good, "2", json!({})).await;
    let response = app.post_json("/v1/chat/completions", &ask, Some(&caller.token)).await;
    assert_eq!(response.status(), 200);
    let body = json_body(response).await;
    assert_ne!(body["model"], picky_slug.as_str());
    let agent =
        json_body(app.get(&format!("/api/agents/{picky_id}"), Some(&picky_owner.token)).await)
            .await;
    assert_eq!(agent["reputation"]["errors"], 1, "{agent}");
}

/// Finding 5: every list and string of a request is capped, so a free request cannot write a
/// huge record: 300,000 required features are refused up front, naming the field, and nothing
/// is recorded or charged.
#[tokio::test]
async fn oversized_lists_are_refused_before_anything_is_recorded() {
    let app = app().await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(Behaviour::Chat {
        content: "x".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
    })
    .await;
    chat_agent(&app, &owner, "any", &agent, "1", json!({})).await;
    let features: Vec<String> = (0..300_000).map(|i| format!("f{i}")).collect();
    let cases = [
        (json!({"require": {"features": features}}), "auction.require.features"),
        (json!({"require": {"regions": vec!["eu"; 33]}}), "auction.require.regions"),
        (json!({"require": {"features": ["x".repeat(65)]}}), "auction.require.features[0]"),
    ];
    let client = reqwest::Client::new();
    for (auction, field) in cases {
        let body = json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}], "auction": auction});
        let response = client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&caller.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = json_body(response).await;
        assert!(status == 422 || status == 413, "{field}: {status} {body}");
        if status == 422 {
            assert_eq!(body["error"]["param"], field);
        }
    }
    let order = json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}], "provider": {"order": vec!["a/b"; 101]}});
    let response = app.post_json("/v1/chat/completions", &order, Some(&caller.token)).await;
    assert_eq!(json_body(response).await["error"]["param"], "provider.order");
    let models = json!({"model": "a/b", "models": vec!["c/d"; 101], "messages": [{"role": "user", "content": "hi"}]});
    let response = app.post_json("/v1/chat/completions", &models, Some(&caller.token)).await;
    assert_eq!(json_body(response).await["error"]["param"], "models", "not `provider`");
    let activity = json_body(app.get("/api/activity", Some(&caller.token)).await).await;
    assert_eq!(activity["data"], json!([]), "no job recorded");
    assert_eq!(agent.requests(), 0);
    assert_eq!(app.credits(&caller).await, ("100".into(), "0".into()));
}

/// Finding 8: an agent cannot point back at Gavel. Its own listen address is refused (even
/// inside the loopback opening, even spelt `①②⑦.0.0.1`), an empty userinfo is refused,
/// endpoints are stored in canonical form, every call to an agent carries the hop header, and
/// a job request that carries it is refused.
#[tokio::test]
async fn an_agent_cannot_point_back_at_gavel() {
    let app = app().await;
    let owner = app.signup().await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let register = |endpoint: String| {
        let body = json!({"name": format!("a{}", uuid::Uuid::new_v4().simple()), "kind": "json",
            "categories": ["ocr"], "endpoint": endpoint, "pricing": {"per_call": "1"}});
        let (app, token) = (&app, owner.token.clone());
        async move { app.post_json("/api/agents", &body, Some(&token)).await }
    };
    for endpoint in [
        format!("http://127.0.0.1:{port}/v1/jobs"),
        format!("http://①②⑦.0.0.1:{port}/v1/jobs"),
        format!("http://[::ffff:127.0.0.1]:{port}/v1/jobs"),
    ] {
        let response = register(endpoint.clone()).await;
        assert_eq!(response.status(), 422, "{endpoint}");
        let body = json_body(response).await;
        assert_eq!(body["error"]["field"], "endpoint", "{endpoint}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("Gavel itself"), "{body}");
    }
    let response = register("http://:@127.0.0.1:9/x".into()).await;
    assert_eq!(
        json_body(response).await["error"]["message"],
        "endpoint: must not contain a user name or password"
    );

    let agent = TestAgent::start(Behaviour::Echo).await;
    let spelt = agent.url.replace("127.0.0.1", "①②⑦.0.0.1");
    let created = json_body(register(format!("{spelt}/run")).await).await;
    assert_eq!(created["endpoint"], format!("{}/run", agent.url), "stored canonical: {created}");

    let caller = app.signup().await;
    let job = json!({"category": "ocr", "input": {"x": 1}});
    let result = json_body(app.post_json("/v1/jobs", &job, Some(&caller.token)).await).await;
    assert_eq!(result["status"], "delivered", "{result}");
    let head = agent.last_request().unwrap().head.to_lowercase();
    assert!(head.contains("x-gavel-hop: 1"), "{head}");
    let looped = app
        .client
        .post(app.url("/v1/jobs"))
        .bearer_auth(&caller.token)
        .header("x-gavel-hop", "1")
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(looped.status(), 508);
    assert_eq!(json_body(looped).await["error"]["code"], "loop_detected");
}

/// Finding 7: after `kill -9` mid-job and a restart, the dead process's hold is gone and its
/// `Idempotency-Key` free at once, not after 15 min. On a SQLite file the server is the
/// authority for money and a job is written when it ends, so a job cut off by a crash never
/// happened: no record, nothing held, nothing charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_kill_9_ends_the_dead_processs_work_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let slow = TestAgent::start(Behaviour::Slow(Duration::from_secs(60))).await;
    let first = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || Served::start(&dir)
    })
    .await
    .unwrap();
    let client = crate::served::client();
    let owner = crate::served::signup(&first.base, "owner@example.com").await;
    let caller = crate::served::signup(&first.base, "caller@example.com").await;
    let agent = json!({"name": "slow", "kind": "json", "categories": ["ocr"], "endpoint": slow.url, "pricing": {"per_call": "5"}});
    crate::served::register(&first.base, &owner, agent).await;
    let job = json!({"category": "ocr", "input": {"x": 1}});
    let in_flight = client
        .post(format!("{}/v1/jobs", first.base))
        .bearer_auth(&caller)
        .header("idempotency-key", "once")
        .json(&job)
        .send();
    let base = first.base.clone();
    let watcher = async {
        // Wait until the job holds credits, then kill the server mid-job.
        for _ in 0..200 {
            let credits = client
                .get(format!("{base}/api/credits"))
                .bearer_auth(&caller)
                .send()
                .await
                .unwrap();
            if json_body(credits).await["held"] != "0" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the job never held credits");
    };
    tokio::select! {
        _ = in_flight => panic!("the slow job finished"),
        () = watcher => {}
    }
    tokio::task::spawn_blocking(move || first.kill_9()).await.unwrap();

    let second = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || Served::start(&dir)
    })
    .await
    .unwrap();
    let credits = json_body(
        client
            .get(format!("{}/api/credits", second.base))
            .bearer_auth(&caller)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (credits["balance"].as_str(), credits["held"].as_str()),
        (Some("100"), Some("0")),
        "{credits}"
    );
    let activity = json_body(
        client
            .get(format!("{}/api/activity", second.base))
            .bearer_auth(&caller)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(activity["data"].as_array().unwrap().len(), 0, "{activity}");
    // The key is free: the same request runs anew (against an agent that now answers).
    let fast = TestAgent::start(Behaviour::Json(200, r#"{"text":"done"}"#.into())).await;
    let agents = json_body(
        client
            .get(format!("{}/api/agents/mine", second.base))
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = agents["data"][0]["id"].as_str().unwrap().to_owned();
    let patch = json!({"endpoint": fast.url});
    let response = client
        .patch(format!("{}/api/agents/{id}", second.base))
        .bearer_auth(&owner)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let again = client
        .post(format!("{}/v1/jobs", second.base))
        .bearer_auth(&caller)
        .header("idempotency-key", "once")
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "not 409: the dead process's key was freed");
    assert_eq!(json_body(again).await["status"], "delivered");
}

/// Finding 9, in part: an auction emptied by something the caller did not send (every agent
/// paused) names no request field as `param`.
#[tokio::test]
async fn an_exclusion_the_caller_did_not_cause_names_no_field() {
    let app = app().await;
    let caller = app.signup().await;
    let owner = app.signup().await;
    let agent = TestAgent::start(Behaviour::Chat {
        content: "x".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
    })
    .await;
    let (_, id) = chat_agent(&app, &owner, "resting", &agent, "1", json!({})).await;
    app.post_json(&format!("/api/agents/{id}/pause"), &json!({}), Some(&owner.token)).await;
    let ask = json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}]});
    let response = app.post_json("/v1/chat/completions", &ask, Some(&caller.token)).await;
    assert_eq!(response.status(), 422);
    let body = json_body(response).await;
    assert_eq!(body["error"]["code"], "no_eligible_agent");
    assert_eq!(body["error"]["param"], Value::Null, "{body}");
}

/// Finding 9, in part: upstream API keys are sealed at rest (XChaCha20-Poly1305), never shown,
/// and opened only to call the agent.
#[tokio::test]
async fn upstream_keys_are_sealed_at_rest_and_opened_only_for_the_call() {
    let app = app().await;
    let owner = app.signup().await;
    let caller = app.signup().await;
    let agent = TestAgent::start(Behaviour::Chat {
        content: "x".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
    })
    .await;
    let (_, id) = chat_agent(
        &app,
        &owner,
        "keyed",
        &agent,
        "1",
        json!({"upstream_api_key": "sk-very-secret-upstream"}),
    )
    .await;
    let stored = registry::agents::list_own_agents(&app.state.db, registry::UserId(owner.id))
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.id.to_string() == id)
        .unwrap();
    let sealed = stored.upstream_api_key.unwrap().expose().to_owned();
    assert!(sealed.starts_with("gvs1:") && !sealed.contains("very-secret"), "stored: {sealed}");
    let shown =
        app.get(&format!("/api/agents/{id}"), Some(&owner.token)).await.text().await.unwrap();
    assert!(!shown.contains("very-secret") && !shown.contains("gvs1:"), "{shown}");
    let ask = json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        app.post_json("/v1/chat/completions", &ask, Some(&caller.token)).await.status(),
        200
    );
    let head = agent.last_request().unwrap().head.to_lowercase();
    assert!(head.contains("authorization: bearer sk-very-secret-upstream"), "{head}");
}

/// Finding 9, in part: a body that stops arriving is cut off after `server.body_idle_ms` with
/// a 408 in JSON, instead of holding the connection (40 s before).
#[tokio::test]
async fn a_body_that_stops_arriving_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|s| s.server.body_idle_ms = 300).await;
    let user = app.signup().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/keys HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":",
        user.token
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0_u8; 4096];
        loop {
            let n = socket.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"body_timeout\""), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

/// Finding 9: request heads the HTTP/1 parser refuses (a 100 KB path, a NUL in a header) are
/// answered 400 or 431 by actix before any of Gavel's code runs, and no longer log an ERROR
/// line each (any client could fill the log). The server keeps serving.
#[test]
fn malformed_request_heads_are_refused_without_error_logs() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path());
    let address = served.base.trim_start_matches("http://").to_owned();
    let long_path = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let heads = [long_path.as_str(), "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\0b\r\n\r\n"];
    for head in heads {
        let mut socket = std::net::TcpStream::connect(&address).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = socket.write_all(head.as_bytes());
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        let status_line = String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_owned();
        assert!(
            status_line.starts_with("HTTP/1.1 400") || status_line.starts_with("HTTP/1.1 431"),
            "{status_line:?}"
        );
    }
    let mut socket = std::net::TcpStream::connect(&address).unwrap();
    socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    std::thread::sleep(Duration::from_millis(200));
    let errors: Vec<String> = served.log().into_iter().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// The hashing threads' argon2 memory (19 MiB each) is freed once they sit idle: after a burst
/// of sign-ups the server's RSS falls back instead of keeping one buffer per core for good.
#[test]
fn idle_hashing_threads_give_their_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path());
    let base = served.base.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let signups = (0..8).map(|i| {
            let body = json!({"email": format!("user{i}@example.com"), "password": "correct horse battery staple"});
            let request = client.post(format!("{base}/api/auth/signup")).json(&body).send();
            async move { assert_eq!(request.await.unwrap().status(), 201) }
        });
        futures::future::join_all(signups).await;
    });
    let busy = served.rss_mib();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    // Every thread idle for 10 s in turn, plus a margin.
    let deadline = Instant::now() + Duration::from_secs(10 * cores + 15);
    let mut now = busy;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        now = served.rss_mib();
        if busy.saturating_sub(now) >= 19 * cores - 4 {
            return;
        }
    }
    panic!("RSS {busy} MiB after the sign-ups, still {now} MiB idle");
}
