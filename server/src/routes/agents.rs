//! The agent registry over HTTP: register, discover, read, change, pause, delete.
//!
//! Endpoint and bid URLs pass the egress guard (shape, and every address their host resolves
//! to) before anything is stored. The upstream API key is write-only: no response contains
//! it, only whether one is set, and only to the owner.

use std::cmp::Ordering;
use std::sync::Arc;

use actix_web::{HttpResponse, web};
use auction_engine::{Parameters, PriceSheet};
use chrono::{DateTime, Utc};
use registry::UserId;
use registry::agents::{self, Agent, AgentState, RawAgentPatch, RawAgentSpec, RawPricing};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::agent_registration;
use crate::auth::{Caller, MaybeCaller};
use crate::discovery::{DiscoveryFilter, discover_ranked};
use crate::error::{ApiError, ErrorBody};
use crate::input::{decimal_text, parse_body};
use crate::routes::{ListObject, page_limit};
use crate::state::AppState;
use crate::vocabulary::{
    AgentKindWord, AgentStateWord, AgentStatusWord, CategoryWord, VisibilityWord, credits_schema,
};

const MAX_PAGE: u64 = 100;
const DEFAULT_PAGE: u64 = 20;

/// A price sheet; each price is an amount of credits (decimal string or number).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PricingBody {
    #[schema(schema_with = credits_schema)]
    per_call: Option<Value>,
    #[schema(schema_with = credits_schema)]
    per_million_input_tokens: Option<Value>,
    #[schema(schema_with = credits_schema)]
    per_million_output_tokens: Option<Value>,
}

