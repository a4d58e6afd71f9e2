//! `gavel demo`: the server plus three sample agents on loopback, registered and funded, so a
//! newcomer sees a real auction at once.
//!
//! The agents are small actix-web servers in this process: `swift-chat` (cheap, fast),
//! `deep-chat` (dearer, slower, more reliable on paper) and `paper-ocr` (a JSON OCR agent).
//! They answer from templates; what is real is everything Gavel does around them: the
//! auction, the hold, dispatch through the SSRF guard (opened to 127.0.0.0/8 for the demo
//! only), settlement, the audit record.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use auction_engine::MicroCredits;
use chrono::Utc;
use registry::agents::{self, RawAgentPatch, RawAgentSpec, RawPricing};
use registry::ledger::Balance;
use registry::{DatabaseConnection, Email, Handle, KeyName, NewUser, Password, UserId};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::configuration::ResolvedSettings;
use crate::egress::SystemLookup;
use crate::startup::{Application, connect_and_migrate, listen, write_private};

/// One sample chat agent's personality.
#[derive(Clone)]
struct ChatPersona {
    name: &'static str,
    delay: Duration,
    style: &'static str,
}

/// Runs the demo until interrupted.
pub async fn run(mut settings: ResolvedSettings) -> anyhow::Result<()> {
    // A busy port is reported before the demo writes anything.
    let listener = listen(settings.bind)?;
    settings.raw.egress.allow_cidrs = vec!["127.0.0.0/8".into()];
    // Before the sample data is written: a second demo on the same file stops here. The server
    // started below shares this lock.
    let _data_lock = crate::data_lock::lock_database(&settings.database_url)?;
    let db = connect_and_migrate(&settings).await?;

    let swift = start_chat_agent(ChatPersona {
        name: "swift-chat",
        delay: Duration::from_millis(20),
        style: "Quick answer",
    })?;
    let deep = start_chat_agent(ChatPersona {
        name: "deep-chat",
        delay: Duration::from_millis(300),
        style: "Considered answer",
    })?;
    let ocr = start_ocr_agent()?;

    let acme = ensure_user(&db, "acme@example.com", "acme").await?;
    let globex = ensure_user(&db, "globex@example.com", "globex").await?;
    let caller = ensure_user(&db, "demo@example.com", "demo").await?;
    let grant = settings.monthly_grant;
    registry::ledger::ensure_monthly_grant(&db, caller, grant, Utc::now()).await?;
    for owner in [acme, globex] {
        registry::ledger::ensure_monthly_grant(&db, owner, grant, Utc::now()).await?;
    }

    ensure_agent(
        &db,
        acme,
        "swift-chat",
        "openai-chat",
        "chat",
        &format!("{swift}/v1"),
        ("0.001", "0.5", "2"),
        Some(2_000),
    )
    .await?;
    ensure_agent(
        &db,
        globex,
        "deep-chat",
        "openai-chat",
        "chat",
        &format!("{deep}/v1"),
        ("0.002", "1", "4"),
        Some(10_000),
    )
    .await?;
    ensure_agent(
        &db,
        globex,
        "paper-ocr",
        "json",
        "ocr",
        &format!("{ocr}/ocr"),
        ("0.5", "0", "0"),
        Some(5_000),
    )
    .await?;
    let key = demo_key(&db, caller, &settings.raw.server.data_dir).await?;
    let balance = registry::ledger::balance(&db, caller).await?;
    drop(db);

    let app = Application::build_on(settings.clone(), listener, Arc::new(SystemLookup)).await?;
    let base = format!("http://{}:{}", settings.bind.ip(), app.port());
    print_quickstart(&Quickstart {
        base: &base,
        key: &key,
        balance: &balance,
        call_fee: settings.call_fee,
        data_dir: &settings.raw.server.data_dir,
    });
    app.run_until_stopped().await?;
    Ok(())
}

