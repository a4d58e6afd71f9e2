//! The dashboard over real HTTP: sessions and their cookie, CSRF on every form, owner scoping
//! of job pages, escaping, and ratings (API and form) with the rules that bound their weight.
//! The browser walk-through (Chromium) is in `browser.rs`.

use std::collections::HashMap;

use reqwest::redirect::Policy;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, json_body, spawn_app_with};
use crate::test_agent::{Behaviour, TestAgent};

/// A browser without a browser: keeps cookies, never follows redirects.
pub(crate) struct Session<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl<'a> Session<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Session<'a> {
        let client = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
        Session { app, client, cookies: HashMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> reqwest::Response {
        let response = self
            .client
            .get(self.app.url(path))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&response);
        response
    }

    pub(crate) async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let response = self
            .client
            .post(self.app.url(path))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish())
            .send()
            .await
            .unwrap();
        self.keep(&response);
        response
    }

    /// Signs `user` up through the form; the session is then open.
    pub(crate) async fn sign_up(&mut self, email: &str) {
        let page = self.get("/signup").await.text().await.unwrap();
        let csrf = csrf_of(&page);
        let response = self
            .post(
                "/signup",
                &[("csrf", &csrf), ("email", email), ("password", "correct horse battery staple")],
            )
            .await;
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["location"], "/");
    }
}

/// The API key a page shows once, right after it was created.
fn new_key_of(page: &str) -> String {
    let at = page.find("value=\"gvl_").expect("the new key, shown once") + 7;
    page[at..at + 52].to_owned()
}

/// The first CSRF token in a page.
pub(crate) fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
    page[at..at + 64].to_owned()
}

async fn app() -> TestApp {
    spawn_app_with(|s| s.egress.allow_cidrs = vec!["127.0.0.0/8".into()]).await
}

