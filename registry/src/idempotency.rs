//! `Idempotency-Key`: the first request with a key runs; a repeat with the same body gets the
//! stored response; a repeat while the first is still running is told so; a repeat with a
//! different body is refused. Keys are per user, so one caller cannot replay another's.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};

use uuid::Uuid;

use crate::entity::idempotency_keys;
use crate::{RegistryError, UserId};

/// How long a request may stay "in flight" before its key can be taken over (the process
/// that held it is presumed dead).
const IN_FLIGHT_TIMEOUT: Duration = Duration::minutes(15);

/// A stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// JSON object of header name to value.
    pub headers: String,
    pub body: String,
}

/// What to do with a request that carries a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdempotencyStart {
    /// First time: run it, then `finish_idempotent`.
    Proceed,
    /// The same request is running right now.
    InFlight,
    /// The key was used with a different request body.
    Mismatch,
    /// Already answered: send this again.
    Replay(StoredResponse),
}

/// Claims a key for a request (by its body's hash).
pub async fn begin_idempotent(
    db: &DatabaseConnection,
    user: UserId,
    key: &str,
    request_hash: &str,
    now: DateTime<Utc>,
    instance: Uuid,
) -> Result<IdempotencyStart, RegistryError> {
    let claim = idempotency_keys::ActiveModel {
        instance_id: Set(Some(instance)),
        user_id: Set(user.0),
        key: Set(key.to_owned()),
        request_hash: Set(request_hash.to_owned()),
        status: Set("in_flight".to_owned()),
        response_status: Set(None),
        response_body: Set(None),
        response_headers: Set(None),
        created_at: Set(now),
    };
    match claim.insert(db).await {
        Ok(_) => return Ok(IdempotencyStart::Proceed),
        Err(err)
            if matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => {}
        Err(err) => return Err(err.into()),
    }
    let existing = idempotency_keys::Entity::find()
        .filter(idempotency_keys::Column::UserId.eq(user.0))
        .filter(idempotency_keys::Column::Key.eq(key))
        .one(db)
        .await?
        .ok_or(RegistryError::Conflict("idempotency key vanished".into()))?;
    if existing.request_hash != request_hash {
        return Ok(IdempotencyStart::Mismatch);
    }
    match (existing.status.as_str(), existing.response_status, existing.response_body) {
        ("done", Some(status), Some(body)) => Ok(IdempotencyStart::Replay(StoredResponse {
            status: u16::try_from(status).unwrap_or(500),
            headers: existing.response_headers.unwrap_or_else(|| "{}".into()),
            body,
        })),
        _ if now - existing.created_at > IN_FLIGHT_TIMEOUT => {
            // Abandoned by a crashed process: take it over, once (the conditional update).
            let taken = idempotency_keys::Entity::update_many()
                .col_expr(idempotency_keys::Column::CreatedAt, Expr::value(now))
                .col_expr(idempotency_keys::Column::InstanceId, Expr::value(instance))
                .filter(idempotency_keys::Column::UserId.eq(user.0))
                .filter(idempotency_keys::Column::Key.eq(key))
                .filter(idempotency_keys::Column::CreatedAt.eq(existing.created_at))
                .exec(db)
                .await?;
            Ok(if taken.rows_affected == 1 {
                IdempotencyStart::Proceed
            } else {
                IdempotencyStart::InFlight
            })
        }
        _ => Ok(IdempotencyStart::InFlight),
    }
}

/// Stores the response of a request that ran under a key.
pub async fn finish_idempotent(
    db: &DatabaseConnection,
    user: UserId,
    key: &str,
    response: StoredResponse,
) -> Result<(), RegistryError> {
    idempotency_keys::Entity::update_many()
        .col_expr(idempotency_keys::Column::Status, Expr::value("done"))
        .col_expr(idempotency_keys::Column::ResponseStatus, Expr::value(i32::from(response.status)))
        .col_expr(idempotency_keys::Column::ResponseHeaders, Expr::value(response.headers))
        .col_expr(idempotency_keys::Column::ResponseBody, Expr::value(response.body))
        .filter(idempotency_keys::Column::UserId.eq(user.0))
        .filter(idempotency_keys::Column::Key.eq(key))
        .exec(db)
        .await?;
    Ok(())
}

/// Forgets a key whose request failed before doing anything (so that a retry runs anew).
pub async fn release_idempotent(
    db: &DatabaseConnection,
    user: UserId,
    key: &str,
) -> Result<(), RegistryError> {
    idempotency_keys::Entity::delete_many()
        .filter(idempotency_keys::Column::UserId.eq(user.0))
        .filter(idempotency_keys::Column::Key.eq(key))
        .filter(idempotency_keys::Column::Status.eq("in_flight"))
        .exec(db)
        .await?;
    Ok(())
}
