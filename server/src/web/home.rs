//! The dashboard's front page: the wallet, what it spent and earned per UTC day or hour, the
//! API keys (created shown once, revoked for good) with each one's use over the chart's days
//! (from `api_key_hours`), and the latest jobs.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use auction_engine::MicroCredits;
use chrono::{Days, Duration, DurationRound};
use registry::jobs::ActivityFilter;
use registry::{KeyName, UserId};
use serde::Deserialize;
use uuid::Uuid;

use crate::activity::ActivityRow;
use crate::state::AppState;
use crate::web::chart::{BarChart, bar_chart};
use crate::web::session::Visitor;
use crate::web::{PageError, render, see_other};

/// The days the front page charts by day, today included.
const CHART_DAYS: u64 = 14;
/// The hours it charts by hour, this one included.
const CHART_HOURS: i64 = 48;
/// The jobs the front page lists (the jobs page has them all).
const RECENT_JOBS: u64 = 10;

/// The header of a signed-in page: who, and the token its logout form carries.
pub(crate) struct Nav {
    pub(crate) handle: String,
    pub(crate) csrf: String,
    /// Listed in `admin.emails`: sees the operator's page.
    pub(crate) operator: bool,
}

impl Nav {
    pub(crate) async fn of(state: &AppState, visitor: &Visitor) -> Result<Nav, PageError> {
        let user = registry::find_user(&state.db, visitor.user).await?.ok_or(PageError::SignIn)?;
        let operator = state.settings.admin_emails.iter().any(|email| email.as_str() == user.email);
        Ok(Nav { handle: user.handle, csrf: visitor.csrf.clone(), operator })
    }
}

/// What the charts' bars stand for: a UTC day (`/?by=day`, the default) or hour (`/?by=hour`).
#[derive(Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChartPeriod {
    #[default]
    Day,
    Hour,
}

#[derive(Deserialize)]
pub(crate) struct FrontQuery {
    #[serde(default)]
    by: ChartPeriod,
}

/// One UTC day or hour of the wallet's job entries.
struct PeriodRow {
    /// `2026-12-07`, or `2026-12-07 13:00`.
    label: String,
    spent: MicroCredits,
    earned: MicroCredits,
}

struct KeyRow {
    id: Uuid,
    name: String,
    prefix: String,
    created: String,
    last_used: String,
    revoked: bool,
    /// Over the last `CHART_DAYS` UTC days: finished jobs, delivered ones, credits spent.
    jobs: i64,
    delivered: i64,
    spent: MicroCredits,
}

/// One key's use on one UTC day.
struct KeyDayRow {
    day: String,
    key: String,
    jobs: i64,
    delivered: i64,
    spent: MicroCredits,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    nav: Option<Nav>,
    csrf: String,
    balance: MicroCredits,
    held: MicroCredits,
    available: MicroCredits,
    spend_chart: BarChart,
    earn_chart: BarChart,
    by_hour: bool,
    periods: Vec<PeriodRow>,
    spent_total: MicroCredits,
    earned_total: MicroCredits,
    keys: Vec<KeyRow>,
    /// Each key's use per UTC day over the chart's days, for the days it was used.
    key_days: Vec<KeyDayRow>,
    /// A key just created: its secret, shown this once.
    new_key: Option<String>,
    key_error: Option<String>,
    /// The latest jobs.
    rows: Vec<ActivityRow>,
}

pub(crate) async fn dashboard(
    visitor: Visitor,
    state: web::Data<AppState>,
    query: web::Query<FrontQuery>,
) -> Result<HttpResponse, PageError> {
    let page = front_page(&state, &visitor, query.by, None, None).await?;
    render(StatusCode::OK, &page)
}