#[tokio::test]
async fn a_session_is_an_http_only_strict_cookie_and_every_form_needs_its_token() {
    let app = app().await;
    let mut browser = Session::new(&app);

    // The front page sends a visitor without a session to the login form.
    let response = browser.get("/").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/login");

    // The login form sets its double-submit cookie; a post without the token is refused.
    let form = browser.get("/signup").await;
    let form_cookie = form.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(form_cookie.contains("HttpOnly") && form_cookie.contains("SameSite=Strict"));
    let refused = browser
        .post(
            "/signup",
            &[("csrf", "0".repeat(64).as_str()), ("email", "a@example.com"), ("password", "x")],
        )
        .await;
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("reload the page"));

    // Signing up opens a session: HttpOnly, SameSite=Strict, the whole site.
    let page = browser.get("/signup").await.text().await.unwrap();
    let response = browser
        .post(
            "/signup",
            &[
                ("csrf", &csrf_of(&page)),
                ("email", "ada@example.com"),
                ("password", "correct horse battery staple"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("gavel_session="))
        .expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=604800"] {
        assert!(cookie.contains(flag), "{flag} missing from {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP on loopback: no Secure flag");

    // The dashboard, with its security headers.
    let response = browser.get("/").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(headers["content-security-policy"].to_str().unwrap().starts_with("default-src 'self'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let page = response.text().await.unwrap();
    assert!(page.contains("<dd id=\"available\">100</dd>"), "{page}");
    assert!(!page.contains("<script"), "the dashboard runs no script");

    // A form posted without the session's token changes nothing.
    let refused = browser.post("/keys", &[("name", "laptop")]).await;
    assert_eq!(refused.status(), 400, "a form without its csrf field does not parse");
    let refused = browser.post("/keys", &[("csrf", &"f".repeat(64)), ("name", "laptop")]).await;
    assert_eq!(refused.status(), 403);
    let created = browser.post("/keys", &[("csrf", &csrf_of(&page)), ("name", "laptop")]).await;
    assert_eq!(created.status(), 200);
    let created = created.text().await.unwrap();
    let key = new_key_of(&created);
    let again = browser.get("/").await.text().await.unwrap();
    assert!(!again.contains(&key), "a key's secret is shown once");
    let me = app.get("/api/me", Some(&key)).await;
    assert_eq!(me.status(), 200, "the key made in the browser works on the API");

    // Logging out ends the session on the server: the old cookie no longer opens a page.
    let old_cookies = browser.cookies.clone();
    let response = browser.post("/logout", &[("csrf", &csrf_of(&again))]).await;
    assert_eq!(response.status(), 303);
    assert!(!browser.cookies.contains_key("gavel_session"));
    browser.cookies = old_cookies;
    assert_eq!(browser.get("/").await.status(), 303);

    // Logging in again; a wrong password is the same answer as an unknown email.
    let page = browser.get("/login").await.text().await.unwrap();
    let wrong = browser
        .post(
            "/login",
            &[("csrf", &csrf_of(&page)), ("email", "ada@example.com"), ("password", "wrong wrong")],
        )
        .await;
    assert_eq!(wrong.status(), 401);
    let wrong_page = wrong.text().await.unwrap();
    assert!(wrong_page.contains("Invalid email or password."));
    assert!(!wrong_page.contains("wrong wrong"), "a password is never put back in the page");
    let response = browser
        .post(
            "/login",
            &[
                ("csrf", &csrf_of(&page)),
                ("email", "ada@example.com"),
                ("password", "correct horse battery staple"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(browser.get("/").await.status(), 200);
}

/// A chat agent of `owner`'s at a flat price, and a delivered job of `caller`'s on it: the
/// job's id.
async fn delivered_job(app: &TestApp, caller: &TestUser) -> String {
    let body = json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}]});
    let response = app.post_json("/v1/chat/completions", &body, Some(&caller.token)).await;
    let status = response.status();
    let body = json_body(response).await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().trim_start_matches("gen-").to_owned()
}

#[tokio::test]
async fn job_pages_are_their_callers_alone_and_names_render_as_text() {
    let app = app().await;
    let agent = TestAgent::start(Behaviour::Chat {
        content: "<img src=x onerror=alert(1)>".into(),
        prompt_tokens: 3,
        completion_tokens: 3,
    })
    .await;
    let owner = app.signup().await;
    let (_, agent_id) =
        crate::jobs::chat_agent(&app, &owner, "plain", &agent, "1", json!({})).await;

    let mut alice = Session::new(&app);
    alice.sign_up("alice@example.com").await;
    let page = alice.get("/").await.text().await.unwrap();
    let hostile = "<script>alert(1)</script>";
    let response = alice.post("/keys", &[("csrf", &csrf_of(&page)), ("name", hostile)]).await;
    let page = response.text().await.unwrap();
    assert!(!page.contains(hostile), "a key's name is printed as text");
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || page.contains("&lt;script&gt;")
    );
    let key = new_key_of(&page);
    let alice_api = TestUser {
        id: uuid::Uuid::nil(),
        email: "alice@example.com".into(),
        password: String::new(),
        token: key,
    };
    let job = delivered_job(&app, &alice_api).await;

    // Alice reads her transcript; Bob gets the same 404 as for a job that does not exist.
    let transcript = alice.get(&format!("/jobs/{job}")).await;
    assert_eq!(transcript.status(), 200);
    let transcript = transcript.text().await.unwrap();
    for part in ["id=\"candidates\"", "id=\"attempts\"", "id=\"clearing-price\"", "Good result"] {
        assert!(transcript.contains(part), "{part} missing");
    }
    let mut bob = Session::new(&app);
    bob.sign_up("bob@example.com").await;
    assert_eq!(bob.get(&format!("/jobs/{job}")).await.status(), 404);
    assert_eq!(bob.get(&format!("/jobs/{}", uuid::Uuid::now_v7())).await.status(), 404);
    assert_eq!(bob.get("/jobs/not-a-job").await.status(), 404);
    let log = bob.get("/jobs").await.text().await.unwrap();
    assert!(!log.contains(&job), "another user's job is not in the log");
    let log = alice.get("/jobs?status=delivered").await.text().await.unwrap();
    assert!(log.contains(&job));
    assert_eq!(alice.get("/jobs?status=sideways").await.status(), 422);
    // Bob cannot pause an agent that is not his; the agent stays in the market.
    let bob_home = bob.get("/").await.text().await.unwrap();
    let paused =
        bob.post(&format!("/agents/{agent_id}/pause"), &[("csrf", &csrf_of(&bob_home))]).await;
    assert!(matches!(paused.status().as_u16(), 403 | 404), "{}", paused.status());
    let agents =
        registry::agents::list_own_agents(&app.state.db, registry::UserId(owner.id)).await.unwrap();
    assert_eq!(agents[0].state, registry::agents::AgentState::Active);
    let csv = alice.get("/jobs.csv").await.text().await.unwrap();
    assert!(csv.starts_with("id,created_at,role") && csv.contains(&job));

    // Bob cannot rate Alice's job, with or without the form; Alice rates it once.
    let bob_page = bob.get("/").await.text().await.unwrap();
    let rated = bob
        .post(&format!("/jobs/{job}/rating"), &[("csrf", &csrf_of(&bob_page)), ("rating", "up")])
        .await;
    assert_eq!(rated.status(), 404);
    let rated = alice
        .post(
            &format!("/jobs/{job}/rating"),
            &[("csrf", &csrf_of(&transcript)), ("rating", "up"), ("reason", hostile)],
        )
        .await;
    assert_eq!(rated.status(), 303);
    let transcript = alice.get(&format!("/jobs/{job}")).await.text().await.unwrap();
    assert!(transcript.contains("You rated this job <strong>up</strong>"));
    assert!(!transcript.contains(hostile));
    let again = app
        .post_json(
            &format!("/v1/jobs/{job}/feedback"),
            &json!({"rating": "down"}),
            Some(&alice_api.token),
        )
        .await;
    assert_eq!(again.status(), 409);
    assert_eq!(json_body(again).await["error"]["code"], "already_rated");
}

#[tokio::test]
async fn ratings_count_once_per_job_never_for_ones_own_agent_and_within_a_cap_per_caller() {
    let app = app().await;
    let agent = TestAgent::start(Behaviour::Chat {
        content: "fine".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
    })
    .await;
    let owner = app.signup().await;
    let (_, agent_id) =
        crate::jobs::chat_agent(&app, &owner, "rated", &agent, "1", json!({})).await;
    let fan = app.signup().await;
    let critic = app.signup().await;
    let stranger = app.signup().await;

    let rate = |user: &TestUser, job: &str, body: Value| {
        let path = format!("/v1/jobs/{job}/feedback");
        let token = user.token.clone();
        let app = &app;
        async move { app.post_json(&path, &body, Some(&token)).await }
    };
    // Five thumbs up from one fan count as three.
    for _ in 0..5 {
        let job = delivered_job(&app, &fan).await;
        let response = rate(&fan, &job, json!({"rating": "up", "reason": "quick"})).await;
        assert_eq!(response.status(), 201);
        let body = json_body(response).await;
        assert_eq!(body["rating"], "up");
        assert_eq!(body["agent_id"], agent_id.as_str());
    }
    // One down from a critic; the owner's own praise of their agent does not count.
    let job = delivered_job(&app, &critic).await;
    assert_eq!(rate(&critic, &job, json!({"rating": "down"})).await.status(), 201);
    let own = delivered_job(&app, &owner).await;
    assert_eq!(rate(&owner, &own, json!({"rating": "up"})).await.status(), 201);

    // Refusals name what is wrong.
    let job = delivered_job(&app, &stranger).await;
    let bad = rate(&stranger, &job, json!({"rating": "meh"})).await;
    assert_eq!(bad.status(), 422);
    assert_eq!(json_body(bad).await["error"]["param"], "rating");
    let long = rate(&stranger, &job, json!({"rating": "up", "reason": "x".repeat(501)})).await;
    assert_eq!(json_body(long).await["error"]["param"], "reason");
    let unknown = rate(&stranger, &job, json!({"rating": "up", "stars": 5})).await;
    assert_eq!(json_body(unknown).await["error"]["param"], "stars");
    assert_eq!(rate(&fan, &job, json!({"rating": "up"})).await.status(), 404);

    let id = agent_id.parse().unwrap();
    let ratings = registry::feedback::agent_ratings(&app.state.db, id).await.unwrap();
    assert_eq!(
        ratings,
        registry::feedback::AgentRatings { up: 3, down: 1, given: 7 },
        "capped per caller, the owner's own left out"
    );

    // The very next auction scores the agent with them, and says so in its record.
    let next = delivered_job(&app, &stranger).await;
    let job = json_body(app.get(&format!("/v1/jobs/{next}"), Some(&stranger.token)).await).await;
    let auction_id = job["auction"]["id"].as_str().unwrap();
    let record =
        json_body(app.get(&format!("/api/auctions/{auction_id}"), Some(&stranger.token)).await)
            .await;
    let quality = &record["candidates"][0]["quality"];
    let expected = 1.0 + 0.1 * (3.0 - 1.0) / (3.0 + 1.0 + 10.0);
    assert!((quality["rating_factor"].as_f64().unwrap() - expected).abs() < 1e-9, "{quality}");
    assert!(
        record["outcome"]["explanation"].as_str().unwrap().contains("callers' ratings x 1.0143")
    );
}

/// The amounts of a jobs page's rows, and its link to the next page.
fn amounts_and_next(page: &str) -> (Vec<i64>, Option<String>) {
    let amounts = page
        .split("<td class=\"num\">")
        .skip(1)
        .map(|cell| {
            let text = &cell[..cell.find("</td>").unwrap()];
            auction_engine::MicroCredits::parse_decimal(text).unwrap().micros()
        })
        .collect();
    let next = page.find("rel=\"next\" href=\"").map(|at| {
        let rest = &page[at + 17..];
        rest[..rest.find('"').unwrap()].replace("&#38;", "&").replace("&amp;", "&")
    });
    (amounts, next)
}

/// A chat agent `name` at 0.25 credits a call, and its owner.
async fn quarter_credit_agent(app: &TestApp, name: &str) -> (TestAgent, TestUser) {
    let agent = TestAgent::start(Behaviour::Chat {
        content: "ok".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
    })
    .await;
    let owner = app.signup().await;
    crate::jobs::chat_agent(app, &owner, name, &agent, "0.25", json!({})).await;
    (agent, owner)
}

#[tokio::test]
async fn the_jobs_log_pages_add_up_to_the_ledger() {
    let app = app().await;
    let (_agent, _owner) = quarter_credit_agent(&app, "counted").await;
    let mut caller = Session::new(&app);
    caller.sign_up("counter@example.com").await;
    let page = caller.get("/").await.text().await.unwrap();
    let created = caller.post("/keys", &[("csrf", &csrf_of(&page)), ("name", "k")]).await;
    let created = created.text().await.unwrap();
    let user = TestUser {
        id: uuid::Uuid::nil(),
        email: String::new(),
        password: String::new(),
        token: new_key_of(&created),
    };
    for _ in 0..57 {
        delivered_job(&app, &user).await;
    }

    // Page after page, newest first: 50, then 7, every job once.
    let mut path = Some("/jobs".to_owned());
    let (mut all, mut sizes) = (Vec::new(), Vec::new());
    while let Some(next) = path {
        let page = caller.get(&next).await.text().await.unwrap();
        let (amounts, more) = amounts_and_next(&page);
        sizes.push(amounts.len());
        all.extend(amounts);
        path = more;
    }
    assert_eq!(sizes, vec![50, 7]);
    let email = registry::Email::parse("counter@example.com").unwrap();
    let id =
        registry::find_credentials_by_email(&app.state.db, &email).await.unwrap().unwrap().user.id;
    let entries = registry::ledger::entries(&app.state.db, id, None, 200).await.unwrap().entries;
    let captured: i64 =
        entries.iter().filter(|e| e.kind == "capture").map(|e| e.amount.micros()).sum();
    assert_eq!(all.iter().sum::<i64>(), captured, "the pages sum to the ledger");
    assert_eq!(all.len(), 57);

    // The front page's total is the same sum, per day (the default) and per hour.
    for path in ["/", "/?by=day", "/?by=hour"] {
        let front = caller.get(path).await.text().await.unwrap();
        let at = front.find("id=\"spent-total\">").unwrap() + 17;
        let shown = &front[at..at + front[at..].find('<').unwrap()];
        let shown = auction_engine::MicroCredits::parse_decimal(shown).unwrap().micros();
        assert_eq!(shown, -captured, "{path}");
    }
    let hourly = caller.get("/?by=hour").await.text().await.unwrap();
    assert!(hourly.contains("per hour (UTC, last 48 hours)"), "{hourly}");
    assert_eq!(caller.get("/?by=week").await.status(), 400, "an unknown period is refused");
}

/// Reads the figure printed in the element `id` of `page`.
fn figure(page: &str, id: &str) -> i64 {
    let marker = format!("id=\"{id}\">");
    let at = page.find(&marker).unwrap() + marker.len();
    let text = &page[at..at + page[at..].find('<').unwrap()];
    auction_engine::MicroCredits::parse_decimal(text).unwrap().micros()
}

/// The operator's page is for the accounts in `admin.emails` alone (anyone else gets a 404
/// and no link to it), and its volume and fees are the ledger's sums.
#[tokio::test]
async fn the_operator_page_is_for_operators_and_its_money_is_the_ledgers() {
    let app = spawn_app_with(|s| {
        s.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
        // Listed as typed, in capitals: emails compare as parsed.
        s.admin.emails = vec!["Boss@Example.com".into()];
    })
    .await;
    let (_agent, owner) = quarter_credit_agent(&app, "operated").await;
    let caller = app.signup().await;
    for _ in 0..3 {
        delivered_job(&app, &caller).await;
    }
    // A job no agent can take: an auction with no fill.
    let body = json!({"category": "ocr", "input": {"x": 1}});
    let refused = app.post_json("/v1/jobs", &body, Some(&caller.token)).await;
    assert_eq!(refused.status(), 422);

    let mut boss = Session::new(&app);
    boss.sign_up("boss@example.com").await;
    let response = boss.get("/operator").await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();

    // From the ledger: the platform's capture entries, and every wallet's charges (the
    // caller's for its calls, the owner's win fees net of its earnings).
    let db = &app.state.db;
    let captures = async |account: uuid::Uuid, sign: i64| -> i64 {
        let page = registry::ledger::entries(db, registry::UserId(account), None, 200).await;
        let entries = page.unwrap().entries;
        let captured = entries.iter().filter(|e| e.kind == "capture");
        captured.map(|e| e.amount.micros()).filter(|m| m.signum() == sign).sum()
    };
    let fees = captures(registry::ledger::PLATFORM_REVENUE_ACCOUNT, 1).await;
    let paid = captures(caller.id, -1).await + captures(owner.id, -1).await;
    assert!(fees > 0 && paid < 0);
    assert_eq!(figure(&page, "fees-total"), fees, "{page}");
    assert_eq!(figure(&page, "volume-total"), -paid, "{page}");
    assert!(page.contains("<th scope=\"row\">Last hour</th><td class=\"num\">4</td>"), "{page}");
    assert!(page.contains("delivered 3"), "{page}");
    assert!(page.contains("<td class=\"num\">1</td><td class=\"num\">25.0%</td>"), "{page}");
    assert!(page.contains("<td>chat</td><td class=\"num\">1</td>"), "{page}");
    let front = boss.get("/").await.text().await.unwrap();
    assert!(front.contains("href=\"/operator\""));

    let mut stranger = Session::new(&app);
    stranger.sign_up("not-the-boss@example.com").await;
    assert_eq!(stranger.get("/operator").await.status(), 404);
    let front = stranger.get("/").await.text().await.unwrap();
    assert!(!front.contains("href=\"/operator\""));
}

/// An owner registers an agent in the browser: a refusal (the egress guard's, a bad price) is
/// shown at its field with what was typed kept; a registered agent is on `/agents` and wins
/// the next auction; a form without the session's token is refused.
#[tokio::test]
async fn an_agent_registered_through_the_form_is_vetted_field_by_field_and_serves() {
    let app = app().await;
    let agent = TestAgent::start(Behaviour::Chat {
        content: "from the form".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
    })
    .await;
    let mut owner = Session::new(&app);
    owner.sign_up("former@example.com").await;
    let page = owner.get("/agents/new").await.text().await.unwrap();
    let csrf = csrf_of(&page);
    let endpoint = format!("{}/v1", agent.url);
    let form = |endpoint: &str, per_call: &str| -> Vec<(String, String)> {
        [
            ("csrf", csrf.as_str()),
            ("kind", "openai-chat"),
            ("name", "formed"),
            ("description", "<b>typed</b>"),
            ("categories", "chat"),
            ("endpoint", endpoint),
            ("upstream_model", "small-1"),
            ("per_call", per_call),
            ("per_million_input_tokens", "0"),
            ("per_million_output_tokens", "0"),
            ("visibility", "public"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    };
    let post = async |owner: &mut Session<'_>, fields: Vec<(String, String)>| {
        let pairs: Vec<(&str, &str)> =
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        owner.post("/agents/new", &pairs).await
    };

    // The cloud metadata address: the egress guard refuses it, at the endpoint field.
    let refused = post(&mut owner, form("http://169.254.169.254/latest/meta-data", "0.5")).await;
    assert_eq!(refused.status(), 422);
    let page = refused.text().await.unwrap();
    assert!(page.contains("id=\"endpoint-error\""), "{page}");
    assert!(page.contains("aria-describedby=\"endpoint-error\""), "{page}");
    assert!(!page.contains("id=\"per_call-error\""), "{page}");
    assert!(page.contains("value=\"&#60;b&#62;typed&#60;/b&#62;\""), "kept, as text: {page}");

    // A price that is not a number: at its field.
    let refused = post(&mut owner, form(&endpoint, "cheap")).await;
    assert_eq!(refused.status(), 422);
    let page = refused.text().await.unwrap();
    assert!(page.contains("id=\"per_call-error\""), "{page}");
    assert!(!page.contains("id=\"endpoint-error\""), "{page}");

    // Without the session's token: refused, nothing registered.
    let mut forged = form(&endpoint, "0.5");
    forged[0].1 = "forged".into();
    assert_eq!(post(&mut owner, forged).await.status(), 403);
    let listed = owner.get("/agents").await.text().await.unwrap();
    assert!(!listed.contains("/formed"), "{listed}");

    let created = post(&mut owner, form(&endpoint, "0.5")).await;
    assert_eq!(created.status(), 303);
    assert_eq!(created.headers()["location"], "/agents");
    let listed = owner.get("/agents").await.text().await.unwrap();
    assert!(listed.contains("/formed"), "{listed}");

    let caller = app.signup().await;
    let body = json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}]});
    let response = app.post_json("/v1/chat/completions", &body, Some(&caller.token)).await;
    let answer = json_body(response).await;
    assert_eq!(answer["choices"][0]["message"]["content"], "from the form", "{answer}");

    // A new price through the API: the page's history shows both sheets, newest first.
    let page = owner.get("/").await.text().await.unwrap();
    let created = owner.post("/keys", &[("csrf", &csrf_of(&page)), ("name", "k")]).await;
    let key = new_key_of(&created.text().await.unwrap());
    let email = registry::Email::parse("former@example.com").unwrap();
    let user =
        registry::find_credentials_by_email(&app.state.db, &email).await.unwrap().unwrap().user.id;
    let own = registry::agents::list_own_agents(&app.state.db, user).await.unwrap();
    let pricing = json!({"pricing": {"per_call": "0.75", "per_million_input_tokens": "0",
        "per_million_output_tokens": "0"}});
    let patched = app
        .client
        .patch(app.url(&format!("/api/agents/{}", own[0].id)))
        .bearer_auth(&key)
        .json(&pricing)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let listed = owner.get("/agents").await.text().await.unwrap();
    let history = &listed[listed.find("class=\"price-history\"").unwrap()..];
    let (v2, v1) = (history.find(">v2<").unwrap(), history.find(">v1<").unwrap());
    assert!(v2 < v1, "newest first: {history}");
    assert!(history[v2..v1].contains(">0.75<"), "{history}");
    assert!(history[v1..].contains(">0.5<"), "{history}");
}

