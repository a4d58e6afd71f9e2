//! The marketplace, `/market`: public agents by category with their price, reputation and
//! latency (the same list and order as `GET /api/agents`, from `discovery`), and a "try it"
//! box that runs a `recommend` auction for a prompt as the visitor (charged the call fee, as
//! the API would) and shows the shortlist, with a link to the job's transcript.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use askama::Template;
use registry::agents::CATEGORIES;
use serde::Deserialize;
use serde_json::{Map, json};
use uuid::Uuid;

use crate::discovery::{DiscoveryFilter, discover_agents};
use crate::error::ApiError;
use crate::jobs::request::parse_chat;
use crate::jobs::service::{Payer, Shortlisted, run_job};
use crate::state::AppState;
use crate::web::home::Nav;
use crate::web::session::Visitor;
use crate::web::{PageError, render};

/// The most agents the page lists.
const LISTED: usize = 100;
/// The shortlist's length.
const SHORTLIST: usize = 5;
/// The longest prompt the box takes, in characters.
const MAX_PROMPT: usize = 4_000;

#[derive(Deserialize)]
pub(crate) struct MarketQuery {
    category: Option<String>,
    sort: Option<String>,
}

struct AgentRow {
    slug: String,
    categories: String,
    per_call: String,
    per_million_input: String,
    per_million_output: String,
    /// The posterior's lower bound, three decimals: what discovery sorts by.
    reputation: String,
    latency_ms: String,
    live_bidding: bool,
}

/// What the "try it" box found.
struct Tried {
    job_id: Uuid,
    cost: String,
    shortlist: Vec<Shortlisted>,
}

#[derive(Template)]
#[template(path = "market.html")]
struct MarketPage {
    nav: Option<Nav>,
    csrf: String,
    categories: Vec<&'static str>,
    category: String,
    sort: String,
    agents: Vec<AgentRow>,
    prompt: String,
    tried: Option<Tried>,
    /// Why the box found nothing (no agent, credits short, ...).
    try_error: Option<String>,
}

/// `GET /market`.
pub(crate) async fn browse(
    visitor: Visitor,
    state: web::Data<AppState>,
    query: web::Query<MarketQuery>,
) -> Result<HttpResponse, PageError> {
    let query = query.into_inner();
    let page = market_page(&state, &visitor, query.category, query.sort, String::new()).await?;
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub(crate) struct TryForm {
    csrf: String,
    category: String,
    prompt: String,
}

/// `POST /market/try`: a `recommend` auction for the prompt, as the visitor.
pub(crate) async fn try_it(
    visitor: Visitor,
    state: web::Data<AppState>,
    form: web::Form<TryForm>,
) -> Result<HttpResponse, PageError> {
    visitor.check_csrf(&form.csrf)?;
    let form = form.into_inner();
    let mut page =
        market_page(&state, &visitor, Some(form.category.clone()), None, form.prompt.clone())
            .await?;
    let status = match recommend(&state, &visitor, &form).await {
        Ok(tried) => {
            page.tried = Some(tried);
            StatusCode::OK
        }
        Err(err @ ApiError::Internal(_)) => return Err(err.into()),
        Err(err) => {
            let status = err.status_code();
            page.try_error = Some(err.to_string());
            status
        }
    };
    render(status, &page)
}

/// The API's own path: the body `/v1/chat/completions` would take, its parser, `run_job`,
/// behind the visitor's rate limit and monthly grant (what `Caller` does for a key).
async fn recommend(state: &AppState, visitor: &Visitor, form: &TryForm) -> Result<Tried, ApiError> {
    let prompt = form.prompt.trim();
    if prompt.is_empty() {
        return Err(ApiError::validation("prompt", "is required"));
    }
    if prompt.chars().count() > MAX_PROMPT {
        return Err(ApiError::validation(
            "prompt",
            format!("must be at most {MAX_PROMPT} characters"),
        ));
    }
    let model = match form.category.as_str() {
        "chat" => "auction".to_owned(),
        category => format!("auction/{category}"),
    };
    let body = Map::from_iter([
        ("model".to_owned(), json!(model)),
        ("messages".to_owned(), json!([{"role": "user", "content": prompt}])),
        ("auction".to_owned(), json!({"mode": "recommend", "top_k": SHORTLIST})),
    ]);
    let request = parse_chat(body)?;
    state.rate_limiter.check(&format!("user:{}", visitor.user)).await?;
    state.ensure_monthly_grant(visitor.user).await?;
    let result = run_job(state, Payer { user: visitor.user, api_key: None }, request).await?;
    Ok(Tried {
        job_id: result.job_id,
        cost: result.total_cost.to_string(),
        shortlist: result.shortlist.unwrap_or_default(),
    })
}

async fn market_page(
    state: &AppState,
    visitor: &Visitor,
    category: Option<String>,
    sort: Option<String>,
    prompt: String,
) -> Result<MarketPage, PageError> {
    let category = category.filter(|c| !c.is_empty());
    let sort = sort.filter(|s| !s.is_empty()).unwrap_or_else(|| "reputation".to_owned());
    let filter = DiscoveryFilter {
        category: category.clone(),
        sort: Some(sort.clone()),
        ..DiscoveryFilter::default()
    };
    let params = state.auction_parameters();
    let now_ms = state.now().timestamp_millis();
    let agents = discover_agents(state, filter)
        .await?
        .iter()
        .take(LISTED)
        .map(|agent| {
            let stats = &agent.reputation;
            let posterior = stats.posterior(now_ms, params.half_life_ms, params.default_prior());
            AgentRow {
                slug: agent.slug.clone(),
                categories: agent.categories.join(", "),
                per_call: agent.pricing.per_call.to_string(),
                per_million_input: agent.pricing.per_million_input_tokens.to_string(),
                per_million_output: agent.pricing.per_million_output_tokens.to_string(),
                reputation: format!("{:.3}", posterior.lower_bound()),
                latency_ms: if stats.latency_ewma_ms > 0.0 {
                    format!("{:.0}", stats.latency_ewma_ms)
                } else {
                    "-".to_owned()
                },
                live_bidding: agent.bid_url.is_some(),
            }
        })
        .collect();
    Ok(MarketPage {
        nav: Some(Nav::of(state, visitor).await?),
        csrf: visitor.csrf.clone(),
        categories: CATEGORIES.to_vec(),
        category: category.unwrap_or_default(),
        sort,
        agents,
        prompt,
        tried: None,
        try_error: None,
    })
}
