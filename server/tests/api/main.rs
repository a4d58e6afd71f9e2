//! The server's integration tests: the real app on port 0 with a fresh database, driven over
//! HTTP. One binary, a module per concern.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod agents;
mod auth;
mod batches;
mod browser;
mod config;
mod credits;
mod egress;
mod errors;
mod faults;
mod hardening;
mod health;
mod helpers;
mod jobs;
mod keys;
mod lifecycle;
mod market;
mod mcp;
mod rate_limit;
mod realtime;
mod schemathesis;
mod sdk;
mod served;
mod streaming;
mod test_agent;
mod web;
