//! Jobs and their records: the job (one caller request), each attempt at an agent, the
//! auction's audit record, and stored responses for `Idempotency-Key`.

// sea-orm-migration's trait spells `&SchemaManager` with an elided lifetime; matching it exactly
// is what `async_trait` needs.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    CallerId,
    Kind,
    Category,
    RequestedModel,
    Mode,
    Status,
    AuctionId,
    AgentId,
    AgentSlug,
    OwnerId,
    ClearingPrice,
    AgentCost,
    CallFee,
    WinFee,
    TotalCost,
    InputTokens,
    OutputTokens,
    LatencyMs,
    Output,
    Error,
    CreatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum JobAttempts {
    Table,
    Id,
    JobId,
    Rank,
    AgentId,
    AgentSlug,
    Price,
    Outcome,
    HttpStatus,
    ErrorCode,
    LatencyMs,
    StartedAt,
}

#[derive(DeriveIden)]
enum Auctions {
    Table,
    Id,
    JobId,
    CallerId,
    Category,
    WinnerAgentId,
    ClearingPrice,
    Record,
    CreatedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    UserId,
    Key,
    RequestHash,
    Status,
    ResponseStatus,
    ResponseBody,
    ResponseHeaders,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(ColumnDef::new(Jobs::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Jobs::CallerId).uuid().not_null())
                    .col(ColumnDef::new(Jobs::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(Jobs::Category).string_len(32).not_null())
                    .col(ColumnDef::new(Jobs::RequestedModel).string_len(200).not_null())
                    .col(ColumnDef::new(Jobs::Mode).string_len(16).not_null())
                    .col(ColumnDef::new(Jobs::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Jobs::AuctionId).uuid().not_null())
                    .col(ColumnDef::new(Jobs::AgentId).uuid().null())
                    .col(ColumnDef::new(Jobs::AgentSlug).string_len(100).null())
                    .col(ColumnDef::new(Jobs::OwnerId).uuid().null())
                    .col(ColumnDef::new(Jobs::ClearingPrice).big_integer().null())
                    .col(ColumnDef::new(Jobs::AgentCost).big_integer().not_null().default(0))
                    .col(ColumnDef::new(Jobs::CallFee).big_integer().not_null().default(0))
                    .col(ColumnDef::new(Jobs::WinFee).big_integer().not_null().default(0))
                    .col(ColumnDef::new(Jobs::TotalCost).big_integer().not_null().default(0))
                    .col(ColumnDef::new(Jobs::InputTokens).big_integer().null())
                    .col(ColumnDef::new(Jobs::OutputTokens).big_integer().null())
                    .col(ColumnDef::new(Jobs::LatencyMs).big_integer().null())
                    .col(ColumnDef::new(Jobs::Output).text().null())
                    .col(ColumnDef::new(Jobs::Error).text().null())
                    .col(ColumnDef::new(Jobs::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Jobs::FinishedAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        for (name, column) in
            [("idx_jobs_caller", Jobs::CallerId), ("idx_jobs_owner", Jobs::OwnerId)]
        {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Jobs::Table)
                        .col(column)
                        .col(Jobs::Id)
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(JobAttempts::Table)
                    .col(
                        ColumnDef::new(JobAttempts::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(JobAttempts::JobId).uuid().not_null())
                    .col(ColumnDef::new(JobAttempts::Rank).integer().not_null())
                    .col(ColumnDef::new(JobAttempts::AgentId).uuid().not_null())
                    .col(ColumnDef::new(JobAttempts::AgentSlug).string_len(100).not_null())
                    .col(ColumnDef::new(JobAttempts::Price).big_integer().not_null())
                    .col(ColumnDef::new(JobAttempts::Outcome).string_len(32).not_null())
                    .col(ColumnDef::new(JobAttempts::HttpStatus).integer().null())
                    .col(ColumnDef::new(JobAttempts::ErrorCode).string_len(64).null())
                    .col(ColumnDef::new(JobAttempts::LatencyMs).big_integer().not_null())
                    .col(
                        ColumnDef::new(JobAttempts::StartedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_attempts_job")
                            .from(JobAttempts::Table, JobAttempts::JobId)
                            .to(Jobs::Table, Jobs::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_attempts_job")
                    .table(JobAttempts::Table)
                    .col(JobAttempts::JobId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Auctions::Table)
                    .col(ColumnDef::new(Auctions::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Auctions::JobId).uuid().not_null())
                    .col(ColumnDef::new(Auctions::CallerId).uuid().not_null())
                    .col(ColumnDef::new(Auctions::Category).string_len(32).not_null())
                    .col(ColumnDef::new(Auctions::WinnerAgentId).uuid().null())
                    .col(ColumnDef::new(Auctions::ClearingPrice).big_integer().null())
                    .col(ColumnDef::new(Auctions::Record).text().not_null())
                    .col(ColumnDef::new(Auctions::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_auctions_caller")
                    .table(Auctions::Table)
                    .col(Auctions::CallerId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(ColumnDef::new(IdempotencyKeys::UserId).uuid().not_null())
                    .col(ColumnDef::new(IdempotencyKeys::Key).string_len(255).not_null())
                    .col(ColumnDef::new(IdempotencyKeys::RequestHash).string_len(64).not_null())
                    .col(ColumnDef::new(IdempotencyKeys::Status).string_len(16).not_null())
                    .col(ColumnDef::new(IdempotencyKeys::ResponseStatus).integer().null())
                    .col(ColumnDef::new(IdempotencyKeys::ResponseBody).text().null())
                    .col(ColumnDef::new(IdempotencyKeys::ResponseHeaders).text().null())
                    .col(
                        ColumnDef::new(IdempotencyKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create().col(IdempotencyKeys::UserId).col(IdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyKeys::Table.into_iden(),
            Auctions::Table.into_iden(),
            JobAttempts::Table.into_iden(),
            Jobs::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
