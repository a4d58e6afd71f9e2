//! The OpenAI-compatible job routes: `POST /v1/chat/completions`, `POST /v1/jobs`,
//! `GET /v1/jobs/{id}`, `GET /v1/generation?id=`. Thin: parse, run `jobs::service::run_job`,
//! render; `Idempotency-Key` is honoured on both POSTs.

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderValue;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use registry::idempotency::{self, IdempotencyStart, StoredResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, OpenAiErrorBody};
use crate::jobs::request::{self, ChatCompletionRequest, JobBody, JobRequest};
use crate::jobs::responses::{
    ChatResponse, JobObject, JobResponse, chat_completion, job_response, recommendation,
};
use crate::jobs::service::{self, JobResult, Prepared, run_job};
use crate::state::AppState;

/// A response ready to send or store: the body is serialized once, for both.
struct Rendered {
    status: StatusCode,
    body: String,
    auction_id: Uuid,
    job_id: Uuid,
}

impl Rendered {
    fn new(body: &impl Serialize, result: &JobResult) -> Result<Rendered, ApiError> {
        Ok(Rendered {
            status: StatusCode::OK,
            body: serde_json::to_string(body).map_err(ApiError::internal)?,
            auction_id: result.auction_id,
            job_id: result.job_id,
        })
    }

    fn into_response(self) -> HttpResponse {
        HttpResponse::build(self.status)
            .insert_header(("x-gavel-auction-id", self.auction_id.to_string()))
            .insert_header(("x-gavel-job-id", self.job_id.to_string()))
            .content_type("application/json")
            .body(self.body)
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AuctionRef {
    id: Uuid,
}

/// `GET /v1/jobs/{id}`: a job as stored.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobView {
    id: String,
    object: JobObject,
    /// `chat` or `json`.
    kind: String,
    /// `running`, `delivered`, `failed`, `recommended`, ...
    status: String,
    category: String,
    model: String,
    agent: Option<String>,
    output: Option<Value>,
    cost: String,
    error: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    auction: AuctionRef,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Fees {
    call: String,
    win: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Tokens {
    prompt: Option<u64>,
    completion: Option<u64>,
}

/// One agent tried for a job, in rank order.
#[derive(Serialize, ToSchema)]
pub(crate) struct AttemptView {
    rank: u32,
    agent: String,
    agent_id: Uuid,
    /// The price the agent was to be paid, a decimal string of credits.
    price: String,
    /// `success`, `error`, `timeout` or `invalid_output`.
    outcome: String,
    http_status: Option<u16>,
    error: Option<String>,
    latency_ms: u64,
    started_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Generation {
    id: String,
    model: String,
    agent: Option<String>,
    status: String,
    cost: String,
    agent_cost: String,
    clearing_price: Option<String>,
    fees: Fees,
    tokens: Tokens,
    latency_ms: Option<u64>,
    error: Option<String>,
    auction_id: Uuid,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    attempts: Vec<AttemptView>,
}

/// `GET /v1/generation?id=`, in OpenRouter's envelope.
#[derive(Serialize, ToSchema)]
pub(crate) struct GenerationResponse {
    data: Generation,
}

/// `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", operation_id = "create_chat_completion", tag = "v1", security(("bearer" = [])),
    request_body = ChatCompletionRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the stored response of an earlier request with the same key and body (not with `stream: true`)")),
    responses(
        (status = 200, description = "A chat completion (or a recommendation); with `stream: true`, server-sent chunks",
            content((ChatResponse = "application/json"), (String = "text/event-stream"))),
        (status = 400, body = OpenAiErrorBody), (status = 401, body = OpenAiErrorBody),
        (status = 402, body = OpenAiErrorBody), (status = 404, body = OpenAiErrorBody),
        (status = 409, body = OpenAiErrorBody), (status = 413, body = OpenAiErrorBody),
        (status = 415, body = OpenAiErrorBody), (status = 422, body = OpenAiErrorBody),
        (status = 429, body = OpenAiErrorBody), (status = 502, body = OpenAiErrorBody),
        (status = 508, body = OpenAiErrorBody)))]
pub(crate) async fn chat_completions(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    refuse_loops(&req)?;
    let body = body.into_inner();
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return stream(caller, state, &req, body).await;
    }
    let runner = state.clone();
    idempotent(&state, caller, &req, body, |body| async move {
        let state = runner;
        let Value::Object(map) = body else {
            return Err(ApiError::validation("body", "must be a JSON object"));
        };
        let job = request::parse_chat(map)?;
        let model = job.requested_model.clone();
        let recommend = job.mode == request::Mode::Recommend;
        let result = run_job(&state, crate::routes::payer(&caller), job).await?;
        let body = if recommend {
            ChatResponse::Recommendation(recommendation(&result, &model))
        } else {
            ChatResponse::Completion(chat_completion(&result)?)
        };
        Rendered::new(&body, &result)
    })
    .await
}

/// `stream: true`: the auction and the hold as usual, then an SSE relay.
async fn stream(
    caller: Caller,
    state: web::Data<AppState>,
    req: &HttpRequest,
    body: Value,
) -> Result<HttpResponse, ApiError> {
    if req.headers().contains_key("idempotency-key") {
        return Err(ApiError::validation("Idempotency-Key", "is not supported with stream: true"));
    }
    let Value::Object(map) = body else {
        return Err(ApiError::validation("body", "must be a JSON object"));
    };
    let job = request::parse_chat(map)?;
    let model = job.requested_model.clone();
    match service::prepare(&state, crate::routes::payer(&caller), job).await? {
        Prepared::Recommended(result) => {
            Ok(Rendered::new(&recommendation(&result, &model), &result)?.into_response())
        }
        Prepared::Held(job) => crate::jobs::stream::respond(state, *job).await,
    }
}

/// `POST /v1/jobs`: any JSON job, run by the auction's winner.
#[utoipa::path(post, path = "/v1/jobs", operation_id = "create_job", tag = "v1", security(("bearer" = [])), request_body = JobBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the stored response of an earlier request with the same key and body")),
    responses((status = 200, body = JobResponse,
            links(("GetJob" = (operation_id = "get_job", parameters(("id" = "$response.body#/id")))),
                  ("GetGeneration" = (operation_id = "get_generation", parameters(("id" = "$response.body#/id")))),
                  ("GetAuction" = (operation_id = "get_auction", parameters(("id" = "$response.body#/auction/id")))))),
        (status = 400, body = OpenAiErrorBody), (status = 401, body = OpenAiErrorBody),
        (status = 402, body = OpenAiErrorBody), (status = 409, body = OpenAiErrorBody),
        (status = 413, body = OpenAiErrorBody), (status = 415, body = OpenAiErrorBody),
        (status = 422, body = OpenAiErrorBody), (status = 429, body = OpenAiErrorBody),
        (status = 502, body = OpenAiErrorBody), (status = 508, body = OpenAiErrorBody)))]
