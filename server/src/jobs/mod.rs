//! The job path: parse a request, run the auction, hold, dispatch with fallback, settle, and
//! keep the record. Routes in `routes::v1` are thin wrappers around `service::run_job`.

pub mod bids;
pub mod breaker;
pub mod chat_shape;
pub mod dispatch;
pub mod record;
pub mod request;
pub mod service;
pub mod stream;