/// The demo caller's API key: the one kept in `data_dir/demo_api_key` from an earlier run
/// while it still works, else a new one (kept there, mode 0600), so a restart does not mint
/// keys without end.
async fn demo_key(
    db: &DatabaseConnection,
    caller: UserId,
    data_dir: &Path,
) -> anyhow::Result<String> {
    let path = data_dir.join("demo_api_key");
    if let Ok(kept) = std::fs::read_to_string(&path) {
        let kept = kept.trim().to_owned();
        let owner = registry::authenticate_api_key(db, &kept, Utc::now()).await?;
        if owner.is_some_and(|owner| owner.user_id == caller) {
            return Ok(kept);
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("could not replace {}", path.display()))?;
    }
    let name = KeyName::parse("demo")?;
    let key = registry::create_api_key(db, caller, name, Uuid::now_v7(), Utc::now()).await?.secret;
    write_private(&path, key.as_bytes())?;
    Ok(key)
}

/// What the printed quickstart needs.
struct Quickstart<'a> {
    base: &'a str,
    key: &'a str,
    balance: &'a Balance,
    call_fee: MicroCredits,
    data_dir: &'a Path,
}

/// Prints what to type, flush left so that every block runs when pasted as it is (the demo's
/// test runs each block).
#[expect(clippy::print_stdout, reason = "the demo's whole point is to show the user what to type")]
fn print_quickstart(q: &Quickstart<'_>) {
    let Quickstart { base, key, balance, call_fee, data_dir } = q;
    let ask = r#"{"model":"auction","messages":[{"role":"user","content":"Hello!"}],"auction":{"max_price":"0.01"}}"#;
    println!(
        r#"
Gavel demo is running at {base}  (Ctrl-C to stop)
Sample agents: acme/swift-chat and globex/deep-chat (chat), globex/paper-ocr (ocr).
Your API key: {key}
It holds {available} credits available ({held} held). Each auction call costs the winner's
price plus a {call_fee}-credit call fee. Data lives in {data_dir}; delete it to start over.

1. An auction through the OpenAI wire format (paste into a shell):

curl -s {base}/v1/chat/completions -H "authorization: Bearer {key}" -H 'content-type: application/json' -d '{ask}'

2. The same with the official OpenAI Python SDK. Install it once (paste into a shell):

python3 -m venv gavel-venv && gavel-venv/bin/pip install --quiet openai

then run gavel-venv/bin/python3 and paste:

from openai import OpenAI
client = OpenAI(base_url="{base}/v1", api_key="{key}")
reply = client.chat.completions.create(model="auction", messages=[{{"role": "user", "content": "Hello!"}}], extra_body={{"auction": {{"max_price": "0.01"}}}})
print(reply.model, "said:", reply.choices[0].message.content, "| cost:", reply.usage.cost, "credits")

3. A JSON job, OCR (paste into a shell):

curl -s {base}/v1/jobs -H "authorization: Bearer {key}" -H 'content-type: application/json' -d '{{"category":"ocr","input":{{"image_url":"https://example.com/scan.png"}}}}'

4. Why did the winner win? Run an auction, then read its record (paste into a shell):

AUCTION=$(curl -s -o /dev/null -w '%header{{x-gavel-auction-id}}' {base}/v1/chat/completions -H "authorization: Bearer {key}" -H 'content-type: application/json' -d '{ask}')
curl -s {base}/api/auctions/$AUCTION -H "authorization: Bearer {key}"
"#,
        available = balance.available,
        held = balance.held,
        data_dir = data_dir.display(),
    );
}

async fn ensure_user(db: &DatabaseConnection, email: &str, handle: &str) -> anyhow::Result<UserId> {
    let email = Email::parse(email)?;
    if let Some(existing) = registry::find_credentials_by_email(db, &email).await? {
        return Ok(existing.user.id);
    }
    // Demo accounts get a random password: they are used through API keys.
    let password =
        Password::parse(format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()))?;
    let password_hash = registry::hash_password(&password)?;
    let new_user = NewUser { email, handle: Some(Handle::parse(handle)?), password_hash };
    Ok(registry::create_user(db, new_user, Uuid::now_v7(), Utc::now()).await?.id)
}

