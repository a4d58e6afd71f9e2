//! Sign-up, login, tokens and `/api/me`.

use chrono::Utc;
use serde_json::json;
use server::auth::{Claims, JwtKeys, TOKEN_AUDIENCE, TOKEN_ISSUER};

use crate::helpers::{TEST_JWT_SECRET, json_body, spawn_app};

#[tokio::test]
async fn signup_returns_the_user_and_a_working_token_and_grants_the_month() {
    let app = spawn_app().await;
    let response = app
        .post_json("/api/auth/signup", &json!({"email": "Ada@Example.com", "password": "correct horse battery", "handle": "ada"}), None)
        .await;
    assert_eq!(response.status(), 201);
    let body = json_body(response).await;
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["handle"], "ada");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 86400);
    assert!(body.get("password").is_none() && !body.to_string().contains("correct horse"));

    let token = body["access_token"].as_str().unwrap();
    let me = json_body(app.get("/api/me", Some(token)).await).await;
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["balance"], "100");
    assert_eq!(me["held"], "0");
    assert_eq!(me["available"], "100");
}

#[tokio::test]
async fn taken_email_or_handle_is_a_409() {
    let app = spawn_app().await;
    let first =
        json!({"email": "ada@example.com", "password": "correct horse battery", "handle": "ada"});
    assert_eq!(app.post_json("/api/auth/signup", &first, None).await.status(), 201);
    let same_email = json!({"email": "ADA@example.com", "password": "correct horse battery"});
    let response = app.post_json("/api/auth/signup", &same_email, None).await;
    assert_eq!(response.status(), 409);
    assert_eq!(json_body(response).await["error"]["code"], "email_taken");
    let same_handle =
        json!({"email": "bob@example.com", "password": "correct horse battery", "handle": "ADA"});
    let response = app.post_json("/api/auth/signup", &same_handle, None).await;
    assert_eq!(response.status(), 409);
    assert_eq!(json_body(response).await["error"]["code"], "handle_taken");
}

#[tokio::test]
async fn invalid_signups_are_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"email": "not-an-email", "password": "correct horse battery"}), "email"),
        (json!({"email": "ada@example.com", "password": "short"}), "password"),
        (json!({"email": "ada@example.com", "password": "x".repeat(129)}), "password"),
        (
            json!({"email": "ada@example.com", "password": "correct horse battery", "handle": "a/b"}),
            "handle",
        ),
        (json!({"password": "correct horse battery"}), "email"),
        (json!({"email": "ada@example.com"}), "password"),
        (json!({"email": 42, "password": "correct horse battery"}), "email"),
        (
            json!({"email": "ada@example.com", "password": "correct horse battery", "admin": true}),
            "admin",
        ),
    ];
    for (body, field) in cases {
        let response = app.post_json("/api/auth/signup", &body, None).await;
        assert_eq!(response.status(), 422, "{body}");
        let error = json_body(response).await;
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
        assert!(error["error"]["message"].as_str().unwrap().contains(field), "{error}");
    }
}

#[tokio::test]
async fn login_gives_the_same_401_for_an_unknown_user_and_a_wrong_password() {
    let app = spawn_app().await;
    let user = app.signup().await;
    let ok = app
        .post_json(
            "/api/auth/login",
            &json!({"email": user.email, "password": user.password}),
            None,
        )
        .await;
    assert_eq!(ok.status(), 200);
    let token = json_body(ok).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/api/me", Some(&token)).await.status(), 200);

    let wrong_password = app
        .post_json(
            "/api/auth/login",
            &json!({"email": user.email, "password": "wrong password!!"}),
            None,
        )
        .await;
    let unknown_user = app
        .post_json(
            "/api/auth/login",
            &json!({"email": "nobody@example.com", "password": "wrong password!!"}),
            None,
        )
        .await;
    assert_eq!(wrong_password.status(), 401);
    assert_eq!(unknown_user.status(), 401);
    assert_eq!(json_body(wrong_password).await, json_body(unknown_user).await);
}

#[tokio::test]
async fn tampered_expired_and_foreign_tokens_are_401() {
    let app = spawn_app().await;
    let user = app.signup().await;
    let keys = JwtKeys::new(TEST_JWT_SECRET.as_bytes(), 3600);
    let now = Utc::now().timestamp();
    let claims = Claims {
        sub: user.id.to_string(),
        iss: TOKEN_ISSUER.into(),
        aud: TOKEN_AUDIENCE.into(),
        exp: now + 600,
        iat: now,
        nbf: None,
    };
    let valid = keys.sign(&claims).unwrap();
    assert_eq!(app.get("/api/me", Some(&valid)).await.status(), 200);

    let expired =
        keys.sign(&Claims { exp: now - 3600, iat: now - 7200, ..claims.clone() }).unwrap();
    let wrong_audience = keys.sign(&Claims { aud: "elsewhere".into(), ..claims.clone() }).unwrap();
    let foreign =
        JwtKeys::new(b"some-other-secret-some-other-secret-xyz", 3600).sign(&claims).unwrap();
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let forged_payload = base64_url(&format!(
        r#"{{"sub":"{}","iss":"gavel","aud":"gavel-api","exp":{},"iat":{now}}}"#,
        uuid::Uuid::new_v4(),
        now + 600
    ));
    let tampered = format!("{head}.{forged_payload}.{signature}");
    let none_alg = format!(
        "{}.{}.",
        base64_url(r#"{"alg":"none","typ":"JWT"}"#),
        base64_url(&serde_json::to_string(&claims).unwrap())
    );

    for (name, token) in [
        ("expired", expired),
        ("wrong audience", wrong_audience),
        ("foreign key", foreign),
        ("tampered", tampered),
        ("alg none", none_alg),
        ("garbage", "abc.def".into()),
    ] {
        let response = app.get("/api/me", Some(&token)).await;
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(json_body(response).await["error"]["code"], "unauthenticated", "{name}");
    }
    let response = app.get("/api/me", None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}
