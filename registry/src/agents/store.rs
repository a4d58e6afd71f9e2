//! Agents in the database: register, read, change, pause, soft-delete, list; reputation
//! evidence; and the `agents` generation counter every change bumps (in the same
//! transaction), which is how every instance's index notices a change.
//!
//! Access rules, enforced in SQL or right after the scoped read: another user's private
//! agent does not exist for them (`NotFound` on every verb); another owner's public agent can
//! be read but not changed (`Forbidden`).

use std::collections::BTreeMap;

use auction_engine::{MicroCredits, PriceSheet, Ratings, ReputationStats};
use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set, Statement,
};
use uuid::Uuid;

use crate::agents::domain::{
    AgentKind, AgentSpec, AgentState, Secret, Visibility, parse_categories, parse_context,
    parse_labels, parse_latency, parse_pricing, parse_secret, parse_text, parse_url,
};
use crate::database::{begin_write, in_write_txn};
use crate::entity::{
    agent_categories, agent_price_versions, agent_reputation, agents, registry_state, users,
};
use crate::jobs::ReputationUpdate;
use crate::script::Script;
use crate::{RegistryError, UserId};

/// Price-sheet changes allowed per agent per rolling hour.
pub const PRICE_CHANGES_PER_HOUR: u64 = 12;

