//! Browser sessions for the dashboard: a random token in an HttpOnly cookie, stored as its
//! SHA-256, with a CSRF token every form of the session carries.
//!
//! The API never reads these: it keeps its Bearer keys and JWTs. A session ends at its expiry
//! or at logout (the row is deleted, so a copied cookie stops working at once). Expired rows
//! are deleted by the next login of anyone, so the table holds live sessions plus at most one
//! login's worth of stale ones.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};

use crate::credentials::{hash_secret, random_token};
use crate::entity::web_sessions;
use crate::{RegistryError, UserId};

/// A session just opened: the cookie's value (never stored) and its CSRF token.
#[derive(Clone, Debug)]
pub struct OpenedSession {
    pub token: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// A live session.
#[derive(Clone, Debug)]
pub struct WebSession {
    pub user: UserId,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// Opens a session for `user`, valid for `lifetime`, and deletes every expired one.
pub async fn open_web_session(
    db: &DatabaseConnection,
    user: UserId,
    lifetime: Duration,
    now: DateTime<Utc>,
) -> Result<OpenedSession, RegistryError> {
    web_sessions::Entity::delete_many()
        .filter(web_sessions::Column::ExpiresAt.lte(now))
        .exec(db)
        .await?;
    let token = random_token();
    let csrf_token = random_token();
    let expires_at = now + lifetime;
    web_sessions::ActiveModel {
        token_hash: Set(hash_secret(&token)),
        user_id: Set(user.0),
        csrf_token: Set(csrf_token.clone()),
        created_at: Set(now),
        expires_at: Set(expires_at),
    }
    .insert(db)
    .await?;
    Ok(OpenedSession { token, csrf_token, expires_at })
}

/// The live session a cookie names, if any. The lookup is by the token's hash, an equality
/// on a primary key: the token itself is never compared or stored.
pub async fn find_web_session(
    db: &DatabaseConnection,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<WebSession>, RegistryError> {
    if token.len() != 64 {
        return Ok(None);
    }
    let row = web_sessions::Entity::find_by_id(hash_secret(token))
        .filter(web_sessions::Column::ExpiresAt.gt(now))
        .one(db)
        .await?;
    Ok(row.map(|row| WebSession {
        user: UserId(row.user_id),
        csrf_token: row.csrf_token,
        expires_at: row.expires_at,
    }))
}

/// Ends the session a cookie names (logout). Ending one that is gone is not an error.
pub async fn end_web_session(db: &DatabaseConnection, token: &str) -> Result<(), RegistryError> {
    web_sessions::Entity::delete_by_id(hash_secret(token)).exec(db).await?;
    Ok(())
}
