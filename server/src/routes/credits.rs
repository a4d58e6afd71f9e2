//! Credits: the wallet summary and its ledger, newest entry first.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::page_limit;
use crate::state::AppState;

/// Largest page of ledger entries.
const MAX_PAGE: u64 = 200;
const DEFAULT_PAGE: u64 = 50;

#[derive(Deserialize)]
pub(crate) struct LedgerQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

/// `GET /api/credits`.
pub(crate) async fn summary(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let balance = registry::ledger::balance(&state.db, caller.user_id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "balance": balance.balance.to_string(),
        "held": balance.held.to_string(),
        "available": balance.available.to_string(),
        "monthly_grant": state.monthly_grant().to_string(),
    })))
}

/// `GET /api/credits/ledger?cursor=&limit=`: entries with `amount` as a decimal string;
/// `next_cursor` is null on the last page.
pub(crate) async fn ledger(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<LedgerQuery>,
) -> Result<HttpResponse, ApiError> {
    let before = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
            ApiError::validation("cursor", "is not a cursor from a previous page")
        })?),
    };
    let limit = page_limit(query.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let page = registry::ledger::entries(&state.db, caller.user_id, before, limit).await?;
    let data: Vec<_> = page
        .entries
        .iter()
        .map(|entry| {
            json!({
                "id": entry.id.to_string(),
                "transfer_id": entry.transfer_id,
                "kind": entry.kind,
                "amount": entry.amount.to_string(),
                "job_id": entry.job_id,
                "memo": entry.memo,
                "created_at": entry.created_at,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "has_more": page.next_cursor.is_some(),
        "next_cursor": page.next_cursor.map(|c| c.to_string()),
    })))
}
