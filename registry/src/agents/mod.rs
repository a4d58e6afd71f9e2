//! The open agent registry: specifications, storage, reputation evidence and the candidate
//! index.

mod domain;
mod index;
pub(crate) mod store;

pub use domain::{
    AgentKind, AgentName, AgentSpec, AgentState, CATEGORIES, RawAgentSpec, RawPricing, Secret,
    Visibility, check_upstream_key,
};
pub use index::{AgentIndex, REPUTATION_REFRESH_MS, Snapshot};
pub use store::{
    Agent, PRICE_CHANGES_PER_HOUR, PriceRecord, RawAgentPatch, agents_generation, delete_agent,
    find_visible_agent, list_own_agents, load_agent, load_agents_and_retired, load_for_write,
    load_live_agents, price_histories, price_version, record_attempt, register_agent, update_agent,
};
pub(crate) use store::{add_reputation_updates, reputation_stats};
