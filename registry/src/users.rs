//! Users: sign-up, lookup by email for login, lookup by id.
//!
//! Creating a user also creates the user's wallet account (same id) in the same transaction,
//! so no user ever exists without a wallet.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use crate::database::begin_write;
use crate::entity::{accounts, users};
use crate::ledger::AccountKind;
use crate::{Email, Handle, RegistryError, UserId};

/// A user as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub handle: String,
    pub created_at: DateTime<Utc>,
}

/// What login needs: the user and the stored password hash.
#[derive(Clone, Debug)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: String,
}

/// A new user, already validated and hashed.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub email: Email,
    /// `None`: derive one from the email.
    pub handle: Option<Handle>,
    pub password_hash: String,
}

impl From<users::Model> for User {
    fn from(row: users::Model) -> User {
        User {
            id: UserId(row.id),
            email: row.email,
            handle: row.handle,
            created_at: row.created_at,
        }
    }
}

/// Creates a user and its wallet. Fails with `EmailTaken` or `HandleTaken`; a chosen handle
/// that is taken is an error, a derived one gets a random suffix.
pub async fn create_user(
    db: &DatabaseConnection,
    new_user: NewUser,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<User, RegistryError> {
    if find_credentials_by_email(db, &new_user.email).await?.is_some() {
        return Err(RegistryError::EmailTaken);
    }
    let chosen = new_user.handle.is_some();
    let mut handle = match &new_user.handle {
        Some(handle) => handle.clone(),
        None => Handle::from_email(&new_user.email, None),
    };
    for attempt in 0..5 {
        let taken = users::Entity::find()
            .filter(users::Column::Handle.eq(handle.as_str()))
            .one(db)
            .await?
            .is_some();
        if !taken {
            break;
        }
        if chosen || attempt == 4 {
            return Err(RegistryError::HandleTaken);
        }
        let suffix = &Uuid::new_v4().simple().to_string()[..6];
        handle = Handle::from_email(&new_user.email, Some(suffix));
    }

    let (txn, _gate) = begin_write(db).await?;
    let row = users::ActiveModel {
        id: Set(id),
        email: Set(new_user.email.as_str().to_owned()),
        handle: Set(handle.as_str().to_owned()),
        password_hash: Set(new_user.password_hash),
        created_at: Set(now),
    };
    let inserted = match row.insert(&txn).await {
        Ok(row) => row,
        // Lost a race with a concurrent sign-up: tell which unique key collided.
        Err(err) => return Err(map_unique_violation(err)),
    };
    accounts::ActiveModel {
        id: Set(id),
        kind: Set(AccountKind::UserWallet.as_str().to_owned()),
        balance: Set(0),
        held: Set(0),
        grant_period: Set(None),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok(inserted.into())
}

fn map_unique_violation(err: sea_orm::DbErr) -> RegistryError {
    match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(message)) => {
            if message.contains("handle") {
                RegistryError::HandleTaken
            } else {
                RegistryError::EmailTaken
            }
        }
        _ => RegistryError::Database(err),
    }
}

/// The user with this email and its password hash, if any.
pub async fn find_credentials_by_email(
    db: &DatabaseConnection,
    email: &Email,
) -> Result<Option<UserCredentials>, RegistryError> {
    let row = users::Entity::find().filter(users::Column::Email.eq(email.as_str())).one(db).await?;
    Ok(row.map(|row| {
        let password_hash = row.password_hash.clone();
        UserCredentials { user: row.into(), password_hash }
    }))
}

/// The user with this id, if any.
pub async fn find_user(db: &DatabaseConnection, id: UserId) -> Result<Option<User>, RegistryError> {
    Ok(users::Entity::find_by_id(id.0).one(db).await?.map(User::from))
}
