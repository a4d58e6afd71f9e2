//! `auctions`: the audit record of each auction, as JSON.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "auctions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub job_id: Uuid,
    pub caller_id: Uuid,
    pub category: String,
    pub winner_agent_id: Option<Uuid>,
    pub clearing_price: Option<i64>,
    /// The JSON record; empty where `record_lz4` holds it.
    pub record: String,
    pub created_at: DateTimeUtc,
    /// The record, lz4-compressed with its length in front: what the SQLite writer stores.
    pub record_lz4: Option<Vec<u8>>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
