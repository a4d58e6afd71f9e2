//! Batches: checking an uploaded JSONL file, turning a file into a batch's lines, and the
//! worker that runs them.
//!
//! A batch line is an ordinary job: the same parsing as `POST /v1/chat/completions` or
//! `POST /v1/jobs`, the same auction, hold, fallbacks and settlement, paid by the batch's
//! owner and counted on the key that created the batch. What makes it a batch line is its
//! durable row (`registry::batches`): a worker claims it by lease, and the job names the line,
//! so the database keeps at most one delivered (charged) job per line however often the line
//! is run again (after a crash, or by a second instance).
//!
//! Dependencies: `routes::batches` -> this module -> `jobs`; nothing here imports `routes`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix_web::ResponseError;
use actix_web::web;
use auction_engine::{MicroCredits, Routing, sheet_price};
use registry::UserId;
use registry::agents::{AgentState, Visibility};
use registry::batches::{self, ClaimedLine, LineEnd, NewLine};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::jobs::request::{self, BatchLineRef, JobRequest};
use crate::jobs::responses::{chat_completion, job_response};
use crate::jobs::service::{Payer, run_job};
use crate::state::AppState;

/// The endpoints a batch may target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchEndpoint {
    ChatCompletions,
    Jobs,
}

impl BatchEndpoint {
    pub fn parse(text: &str) -> Option<BatchEndpoint> {
        match text {
            "/v1/chat/completions" => Some(BatchEndpoint::ChatCompletions),
            "/v1/jobs" => Some(BatchEndpoint::Jobs),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BatchEndpoint::ChatCompletions => "/v1/chat/completions",
            BatchEndpoint::Jobs => "/v1/jobs",
        }
    }

    /// Parses a line's body as the endpoint itself would.
    fn parse_body(self, body: Value) -> Result<JobRequest, ApiError> {
        let request = match self {
            BatchEndpoint::ChatCompletions => match body {
                Value::Object(map) => request::parse_chat(map)?,
                _ => return Err(ApiError::validation("body", "must be a JSON object")),
            },
            BatchEndpoint::Jobs => request::parse_job(body)?,
        };
        if request.stream {
            return Err(ApiError::validation("body.stream", "a batch line cannot stream"));
        }
        Ok(request)
    }
}

/// The longest `custom_id` accepted.
const MAX_CUSTOM_ID: usize = 512;
/// How many bad lines an error lists by name (the count says how many more).
const MAX_LISTED_ERRORS: usize = 50;

/// One input line, as OpenAI's Batch API defines it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    custom_id: String,
    method: String,
    url: String,
    body: Map<String, Value>,
}

/// A problem with one line of an input file: 1-based line number, field, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub field: String,
    pub message: String,
}

/// A checked input line.
pub struct CheckedLine {
    /// 1-based, in the file (blank lines count).
    pub line: usize,
    pub custom_id: String,
    pub endpoint: BatchEndpoint,
    pub body: Map<String, Value>,
}

/// Checks a JSONL input file line by line: every line an object with a unique `custom_id`,
/// `method: "POST"`, a `url` Gavel batches, and an object `body`. Blank lines are skipped
/// (as OpenAI does); a file needs one line at least and at most `batches::MAX_LINES`.
pub fn check_input(content: &str) -> Result<Vec<CheckedLine>, Vec<LineError>> {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (idx, text) in content.lines().enumerate() {
        let number = idx + 1;
        if text.trim().is_empty() {
            continue;
        }
        if lines.len() + errors.len() >= batches::MAX_LINES {
            errors.push(LineError {
                line: number,
                field: "file".into(),
                message: format!("a batch has at most {} lines", batches::MAX_LINES),
            });
            break;
        }
        let mut problem = |field: &str, message: String| {
            errors.push(LineError { line: number, field: field.into(), message });
        };
        let parsed: InputLine = match serde_json::from_str::<Value>(text) {
            Err(err) => {
                problem("line", format!("is not JSON: {err}"));
                continue;
            }
            Ok(value) => match serde_path_to_error::deserialize(value) {
                Ok(line) => line,
                Err(err) => {
                    let path = err.path().to_string();
                    let field = if path == "." { "line".to_owned() } else { path };
                    problem(&field, err.into_inner().to_string());
                    continue;
                }
            },
        };
        if parsed.custom_id.is_empty() || parsed.custom_id.len() > MAX_CUSTOM_ID {
            problem("custom_id", format!("must be 1 to {MAX_CUSTOM_ID} bytes"));
            continue;
        }
        if parsed.method != "POST" {
            problem("method", format!("must be POST, not `{}`", parsed.method));
            continue;
        }
        let Some(endpoint) = BatchEndpoint::parse(&parsed.url) else {
            problem(
                "url",
                format!("must be /v1/chat/completions or /v1/jobs, not `{}`", parsed.url),
            );
            continue;
        };
        if !seen.insert(parsed.custom_id.clone()) {
            problem("custom_id", format!("`{}` is used by an earlier line", parsed.custom_id));
            continue;
        }
        lines.push(CheckedLine {
            line: number,
            custom_id: parsed.custom_id,
            endpoint,
            body: parsed.body,
        });
    }
    if lines.is_empty() && errors.is_empty() {
        errors.push(LineError { line: 0, field: "file".into(), message: "has no lines".into() });
    }
    if errors.is_empty() { Ok(lines) } else { Err(errors) }
}