async fn front_page(
    state: &AppState,
    visitor: &Visitor,
    by: ChartPeriod,
    new_key: Option<String>,
    key_error: Option<String>,
) -> Result<DashboardPage, PageError> {
    let nav = Nav::of(state, visitor).await?;
    let balance = state.bank.balance(visitor.user).await?;
    let periods = match by {
        ChartPeriod::Day => daily_rows(state, visitor.user).await?,
        ChartPeriod::Hour => hourly_rows(state, visitor.user).await?,
    };
    let sum = |pick: fn(&PeriodRow) -> MicroCredits| {
        MicroCredits::from_micros(periods.iter().map(|d| pick(d).micros()).sum())
    };
    let (spent_total, earned_total) = (sum(|d| d.spent), sum(|d| d.earned));
    let points = |pick: fn(&PeriodRow) -> MicroCredits| -> Vec<(String, i64)> {
        periods.iter().map(|d| (d.label.clone(), pick(d).micros())).collect()
    };
    let credits = |micros: i64| format!("{} credits", MicroCredits::from_micros(micros));
    let spend_chart = bar_chart(&points(|d| d.spent), credits);
    let earn_chart = bar_chart(&points(|d| d.earned), credits);
    let today = state.now().date_naive();
    let first = today.checked_sub_days(Days::new(CHART_DAYS - 1)).unwrap_or(today);
    let since = first.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let usage = registry::figures::key_usage_days(&state.db, visitor.user, since).await?;
    let listed = registry::list_api_keys(&state.db, visitor.user).await?;
    let name_of = |id: Uuid| listed.iter().find(|k| k.id == id).map(|k| k.name.clone());
    let key_days: Vec<KeyDayRow> = usage
        .iter()
        .map(|u| KeyDayRow {
            day: u.day.to_string(),
            key: name_of(u.api_key_id).unwrap_or_default(),
            jobs: u.jobs,
            delivered: u.delivered,
            spent: u.spent,
        })
        .collect();
    let keys = listed
        .iter()
        .map(|key| {
            let mine = usage.iter().filter(|u| u.api_key_id == key.id);
            let (jobs, delivered, spent) = mine.fold((0_i64, 0_i64, 0_i64), |(j, d, s), u| {
                (
                    j.saturating_add(u.jobs),
                    d.saturating_add(u.delivered),
                    s.saturating_add(u.spent.micros()),
                )
            });
            KeyRow {
                id: key.id,
                name: key.name.clone(),
                prefix: key.prefix.clone(),
                created: key.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                last_used: key.last_used_at.map_or_else(
                    || "never".to_owned(),
                    |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
                ),
                revoked: key.revoked_at.is_some(),
                jobs,
                delivered,
                spent: MicroCredits::from_micros(spent),
            }
        })
        .collect();
    let filter = ActivityFilter { limit: RECENT_JOBS, ..ActivityFilter::default() };
    let rows = registry::jobs::activity(&state.db, visitor.user, filter)
        .await?
        .iter()
        .map(|job| ActivityRow::new(job, visitor.user.0))
        .collect();
    Ok(DashboardPage {
        nav: Some(nav),
        csrf: visitor.csrf.clone(),
        balance: balance.balance,
        held: balance.held,
        available: balance.available,
        spend_chart,
        earn_chart,
        by_hour: by == ChartPeriod::Hour,
        periods,
        spent_total,
        earned_total,
        keys,
        key_days,
        new_key,
        key_error,
        rows,
    })
}

/// The last [`CHART_DAYS`] UTC days, each present (zero when nothing moved), oldest first.
async fn daily_rows(state: &AppState, user: UserId) -> Result<Vec<PeriodRow>, PageError> {
    let today = state.now().date_naive();
    let first = today.checked_sub_days(Days::new(CHART_DAYS - 1)).unwrap_or(today);
    let since = first.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let flows = registry::figures::daily_flows(&state.db, user, since).await?;
    Ok(first
        .iter_days()
        .take_while(|day| *day <= today)
        .map(|day| {
            let flow = flows.iter().find(|f| f.day == day);
            period_row(day.to_string(), flow.map(|f| (f.spent, f.earned)))
        })
        .collect())
}

/// The last [`CHART_HOURS`] UTC hours, each present, oldest first.
async fn hourly_rows(state: &AppState, user: UserId) -> Result<Vec<PeriodRow>, PageError> {
    let now = state.now();
    let this_hour = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let first = this_hour - Duration::hours(CHART_HOURS - 1);
    let flows = registry::figures::hourly_flows(&state.db, user, first).await?;
    Ok((0..CHART_HOURS)
        .map(|n| {
            let hour = first + Duration::hours(n);
            let flow = flows.iter().find(|f| f.hour == hour);
            period_row(hour.format("%Y-%m-%d %H:00").to_string(), flow.map(|f| (f.spent, f.earned)))
        })
        .collect())
}

/// A period's row: zero when nothing moved in it.
fn period_row(label: String, flow: Option<(MicroCredits, MicroCredits)>) -> PeriodRow {
    let (spent, earned) = flow.unwrap_or((MicroCredits::ZERO, MicroCredits::ZERO));
    PeriodRow { label, spent, earned }
}

#[derive(Deserialize)]
pub(crate) struct NewKeyForm {
    csrf: String,
    name: String,
}

/// Creates a key and shows the front page with its secret, this once. The answer is the page
/// itself, not a redirect: the secret must not travel in a URL or be shown again.
pub(crate) async fn create_key(
    visitor: Visitor,
    state: web::Data<AppState>,
    form: web::Form<NewKeyForm>,
) -> Result<HttpResponse, PageError> {
    visitor.check_csrf(&form.csrf)?;
    let (new_key, key_error, status) = match KeyName::parse(&form.name) {
        Ok(name) => {
            let created = registry::create_api_key(
                &state.db,
                visitor.user,
                name,
                Uuid::now_v7(),
                state.now(),
            )
            .await?;
            (Some(created.secret), None, StatusCode::OK)
        }
        Err(err) => (None, Some(err.to_string()), StatusCode::UNPROCESSABLE_ENTITY),
    };
    let page = front_page(&state, &visitor, ChartPeriod::Day, new_key, key_error).await?;
    render(status, &page)
}

pub(crate) async fn revoke_key(
    visitor: Visitor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<super::account::CsrfForm>,
) -> Result<HttpResponse, PageError> {
    visitor.check_csrf(&form.csrf)?;
    let key_id = Uuid::parse_str(&path)
        .map_err(|_| registry::RegistryError::NotFound { what: "api key" })?;
    registry::revoke_api_key(&state.db, visitor.user, key_id, state.now()).await?;
    state.api_keys.forget(key_id);
    Ok(see_other("/"))
}
