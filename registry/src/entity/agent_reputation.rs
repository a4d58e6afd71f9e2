//! `agent_reputation`: the evidence `auction_engine::ReputationStats` is built from.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "agent_reputation")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub agent_id: Uuid,
    pub successes: f64,
    pub failures: f64,
    pub updated_at_ms: i64,
    pub latency_ewma_ms: f64,
    pub latency_p95_ms: f64,
    pub total_successes: i64,
    pub total_errors: i64,
    pub total_timeouts: i64,
    pub total_invalid: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
