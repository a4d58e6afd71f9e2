//! The owner's agents: each one's state (with pause and resume), price sheet, reputation as
//! the auction reads it (decayed successes and failures, latency), its attempts by outcome,
//! its ratings as they count (owners' own left out, capped per caller), and its last 14 UTC
//! days from the rollups (auctions entered and won, bid against price, service by outcome,
//! latency buckets, reputation at each day's end); and the forms that
//! register a new one (`/agents/new`) and edit one (`/agents/{id}/edit`), through the API's own
//! paths, with each refusal shown at its field.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use askama::Template;
use auction_engine::MicroCredits;
use registry::RegistryError;
use registry::agents::{self, Agent, AgentState, RawAgentPatch, RawAgentSpec, RawPricing};
use registry::feedback::{self, AgentRatings};
use registry::figures::{self, AgentAuctionDay, AgentServiceHour};
use serde::Deserialize;
use uuid::Uuid;

use crate::agent_registration;
use crate::error::ApiError;
use crate::state::AppState;
use crate::web::account::CsrfForm;
use crate::web::chart::{BarChart, bar_chart};
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

/// One agent's auctions in one category over the window, or in one day of it.
struct AuctionRow {
    label: String,
    entered: i64,
    won: i64,
    win_rate: String,
    /// Averages over the auctions won: its bid, and the price it was to be paid.
    average_bid: String,
    average_price: String,
}

impl AuctionRow {
    fn new(label: String, entered: i64, won: i64, bid: i64, price: i64) -> AuctionRow {
        let average = |total: i64| match won {
            0 => "-".to_owned(),
            won => MicroCredits::from_micros(total / won).to_string(),
        };
        AuctionRow {
            label,
            entered,
            won,
            win_rate: match entered {
                0 => "-".to_owned(),
                entered => format!("{:.1}%", won as f64 * 100.0 / entered as f64),
            },
            average_bid: average(bid),
            average_price: average(price),
        }
    }
}

/// One agent's auctions over the window: per category, and per day with a chart of wins; and
/// how it served, per day, with a chart of its reputation.
struct AgentAuctions {
    slug: String,
    categories: Vec<AuctionRow>,
    days: Vec<AuctionRow>,
    wins_chart: BarChart,
    service: Vec<ServiceRow>,
    reputation_chart: BarChart,
}

/// One agent's service in one UTC day: attempts by outcome, jobs served as a fallback, the
/// successes' latency quantiles (bucket bounds) and its reputation at the day's last write.
struct ServiceRow {
    label: String,
    attempts: i64,
    served: i64,
    fallbacks: i64,
    errors: i64,
    timeouts: i64,
    invalid: i64,
    latency_p50: String,
    latency_p95: String,
    /// The public reputation score (the 5% lower bound on the default prior), or `-`.
    reputation: String,
    /// Decayed successes / failures and latency EWMA / p95 behind it.
    components: String,
    /// The score in thousandths, for the chart (0 when unknown).
    score_milli: i64,
}

/// The latency bucket holding quantile `q` of `buckets` (successes per
/// `figures::LATENCY_BUCKETS_MS` bucket, then above), as `<= 250 ms`; `-` for none.
fn latency_quantile(buckets: &[i64; 10], q: f64) -> String {
    let total: i64 = buckets.iter().sum();
    if total == 0 {
        return "-".to_owned();
    }
    let wanted = ((total as f64) * q).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (i, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= wanted {
            return match figures::LATENCY_BUCKETS_MS.get(i) {
                Some(bound) => format!("<= {bound} ms"),
                None => format!("> {} ms", figures::LATENCY_BUCKETS_MS[8]),
            };
        }
    }
    "-".to_owned()
}

