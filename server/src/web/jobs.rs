//! The jobs log (filters kept in the URL, pages by cursor, CSV export) and a job's page: the
//! auction's transcript, the attempts as a waterfall, the settlement and the rating.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, web};
use askama::Template;
use registry::feedback::{self, Feedback, Rating};
use registry::jobs::{ActivityFilter, ActivityRole, Job, JobStatus};
use serde::Deserialize;
use uuid::Uuid;

use crate::activity::{ActivityRow, activity_csv};
use crate::error::ApiError;
use crate::jobs::record::{AuditDocument, CandidateRecord, PriceBasisRecord};
use crate::state::AppState;
use crate::web::home::Nav;
use crate::web::session::Visitor;
use crate::web::{PageError, render, see_other};

/// Jobs per page of the log.
const PAGE_SIZE: u64 = 50;
/// The most rows one CSV export carries.
const CSV_MAX_ROWS: usize = 10_000;

/// The log's filters, as they appear in its URL.
#[derive(Deserialize, Default)]
pub(crate) struct LogQuery {
    #[serde(default)]
    role: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    cursor: String,
}

/// A select's option.
struct Choice {
    value: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct LogPage {
    nav: Option<Nav>,
    roles: Vec<Choice>,
    statuses: Vec<Choice>,
    categories: Vec<Choice>,
    rows: Vec<ActivityRow>,
    /// The next (older) page's URL, when there is one.
    older: Option<String>,
    /// The CSV export of these filters.
    csv: String,
}

const ROLES: [&str; 3] = ["all", "caller", "owner"];
const STATUSES: [&str; 5] = ["all", "delivered", "failed", "running", "recommended"];

impl LogQuery {
    /// The registry filter, or the field that does not parse.
    fn filter(&self, limit: u64) -> Result<ActivityFilter, PageError> {
        let invalid = |field: &str, allowed: &str| {
            PageError::Api(ApiError::validation(field, format!("must be one of: {allowed}")))
        };
        let role = match self.role.as_str() {
            "" | "all" => None,
            "caller" => Some(ActivityRole::Caller),
            "owner" => Some(ActivityRole::Owner),
            _ => return Err(invalid("role", &ROLES.join(", "))),
        };
        let status = match self.status.as_str() {
            "" | "all" => None,
            s if STATUSES.contains(&s) => Some(s.to_owned()),
            _ => return Err(invalid("status", &STATUSES.join(", "))),
        };
        let category = match self.category.as_str() {
            "" | "all" => None,
            c if registry::agents::CATEGORIES.contains(&c) => Some(c.to_owned()),
            _ => return Err(invalid("category", &registry::agents::CATEGORIES.join(", "))),
        };
        let before = match self.cursor.as_str() {
            "" => None,
            c => Some(Uuid::parse_str(c).map_err(|_| {
                PageError::Api(ApiError::validation("cursor", "is not a page of this log"))
            })?),
        };
        Ok(ActivityFilter { role, status, category, since: None, until: None, before, limit })
    }

