//! Users, API keys and the credits ledger (accounts, transfers, entries, holds).
//!
//! Two system accounts are created here with fixed ids: the platform's revenue and the source
//! of free grants. A user's wallet account shares the user's id.

// sea-orm-migration's trait spells `&SchemaManager` with an elided lifetime; matching it exactly
// is what `async_trait` needs.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;

/// Fixed id of the platform revenue account (also in `registry::ledger`).
const PLATFORM_REVENUE_ID: &str = "00000000-0000-0000-0000-000000000001";
/// Fixed id of the grant source account (also in `registry::ledger`).
const GRANT_SOURCE_ID: &str = "00000000-0000-0000-0000-000000000002";

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    Handle,
    PasswordHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    UserId,
    Name,
    Prefix,
    KeyHash,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
    Kind,
    Balance,
    Held,
    GrantPeriod,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Transfers {
    Table,
    Id,
    Kind,
    IdempotencyKey,
    JobId,
    Memo,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LedgerEntries {
    Table,
    Id,
    TransferId,
    AccountId,
    Amount,
    Kind,
    JobId,
    Memo,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Holds {
    Table,
    Id,
    JobId,
    AccountId,
    Amount,
    Status,
    ExpiresAtMs,
    CreatedAt,
    SettledAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(ColumnDef::new(Users::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Users::Email).string_len(254).not_null().unique_key())
                    .col(ColumnDef::new(Users::Handle).string_len(32).not_null().unique_key())
                    .col(ColumnDef::new(Users::PasswordHash).string().not_null())
                    .col(ColumnDef::new(Users::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(ColumnDef::new(ApiKeys::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::UserId).uuid().not_null())
                    .col(ColumnDef::new(ApiKeys::Name).string_len(100).not_null())
                    .col(ColumnDef::new(ApiKeys::Prefix).string_len(16).not_null())
                    .col(ColumnDef::new(ApiKeys::KeyHash).string_len(64).not_null().unique_key())
                    .col(ColumnDef::new(ApiKeys::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ApiKeys::LastUsedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(ApiKeys::RevokedAt).timestamp_with_time_zone().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_api_keys_user")
                            .from(ApiKeys::Table, ApiKeys::UserId)
                            .to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_keys_user")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .col(ColumnDef::new(Accounts::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Accounts::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(Accounts::Balance).big_integer().not_null().default(0))
                    .col(ColumnDef::new(Accounts::Held).big_integer().not_null().default(0))
                    .col(ColumnDef::new(Accounts::GrantPeriod).string_len(7).null())
                    .col(ColumnDef::new(Accounts::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Transfers::Table)
                    .col(ColumnDef::new(Transfers::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Transfers::Kind).string_len(32).not_null())
                    .col(
                        ColumnDef::new(Transfers::IdempotencyKey)
                            .string_len(128)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Transfers::JobId).uuid().null())
                    .col(ColumnDef::new(Transfers::Memo).string_len(200).null())
                    .col(ColumnDef::new(Transfers::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(LedgerEntries::Table)
                    .col(
                        ColumnDef::new(LedgerEntries::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LedgerEntries::TransferId).uuid().not_null())
                    .col(ColumnDef::new(LedgerEntries::AccountId).uuid().not_null())
                    .col(ColumnDef::new(LedgerEntries::Amount).big_integer().not_null())
                    .col(ColumnDef::new(LedgerEntries::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(LedgerEntries::JobId).uuid().null())
                    .col(ColumnDef::new(LedgerEntries::Memo).string_len(200).null())
                    .col(
                        ColumnDef::new(LedgerEntries::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_entries_transfer")
                            .from(LedgerEntries::Table, LedgerEntries::TransferId)
                            .to(Transfers::Table, Transfers::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_entries_account")
                            .from(LedgerEntries::Table, LedgerEntries::AccountId)
                            .to(Accounts::Table, Accounts::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_entries_account_id")
                    .table(LedgerEntries::Table)
                    .col(LedgerEntries::AccountId)
                    .col(LedgerEntries::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Holds::Table)
                    .col(ColumnDef::new(Holds::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Holds::JobId).uuid().not_null().unique_key())
                    .col(ColumnDef::new(Holds::AccountId).uuid().not_null())
                    .col(ColumnDef::new(Holds::Amount).big_integer().not_null())
                    .col(ColumnDef::new(Holds::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Holds::ExpiresAtMs).big_integer().not_null())
                    .col(ColumnDef::new(Holds::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Holds::SettledAt).timestamp_with_time_zone().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_holds_account")
                            .from(Holds::Table, Holds::AccountId)
                            .to(Accounts::Table, Accounts::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_holds_status_expiry")
                    .table(Holds::Table)
                    .col(Holds::Status)
                    .col(Holds::ExpiresAtMs)
                    .to_owned(),
            )
            .await?;

        // The two system accounts. Their ids are fixed so that every instance agrees on them.
        for (id, kind) in
            [(PLATFORM_REVENUE_ID, "platform_revenue"), (GRANT_SOURCE_ID, "grant_source")]
        {
            let id = uuid::Uuid::parse_str(id).map_err(|e| DbErr::Migration(e.to_string()))?;
            let insert = Query::insert()
                .into_table(Accounts::Table)
                .columns([
                    Accounts::Id,
                    Accounts::Kind,
                    Accounts::Balance,
                    Accounts::Held,
                    Accounts::CreatedAt,
                ])
                .values_panic([
                    id.into(),
                    kind.into(),
                    0_i64.into(),
                    0_i64.into(),
                    Expr::current_timestamp(),
                ])
                .to_owned();
            manager.exec_stmt(insert).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Holds::Table.into_iden(),
            LedgerEntries::Table.into_iden(),
            Transfers::Table.into_iden(),
            Accounts::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
