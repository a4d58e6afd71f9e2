//! The job path: parse a request, run the auction, hold, dispatch with fallback, settle, and
//! keep the record. Routes in `routes::v1` are thin wrappers around `service::run_job` (and,
//! for `stream: true`, `service::prepare` then `stream::respond`).
//!
//! Inside, dependencies point one way: `stream` -> `service` -> `settlement` -> `request`,
//! `record`, `dispatch`; `settlement` holds the money rules both paths apply.

pub mod bids;
pub mod breaker;
pub mod chat_shape;
pub mod dispatch;
pub mod record;
pub mod request;
pub mod responses;
pub mod service;
pub mod settlement;
pub mod stream;
