//! What a finished job looks like on the wire: an OpenAI chat completion, a `/v1/jobs` result
//! or a recommendation, rendered from a [`JobResult`]. The routes send these; the batch worker
//! writes the same bodies into a batch's output file.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::jobs::chat_shape;
use crate::jobs::service::{JobResult, Shortlisted};

/// The auction behind a response, in brief; `GET /api/auctions/{id}` has the whole record.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuctionSummary {
    id: Uuid,
    /// The slug of the agent that served (or, for a recommendation, would serve).
    winner: Option<String>,
    /// The winner's price, a decimal string of credits.
    clearing_price: Option<String>,
    /// How many agents the auction considered.
    candidates: usize,
}

/// What the job cost and the tokens Gavel settled on (validated and clamped, never the
/// agent's raw report). `cost` is a number of credits, as OpenAI-shaped clients read it.
#[derive(Serialize, ToSchema)]
pub(crate) struct Usage {
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_tokens: Option<u64>,
    cost: f64,
}

#[derive(Serialize, ToSchema)]
pub(crate) enum ChatCompletionObject {
    #[serde(rename = "chat.completion")]
    ChatCompletion,
}

/// The winner's answer as an OpenAI chat completion, with Gavel's `usage.cost` and `auction`.
/// Fields the agent added beyond these (`system_fingerprint`, ...) are passed through.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatCompletion {
    id: String,
    object: ChatCompletionObject,
    created: i64,
    /// The slug of the agent that answered.
    model: String,
    /// OpenAI's choices, each with `index`, `message` and an OpenAI `finish_reason`.
    choices: Vec<Value>,
    usage: Usage,
    auction: AuctionSummary,
    #[serde(flatten)]
    #[schema(ignore)]
    passed_through: Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
pub(crate) enum RecommendationObject {
    #[serde(rename = "auction.recommendation")]
    Recommendation,
}

/// `auction.mode: "recommend"`: who would win, and at what price; nothing runs.
#[derive(Serialize, ToSchema)]
pub(crate) struct Recommendation {
    id: String,
    object: RecommendationObject,
    created: i64,
    model: String,
    usage: Usage,
    auction: RecommendedAuction,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RecommendedAuction {
    id: Uuid,
    winner: Option<String>,
    clearing_price: Option<String>,
    candidates: usize,
    shortlist: Vec<Shortlisted>,
}

/// A chat completion, or a recommendation when `auction.mode` is `recommend`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum ChatResponse {
    Completion(ChatCompletion),
    Recommendation(Recommendation),
}

#[derive(Serialize, ToSchema)]
pub(crate) enum JobObject {
    #[serde(rename = "job")]
    Job,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobResultStatus {
    Delivered,
    Recommended,
}

/// `POST /v1/jobs`: the agent's output, or the shortlist in `recommend` mode.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobResponse {
    id: String,
    object: JobObject,
    status: JobResultStatus,
    agent: Option<String>,
    /// The agent's JSON output as it sent it; in `recommend` mode, the shortlist.
    output: Value,
    /// What the caller paid, a decimal string of credits.
    cost: String,
    auction: AuctionSummary,
}

pub(crate) fn auction_summary(result: &JobResult) -> AuctionSummary {
    let first = result.shortlist.as_ref().and_then(|list| list.first());
    AuctionSummary {
        id: result.auction_id,
        winner: match &result.delivered {
            Some(delivered) => Some(delivered.agent.slug.clone()),
            None => first.map(|s| s.agent.clone()),
        },
        clearing_price: match &result.delivered {
            Some(delivered) => Some(delivered.clearing_price.to_string()),
            None => first.map(|s| s.price.clone()),
        },
        candidates: result.candidates,
    }
}

/// The winner's completion, as an OpenAI chat completion with Gavel's additions.
pub(crate) fn chat_completion(result: &JobResult) -> Result<ChatCompletion, ApiError> {
    let delivered = result
        .delivered
        .as_ref()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("an executed job delivered nothing")))?;
    let mut body = match &delivered.output {
        Value::Object(map) => map.clone(),
        other => Map::from_iter([("output".to_owned(), other.clone())]),
    };
    chat_shape::shape_completion(&mut body, result.created);
    let created = body.get("created").and_then(Value::as_i64).unwrap_or(result.created);
    let choices = match body.remove("choices") {
        Some(Value::Array(choices)) => choices,
        _ => Vec::new(),
    };
    // Gavel's own fields replace the agent's.
    for field in ["id", "object", "created", "model", "usage", "auction"] {
        body.remove(field);
    }
    // The caller sees the usage Gavel settled on (validated, clamped), never the agent's raw
    // numbers.
    let (prompt_tokens, completion_tokens, total_tokens) = match delivered.usage {
        Some((prompt, completion)) => {
            (Some(prompt), Some(completion), Some(prompt.saturating_add(completion)))
        }
        None => (None, None, None),
    };
    Ok(ChatCompletion {
        id: result.job_id.to_string(),
        object: ChatCompletionObject::ChatCompletion,
        created,
        model: delivered.agent.slug.clone(),
        choices,
        usage: Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens,
            cost: result.total_cost.as_credits_f64(),
        },
        auction: auction_summary(result),
        passed_through: body,
    })
}

pub(crate) fn recommendation(result: &JobResult, model: &str) -> Recommendation {
    let summary = auction_summary(result);
    Recommendation {
        id: result.job_id.to_string(),
        object: RecommendationObject::Recommendation,
        created: result.created,
        model: model.to_owned(),
        usage: Usage {
            prompt_tokens: None,
            completion_tokens: None,
            total_tokens: None,
            cost: result.total_cost.as_credits_f64(),
        },
        auction: RecommendedAuction {
            id: summary.id,
            winner: summary.winner,
            clearing_price: summary.clearing_price,
            candidates: summary.candidates,
            shortlist: result.shortlist.clone().unwrap_or_default(),
        },
    }
}

pub(crate) fn job_response(result: &JobResult) -> Result<JobResponse, ApiError> {
    let (status, agent, output) = match &result.delivered {
        Some(delivered) => (
            JobResultStatus::Delivered,
            Some(delivered.agent.slug.clone()),
            delivered.output.clone(),
        ),
        None => (
            JobResultStatus::Recommended,
            None,
            serde_json::to_value(result.shortlist.clone().unwrap_or_default())
                .map_err(ApiError::internal)?,
        ),
    };
    Ok(JobResponse {
        id: result.job_id.to_string(),
        object: JobObject::Job,
        status,
        agent,
        output,
        cost: result.total_cost.to_string(),
        auction: auction_summary(result),
    })
}