/// An agent as stored, with its reputation. The upstream key is a `Secret`: callers that
/// render agents must leave it out (the API only says whether one is set).
#[derive(Clone, Debug)]
pub struct Agent {
    pub id: Uuid,
    pub owner_id: UserId,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub kind: AgentKind,
    pub categories: Vec<String>,
    pub tags: Vec<String>,
    pub endpoint: String,
    pub upstream_model: Option<String>,
    pub upstream_api_key: Option<Secret>,
    pub bid_url: Option<String>,
    pub max_latency_ms: Option<u32>,
    pub regions: Vec<String>,
    pub features: Vec<String>,
    pub context_length: Option<u64>,
    pub visibility: Visibility,
    pub state: AgentState,
    pub price_version: u32,
    pub pricing: PriceSheet,
    pub reputation: ReputationStats,
    /// Callers' ratings as they count (`feedback::counted_ratings`), loaded with the index.
    pub ratings: Ratings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A partial update. `None` leaves a field as it is; for nullable fields `Some(None)` clears.
#[derive(Clone, Debug, Default)]
pub struct RawAgentPatch {
    pub description: Option<String>,
    pub categories: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    /// Already vetted by the egress policy.
    pub endpoint: Option<String>,
    pub upstream_model: Option<Option<String>>,
    pub upstream_api_key: Option<Option<String>>,
    /// Already vetted by the egress policy.
    pub bid_url: Option<Option<String>>,
    pub max_latency_ms: Option<Option<i64>>,
    pub regions: Option<Vec<String>>,
    pub features: Option<Vec<String>>,
    pub context_length: Option<Option<i64>>,
    pub visibility: Option<String>,
    pub status: Option<String>,
    pub pricing: Option<crate::agents::domain::RawPricing>,
}

fn json_list(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn to_agent(
    row: agents::Model,
    categories: Vec<String>,
    reputation: Option<agent_reputation::Model>,
) -> Agent {
    Agent {
        id: row.id,
        owner_id: UserId(row.owner_id),
        name: row.name,
        slug: row.slug,
        description: row.description,
        kind: if row.kind == AgentKind::OpenAiChat.as_str() {
            AgentKind::OpenAiChat
        } else {
            AgentKind::Json
        },
        categories,
        tags: parse_list(&row.tags),
        endpoint: row.endpoint,
        upstream_model: row.upstream_model,
        upstream_api_key: row.upstream_api_key.map(Secret::new),
        bid_url: row.bid_url,
        max_latency_ms: row.max_latency_ms.and_then(|ms| u32::try_from(ms).ok()),
        regions: parse_list(&row.regions),
        features: parse_list(&row.features),
        context_length: row.context_length.and_then(|n| u64::try_from(n).ok()),
        visibility: if row.visibility == Visibility::Private.as_str() {
            Visibility::Private
        } else {
            Visibility::Public
        },
        state: if row.status == AgentState::Paused.as_str() {
            AgentState::Paused
        } else {
            AgentState::Active
        },
        price_version: u32::try_from(row.price_version).unwrap_or(0),
        pricing: PriceSheet {
            per_call: MicroCredits::from_micros(row.per_call),
            per_million_input_tokens: MicroCredits::from_micros(row.per_million_input),
            per_million_output_tokens: MicroCredits::from_micros(row.per_million_output),
        },
        reputation: reputation.map(reputation_stats).unwrap_or_default(),
        ratings: Ratings::default(),
        created_at: row.created_at,
        updated_at: row.updated_at,
        deleted_at: row.deleted_at,
    }
}

pub(crate) fn reputation_stats(row: agent_reputation::Model) -> ReputationStats {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    ReputationStats {
        successes: row.successes,
        failures: row.failures,
        updated_at_ms: row.updated_at_ms,
        latency_ewma_ms: row.latency_ewma_ms,
        latency_p95_ms: row.latency_p95_ms,
        total_successes: count(row.total_successes),
        total_errors: count(row.total_errors),
        total_timeouts: count(row.total_timeouts),
        total_invalid: count(row.total_invalid),
    }
}

/// Registers an agent for `owner`; its slug is `handle/name`.
pub async fn register_agent(
    db: &DatabaseConnection,
    owner: UserId,
    spec: AgentSpec,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Agent, RegistryError> {
    let handle = users::Entity::find_by_id(owner.0)
        .one(db)
        .await?
        .ok_or(RegistryError::NotFound { what: "user" })?
        .handle;
    let slug = format!("{handle}/{}", spec.name.as_str());
    let (txn, _gate) = begin_write(db).await?;
    let row = agents::ActiveModel {
        id: Set(id),
        owner_id: Set(owner.0),
        name: Set(spec.name.as_str().to_owned()),
        slug: Set(slug),
        description: Set(spec.description),
        kind: Set(spec.kind.as_str().to_owned()),
        endpoint: Set(spec.endpoint),
        upstream_model: Set(spec.upstream_model),
        upstream_api_key: Set(spec.upstream_api_key.map(|k| k.expose().to_owned())),
        bid_url: Set(spec.bid_url),
        max_latency_ms: Set(spec.max_latency_ms.map(|ms| ms as i32)),
        regions: Set(json_list(&spec.regions)),
        features: Set(json_list(&spec.features)),
        tags: Set(json_list(&spec.tags)),
        context_length: Set(spec.context_length.map(|n| n as i64)),
        visibility: Set(spec.visibility.as_str().to_owned()),
        status: Set(AgentState::Active.as_str().to_owned()),
        price_version: Set(1),
        per_call: Set(spec.pricing.per_call.micros()),
        per_million_input: Set(spec.pricing.per_million_input_tokens.micros()),
        per_million_output: Set(spec.pricing.per_million_output_tokens.micros()),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    };
    if let Err(err) = row.insert(&txn).await {
        txn.rollback().await?;
        return Err(match err.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => RegistryError::AgentNameTaken,
            _ => RegistryError::Database(err),
        });
    }
    replace_categories(&txn, id, &spec.categories).await?;
    record_price_version(&txn, id, 1, spec.pricing, now).await?;
    agent_reputation::ActiveModel {
        agent_id: Set(id),
        successes: Set(0.0),
        failures: Set(0.0),
        updated_at_ms: Set(now.timestamp_millis()),
        latency_ewma_ms: Set(0.0),
        latency_p95_ms: Set(0.0),
        total_successes: Set(0),
        total_errors: Set(0),
        total_timeouts: Set(0),
        total_invalid: Set(0),
    }
    .insert(&txn)
    .await?;
    bump_generation(&txn).await?;
    txn.commit().await?;
    load_agent(db, id).await?.ok_or(RegistryError::NotFound { what: "agent" })
}

/// An agent as `viewer` may see it: their own, or anyone's public one; deleted ones are gone.
pub async fn find_visible_agent(
    db: &DatabaseConnection,
    viewer: Option<UserId>,
    id: Uuid,
) -> Result<Agent, RegistryError> {
    let agent = load_agent(db, id).await?.ok_or(RegistryError::NotFound { what: "agent" })?;
    let own = viewer == Some(agent.owner_id);
    if agent.deleted_at.is_some() || (!own && agent.visibility == Visibility::Private) {
        return Err(RegistryError::NotFound { what: "agent" });
    }
    Ok(agent)
}

/// Any agent by id, deleted ones included: for audit records and history.
pub async fn load_agent(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<Agent>, RegistryError> {
    let Some(row) = agents::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    let categories = agent_categories::Entity::find()
        .filter(agent_categories::Column::AgentId.eq(id))
        .order_by_asc(agent_categories::Column::Category)
        .all(db)
        .await?
        .into_iter()
        .map(|c| c.category)
        .collect();
    let reputation = agent_reputation::Entity::find_by_id(id).one(db).await?;
    Ok(Some(to_agent(row, categories, reputation)))
}

/// The owner's agents that are not deleted, newest first.
pub async fn list_own_agents(
    db: &DatabaseConnection,
    owner: UserId,
) -> Result<Vec<Agent>, RegistryError> {
    let rows = agents::Entity::find()
        .filter(agents::Column::OwnerId.eq(owner.0))
        .filter(agents::Column::DeletedAt.is_null())
        .order_by_desc(agents::Column::Id)
        .all(db)
        .await?;
    with_details(db, rows, Scope::TheseRows).await
}

/// Every live (not deleted) agent with categories and reputation, in three queries: what the
/// candidate index loads.
pub async fn load_live_agents(db: &DatabaseConnection) -> Result<Vec<Agent>, RegistryError> {
    let rows = agents::Entity::find().filter(agents::Column::DeletedAt.is_null()).all(db).await?;
    with_details(db, rows, Scope::Everything).await
}

/// Every agent, live and deleted, in three queries: the index keeps the deleted ones that have
/// a record, because an owner's record stays its own when it deletes an agent and registers
/// again (the auction's owner prior reads it).
pub async fn load_agents_and_retired(
    db: &DatabaseConnection,
) -> Result<(Vec<Agent>, Vec<Agent>), RegistryError> {
    let rows = agents::Entity::find().all(db).await?;
    let all = with_details(db, rows, Scope::Everything).await?;
    let (retired, live): (Vec<Agent>, Vec<Agent>) =
        all.into_iter().partition(|agent| agent.deleted_at.is_some());
    let has_record = |agent: &Agent| {
        let r = &agent.reputation;
        r.total_successes + r.total_errors + r.total_timeouts + r.total_invalid > 0
    };
    Ok((live, retired.into_iter().filter(has_record).collect()))
}

/// Which detail rows `with_details` reads.
enum Scope {
    /// Only those of the given rows (a few agents).
    TheseRows,
    /// All of them (the index loads every live agent: no id list to send).
    Everything,
}

/// Joins categories and reputation onto agent rows: two more queries for any number of rows.
async fn with_details(
    db: &DatabaseConnection,
    rows: Vec<agents::Model>,
    scope: Scope,
) -> Result<Vec<Agent>, RegistryError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut category_query = agent_categories::Entity::find();
    let mut reputation_query = agent_reputation::Entity::find();
    if let Scope::TheseRows = scope {
        let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        category_query =
            category_query.filter(agent_categories::Column::AgentId.is_in(ids.iter().copied()));
        reputation_query = reputation_query.filter(agent_reputation::Column::AgentId.is_in(ids));
    }
    let mut categories: std::collections::HashMap<Uuid, Vec<String>> =
        std::collections::HashMap::new();
    for row in category_query.order_by_asc(agent_categories::Column::Category).all(db).await? {
        categories.entry(row.agent_id).or_default().push(row.category);
    }
    let mut reputations: std::collections::HashMap<Uuid, agent_reputation::Model> =
        reputation_query.all(db).await?.into_iter().map(|r| (r.agent_id, r)).collect();
    Ok(rows
        .into_iter()
        .map(|row| {
            let id = row.id;
            to_agent(row, categories.remove(&id).unwrap_or_default(), reputations.remove(&id))
        })
        .collect())
}

/// Every agent's reputation evidence, for refreshing an index without reloading agents.
pub(crate) async fn load_reputations(
    db: &DatabaseConnection,
) -> Result<std::collections::HashMap<Uuid, ReputationStats>, RegistryError> {
    Ok(agent_reputation::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|row| (row.agent_id, reputation_stats(row)))
        .collect())
}

/// Loads an agent for a write by `owner`: `NotFound` if it does not exist for them,
/// `Forbidden` if it is someone else's public agent.
pub async fn load_for_write(
    db: &impl ConnectionTrait,
    owner: UserId,
    id: Uuid,
) -> Result<Agent, RegistryError> {
    let agent = load_agent(db, id).await?.ok_or(RegistryError::NotFound { what: "agent" })?;
    if agent.deleted_at.is_some() {
        return Err(RegistryError::NotFound { what: "agent" });
    }
    if agent.owner_id != owner {
        return Err(match agent.visibility {
            Visibility::Private => RegistryError::NotFound { what: "agent" },
            Visibility::Public => RegistryError::Forbidden { what: "agent" },
        });
    }
    Ok(agent)
}

/// Applies a partial update by the owner. A price change creates a new price version, at most
/// `PRICE_CHANGES_PER_HOUR` per rolling hour.
pub async fn update_agent(
    db: &DatabaseConnection,
    owner: UserId,
    id: Uuid,
    patch: RawAgentPatch,
    now: DateTime<Utc>,
) -> Result<Agent, RegistryError> {
    let current = load_for_write(db, owner, id).await?;
    // Parse everything before writing anything.
    let description =
        patch.description.as_deref().map(|d| parse_text("description", d, 0, 2000)).transpose()?;
    let categories = patch.categories.map(parse_categories).transpose()?;
    let tags = patch.tags.map(|t| parse_labels("tags", t, 20, 32)).transpose()?;
    let regions = patch.regions.map(|r| parse_labels("regions", r, 20, 32)).transpose()?;
    let features = patch.features.map(|f| parse_labels("features", f, 32, 48)).transpose()?;
    let endpoint = patch.endpoint.map(|e| parse_url("endpoint", e)).transpose()?;
    let bid_url =
        patch.bid_url.map(|b| b.map(|u| parse_url("bid_url", u)).transpose()).transpose()?;
    let upstream_model = patch
        .upstream_model
        .map(|m| m.map(|m| parse_text("upstream_model", &m, 1, 200)).transpose())
        .transpose()?;
    if current.kind == AgentKind::OpenAiChat && matches!(upstream_model, Some(None)) {
        return Err(RegistryError::invalid("upstream_model", "is required for kind openai-chat"));
    }
    let upstream_api_key =
        patch.upstream_api_key.map(|k| k.map(|k| parse_secret(&k)).transpose()).transpose()?;
    let max_latency_ms =
        patch.max_latency_ms.map(|m| m.map(parse_latency).transpose()).transpose()?;
    let context_length =
        patch.context_length.map(|c| c.map(parse_context).transpose()).transpose()?;
    let visibility = patch.visibility.as_deref().map(Visibility::parse).transpose()?;
    let state = patch.status.as_deref().map(AgentState::parse).transpose()?;
    let pricing = patch.pricing.map(|p| parse_pricing(p, Some(current.pricing))).transpose()?;
    let price_changed = pricing.is_some_and(|p| p != current.pricing);

    let (txn, _gate) = begin_write(db).await?;
    let mut row = agents::ActiveModel { id: Set(id), updated_at: Set(now), ..Default::default() };
    if let Some(description) = description {
        row.description = Set(description);
    }
    if let Some(tags) = &tags {
        row.tags = Set(json_list(tags));
    }
    if let Some(regions) = &regions {
        row.regions = Set(json_list(regions));
    }
    if let Some(features) = &features {
        row.features = Set(json_list(features));
    }
    if let Some(endpoint) = endpoint {
        row.endpoint = Set(endpoint);
    }
    if let Some(bid_url) = bid_url {
        row.bid_url = Set(bid_url);
    }
    if let Some(upstream_model) = upstream_model {
        row.upstream_model = Set(upstream_model);
    }
    if let Some(key) = upstream_api_key {
        row.upstream_api_key = Set(key.map(|k| k.expose().to_owned()));
    }
    if let Some(max_latency_ms) = max_latency_ms {
        row.max_latency_ms = Set(max_latency_ms.map(|ms| ms as i32));
    }
    if let Some(context_length) = context_length {
        row.context_length = Set(context_length.map(|n| n as i64));
    }
    if let Some(visibility) = visibility {
        row.visibility = Set(visibility.as_str().to_owned());
    }
    if let Some(state) = state {
        row.status = Set(state.as_str().to_owned());
    }
    if let (true, Some(pricing)) = (price_changed, pricing) {
        let hour_ago = now - Duration::hours(1);
        let recent = agent_price_versions::Entity::find()
            .filter(agent_price_versions::Column::AgentId.eq(id))
            .filter(agent_price_versions::Column::CreatedAt.gt(hour_ago))
            .filter(agent_price_versions::Column::Version.gt(1))
            .count(&txn)
            .await?;
        if recent >= PRICE_CHANGES_PER_HOUR {
            txn.rollback().await?;
            return Err(RegistryError::PriceChangeLimited { retry_after_secs: 3600 });
        }
        let version = current.price_version + 1;
        row.price_version = Set(version as i32);
        row.per_call = Set(pricing.per_call.micros());
        row.per_million_input = Set(pricing.per_million_input_tokens.micros());
        row.per_million_output = Set(pricing.per_million_output_tokens.micros());
        record_price_version(&txn, id, version, pricing, now).await?;
    }
    row.update(&txn).await?;
    if let Some(categories) = &categories {
        replace_categories(&txn, id, categories).await?;
    }
    bump_generation(&txn).await?;
    txn.commit().await?;
    load_agent(db, id).await?.ok_or(RegistryError::NotFound { what: "agent" })
}

/// Soft-deletes an agent: it stops competing and disappears from listings, but its history
/// and audit records still resolve it. The slug stays reserved.
pub async fn delete_agent(
    db: &DatabaseConnection,
    owner: UserId,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    load_for_write(db, owner, id).await?;
    let (txn, _gate) = begin_write(db).await?;
    agents::Entity::update_many()
        .col_expr(agents::Column::DeletedAt, Expr::value(now))
        .col_expr(agents::Column::UpdatedAt, Expr::value(now))
        .filter(agents::Column::Id.eq(id))
        .filter(agents::Column::OwnerId.eq(owner.0))
        .filter(agents::Column::DeletedAt.is_null())
        .exec(&txn)
        .await?;
    bump_generation(&txn).await?;
    txn.commit().await?;
    Ok(())
}

/// The price sheet an agent had at `version`.
pub async fn price_version(
    db: &DatabaseConnection,
    agent: Uuid,
    version: u32,
) -> Result<Option<PriceSheet>, RegistryError> {
    let row = agent_price_versions::Entity::find()
        .filter(agent_price_versions::Column::AgentId.eq(agent))
        .filter(agent_price_versions::Column::Version.eq(version as i32))
        .one(db)
        .await?;
    Ok(row.map(|r| PriceSheet {
        per_call: MicroCredits::from_micros(r.per_call),
        per_million_input_tokens: MicroCredits::from_micros(r.per_million_input),
        per_million_output_tokens: MicroCredits::from_micros(r.per_million_output),
    }))
}

/// One price sheet an agent had, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceRecord {
    pub version: u32,
    pub sheet: PriceSheet,
    pub since: DateTime<Utc>,
}

