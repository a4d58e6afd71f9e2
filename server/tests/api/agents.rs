//! The agent registry over HTTP: registration and its SSRF guard, owner-only writes, price
//! versions, discovery, `/v1/models`, and the candidate index across instances.

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, json_body, spawn_app, spawn_app_with, spawn_app_with_dns};
use crate::test_agent::{Behaviour, TestAgent};

fn agent_body(name: &str, endpoint: &str) -> Value {
    json!({
        "name": name,
        "description": "reads text from images",
        "kind": "json",
        "categories": ["ocr"],
        "endpoint": endpoint,
        "pricing": {"per_call": "0.5", "per_million_input_tokens": 0, "per_million_output_tokens": "0"},
        "tags": ["pdf"],
    })
}

async fn loopback_app() -> TestApp {
    spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await
}

async fn register(app: &TestApp, user: &TestUser, body: &Value) -> Value {
    let response = app.post_json("/api/agents", body, Some(&user.token)).await;
    let status = response.status();
    let value = json_body(response).await;
    assert_eq!(status, 201, "{value}");
    value
}

#[tokio::test]
async fn at_least_thirty_dangerous_endpoints_are_refused() {
    let app = spawn_app_with_dns(
        |_| {},
        vec![
            ("internal.example.com", vec!["10.0.0.5".parse().unwrap()]),
            (
                "rebind.example.com",
                vec!["93.184.216.34".parse().unwrap(), "127.0.0.1".parse().unwrap()],
            ),
            ("v6.example.com", vec!["fe80::1".parse().unwrap()]),
        ],
    )
    .await;
    let user = app.signup().await;
    let refused = [
        "http://127.0.0.1/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.0.0.1.nip.io.internal/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.0.10/",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.10.1/",
        "http://224.0.0.1/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://[fd00:ec2::254]/",
        "http://[fc00::1]/",
        "http://[fe80::1]/",
        "http://[ff02::1]/",
        "http://localhost/",
        "http://localhost./",
        "http://printer.local/",
        "http://metadata.google.internal/",
        "http://intranet/",
        "http://user:pass@example.com/",
        "http://example.com@127.0.0.1/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com:70/",
        "javascript:alert(1)",
        "not a url",
        "http://",
        "https://example.com:6379/",
        "http://internal.example.com/",
        "http://rebind.example.com/",
        "http://v6.example.com/",
        "http://nxdomain.example.com/",
    ];
    assert!(refused.len() >= 30);
    for url in refused {
        let response = app.post_json("/api/agents", &agent_body("x", url), Some(&user.token)).await;
        let status = response.status().as_u16();
        let body = json_body(response).await;
        assert_eq!(status, 422, "{url} was accepted: {body}");
        assert_eq!(body["error"]["field"], "endpoint", "{url}: {body}");
        // The bid URL goes through the same guard.
        let mut with_bid = agent_body("y", "https://agent.example.com/");
        with_bid["bid_url"] = json!(url);
        let response = app.post_json("/api/agents", &with_bid, Some(&user.token)).await;
        assert_eq!(response.status(), 422, "bid_url {url}");
    }
    let mine = json_body(app.get("/api/agents/mine", Some(&user.token)).await).await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 0, "nothing was half-written");
}

#[tokio::test]
async fn a_name_resolving_to_a_public_address_is_accepted() {
    let app = spawn_app_with_dns(
        |_| {},
        vec![("ocr.example.com", vec!["93.184.216.34".parse().unwrap()])],
    )
    .await;
    let user = app.signup().await;
    let agent = register(&app, &user, &agent_body("reader", "https://ocr.example.com/run")).await;
    assert_eq!(agent["endpoint"], "https://ocr.example.com/run");
}

#[tokio::test]
async fn the_opening_admits_loopback_but_never_metadata() {
    let agent = TestAgent::start(Behaviour::Json(200, "{}".into())).await;
    let app = spawn_app_with(|s| {
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into(), "169.254.0.0/16".into()]
    })
    .await;
    let user = app.signup().await;
    let created = register(&app, &user, &agent_body("local", &agent.url)).await;
    assert_eq!(
        created["slug"],
        format!("{}/local", created["slug"].as_str().unwrap().split('/').next().unwrap())
    );
    let response = app
        .post_json(
            "/api/agents",
            &agent_body("meta", "http://169.254.169.254/latest/"),
            Some(&user.token),
        )
        .await;
    assert_eq!(response.status(), 422);
    assert!(json_body(response).await["error"]["message"].as_str().unwrap().contains("metadata"));
    assert_eq!(agent.connections(), 0, "registration does not call the agent");
}

