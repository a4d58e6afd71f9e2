//! `batch_bids`: a batch auction's bids, every version kept.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "batch_bids")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub batch_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub agent_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i64,
    pub owner_id: Uuid,
    /// Micro-credits per line.
    pub price: i64,
    /// The most lines the agent takes; none: no limit.
    pub capacity: Option<i64>,
    /// `rfq` (the answer to the request for quote) or `rebid`.
    pub source: String,
    /// Unix milliseconds.
    pub at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