/// Every price sheet each of `owner`'s agents has had, newest first, by agent. Scoped to the
/// owner in SQL: another owner's agents never appear.
pub async fn price_histories(
    db: &DatabaseConnection,
    owner: UserId,
) -> Result<BTreeMap<Uuid, Vec<PriceRecord>>, RegistryError> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT v.agent_id, v.version, v.per_call, v.per_million_input, \
             v.per_million_output, v.created_at FROM agent_price_versions v \
             JOIN agents a ON a.id = v.agent_id WHERE a.owner_id = $1 \
             ORDER BY v.agent_id, v.version DESC",
            [owner.0.into()],
        ))
        .await?;
    let mut histories: BTreeMap<Uuid, Vec<PriceRecord>> = BTreeMap::new();
    for row in rows {
        let micros = |column: &str| row.try_get::<i64>("", column).map(MicroCredits::from_micros);
        let record = PriceRecord {
            version: u32::try_from(row.try_get::<i32>("", "version")?).unwrap_or(0),
            sheet: PriceSheet {
                per_call: micros("per_call")?,
                per_million_input_tokens: micros("per_million_input")?,
                per_million_output_tokens: micros("per_million_output")?,
            },
            since: row.try_get("", "created_at")?,
        };
        histories.entry(row.try_get("", "agent_id")?).or_default().push(record);
    }
    Ok(histories)
}

