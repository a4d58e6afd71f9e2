//! `spawn_app`: the real application on 127.0.0.1:0 with a fresh SQLite database (or Postgres),
//! and a typed client for its routes.

use std::sync::{Arc, LazyLock};

use actix_web::web;
use registry::testing::{TempPostgres, test_database_url};
use serde_json::{Value, json};
use server::configuration::Settings;
use server::egress::StaticLookup;
use server::startup::Application;
use server::state::AppState;
use uuid::Uuid;

pub(crate) const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        server::telemetry::init();
    }
});

pub(crate) struct TestApp {
    pub(crate) address: String,
    /// Stops the server (`stop(true)` is graceful).
    pub(crate) handle: actix_web::dev::ServerHandle,
    /// Resolves when the server has stopped and its streams have settled.
    pub(crate) stopped: tokio::task::JoinHandle<std::io::Result<()>>,
    pub(crate) client: reqwest::Client,
    pub(crate) state: web::Data<AppState>,
    _data_dir: tempfile::TempDir,
    _postgres: Option<TempPostgres>,
}

/// A signed-up user: its token and ids.
pub(crate) struct TestUser {
    pub(crate) id: Uuid,
    pub(crate) email: String,
    pub(crate) password: String,
    pub(crate) token: String,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns the app after `configure` adjusts the test settings.
pub(crate) async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(configure, None, None).await
}

/// Spawns the app with scripted DNS answers instead of the system resolver.
pub(crate) async fn spawn_app_with_dns(
    configure: impl FnOnce(&mut Settings),
    answers: Vec<(&'static str, Vec<std::net::IpAddr>)>,
) -> TestApp {
    spawn(configure, None, Some(StaticLookup::new(answers))).await
}

/// The same app on a fresh Postgres database, or `None` when Postgres is not configured
/// (outside CI).
pub(crate) async fn spawn_app_on_postgres() -> Option<TestApp> {
    let admin_url = test_database_url()?;
    let temp = TempPostgres::create(&admin_url).await.expect("TEST_DATABASE_URL must be reachable");
    Some(spawn(|_| {}, Some(temp), None).await)
}

/// A fresh Postgres database for tests that run several instances on one (a SQLite file takes
/// one server), or `None` when `TEST_DATABASE_URL` is unset outside CI (in CI that fails).
pub(crate) async fn shared_postgres() -> Option<TempPostgres> {
    let Some(admin_url) = test_database_url() else {
        assert!(std::env::var_os("CI").is_none(), "CI must set TEST_DATABASE_URL");
        eprintln!("SKIPPED: TEST_DATABASE_URL is not set");
        return None;
    };
    Some(TempPostgres::create(&admin_url).await.expect("TEST_DATABASE_URL must be reachable"))
}

async fn spawn(
    configure: impl FnOnce(&mut Settings),
    postgres: Option<TempPostgres>,
    dns: Option<StaticLookup>,
) -> TestApp {
    LazyLock::force(&TRACING);
    let data_dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.data_dir = data_dir.path().to_path_buf();
    settings.server.workers = 2;
    settings.auth.jwt_secret = Some(TEST_JWT_SECRET.into());
    // Tests sign up many users from one address; the tight default has a test of its own.
    settings.rate_limit.auth_per_minute = 600_000;
    settings.rate_limit.auth_burst = 10_000;
    if let Some(pg) = &postgres {
        settings.database.url = Some(pg.url.clone());
    }
    configure(&mut settings);
    // Tests never use real DNS: names resolve only through the scripted table.
    let lookup = Arc::new(dns.unwrap_or_default());
    let app = Application::build_with_lookup(settings.resolve().unwrap(), lookup).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let handle = app.handle();
    let stopped = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        handle,
        stopped,
        client: reqwest::Client::new(),
        state,
        _data_dir: data_dir,
        _postgres: postgres,
    }
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub(crate) async fn patch_json(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.client.patch(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub(crate) async fn delete(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.delete(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub(crate) async fn signup(&self) -> TestUser {
        self.signup_as(&format!("{}@example.com", Uuid::new_v4().simple())).await
    }

    /// Signs up with `email`.
    pub(crate) async fn signup_as(&self, email: &str) -> TestUser {
        let email = email.to_owned();
        let password = "correct horse battery staple".to_owned();
        let response = self
            .post_json("/api/auth/signup", &json!({"email": email, "password": password}), None)
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        TestUser {
            id: body["user"]["id"].as_str().unwrap().parse().unwrap(),
            email,
            password,
            token: body["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// `user`'s (balance, held), as the API shows them.
    pub(crate) async fn credits(&self, user: &TestUser) -> (String, String) {
        let credits = json_body(self.get("/api/credits", Some(&user.token)).await).await;
        let field = |name: &str| credits[name].as_str().unwrap().to_owned();
        (field("balance"), field("held"))
    }

    /// Registers an agent for `owner`, failing the test unless it is created; returns the agent.
    pub(crate) async fn register_agent(&self, owner: &TestUser, body: &Value) -> Value {
        let response = self.post_json("/api/agents", body, Some(&owner.token)).await;
        let status = response.status();
        let created = json_body(response).await;
        assert_eq!(status, 201, "{created}");
        created
    }

    /// Creates an API key for `user` and returns `(id, secret)`.
    pub(crate) async fn create_key(&self, user: &TestUser, name: &str) -> (String, String) {
        let response = self.post_json("/api/keys", &json!({"name": name}), Some(&user.token)).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        (body["id"].as_str().unwrap().to_owned(), body["key"].as_str().unwrap().to_owned())
    }
}

/// Reads a response as JSON, failing the test with the body if it is not JSON.
pub(crate) async fn json_body(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}