/// The errors as one sentence for an HTTP error: each bad line by number and field.
pub fn describe(errors: &[LineError]) -> String {
    let mut parts: Vec<String> = errors
        .iter()
        .take(MAX_LISTED_ERRORS)
        .map(|e| format!("line {}, `{}`: {}", e.line, e.field, e.message))
        .collect();
    if errors.len() > MAX_LISTED_ERRORS {
        parts.push(format!("and {} more", errors.len() - MAX_LISTED_ERRORS));
    }
    parts.join("; ")
}

/// A file made into a batch: its lines, and the most they may cost together.
pub struct Planned {
    pub lines: Vec<NewLine>,
    pub max_cost: MicroCredits,
    /// Every line's category (a batch auction needs exactly one).
    pub categories: std::collections::BTreeSet<String>,
    /// The lines' estimated tokens in all: (input, output), for a request for quote.
    pub tokens: (u64, u64),
}

/// Makes a batch's lines from its input file: every line's url must be the batch's endpoint
/// and its body must parse as that endpoint's request. The most a line may cost is its
/// `auction.max_price` (or, without one, the dearest sheet price of the agents that could
/// serve it now) plus the call fee. A batch-wide `max_price` is written into every line's
/// request as its `auction.max_price` when the line's own cap is absent or higher, so the
/// line runs, is reserved for and is awarded under the lower of the two.
pub async fn plan(
    state: &AppState,
    caller: UserId,
    endpoint: BatchEndpoint,
    content: &str,
    batch_max: Option<MicroCredits>,
) -> Result<Planned, Vec<LineError>> {
    let checked = check_input(content)?;
    let now_ms = state.now().timestamp_millis();
    let snapshot = state.agent_index.snapshot(&state.db, now_ms).await.map_err(|err| {
        vec![LineError { line: 0, field: "file".into(), message: err.to_string() }]
    })?;
    let call_fee = state.auction_parameters().call_fee;
    let mut lines = Vec::with_capacity(checked.len());
    let mut errors = Vec::new();
    let mut max_cost = MicroCredits::ZERO;
    let mut categories = std::collections::BTreeSet::new();
    let mut tokens = (0_u64, 0_u64);
    for line in checked {
        let number = line.line;
        if line.endpoint != endpoint {
            errors.push(LineError {
                line: number,
                field: "url".into(),
                message: format!(
                    "is {}, the batch's endpoint is {}",
                    line.endpoint.as_str(),
                    endpoint.as_str()
                ),
            });
            continue;
        }
        let mut body = line.body;
        let parsed = endpoint.parse_body(Value::Object(body.clone()));
        let request = match parsed {
            Ok(mut request) => {
                if let Some(cap) = batch_max {
                    let capped = request.max_price.map_or(cap, |own| own.min(cap));
                    request.max_price = Some(capped);
                    let auction = body.entry("auction").or_insert_with(|| json!({}));
                    if let Some(auction) = auction.as_object_mut() {
                        auction.insert("max_price".into(), Value::String(capped.to_string()));
                    }
                }
                Ok(request)
            }
            Err(err) => Err(err),
        };
        let text = Value::Object(body).to_string();
        let request = match request {
            Ok(request) => request,
            Err(err) => {
                let (field, message) = match err {
                    ApiError::Validation { field, message } => (format!("body.{field}"), message),
                    other => ("body".to_owned(), other.to_string()),
                };
                errors.push(LineError { line: number, field, message });
                continue;
            }
        };
        categories.insert(request.category.clone());
        tokens.0 = tokens.0.saturating_add(request.input_tokens);
        tokens.1 = tokens.1.saturating_add(request.output_tokens);
        let most = request.max_price.unwrap_or_else(|| {
            snapshot
                .in_category(&request.category)
                .iter()
                .filter(|a| a.state == AgentState::Active)
                .filter(|a| a.visibility == Visibility::Public || a.owner_id == caller)
                .filter_map(|a| {
                    sheet_price(&a.pricing, request.input_tokens, request.output_tokens)
                })
                .max()
                .unwrap_or(MicroCredits::ZERO)
        });
        // A million credits at most per line (the price bound) times 50,000 lines fits an
        // i64 of micro-credits many times over; `checked_add` still refuses the impossible.
        let line_most = most.checked_add(call_fee).unwrap_or(MicroCredits::from_micros(i64::MAX));
        max_cost = max_cost.checked_add(line_most).unwrap_or(MicroCredits::from_micros(i64::MAX));
        lines.push(NewLine { custom_id: line.custom_id, body: text, reserve: line_most.micros() });
    }
    if errors.is_empty() {
        Ok(Planned { lines, max_cost, categories, tokens })
    } else {
        Err(errors)
    }
}