/// Folds one attempt's outcome into the agent's stored reputation. The read and the write
/// happen in one write transaction with the row locked (`FOR UPDATE` on Postgres; SQLite's
/// write lock is taken at `BEGIN IMMEDIATE`), so concurrent outcomes are never lost.
pub async fn record_attempt(
    db: &DatabaseConnection,
    agent: Uuid,
    outcome: auction_engine::reputation::Outcome,
    latency_ms: f64,
    now_ms: i64,
    half_life_ms: i64,
) -> Result<ReputationStats, RegistryError> {
    let update = ReputationUpdate { agent, outcome, latency_ms, now_ms, half_life_ms };
    in_write_txn(db, async |txn| {
        let mut script = Script::new(txn.get_database_backend());
        let after = add_reputation_updates(txn, &mut script, &[update]).await?;
        script.run(txn).await?;
        after.get(&agent).copied().ok_or(RegistryError::NotFound { what: "agent" })
    })
    .await
}

/// Reads the reputation of every agent in `updates` in one query (locked `FOR UPDATE` on
/// Postgres, in agent id order), folds the outcomes in, in the order given, and adds one
/// update per agent to `script`. Returns each agent's new stats.
pub(crate) async fn add_reputation_updates(
    txn: &DatabaseTransaction,
    script: &mut Script,
    updates: &[ReputationUpdate],
) -> Result<BTreeMap<Uuid, ReputationStats>, RegistryError> {
    if updates.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut query = reputation_rows_query(updates);
    if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        query = query.lock_exclusive();
    }
    let rows = query.all(txn).await?;
    fold_reputation(script, rows, updates)
}