pub(crate) async fn create_job(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    refuse_loops(&req)?;
    let body = body.into_inner();
    let runner = state.clone();
    idempotent(&state, caller, &req, body, |body| async move {
        let state = runner;
        let job: JobRequest = request::parse_job(body)?;
        let result = run_job(&state, crate::routes::payer(&caller), job).await?;
        Rendered::new(&job_response(&result)?, &result)
    })
    .await
}

/// A job request from a Gavel's own agent call (the hop header) is refused: an agent pointed
/// back at a Gavel would otherwise turn one job into an endless chain.
fn refuse_loops(req: &HttpRequest) -> Result<(), ApiError> {
    if req.headers().contains_key(crate::egress::HOP_HEADER) {
        return Err(ApiError::LoopDetected);
    }
    Ok(())
}

/// Runs `handler` under the request's `Idempotency-Key`, if it has one: a repeat with the same
/// body gets the stored response (and runs nothing), a repeat while the first is running gets
/// 409, a repeat with a different body gets 422. Only successful responses are stored: after
/// an error, nothing was charged, and a retry with the same key runs anew.
async fn idempotent<F, Fut>(
    state: &AppState,
    caller: Caller,
    req: &HttpRequest,
    body: Value,
    handler: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(Value) -> Fut,
    Fut: std::future::Future<Output = Result<Rendered, ApiError>>,
{
    let Some(key) = req.headers().get("idempotency-key") else {
        return handler(body).await.map(Rendered::into_response);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::validation("Idempotency-Key", "must be 1 to 255 printable ASCII characters")
        })?
        .to_owned();
    let mut hasher = Sha256::new();
    hasher.update(req.path().as_bytes());
    hasher.update(serde_json::to_vec(&canonical(&body)).map_err(ApiError::internal)?);
    let hash = hex::encode(hasher.finalize());
    let started = idempotency::begin_idempotent(
        &state.db,
        caller.user_id,
        &key,
        &hash,
        state.now(),
        state.instance_id,
    )
    .await?;
    match started {
        IdempotencyStart::Replay(stored) => return Ok(replay(stored)),
        IdempotencyStart::InFlight => {
            return Err(ApiError::Conflict {
                code: "idempotency_in_flight",
                message: "a request with this Idempotency-Key is still running".into(),
            });
        }
        IdempotencyStart::Mismatch => {
            return Err(ApiError::validation(
                "Idempotency-Key",
                "was already used with a different request body",
            ));
        }
        IdempotencyStart::Proceed => {}
    }
    match handler(body).await {
        Ok(rendered) => {
            let headers = StoredHeaders {
                auction_id: rendered.auction_id.to_string(),
                job_id: rendered.job_id.to_string(),
            };
            let stored = StoredResponse {
                status: rendered.status.as_u16(),
                headers: serde_json::to_string(&headers).map_err(ApiError::internal)?,
                body: rendered.body.clone(),
            };
            idempotency::finish_idempotent(&state.db, caller.user_id, &key, stored).await?;
            Ok(rendered.into_response())
        }
        Err(err) => {
            idempotency::release_idempotent(&state.db, caller.user_id, &key).await?;
            Err(err)
        }
    }
}