/// Runs batch lines in the background until the process stops: claims free lines (up to
/// `batch.concurrency` at once), runs each as a job, records its end, and closes batches
/// whose lines have all ended. A second task renews this worker's leases.
pub fn spawn_worker(state: web::Data<AppState>) {
    let settings = state.settings.raw.batch.clone();
    let lease_ms = i64::try_from(settings.lease_ms).unwrap_or(i64::MAX);
    let concurrency = settings.concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    // Lines this process is running. A line whose lease lapsed while its run goes on (a
    // stalled renewer) can come back to this very worker: it is not run a second time beside
    // itself, so in one process a line has at most one job at a time, and its share of the
    // batch's reservation is drawn at most once.
    let running: Arc<std::sync::Mutex<HashSet<uuid::Uuid>>> = Arc::default();
    let renewer = (state.clone(), Arc::clone(&slots));
    tokio::spawn(async move {
        let (state, slots) = renewer;
        let mut tick = tokio::time::interval(Duration::from_millis((settings.lease_ms / 3).max(1)));
        loop {
            tick.tick().await;
            // Holding no line, this worker has no lease to renew: no write at all.
            if slots.available_permits() == concurrency {
                continue;
            }
            let now_ms = state.now().timestamp_millis();
            if let Err(err) =
                batches::renew_leases(&state.db, state.instance_id, now_ms, lease_ms).await
            {
                tracing::warn!(error = %err, "renewing batch leases failed");
            }
        }
    });
    tokio::spawn(async move {
        let poll = Duration::from_millis(settings.poll_ms.max(1));
        loop {
            // With no batch open anywhere (the usual case) an idle worker reads one row and
            // writes nothing: no award, no claim, no closing.
            match batches::has_open_batches(&state.db).await {
                Ok(true) => {}
                Ok(false) => {
                    tokio::select! {
                        () = state.batch_wake.notified() => {}
                        () = tokio::time::sleep(poll) => {}
                    }
                    continue;
                }
                Err(err) => tracing::warn!(error = %err, "looking for open batches failed"),
            }
            if let Err(err) = award_due(&state).await {
                tracing::warn!(error = %err, "awarding batch auctions failed");
            }
            let free = slots.available_permits();
            let mut claimed = Vec::new();
            if free > 0 {
                let now_ms = state.now().timestamp_millis();
                let limit = u64::try_from(free).unwrap_or(u64::MAX);
                let per_batch = settings.per_batch_concurrency.max(1);
                let claim = batches::claim_lines(
                    &state.db,
                    state.instance_id,
                    now_ms,
                    lease_ms,
                    limit,
                    per_batch,
                );
                match claim.await {
                    Ok(lines) => claimed = lines,
                    Err(err) => tracing::warn!(error = %err, "claiming batch lines failed"),
                }
            }
            let idle = claimed.is_empty();
            for line in claimed {
                let fresh = running.lock().is_ok_and(|mut running| running.insert(line.id));
                if !fresh {
                    continue;
                }
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { return };
                let (state, running) = (state.clone(), Arc::clone(&running));
                tokio::spawn(async move {
                    let id = line.id;
                    run_line(&state, line).await;
                    if let Ok(mut running) = running.lock() {
                        running.remove(&id);
                    }
                    drop(permit);
                    state.batch_wake.notify_one();
                });
            }
            if idle {
                if let Err(err) = state.bank.close_batches(state.now().timestamp_millis()).await {
                    tracing::warn!(error = %err, "closing finished batches failed");
                }
                tokio::select! {
                    () = state.batch_wake.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                }
            } else {
                // Claim again once half the slots are free: one claim statement for many
                // lines, not one per line that ends.
                let half = (settings.concurrency.max(1) / 2).max(1);
                while slots.available_permits() < half {
                    state.batch_wake.notified().await;
                }
            }
        }
    });
}

