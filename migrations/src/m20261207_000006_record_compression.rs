//! On Postgres, the large text columns a job writes (its auction's audit record, its output)
//! are compressed with lz4 rather than pglz when TOAST stores them: a job's commit spends less
//! time compressing (measured with `scripts/bench` on one instance: 1,409 -> 1,607 jobs/s at
//! c=64). A server built without lz4 keeps pglz: the change is skipped with a notice, since it
//! only changes speed. Values already stored keep their compression. Nothing on SQLite.

// sea-orm-migration's trait spells `&SchemaManager` with an elided lifetime; matching it exactly
// is what `async_trait` needs.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// Sets `method` on each column, or leaves them all as they are if the server cannot.
fn compression(method: &str) -> String {
    format!(
        "DO $$ BEGIN \
           ALTER TABLE auctions ALTER COLUMN record SET COMPRESSION {method}; \
           ALTER TABLE jobs ALTER COLUMN output SET COMPRESSION {method}; \
         EXCEPTION WHEN feature_not_supported OR syntax_error THEN \
           RAISE NOTICE 'column compression {method} is not available: %', SQLERRM; \
         END $$"
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager.get_connection().execute_unprepared(&compression("lz4")).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager.get_connection().execute_unprepared(&compression("pglz")).await?;
        }
        Ok(())
    }
}