/// An owner edits an agent in the browser: the form shows what the agent has now, and no name
/// or kind to change; a refusal (the egress guard's) is shown at its field and changes
/// nothing; a saved price is the next auction's (a new price version); a blank optional field
/// clears; another owner's edit page is a 404, for a look and for a post alike.
#[tokio::test]
async fn an_agent_edited_through_the_form_changes_what_the_next_auction_sees() {
    let app = app().await;
    let agent = TestAgent::start(Behaviour::Echo).await;
    let mut owner = Session::new(&app);
    owner.sign_up("editor@example.com").await;
    let csrf = csrf_of(&owner.get("/agents/new").await.text().await.unwrap());
    let endpoint = agent.url.clone();
    let registered = owner
        .post(
            "/agents/new",
            &[
                ("csrf", &csrf),
                ("kind", "json"),
                ("name", "editable"),
                ("categories", "ocr"),
                ("endpoint", &endpoint),
                ("bid_url", ""),
                ("per_call", "0.5"),
                ("per_million_input_tokens", "0"),
                ("per_million_output_tokens", "0"),
                ("max_latency_ms", "9000"),
                ("visibility", "public"),
            ],
        )
        .await;
    assert_eq!(registered.status(), 303);
    let listed = owner.get("/agents").await.text().await.unwrap();
    let end = listed.find("/edit\"").expect("an edit link") + 5;
    let edit_path = listed[listed[..end].rfind("/agents/").unwrap()..end].to_owned();

    let page = owner.get(&edit_path).await.text().await.unwrap();
    assert!(
        page.contains(&format!(
            "id=\"endpoint\" name=\"endpoint\" type=\"text\" value=\"{endpoint}/\""
        )),
        "{page}"
    );
    assert!(
        page.contains("id=\"per_call\" name=\"per_call\" type=\"text\" value=\"0.5\""),
        "{page}"
    );
    assert!(page.contains("value=\"9000\""), "{page}");
    assert!(!page.contains("id=\"name\"") && !page.contains("id=\"kind\""), "{page}");
    assert!(page.contains("/editable</code>"), "{page}");

    let edit = |endpoint: &str, per_call: &str| -> Vec<(String, String)> {
        [
            ("csrf", csrf.as_str()),
            ("description", "now dearer"),
            ("categories", "ocr"),
            ("endpoint", endpoint),
            ("upstream_model", ""),
            ("bid_url", ""),
            ("per_call", per_call),
            ("per_million_input_tokens", "0"),
            ("per_million_output_tokens", "0"),
            ("max_latency_ms", ""),
            ("visibility", "public"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    };
    let post = async |session: &mut Session<'_>, path: &str, fields: Vec<(String, String)>| {
        let pairs: Vec<(&str, &str)> =
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        session.post(path, &pairs).await
    };
    let email = registry::Email::parse("editor@example.com").unwrap();
    let user =
        registry::find_credentials_by_email(&app.state.db, &email).await.unwrap().unwrap().user.id;
    let stored =
        async || registry::agents::list_own_agents(&app.state.db, user).await.unwrap().remove(0);

    // The cloud metadata address: refused at the endpoint field, the typed price kept, and
    // nothing changed.
    let refused =
        post(&mut owner, &edit_path, edit("http://169.254.169.254/latest/meta-data", "0.75")).await;
    assert_eq!(refused.status(), 422);
    let page = refused.text().await.unwrap();
    assert!(page.contains("id=\"endpoint-error\""), "{page}");
    assert!(page.contains("value=\"0.75\""), "{page}");
    let before = stored().await;
    // Stored (and shown) in canonical form, with the path's slash.
    assert_eq!((before.price_version, before.endpoint), (1, format!("{endpoint}/")));

    // Without the session's token: refused.
    let mut forged = edit(&endpoint, "0.75");
    forged[0].1 = "forged".into();
    assert_eq!(post(&mut owner, &edit_path, forged).await.status(), 403);
    assert_eq!(stored().await.price_version, 1);

    // Another owner: a 404 to look at and to post to, with a valid token of their own.
    let mut stranger = Session::new(&app);
    stranger.sign_up("stranger@example.com").await;
    assert_eq!(stranger.get(&edit_path).await.status(), 404);
    let theirs = csrf_of(&stranger.get("/agents/new").await.text().await.unwrap());
    let mut hijack = edit("http://127.0.0.1:9/", "0");
    hijack[0].1 = theirs;
    assert_eq!(post(&mut stranger, &edit_path, hijack).await.status(), 404);
    assert_eq!(stored().await.price_version, 1);

    let saved = post(&mut owner, &edit_path, edit(&endpoint, "0.75")).await;
    assert_eq!(saved.status(), 303);
    assert_eq!(saved.headers()["location"], "/agents");
    let after = stored().await;
    assert_eq!(after.price_version, 2);
    assert_eq!(after.description, "now dearer");
    assert_eq!(after.max_latency_ms, None, "a blank optional field clears");
    let listed = owner.get("/agents").await.text().await.unwrap();
    assert!(listed.contains(">v2<") && listed.contains(">0.75<"), "{listed}");

    // Saved again unchanged: no new price version.
    assert_eq!(post(&mut owner, &edit_path, edit(&endpoint, "0.75")).await.status(), 303);
    assert_eq!(stored().await.price_version, 2);

    let caller = app.signup().await;
    let job = json!({"category": "ocr", "input": {"page": 1}});
    let answer = json_body(app.post_json("/v1/jobs", &job, Some(&caller.token)).await).await;
    assert_eq!(answer["auction"]["clearing_price"], "0.75", "{answer}");
}

/// An owner's agents page counts the auctions each of its agents entered and won, per
/// category and UTC day, from the rollup written with each auction's record: the figures equal
/// what the job records say, and each owner sees only its own agents.
#[tokio::test]
async fn an_owners_auction_figures_equal_the_job_records() {
    let app = app().await;
    let (_cheap, owner) = quarter_credit_agent(&app, "cheap").await;
    let dear = TestAgent::start(Behaviour::Chat {
        content: "dear".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
    })
    .await;
    let rival = app.signup().await;
    crate::jobs::chat_agent(&app, &rival, "dear", &dear, "2", json!({})).await;
    let caller = app.signup().await;
    let body = json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        let response = app.post_json("/v1/chat/completions", &body, Some(&caller.token)).await;
        assert_eq!(response.status(), 200);
    }
    let backend = app.state.db.get_database_backend();
    let prices = app
        .state
        .db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            "SELECT clearing_price FROM jobs WHERE caller_id = $1",
            [caller.id.into()],
        ))
        .await
        .unwrap();
    let total: i64 =
        prices.iter().map(|row| row.try_get::<i64>("", "clearing_price").unwrap()).sum();
    assert_eq!(prices.len(), 3);
    let average = auction_engine::MicroCredits::from_micros(total / 3).to_string();

    let page_of = async |user: &TestUser| {
        let mut session = Session::new(&app);
        let csrf = csrf_of(&session.get("/login").await.text().await.unwrap());
        let login = session
            .post(
                "/login",
                &[("csrf", &csrf), ("email", &user.email), ("password", &user.password)],
            )
            .await;
        assert_eq!(login.status(), 303);
        session.get("/agents").await.text().await.unwrap()
    };
    let mine = page_of(&owner).await;
    let cheap = &mine[mine.find("/cheap: by category</caption>").expect("cheap's table")..];
    let row = format!(
        "<td>chat</td><td class=\"num\">3</td><td class=\"num\">3</td>\
         <td class=\"num\">100.0%</td><td class=\"num\">0.25</td><td class=\"num\">{average}</td>"
    );
    assert!(cheap.contains(&row), "{row} in {cheap}");
    assert!(!mine.contains("/dear: by category"), "another owner's agent: {mine}");
    let today = chrono::Utc::now().date_naive().to_string();
    let day = format!("<td>{today}</td><td class=\"num\">3</td><td class=\"num\">3</td>");
    assert!(cheap.contains(&day), "{day} in {cheap}");
    // How it served: 3 attempts, 3 served, none as fallback, no failures; a latency bucket and
    // a reputation score stated.
    let service = &cheap[cheap.find("/cheap: service by day</caption>").expect("service")..];
    let row = format!(
        "<td>{today}</td><td class=\"num\">3</td><td class=\"num\">3</td><td class=\"num\">0</td>\
         <td class=\"num\">0</td><td class=\"num\">0</td><td class=\"num\">0</td><td class=\"num\">&#60;= "
    );
    assert!(service.contains(&row), "{row} in {service}");
    let today_row = &service[service.find(&row).unwrap()..];
    let today_row = &today_row[..today_row.find("</tr>").unwrap()];
    assert!(today_row.contains("<td class=\"num\">0."), "a reputation score: {today_row}");

    let theirs = page_of(&rival).await;
    let dear = &theirs[theirs.find("/dear: by category</caption>").expect("dear's table")..];
    let row = "<td>chat</td><td class=\"num\">3</td><td class=\"num\">0</td>\
               <td class=\"num\">0.0%</td><td class=\"num\">-</td><td class=\"num\">-</td>";
    assert!(dear.contains(row), "{row} in {dear}");
}