#[tokio::test]
async fn invalid_registrations_are_422_naming_the_field() {
    let app = loopback_app().await;
    let user = app.signup().await;
    let good = agent_body("good", "http://127.0.0.1:9/");
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "a", "kind": "json", "categories": ["ocr"], "pricing": {"per_call": "1"}}),
            "endpoint",
        ),
        (merge(&good, json!({"pricing": {"per_call": "-1"}})), "pricing.per_call"),
        (merge(&good, json!({"pricing": {"per_call": "abc"}})), "pricing.per_call"),
        (
            merge(&good, json!({"pricing": {"per_million_output_tokens": true}})),
            "pricing.per_million_output_tokens",
        ),
        (merge(&good, json!({"kind": "grpc"})), "kind"),
        (merge(&good, json!({"kind": "openai-chat"})), "upstream_model"),
        (merge(&good, json!({"categories": ["astrology"]})), "categories"),
        (merge(&good, json!({"categories": []})), "categories"),
        (merge(&good, json!({"name": "has space"})), "name"),
        (merge(&good, json!({"visibility": "hidden"})), "visibility"),
        (merge(&good, json!({"max_latency_ms": -5})), "max_latency_ms"),
        (merge(&good, json!({"colour": "blue"})), "colour"),
    ];
    for (body, field) in cases {
        let response = app.post_json("/api/agents", &body, Some(&user.token)).await;
        let status = response.status();
        let error = json_body(response).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
}

fn merge(base: &Value, patch: Value) -> Value {
    let mut merged = base.clone();
    for (key, value) in patch.as_object().unwrap() {
        merged[key] = value.clone();
    }
    merged
}

#[tokio::test]
async fn the_upstream_key_appears_in_no_response() {
    let app = loopback_app().await;
    let owner = app.signup().await;
    let stranger = app.signup().await;
    let secret = "sk-live-THIS-MUST-NEVER-LEAK-1234567890";
    let body = json!({
        "name": "chatty",
        "kind": "openai-chat",
        "categories": ["chat"],
        "endpoint": "http://127.0.0.1:9/v1",
        "upstream_model": "gpt-x",
        "upstream_api_key": secret,
        "pricing": {"per_million_input_tokens": "1", "per_million_output_tokens": "2"},
    });
    let created =
        app.post_json("/api/agents", &body, Some(&owner.token)).await.text().await.unwrap();
    let id = serde_json::from_str::<Value>(&created).unwrap()["id"].as_str().unwrap().to_owned();
    assert!(created.contains("\"has_upstream_api_key\":true"));
    let patched = app
        .patch_json(
            &format!("/api/agents/{id}"),
            &json!({"upstream_api_key": format!("{secret}-2")}),
            Some(&owner.token),
        )
        .await
        .text()
        .await
        .unwrap();
    let mut responses = vec![created, patched];
    for (path, token) in [
        (format!("/api/agents/{id}"), Some(&owner.token)),
        (format!("/api/agents/{id}"), Some(&stranger.token)),
        (format!("/api/agents/{id}"), None),
        ("/api/agents/mine".into(), Some(&owner.token)),
        ("/api/agents".into(), None),
        ("/api/agents?category=chat&q=chatty".into(), Some(&stranger.token)),
        ("/v1/models".into(), None),
    ] {
        responses.push(app.get(&path, token.map(String::as_str)).await.text().await.unwrap());
    }
    for response in &responses {
        assert!(!response.contains("THIS-MUST-NEVER-LEAK"), "leaked: {response}");
    }
    // Strangers do not even see where the agent lives.
    let seen_by_stranger: Value = serde_json::from_str(&responses[3]).unwrap();
    assert!(
        seen_by_stranger.get("endpoint").is_none()
            && seen_by_stranger.get("has_upstream_api_key").is_none()
    );
}

