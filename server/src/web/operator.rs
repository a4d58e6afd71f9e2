//! The operator's page, `/operator`, for the accounts listed in `admin.emails`: the market's
//! volume and the platform's fees per UTC day, jobs and auctions over the last hour and day
//! (throughput, the no-fill rate), and the active agents per category. Anyone else gets a 404
//! and no link to it.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use auction_engine::MicroCredits;
use chrono::{Days, Duration};
use registry::figures::MarketActivity;

use crate::state::AppState;
use crate::web::home::Nav;
use crate::web::session::Visitor;
use crate::web::{PageError, render};

/// The days the page lists, today included.
const DAYS: u64 = 14;

struct DayRow {
    day: String,
    volume: MicroCredits,
    fees: MicroCredits,
}

/// Jobs and auctions over one window.
struct Window {
    label: &'static str,
    jobs: u64,
    jobs_by_status: Vec<(String, u64)>,
    /// Jobs a second over the window (see [`rate`]).
    per_second: String,
    auctions: u64,
    no_fill: u64,
    /// `no_fill / auctions` as a percentage, one decimal; a dash with no auctions.
    no_fill_rate: String,
}

#[derive(Template)]
#[template(path = "operator.html")]
struct OperatorPage {
    nav: Option<Nav>,
    days: Vec<DayRow>,
    volume_total: MicroCredits,
    fees_total: MicroCredits,
    windows: Vec<Window>,
    agents_by_category: Vec<(String, u64)>,
}

pub(crate) async fn overview(
    visitor: Visitor,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let nav = Nav::of(&state, &visitor).await?;
    if !nav.operator {
        return Err(registry::RegistryError::NotFound { what: "page" }.into());
    }
    let now = state.now();
    let today = now.date_naive();
    let first = today.checked_sub_days(Days::new(DAYS - 1)).unwrap_or(today);
    let since = first.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let market = registry::figures::market_days(&state.db, since).await?;
    let days: Vec<DayRow> = first
        .iter_days()
        .take_while(|day| *day <= today)
        .map(|day| {
            let found = market.iter().find(|m| m.day == day);
            DayRow {
                day: day.to_string(),
                volume: found.map_or(MicroCredits::ZERO, |m| m.volume),
                fees: found.map_or(MicroCredits::ZERO, |m| m.fees),
            }
        })
        .collect();
    let total = |pick: fn(&DayRow) -> MicroCredits| {
        MicroCredits::from_micros(days.iter().map(|d| pick(d).micros()).sum())
    };
    let (volume_total, fees_total) = (total(|d| d.volume), total(|d| d.fees));
    let mut windows = Vec::new();
    for (label, length) in [("Last hour", Duration::hours(1)), ("Last 24 hours", Duration::days(1))]
    {
        let activity = registry::figures::market_activity(&state.db, now - length).await?;
        windows.push(window(label, length, &activity));
    }
    let agents_by_category = registry::figures::active_agents_by_category(&state.db).await?;
    let page = OperatorPage {
        nav: Some(nav),
        days,
        volume_total,
        fees_total,
        windows,
        agents_by_category,
    };
    render(StatusCode::OK, &page)
}

fn window(label: &'static str, length: Duration, activity: &MarketActivity) -> Window {
    let jobs: u64 = activity.jobs_by_status.iter().map(|(_, n)| n).sum();
    let seconds = length.num_seconds().max(1) as f64;
    let no_fill_rate = if activity.auctions == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", activity.no_fill as f64 * 100.0 / activity.auctions as f64)
    };
    Window {
        label,
        jobs,
        jobs_by_status: activity.jobs_by_status.clone(),
        per_second: rate(jobs as f64 / seconds),
        auctions: activity.auctions,
        no_fill: activity.no_fill,
        no_fill_rate,
    }
}

/// A rate with the digits that say something: `1234`, `12.3`, `0.0006`. One decimal alone
/// would print a quiet hour's few jobs as `0.0`.
fn rate(per_second: f64) -> String {
    if per_second >= 10.0 {
        format!("{per_second:.0}")
    } else if per_second >= 1.0 {
        format!("{per_second:.1}")
    } else {
        format!("{per_second:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::rate;

    #[test]
    fn rates_keep_their_meaningful_digits() {
        assert_eq!(rate(2.0 / 3600.0), "0.0006");
        assert_eq!(rate(0.0), "0.0000");
        assert_eq!(rate(3.25), "3.2");
        assert_eq!(rate(6423.4), "6423");
    }
}
