//! `auctions.record_lz4`: the audit record, lz4-compressed, as the SQLite writer stores it.
//!
//! A record of a 10-agent auction is about 10 KB of JSON: on SQLite it filled three pages (two
//! of them overflow pages) and was 87% of the database, about 11.7 of a job's 13.5 KiB, and
//! most of what each commit wrote to the WAL. Compressed it is about 2.9 KB and sits in the
//! row's own page. The SQLite writer leaves `record` empty and fills this column; every other
//! writer (Postgres, whose TOAST already compresses `record` with lz4, and the pooled path)
//! keeps writing `record` and leaves this one NULL, as do all rows from before. Readers take
//! this column when it is set.

#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statement = match manager.get_database_backend() {
            DbBackend::Postgres => "ALTER TABLE auctions ADD COLUMN record_lz4 bytea NULL",
            _ => "ALTER TABLE auctions ADD COLUMN record_lz4 BLOB NULL",
        };
        manager.get_connection().execute_unprepared(statement).await?;
        Ok(())
    }

    /// Refused while any record is stored only compressed: SQL cannot decompress it into
    /// `record`, and dropping the column would lose it.
    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let packed = db
            .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
                manager.get_database_backend(),
                "SELECT 1 AS packed FROM auctions WHERE record_lz4 IS NOT NULL LIMIT 1",
            ))
            .await?;
        if packed.is_some() {
            return Err(DbErr::Migration(
                "auctions.record_lz4 holds audit records stored nowhere else; \
                 reverting would lose them"
                    .into(),
            ));
        }
        db.execute_unprepared("ALTER TABLE auctions DROP COLUMN record_lz4").await?;
        Ok(())
    }
}
