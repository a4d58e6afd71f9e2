//! `agents`: one registered endpoint with its current price sheet. Soft-deleted rows keep
//! `deleted_at` so history and audits still resolve them.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub kind: String,
    pub endpoint: String,
    pub upstream_model: Option<String>,
    /// Write-only: never returned by the API nor logged.
    pub upstream_api_key: Option<String>,
    pub bid_url: Option<String>,
    pub max_latency_ms: Option<i32>,
    /// JSON array of strings.
    pub regions: String,
    /// JSON array of strings.
    pub features: String,
    /// JSON array of strings.
    pub tags: String,
    pub context_length: Option<i64>,
    pub visibility: String,
    pub status: String,
    pub price_version: i32,
    pub per_call: i64,
    pub per_million_input: i64,
    pub per_million_output: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub deleted_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
