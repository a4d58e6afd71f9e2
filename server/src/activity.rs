//! The activity feed's rows: a job as one user sees it (as its caller, what they paid; as the
//! serving agent's owner, what they earned), and the feed as a CSV file. The API's
//! `/api/activity` and the dashboard's jobs log both show these rows.

use registry::jobs::Job;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// One line of activity. `amount` is what the user paid (as caller, negative) or earned (as
/// owner, the price less the win fee).
#[derive(Serialize, ToSchema)]
pub(crate) struct ActivityRow {
    pub(crate) id: String,
    pub(crate) created_at: String,
    /// `caller`, `owner`, or `caller+owner` for a job of one's own agent.
    pub(crate) role: &'static str,
    pub(crate) category: String,
    pub(crate) model: String,
    pub(crate) agent: Option<String>,
    pub(crate) status: String,
    pub(crate) amount: String,
    pub(crate) error: Option<String>,
}

/// The activity rows as a CSV file with a header line (the API's `format=csv` and the
/// dashboard's export).
pub(crate) fn activity_csv(rows: &[ActivityRow]) -> String {
    let mut text = String::from("id,created_at,role,category,model,agent,status,amount,error\n");
    for row in rows {
        let fields = [
            row.id.as_str(),
            row.created_at.as_str(),
            row.role,
            row.category.as_str(),
            row.model.as_str(),
            row.agent.as_deref().unwrap_or_default(),
            row.status.as_str(),
            row.amount.as_str(),
            row.error.as_deref().unwrap_or_default(),
        ];
        text.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        text.push('\n');
    }
    text
}

impl ActivityRow {
    /// The job as `user` sees it: as its caller (what they paid), as the serving agent's owner
    /// (what they earned), or both.
    pub(crate) fn new(job: &Job, user: Uuid) -> ActivityRow {
        let is_caller = job.caller.0 == user;
        let is_owner = job.served.as_ref().is_some_and(|s| s.owner.0 == user);
        let paid = job.total_cost.micros();
        let earned = job.agent_cost.micros() - job.win_fee.micros();
        let (role, amount) = match (is_caller, is_owner) {
            (true, true) => ("caller+owner", earned - paid),
            (true, false) => ("caller", -paid),
            _ => ("owner", earned),
        };
        ActivityRow {
            id: job.id.to_string(),
            created_at: job.created_at.to_rfc3339(),
            role,
            category: job.category.clone(),
            model: job.requested_model.clone(),
            agent: job.served.as_ref().map(|s| s.agent_slug.clone()),
            status: job.status.clone(),
            amount: auction_engine::MicroCredits::from_micros(amount).to_string(),
            error: job.error.clone(),
        }
    }
}

/// RFC 4180: quote a field with a comma, quote or line break, doubling inner quotes. A leading
/// `=`, `+`, `-` or `@` is prefixed with `'` so spreadsheets do not run it as a formula.
fn csv_field(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '@'])
        || (field.starts_with('-') && field.parse::<f64>().is_err())
    {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}
