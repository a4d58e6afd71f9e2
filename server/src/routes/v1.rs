//! The OpenAI-compatible job routes: `POST /v1/chat/completions`, `POST /v1/jobs`,
//! `GET /v1/jobs/{id}`, `GET /v1/generation?id=`. Thin: parse, run `jobs::service::run_job`,
//! render; `Idempotency-Key` is honoured on both POSTs.

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderValue;
use actix_web::{HttpRequest, HttpResponse, web};
use registry::idempotency::{self, IdempotencyStart, StoredResponse};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::chat_shape;
use crate::jobs::request::{self, JobRequest};
use crate::jobs::service::{self, JobResult, Prepared, run_job};
use crate::state::AppState;

/// A response ready to send or store.
struct Rendered {
    status: StatusCode,
    body: Value,
    auction_id: Uuid,
    job_id: Uuid,
}

impl Rendered {
    fn into_response(self) -> HttpResponse {
        HttpResponse::build(self.status)
            .insert_header(("x-gavel-auction-id", self.auction_id.to_string()))
            .insert_header(("x-gavel-job-id", self.job_id.to_string()))
            .json(self.body)
    }
}

/// `POST /v1/chat/completions`.
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
        let result = run_job(&state, caller.user_id, job).await?;
        let body =
            if recommend { recommendation_json(&result, &model) } else { chat_json(&result) };
        Ok(Rendered {
            status: StatusCode::OK,
            body,
            auction_id: result.auction_id,
            job_id: result.job_id,
        })
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
    match service::prepare(&state, caller.user_id, job).await? {
        Prepared::Recommended(result) => Ok(Rendered {
            status: StatusCode::OK,
            body: recommendation_json(&result, &model),
            auction_id: result.auction_id,
            job_id: result.job_id,
        }
        .into_response()),
        Prepared::Held(job) => crate::jobs::stream::respond(state, *job).await,
    }
}

/// `POST /v1/jobs`.
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
        let result = run_job(&state, caller.user_id, job).await?;
        let body = job_result_json(&result);
        Ok(Rendered {
            status: StatusCode::OK,
            body,
            auction_id: result.auction_id,
            job_id: result.job_id,
        })
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
    hasher.update(serde_json::to_vec(&body).map_err(ApiError::internal)?);
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
            let headers = json!({
                "x-gavel-auction-id": rendered.auction_id.to_string(),
                "x-gavel-job-id": rendered.job_id.to_string(),
            });
            let stored = StoredResponse {
                status: rendered.status.as_u16(),
                headers: headers.to_string(),
                body: rendered.body.to_string(),
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

fn auction_summary(result: &JobResult) -> Value {
    json!({
        "id": result.auction_id,
        "winner": result.delivered.as_ref().map(|d| d.agent.slug.clone()),
        "clearing_price": result.delivered.as_ref().map(|d| d.clearing_price.to_string()),
        "candidates": result.candidates,
    })
}

/// The winner's completion, as an OpenAI chat completion with Gavel's additions.
fn chat_json(result: &JobResult) -> Value {
    let Some(delivered) = &result.delivered else {
        return json!({"id": result.job_id});
    };
    let mut body = match &delivered.output {
        Value::Object(map) => map.clone(),
        other => Map::from_iter([("output".to_owned(), other.clone())]),
    };
    body.insert("id".into(), json!(result.job_id.to_string()));
    body.insert("model".into(), json!(delivered.agent.slug));
    chat_shape::shape_completion(&mut body, result.created);
    // The caller sees the usage Gavel settled on (validated, clamped), never the agent's raw
    // numbers; OpenAI-shaped clients (litellm, OpenRouter's convention) read `usage.cost` as a
    // number.
    let cost = result.total_cost.as_credits_f64();
    let usage = match delivered.usage {
        Some((prompt, completion)) => json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt.saturating_add(completion),
            "cost": cost,
        }),
        None => json!({"cost": cost}),
    };
    body.insert("usage".into(), usage);
    body.insert("auction".into(), auction_summary(result));
    Value::Object(body)
}

fn recommendation_json(result: &JobResult, model: &str) -> Value {
    let shortlist = result.shortlist.clone().unwrap_or_default();
    json!({
        "id": result.job_id.to_string(),
        "object": "auction.recommendation",
        "created": result.created,
        "model": model,
        "usage": {"cost": result.total_cost.as_credits_f64()},
        "auction": {
            "id": result.auction_id,
            "winner": shortlist.first().and_then(|s| s.get("agent")).cloned(),
            "clearing_price": shortlist.first().and_then(|s| s.get("price")).cloned(),
            "candidates": result.candidates,
            "shortlist": shortlist,
        },
    })
}

fn job_result_json(result: &JobResult) -> Value {
    match &result.delivered {
        Some(delivered) => json!({
            "id": result.job_id.to_string(),
            "object": "job",
            "status": "delivered",
            "agent": delivered.agent.slug,
            "output": delivered.output,
            "cost": result.total_cost.to_string(),
            "auction": auction_summary(result),
        }),
        None => json!({
            "id": result.job_id.to_string(),
            "object": "job",
            "status": "recommended",
            "agent": Value::Null,
            "output": Value::Array(result.shortlist.clone().unwrap_or_default()),
            "cost": result.total_cost.to_string(),
            "auction": {"id": result.auction_id, "candidates": result.candidates},
        }),
    }
}

fn job_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text.trim_start_matches("gen-")).map_err(|_| ApiError::NotFound { what: "job" })
}

/// `GET /v1/jobs/{id}`: the caller's job.
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
    Ok(HttpResponse::Ok().json(json!({
        "id": job.id.to_string(),
        "object": "job",
        "kind": job.kind,
        "status": job.status,
        "category": job.category,
        "model": job.requested_model,
        "agent": job.served.as_ref().map(|s| s.agent_slug.clone()),
        "output": output,
        "cost": job.total_cost.to_string(),
        "error": job.error,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "auction": {"id": job.auction_id},
    })))
}

#[derive(Deserialize)]
pub(crate) struct GenerationQuery {
    id: Option<String>,
}

/// `GET /v1/generation?id=`: what a job cost and how it went, attempt by attempt.
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
    Ok(HttpResponse::Ok().json(json!({"data": {
        "id": job.id.to_string(),
        "model": job.requested_model,
        "agent": job.served.as_ref().map(|s| s.agent_slug.clone()),
        "status": job.status,
        "cost": job.total_cost.to_string(),
        "agent_cost": job.agent_cost.to_string(),
        "clearing_price": job.clearing_price.map(|p| p.to_string()),
        "fees": {"call": job.call_fee.to_string(), "win": job.win_fee.to_string()},
        "tokens": {"prompt": job.input_tokens, "completion": job.output_tokens},
        "latency_ms": job.latency_ms,
        "error": job.error,
        "auction_id": job.auction_id,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "attempts": attempts.iter().map(attempt_json).collect::<Vec<_>>(),
    }})))
}

pub(crate) fn attempt_json(attempt: &registry::jobs::Attempt) -> Value {
    json!({
        "rank": attempt.rank,
        "agent": attempt.agent_slug,
        "agent_id": attempt.agent_id,
        "price": attempt.price.to_string(),
        "outcome": attempt.outcome,
        "http_status": attempt.http_status,
        "error": attempt.error_code,
        "latency_ms": attempt.latency_ms,
        "started_at": attempt.started_at,
    })
}