    /// This query's URL parameters with another cursor.
    fn url(&self, path: &str, cursor: Option<&str>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in
            [("role", &self.role), ("status", &self.status), ("category", &self.category)]
        {
            if !value.is_empty() && value != "all" {
                query.append_pair(name, value);
            }
        }
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
        let query = query.finish();
        if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") }
    }
}

fn choices(values: &[&'static str], current: &str) -> Vec<Choice> {
    let current = if current.is_empty() { "all" } else { current };
    values.iter().map(|value| Choice { value, selected: *value == current }).collect()
}

pub(crate) async fn log(
    visitor: Visitor,
    state: web::Data<AppState>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, PageError> {
    let filter = query.filter(PAGE_SIZE + 1)?;
    let mut jobs = registry::jobs::activity(&state.db, visitor.user, filter).await?;
    let has_more = jobs.len() as u64 > PAGE_SIZE;
    jobs.truncate(PAGE_SIZE as usize);
    let older = has_more.then(|| {
        let cursor = jobs.last().map(|job| job.id.to_string());
        query.url("/jobs", cursor.as_deref())
    });
    let mut categories = vec!["all"];
    categories.extend(registry::agents::CATEGORIES.iter().copied());
    let page = LogPage {
        nav: Some(Nav::of(&state, &visitor).await?),
        roles: choices(&ROLES, &query.role),
        statuses: choices(&STATUSES, &query.status),
        categories: choices(&categories, &query.category),
        rows: jobs.iter().map(|job| ActivityRow::new(job, visitor.user.0)).collect(),
        older,
        csv: query.url("/jobs.csv", None),
    };
    render(StatusCode::OK, &page)
}

/// The log's filters as a CSV file: every matching job, newest first, up to
/// [`CSV_MAX_ROWS`].
pub(crate) async fn csv(
    visitor: Visitor,
    state: web::Data<AppState>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, PageError> {
    let mut rows = Vec::new();
    let mut filter = query.filter(1000)?;
    loop {
        let jobs = registry::jobs::activity(&state.db, visitor.user, filter.clone()).await?;
        let Some(last) = jobs.last() else { break };
        filter.before = Some(last.id);
        let full = jobs.len() as u64 == filter.limit;
        rows.extend(jobs.iter().map(|job| ActivityRow::new(job, visitor.user.0)));
        if !full || rows.len() >= CSV_MAX_ROWS {
            break;
        }
    }
    rows.truncate(CSV_MAX_ROWS);
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((header::CONTENT_DISPOSITION, "attachment; filename=\"gavel-jobs.csv\""))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(activity_csv(&rows)))
}

/// A candidate's line in the transcript.
struct CandidateRow {
    rank: String,
    slug: String,
    bid: String,
    reliability: String,
    latency_factor: String,
    rating_factor: String,
    factor: String,
    effective_price: String,
    price: String,
    /// `ranked`, or the exclusion's code and detail.
    verdict: String,
    won: bool,
}

/// An attempt in the waterfall: its bar starts where the attempt started.
struct AttemptRow {
    rank: u32,
    agent: String,
    outcome: String,
    latency_ms: u64,
    status: String,
    x: u64,
    width: u64,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    nav: Option<Nav>,
    csrf: String,
    job: Job,
    winner: String,
    clearing_price: String,
    explanation: String,
    price_rule: String,
    candidates: Vec<CandidateRow>,
    omitted: usize,
    attempts: Vec<AttemptRow>,
    waterfall_ms: u64,
    rating: Option<Feedback>,
    can_rate: bool,
}

fn job_id(text: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(text).map_err(|_| PageError::Api(ApiError::NotFound { what: "job" }))
}

pub(crate) async fn job(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let id = job_id(&path)?;
    let job = registry::jobs::find_job(&state.db, visitor.user, id)
        .await?
        .ok_or(ApiError::NotFound { what: "job" })?;
    let audit = registry::jobs::find_auction(&state.db, visitor.user, job.auction_id)
        .await?
        .ok_or(ApiError::NotFound { what: "job" })?;
    let record: AuditDocument = serde_json::from_str(&audit.record).map_err(ApiError::internal)?;
    let attempts = registry::jobs::job_attempts(&state.db, job.id).await?;
    let rating = feedback::find_feedback(&state.db, visitor.user, job.id).await?;
    let delivered = job.status == JobStatus::Delivered.as_str();
    let fresh = job.finished_at.is_some_and(|finished| {
        state.now() - finished <= chrono::Duration::days(feedback::RATING_WINDOW_DAYS)
    });

    let winner = record.outcome.winner.clone().unwrap_or_else(|| "no one".to_owned());
    let mut price_rule = String::new();
    let candidates = record
        .candidates
        .iter()
        .map(|candidate| match candidate {
            CandidateRecord::Ranked(ranked) => {
                let won = ranked.rank == 1;
                if won {
                    price_rule = match &ranked.price_basis {
                        PriceBasisRecord::SecondScore { runner_up_slug, formula, .. } => format!(
                            "second score: the runner-up ({}) set the price; {formula}",
                            runner_up_slug.as_deref().unwrap_or("unknown")
                        ),
                        PriceBasisRecord::Reserve { reserve, .. } => {
                            format!(
                                "reserve: no runner-up set the price, the reserve {reserve} did"
                            )
                        }
                        PriceBasisRecord::OwnBid => {
                            "own bid: the winner is paid its bid".to_owned()
                        }
                    };
                }
                CandidateRow {
                    rank: ranked.rank.to_string(),
                    slug: ranked.slug.clone(),
                    bid: format!("{} ({})", ranked.bid, ranked.bid_source),
                    reliability: format!(
                        "{:.3} ({})",
                        ranked.quality.reliability, ranked.quality.reliability_source
                    ),
                    latency_factor: format!("{:.3}", ranked.quality.latency_factor),
                    rating_factor: format!("{:.3}", ranked.quality.rating_factor),
                    factor: format!("{:.3}", ranked.quality.factor),
                    effective_price: ranked.effective_price.clone(),
                    price: ranked.price.clone(),
                    verdict: "ranked".to_owned(),
                    won,
                }
            }
            CandidateRecord::Excluded(excluded) => CandidateRow {
                rank: "-".to_owned(),
                slug: excluded.slug.clone(),
                bid: "-".to_owned(),
                reliability: "-".to_owned(),
                latency_factor: "-".to_owned(),
                rating_factor: "-".to_owned(),
                factor: "-".to_owned(),
                effective_price: "-".to_owned(),
                price: "-".to_owned(),
                verdict: format!("excluded: {} ({})", excluded.reason, excluded.detail),
                won: false,
            },
        })
        .collect();

    let start = attempts.first().map(|a| a.started_at);
    let mut rows = Vec::with_capacity(attempts.len());
    for attempt in &attempts {
        let offset = start
            .map(|s| (attempt.started_at - s).num_milliseconds().max(0))
            .and_then(|ms| u64::try_from(ms).ok())
            .unwrap_or(0);
        rows.push(AttemptRow {
            rank: attempt.rank,
            agent: attempt.agent_slug.clone(),
            outcome: attempt.outcome.clone(),
            latency_ms: attempt.latency_ms,
            status: attempt.http_status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            x: offset,
            width: attempt.latency_ms.max(1),
        });
    }
    let waterfall_ms = rows.iter().map(|r| r.x + r.width).max().unwrap_or(1).max(1);
    // Scale to a 600-unit-wide SVG.
    for row in &mut rows {
        row.x = row.x * 600 / waterfall_ms;
        row.width = (row.width * 600 / waterfall_ms).max(2);
    }

    let page = JobPage {
        nav: Some(Nav::of(&state, &visitor).await?),
        csrf: visitor.csrf.clone(),
        winner,
        clearing_price: record.outcome.clearing_price.clone().unwrap_or_else(|| "-".to_owned()),
        explanation: record.outcome.explanation.clone(),
        price_rule,
        candidates,
        omitted: record.omitted_candidates.values().sum(),
        attempts: rows,
        waterfall_ms,
        can_rate: delivered && fresh && rating.is_none(),
        rating,
        job,
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub(crate) struct RatingForm {
    csrf: String,
    rating: String,
    #[serde(default)]
    reason: String,
}

pub(crate) async fn rate(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<RatingForm>,
) -> Result<HttpResponse, PageError> {
    visitor.check_csrf(&form.csrf)?;
    let id = job_id(&path)?;
    let rating = Rating::parse(&form.rating)?;
    let reason = feedback::parse_reason(Some(&form.reason))?;
    feedback::rate_job(&state.db, visitor.user, id, rating, reason, state.now()).await?;
    state.agent_index.announce();
    Ok(see_other(&format!("/jobs/{id}")))
}
