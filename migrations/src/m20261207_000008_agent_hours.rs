//! Two rollups behind an agent owner's charts, each written in the same transaction as the
//! rows it summarises (by every path that writes them), so they never drift:
//!
//! - `agent_auction_hours`: the auctions each agent entered and won, per category and UTC
//!   hour, written with the auction's record. `won_bid` and `won_price` sum the agent's bid
//!   and the price it was to be paid over the auctions it won (rank 1), in micro-credits.
//! - `agent_service_hours`: each agent's attempts per UTC hour of the job's end, written with
//!   the job's attempts: successes, failures by kind (`errors`, `timeouts`, `invalid`), jobs
//!   served as a fallback (a success at rank 2 or below), successes' latencies in ten buckets
//!   (`lat_0` up to 25 ms ... `lat_8` up to 10 s, `lat_9` above), and the agent's reputation
//!   as the hour's last write left it (`rep_*`, taken at `rep_at_ms`; -1 when none).
//!
//! Both start empty: jobs from before this migration are not counted (a record keeps no more
//! than 100 ranked candidates, so a backfill could not be exact). `hour` is whole hours since
//! the Unix epoch, UTC, as in `account_hourly_flows`. On SQLite the tables are `WITHOUT ROWID`.

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
        let creates = match manager.get_database_backend() {
            DbBackend::Postgres => [
                "CREATE TABLE agent_auction_hours ( \
                   agent_id uuid NOT NULL, category varchar(32) NOT NULL, hour bigint NOT NULL, \
                   entered bigint NOT NULL, won bigint NOT NULL, \
                   won_bid bigint NOT NULL, won_price bigint NOT NULL, \
                   PRIMARY KEY (agent_id, category, hour))",
                "CREATE TABLE agent_service_hours ( \
                   agent_id uuid NOT NULL, hour bigint NOT NULL, \
                   attempts bigint NOT NULL, successes bigint NOT NULL, errors bigint NOT NULL, \
                   timeouts bigint NOT NULL, invalid bigint NOT NULL, fallbacks bigint NOT NULL, \
                   lat_0 bigint NOT NULL, lat_1 bigint NOT NULL, lat_2 bigint NOT NULL, \
                   lat_3 bigint NOT NULL, lat_4 bigint NOT NULL, lat_5 bigint NOT NULL, \
                   lat_6 bigint NOT NULL, lat_7 bigint NOT NULL, lat_8 bigint NOT NULL, \
                   lat_9 bigint NOT NULL, rep_at_ms bigint NOT NULL, \
                   rep_successes double precision NOT NULL, rep_failures double precision NOT NULL, \
                   rep_latency_ewma_ms double precision NOT NULL, \
                   rep_latency_p95_ms double precision NOT NULL, \
                   PRIMARY KEY (agent_id, hour))",
            ],
            _ => [
                "CREATE TABLE agent_auction_hours ( \
                   agent_id BLOB NOT NULL, category TEXT NOT NULL, hour INTEGER NOT NULL, \
                   entered INTEGER NOT NULL, won INTEGER NOT NULL, \
                   won_bid INTEGER NOT NULL, won_price INTEGER NOT NULL, \
                   PRIMARY KEY (agent_id, category, hour)) WITHOUT ROWID",
                "CREATE TABLE agent_service_hours ( \
                   agent_id BLOB NOT NULL, hour INTEGER NOT NULL, \
                   attempts INTEGER NOT NULL, successes INTEGER NOT NULL, errors INTEGER NOT NULL, \
                   timeouts INTEGER NOT NULL, invalid INTEGER NOT NULL, fallbacks INTEGER NOT NULL, \
                   lat_0 INTEGER NOT NULL, lat_1 INTEGER NOT NULL, lat_2 INTEGER NOT NULL, \
                   lat_3 INTEGER NOT NULL, lat_4 INTEGER NOT NULL, lat_5 INTEGER NOT NULL, \
                   lat_6 INTEGER NOT NULL, lat_7 INTEGER NOT NULL, lat_8 INTEGER NOT NULL, \
                   lat_9 INTEGER NOT NULL, rep_at_ms INTEGER NOT NULL, \
                   rep_successes REAL NOT NULL, rep_failures REAL NOT NULL, \
                   rep_latency_ewma_ms REAL NOT NULL, rep_latency_p95_ms REAL NOT NULL, \
                   PRIMARY KEY (agent_id, hour)) WITHOUT ROWID",
            ],
        };
        let db = manager.get_connection();
        for create in creates {
            db.execute_unprepared(create).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP TABLE agent_service_hours").await?;
        db.execute_unprepared("DROP TABLE agent_auction_hours").await?;
        Ok(())
    }
}
