//! `jobs`: one caller request and how it ended.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub caller_id: Uuid,
    pub kind: String,
    pub category: String,
    pub requested_model: String,
    pub mode: String,
    pub status: String,
    pub auction_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub agent_slug: Option<String>,
    pub owner_id: Option<Uuid>,
    pub clearing_price: Option<i64>,
    pub agent_cost: i64,
    pub call_fee: i64,
    pub win_fee: i64,
    pub total_cost: i64,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub latency_ms: Option<i64>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    /// The instance running the job, while it runs.
    pub instance_id: Option<Uuid>,
    /// The API key that authenticated the request; none for a token or a browser session.
    pub api_key_id: Option<Uuid>,
    /// The batch line the job ran for, if any.
    pub batch_line_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
