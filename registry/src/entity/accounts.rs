//! `accounts`: ledger accounts with their cached balance and held amount.
//!
//! `balance` always equals the sum of the account's `ledger_entries`; both change in the same
//! transaction. `held` is the sum of the account's active holds.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub kind: String,
    pub balance: i64,
    pub held: i64,
    pub grant_period: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
