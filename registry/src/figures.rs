//! The figures the dashboard shows, each one a sum over the ledger or the job records.
//!
//! Money per account and UTC hour is kept in `account_hourly_flows`, a rollup of the ledger's
//! `capture` entries written in the same transaction as each capture, by every path that
//! writes one (the SQLite writer, the Postgres batch writer, the pooled path through
//! [`crate::ledger`]); this module holds its rules, so the three cannot disagree. A page reads
//! a few hundred rollup rows instead of every entry, and the tests hold the rollup equal to the
//! entries it summarises.
//!
//! Hours are whole hours since the Unix epoch, UTC, and a day is `hour / 24`: one integer on
//! both backends, so no backend's date functions are involved.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};

use auction_engine::MicroCredits;
use uuid::Uuid;

use crate::{RegistryError, UserId};

/// The hour a capture at `time` counts in: whole hours since the Unix epoch, UTC.
pub(crate) fn hour_of(time: DateTime<Utc>) -> i64 {
    time.timestamp().div_euclid(3600)
}

/// A capture's legs as rollup rows: `(account, spent, earned)`, one per non-zero leg (a leg
/// taken from the account is spent, a leg paid to it earned).
pub(crate) fn flows_of(legs: &[(Uuid, i64)]) -> impl Iterator<Item = (Uuid, i64, i64)> + '_ {
    legs.iter()
        .filter(|(_, amount)| *amount != 0)
        .map(|&(account, amount)| (account, (-amount).max(0), amount.max(0)))
}

/// Adds one leg to its account's hour: `$1` account, `$2` hour, `$3` spent, `$4` earned.
/// The same text on both backends (sqlx's SQLite driver reads `$N` as `?N`).
pub(crate) const ADD_HOURLY_FLOW: &str = "INSERT INTO account_hourly_flows \
     (account_id, hour, spent, earned) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (account_id, hour) DO UPDATE SET \
     spent = account_hourly_flows.spent + excluded.spent, \
     earned = account_hourly_flows.earned + excluded.earned";

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
            "SELECT hour / 24 AS day, SUM(spent)::bigint AS spent, SUM(earned)::bigint AS earned \
             FROM account_hourly_flows WHERE account_id = $1 AND hour >= $2 \
             GROUP BY 1 ORDER BY 1"
        }
        _ => {
            "SELECT hour / 24 AS day, SUM(spent) AS spent, SUM(earned) AS earned \
             FROM account_hourly_flows WHERE account_id = $1 AND hour >= $2 \
             GROUP BY 1 ORDER BY 1"
        }
    };
    // From the first hour of `since`'s day.
    let first_hour = hour_of(since).div_euclid(24) * 24;
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [user.0.into(), first_hour.into()],
        ))
        .await?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)
        .ok_or_else(|| RegistryError::Storage("the Unix epoch is not a date".into()))?;
    let mut flows = Vec::with_capacity(rows.len());
    for row in rows {
        let day: i64 = row.try_get("", "day")?;
        let day = epoch
            .checked_add_signed(chrono::Duration::days(day))
            .ok_or_else(|| RegistryError::Storage(format!("day {day} is out of range")))?;
        flows.push(DailyFlow {
            day,
            spent: MicroCredits::from_micros(row.try_get("", "spent")?),
            earned: MicroCredits::from_micros(row.try_get("", "earned")?),
        });
    }
    Ok(flows)
}

/// An hour of an account where the rollup and the capture entries disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowMismatch {
    pub account: Uuid,
    /// Whole hours since the Unix epoch, UTC.
    pub hour: i64,
    /// `(spent, earned)` as the rollup keeps them.
    pub rollup: (i64, i64),
    /// `(spent, earned)` summed from the entries.
    pub entries: (i64, i64),
}

/// `(spent, earned)` by `(account, hour)`.
type HourlySums = BTreeMap<(Uuid, i64), (i64, i64)>;

/// Every hour of an account where the rollup differs from the capture entries it summarises.
/// Reads the whole ledger: for audits and tests, not for pages.
pub(crate) async fn audit_hourly_flows(
    db: &DatabaseConnection,
) -> Result<Vec<FlowMismatch>, RegistryError> {
    let backend = db.get_database_backend();
    // The entries' hour by the database's own clock arithmetic, not the writers' `hour_of`,
    // so that this checks them rather than repeating them.
    let from_entries = match backend {
        DatabaseBackend::Postgres => {
            "SELECT account_id, floor(extract(epoch FROM created_at) / 3600)::bigint AS hour, \
             COALESCE(SUM(CASE WHEN amount < 0 THEN -amount ELSE 0 END), 0)::bigint AS spent, \
             COALESCE(SUM(CASE WHEN amount > 0 THEN amount ELSE 0 END), 0)::bigint AS earned \
             FROM ledger_entries WHERE kind = 'capture' GROUP BY 1, 2"
        }
        _ => {
            "SELECT account_id, CAST(strftime('%s', created_at) AS INTEGER) / 3600 AS hour, \
             COALESCE(SUM(CASE WHEN amount < 0 THEN -amount ELSE 0 END), 0) AS spent, \
             COALESCE(SUM(CASE WHEN amount > 0 THEN amount ELSE 0 END), 0) AS earned \
             FROM ledger_entries WHERE kind = 'capture' GROUP BY 1, 2"
        }
    };
    let read = async |sql: &str| -> Result<HourlySums, RegistryError> {
        let mut sums = BTreeMap::new();
        for row in db.query_all_raw(Statement::from_string(backend, sql)).await? {
            sums.insert(
                (row.try_get("", "account_id")?, row.try_get("", "hour")?),
                (row.try_get("", "spent")?, row.try_get("", "earned")?),
            );
        }
        Ok(sums)
    };
    let entries = read(from_entries).await?;
    let rollup = read("SELECT account_id, hour, spent, earned FROM account_hourly_flows").await?;
    let keys: std::collections::BTreeSet<&(Uuid, i64)> =
        entries.keys().chain(rollup.keys()).collect();
    Ok(keys
        .into_iter()
        .filter_map(|key| {
            let (kept, summed) = (
                rollup.get(key).copied().unwrap_or_default(),
                entries.get(key).copied().unwrap_or_default(),
            );
            (kept != summed).then_some(FlowMismatch {
                account: key.0,
                hour: key.1,
                rollup: kept,
                entries: summed,
            })
        })
        .collect())
}
