//! Gavel's domain and persistence.
//!
//! `registry` owns users, API keys, the credits ledger and the agent registry (jobs and
//! auctions join them in a later milestone). It turns raw input into domain values (`Email::parse`, ...), stores
//! them through sea-orm on SQLite or Postgres, and is the only crate that touches the database.
//!
//! Absent on purpose: HTTP, status codes, JWTs, Redis, the wall clock. Time comes in as a
//! `now` argument; sea-orm entities are `pub(crate)` and never cross the API.

pub mod agents;
mod api_keys;
mod bank;
pub mod batches;
mod credentials;
mod database;
mod domain;
mod entity;
mod error;
pub mod feedback;
pub mod figures;
pub mod idempotency;
pub mod instances;
pub mod jobs;
pub mod ledger;
mod pg_writer;
mod script;
mod shared_read;
mod sqlite_writer;
#[cfg(feature = "testing")]
pub mod testing;
mod users;
pub mod web_sessions;

pub use api_keys::{
    ApiKeyCache, ApiKeyInfo, CreatedApiKey, KeyOwner, authenticate_api_key, create_api_key,
    list_api_keys, revoke_api_key,
};
pub use bank::{Bank, BankCounts};
pub use credentials::{
    API_KEY_PREFIX, hash_password, random_token, release_hash_memory, verify_password,
};
pub use database::{Backend, connect, sqlite_file};
pub use domain::{Email, Handle, KeyName, Password, UserId};
pub use error::RegistryError;
pub use shared_read::SharedReads;
pub use users::{
    NewUser, User, UserCredentials, create_user, find_credentials_by_email, find_user,
};

/// Re-exported so that callers name the connection type without depending on sea-orm.
pub use sea_orm::DatabaseConnection;
