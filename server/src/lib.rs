//! Gavel's server: the HTTP API, the dashboard's pages, authentication, configuration, rate
//! limiting, metrics and the CLI, wired together in `startup`.
//!
//! `server` is the only crate that knows about HTTP, JSON wire shapes, environment variables
//! or the wall clock. Dependencies point one way: server -> registry -> auction-engine.

pub mod activity;
pub(crate) mod agent_registration;
pub mod agent_slots;
pub mod auth;
pub mod batches;
pub mod body_timeout;
pub mod cli;
pub mod configuration;
pub mod data_lock;
pub mod demo;
pub(crate) mod discovery;
pub mod egress;
pub mod error;
pub mod input;
pub mod jobs;
pub mod local_admin;
pub mod mcp_stdio;
pub mod metrics;
pub mod rate_limit;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod vocabulary;
pub mod web;