/// `hours` of one agent summed per UTC day of the window (`first` to `today`).
fn service_rows(
    state: &AppState,
    hours: &[&AgentServiceHour],
    first: chrono::NaiveDate,
    today: chrono::NaiveDate,
) -> Vec<ServiceRow> {
    let params = state.auction_parameters();
    let epoch_day = |day: chrono::NaiveDate| {
        day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp().div_euclid(86_400)
    };
    first
        .iter_days()
        .take_while(|day| *day <= today)
        .map(|day| {
            let of_day: Vec<&&AgentServiceHour> =
                hours.iter().filter(|h| h.hour.div_euclid(24) == epoch_day(day)).collect();
            let sum = |pick: fn(&AgentServiceHour) -> i64| -> i64 {
                of_day.iter().map(|h| pick(h)).fold(0, i64::saturating_add)
            };
            let mut buckets = [0_i64; 10];
            for hour in &of_day {
                for (total, count) in buckets.iter_mut().zip(hour.latency_buckets) {
                    *total = total.saturating_add(count);
                }
            }
            let last = of_day.iter().filter_map(|h| h.reputation).max_by_key(|r| r.updated_at_ms);
            let (reputation, components, score_milli) = match last {
                Some(r) => {
                    let score = r
                        .posterior(r.updated_at_ms, params.half_life_ms, params.default_prior())
                        .lower_bound();
                    (
                        format!("{score:.3}"),
                        format!(
                            "{:.1} / {:.1}; {:.0} / {:.0} ms",
                            r.successes, r.failures, r.latency_ewma_ms, r.latency_p95_ms
                        ),
                        (score * 1000.0).round() as i64,
                    )
                }
                None => ("-".to_owned(), "-".to_owned(), 0),
            };
            ServiceRow {
                label: day.to_string(),
                attempts: sum(|h| h.attempts),
                served: sum(|h| h.successes),
                fallbacks: sum(|h| h.fallbacks),
                errors: sum(|h| h.errors),
                timeouts: sum(|h| h.timeouts),
                invalid: sum(|h| h.invalid),
                latency_p50: latency_quantile(&buckets, 0.5),
                latency_p95: latency_quantile(&buckets, 0.95),
                reputation,
                components,
                score_milli,
            }
        })
        .collect()
}

/// The days the auction figures cover, today (UTC) included.
const AUCTION_DAYS: i64 = 14;

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    nav: Option<Nav>,
    csrf: String,
    agents: Vec<AgentRow>,
    auction_days: i64,
    auctions: Vec<AgentAuctions>,
}

/// The auction figures of `owner`'s agents over the last `AUCTION_DAYS` UTC days, from the
/// rollup written with each auction's record.
async fn auction_figures(
    state: &AppState,
    owner: registry::UserId,
    own: &[Agent],
) -> Result<Vec<AgentAuctions>, PageError> {
    let today = state.now().date_naive();
    let first = today - chrono::Duration::days(AUCTION_DAYS - 1);
    let since = first.and_time(chrono::NaiveTime::MIN).and_utc();
    let rows = figures::agent_auction_days(&state.db, owner, since).await?;
    let service_hours = figures::agent_service_hours(&state.db, owner, since).await?;
    let mut figures_of = Vec::new();
    for agent in own {
        let served: Vec<&AgentServiceHour> =
            service_hours.iter().filter(|h| h.agent_id == agent.id).collect();
        let service = service_rows(state, &served, first, today);
        let scores: Vec<(String, i64)> =
            service.iter().map(|d| (d.label.clone(), d.score_milli)).collect();
        let mine: Vec<&AgentAuctionDay> = rows.iter().filter(|r| r.agent_id == agent.id).collect();
        let mut by_category: BTreeMap<&str, [i64; 4]> = BTreeMap::new();
        let mut by_day: BTreeMap<chrono::NaiveDate, [i64; 4]> = BTreeMap::new();
        for row in &mine {
            let add = [row.entered, row.won, row.won_bid.micros(), row.won_price.micros()];
            for sums in [
                by_category.entry(row.category.as_str()).or_default(),
                by_day.entry(row.day).or_default(),
            ] {
                for (sum, value) in sums.iter_mut().zip(add) {
                    *sum = sum.saturating_add(value);
                }
            }
        }
        let row = |label: String, [entered, won, bid, price]: [i64; 4]| {
            AuctionRow::new(label, entered, won, bid, price)
        };
        let days: Vec<AuctionRow> = first
            .iter_days()
            .take_while(|day| *day <= today)
            .map(|day| row(day.to_string(), by_day.get(&day).copied().unwrap_or_default()))
            .collect();
        let points: Vec<(String, i64)> = days.iter().map(|d| (d.label.clone(), d.won)).collect();
        figures_of.push(AgentAuctions {
            slug: agent.slug.clone(),
            categories: by_category.into_iter().map(|(c, sums)| row(c.to_owned(), sums)).collect(),
            wins_chart: bar_chart(&points, |won| format!("{won} won")),
            days,
            reputation_chart: bar_chart(&scores, |milli| format!("{:.3}", milli as f64 / 1000.0)),
            service,
        });
    }
    Ok(figures_of)
}