/// `value` with every object's keys in sorted order: a retry that sends the same body with its
/// keys in another order is the same request. (JSON objects keep their received order in this
/// build, since `serde_json`'s `preserve_order` is on for the MCP transport.)
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The headers stored with an idempotent response, replayed with it.
#[derive(Serialize)]
struct StoredHeaders {
    #[serde(rename = "x-gavel-auction-id")]
    auction_id: String,
    #[serde(rename = "x-gavel-job-id")]
    job_id: String,
}

fn replay(stored: StoredResponse) -> HttpResponse {
    let mut response =
        HttpResponse::build(StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK));
    if let Ok(Value::Object(headers)) = serde_json::from_str::<Value>(&stored.headers) {
        for (name, value) in headers {
            if let Some(value) = value.as_str().and_then(|v| HeaderValue::from_str(v).ok()) {
                response.insert_header((name, value));
            }
        }
    }
    response.insert_header(("idempotent-replayed", "true"));
    response.content_type("application/json").body(stored.body)
}

pub(crate) fn job_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text.trim_start_matches("gen-")).map_err(|_| ApiError::NotFound { what: "job" })
}

/// `GET /v1/jobs/{id}`: the caller's job.
#[utoipa::path(get, path = "/v1/jobs/{id}", operation_id = "get_job", tag = "v1", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id (also accepted with OpenRouter's `gen-` prefix)")),
    responses((status = 200, body = JobView), (status = 401, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody)))]
pub(crate) async fn get_job(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = job_id(&path)?;
    let job = registry::jobs::find_job(&state.db, caller.user_id, id)
        .await?
        .ok_or(ApiError::NotFound { what: "job" })?;
    let output = job.output.as_deref().and_then(|text| serde_json::from_str::<Value>(text).ok());
    Ok(HttpResponse::Ok().json(JobView {
        id: job.id.to_string(),
        object: JobObject::Job,
        kind: job.kind,
        status: job.status,
        category: job.category,
        model: job.requested_model,
        agent: job.served.map(|s| s.agent_slug),
        output,
        cost: job.total_cost.to_string(),
        error: job.error,
        created_at: job.created_at,
        finished_at: job.finished_at,
        auction: AuctionRef { id: job.auction_id },
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GenerationQuery {
    /// The job's id.
    id: Option<String>,
}

/// `GET /v1/generation?id=`: what a job cost and how it went, attempt by attempt.
#[utoipa::path(get, path = "/v1/generation", operation_id = "get_generation", tag = "v1", security(("bearer" = [])),
    params(GenerationQuery),
    responses((status = 200, body = GenerationResponse), (status = 401, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody), (status = 422, body = OpenAiErrorBody)))]
pub(crate) async fn generation(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<GenerationQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = query.id.as_deref().ok_or_else(|| ApiError::validation("id", "is required"))?;
    let id = job_id(id)?;
    let job = registry::jobs::find_job(&state.db, caller.user_id, id)
        .await?
        .ok_or(ApiError::NotFound { what: "generation" })?;
    let attempts = registry::jobs::job_attempts(&state.db, job.id).await?;
    Ok(HttpResponse::Ok().json(GenerationResponse {
        data: Generation {
            id: job.id.to_string(),
            model: job.requested_model,
            agent: job.served.map(|s| s.agent_slug),
            status: job.status,
            cost: job.total_cost.to_string(),
            agent_cost: job.agent_cost.to_string(),
            clearing_price: job.clearing_price.map(|p| p.to_string()),
            fees: Fees { call: job.call_fee.to_string(), win: job.win_fee.to_string() },
            tokens: Tokens { prompt: job.input_tokens, completion: job.output_tokens },
            latency_ms: job.latency_ms,
            error: job.error,
            auction_id: job.auction_id,
            created_at: job.created_at,
            finished_at: job.finished_at,
            attempts: attempts.iter().map(AttemptView::new).collect(),
        },
    }))
}

impl AttemptView {
    pub(crate) fn new(attempt: &registry::jobs::Attempt) -> AttemptView {
        AttemptView {
            rank: attempt.rank,
            agent: attempt.agent_slug.clone(),
            agent_id: attempt.agent_id,
            price: attempt.price.to_string(),
            outcome: attempt.outcome.clone(),
            http_status: attempt.http_status,
            error: attempt.error_code.clone(),
            latency_ms: attempt.latency_ms,
            started_at: attempt.started_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn the_same_body_with_its_keys_reordered_is_the_same_request() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"model":"m","auction":{"max_price":"2","objective":"cost"}}"#)
                .unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"auction":{"objective":"cost","max_price":"2"},"model":"m"}"#)
                .unwrap();
        assert_eq!(
            serde_json::to_vec(&canonical(&a)).unwrap(),
            serde_json::to_vec(&canonical(&b)).unwrap()
        );
    }
}
