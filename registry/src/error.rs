//! `RegistryError`: every way a registry operation can fail, with the context a caller needs.
//!
//! The server maps each variant to one HTTP status in one exhaustive `match`; nothing here
//! knows about HTTP.

use auction_engine::MicroCredits;
use uuid::Uuid;

/// Everything that can go wrong in `registry`.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Input that does not parse into a domain value. `field` is the wire name of the field.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("email is already registered")]
    EmailTaken,
    #[error("handle is already taken")]
    HandleTaken,
    #[error("you already have an agent with this name")]
    AgentNameTaken,
    /// The object exists and may be read, but only its owner may change it.
    #[error("only the owner can change this {what}")]
    Forbidden { what: &'static str },
    #[error("the price sheet was changed too often; retry in {retry_after_secs} s")]
    PriceChangeLimited { retry_after_secs: u64 },
    /// An optimistic update kept losing to concurrent writers.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The object does not exist, or belongs to someone else (the two are indistinguishable).
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("insufficient credits: {requested} requested, {available} available")]
    InsufficientCredits { requested: MicroCredits, available: MicroCredits },
    /// A transfer would take a wallet other than the payer's below zero (e.g. a win fee larger
    /// than the owner's earnings and balance).
    #[error("account {account} cannot cover a debit of {amount}")]
    AccountCannotCover { account: Uuid, amount: MicroCredits },
    #[error("job {job_id} is rated already")]
    AlreadyRated { job_id: Uuid },
    #[error("job {job_id} already has a hold")]
    HoldExists { job_id: Uuid },
    #[error("the hold of job {job_id} is {status}, not active")]
    HoldNotActive { job_id: Uuid, status: String },
    /// A settlement whose parts do not add up; a bug in the caller, refused before any write.
    #[error("unbalanced settlement: {0}")]
    Unbalanced(String),
    #[error("amount overflow")]
    Overflow,
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// The SQLite writer's own connection failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The writer or the book cannot serve (stopped, poisoned): nothing was written.
    #[error("storage unavailable: {0}")]
    Storage(String),
}

impl RegistryError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> RegistryError {
        RegistryError::Invalid { field, message: message.into() }
    }
}
