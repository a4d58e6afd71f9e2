//! Credits: the wallet summary and its ledger, newest entry first.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::routes::{ListObject, page_limit};
use crate::state::AppState;

/// Largest page of ledger entries.
const MAX_PAGE: u64 = 200;
const DEFAULT_PAGE: u64 = 50;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LedgerQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 200 entries (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
}

/// The wallet; amounts are decimal strings of credits.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreditSummary {
    balance: String,
    /// Reserved by jobs in flight.
    held: String,
    /// `balance - held`: what the next job may spend.
    available: String,
    /// Credited on the first request of each month.
    monthly_grant: String,
}

/// One ledger entry of the user's wallet.
#[derive(Serialize, ToSchema)]
pub(crate) struct LedgerEntryView {
    id: String,
    /// The transfer this entry is one leg of.
    transfer_id: Uuid,
    /// `grant`, `charge`, `payout`, `fee`, ...
    kind: String,
    /// Signed: negative leaves the wallet.
    amount: String,
    job_id: Option<Uuid>,
    memo: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct LedgerPage {
    object: ListObject,
    data: Vec<LedgerEntryView>,
    has_more: bool,
    next_cursor: Option<String>,
}

/// `GET /api/credits`.
#[utoipa::path(get, path = "/api/credits", operation_id = "credit_summary", tag = "credits", security(("bearer" = [])),
    responses((status = 200, body = CreditSummary), (status = 401, body = ErrorBody)))]
pub(crate) async fn summary(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let balance = state.bank.balance(caller.user_id).await?;
    Ok(HttpResponse::Ok().json(CreditSummary {
        balance: balance.balance.to_string(),
        held: balance.held.to_string(),
        available: balance.available.to_string(),
        monthly_grant: state.monthly_grant().to_string(),
    }))
}

/// `GET /api/credits/ledger?cursor=&limit=`: entries with `amount` as a decimal string;
/// `next_cursor` is null on the last page.
#[utoipa::path(get, path = "/api/credits/ledger", operation_id = "credit_ledger", tag = "credits", security(("bearer" = [])),
    params(LedgerQuery),
    responses((status = 200, body = LedgerPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn ledger(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<LedgerQuery>,
) -> Result<HttpResponse, ApiError> {
    let before = match query.cursor.as_deref() {
        None => None,
        Some(text) => Some(text.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
            ApiError::validation("cursor", "is not a cursor from a previous page")
        })?),
    };
    let limit = page_limit(query.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let page = registry::ledger::entries(&state.db, caller.user_id, before, limit).await?;
    let data = page
        .entries
        .into_iter()
        .map(|entry| LedgerEntryView {
            id: entry.id.to_string(),
            transfer_id: entry.transfer_id,
            kind: entry.kind,
            amount: entry.amount.to_string(),
            job_id: entry.job_id,
            memo: entry.memo,
            created_at: entry.created_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(LedgerPage {
        object: ListObject::List,
        data,
        has_more: page.next_cursor.is_some(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}
