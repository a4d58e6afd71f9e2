//! `POST /v1/jobs/{id}/feedback`: the caller rates a delivered job, once, within seven days.
//! The dashboard's rating buttons call the same `registry::feedback::rate_job`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use registry::feedback::{self, Rating};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, OpenAiErrorBody};
use crate::input::parse_body;
use crate::routes::v1::job_id;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedbackBody {
    /// `up` or `down`.
    #[schema(example = "up")]
    rating: String,
    /// Why, in at most 500 characters.
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// A rating as stored.
#[derive(Serialize, ToSchema)]
pub(crate) struct FeedbackView {
    job_id: Uuid,
    agent_id: Uuid,
    rating: &'static str,
    reason: Option<String>,
    created_at: DateTime<Utc>,
}

/// `POST /v1/jobs/{id}/feedback`: 201 with the rating; 409 `already_rated`; 422 when the job
/// was not delivered or was delivered more than seven days ago; another user's job is a 404.
#[utoipa::path(post, path = "/v1/jobs/{id}/feedback", operation_id = "rate_job", tag = "v1", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")), request_body = FeedbackBody,
    responses((status = 201, body = FeedbackView), (status = 400, body = OpenAiErrorBody),
        (status = 401, body = OpenAiErrorBody), (status = 404, body = OpenAiErrorBody),
        (status = 409, body = OpenAiErrorBody), (status = 413, body = OpenAiErrorBody),
        (status = 415, body = OpenAiErrorBody), (status = 422, body = OpenAiErrorBody)))]
pub(crate) async fn rate(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let id = job_id(&path)?;
    let body: FeedbackBody = parse_body(body.into_inner())?;
    let rating = Rating::parse(&body.rating)?;
    let reason = feedback::parse_reason(body.reason.as_deref())?;
    let rated =
        feedback::rate_job(&state.db, caller.user_id, id, rating, reason, state.now()).await?;
    // The next auction on this instance reloads the index (other instances see the
    // generation the rating bumped).
    state.agent_index.announce();
    Ok(HttpResponse::Created().json(FeedbackView {
        job_id: rated.job_id,
        agent_id: rated.agent_id,
        rating: rated.rating.as_str(),
        reason: rated.reason,
        created_at: rated.created_at,
    }))
}
