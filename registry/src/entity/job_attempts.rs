//! `job_attempts`: each call to an agent while serving a job, in rank order.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "job_attempts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub job_id: Uuid,
    pub rank: i32,
    pub agent_id: Uuid,
    pub agent_slug: String,
    pub price: i64,
    pub outcome: String,
    pub http_status: Option<i32>,
    pub error_code: Option<String>,
    pub latency_ms: i64,
    pub started_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