/// How long a line whose earlier job is still open waits before it is claimed again.
const DEFER_MS: i64 = 1_000;

/// Runs one claimed line and records how it ended.
async fn run_line(state: &AppState, line: ClaimedLine) {
    // Claimed again while an earlier claim's job is still open (its worker died): that job's
    // hold has the line's share until the reaper ends it, and a run now would need the credits
    // twice. Give the line back for a while; it runs (or adopts a delivery) after.
    if line.claims > 1 {
        match batches::line_has_open_job(&state.db, line.id).await {
            Ok(false) => {}
            Ok(true) => {
                let retry_at = state.now().timestamp_millis().saturating_add(DEFER_MS);
                if let Err(err) =
                    batches::defer_line(&state.db, state.instance_id, line.id, retry_at).await
                {
                    tracing::warn!(error = %err, line = %line.id, "deferring a batch line failed");
                }
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, line = %line.id, "a batch line could not be run");
                return;
            }
        }
    }
    let end = match line_end(state, &line).await {
        Ok(end) => end,
        Err(err) => {
            tracing::warn!(error = %err, line = %line.id, "a batch line could not be run");
            return;
        }
    };
    let now_ms = state.now().timestamp_millis();
    match state.bank.finish_line(state.instance_id, &line, end, now_ms).await {
        Ok(recorded) if recorded.recorded => {}
        Ok(_) => {
            tracing::info!(line = %line.id, "a batch line's lease passed to another worker")
        }
        Err(err) => tracing::warn!(error = %err, line = %line.id, "recording a batch line failed"),
    }
}

async fn line_end(state: &AppState, line: &ClaimedLine) -> Result<LineEnd, ApiError> {
    // Claimed before: an earlier claim may have delivered (and been charged for) it already.
    if line.claims > 1
        && let Some(job_id) = batches::delivered_job(&state.db, line.id).await?
    {
        return adopted(state, line.owner, job_id).await;
    }
    state.ensure_monthly_grant(line.owner).await?;
    let endpoint = BatchEndpoint::parse(&line.endpoint)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("unknown batch endpoint")))?;
    let body: Value = serde_json::from_str(&line.body).map_err(ApiError::internal)?;
    let payer = Payer { user: line.owner, api_key: line.api_key };
    let result = match endpoint.parse_body(body) {
        Ok(mut request) => {
            request.batch_line = Some(BatchLineRef { id: line.id, share: line.share });
            if let Some(awarded) = line.agent {
                awarded_line(state, line.batch_id, awarded, &mut request).await?;
            }
            run_job(state, payer, request).await
        }
        Err(err) => Err(err),
    };
    match result {
        Ok(result) => {
            let body = match endpoint {
                BatchEndpoint::ChatCompletions => serde_json::to_string(&chat_completion(&result)?),
                BatchEndpoint::Jobs => serde_json::to_string(&job_response(&result)?),
            }
            .map_err(ApiError::internal)?;
            Ok(LineEnd::Answered { job_id: result.job_id, body })
        }
        Err(err) => {
            // Another claim of this line may have delivered while this one ran (the database
            // refused this one's delivery): the line is answered, by that job.
            if let Some(job_id) = batches::delivered_job(&state.db, line.id).await? {
                return adopted(state, line.owner, job_id).await;
            }
            Ok(LineEnd::Refused {
                job_id: None,
                status_code: err.status_code().as_u16(),
                code: err.code().to_owned(),
                message: err.to_string(),
            })
        }
    }
}