/// The dashboard shows each API key's use over the last 14 UTC days: the jobs run with it,
/// the delivered ones and what they cost, equal to the jobs' own rows.
#[tokio::test]
async fn each_keys_usage_on_the_dashboard_equals_its_jobs() {
    let app = app().await;
    let (_agent, _owner) = quarter_credit_agent(&app, "cheap").await;
    let mut caller = Session::new(&app);
    caller.sign_up("keyed@example.com").await;
    let mut keys = Vec::new();
    for name in ["ci", "laptop"] {
        let page = caller.get("/").await.text().await.unwrap();
        let created = caller.post("/keys", &[("csrf", &csrf_of(&page)), ("name", name)]).await;
        keys.push(new_key_of(&created.text().await.unwrap()));
    }
    let body = json!({"model": "auction", "messages": [{"role": "user", "content": "hi"}]});
    for (key, jobs) in keys.iter().zip([2, 1]) {
        for _ in 0..jobs {
            let response = app.post_json("/v1/chat/completions", &body, Some(key)).await;
            assert_eq!(response.status(), 200);
        }
    }
    let email = registry::Email::parse("keyed@example.com").unwrap();
    let user =
        registry::find_credentials_by_email(&app.state.db, &email).await.unwrap().unwrap().user.id;
    let rows = app
        .state
        .db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            app.state.db.get_database_backend(),
            "SELECT k.name, CAST(COUNT(*) AS BIGINT) AS jobs, \
             CAST(SUM(j.total_cost) AS BIGINT) AS spent \
             FROM jobs j JOIN api_keys k ON k.id = j.api_key_id WHERE k.user_id = $1 \
             GROUP BY k.name ORDER BY k.name",
            [user.0.into()],
        ))
        .await
        .unwrap();
    let recorded: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "name").unwrap(),
                r.try_get("", "jobs").unwrap(),
                r.try_get("", "spent").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        recorded.iter().map(|r| (r.0.as_str(), r.1)).collect::<Vec<_>>(),
        [("ci", 2), ("laptop", 1)]
    );
    let page = caller.get("/").await.text().await.unwrap();
    let table = &page[page.find("id=\"keys\"").unwrap()..];
    for (name, jobs, spent) in &recorded {
        assert!(*spent > 0);
        let row = &table[table.find(&format!("<td>{name}</td>")).unwrap()..];
        let row = &row[..row.find("</tr>").unwrap()];
        let spent = auction_engine::MicroCredits::from_micros(*spent);
        let figures = format!(
            "<td class=\"num\">{jobs}</td><td class=\"num\">{jobs}</td><td class=\"num\">{spent}</td>"
        );
        assert!(row.contains(&figures), "{figures} in {row}");
    }
    let today = chrono::Utc::now().date_naive().to_string();
    assert!(
        page.contains(&format!("<td>{today}</td><td>ci</td><td class=\"num\">2</td>")),
        "{page}"
    );
}

