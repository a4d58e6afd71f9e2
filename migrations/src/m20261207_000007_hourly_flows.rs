//! What each account paid and was paid for jobs, per UTC hour: the rollup behind the
//! dashboard's charts and totals, so that a page for an account with 100,000 jobs reads a few
//! hundred rows rather than every entry. It is written in the same transaction as each
//! capture (by every path that writes one), so it never drifts from the ledger, and it is
//! filled here from the captures already on the ledger.
//!
//! `hour` counts whole hours since the Unix epoch, UTC: one integer on both backends, and a
//! day is `hour / 24`. On SQLite the table is `WITHOUT ROWID`: its key is its only b-tree, one
//! page fewer written per job.

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
        let (create, fill) = match manager.get_database_backend() {
            DbBackend::Postgres => (
                "CREATE TABLE account_hourly_flows ( \
                   account_id uuid NOT NULL, hour bigint NOT NULL, \
                   spent bigint NOT NULL, earned bigint NOT NULL, \
                   PRIMARY KEY (account_id, hour))",
                "INSERT INTO account_hourly_flows (account_id, hour, spent, earned) \
                 SELECT account_id, floor(extract(epoch FROM created_at) / 3600)::bigint, \
                   COALESCE(SUM(CASE WHEN amount < 0 THEN -amount ELSE 0 END), 0)::bigint, \
                   COALESCE(SUM(CASE WHEN amount > 0 THEN amount ELSE 0 END), 0)::bigint \
                 FROM ledger_entries WHERE kind = 'capture' GROUP BY 1, 2",
            ),
            _ => (
                "CREATE TABLE account_hourly_flows ( \
                   account_id BLOB NOT NULL, hour INTEGER NOT NULL, \
                   spent INTEGER NOT NULL, earned INTEGER NOT NULL, \
                   PRIMARY KEY (account_id, hour)) WITHOUT ROWID",
                // `strftime('%s')` reads the stored RFC 3339 text (`Z` or `+00:00`) and
                // truncates to the second, as the writers' hour does.
                "INSERT INTO account_hourly_flows (account_id, hour, spent, earned) \
                 SELECT account_id, CAST(strftime('%s', created_at) AS INTEGER) / 3600, \
                   COALESCE(SUM(CASE WHEN amount < 0 THEN -amount ELSE 0 END), 0), \
                   COALESCE(SUM(CASE WHEN amount > 0 THEN amount ELSE 0 END), 0) \
                 FROM ledger_entries WHERE kind = 'capture' GROUP BY 1, 2",
            ),
        };
        let db = manager.get_connection();
        db.execute_unprepared(create).await?;
        db.execute_unprepared(fill).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP TABLE account_hourly_flows").await?;
        Ok(())
    }
}
