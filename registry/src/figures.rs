//! The figures the dashboard shows, each one a sum over the ledger or the job records, read
//! when the page is drawn (never a copy kept elsewhere that could drift from them).
//!
//! Days are UTC calendar days. Both backends store times in UTC, so a day is the first ten
//! characters of the stored time on SQLite and `date_trunc` at UTC on Postgres.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};

use auction_engine::MicroCredits;

use crate::{RegistryError, UserId};

/// What a wallet spent and earned on jobs in one UTC day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyFlow {
    pub day: NaiveDate,
    /// Charges for the user's calls: the negative job entries of the wallet, as a positive sum.
    pub spent: MicroCredits,
    /// Payouts to the user's agents: the positive job entries of the wallet.
    pub earned: MicroCredits,
}

/// The wallet's job entries (`capture` transfers) summed per UTC day, from the UTC day of
/// `since` on, oldest first; days without entries are absent.
pub async fn daily_flows(
    db: &DatabaseConnection,
    user: UserId,
    since: DateTime<Utc>,
) -> Result<Vec<DailyFlow>, RegistryError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => {
            "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, \
             COALESCE(SUM(CASE WHEN amount < 0 THEN -amount ELSE 0 END), 0)::bigint AS spent, \
             COALESCE(SUM(CASE WHEN amount > 0 THEN amount ELSE 0 END), 0)::bigint AS earned \
             FROM ledger_entries WHERE account_id = $1 AND kind = 'capture' AND created_at >= $2 \
             GROUP BY 1 ORDER BY 1"
        }
        _ => {
            "SELECT substr(created_at, 1, 10) AS day, \
             COALESCE(SUM(CASE WHEN amount < 0 THEN -amount ELSE 0 END), 0) AS spent, \
             COALESCE(SUM(CASE WHEN amount > 0 THEN amount ELSE 0 END), 0) AS earned \
             FROM ledger_entries WHERE account_id = $1 AND kind = 'capture' AND created_at >= $2 \
             GROUP BY 1 ORDER BY 1"
        }
    };
    // SQLite compares times as text: from the day's own first characters, so that a stored
    // `…T…Z` and a stored `…T…+00:00` of that day both count.
    let since = match backend {
        DatabaseBackend::Postgres => since.into(),
        _ => since.format("%Y-%m-%d").to_string().into(),
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, [user.0.into(), since]))
        .await?;
    let mut flows = Vec::with_capacity(rows.len());
    for row in rows {
        let day: String = row.try_get("", "day")?;
        let day = NaiveDate::parse_from_str(&day, "%Y-%m-%d")
            .map_err(|e| RegistryError::Storage(format!("a stored time is not a date: {e}")))?;
        flows.push(DailyFlow {
            day,
            spent: MicroCredits::from_micros(row.try_get("", "spent")?),
            earned: MicroCredits::from_micros(row.try_get("", "earned")?),
        });
    }
    Ok(flows)
}
