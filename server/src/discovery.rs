//! Public discovery: the agents a caller can find, filtered and sorted, read from the agent
//! index. Below `routes` and `web`, so that `GET /api/agents`, the MCP tool `gavel_discover`
//! and the dashboard's marketplace list the same agents in the same order.

use std::sync::Arc;

use auction_engine::{MicroCredits, Parameters};
use registry::agents::{self, Agent, Visibility};

use crate::error::ApiError;
use crate::state::AppState;

/// What public discovery looks for (`GET /api/agents` and the MCP tool `gavel_discover`).
#[derive(Debug, Default)]
pub(crate) struct DiscoveryFilter {
    pub(crate) category: Option<String>,
    /// Matched in the slug, description and tags.
    pub(crate) text: Option<String>,
    /// `newest` (default), `price` or `reputation`.
    pub(crate) sort: Option<String>,
    /// Per-call price at most this.
    pub(crate) max_price: Option<MicroCredits>,
    /// Reputation score (the posterior's lower bound) at least this.
    pub(crate) min_reputation: Option<f64>,
}

/// The public agents matching `filter`, in the filter's order.
pub(crate) async fn discover_agents(
    state: &AppState,
    filter: DiscoveryFilter,
) -> Result<Vec<Arc<Agent>>, ApiError> {
    Ok(discover_ranked(state, filter).await?.into_iter().map(|(_, agent)| agent).collect())
}

/// The public agents matching `filter`, each with its ascending sort key (ties by id).
pub(crate) async fn discover_ranked(
    state: &AppState,
    filter: DiscoveryFilter,
) -> Result<Vec<(i64, Arc<Agent>)>, ApiError> {
    let sort = match filter.sort.as_deref() {
        None | Some("newest") => Sort::Newest,
        Some("price") => Sort::Price,
        Some("reputation") => Sort::Reputation,
        Some(other) => {
            return Err(ApiError::validation(
                "sort",
                format!("`{other}` is not one of: newest, price, reputation"),
            ));
        }
    };
    if let Some(category) = filter.category.as_deref()
        && !agents::CATEGORIES.contains(&category)
    {
        return Err(ApiError::validation(
            "category",
            format!("`{category}` is not one of: {}", agents::CATEGORIES.join(", ")),
        ));
    }
    let needle = filter.text.as_deref().map(str::to_lowercase).filter(|q| !q.is_empty());
    if needle.as_ref().is_some_and(|q| q.len() > 200) {
        return Err(ApiError::validation("q", "must be at most 200 characters"));
    }
    let snapshot = state.agent_index.snapshot(&state.db, state.now().timestamp_millis()).await?;
    let params = state.auction_parameters();
    let now_ms = state.now().timestamp_millis();
    let pool: &[Arc<Agent>] = match filter.category.as_deref() {
        Some(category) => snapshot.in_category(category),
        None => snapshot.agents(),
    };
    let reputation = |agent: &Agent| {
        agent
            .reputation
            .posterior(now_ms, params.half_life_ms, params.default_prior())
            .lower_bound()
    };
    let mut listed: Vec<(i64, Arc<Agent>)> = pool
        .iter()
        .filter(|agent| agent.visibility == Visibility::Public)
        .filter(|agent| needle.as_deref().is_none_or(|q| matches_text(agent, q)))
        .filter(|agent| filter.max_price.is_none_or(|max| agent.pricing.per_call <= max))
        .filter(|agent| filter.min_reputation.is_none_or(|min| reputation(agent) >= min))
        .map(|agent| (sort.key(agent, &params, now_ms), Arc::clone(agent)))
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    Ok(listed)
}

#[derive(Clone, Copy)]
enum Sort {
    Newest,
    Price,
    Reputation,
}

impl Sort {
    /// An ascending sort key (ties broken by id).
    fn key(self, agent: &Agent, params: &Parameters, now_ms: i64) -> i64 {
        match self {
            // UUIDv7 ids are time-ordered; newest first means the largest creation time first.
            Sort::Newest => -agent.created_at.timestamp_micros(),
            Sort::Price => agent.pricing.per_call.micros(),
            Sort::Reputation => {
                let posterior =
                    agent.reputation.posterior(now_ms, params.half_life_ms, params.default_prior());
                -((posterior.lower_bound() * 1_000_000.0).round() as i64)
            }
        }
    }
}

fn matches_text(agent: &Agent, needle: &str) -> bool {
    agent.slug.to_lowercase().contains(needle)
        || agent.description.to_lowercase().contains(needle)
        || agent.tags.iter().any(|tag| tag.contains(needle))
}
