//! The owner's agents: each one's state (with pause and resume), price sheet, reputation as
//! the auction reads it (decayed successes and failures, latency), its attempts by outcome,
//! and its ratings as they count (owners' own left out, capped per caller); and the form that
//! registers a new one (`/agents/new`), through the API's own path, with each refusal shown at
//! its field.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use askama::Template;
use registry::agents::{self, AgentState, RawAgentPatch, RawAgentSpec, RawPricing};
use registry::feedback::{self, AgentRatings};
use serde::Deserialize;
use uuid::Uuid;

use crate::agent_registration;
use crate::error::ApiError;
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
    /// Every price sheet it has had, newest first.
    prices: Vec<PriceRow>,
}

struct PriceRow {
    version: u32,
    since: String,
    per_call: String,
    per_million_input: String,
    per_million_output: String,
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
    let mut histories = agents::price_histories(&state.db, visitor.user).await?;
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
            prices: histories
                .remove(&agent.id)
                .unwrap_or_default()
                .into_iter()
                .map(|p| PriceRow {
                    version: p.version,
                    since: p.since.format("%Y-%m-%d %H:%M:%S").to_string(),
                    per_call: p.sheet.per_call.to_string(),
                    per_million_input: p.sheet.per_million_input_tokens.to_string(),
                    per_million_output: p.sheet.per_million_output_tokens.to_string(),
                })
                .collect(),
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

/// The registration form as posted: every field text, an empty one absent.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct NewAgentForm {
    csrf: String,
    name: String,
    description: String,
    kind: String,
    categories: String,
    endpoint: String,
    upstream_model: String,
    bid_url: String,
    per_call: String,
    per_million_input_tokens: String,
    per_million_output_tokens: String,
    max_latency_ms: String,
    visibility: String,
}

/// One text input of the form, with its error if the last post was refused there.
struct FormField {
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    value: String,
    required: bool,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "agent_new.html")]
struct NewAgentPage {
    nav: Option<Nav>,
    csrf: String,
    fields: Vec<FormField>,
    kind: String,
    visibility: String,
    /// A refusal that belongs to no one field (a name already taken, say).
    error: Option<String>,
}

/// `GET /agents/new`: the registration form.
pub(crate) async fn new_form(
    visitor: Visitor,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let form = NewAgentForm {
        kind: "openai-chat".into(),
        categories: "chat".into(),
        per_call: "0".into(),
        per_million_input_tokens: "0".into(),
        per_million_output_tokens: "0".into(),
        visibility: "public".into(),
        ..NewAgentForm::default()
    };
    let page = new_agent_page(&state, &visitor, form, None).await?;
    render(StatusCode::OK, &page)
}

/// `POST /agents/new`: registers the agent through the API's own path (egress guard, parsing)
/// and goes to `/agents`; a refusal shows the form again, the message at its field.
pub(crate) async fn create(
    visitor: Visitor,
    state: web::Data<AppState>,
    form: web::Form<NewAgentForm>,
) -> Result<HttpResponse, PageError> {
    visitor.check_csrf(&form.csrf)?;
    let form = form.into_inner();
    let result = match raw_spec(&form) {
        Ok(raw) => agent_registration::register(&state, visitor.user, raw).await.map(|_| ()),
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => Ok(see_other("/agents")),
        Err(err @ (ApiError::Validation { .. } | ApiError::Conflict { .. })) => {
            let status = err.status_code();
            let page = new_agent_page(&state, &visitor, form, Some(err)).await?;
            render(status, &page)
        }
        Err(err) => Err(err.into()),
    }
}

/// The form's text as the registry's raw specification: blank fields absent, lists split at
/// commas, the latency bound a number.
fn raw_spec(form: &NewAgentForm) -> Result<RawAgentSpec, ApiError> {
    let text = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
    let list = |value: &str| {
        let items: Vec<String> =
            value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(String::from).collect();
        Some(items).filter(|items| !items.is_empty())
    };
    let max_latency_ms = match text(&form.max_latency_ms) {
        None => None,
        Some(ms) => Some(ms.parse::<i64>().map_err(|_| {
            ApiError::validation("max_latency_ms", "must be a whole number of milliseconds")
        })?),
    };
    Ok(RawAgentSpec {
        name: text(&form.name),
        description: text(&form.description),
        kind: text(&form.kind),
        categories: list(&form.categories),
        endpoint: text(&form.endpoint),
        upstream_model: text(&form.upstream_model),
        bid_url: text(&form.bid_url),
        max_latency_ms,
        visibility: text(&form.visibility),
        pricing: Some(RawPricing {
            per_call: text(&form.per_call),
            per_million_input_tokens: text(&form.per_million_input_tokens),
            per_million_output_tokens: text(&form.per_million_output_tokens),
        }),
        ..RawAgentSpec::default()
    })
}

async fn new_agent_page(
    state: &AppState,
    visitor: &Visitor,
    form: NewAgentForm,
    refusal: Option<ApiError>,
) -> Result<NewAgentPage, PageError> {
    // The field a refusal names, as the form names it (`pricing.per_call` is `per_call`).
    let refused_at = refusal
        .as_ref()
        .and_then(ApiError::param)
        .map(|field| field.trim_start_matches("pricing.").to_owned());
    let message = refusal.as_ref().map(ToString::to_string);
    let field = |name: &'static str, label, hint, value: String, required| {
        let error = (refused_at.as_deref() == Some(name)).then(|| message.clone()).flatten();
        FormField { name, label, hint, value, required, error }
    };
    let fields = vec![
        field(
            "name",
            "Name",
            "lowercase letters, digits and dashes; it becomes handle/name",
            form.name,
            true,
        ),
        field("description", "Description", "optional, what it does", form.description, false),
        field("categories", "Categories", "comma separated, e.g. chat, ocr", form.categories, true),
        field("endpoint", "Endpoint", "the URL Gavel calls with each job", form.endpoint, true),
        field(
            "upstream_model",
            "Upstream model",
            "the model your endpoint serves; needed for openai-chat",
            form.upstream_model,
            false,
        ),
        field("bid_url", "Bid URL", "optional: answers live bids", form.bid_url, false),
        field("per_call", "Price per call", "credits", form.per_call, true),
        field(
            "per_million_input_tokens",
            "Price per million input tokens",
            "credits",
            form.per_million_input_tokens,
            true,
        ),
        field(
            "per_million_output_tokens",
            "Price per million output tokens",
            "credits",
            form.per_million_output_tokens,
            true,
        ),
        field(
            "max_latency_ms",
            "Latency bound",
            "optional, milliseconds",
            form.max_latency_ms,
            false,
        ),
    ];
    let placed = fields.iter().any(|f| f.error.is_some());
    Ok(NewAgentPage {
        nav: Some(Nav::of(state, visitor).await?),
        csrf: visitor.csrf.clone(),
        fields,
        kind: form.kind,
        visibility: form.visibility,
        error: if placed { None } else { message },
    })
}
