//! The auctions each agent entered and won, per category and UTC hour: the rollup behind an
//! owner's win rate and "own bid vs clearing price" charts. It is written in the same
//! transaction as the auction's record (by every path that writes one), so it never drifts
//! from the records it summarises. `won_bid` and `won_price` sum the agent's bid and the price
//! it was to be paid over the auctions it won (rank 1), in micro-credits.
//!
//! It starts empty: an auction recorded before this migration is not counted (its record
//! keeps no more than 100 ranked candidates, so a backfill from records could not be exact).
//! `hour` is whole hours since the Unix epoch, UTC, as in `account_hourly_flows`. On SQLite
//! the table is `WITHOUT ROWID`.

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
        let create = match manager.get_database_backend() {
            DbBackend::Postgres => {
                "CREATE TABLE agent_auction_hours ( \
                   agent_id uuid NOT NULL, category varchar(32) NOT NULL, hour bigint NOT NULL, \
                   entered bigint NOT NULL, won bigint NOT NULL, \
                   won_bid bigint NOT NULL, won_price bigint NOT NULL, \
                   PRIMARY KEY (agent_id, category, hour))"
            }
            _ => {
                "CREATE TABLE agent_auction_hours ( \
                   agent_id BLOB NOT NULL, category TEXT NOT NULL, hour INTEGER NOT NULL, \
                   entered INTEGER NOT NULL, won INTEGER NOT NULL, \
                   won_bid INTEGER NOT NULL, won_price INTEGER NOT NULL, \
                   PRIMARY KEY (agent_id, category, hour)) WITHOUT ROWID"
            }
        };
        manager.get_connection().execute_unprepared(create).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP TABLE agent_auction_hours").await?;
        Ok(())
    }
}