/// `POST /api/agents`. `name`, `endpoint`, `categories` and `pricing` are required; the
/// registry names any missing or invalid field.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterBody {
    /// 1 to 64 letters, digits, `.`, `_` and `-`, starting with a letter or digit; the slug is
    /// `handle/name`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    name: Option<String>,
    #[schema(max_length = 2000)]
    description: Option<String>,
    #[schema(value_type = Option<AgentKindWord>)]
    kind: Option<String>,
    #[schema(value_type = Option<Vec<CategoryWord>>)]
    categories: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    /// The HTTP(S) URL jobs are POSTed to; it must pass the egress guard.
    endpoint: Option<String>,
    /// For `openai-chat` agents: the model name sent upstream.
    upstream_model: Option<String>,
    /// Sent upstream as a bearer token; sealed at rest, never shown again.
    upstream_api_key: Option<String>,
    /// A URL that answers bid requests live.
    bid_url: Option<String>,
    max_latency_ms: Option<i64>,
    regions: Option<Vec<String>>,
    features: Option<Vec<String>>,
    context_length: Option<i64>,
    #[schema(value_type = Option<VisibilityWord>)]
    visibility: Option<String>,
    pricing: Option<PricingBody>,
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /api/agents/{id}`: the fields to change; `null` clears a nullable one. `name` and
/// `kind` are fixed at registration.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchBody {
    /// Refused: fixed at registration.
    #[schema(value_type = Option<String>)]
    name: Option<Value>,
    /// Refused: fixed at registration.
    #[schema(value_type = Option<String>)]
    kind: Option<Value>,
    description: Option<String>,
    #[schema(value_type = Option<Vec<CategoryWord>>)]
    categories: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    endpoint: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    upstream_model: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    upstream_api_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    bid_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    max_latency_ms: Option<Option<i64>>,
    regions: Option<Vec<String>>,
    features: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    context_length: Option<Option<i64>>,
    #[schema(value_type = Option<VisibilityWord>)]
    visibility: Option<String>,
    #[schema(value_type = Option<AgentStateWord>)]
    status: Option<String>,
    pricing: Option<PricingBody>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DiscoveryQuery {
    #[param(value_type = Option<CategoryWord>)]
    category: Option<String>,
    /// Matches the slug, description and tags (at most 200 characters).
    #[param(max_length = 200)]
    q: Option<String>,
    #[param(value_type = Option<crate::vocabulary::DiscoverySort>)]
    sort: Option<String>,
    /// 1 to 100 agents (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) enum AgentObject {
    #[serde(rename = "agent")]
    Agent,
}

/// Prices as decimal strings of credits.
#[derive(Serialize, ToSchema)]
pub(crate) struct PricingView {
    per_call: String,
    per_million_input_tokens: String,
    per_million_output_tokens: String,
}

/// An agent's public record: a conservative score (the posterior's lower bound), its success
/// rate, what happened on every attempt, and its observed latency.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReputationView {
    score: f64,
    success_rate: f64,
    attempts: u64,
    successes: u64,
    errors: u64,
    timeouts: u64,
    invalid_outputs: u64,
    latency_ms: Option<f64>,
    latency_p95_ms: Option<f64>,
}

/// An agent as a viewer sees it. `endpoint`, `bid_url`, `upstream_model` and
/// `has_upstream_api_key` are shown to the owner only; the upstream key itself to nobody.
#[derive(Serialize, ToSchema)]
pub(crate) struct AgentView {
    id: Uuid,
    object: AgentObject,
    slug: String,
    name: String,
    owner_id: Uuid,
    description: String,
    #[schema(value_type = AgentKindWord)]
    kind: &'static str,
    categories: Vec<String>,
    tags: Vec<String>,
    max_latency_ms: Option<u32>,
    regions: Vec<String>,
    features: Vec<String>,
    context_length: Option<u64>,
    #[schema(value_type = VisibilityWord)]
    visibility: &'static str,
    #[schema(value_type = AgentStatusWord)]
    status: &'static str,
    /// The agent answers bid requests live (it has a `bid_url`).
    live_bidding: bool,
    pricing: PricingView,
    /// Counts price changes.
    price_version: u32,
    reputation: ReputationView,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bid_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    has_upstream_api_key: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AgentList {
    object: ListObject,
    data: Vec<AgentView>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AgentPage {
    object: ListObject,
    data: Vec<AgentView>,
    has_more: bool,
    next_cursor: Option<String>,
}

fn raw_pricing(body: PricingBody) -> Result<RawPricing, ApiError> {
    Ok(RawPricing {
        per_call: decimal_text("pricing.per_call", body.per_call)?,
        per_million_input_tokens: decimal_text(
            "pricing.per_million_input_tokens",
            body.per_million_input_tokens,
        )?,
        per_million_output_tokens: decimal_text(
            "pricing.per_million_output_tokens",
            body.per_million_output_tokens,
        )?,
    })
}

/// `POST /api/agents`: 201 with the agent.
#[utoipa::path(post, path = "/api/agents", operation_id = "register_agent", tag = "agents", security(("bearer" = [])), request_body = RegisterBody,
    responses((status = 415, body = ErrorBody), (status = 413, body = ErrorBody), (status = 400, body = ErrorBody), (status = 201, body = AgentView,
            links(("GetAgent" = (operation_id = "get_agent", parameters(("id" = "$response.body#/id")))),
                  ("UpdateAgent" = (operation_id = "update_agent", parameters(("id" = "$response.body#/id")))),
                  ("DeleteAgent" = (operation_id = "delete_agent", parameters(("id" = "$response.body#/id")))))),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn register(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body: RegisterBody = parse_body(body.into_inner())?;
    let raw = RawAgentSpec {
        name: body.name,
        description: body.description,
        kind: body.kind,
        categories: body.categories,
        tags: body.tags,
        endpoint: body.endpoint,
        upstream_model: body.upstream_model,
        upstream_api_key: body.upstream_api_key,
        bid_url: body.bid_url,
        max_latency_ms: body.max_latency_ms,
        regions: body.regions,
        features: body.features,
        context_length: body.context_length,
        visibility: body.visibility,
        pricing: body.pricing.map(raw_pricing).transpose()?,
    };
    let agent = agent_registration::register(&state, caller.user_id, raw).await?;
    Ok(HttpResponse::Created().json(AgentView::new(&state, &agent, Some(caller.user_id))))
}

/// `GET /api/agents/{id}`: the caller's own agent, or anyone's public one.
#[utoipa::path(get, path = "/api/agents/{id}", operation_id = "get_agent", tag = "agents", security((), ("bearer" = [])),
    params(("id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = AgentView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    caller: MaybeCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let viewer = caller.0.map(|c| c.user_id);
    let id = agent_id(&path)?;
    let agent = agents::find_visible_agent(&state.db, viewer, id).await?;
    Ok(HttpResponse::Ok().json(AgentView::new(&state, &agent, viewer)))
}

/// `GET /api/agents/mine`: every live agent of the caller, private ones included.
#[utoipa::path(get, path = "/api/agents/mine", operation_id = "my_agents", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = AgentList), (status = 401, body = ErrorBody)))]
pub(crate) async fn mine(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let agents = agents::list_own_agents(&state.db, caller.user_id).await?;
    let data = agents.iter().map(|a| AgentView::new(&state, a, Some(caller.user_id))).collect();
    Ok(HttpResponse::Ok().json(AgentList { object: ListObject::List, data }))
}

/// `PATCH /api/agents/{id}`: owner only. Name and kind are fixed at registration.
#[utoipa::path(patch, path = "/api/agents/{id}", operation_id = "update_agent", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The agent's id")), request_body = PatchBody,
    responses((status = 415, body = ErrorBody), (status = 413, body = ErrorBody), (status = 400, body = ErrorBody), (status = 200, body = AgentView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn update(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let id = agent_id(&path)?;
    let body: PatchBody = parse_body(body.into_inner())?;
    if body.name.is_some() {
        return Err(ApiError::validation(
            "name",
            "cannot be changed; register a new agent instead",
        ));
    }
    if body.kind.is_some() {
        return Err(ApiError::validation(
            "kind",
            "cannot be changed; register a new agent instead",
        ));
    }
    let patch = RawAgentPatch {
        description: body.description,
        categories: body.categories,
        tags: body.tags,
        endpoint: body.endpoint,
        upstream_model: body.upstream_model,
        upstream_api_key: body.upstream_api_key,
        bid_url: body.bid_url,
        max_latency_ms: body.max_latency_ms,
        regions: body.regions,
        features: body.features,
        context_length: body.context_length,
        visibility: body.visibility,
        status: body.status,
        pricing: body.pricing.map(raw_pricing).transpose()?,
    };
    let agent = agent_registration::update(&state, caller.user_id, id, patch).await?;
    Ok(HttpResponse::Ok().json(AgentView::new(&state, &agent, Some(caller.user_id))))
}

/// `POST /api/agents/{id}/pause`.
#[utoipa::path(post, path = "/api/agents/{id}/pause", operation_id = "pause_agent", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = AgentView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn pause(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_state(caller, state, &path, AgentState::Paused).await
}

/// `POST /api/agents/{id}/resume`.
#[utoipa::path(post, path = "/api/agents/{id}/resume", operation_id = "resume_agent", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = AgentView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn resume(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_state(caller, state, &path, AgentState::Active).await
}

async fn set_state(
    caller: Caller,
    state: web::Data<AppState>,
    id: &str,
    status: AgentState,
) -> Result<HttpResponse, ApiError> {
    let id = agent_id(id)?;
    let patch =
        RawAgentPatch { status: Some(status.as_str().to_owned()), ..RawAgentPatch::default() };
    let agent = agents::update_agent(&state.db, caller.user_id, id, patch, state.now()).await?;
    state.agent_index.announce();
    Ok(HttpResponse::Ok().json(AgentView::new(&state, &agent, Some(caller.user_id))))
}

/// `DELETE /api/agents/{id}`: 204. Soft: records that name the agent still resolve it.
#[utoipa::path(delete, path = "/api/agents/{id}", operation_id = "delete_agent", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The agent's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = agent_id(&path)?;
    agents::delete_agent(&state.db, caller.user_id, id, state.now()).await?;
    state.agent_index.announce();
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /api/agents`: public discovery, from the candidate index. Filters `category` and `q`
/// (name, slug, description, tags); `sort` = `newest` (default), `price`, `reputation`;
/// cursor pagination.
#[utoipa::path(get, path = "/api/agents", operation_id = "discover_agents", tag = "agents", security((), ("bearer" = [])), params(DiscoveryQuery),
    responses((status = 200, body = AgentPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(crate) async fn discover(
    caller: MaybeCaller,
    state: web::Data<AppState>,
    query: web::Query<DiscoveryQuery>,
) -> Result<HttpResponse, ApiError> {
    let viewer = caller.0.map(|c| c.user_id);
    let limit = page_limit(query.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)? as usize;
    let after = query.cursor.as_deref().map(parse_cursor).transpose()?;
    let query = query.into_inner();
    let filter = DiscoveryFilter {
        category: query.category,
        text: query.q,
        sort: query.sort,
        max_price: None,
        min_reputation: None,
    };
    let listed = discover_ranked(&state, filter).await?;
    let start = match after {
        Some((key, id)) => {
            listed.partition_point(|(k, agent)| (*k, agent.id).cmp(&(key, id)) != Ordering::Greater)
        }
        None => 0,
    };
    let page: Vec<&(i64, Arc<Agent>)> = listed.iter().skip(start).take(limit).collect();
    let has_more = start + page.len() < listed.len();
    let next_cursor =
        if has_more { page.last().map(|(key, agent)| format!("{key}.{}", agent.id)) } else { None };
    let data = page.iter().map(|(_, agent)| AgentView::new(&state, agent, viewer)).collect();
    Ok(HttpResponse::Ok().json(AgentPage { object: ListObject::List, data, has_more, next_cursor }))
}

fn parse_cursor(text: &str) -> Result<(i64, Uuid), ApiError> {
    let invalid = || ApiError::validation("cursor", "is not a cursor from a previous page");
    let (key, id) = text.split_once('.').ok_or_else(invalid)?;
    Ok((key.parse().map_err(|_| invalid())?, Uuid::parse_str(id).map_err(|_| invalid())?))
}

fn agent_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound { what: "agent" })
}

