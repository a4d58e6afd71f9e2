//! Usage per API key: each job records the key that authenticated its request
//! (`jobs.api_key_id`; none for an access token or a browser session), and `api_key_hours`
//! sums each key's finished jobs per UTC hour of their end: jobs, delivered jobs, and the
//! credits they cost (`spent`, micro-credits, the jobs' `total_cost`). The rollup is written
//! in the same transaction as the job's end, by every path that writes one.
//!
//! Both start empty: jobs from before this migration name no key. On SQLite the table is
//! `WITHOUT ROWID`.

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
                "ALTER TABLE jobs ADD COLUMN api_key_id uuid NULL",
                "CREATE TABLE api_key_hours ( \
                   api_key_id uuid NOT NULL, hour bigint NOT NULL, jobs bigint NOT NULL, \
                   delivered bigint NOT NULL, spent bigint NOT NULL, \
                   PRIMARY KEY (api_key_id, hour))",
            ],
            _ => [
                "ALTER TABLE jobs ADD COLUMN api_key_id BLOB NULL",
                "CREATE TABLE api_key_hours ( \
                   api_key_id BLOB NOT NULL, hour INTEGER NOT NULL, jobs INTEGER NOT NULL, \
                   delivered INTEGER NOT NULL, spent INTEGER NOT NULL, \
                   PRIMARY KEY (api_key_id, hour)) WITHOUT ROWID",
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
        db.execute_unprepared("DROP TABLE api_key_hours").await?;
        db.execute_unprepared("ALTER TABLE jobs DROP COLUMN api_key_id").await?;
        Ok(())
    }
}