/// The reputation rows of the agents in `updates`, to read inside a write transaction.
pub(crate) fn reputation_rows_query(
    updates: &[ReputationUpdate],
) -> sea_orm::Select<agent_reputation::Entity> {
    agent_reputation::Entity::find()
        .filter(agent_reputation::Column::AgentId.is_in(updates.iter().map(|u| u.agent)))
        .order_by_asc(agent_reputation::Column::AgentId)
}

/// Folds the outcomes in `updates` (in the order given) into the agents' `rows`, read inside
/// this write transaction, and adds one update per agent to `script`. Returns each agent's new
/// stats. An agent without a row is `NotFound`.
pub(crate) fn fold_reputation(
    script: &mut Script,
    rows: Vec<agent_reputation::Model>,
    updates: &[ReputationUpdate],
) -> Result<BTreeMap<Uuid, ReputationStats>, RegistryError> {
    let mut stats: BTreeMap<Uuid, ReputationStats> =
        rows.into_iter().map(|row| (row.agent_id, reputation_stats(row))).collect();
    for update in updates {
        let current =
            stats.get_mut(&update.agent).ok_or(RegistryError::NotFound { what: "agent" })?;
        *current =
            current.record(update.outcome, update.latency_ms, update.now_ms, update.half_life_ms);
    }
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut touched: Vec<Uuid> = updates.iter().map(|u| u.agent).collect();
    touched.sort_unstable();
    touched.dedup();
    let mut after = BTreeMap::new();
    for agent in touched {
        let Some(new) = stats.get(&agent).copied() else { continue };
        let row = agent_reputation::ActiveModel {
            successes: Set(new.successes),
            failures: Set(new.failures),
            updated_at_ms: Set(new.updated_at_ms),
            latency_ewma_ms: Set(new.latency_ewma_ms),
            latency_p95_ms: Set(new.latency_p95_ms),
            total_successes: Set(count(new.total_successes)),
            total_errors: Set(count(new.total_errors)),
            total_timeouts: Set(count(new.total_timeouts)),
            total_invalid: Set(count(new.total_invalid)),
            ..Default::default()
        };
        script.push(
            &agent_reputation::Entity::update_many()
                .set(row)
                .filter(agent_reputation::Column::AgentId.eq(agent))
                .into_query(),
        );
        after.insert(agent, new);
    }
    Ok(after)
}