/// The front page's totals and its rows by day and by hour equal the ledger's captures across
/// a UTC midnight: a capture a millisecond before midnight is yesterday's (and the 23:00
/// hour's), one at midnight today's. On Postgres, where the database is the authority, so the
/// captures can be placed at those instants through the ledger itself.
#[tokio::test]
async fn the_front_pages_days_and_hours_split_at_utc_midnight_as_the_ledger_does() {
    use auction_engine::MicroCredits;
    use registry::ledger::{self, Capture, HoldRequest, Payee, Payout};

    let Some(app) = crate::helpers::spawn_app_on_postgres().await else { return };
    let (mut caller, mut owner) = (Session::new(&app), Session::new(&app));
    caller.sign_up("night-caller@example.com").await;
    owner.sign_up("night-owner@example.com").await;
    let id_of = async |email: &str| {
        let email = registry::Email::parse(email).unwrap();
        registry::find_credentials_by_email(&app.state.db, &email).await.unwrap().unwrap().user.id
    };
    let (payer, payee) =
        (id_of("night-caller@example.com").await, id_of("night-owner@example.com").await);
    let credits = |n: i64| MicroCredits::from_credits(n).unwrap();
    let midnight = chrono::Utc::now().date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let before = midnight - chrono::Duration::milliseconds(1);
    app.state.bank.ensure_monthly_grant(payer, credits(100), before).await.unwrap();
    for (when, charge) in [(before, 3), (midnight, 5)] {
        let job_id = uuid::Uuid::now_v7();
        let hold = HoldRequest {
            job_id,
            payer,
            amount: credits(charge),
            expires_at: when + chrono::Duration::minutes(15),
            from_line: None,
        };
        ledger::place_hold(&app.state.db, hold, uuid::Uuid::now_v7(), when).await.unwrap();
        let capture = Capture {
            job_id,
            charge: credits(charge),
            payouts: vec![
                Payout { payee: Payee::User(payee), amount: credits(charge - 1) },
                Payout { payee: Payee::PlatformRevenue, amount: credits(1) },
            ],
            memo: None,
        };
        ledger::capture(&app.state.db, capture, when).await.unwrap();
    }
    let captured = async |user: registry::UserId| -> i64 {
        let entries = ledger::entries(&app.state.db, user, None, 200).await.unwrap();
        entries.entries.iter().filter(|e| e.kind == "capture").map(|e| e.amount.micros()).sum()
    };
    let (spent, earned) = (-captured(payer).await, captured(payee).await);
    assert_eq!((spent, earned), (8_000_000, 6_000_000));

    let yesterday = before.date_naive().to_string();
    let today = midnight.date_naive().to_string();
    let row = |label: &str, spent: i64, earned: i64| {
        format!(
            "<tr><td>{label}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            MicroCredits::from_micros(spent),
            MicroCredits::from_micros(earned)
        )
    };
    let page = caller.get("/").await.text().await.unwrap();
    assert!(page.contains(&format!("id=\"spent-total\">{}<", MicroCredits::from_micros(spent))));
    assert!(page.contains(&row(&yesterday, 3_000_000, 0)), "{page}");
    assert!(page.contains(&row(&today, 5_000_000, 0)), "{page}");
    let page = caller.get("/?by=hour").await.text().await.unwrap();
    assert!(page.contains(&row(&format!("{yesterday} 23:00"), 3_000_000, 0)), "{page}");
    assert!(page.contains(&row(&format!("{today} 00:00"), 5_000_000, 0)), "{page}");
    let page = owner.get("/").await.text().await.unwrap();
    assert!(page.contains(&format!("id=\"earned-total\">{}<", MicroCredits::from_micros(earned))));
    assert!(page.contains(&row(&yesterday, 0, 2_000_000)), "{page}");
    assert!(page.contains(&row(&today, 0, 4_000_000)), "{page}");
}

