//! `batches`: one OpenAI batch object's durable state. Times are Unix milliseconds.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "batches")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub owner_id: Uuid,
    pub api_key_id: Option<Uuid>,
    pub input_file_id: Uuid,
    pub endpoint: String,
    pub completion_window: String,
    pub status: String,
    pub metadata: Option<String>,
    pub errors: Option<String>,
    pub total: i64,
    pub reserved: i64,
    pub created_at: i64,
    pub in_progress_at: Option<i64>,
    pub expires_at: i64,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    /// A batch auction's category (every line's).
    pub category: Option<String>,
    /// A batch auction's deadline for bids.
    pub bidding_until: Option<i64>,
    pub awarded_at: Option<i64>,
    /// The award's record (JSON): every bid and re-bid, the ranking, the lines per agent.
    pub award: Option<String>,
    /// A batch-wide cap per line, in micro-credits (each line's request carries it).
    pub max_price: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