#[tokio::test]
async fn the_bola_matrix_holds_for_every_verb() {
    let app = loopback_app().await;
    let alice = app.signup().await;
    let bob = app.signup().await;
    let private = register(
        &app,
        &alice,
        &merge(&agent_body("secret", "http://127.0.0.1:9/"), json!({"visibility": "private"})),
    )
    .await;
    let public = register(&app, &alice, &agent_body("open", "http://127.0.0.1:9/")).await;
    let private_id = private["id"].as_str().unwrap();
    let public_id = public["id"].as_str().unwrap();

    for (id, read_status, write_status) in [(private_id, 404, 404), (public_id, 200, 403)] {
        let path = format!("/api/agents/{id}");
        assert_eq!(app.get(&path, Some(&bob.token)).await.status(), read_status, "GET {id}");
        let patch = json!({"description": "hijacked", "pricing": {"per_call": "0"}});
        assert_eq!(
            app.patch_json(&path, &patch, Some(&bob.token)).await.status(),
            write_status,
            "PATCH {id}"
        );
        assert_eq!(
            app.post_json(&format!("{path}/pause"), &json!({}), Some(&bob.token)).await.status(),
            write_status,
            "pause {id}"
        );
        assert_eq!(
            app.post_json(&format!("{path}/resume"), &json!({}), Some(&bob.token)).await.status(),
            write_status,
            "resume {id}"
        );
        let endpoint_change = json!({"endpoint": "http://127.0.0.1:10/"});
        assert_eq!(
            app.patch_json(&path, &endpoint_change, Some(&bob.token)).await.status(),
            write_status
        );
        assert_eq!(app.delete(&path, Some(&bob.token)).await.status(), write_status, "DELETE {id}");
        // Alice's agent is unchanged.
        let seen = json_body(app.get(&path, Some(&alice.token)).await).await;
        assert_eq!(seen["description"], "reads text from images");
        assert_eq!(seen["status"], "active");
        assert_eq!(seen["pricing"]["per_call"], "0.5");
        assert_eq!(seen["endpoint"], "http://127.0.0.1:9/");
    }
    let bobs = json_body(app.get("/api/agents/mine", Some(&bob.token)).await).await;
    assert_eq!(bobs["data"].as_array().unwrap().len(), 0);
    let discovered = json_body(app.get("/api/agents", Some(&bob.token)).await).await;
    let slugs: Vec<&str> = discovered["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["slug"].as_str().unwrap())
        .collect();
    assert_eq!(
        slugs,
        vec![public["slug"].as_str().unwrap()],
        "the private agent is not discoverable"
    );
}

#[tokio::test]
async fn owners_change_pause_and_delete_their_agents_with_versioned_prices() {
    let app = loopback_app().await;
    let owner = app.signup().await;
    let agent = register(&app, &owner, &agent_body("reader", "http://127.0.0.1:9/")).await;
    assert_eq!(agent["price_version"], 1);
    let path = format!("/api/agents/{}", agent["id"].as_str().unwrap());

    let patched = json_body(
        app.patch_json(
            &path,
            &json!({"pricing": {"per_call": "0.4"}, "max_latency_ms": 2000}),
            Some(&owner.token),
        )
        .await,
    )
    .await;
    assert_eq!(patched["price_version"], 2);
    assert_eq!(patched["pricing"]["per_call"], "0.4");
    assert_eq!(patched["max_latency_ms"], 2000);
    let cleared = json_body(
        app.patch_json(
            &path,
            &json!({"max_latency_ms": null, "description": "v2"}),
            Some(&owner.token),
        )
        .await,
    )
    .await;
    assert_eq!(cleared["max_latency_ms"], Value::Null);
    assert_eq!(cleared["price_version"], 2, "no price change, no new version");
    let renamed = app.patch_json(&path, &json!({"name": "other"}), Some(&owner.token)).await;
    assert_eq!(renamed.status(), 422);

    let paused =
        json_body(app.post_json(&format!("{path}/pause"), &json!({}), Some(&owner.token)).await)
            .await;
    assert_eq!(paused["status"], "paused");
    let resumed =
        json_body(app.post_json(&format!("{path}/resume"), &json!({}), Some(&owner.token)).await)
            .await;
    assert_eq!(resumed["status"], "active");

    // Price changes are rate-limited: 12 an hour.
    let mut last = 0;
    for i in 0..12 {
        let response = app
            .patch_json(
                &path,
                &json!({"pricing": {"per_call": format!("0.{}", i + 10)}}),
                Some(&owner.token),
            )
            .await;
        last = response.status().as_u16();
        if last == 429 {
            assert!(response.headers().contains_key("retry-after"));
            break;
        }
    }
    assert_eq!(last, 429, "the 13th change within the hour is refused");

    assert_eq!(app.delete(&path, Some(&owner.token)).await.status(), 204);
    assert_eq!(app.get(&path, Some(&owner.token)).await.status(), 404);
    assert_eq!(app.delete(&path, Some(&owner.token)).await.status(), 404);
    let again = app
        .post_json("/api/agents", &agent_body("reader", "http://127.0.0.1:9/"), Some(&owner.token))
        .await;
    assert_eq!(again.status(), 409, "a deleted agent's slug stays reserved for its history");
}

#[tokio::test]
async fn discovery_filters_sorts_and_pages() {
    let app = loopback_app().await;
    let owner = app.signup().await;
    for (name, price, category) in [
        ("alpha", "0.3", "ocr"),
        ("beta", "0.1", "ocr"),
        ("gamma", "0.2", "ocr"),
        ("delta", "0.05", "scrape"),
    ] {
        let body = merge(
            &agent_body(name, "http://127.0.0.1:9/"),
            json!({"pricing": {"per_call": price}, "categories": [category]}),
        );
        register(&app, &owner, &body).await;
    }
    let by_price =
        json_body(app.get("/api/agents?category=ocr&sort=price&limit=2", None).await).await;
    let names = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&by_price), vec!["beta", "gamma"]);
    assert_eq!(by_price["has_more"], true);
    let cursor = by_price["next_cursor"].as_str().unwrap();
    let rest = json_body(
        app.get(&format!("/api/agents?category=ocr&sort=price&limit=2&cursor={cursor}"), None)
            .await,
    )
    .await;
    assert_eq!(names(&rest), vec!["alpha"]);
    assert_eq!(rest["has_more"], false);
    let newest = json_body(app.get("/api/agents", None).await).await;
    assert_eq!(names(&newest), vec!["delta", "gamma", "beta", "alpha"]);
    let searched = json_body(app.get("/api/agents?q=GAM", None).await).await;
    assert_eq!(names(&searched), vec!["gamma"]);
    for (query, field) in [
        ("sort=cost", "sort"),
        ("limit=0", "limit"),
        ("category=astrology", "category"),
        ("cursor=zzz", "cursor"),
    ] {
        let response = app.get(&format!("/api/agents?{query}"), None).await;
        assert_eq!(response.status(), 422, "{query}");
        assert_eq!(json_body(response).await["error"]["field"], field);
    }
}

