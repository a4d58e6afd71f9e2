//! registry's integration tests: one binary, a module per concern. Each test runs on a fresh
//! SQLite file and, when `TEST_DATABASE_URL` is set, on a fresh Postgres database too.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod accounts;
mod agents;
mod bank;
mod batches;
mod figures;
mod helpers;
mod ledger;
mod schema;
