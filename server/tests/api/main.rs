//! The server's integration tests: the real app on port 0 with a fresh database, driven over
//! HTTP. One binary, a module per concern.

mod auth;
mod config;
mod credits;
mod errors;
mod health;
mod helpers;
mod keys;
mod rate_limit;