/// The marketplace lists public agents (never a private one) in the API's order, and its
/// "try it" box runs a `recommend` auction as the visitor: the shortlist, the call fee
/// charged, the transcript one link away. Refusals are shown in the box.
#[tokio::test]
async fn the_marketplace_lists_public_agents_and_try_it_recommends() {
    let app = app().await;
    let (_cheap, owner) = quarter_credit_agent(&app, "cheap").await;
    let dear = TestAgent::start(Behaviour::Chat {
        content: "dear".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
    })
    .await;
    crate::jobs::chat_agent(&app, &owner, "dear", &dear, "2", json!({})).await;
    crate::jobs::chat_agent(
        &app,
        &owner,
        "hidden",
        &dear,
        "0.01",
        json!({"visibility": "private"}),
    )
    .await;

    let mut visitor = Session::new(&app);
    visitor.sign_up("shopper@example.com").await;
    let page = visitor.get("/market?category=chat&sort=price").await.text().await.unwrap();
    let (cheap_at, dear_at) = (page.find("/cheap<").unwrap(), page.find("/dear<").unwrap());
    assert!(cheap_at < dear_at, "by price: {page}");
    assert!(!page.contains("/hidden<"), "a private agent is not listed: {page}");
    assert_eq!(visitor.get("/market?sort=cheapest").await.status(), 422);

    let csrf = csrf_of(&page);
    let form = [("csrf", csrf.as_str()), ("category", "chat"), ("prompt", "Summarise <this>")];
    let tried = visitor.post("/market/try", &form).await;
    assert_eq!(tried.status(), 200);
    let page = tried.text().await.unwrap();
    let shortlist = &page[page.find("id=\"shortlist\"").expect(&page)..];
    let (cheap_at, dear_at) =
        (shortlist.find("/cheap<").unwrap(), shortlist.find("/dear<").unwrap());
    assert!(cheap_at < dear_at, "{shortlist}");
    assert!(page.contains("Summarise &#60;this&#62;"), "the prompt is kept, as text");
    let at = page.find("href=\"/jobs/").unwrap() + 12;
    let job_id = &page[at..at + 36];
    assert_eq!(visitor.get(&format!("/jobs/{job_id}")).await.status(), 200);
    // A recommendation costs the call fee alone: 1 credit of the 100 granted.
    let email = registry::Email::parse("shopper@example.com").unwrap();
    let user =
        registry::find_credentials_by_email(&app.state.db, &email).await.unwrap().unwrap().user.id;
    let balance = registry::ledger::balance(&app.state.db, user).await.unwrap();
    assert_eq!(balance.balance.to_string(), "99");

    let empty = [("csrf", csrf.as_str()), ("category", "chat"), ("prompt", "  ")];
    let refused = visitor.post("/market/try", &empty).await;
    assert_eq!(refused.status(), 422);
    assert!(refused.text().await.unwrap().contains("id=\"try-error\""));
    let none = [("csrf", csrf.as_str()), ("category", "ocr"), ("prompt", "read this")];
    let refused = visitor.post("/market/try", &none).await;
    assert_eq!(refused.status(), 422, "no agent serves ocr");
    let forged = [("csrf", "forged"), ("category", "chat"), ("prompt", "hi")];
    assert_eq!(visitor.post("/market/try", &forged).await.status(), 403);
}