/// Registers a sample agent, or points the existing one at this run's port.
#[expect(clippy::too_many_arguments, reason = "one sample agent's description, spelled out")]
async fn ensure_agent(
    db: &DatabaseConnection,
    owner: UserId,
    name: &str,
    kind: &str,
    category: &str,
    endpoint: &str,
    prices: (&str, &str, &str),
    max_latency_ms: Option<i64>,
) -> anyhow::Result<()> {
    let existing = agents::list_own_agents(db, owner).await?.into_iter().find(|a| a.name == name);
    if let Some(agent) = existing {
        let patch = RawAgentPatch {
            endpoint: Some(endpoint.to_owned()),
            status: Some("active".into()),
            ..RawAgentPatch::default()
        };
        agents::update_agent(db, owner, agent.id, patch, Utc::now()).await?;
        return Ok(());
    }
    let spec = agents::AgentSpec::parse(RawAgentSpec {
        name: Some(name.to_owned()),
        description: Some(format!("Gavel demo agent ({name})")),
        kind: Some(kind.to_owned()),
        categories: Some(vec![category.to_owned()]),
        endpoint: Some(endpoint.to_owned()),
        upstream_model: (kind == "openai-chat").then(|| format!("{name}-v1")),
        max_latency_ms,
        tags: Some(vec!["demo".into()]),
        pricing: Some(RawPricing {
            per_call: Some(prices.0.into()),
            per_million_input_tokens: Some(prices.1.into()),
            per_million_output_tokens: Some(prices.2.into()),
        }),
        ..RawAgentSpec::default()
    })?;
    agents::register_agent(db, owner, spec, Uuid::now_v7(), Utc::now())
        .await
        .context("registering a demo agent")?;
    Ok(())
}

fn bind_loopback() -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

/// A sample OpenAI-compatible chat agent (streaming too).
fn start_chat_agent(persona: ChatPersona) -> anyhow::Result<String> {
    let (listener, url) = bind_loopback()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(persona.clone()))
            .route("/v1/chat/completions", web::post().to(chat_completion))
    })
    .workers(1)
    .listen(listener)?
    .run();
    tokio::spawn(server);
    Ok(url)
}

async fn chat_completion(persona: web::Data<ChatPersona>, body: web::Json<Value>) -> HttpResponse {
    tokio::time::sleep(persona.delay).await;
    let question = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let answer = format!(
        "{} from {}: you said \"{}\".",
        persona.style,
        persona.name,
        question.chars().take(200).collect::<String>()
    );
    let prompt_tokens = (question.len() as u64).div_ceil(4).max(1);
    let completion_tokens = (answer.len() as u64).div_ceil(4);
    let model = body["model"].as_str().unwrap_or(persona.name).to_owned();
    if body["stream"].as_bool() == Some(true) {
        let mut events: Vec<Result<Bytes, std::convert::Infallible>> = answer
            .split_inclusive(' ')
            .map(|word| {
                let chunk = json!({"id": "demo", "object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]});
                Ok(Bytes::from(format!("data: {chunk}\n\n")))
            })
            .collect();
        let usage = json!({"id": "demo", "object": "chat.completion.chunk", "model": model, "choices": [],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}});
        events.push(Ok(Bytes::from(format!("data: {usage}\n\ndata: [DONE]\n\n"))));
        return HttpResponse::Ok()
            .content_type("text/event-stream")
            .streaming(futures::stream::iter(events));
    }
    HttpResponse::Ok().json(json!({
        "id": "demo",
        "object": "chat.completion",
        "created": Utc::now().timestamp(),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }))
}

/// A sample JSON OCR agent.
fn start_ocr_agent() -> anyhow::Result<String> {
    let (listener, url) = bind_loopback()?;
    let server = HttpServer::new(|| App::new().route("/ocr", web::post().to(ocr)))
        .workers(1)
        .listen(listener)?
        .run();
    tokio::spawn(server);
    Ok(url)
}

async fn ocr(body: web::Json<Value>) -> HttpResponse {
    let source = body["image_url"].as_str().unwrap_or("the image").to_owned();
    HttpResponse::Ok().json(json!({"text": format!("Text read from {source}: \"Lorem ipsum dolor sit amet.\""), "pages": 1, "confidence": 0.97}))
}
