//! Registering and editing an agent: what the API (`POST /api/agents`, `PATCH
//! /api/agents/{id}`) and the dashboard's forms share, below both. A URL the agent gives (its endpoint, its bid URL) passes
//! the egress guard before anything is stored, and is stored in its canonical form; an upstream
//! key is sealed; the registry parses the rest; the agent index hears of the change.

use registry::UserId;
use registry::agents::{self, Agent, AgentSpec, RawAgentPatch, RawAgentSpec};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Registers `raw` for `owner`. A refusal names its field (`endpoint`, `pricing.per_call`,
/// ...), an egress refusal included.
pub(crate) async fn register(
    state: &AppState,
    owner: UserId,
    mut raw: RawAgentSpec,
) -> Result<Agent, ApiError> {
    if let Some(key) = &raw.upstream_api_key {
        raw.upstream_api_key = Some(seal(state, key)?);
    }
    if let Some(endpoint) = &raw.endpoint {
        raw.endpoint = Some(vet(state, "endpoint", endpoint).await?);
    }
    if let Some(bid_url) = &raw.bid_url {
        raw.bid_url = Some(vet(state, "bid_url", bid_url).await?);
    }
    let spec = AgentSpec::parse(raw)?;
    let agent = agents::register_agent(&state.db, owner, spec, Uuid::now_v7(), state.now()).await?;
    state.agent_index.announce();
    Ok(agent)
}

/// Applies `patch` to one of `owner`'s agents. The write check (404, or 403 for another
/// owner's public agent) comes before the URL checks, so that a stranger learns nothing from
/// them; then as `register`: keys sealed, URLs vetted, the index told.
pub(crate) async fn update(
    state: &AppState,
    owner: UserId,
    id: Uuid,
    mut patch: RawAgentPatch,
) -> Result<Agent, ApiError> {
    agents::load_for_write(&state.db, owner, id).await?;
    if let Some(Some(key)) = &patch.upstream_api_key {
        patch.upstream_api_key = Some(Some(seal(state, key)?));
    }
    if let Some(endpoint) = &patch.endpoint {
        patch.endpoint = Some(vet(state, "endpoint", endpoint).await?);
    }
    if let Some(Some(bid_url)) = &patch.bid_url {
        patch.bid_url = Some(Some(vet(state, "bid_url", bid_url).await?));
    }
    let agent = agents::update_agent(&state.db, owner, id, patch, state.now()).await?;
    state.agent_index.announce();
    Ok(agent)
}

/// Checks an upstream key as typed and seals it for storage: the database never holds it in
/// clear, and no response ever shows it.
pub(crate) fn seal(state: &AppState, key: &str) -> Result<String, ApiError> {
    agents::check_upstream_key(key)?;
    state.agent_client.secrets().seal(key).map_err(ApiError::internal)
}

/// Runs a URL through the egress guard; a refusal is a 422 naming the field. Returns the URL
/// in canonical form (`http://①②⑦.0.0.1` is `http://127.0.0.1/`), which is what is stored and
/// shown.
pub(crate) async fn vet(
    state: &AppState,
    field: &'static str,
    url: &str,
) -> Result<String, ApiError> {
    state
        .agent_client
        .resolver()
        .vet_url(url)
        .await
        .map(String::from)
        .map_err(|err| ApiError::validation(field, err.to_string()))
}
