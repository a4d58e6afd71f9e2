//! The Batch API: uploaded files, batches, and one row per batch line.
//!
//! - `files`: a caller's uploaded JSONL (`purpose = 'batch'`), kept whole; a batch's output
//!   and error files are not stored twice, they are read from its lines.
//! - `batches`: the OpenAI batch object's durable state; times are Unix milliseconds.
//! - `batch_lines`: one row per input line, the unit of work. A worker claims a line by a
//!   lease (`lease_owner`, `lease_until`); the line ends `done`, `failed`, `cancelled` or
//!   `expired`, with its response or error.
//! - `batch_bids`: a batch auction's bids, every version kept (an agent's answer to the request
//!   for quote, then each re-bid until the deadline); the latest version of each agent is its
//!   bid at the award. `batches.bidding_until`, `awarded_at` and `award` (the record) and
//!   `batch_lines.agent_id` (the line's awarded agent) belong to it.
//! - `jobs.batch_line_id`: the line a job ran for. At most one *delivered* job per line (a
//!   partial unique index), so a line re-run after a crash or a lost lease can never be
//!   charged twice: the database refuses the second delivery in the transaction that would
//!   have charged it.

// sea-orm-migration's trait spells `&SchemaManager` with an elided lifetime; matching it exactly
// is what `async_trait` needs.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements = match manager.get_database_backend() {
            DbBackend::Postgres => [
                "CREATE TABLE files ( \
                   id uuid PRIMARY KEY, owner_id uuid NOT NULL, purpose text NOT NULL, \
                   filename text NOT NULL, bytes bigint NOT NULL, lines bigint NOT NULL, \
                   content text NOT NULL, created_at bigint NOT NULL)",
                "CREATE INDEX files_owner ON files (owner_id, created_at)",
                "CREATE TABLE batches ( \
                   id uuid PRIMARY KEY, owner_id uuid NOT NULL, api_key_id uuid NULL, \
                   input_file_id uuid NOT NULL, endpoint text NOT NULL, \
                   completion_window text NOT NULL, status text NOT NULL, metadata text NULL, \
                   errors text NULL, total bigint NOT NULL, reserved bigint NOT NULL, \
                   created_at bigint NOT NULL, in_progress_at bigint NULL, \
                   expires_at bigint NOT NULL, finalizing_at bigint NULL, \
                   completed_at bigint NULL, failed_at bigint NULL, expired_at bigint NULL, \
                   cancelling_at bigint NULL, cancelled_at bigint NULL, category text NULL, \
                   bidding_until bigint NULL, awarded_at bigint NULL, award text NULL)",
                "CREATE INDEX batches_owner ON batches (owner_id, id)",
                "CREATE INDEX batches_status ON batches (status)",
                "CREATE TABLE batch_lines ( \
                   id uuid PRIMARY KEY, batch_id uuid NOT NULL, line bigint NOT NULL, \
                   custom_id text NOT NULL, body text NOT NULL, state text NOT NULL, \
                   lease_owner uuid NULL, lease_until bigint NULL, claims bigint NOT NULL, \
                   job_id uuid NULL, status_code bigint NULL, response text NULL, \
                   error_code text NULL, error_message text NULL, finished_at bigint NULL, \
                   agent_id uuid NULL, \
                   UNIQUE (batch_id, custom_id), UNIQUE (batch_id, line))",
                "CREATE INDEX batch_lines_work ON batch_lines (state, lease_until)",
                "CREATE INDEX batch_lines_batch ON batch_lines (batch_id, state)",
                "CREATE TABLE batch_bids ( \
                   batch_id uuid NOT NULL, agent_id uuid NOT NULL, version bigint NOT NULL, \
                   owner_id uuid NOT NULL, price bigint NOT NULL, capacity bigint NULL, \
                   source text NOT NULL, at bigint NOT NULL, \
                   PRIMARY KEY (batch_id, agent_id, version))",
                "ALTER TABLE jobs ADD COLUMN batch_line_id uuid NULL",
                "CREATE UNIQUE INDEX jobs_one_delivery_per_batch_line ON jobs (batch_line_id) \
                   WHERE batch_line_id IS NOT NULL AND status = 'delivered'",
            ],
            _ => [
                "CREATE TABLE files ( \
                   id BLOB PRIMARY KEY, owner_id BLOB NOT NULL, purpose TEXT NOT NULL, \
                   filename TEXT NOT NULL, bytes INTEGER NOT NULL, lines INTEGER NOT NULL, \
                   content TEXT NOT NULL, created_at INTEGER NOT NULL)",
                "CREATE INDEX files_owner ON files (owner_id, created_at)",
                "CREATE TABLE batches ( \
                   id BLOB PRIMARY KEY, owner_id BLOB NOT NULL, api_key_id BLOB NULL, \
                   input_file_id BLOB NOT NULL, endpoint TEXT NOT NULL, \
                   completion_window TEXT NOT NULL, status TEXT NOT NULL, metadata TEXT NULL, \
                   errors TEXT NULL, total INTEGER NOT NULL, reserved INTEGER NOT NULL, \
                   created_at INTEGER NOT NULL, in_progress_at INTEGER NULL, \
                   expires_at INTEGER NOT NULL, finalizing_at INTEGER NULL, \
                   completed_at INTEGER NULL, failed_at INTEGER NULL, expired_at INTEGER NULL, \
                   cancelling_at INTEGER NULL, cancelled_at INTEGER NULL, category TEXT NULL, \
                   bidding_until INTEGER NULL, awarded_at INTEGER NULL, award TEXT NULL)",
                "CREATE INDEX batches_owner ON batches (owner_id, id)",
                "CREATE INDEX batches_status ON batches (status)",
                "CREATE TABLE batch_lines ( \
                   id BLOB PRIMARY KEY, batch_id BLOB NOT NULL, line INTEGER NOT NULL, \
                   custom_id TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL, \
                   lease_owner BLOB NULL, lease_until INTEGER NULL, claims INTEGER NOT NULL, \
                   job_id BLOB NULL, status_code INTEGER NULL, response TEXT NULL, \
                   error_code TEXT NULL, error_message TEXT NULL, finished_at INTEGER NULL, \
                   agent_id BLOB NULL, \
                   UNIQUE (batch_id, custom_id), UNIQUE (batch_id, line))",
                "CREATE INDEX batch_lines_work ON batch_lines (state, lease_until)",
                "CREATE INDEX batch_lines_batch ON batch_lines (batch_id, state)",
                "CREATE TABLE batch_bids ( \
                   batch_id BLOB NOT NULL, agent_id BLOB NOT NULL, version INTEGER NOT NULL, \
                   owner_id BLOB NOT NULL, price INTEGER NOT NULL, capacity INTEGER NULL, \
                   source TEXT NOT NULL, at INTEGER NOT NULL, \
                   PRIMARY KEY (batch_id, agent_id, version)) WITHOUT ROWID",
                "ALTER TABLE jobs ADD COLUMN batch_line_id BLOB NULL",
                "CREATE UNIQUE INDEX jobs_one_delivery_per_batch_line ON jobs (batch_line_id) \
                   WHERE batch_line_id IS NOT NULL AND status = 'delivered'",
            ],
        };
        let db = manager.get_connection();
        for statement in statements {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DROP INDEX jobs_one_delivery_per_batch_line",
            "ALTER TABLE jobs DROP COLUMN batch_line_id",
            "DROP TABLE batch_bids",
            "DROP TABLE batch_lines",
            "DROP TABLE batches",
            "DROP TABLE files",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
