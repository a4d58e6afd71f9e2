//! `POST /internal/admin/grant`: `gavel admin grant` beside a running server on a SQLite file
//! (see `local_admin`). Not part of the public API, and not in its document: it answers only
//! a loopback peer holding this run's door token, and only when the door is open.

use actix_web::{HttpRequest, HttpResponse, web};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::local_admin::{GrantReply, GrantRequest};
use crate::state::AppState;

pub(crate) async fn grant(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<GrantRequest>,
) -> Result<HttpResponse, ApiError> {
    let Some(token) = state.local_admin_token.as_deref() else {
        return Err(ApiError::NoRoute { method: "POST".into(), path: req.path().to_owned() });
    };
    let loopback = req.peer_addr().is_some_and(|peer| peer.ip().is_loopback());
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !loopback || !bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        return Err(ApiError::Unauthenticated);
    }
    let request = body.into_inner();
    let amount = auction_engine::MicroCredits::parse_decimal(&request.credits)
        .map_err(|err| ApiError::validation("credits", err.to_string()))?;
    let email = registry::Email::parse(&request.email)
        .map_err(|err| ApiError::validation("email", err.to_string()))?;
    let user = registry::find_credentials_by_email(&state.db, &email)
        .await?
        .ok_or(ApiError::NotFound { what: "user" })?
        .user;
    state.bank.admin_grant(user.id, amount, request.transfer_id, state.now()).await?;
    let balance = state.bank.balance(user.id).await?;
    Ok(HttpResponse::Ok().json(GrantReply {
        balance: balance.balance.to_string(),
        available: balance.available.to_string(),
    }))
}
