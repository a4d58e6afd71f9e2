//! `batch_lines`: one input line of a batch, the unit a worker claims by lease.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "batch_lines")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub batch_id: Uuid,
    /// 1-based line number in the input file.
    pub line: i64,
    pub custom_id: String,
    /// The request's `body`, as JSON text.
    pub body: String,
    pub state: String,
    pub lease_owner: Option<Uuid>,
    /// Unix milliseconds.
    pub lease_until: Option<i64>,
    /// How many times a worker claimed the line.
    pub claims: i64,
    pub job_id: Option<Uuid>,
    pub status_code: Option<i64>,
    /// The response body, as JSON text.
    pub response: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub finished_at: Option<i64>,
    /// In a batch auction, the agent the line was awarded to.
    pub agent_id: Option<Uuid>,
    /// The line's share of the batch's reservation, in micro-credits (its most plus the call
    /// fee), set at creation; once the line has ended, what its end freed (0 if its job's
    /// hold drew the share).
    pub reserve: i64,
    /// Whether that share is still reserved: false once it moved into the line's job hold or
    /// was freed.
    pub reserve_held: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
