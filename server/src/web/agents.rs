//! The owner's agents: each one's state (with pause and resume), price sheet, reputation as
//! the auction reads it (decayed successes and failures, latency), its attempts by outcome,
//! and its ratings as they count (owners' own left out, capped per caller).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use registry::agents::{self, AgentState, RawAgentPatch};
use registry::feedback::{self, AgentRatings};
use uuid::Uuid;

use crate::state::AppState;
use crate::web::account::CsrfForm;
use crate::web::home::Nav;
use crate::web::session::Visitor;
use crate::web::{PageError, render, see_other};

struct AgentRow {
    id: Uuid,
    slug: String,
    categories: String,
    active: bool,
    state: &'static str,
    per_call: String,
    per_million_input: String,
    per_million_output: String,
    price_version: u32,
    successes: String,
    failures: String,
    latency_ewma_ms: String,
    latency_p95_ms: String,
    attempts: String,
    ratings: AgentRatings,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    nav: Option<Nav>,
    csrf: String,
    agents: Vec<AgentRow>,
}

pub(crate) async fn list(
    visitor: Visitor,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let own = agents::list_own_agents(&state.db, visitor.user).await?;
    let mut rows = Vec::with_capacity(own.len());
    for agent in own {
        let r = &agent.reputation;
        rows.push(AgentRow {
            id: agent.id,
            slug: agent.slug.clone(),
            categories: agent.categories.join(", "),
            active: agent.state == AgentState::Active,
            state: agent.state.as_str(),
            per_call: agent.pricing.per_call.to_string(),
            per_million_input: agent.pricing.per_million_input_tokens.to_string(),
            per_million_output: agent.pricing.per_million_output_tokens.to_string(),
            price_version: agent.price_version,
            successes: format!("{:.1}", r.successes),
            failures: format!("{:.1}", r.failures),
            latency_ewma_ms: format!("{:.0}", r.latency_ewma_ms),
            latency_p95_ms: format!("{:.0}", r.latency_p95_ms),
            attempts: format!(
                "{} ok, {} errors, {} timeouts, {} invalid",
                r.total_successes, r.total_errors, r.total_timeouts, r.total_invalid
            ),
            ratings: feedback::agent_ratings(&state.db, agent.id).await?,
        });
    }
    let page = AgentsPage {
        nav: Some(Nav::of(&state, &visitor).await?),
        csrf: visitor.csrf.clone(),
        agents: rows,
    };
    render(StatusCode::OK, &page)
}

/// Pauses (`paused` true) or resumes one of the visitor's agents; the next auction sees it.
async fn set_state(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
    to: AgentState,
) -> Result<HttpResponse, PageError> {
    visitor.check_csrf(&form.csrf)?;
    let id =
        Uuid::parse_str(&path).map_err(|_| registry::RegistryError::NotFound { what: "agent" })?;
    let patch = RawAgentPatch { status: Some(to.as_str().to_owned()), ..RawAgentPatch::default() };
    agents::update_agent(&state.db, visitor.user, id, patch, state.now()).await?;
    state.agent_index.announce();
    Ok(see_other("/agents"))
}

pub(crate) async fn pause(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    set_state(visitor, state, path, form, AgentState::Paused).await
}

pub(crate) async fn resume(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    set_state(visitor, state, path, form, AgentState::Active).await
}