#[tokio::test]
async fn models_lists_public_agents_and_the_virtual_auction_models() {
    let app = loopback_app().await;
    let owner = app.signup().await;
    let agent = register(&app, &owner, &agent_body("reader", "http://127.0.0.1:9/")).await;
    register(
        &app,
        &owner,
        &merge(&agent_body("hidden", "http://127.0.0.1:9/"), json!({"visibility": "private"})),
    )
    .await;
    let models = json_body(app.get("/v1/models", Some(&owner.token)).await).await;
    assert_eq!(models["object"], "list");
    let data = models["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["auction", "auction/ocr", agent["slug"].as_str().unwrap()]);
    let model = &data[2];
    assert_eq!(model["object"], "model");
    assert_eq!(model["pricing"]["per_call"], "0.5");
    assert_eq!(model["pricing"]["per_million_input_tokens"], "0");
    assert!(model["reputation"]["score"].is_number());
    assert_eq!(model["categories"], json!(["ocr"]));
}

/// Instances share a database on Postgres (a SQLite file takes one server).
#[tokio::test]
async fn a_change_on_one_instance_is_seen_by_the_next_request_on_another() {
    let Some(shared) = crate::helpers::shared_postgres().await else { return };
    let url = shared.url.clone();
    let configure = |s: &mut server::configuration::Settings| {
        s.database.url = Some(url.clone());
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
    };
    let first = spawn_app_with(configure).await;
    let second = spawn_app_with(configure).await;
    // Warm the second instance's index before the change.
    let before = json_body(second.get("/v1/models", None).await).await;
    assert_eq!(before["data"].as_array().unwrap().len(), 1, "only `auction`");

    let owner = first.signup().await;
    let agent = register(&first, &owner, &agent_body("reader", "http://127.0.0.1:9/")).await;
    let after = json_body(second.get("/v1/models", None).await).await;
    assert!(after["data"].as_array().unwrap().iter().any(|m| m["id"] == agent["slug"]));

    let path = format!("/api/agents/{}/pause", agent["id"].as_str().unwrap());
    first.post_json(&path, &json!({}), Some(&owner.token)).await;
    let listed = json_body(second.get("/api/agents", None).await).await;
    assert_eq!(listed["data"][0]["status"], "paused");
}

#[tokio::test]
async fn anonymous_reads_need_no_token_but_a_bad_token_is_refused() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/agents", None).await.status(), 200);
    assert_eq!(app.get("/v1/models", None).await.status(), 200);
    assert_eq!(app.get("/api/agents", Some("gvl_nonsense")).await.status(), 401);
    let response = app.get("/v1/models", Some("nonsense")).await;
    assert_eq!(response.status(), 401);
    assert_eq!(json_body(response).await["error"]["type"], "authentication_error");
    assert_eq!(
        app.post_json("/api/agents", &agent_body("x", "https://a.example.com/"), None)
            .await
            .status(),
        401
    );
}
