//! The caller's batches: each one's status, line counts and money (what it reserved at the
//! start, what its delivered lines cost, what its lines still hold), a batch auction's award,
//! the output and error files to download, and a cancel button. The same figures as the Batch
//! API (`/v1/batches`), read through the same registry functions, under the session.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use auction_engine::MicroCredits;
use registry::batches::{self, Batch, BatchFile, BatchStatus};
use serde::Deserialize;
use uuid::Uuid;

use crate::batches::AwardRecord;
use crate::routes::batches::batch_file;
use crate::state::AppState;
use crate::web::account::CsrfForm;
use crate::web::home::Nav;
use crate::web::session::Visitor;
use crate::web::{PageError, render, see_other};

/// Batches per page of the list.
const PAGE_SIZE: u64 = 50;

/// One batch as a row of the list and the head of its page.
struct BatchRow {
    id: Uuid,
    created: String,
    endpoint: String,
    status: &'static str,
    total: i64,
    completed: i64,
    failed: i64,
    /// Lines not yet ended.
    open: i64,
    reserved: String,
    auction: bool,
}

impl BatchRow {
    fn new(batch: &Batch) -> BatchRow {
        let counts = batch.counts;
        // A batch that failed validation has no lines: none is open.
        let ended_lines = if batch.status == BatchStatus::Failed {
            counts.total
        } else {
            counts.completed + counts.failed + counts.cancelled
        };
        BatchRow {
            id: batch.id,
            created: time_of(batch.created_at_ms),
            endpoint: batch.endpoint.clone(),
            status: batch.status.as_str(),
            total: counts.total,
            completed: counts.completed,
            failed: counts.failed,
            open: (counts.total - ended_lines).max(0),
            reserved: MicroCredits::from_micros(batch.reserved).to_string(),
            auction: batch.bidding_until_ms.is_some(),
        }
    }
}

fn time_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "batches.html")]
struct ListPage {
    nav: Option<Nav>,
    rows: Vec<BatchRow>,
    older: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    after: String,
}

pub(crate) async fn list(
    visitor: Visitor,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, PageError> {
    let after = match query.after.as_str() {
        "" => None,
        text => Some(Uuid::parse_str(text).map_err(|_| {
            PageError::Api(crate::error::ApiError::validation(
                "after",
                "is not a page of this list",
            ))
        })?),
    };
    let mut listed = batches::list_batches(&state.db, visitor.user, after, PAGE_SIZE + 1).await?;
    let older = (listed.len() as u64 > PAGE_SIZE).then(|| {
        listed.truncate(PAGE_SIZE as usize);
        listed.last().map(|b| format!("/batches?after={}", b.id)).unwrap_or_default()
    });
    let page = ListPage {
        nav: Some(Nav::of(&state, &visitor).await?),
        rows: listed.iter().map(BatchRow::new).collect(),
        older,
    };
    render(StatusCode::OK, &page)
}

/// A line of the award: an agent and the lines it was given.
struct AwardRow {
    agent: String,
    lines: i64,
}

/// A line of the validation errors.
struct ErrorRow {
    line: String,
    param: String,
    message: String,
}

#[derive(Template)]
#[template(path = "batch.html")]
struct BatchPage {
    nav: Option<Nav>,
    batch: BatchRow,
    spent: String,
    held: String,
    running: bool,
    has_output: bool,
    has_errors: bool,
    bidding_until: Option<String>,
    /// The batch-wide cap per line, in credits.
    max_price: Option<String>,
    award: Vec<AwardRow>,
    errors: Vec<ErrorRow>,
    csrf: String,
}

fn batch_id(text: &str) -> Result<Uuid, PageError> {
    let id = text.strip_prefix("batch_").unwrap_or(text);
    Uuid::parse_str(id).map_err(|_| registry::RegistryError::NotFound { what: "batch" }.into())
}

pub(crate) async fn batch(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let id = batch_id(&path)?;
    let not_found = || PageError::from(registry::RegistryError::NotFound { what: "batch" });
    let found = batches::find_batch(&state.db, visitor.user, id).await?.ok_or_else(not_found)?;
    let money = batches::batch_money(&state.db, visitor.user, id).await?.ok_or_else(not_found)?;
    let record: Option<AwardRecord> =
        found.award.as_deref().and_then(|text| serde_json::from_str(text).ok());
    let award = record
        .map(|record| {
            record
                .award
                .into_iter()
                .map(|share| AwardRow {
                    agent: share.agent.unwrap_or_else(|| share.agent_id.to_string()),
                    lines: share.lines,
                })
                .collect()
        })
        .unwrap_or_default();
    let errors: Option<serde_json::Value> =
        found.errors.as_deref().and_then(|text| serde_json::from_str(text).ok());
    let errors = errors
        .as_ref()
        .and_then(|e| e["data"].as_array())
        .map(|rows| {
            rows.iter()
                .map(|row| ErrorRow {
                    line: row["line"].as_i64().map(|n| n.to_string()).unwrap_or_default(),
                    param: row["param"].as_str().unwrap_or_default().to_owned(),
                    message: row["message"].as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    let page = BatchPage {
        nav: Some(Nav::of(&state, &visitor).await?),
        batch: BatchRow::new(&found),
        spent: MicroCredits::from_micros(money.spent).to_string(),
        held: MicroCredits::from_micros(money.held).to_string(),
        running: matches!(found.status, BatchStatus::InProgress | BatchStatus::Validating),
        has_output: found.has_output,
        has_errors: found.has_errors,
        bidding_until: found.bidding_until_ms.map(time_of),
        max_price: found.max_price.map(|m| MicroCredits::from_micros(m).to_string()),
        award,
        errors,
        csrf: visitor.csrf.clone(),
    };
    render(StatusCode::OK, &page)
}

/// `POST /batches/{id}/cancel`: as `POST /v1/batches/{id}/cancel`, from the batch's page.
pub(crate) async fn cancel(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    visitor.check_csrf(&form.csrf)?;
    let id = batch_id(&path)?;
    let now_ms = state.now().timestamp_millis();
    state
        .bank
        .cancel_batch(visitor.user, id, now_ms)
        .await?
        .ok_or(registry::RegistryError::NotFound { what: "batch" })?;
    Ok(see_other(&format!("/batches/{id}")))
}

/// The output file, as `GET /v1/files/file-out-{id}/content` gives it.
pub(crate) async fn output(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    download(visitor, state, &path, BatchFile::Output).await
}

/// The error file, as `GET /v1/files/file-err-{id}/content` gives it.
pub(crate) async fn errors(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    download(visitor, state, &path, BatchFile::Errors).await
}

async fn download(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: &str,
    which: BatchFile,
) -> Result<HttpResponse, PageError> {
    let id = batch_id(path)?;
    let mut response = batch_file(state, visitor.user, id, which).await?;
    let name = match which {
        BatchFile::Output => format!("attachment; filename=\"batch_{id}_output.jsonl\""),
        BatchFile::Errors => format!("attachment; filename=\"batch_{id}_errors.jsonl\""),
    };
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&name) {
        response.headers_mut().insert(actix_web::http::header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