/// A batch auction's awarded line: priced at the final batch bids, its awarded agent tried
/// first (paid its own bid), the rest of the ranking behind it as fallbacks.
async fn awarded_line(
    state: &AppState,
    batch: uuid::Uuid,
    awarded: uuid::Uuid,
    request: &mut JobRequest,
) -> Result<(), ApiError> {
    let bids = batches::final_bids(&state.db, batch).await?;
    request.batch_bids =
        Some(bids.iter().map(|bid| (bid.agent, MicroCredits::from_micros(bid.price))).collect());
    let snapshot = state.agent_index.snapshot(&state.db, state.now().timestamp_millis()).await?;
    if let Some(agent) = snapshot.by_id(awarded) {
        request.routing = Routing::Order(vec![agent.slug.clone()]);
    }
    Ok(())
}

/// A line answered by an earlier claim's job: the job as `GET /v1/jobs/{id}` shows it.
async fn adopted(state: &AppState, owner: UserId, job_id: uuid::Uuid) -> Result<LineEnd, ApiError> {
    let job = registry::jobs::find_job(&state.db, owner, job_id)
        .await?
        .ok_or(ApiError::NotFound { what: "job" })?;
    let output = job.output.as_deref().and_then(|text| serde_json::from_str::<Value>(text).ok());
    let body = json!({
        "id": job.id.to_string(),
        "object": "job",
        "status": job.status,
        "agent": job.served.map(|s| s.agent_slug),
        "output": output,
        "cost": job.total_cost.to_string(),
        "auction": {"id": job.auction_id},
    });
    Ok(LineEnd::Answered { job_id, body: body.to_string() })
}

/// A batch auction's record, written at the award: every bid and re-bid, the ranking on the
/// real-time score, who was excluded and why, and the lines each agent was awarded.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AwardRecord {
    /// The deadline for bids, Unix seconds.
    pub deadline: i64,
    pub bids: Vec<RecordedBid>,
    pub ranking: Vec<RankedBid>,
    pub exclusions: Vec<ExcludedBidder>,
    pub award: Vec<Share>,
    /// Lines beyond every capacity: they run as real-time auctions.
    pub unawarded_lines: i64,
}

/// One version of one agent's bid.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RecordedBid {
    pub agent: Option<String>,
    pub agent_id: uuid::Uuid,
    pub version: i64,
    /// Per line, credits.
    pub price: String,
    pub capacity: Option<i64>,
    /// `rfq` or `rebid`.
    pub source: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// An agent in the award's ranking.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RankedBid {
    pub rank: usize,
    pub agent: String,
    /// Its final batch bid, or its sheet price without one.
    pub bid: String,
    /// `live` (a batch bid) or `sheet`.
    pub bid_source: String,
    /// The quality factor its bid is divided by.
    pub quality: f64,
    /// `bid / quality`, micro-credits: what the ranking sorts by.
    pub effective_price: i64,
}

/// An agent that did not compete, and the reason's code.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ExcludedBidder {
    pub agent: String,
    pub reason: String,
}

/// Lines awarded to one agent (in input order, after those of the agents ranked above it).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Share {
    pub agent: Option<String>,
    pub agent_id: uuid::Uuid,
    pub lines: i64,
}

/// Most agents asked for a quote per batch auction.
const MAX_QUOTED: usize = 64;
/// How long an agent has to answer a request for quote (it may re-bid until the deadline).
const RFQ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest quote accepted, in bytes.
const MAX_QUOTE_BYTES: usize = 4096;

/// A batch auction, as its request for quote describes it.
pub struct Rfq {
    pub batch: uuid::Uuid,
    pub owner: UserId,
    pub category: String,
    pub lines: usize,
    pub tokens: (u64, u64),
    pub deadline_ms: i64,
}

