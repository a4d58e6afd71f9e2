//! sea-orm entities: the rows as stored. Hand-written, `pub(crate)`: no entity type appears in
//! `registry`'s public API, so the schema can change without touching `server`.

// sea-orm's derives generate `pub` items; the modules themselves are `pub(crate)`.
#![allow(unreachable_pub)]

pub(crate) mod accounts;
pub(crate) mod agent_categories;
pub(crate) mod agent_price_versions;
pub(crate) mod agent_reputation;
pub(crate) mod agents;
pub(crate) mod api_keys;
pub(crate) mod auctions;
pub(crate) mod batch_bids;
pub(crate) mod batch_lines;
pub(crate) mod batches;
pub(crate) mod files;
pub(crate) mod holds;
pub(crate) mod idempotency_keys;
pub(crate) mod instances;
pub(crate) mod job_attempts;
pub(crate) mod job_feedback;
pub(crate) mod jobs;
pub(crate) mod ledger_entries;
pub(crate) mod registry_state;
pub(crate) mod transfers;
pub(crate) mod users;
pub(crate) mod web_sessions;