pub(crate) async fn list(
    visitor: Visitor,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let own = agents::list_own_agents(&state.db, visitor.user).await?;
    let mut histories = agents::price_histories(&state.db, visitor.user).await?;
    let mut rows = Vec::with_capacity(own.len());
    for agent in &own {
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
        auction_days: AUCTION_DAYS,
        auctions: auction_figures(&state, visitor.user, &own).await?,
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

/// The registration or edit form as posted: every field text, an empty one absent. (The
/// edit form has no name or kind: they are fixed at registration.)
#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct AgentForm {
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

impl AgentForm {
    /// The edit form filled in with what `agent` has now.
    fn of(agent: &Agent) -> AgentForm {
        AgentForm {
            csrf: String::new(),
            name: agent.name.clone(),
            description: agent.description.clone(),
            kind: agent.kind.as_str().to_owned(),
            categories: agent.categories.join(", "),
            endpoint: agent.endpoint.clone(),
            upstream_model: agent.upstream_model.clone().unwrap_or_default(),
            bid_url: agent.bid_url.clone().unwrap_or_default(),
            per_call: agent.pricing.per_call.to_string(),
            per_million_input_tokens: agent.pricing.per_million_input_tokens.to_string(),
            per_million_output_tokens: agent.pricing.per_million_output_tokens.to_string(),
            max_latency_ms: agent.max_latency_ms.map(|ms| ms.to_string()).unwrap_or_default(),
            visibility: agent.visibility.as_str().to_owned(),
        }
    }
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

/// What an edit form shows but does not let change.
struct FixedIdentity {
    slug: String,
    kind: String,
}

#[derive(Template)]
#[template(path = "agent_form.html")]
struct AgentFormPage {
    nav: Option<Nav>,
    csrf: String,
    title: String,
    action: String,
    submit: &'static str,
    /// `Some` on the edit form.
    fixed: Option<FixedIdentity>,
    fields: Vec<FormField>,
    kind: String,
    visibility: String,
    /// A refusal that belongs to no one field (a name already taken, say).
    error: Option<String>,
}

/// Which form: a new agent's, or an existing one's.
enum Purpose<'a> {
    Register,
    Edit(&'a Agent),
}

/// `GET /agents/new`: the registration form.
pub(crate) async fn new_form(
    visitor: Visitor,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let form = AgentForm {
        kind: "openai-chat".into(),
        categories: "chat".into(),
        per_call: "0".into(),
        per_million_input_tokens: "0".into(),
        per_million_output_tokens: "0".into(),
        visibility: "public".into(),
        ..AgentForm::default()
    };
    let page = form_page(&state, &visitor, Purpose::Register, form, None).await?;
    render(StatusCode::OK, &page)
}

/// `POST /agents/new`: registers the agent through the API's own path (egress guard, parsing)
/// and goes to `/agents`; a refusal shows the form again, the message at its field.
pub(crate) async fn create(
    visitor: Visitor,
    state: web::Data<AppState>,
    form: web::Form<AgentForm>,
) -> Result<HttpResponse, PageError> {
    visitor.check_csrf(&form.csrf)?;
    let form = form.into_inner();
    let result = match raw_spec(&form) {
        Ok(raw) => agent_registration::register(&state, visitor.user, raw).await.map(|_| ()),
        Err(err) => Err(err),
    };
    answer(&state, &visitor, Purpose::Register, form, result).await
}

/// `GET /agents/{id}/edit`: the edit form, filled in. Another owner's agent is a 404.
pub(crate) async fn edit_form(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let agent = own_agent(&state, &visitor, &path).await?;
    let form = AgentForm::of(&agent);
    let page = form_page(&state, &visitor, Purpose::Edit(&agent), form, None).await?;
    render(StatusCode::OK, &page)
}

/// `POST /agents/{id}/edit`: applies the form through the API's own path (`PATCH
/// /api/agents/{id}`: egress guard, parsing, a new price version only if the sheet changed).
pub(crate) async fn update(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<AgentForm>,
) -> Result<HttpResponse, PageError> {
    visitor.check_csrf(&form.csrf)?;
    let agent = own_agent(&state, &visitor, &path).await?;
    let form = form.into_inner();
    let result = match raw_patch(&form) {
        Ok(patch) => {
            agent_registration::update(&state, visitor.user, agent.id, patch).await.map(|_| ())
        }
        Err(err) => Err(err),
    };
    answer(&state, &visitor, Purpose::Edit(&agent), form, result).await
}

/// One of the visitor's agents; any other (another owner's, a deleted one, no such id) is the
/// same 404, so a page tells a stranger nothing.
async fn own_agent(state: &AppState, visitor: &Visitor, id: &str) -> Result<Agent, PageError> {
    let not_found = || RegistryError::NotFound { what: "agent" };
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let agent =
        agents::load_for_write(&state.db, visitor.user, id).await.map_err(|err| match err {
            RegistryError::Forbidden { .. } => not_found(),
            err => err,
        })?;
    Ok(agent)
}

/// After a post: to `/agents` on success; a refusal of the input shows the form again.
async fn answer(
    state: &AppState,
    visitor: &Visitor,
    purpose: Purpose<'_>,
    form: AgentForm,
    result: Result<(), ApiError>,
) -> Result<HttpResponse, PageError> {
    match result {
        Ok(()) => Ok(see_other("/agents")),
        Err(err @ (ApiError::Validation { .. } | ApiError::Conflict { .. })) => {
            let status = err.status_code();
            let page = form_page(state, visitor, purpose, form, Some(err)).await?;
            render(status, &page)
        }
        Err(err) => Err(err.into()),
    }
}

/// Text as typed, trimmed; blank is absent.
fn text(value: &str) -> Option<String> {
    Some(value.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A comma-separated list; blank items dropped.
fn comma_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(String::from).collect()
}

fn latency_bound(form: &AgentForm) -> Result<Option<i64>, ApiError> {
    text(&form.max_latency_ms)
        .map(|ms| {
            ms.parse::<i64>().map_err(|_| {
                ApiError::validation("max_latency_ms", "must be a whole number of milliseconds")
            })
        })
        .transpose()
}

fn pricing(form: &AgentForm) -> RawPricing {
    RawPricing {
        per_call: text(&form.per_call),
        per_million_input_tokens: text(&form.per_million_input_tokens),
        per_million_output_tokens: text(&form.per_million_output_tokens),
    }
}

/// The form's text as the registry's raw specification: blank fields absent, lists split at
/// commas, the latency bound a number.
fn raw_spec(form: &AgentForm) -> Result<RawAgentSpec, ApiError> {
    let categories = Some(comma_list(&form.categories)).filter(|items| !items.is_empty());
    Ok(RawAgentSpec {
        name: text(&form.name),
        description: text(&form.description),
        kind: text(&form.kind),
        categories,
        endpoint: text(&form.endpoint),
        upstream_model: text(&form.upstream_model),
        bid_url: text(&form.bid_url),
        max_latency_ms: latency_bound(form)?,
        visibility: text(&form.visibility),
        pricing: Some(pricing(form)),
        ..RawAgentSpec::default()
    })
}

/// The edit form as a patch: every field it shows is set, a blank optional one cleared (a
/// blank required one is refused at its field by the registry's parser or the egress guard).
fn raw_patch(form: &AgentForm) -> Result<RawAgentPatch, ApiError> {
    Ok(RawAgentPatch {
        description: Some(form.description.trim().to_owned()),
        categories: Some(comma_list(&form.categories)),
        endpoint: Some(form.endpoint.trim().to_owned()),
        upstream_model: Some(text(&form.upstream_model)),
        bid_url: Some(text(&form.bid_url)),
        max_latency_ms: Some(latency_bound(form)?),
        visibility: text(&form.visibility),
        pricing: Some(pricing(form)),
        ..RawAgentPatch::default()
    })
}

async fn form_page(
    state: &AppState,
    visitor: &Visitor,
    purpose: Purpose<'_>,
    form: AgentForm,
    refusal: Option<ApiError>,
) -> Result<AgentFormPage, PageError> {
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
    let mut fields = Vec::with_capacity(10);
    if matches!(purpose, Purpose::Register) {
        fields.push(field(
            "name",
            "Name",
            "lowercase letters, digits and dashes; it becomes handle/name",
            form.name,
            true,
        ));
    }
    fields.extend([
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
    ]);
    let placed = fields.iter().any(|f| f.error.is_some());
    let (title, action, submit, fixed) = match purpose {
        Purpose::Register => {
            ("Register an agent".to_owned(), "/agents/new".to_owned(), "Register", None)
        }
        Purpose::Edit(agent) => (
            format!("Edit {}", agent.slug),
            format!("/agents/{}/edit", agent.id),
            "Save changes",
            Some(FixedIdentity { slug: agent.slug.clone(), kind: agent.kind.as_str().to_owned() }),
        ),
    };
    Ok(AgentFormPage {
        nav: Some(Nav::of(state, visitor).await?),
        csrf: visitor.csrf.clone(),
        title,
        action,
        submit,
        fixed,
        fields,
        kind: form.kind,
        visibility: form.visibility,
        error: if placed { None } else { message },
    })
}
