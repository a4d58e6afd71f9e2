//! API keys over HTTP: shown once, listed by prefix, revoked at once, owner-scoped.

use serde_json::json;

use crate::helpers::{json_body, spawn_app};

#[tokio::test]
async fn a_key_authenticates_every_route_and_is_shown_only_once() {
    let app = spawn_app().await;
    let user = app.signup().await;
    let (key_id, secret) = app.create_key(&user, "laptop").await;
    assert!(secret.starts_with("gvl_"));
    assert_eq!(app.get("/api/me", Some(&secret)).await.status(), 200);
    assert_eq!(app.get("/api/credits", Some(&secret)).await.status(), 200);

    let listed = json_body(app.get("/api/keys", Some(&secret)).await).await;
    let keys = listed["data"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["id"], key_id.as_str());
    assert_eq!(keys[0]["prefix"], &secret[..12]);
    assert!(!keys[0]["last_used_at"].is_null());
    assert!(!listed.to_string().contains(&secret), "the secret is never listed");
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_the_very_next_request() {
    let app = spawn_app().await;
    let user = app.signup().await;
    let (key_id, secret) = app.create_key(&user, "ci").await;
    assert_eq!(app.get("/api/me", Some(&secret)).await.status(), 200);
    let response = app.delete(&format!("/api/keys/{key_id}"), Some(&user.token)).await;
    assert_eq!(response.status(), 204);
    let response = app.get("/api/me", Some(&secret)).await;
    assert_eq!(response.status(), 401);
    assert_eq!(json_body(response).await["error"]["code"], "unauthenticated");
}

#[tokio::test]
async fn user_b_cannot_revoke_user_a_key() {
    let app = spawn_app().await;
    let alice = app.signup().await;
    let bob = app.signup().await;
    let (key_id, secret) = app.create_key(&alice, "alice's").await;

    let response = app.delete(&format!("/api/keys/{key_id}"), Some(&bob.token)).await;
    assert_eq!(response.status(), 404);
    assert_eq!(json_body(response).await["error"]["code"], "not_found");
    assert_eq!(app.get("/api/me", Some(&secret)).await.status(), 200, "alice's key still works");
    let bobs = json_body(app.get("/api/keys", Some(&bob.token)).await).await;
    assert_eq!(bobs["data"].as_array().unwrap().len(), 0, "bob sees none of alice's keys");

    for bad_id in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        assert_eq!(
            app.delete(&format!("/api/keys/{bad_id}"), Some(&bob.token)).await.status(),
            404,
            "{bad_id}"
        );
    }
}

#[tokio::test]
async fn a_key_name_is_required_and_bounded() {
    let app = spawn_app().await;
    let user = app.signup().await;
    for body in
        [json!({}), json!({"name": ""}), json!({"name": "x".repeat(101)}), json!({"name": 7})]
    {
        let response = app.post_json("/api/keys", &body, Some(&user.token)).await;
        assert_eq!(response.status(), 422, "{body}");
        assert_eq!(json_body(response).await["error"]["field"], "name", "{body}");
    }
}
