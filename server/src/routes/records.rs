//! The record: `GET /api/auctions/{id}` (the full audit, with attempts and settlement) and
//! `GET /api/activity` (the caller's calls and the owner's wins, as JSON or CSV).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use registry::UserId;
use registry::jobs::{ActivityFilter, ActivityRole};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::activity::{ActivityRow, activity_csv};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::jobs::record::AuditDocument;
use crate::routes::ListObject;
use crate::routes::page_limit;
use crate::routes::v1::AttemptView;
use crate::state::AppState;

/// An auction's whole record: the stored audit, with the job's attempts and settlement joined
/// in when the job is the caller's.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuctionRecord {
    #[serde(flatten)]
    record: AuditDocument,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settlement: Option<SettlementView>,
    created_at: DateTime<Utc>,
}

/// Where the money went; amounts are decimal strings of credits.
#[derive(Serialize, ToSchema)]
pub(crate) struct SettlementView {
    status: String,
    agent: Option<String>,
    clearing_price: Option<String>,
    agent_cost: String,
    call_fee: String,
    win_fee: String,
    caller_paid: String,
}

/// `GET /api/auctions/{id}`.
#[utoipa::path(get, path = "/api/auctions/{id}", operation_id = "get_auction", tag = "records", security(("bearer" = [])),
    params(("id" = String, Path, description = "The auction's id (`x-gavel-auction-id`)")),
    responses((status = 200, body = AuctionRecord), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn auction(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&path).map_err(|_| ApiError::NotFound { what: "auction" })?;
    Ok(HttpResponse::Ok().json(auction_record(&state, caller.user_id, id).await?))
}

/// The auction `id` as `user` may see it: 404 unless it was the user's call (or their agent's
/// win); the attempts and the settlement only for the caller.
pub(crate) async fn auction_record(
    state: &AppState,
    user: UserId,
    id: Uuid,
) -> Result<AuctionRecord, ApiError> {
    let audit = registry::jobs::find_auction(&state.db, user, id)
        .await?
        .ok_or(ApiError::NotFound { what: "auction" })?;
    let record: AuditDocument = serde_json::from_str(&audit.record).map_err(ApiError::internal)?;
    let (attempts, settlement) =
        match registry::jobs::find_job(&state.db, user, audit.job_id).await? {
            Some(job) => {
                let attempts = registry::jobs::job_attempts(&state.db, job.id).await?;
                let settlement = SettlementView {
                    status: job.status,
                    agent: job.served.map(|s| s.agent_slug),
                    clearing_price: job.clearing_price.map(|p| p.to_string()),
                    agent_cost: job.agent_cost.to_string(),
                    call_fee: job.call_fee.to_string(),
                    win_fee: job.win_fee.to_string(),
                    caller_paid: job.total_cost.to_string(),
                };
                (Some(attempts.iter().map(AttemptView::new).collect()), Some(settlement))
            }
            None => (None, None),
        };
    Ok(AuctionRecord { record, attempts, settlement, created_at: audit.created_at })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ActivityQuery {
    #[param(value_type = Option<crate::vocabulary::ActivityRoleWord>)]
    role: Option<String>,
    /// A job status (`delivered`, `failed`, ...).
    status: Option<String>,
    #[param(value_type = Option<crate::vocabulary::CategoryWord>)]
    category: Option<String>,
    /// RFC 3339.
    #[param(value_type = Option<DateTime<Utc>>)]
    since: Option<String>,
    #[param(value_type = Option<DateTime<Utc>>)]
    until: Option<String>,
    /// 1 to 1000 rows (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    cursor: Option<String>,
    #[param(value_type = Option<crate::vocabulary::ActivityFormat>)]
    format: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ActivityPage {
    object: ListObject,
    data: Vec<ActivityRow>,
    has_more: bool,
    next_cursor: Option<String>,
}

fn timestamp(field: &'static str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t).map(|d| d.with_timezone(&Utc)).map_err(|_| {
            ApiError::validation(field, "must be an RFC 3339 time, e.g. 2026-11-01T00:00:00Z")
        })
    })
    .transpose()
}

/// `GET /api/activity`: as JSON, or as CSV with `format=csv`.
#[utoipa::path(get, path = "/api/activity", operation_id = "activity", tag = "records", security(("bearer" = [])), params(ActivityQuery),
    responses((status = 200, description = "The page, or the CSV file with `format=csv`",
            content((ActivityPage = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn activity(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ActivityQuery>,
) -> Result<HttpResponse, ApiError> {
    let role = match query.role.as_deref() {
        None | Some("all") => None,
        Some("caller") => Some(ActivityRole::Caller),
        Some("owner") => Some(ActivityRole::Owner),
        Some(other) => {
            return Err(ApiError::validation(
                "role",
                format!("`{other}` is not one of: caller, owner, all"),
            ));
        }
    };
    let limit = page_limit(query.limit.as_deref(), 50, 1000)?;
    let before = query
        .cursor
        .as_deref()
        .map(|c| {
            Uuid::parse_str(c)
                .map_err(|_| ApiError::validation("cursor", "is not a cursor from a previous page"))
        })
        .transpose()?;
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::validation(
                "format",
                format!("`{other}` is not one of: json, csv"),
            ));
        }
    };
    if let Some(category) = query.category.as_deref()
        && !registry::agents::CATEGORIES.contains(&category)
    {
        return Err(ApiError::validation(
            "category",
            format!("`{category}` is not one of: {}", registry::agents::CATEGORIES.join(", ")),
        ));
    }
    let filter = ActivityFilter {
        role,
        status: query.status.clone().filter(|s| !s.is_empty()),
        category: query.category.clone(),
        since: timestamp("since", query.since.as_deref())?,
        until: timestamp("until", query.until.as_deref())?,
        before,
        limit: limit + 1,
    };
    let mut jobs = registry::jobs::activity(&state.db, caller.user_id, filter).await?;
    let has_more = jobs.len() as u64 > limit;
    jobs.truncate(limit as usize);
    let rows: Vec<ActivityRow> =
        jobs.iter().map(|job| ActivityRow::new(job, caller.user_id.0)).collect();
    if csv {
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header(("content-disposition", "attachment; filename=\"gavel-activity.csv\""))
            .body(activity_csv(&rows)));
    }
    let next_cursor = if has_more { jobs.last().map(|j| j.id.to_string()) } else { None };
    Ok(HttpResponse::Ok().json(ActivityPage {
        object: ListObject::List,
        data: rows,
        has_more,
        next_cursor,
    }))
}
