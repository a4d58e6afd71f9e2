//! registry's integration tests: one binary, a module per concern. Each test runs on a fresh
//! SQLite file and, when `TEST_DATABASE_URL` is set, on a fresh Postgres database too.

mod accounts;
mod helpers;
mod ledger;
