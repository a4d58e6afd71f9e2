//! `job_feedback`: a caller's rating of one delivered job (at most one per job), with the
//! agent and its owner at the time, so reputation can leave out an owner's own ratings.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "job_feedback")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub job_id: Uuid,
    pub caller_id: Uuid,
    pub agent_id: Uuid,
    pub owner_id: Uuid,
    pub rating: String,
    pub reason: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
