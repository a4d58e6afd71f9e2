//! A batch's one hold, kept line by line.
//!
//! `POST /v1/batches` reserves the most the whole batch may cost in one step; each line's
//! share of that reservation is kept on its row, so the reservation can be moved into a
//! line's job hold, or freed when the line ends without one, exactly once and across a
//! restart:
//! - `batch_lines.reserve`: the line's share in micro-credits (its max price plus the call
//!   fee), set at creation; once the line has ended, what its end freed (0 if its job's hold
//!   drew the share);
//! - `batch_lines.reserve_held`: whether the share is still reserved. It turns false once, in
//!   the transaction that moves the share into the line's job hold or frees it (the line
//!   cancelled, expired, or ended without a hold).
//!
//! A wallet's `held` therefore counts its active job holds plus the shares still held by its
//! batches' lines; the partial index finds those lines at start.
//!
//! `batches.max_price`: a batch-wide cap per line (`auction.max_price` on `POST /v1/batches`),
//! in micro-credits, as the batch object shows it (each line's request carries it).

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
                "ALTER TABLE batch_lines ADD COLUMN reserve bigint NOT NULL DEFAULT 0",
                "ALTER TABLE batch_lines ADD COLUMN reserve_held boolean NOT NULL DEFAULT false",
                "CREATE INDEX batch_lines_reserved ON batch_lines (batch_id) WHERE reserve_held",
                "ALTER TABLE batches ADD COLUMN max_price bigint NULL",
            ],
            _ => [
                "ALTER TABLE batch_lines ADD COLUMN reserve INTEGER NOT NULL DEFAULT 0",
                "ALTER TABLE batch_lines ADD COLUMN reserve_held INTEGER NOT NULL DEFAULT 0",
                "CREATE INDEX batch_lines_reserved ON batch_lines (batch_id) WHERE reserve_held",
                "ALTER TABLE batches ADD COLUMN max_price INTEGER NULL",
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
            "ALTER TABLE batches DROP COLUMN max_price",
            "DROP INDEX batch_lines_reserved",
            "ALTER TABLE batch_lines DROP COLUMN reserve_held",
            "ALTER TABLE batch_lines DROP COLUMN reserve",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
