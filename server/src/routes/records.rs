//! The record: `GET /api/auctions/{id}` (the full audit, with attempts and settlement) and
//! `GET /api/activity` (the caller's calls and the owner's wins, as JSON or CSV).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use registry::UserId;
use registry::jobs::{ActivityFilter, ActivityRole, Job};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

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

/// One line of activity. `amount` is what the user paid (as caller, negative) or earned (as
/// owner, the price less the win fee).
#[derive(Serialize, ToSchema)]
pub(crate) struct ActivityRow {
    pub(crate) id: String,
    pub(crate) created_at: String,
    /// `caller`, `owner`, or `caller+owner` for a job of one's own agent.
    pub(crate) role: &'static str,
    pub(crate) category: String,
    pub(crate) model: String,
    pub(crate) agent: Option<String>,
    pub(crate) status: String,
    pub(crate) amount: String,
    pub(crate) error: Option<String>,
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

/// The activity rows as a CSV file with a header line (the API's `format=csv` and the
/// dashboard's export).
pub(crate) fn activity_csv(rows: &[ActivityRow]) -> String {
    let mut text = String::from("id,created_at,role,category,model,agent,status,amount,error\n");
    for row in rows {
        let fields = [
            row.id.as_str(),
            row.created_at.as_str(),
            row.role,
            row.category.as_str(),
            row.model.as_str(),
            row.agent.as_deref().unwrap_or_default(),
            row.status.as_str(),
            row.amount.as_str(),
            row.error.as_deref().unwrap_or_default(),
        ];
        text.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        text.push('\n');
    }
    text
}

impl ActivityRow {
    /// The job as `user` sees it: as its caller (what they paid), as the serving agent's owner
    /// (what they earned), or both.
    pub(crate) fn new(job: &Job, user: Uuid) -> ActivityRow {
        let is_caller = job.caller.0 == user;
        let is_owner = job.served.as_ref().is_some_and(|s| s.owner.0 == user);
        let paid = job.total_cost.micros();
        let earned = job.agent_cost.micros() - job.win_fee.micros();
        let (role, amount) = match (is_caller, is_owner) {
            (true, true) => ("caller+owner", earned - paid),
            (true, false) => ("caller", -paid),
            _ => ("owner", earned),
        };
        ActivityRow {
            id: job.id.to_string(),
            created_at: job.created_at.to_rfc3339(),
            role,
            category: job.category.clone(),
            model: job.requested_model.clone(),
            agent: job.served.as_ref().map(|s| s.agent_slug.clone()),
            status: job.status.clone(),
            amount: auction_engine::MicroCredits::from_micros(amount).to_string(),
            error: job.error.clone(),
        }
    }
}

/// RFC 4180: quote a field with a comma, quote or line break, doubling inner quotes. A leading
/// `=`, `+`, `-` or `@` is prefixed with `'` so spreadsheets do not run it as a formula.
fn csv_field(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '@'])
        || (field.starts_with('-') && field.parse::<f64>().is_err())
    {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}