impl PricingView {
    pub(crate) fn new(pricing: &PriceSheet) -> PricingView {
        PricingView {
            per_call: pricing.per_call.to_string(),
            per_million_input_tokens: pricing.per_million_input_tokens.to_string(),
            per_million_output_tokens: pricing.per_million_output_tokens.to_string(),
        }
    }
}

impl ReputationView {
    /// The posterior's lower bound, 0 to 1: what the auction ranks by.
    pub(crate) fn score(&self) -> f64 {
        self.score
    }

    pub(crate) fn latency_ms(&self) -> Option<f64> {
        self.latency_ms
    }

    pub(crate) fn new(agent: &Agent, params: &Parameters, now_ms: i64) -> ReputationView {
        let stats = &agent.reputation;
        let posterior = stats.posterior(now_ms, params.half_life_ms, params.default_prior());
        ReputationView {
            score: round3(posterior.lower_bound()),
            success_rate: round3(posterior.mean()),
            attempts: stats.total_successes
                + stats.total_errors
                + stats.total_timeouts
                + stats.total_invalid,
            successes: stats.total_successes,
            errors: stats.total_errors,
            timeouts: stats.total_timeouts,
            invalid_outputs: stats.total_invalid,
            latency_ms: (stats.latency_ewma_ms > 0.0).then(|| stats.latency_ewma_ms.round()),
            latency_p95_ms: (stats.latency_p95_ms > 0.0).then(|| stats.latency_p95_ms.round()),
        }
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// `active`, `paused`, or `circuit_open` while this instance's breaker keeps it out.
pub(crate) fn status_word(state: &AppState, agent: &Agent) -> &'static str {
    let circuit = state.breakers.circuit(agent.id, std::time::Instant::now());
    match (agent.state, circuit) {
        (AgentState::Paused, _) => "paused",
        (AgentState::Active, crate::jobs::breaker::Circuit::Open) => "circuit_open",
        (AgentState::Active, _) => "active",
    }
}

impl AgentView {
    /// An agent as `viewer` sees it. Endpoints and upstream details are the owner's business;
    /// the upstream key itself is never rendered, for anyone.
    pub(crate) fn new(state: &AppState, agent: &Agent, viewer: Option<UserId>) -> AgentView {
        let params = state.auction_parameters();
        let owner = viewer == Some(agent.owner_id);
        AgentView {
            id: agent.id,
            object: AgentObject::Agent,
            slug: agent.slug.clone(),
            name: agent.name.clone(),
            owner_id: agent.owner_id.0,
            description: agent.description.clone(),
            kind: agent.kind.as_str(),
            categories: agent.categories.clone(),
            tags: agent.tags.clone(),
            max_latency_ms: agent.max_latency_ms,
            regions: agent.regions.clone(),
            features: agent.features.clone(),
            context_length: agent.context_length,
            visibility: agent.visibility.as_str(),
            status: status_word(state, agent),
            live_bidding: agent.bid_url.is_some(),
            pricing: PricingView::new(&agent.pricing),
            price_version: agent.price_version,
            reputation: ReputationView::new(agent, &params, state.now().timestamp_millis()),
            created_at: agent.created_at,
            updated_at: agent.updated_at,
            endpoint: owner.then(|| agent.endpoint.clone()),
            bid_url: if owner { agent.bid_url.clone() } else { None },
            upstream_model: if owner { agent.upstream_model.clone() } else { None },
            has_upstream_api_key: owner.then(|| agent.upstream_api_key.is_some()),
        }
    }
}