/// Sends one request for quote for the whole batch to every eligible agent with a bid URL,
/// concurrently, through the egress guard; each priced answer is the agent's first bid.
/// Wire contract: Gavel POSTs `{type: "batch_rfq", batch_id, category, lines, estimate:
/// {input_tokens, output_tokens}, deadline, rebid}` (`deadline` in Unix seconds, `rebid` the
/// path to replace the bid at, as the agent's owner); the agent answers `{"price": "0.4",
/// "capacity": 500}` (price per line in credits; capacity optional) or 204 for no bid.
pub async fn request_quotes(state: &AppState, rfq: Rfq) {
    let now_ms = state.now().timestamp_millis();
    let snapshot = match state.agent_index.snapshot(&state.db, now_ms).await {
        Ok(snapshot) => snapshot,
        Err(err) => {
            tracing::warn!(error = %err, "no request for quote: the agent index failed");
            return;
        }
    };
    let body = json!({
        "type": "batch_rfq",
        "batch_id": format!("batch_{}", rfq.batch),
        "category": rfq.category,
        "lines": rfq.lines,
        "estimate": {"input_tokens": rfq.tokens.0, "output_tokens": rfq.tokens.1},
        "deadline": rfq.deadline_ms.div_euclid(1_000),
        "rebid": format!("/api/batches/batch_{}/bids", rfq.batch),
    });
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let agents: Vec<Arc<registry::agents::Agent>> = snapshot
        .in_category(&rfq.category)
        .iter()
        .filter(|a| a.state == AgentState::Active && a.bid_url.is_some())
        .filter(|a| a.visibility == Visibility::Public || a.owner_id == rfq.owner)
        .take(MAX_QUOTED)
        .cloned()
        .collect();
    let asks = agents.iter().filter_map(|agent| {
        let url = agent.bid_url.clone()?;
        let body = body.clone();
        Some(async move {
            let call = crate::egress::AgentCall {
                url: &url,
                body,
                bearer: agent.upstream_api_key.as_ref().map(|k| k.expose()),
                idempotency_key: None,
                first_byte_timeout: RFQ_TIMEOUT,
                total_timeout: RFQ_TIMEOUT,
                max_response_bytes: MAX_QUOTE_BYTES,
            };
            (agent, state.agent_client.post_json(call).await)
        })
    });
    for (agent, answer) in futures::future::join_all(asks).await {
        let Ok(reply) = answer else { continue };
        let quote = (reply.status == 200)
            .then(|| serde_json::from_slice::<Value>(&reply.body).ok())
            .flatten();
        let Some((price, capacity)) = quote.as_ref().and_then(parse_quote) else { continue };
        let bid = batches::BatchBid {
            agent: agent.id,
            owner: agent.owner_id,
            version: 0,
            price: price.micros(),
            capacity,
            source: batches::BidSource::Rfq,
            at_ms: state.now().timestamp_millis(),
        };
        if let Err(err) = batches::record_bid(&state.db, rfq.batch, bid).await {
            tracing::warn!(error = %err, "recording a quote failed");
        }
    }
}

/// `{"price": "0.4", "capacity": 500}`: a non-negative price in credits, an optional positive
/// capacity in lines.
pub fn parse_quote(quote: &Value) -> Option<(MicroCredits, Option<i64>)> {
    let price = match quote.get("price")? {
        Value::String(text) => MicroCredits::parse_decimal(text).ok()?,
        Value::Number(number) => MicroCredits::parse_decimal(&number.to_string()).ok()?,
        _ => return None,
    };
    if price.is_negative() {
        return None;
    }
    let capacity = match quote.get("capacity") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_i64().filter(|c| *c > 0)?),
    };
    Some((price, capacity))
}

