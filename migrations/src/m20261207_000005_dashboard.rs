//! The dashboard's tables: browser sessions (a cookie's SHA-256, never the cookie, with the
//! session's CSRF token and its expiry) and callers' ratings of delivered jobs (one per job).

// sea-orm-migration's trait spells `&SchemaManager` with an elided lifetime; matching it exactly
// is what `async_trait` needs.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum WebSessions {
    Table,
    TokenHash,
    UserId,
    CsrfToken,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum JobFeedback {
    Table,
    JobId,
    CallerId,
    AgentId,
    OwnerId,
    Rating,
    Reason,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebSessions::Table)
                    .col(
                        ColumnDef::new(WebSessions::TokenHash)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(WebSessions::UserId).uuid().not_null())
                    .col(ColumnDef::new(WebSessions::CsrfToken).string_len(64).not_null())
                    .col(
                        ColumnDef::new(WebSessions::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebSessions::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_web_sessions_user")
                    .table(WebSessions::Table)
                    .col(WebSessions::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(JobFeedback::Table)
                    .col(ColumnDef::new(JobFeedback::JobId).uuid().not_null().primary_key())
                    .col(ColumnDef::new(JobFeedback::CallerId).uuid().not_null())
                    .col(ColumnDef::new(JobFeedback::AgentId).uuid().not_null())
                    .col(ColumnDef::new(JobFeedback::OwnerId).uuid().not_null())
                    .col(ColumnDef::new(JobFeedback::Rating).string_len(8).not_null())
                    .col(ColumnDef::new(JobFeedback::Reason).string_len(500).null())
                    .col(
                        ColumnDef::new(JobFeedback::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_job_feedback_agent")
                    .table(JobFeedback::Table)
                    .col(JobFeedback::AgentId)
                    .col(JobFeedback::CallerId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(JobFeedback::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(WebSessions::Table).to_owned()).await
    }
}
