//! Instances: every running server registers itself and keeps a heartbeat; jobs and in-flight
//! idempotency keys name the instance that runs them, so that the work of a process that died
//! (`kill -9`, a crash) is found and ended at once by the next start or by a live instance,
//! instead of waiting for hold and key timeouts.

// sea-orm-migration's trait spells `&SchemaManager` with an elided lifetime; matching it exactly
// is what `async_trait` needs.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Instances {
    Table,
    Id,
    StartedAt,
    HeartbeatAt,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    InstanceId,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    InstanceId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Instances::Table)
                    .col(ColumnDef::new(Instances::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Instances::StartedAt).timestamp_with_time_zone().not_null())
                    .col(
                        ColumnDef::new(Instances::HeartbeatAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(ColumnDef::new(Jobs::InstanceId).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(IdempotencyKeys::Table)
                    .add_column(ColumnDef::new(IdempotencyKeys::InstanceId).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("jobs_instance_running")
                    .table(Jobs::Table)
                    .col(Jobs::InstanceId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Instances::Table).to_owned()).await
    }
}
