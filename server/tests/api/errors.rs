//! Every malformed request gets its status and a JSON body in the right shape: never HTML,
//! never a 500.

use serde_json::Value;

use crate::helpers::{json_body, spawn_app};

#[tokio::test]
async fn bad_input_gets_its_status_and_a_json_body() {
    let app = spawn_app().await;
    let user = app.signup().await;
    let signup = app.url("/api/auth/signup");
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "malformed JSON",
            app.client
                .post(&signup)
                .header("content-type", "application/json")
                .body("{\"email\": "),
            400,
            "malformed_json",
        ),
        (
            "not JSON at all",
            app.client.post(&signup).header("content-type", "application/json").body("hello"),
            400,
            "malformed_json",
        ),
        (
            "wrong content type",
            app.client.post(&signup).header("content-type", "text/plain").body("{}"),
            415,
            "unsupported_media_type",
        ),
        ("no content type", app.client.post(&signup).body("{}"), 415, "unsupported_media_type"),
        (
            "oversized body",
            app.client
                .post(&signup)
                .header("content-type", "application/json")
                .body(format!("{{\"email\":\"{}\"}}", "a".repeat(70_000))),
            413,
            "payload_too_large",
        ),
        ("unknown route", app.client.get(app.url("/api/nothing-here")), 404, "not_found"),
        ("unknown top-level route", app.client.get(app.url("/nothing")), 404, "not_found"),
        (
            "wrong method",
            app.client.put(app.url("/api/keys")).bearer_auth(&user.token),
            405,
            "method_not_allowed",
        ),
        ("no credentials", app.client.get(app.url("/api/keys")), 401, "unauthenticated"),
        (
            "not bearer",
            app.client.get(app.url("/api/keys")).header("authorization", "Basic YTpi"),
            401,
            "unauthenticated",
        ),
        (
            "JSON array body",
            app.client
                .post(app.url("/api/keys"))
                .bearer_auth(&user.token)
                .json(&serde_json::json!([1, 2])),
            422,
            "invalid_request",
        ),
    ];
    for (name, request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(content_type.as_deref(), Some("application/json"), "{name}");
        let body = json_body(response).await;
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}");
    }
}

#[tokio::test]
async fn openai_routes_answer_in_openai_error_shape() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/v1/does-not-exist")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = json_body(response).await;
    let error = &body["error"];
    assert_eq!(error["type"], "not_found_error", "{body}");
    assert_eq!(error["code"], "not_found");
    assert!(error["message"].as_str().unwrap().contains("/v1/does-not-exist"));
    assert!(error.get("param").is_some(), "OpenAI errors always carry param: {body}");
}

/// What schemathesis found, kept as plain regression tests: a 405 lists the allowed methods;
/// an empty query value is refused, not read as absent; an amount is never signed (not even
/// `-0`) and never above a million credits; a name's length is checked as sent.
#[tokio::test]
async fn inputs_the_schema_refuses_are_refused() {
    let app = spawn_app().await;
    let user = app.signup().await;
    let response = app.client.put(app.url("/api/agents/mine")).bearer_auth(&user.token).send();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    for (query, param) in [("limit=", "limit"), ("until=", "until"), ("category=nope", "category")]
    {
        let url = app.url(&format!("/api/activity?{query}"));
        let response = app.client.get(url).bearer_auth(&user.token).send().await.unwrap();
        assert_eq!(response.status(), 422, "{query}");
        assert_eq!(json_body(response).await["error"]["field"], param, "{query}");
    }
    for max_price in [serde_json::json!("-0"), serde_json::json!("1000001"), serde_json::json!(2e6)]
    {
        let job = serde_json::json!({"category": "ocr", "input": {}, "auction": {"max_price": max_price}});
        let response =
            app.client.post(app.url("/v1/jobs")).bearer_auth(&user.token).json(&job).send();
        let body = json_body(response.await.unwrap()).await;
        assert_eq!(body["error"]["param"], "auction.max_price", "{max_price}: {body}");
    }
    let name = format!("\u{a0}{}", "k".repeat(100));
    let response = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(&user.token)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
}
