//! API keys: created shown-once, stored as SHA-256, listed by prefix, revoked for good.
//!
//! Every query is scoped by the owning user in SQL: another user's key is "not found", never
//! "forbidden", so ids cannot be probed.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

use crate::credentials::{generate_api_key, hash_secret, hashes_match};
use crate::entity::api_keys;
use crate::{KeyName, RegistryError, UserId};

/// How stale `last_used_at` may get before a request refreshes it. Writing it on every request
/// would turn every authenticated read into a write.
const LAST_USED_RESOLUTION: Duration = Duration::seconds(60);

/// An API key as listed: never the secret, only its prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key just created: its info and the secret, which is not stored and cannot be shown again.
#[derive(Clone, Debug)]
pub struct CreatedApiKey {
    pub info: ApiKeyInfo,
    pub secret: String,
}

/// Who a valid key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyOwner {
    pub key_id: Uuid,
    pub user_id: UserId,
}

impl From<api_keys::Model> for ApiKeyInfo {
    fn from(row: api_keys::Model) -> ApiKeyInfo {
        ApiKeyInfo {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        }
    }
}

pub async fn create_api_key(
    db: &DatabaseConnection,
    user_id: UserId,
    name: KeyName,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<CreatedApiKey, RegistryError> {
    let generated = generate_api_key();
    let row = api_keys::ActiveModel {
        id: Set(id),
        user_id: Set(user_id.0),
        name: Set(name.as_str().to_owned()),
        prefix: Set(generated.prefix),
        key_hash: Set(generated.hash),
        created_at: Set(now),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(CreatedApiKey { info: row.into(), secret: generated.secret })
}

/// The user's keys, newest first, revoked ones included (with `revoked_at`).
pub async fn list_api_keys(
    db: &DatabaseConnection,
    user_id: UserId,
) -> Result<Vec<ApiKeyInfo>, RegistryError> {
    let rows = api_keys::Entity::find()
        .filter(api_keys::Column::UserId.eq(user_id.0))
        .order_by_desc(api_keys::Column::CreatedAt)
        .order_by_desc(api_keys::Column::Id)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(ApiKeyInfo::from).collect())
}

/// Revokes one of the user's keys. Revoking an already revoked key of one's own succeeds;
/// someone else's key, or no key, is `NotFound`.
pub async fn revoke_api_key(
    db: &DatabaseConnection,
    user_id: UserId,
    key_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    let result = api_keys::Entity::update_many()
        .col_expr(api_keys::Column::RevokedAt, Expr::value(now))
        .filter(api_keys::Column::Id.eq(key_id))
        .filter(api_keys::Column::UserId.eq(user_id.0))
        .filter(api_keys::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    if result.rows_affected == 1 {
        return Ok(());
    }
    let owned = api_keys::Entity::find()
        .filter(api_keys::Column::Id.eq(key_id))
        .filter(api_keys::Column::UserId.eq(user_id.0))
        .one(db)
        .await?;
    match owned {
        Some(_) => Ok(()),
        None => Err(RegistryError::NotFound { what: "api key" }),
    }
}

/// The owner of a live key, or `None` for an unknown or revoked one. Refreshes `last_used_at`
/// at most once a minute.
pub async fn authenticate_api_key(
    db: &DatabaseConnection,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<Option<KeyOwner>, RegistryError> {
    let hash = hash_secret(secret);
    let row = api_keys::Entity::find()
        .filter(api_keys::Column::KeyHash.eq(hash.as_str()))
        .filter(api_keys::Column::RevokedAt.is_null())
        .one(db)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    // The index lookup already matched; the constant-time comparison keeps the final decision
    // independent of how many leading bytes agree, whatever the database did.
    if !hashes_match(&row.key_hash, &hash) {
        return Ok(None);
    }
    let stale = row.last_used_at.is_none_or(|at| now - at > LAST_USED_RESOLUTION);
    if stale {
        api_keys::Entity::update_many()
            .col_expr(api_keys::Column::LastUsedAt, Expr::value(now))
            .filter(api_keys::Column::Id.eq(row.id))
            .filter(
                Condition::any()
                    .add(api_keys::Column::LastUsedAt.is_null())
                    .add(api_keys::Column::LastUsedAt.lt(now - LAST_USED_RESOLUTION)),
            )
            .exec(db)
            .await?;
    }
    Ok(Some(KeyOwner { key_id: row.id, user_id: UserId(row.user_id) }))
}

/// Keys already checked, by hash, for the one server on its database (a SQLite file), where
/// every revoke passes through this process and calls [`ApiKeyCache::forget`] before it
/// answers. A key is read from the database once, and again each minute to keep its
/// `last_used_at`; in between it is checked in memory. Never used where several instances
/// share the database: there a revoke on one must hold on every other at once.
#[derive(Debug, Default)]
pub struct ApiKeyCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (KeyOwner, DateTime<Utc>)>>,
    /// Bumped by every revoke: a read of the database that started before it is not cached.
    revocations: std::sync::atomic::AtomicU64,
}

/// The most keys the cache remembers; past it, it starts afresh.
const KEY_CACHE_LIMIT: usize = 100_000;

impl ApiKeyCache {
    /// [`authenticate_api_key`], from memory when the key was checked in the last minute.
    pub async fn authenticate(
        &self,
        db: &DatabaseConnection,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<KeyOwner>, RegistryError> {
        use std::sync::atomic::Ordering;
        let hash = hash_secret(secret);
        if let Ok(entries) = self.entries.lock()
            && let Some((owner, checked_at)) = entries.get(&hash)
            && now - *checked_at < LAST_USED_RESOLUTION
        {
            return Ok(Some(*owner));
        }
        let epoch = self.revocations.load(Ordering::SeqCst);
        let owner = authenticate_api_key(db, secret, now).await?;
        if let Ok(mut entries) = self.entries.lock() {
            match owner {
                Some(owner) if self.revocations.load(Ordering::SeqCst) == epoch => {
                    if entries.len() >= KEY_CACHE_LIMIT {
                        entries.clear();
                    }
                    entries.insert(hash, (owner, now));
                }
                _ => {
                    entries.remove(&hash);
                }
            }
        }
        Ok(owner)
    }

    /// A key was revoked: it is checked against the database again from now on.
    pub fn forget(&self, key_id: Uuid) {
        self.revocations.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (owner, _)| owner.key_id != key_id);
        }
    }
}
