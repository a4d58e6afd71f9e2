//! The agent registry: agents, their categories (for discovery and the candidate index),
//! versioned price sheets, reputation evidence, and the registry generation counter that lets
//! every instance notice an agent change with one primary-key read.

// sea-orm-migration's trait spells `&SchemaManager` with an elided lifetime; matching it exactly
// is what `async_trait` needs.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    OwnerId,
    Name,
    Slug,
    Description,
    Kind,
    Endpoint,
    UpstreamModel,
    UpstreamApiKey,
    BidUrl,
    MaxLatencyMs,
    Regions,
    Features,
    Tags,
    ContextLength,
    Visibility,
    Status,
    PriceVersion,
    PerCall,
    PerMillionInput,
    PerMillionOutput,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum AgentCategories {
    Table,
    AgentId,
    Category,
}

#[derive(DeriveIden)]
enum AgentPriceVersions {
    Table,
    Id,
    AgentId,
    Version,
    PerCall,
    PerMillionInput,
    PerMillionOutput,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AgentReputation {
    Table,
    AgentId,
    Successes,
    Failures,
    UpdatedAtMs,
    LatencyEwmaMs,
    LatencyP95Ms,
    TotalSuccesses,
    TotalErrors,
    TotalTimeouts,
    TotalInvalid,
}

#[derive(DeriveIden)]
enum RegistryState {
    Table,
    Name,
    Generation,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .col(ColumnDef::new(Agents::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Agents::OwnerId).uuid().not_null())
                    .col(ColumnDef::new(Agents::Name).string_len(64).not_null())
                    .col(ColumnDef::new(Agents::Slug).string_len(100).not_null().unique_key())
                    .col(ColumnDef::new(Agents::Description).text().not_null())
                    .col(ColumnDef::new(Agents::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(Agents::Endpoint).string_len(2048).not_null())
                    .col(ColumnDef::new(Agents::UpstreamModel).string_len(200).null())
                    .col(ColumnDef::new(Agents::UpstreamApiKey).string_len(1024).null())
                    .col(ColumnDef::new(Agents::BidUrl).string_len(2048).null())
                    .col(ColumnDef::new(Agents::MaxLatencyMs).integer().null())
                    .col(ColumnDef::new(Agents::Regions).text().not_null())
                    .col(ColumnDef::new(Agents::Features).text().not_null())
                    .col(ColumnDef::new(Agents::Tags).text().not_null())
                    .col(ColumnDef::new(Agents::ContextLength).big_integer().null())
                    .col(ColumnDef::new(Agents::Visibility).string_len(16).not_null())
                    .col(ColumnDef::new(Agents::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Agents::PriceVersion).integer().not_null())
                    .col(ColumnDef::new(Agents::PerCall).big_integer().not_null())
                    .col(ColumnDef::new(Agents::PerMillionInput).big_integer().not_null())
                    .col(ColumnDef::new(Agents::PerMillionOutput).big_integer().not_null())
                    .col(ColumnDef::new(Agents::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Agents::UpdatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Agents::DeletedAt).timestamp_with_time_zone().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_agents_owner")
                            .from(Agents::Table, Agents::OwnerId)
                            .to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_agents_owner")
                    .table(Agents::Table)
                    .col(Agents::OwnerId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AgentCategories::Table)
                    .col(ColumnDef::new(AgentCategories::AgentId).uuid().not_null())
                    .col(ColumnDef::new(AgentCategories::Category).string_len(32).not_null())
                    .primary_key(
                        Index::create()
                            .col(AgentCategories::AgentId)
                            .col(AgentCategories::Category),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_agent_categories_agent")
                            .from(AgentCategories::Table, AgentCategories::AgentId)
                            .to(Agents::Table, Agents::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_agent_categories_category")
                    .table(AgentCategories::Table)
                    .col(AgentCategories::Category)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AgentPriceVersions::Table)
                    .col(
                        ColumnDef::new(AgentPriceVersions::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AgentPriceVersions::AgentId).uuid().not_null())
                    .col(ColumnDef::new(AgentPriceVersions::Version).integer().not_null())
                    .col(ColumnDef::new(AgentPriceVersions::PerCall).big_integer().not_null())
                    .col(
                        ColumnDef::new(AgentPriceVersions::PerMillionInput)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AgentPriceVersions::PerMillionOutput)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AgentPriceVersions::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_price_versions_agent")
                            .from(AgentPriceVersions::Table, AgentPriceVersions::AgentId)
                            .to(Agents::Table, Agents::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_price_versions_agent_version")
                    .table(AgentPriceVersions::Table)
                    .col(AgentPriceVersions::AgentId)
                    .col(AgentPriceVersions::Version)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AgentReputation::Table)
                    .col(ColumnDef::new(AgentReputation::AgentId).uuid().not_null().primary_key())
                    .col(ColumnDef::new(AgentReputation::Successes).double().not_null())
                    .col(ColumnDef::new(AgentReputation::Failures).double().not_null())
                    .col(ColumnDef::new(AgentReputation::UpdatedAtMs).big_integer().not_null())
                    .col(ColumnDef::new(AgentReputation::LatencyEwmaMs).double().not_null())
                    .col(ColumnDef::new(AgentReputation::LatencyP95Ms).double().not_null())
                    .col(ColumnDef::new(AgentReputation::TotalSuccesses).big_integer().not_null())
                    .col(ColumnDef::new(AgentReputation::TotalErrors).big_integer().not_null())
                    .col(ColumnDef::new(AgentReputation::TotalTimeouts).big_integer().not_null())
                    .col(ColumnDef::new(AgentReputation::TotalInvalid).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_reputation_agent")
                            .from(AgentReputation::Table, AgentReputation::AgentId)
                            .to(Agents::Table, Agents::Id),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RegistryState::Table)
                    .col(
                        ColumnDef::new(RegistryState::Name).string_len(32).not_null().primary_key(),
                    )
                    .col(ColumnDef::new(RegistryState::Generation).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        let insert = Query::insert()
            .into_table(RegistryState::Table)
            .columns([RegistryState::Name, RegistryState::Generation])
            .values_panic(["agents".into(), 0_i64.into()])
            .to_owned();
        manager.exec_stmt(insert).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RegistryState::Table.into_iden(),
            AgentReputation::Table.into_iden(),
            AgentPriceVersions::Table.into_iden(),
            AgentCategories::Table.into_iden(),
            Agents::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