/// Awards every batch auction whose deadline has passed: one auction, on the same score as
/// real-time ones, over the category's agents with their final batch bids (an agent without
/// one bids its sheet), for a line of the batch; then lines go, in input order, to the
/// ranking's agents in turn, each up to its declared capacity. The award and its record
/// (every bid and re-bid, the ranking, the lines per agent) are written at once; a second
/// worker finds it done.
pub async fn award_due(state: &AppState) -> Result<(), ApiError> {
    let now_ms = state.now().timestamp_millis();
    for due in batches::due_awards(&state.db, now_ms).await? {
        let all_bids = batches::batch_bids(&state.db, due.batch).await?;
        let finals = batches::final_bids(&state.db, due.batch).await?;
        let Some(body) = batches::first_line_body(&state.db, due.batch).await? else { continue };
        let endpoint = batches::endpoint_of(&state.db, due.batch).await?;
        let endpoint = endpoint.as_deref().and_then(BatchEndpoint::parse);
        let (Some(endpoint), Ok(body)) = (endpoint, serde_json::from_str::<Value>(&body)) else {
            continue;
        };
        let mut request = endpoint.parse_body(body)?;
        request.batch_bids =
            Some(finals.iter().map(|b| (b.agent, MicroCredits::from_micros(b.price))).collect());
        let (input, agents) =
            crate::jobs::service::auction_input(state, due.owner, &request, due.batch, now_ms)
                .await?;
        let outcome = auction_engine::run(&input);
        let mut left = due.lines;
        let mut shares = Vec::new();
        for ranked in &outcome.ranking {
            if left <= 0 {
                break;
            }
            let agent = uuid::Uuid::from_u128(ranked.agent_id.0);
            let capacity = finals.iter().find(|b| b.agent == agent).and_then(|b| b.capacity);
            let take = capacity.map_or(left, |c| c.min(left));
            shares.push((agent, take));
            left -= take;
        }
        let slug = |id: uuid::Uuid| agents.get(&id).map(|a| a.slug.clone());
        let record = AwardRecord {
            deadline: due.bidding_until_ms.div_euclid(1_000),
            bids: all_bids
                .iter()
                .map(|b| RecordedBid {
                    agent: slug(b.agent),
                    agent_id: b.agent,
                    version: b.version,
                    price: MicroCredits::from_micros(b.price).to_string(),
                    capacity: b.capacity,
                    source: b.source.as_str().to_owned(),
                    at: b.at_ms,
                })
                .collect(),
            ranking: outcome
                .ranking
                .iter()
                .map(|r| RankedBid {
                    rank: r.rank,
                    agent: r.slug.to_string(),
                    bid: r.bid.to_string(),
                    bid_source: match r.bid_source {
                        auction_engine::BidSource::Live => "live".to_owned(),
                        auction_engine::BidSource::Sheet => "sheet".to_owned(),
                    },
                    quality: r.quality.factor,
                    effective_price: r.effective_price,
                })
                .collect(),
            exclusions: outcome
                .exclusions
                .iter()
                .map(|e| ExcludedBidder {
                    agent: e.slug.to_string(),
                    reason: e.reason.code().to_owned(),
                })
                .collect(),
            award: shares
                .iter()
                .map(|(agent, lines)| Share {
                    agent: slug(*agent),
                    agent_id: *agent,
                    lines: *lines,
                })
                .collect(),
            unawarded_lines: left.max(0),
        };
        let record = serde_json::to_string(&record).map_err(ApiError::internal)?;
        batches::award(&state.db, due.batch, &shares, record, now_ms).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_line_is_named_with_its_field() {
        let file = [
            r#"{"custom_id":"a","method":"POST","url":"/v1/jobs","body":{"category":"ocr","input":{}}}"#,
            r#"not json"#,
            r#"{"custom_id":"b","method":"GET","url":"/v1/jobs","body":{}}"#,
            r#"{"custom_id":"a","method":"POST","url":"/v1/jobs","body":{}}"#,
            "",
            r#"{"custom_id":"c","method":"POST","url":"/v1/embeddings","body":{}}"#,
            r#"{"custom_id":"d","method":"POST","url":"/v1/jobs","body":[]}"#,
            r#"{"custom_id":"e","method":"POST","url":"/v1/jobs","body":{},"extra":1}"#,
        ]
        .join("\n");
        let errors = check_input(&file).err().unwrap();
        let named: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            named,
            [(2, "line"), (3, "method"), (4, "custom_id"), (6, "url"), (7, "body"), (8, "extra")]
        );
        assert!(describe(&errors).contains("line 4, `custom_id`: `a` is used by an earlier line"));
    }

    #[test]
    fn a_good_file_gives_its_lines_in_order() {
        let file = "{\"custom_id\":\"x\",\"method\":\"POST\",\"url\":\"/v1/jobs\",\"body\":{}}\n\n{\"custom_id\":\"y\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n";
        let lines = check_input(file).ok().unwrap();
        let ids: Vec<&str> = lines.iter().map(|l| l.custom_id.as_str()).collect();
        assert_eq!(ids, ["x", "y"]);
        assert_eq!(lines[1].endpoint, BatchEndpoint::ChatCompletions);
        assert!(check_input("\n\n").is_err());
    }
}
