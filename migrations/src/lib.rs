//! Gavel's schema history, applied by `gavel migrate` and at `gavel serve` start-up.
//!
//! Every file here is frozen once merged: a change to the schema is a new migration. Migrations
//! never import `registry`'s entities, because history must not move when today's code does.
//! Each one runs on SQLite and on Postgres: sea-query builds the dialect, or, where a backend
//! has something the other lacks (`WITHOUT ROWID`, column compression), the migration says so.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_foundation;
mod m20261121_000002_agents;
mod m20261121_000003_jobs;
mod m20261201_000004_instances;
mod m20261207_000005_dashboard;
mod m20261207_000006_record_compression;
mod m20261207_000007_hourly_flows;
mod m20261207_000008_agent_hours;
mod m20261207_000009_key_usage;
mod m20261207_000010_batches;
mod m20261208_000011_batch_holds;
mod m20261208_000012_packed_records;

/// The ordered list of every migration.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_foundation::Migration),
            Box::new(m20261121_000002_agents::Migration),
            Box::new(m20261121_000003_jobs::Migration),
            Box::new(m20261201_000004_instances::Migration),
            Box::new(m20261207_000005_dashboard::Migration),
            Box::new(m20261207_000006_record_compression::Migration),
            Box::new(m20261207_000007_hourly_flows::Migration),
            Box::new(m20261207_000008_agent_hours::Migration),
            Box::new(m20261207_000009_key_usage::Migration),
            Box::new(m20261207_000010_batches::Migration),
            Box::new(m20261208_000011_batch_holds::Migration),
            Box::new(m20261208_000012_packed_records::Migration),
        ]
    }
}