/// The registry generation: changes whenever any agent does.
pub async fn agents_generation(db: &impl ConnectionTrait) -> Result<i64, RegistryError> {
    Ok(registry_state::Entity::find_by_id("agents".to_owned())
        .one(db)
        .await?
        .map_or(0, |row| row.generation))
}

pub(crate) async fn bump_generation(txn: &DatabaseTransaction) -> Result<(), RegistryError> {
    registry_state::Entity::update_many()
        .col_expr(
            registry_state::Column::Generation,
            Expr::col(registry_state::Column::Generation).add(1),
        )
        .filter(registry_state::Column::Name.eq("agents"))
        .exec(txn)
        .await?;
    Ok(())
}

async fn replace_categories(
    txn: &DatabaseTransaction,
    agent: Uuid,
    categories: &[String],
) -> Result<(), RegistryError> {
    agent_categories::Entity::delete_many()
        .filter(agent_categories::Column::AgentId.eq(agent))
        .exec(txn)
        .await?;
    let rows: Vec<_> = categories
        .iter()
        .map(|category| agent_categories::ActiveModel {
            agent_id: Set(agent),
            category: Set(category.clone()),
        })
        .collect();
    agent_categories::Entity::insert_many(rows).exec(txn).await?;
    Ok(())
}

async fn record_price_version(
    txn: &DatabaseTransaction,
    agent: Uuid,
    version: u32,
    pricing: PriceSheet,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    agent_price_versions::ActiveModel {
        agent_id: Set(agent),
        version: Set(version as i32),
        per_call: Set(pricing.per_call.micros()),
        per_million_input: Set(pricing.per_million_input_tokens.micros()),
        per_million_output: Set(pricing.per_million_output_tokens.micros()),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    Ok(())
}
