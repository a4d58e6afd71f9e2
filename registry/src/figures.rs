//! The figures the dashboard shows, each one a sum over the ledger or the job records.
//!
//! Money per account and UTC hour is kept in `account_hourly_flows`, a rollup of the ledger's
//! `capture` entries written in the same transaction as each capture, by every path that
//! writes one (the SQLite writer, the Postgres batch writer, the pooled path through
//! [`crate::ledger`]); this module holds its rules, so the three cannot disagree. A page reads
//! a few hundred rollup rows instead of every entry, and the tests hold the rollup equal to the
//! entries it summarises.
//!
//! The auctions each agent entered and won (with its bids and prices when it won) are kept per
//! agent, category and UTC hour in `agent_auction_hours`, written in the same transaction as
//! the auction's record by the same three paths, from the auction's `Entrant`s.
//!
//! Hours are whole hours since the Unix epoch, UTC, and a day is `hour / 24`: one integer on
//! both backends, so no backend's date functions are involved.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};

use auction_engine::MicroCredits;
use uuid::Uuid;

use crate::jobs::{Entrant, JobOutcome, JobStatus};
use crate::{RegistryError, UserId};
use auction_engine::reputation::{Outcome, ReputationStats};

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

/// An auction's entrants as rollup rows of `agent_auction_hours`: `(agent, entered, won,
/// won_bid, won_price)`, one per agent in the ranking; the winner's bid and price counted.
pub(crate) fn entries_of(
    entrants: &[Entrant],
) -> impl Iterator<Item = (Uuid, i64, i64, i64, i64)> + '_ {
    entrants.iter().map(|e| {
        let won = e.rank == 1;
        let (bid, price) = if won { (e.bid.micros(), e.price.micros()) } else { (0, 0) };
        (e.agent_id, 1, i64::from(won), bid, price)
    })
}

/// Adds one entrant to its agent's category and hour: `$1` agent, `$2` category, `$3` hour,
/// `$4` entered, `$5` won, `$6` won bid, `$7` won price. The same text on both backends.
pub(crate) const ADD_AUCTION_HOUR: &str = "INSERT INTO agent_auction_hours \
     (agent_id, category, hour, entered, won, won_bid, won_price) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (agent_id, category, hour) DO UPDATE SET \
     entered = agent_auction_hours.entered + excluded.entered, \
     won = agent_auction_hours.won + excluded.won, \
     won_bid = agent_auction_hours.won_bid + excluded.won_bid, \
     won_price = agent_auction_hours.won_price + excluded.won_price";

/// Upper bounds, in ms, of the latency buckets `lat_0` to `lat_8` of `agent_service_hours`;
/// `lat_9` counts everything above the last.
pub const LATENCY_BUCKETS_MS: [u64; 9] = [25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// How many counters a row of `agent_service_hours` sums: attempts, successes, errors,
/// timeouts, invalid, fallbacks, then the ten latency buckets.
const SERVICE_COUNTERS: usize = 16;

/// One agent's service in one hour, as finishes add it to `agent_service_hours`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ServiceTally {
    /// In column order: attempts, successes, errors, timeouts, invalid, fallbacks, lat_0..9.
    pub(crate) counts: [i64; SERVICE_COUNTERS],
    /// The agent's reputation after the last of these attempts was folded in, if it was.
    pub(crate) reputation: Option<ReputationStats>,
}

impl ServiceTally {
    /// Adds `other`'s counts; keeps the later reputation.
    pub(crate) fn add(&mut self, other: &ServiceTally) {
        for (count, more) in self.counts.iter_mut().zip(other.counts) {
            *count = count.saturating_add(more);
        }
        let at = |tally: Option<ReputationStats>| tally.map_or(i64::MIN, |r| r.updated_at_ms);
        if at(other.reputation) >= at(self.reputation) {
            self.reputation = other.reputation.or(self.reputation);
        }
    }

    /// The reputation columns: `rep_at_ms` (-1 when there is none), successes, failures,
    /// latency EWMA and p95.
    pub(crate) fn reputation_columns(&self) -> (i64, f64, f64, f64, f64) {
        match self.reputation {
            Some(r) => {
                (r.updated_at_ms, r.successes, r.failures, r.latency_ewma_ms, r.latency_p95_ms)
            }
            None => (-1, 0.0, 0.0, 0.0, 0.0),
        }
    }
}

/// A finished job's attempts as rollup rows of `agent_service_hours`, per (agent, hour of the
/// job's end): each attempt counted by outcome, a success at rank 2 or below as a fallback,
/// a success's latency in its bucket; with each agent's reputation from `after` (its stats
/// once this job's updates were folded in).
pub(crate) fn service_of(
    outcome: &JobOutcome,
    after: &BTreeMap<Uuid, ReputationStats>,
) -> BTreeMap<(Uuid, i64), ServiceTally> {
    let hour = hour_of(outcome.finished_at);
    let mut tallies: BTreeMap<(Uuid, i64), ServiceTally> = BTreeMap::new();
    for attempt in &outcome.attempts {
        let tally = tallies.entry((attempt.agent_id, hour)).or_default();
        tally.counts[0] += 1;
        // The words are the engine's (`Outcome::as_str`), as the server records them; a word
        // it does not know counts as an error.
        match Outcome::parse(&attempt.outcome) {
            Some(Outcome::Success) => {
                tally.counts[1] += 1;
                if attempt.rank > 1 {
                    tally.counts[5] += 1;
                }
                let bucket = LATENCY_BUCKETS_MS
                    .iter()
                    .position(|bound| attempt.latency_ms <= *bound)
                    .unwrap_or(LATENCY_BUCKETS_MS.len());
                tally.counts[6 + bucket] += 1;
            }
            Some(Outcome::Timeout) => tally.counts[3] += 1,
            Some(Outcome::InvalidOutput) => tally.counts[4] += 1,
            Some(Outcome::Error) | None => tally.counts[2] += 1,
        }
        tally.reputation = after.get(&attempt.agent_id).copied();
    }
    tallies
}

/// What a finished job adds to its API key's hour: (delivered 0 or 1, spent in micro-credits).
pub(crate) fn usage_of(outcome: &JobOutcome) -> (i64, i64) {
    (i64::from(outcome.status == JobStatus::Delivered), outcome.total_cost.micros())
}

/// Adds finished jobs to their key's hour: `$1` key, `$2` hour, `$3` jobs, `$4` delivered,
/// `$5` spent.
pub(crate) const ADD_KEY_HOUR: &str = "INSERT INTO api_key_hours AS h \
     (api_key_id, hour, jobs, delivered, spent) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (api_key_id, hour) DO UPDATE SET jobs = h.jobs + excluded.jobs, \
     delivered = h.delivered + excluded.delivered, spent = h.spent + excluded.spent";

/// As `ADD_KEY_HOUR` for one job, the key read from the job's row (`$1` job; `$2` hour, `$3`
/// delivered, `$4` spent): the pooled path, which ends
/// a job it did not open. Adds nothing for a job without a key.
pub(crate) const ADD_KEY_HOUR_OF_JOB: &str = "INSERT INTO api_key_hours AS h \
     (api_key_id, hour, jobs, delivered, spent) \
     SELECT api_key_id, $2, 1, $3, $4 FROM jobs WHERE id = $1 AND api_key_id IS NOT NULL \
     ON CONFLICT (api_key_id, hour) DO UPDATE SET jobs = h.jobs + excluded.jobs, \
     delivered = h.delivered + excluded.delivered, spent = h.spent + excluded.spent";

/// One of a user's API keys in one UTC day: its finished jobs, the delivered ones, and what
/// they cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUsageDay {
    pub api_key_id: Uuid,
    pub day: NaiveDate,
    pub jobs: i64,
    pub delivered: i64,
    pub spent: MicroCredits,
}

/// `user`'s keys' usage per UTC day from `since` on (whole days), oldest first per key.
/// Scoped to the user in SQL.
pub async fn key_usage_days(
    db: &DatabaseConnection,
    user: UserId,
    since: DateTime<Utc>,
) -> Result<Vec<KeyUsageDay>, RegistryError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => {
            "SELECT h.api_key_id, h.hour / 24 AS day, SUM(h.jobs)::bigint AS jobs, \
             SUM(h.delivered)::bigint AS delivered, SUM(h.spent)::bigint AS spent \
             FROM api_key_hours h JOIN api_keys k ON k.id = h.api_key_id \
             WHERE k.user_id = $1 AND h.hour >= $2 GROUP BY 1, 2 ORDER BY 1, 2"
        }
        _ => {
            "SELECT h.api_key_id, h.hour / 24 AS day, SUM(h.jobs) AS jobs, \
             SUM(h.delivered) AS delivered, SUM(h.spent) AS spent \
             FROM api_key_hours h JOIN api_keys k ON k.id = h.api_key_id \
             WHERE k.user_id = $1 AND h.hour >= $2 GROUP BY 1, 2 ORDER BY 1, 2"
        }
    };
    let first_hour = hour_of(since).div_euclid(24) * 24;
    let values = [user.0.into(), first_hour.into()];
    let rows = db.query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    let mut days = Vec::with_capacity(rows.len());
    for row in rows {
        let day: i64 = row.try_get("", "day")?;
        days.push(KeyUsageDay {
            api_key_id: row.try_get("", "api_key_id")?,
            day: day_of(day)?,
            jobs: row.try_get("", "jobs")?,
            delivered: row.try_get("", "delivered")?,
            spent: MicroCredits::from_micros(row.try_get("", "spent")?),
        });
    }
    Ok(days)
}

/// The head of every insert into `agent_service_hours`: the table and its columns.
macro_rules! service_hour_insert {
    () => {
        "INSERT INTO agent_service_hours AS h \
         (agent_id, hour, attempts, successes, errors, timeouts, invalid, fallbacks, \
          lat_0, lat_1, lat_2, lat_3, lat_4, lat_5, lat_6, lat_7, lat_8, lat_9, \
          rep_at_ms, rep_successes, rep_failures, rep_latency_ewma_ms, rep_latency_p95_ms) "
    };
}

/// The tail of every insert into `agent_service_hours`: counters add up, and a later
/// reputation replaces an earlier one (`rep_at_ms`), whatever order the writes come in.
macro_rules! service_hour_upsert {
    () => {
        " ON CONFLICT (agent_id, hour) DO UPDATE SET \
         attempts = h.attempts + excluded.attempts, successes = h.successes + excluded.successes, \
         errors = h.errors + excluded.errors, timeouts = h.timeouts + excluded.timeouts, \
         invalid = h.invalid + excluded.invalid, fallbacks = h.fallbacks + excluded.fallbacks, \
         lat_0 = h.lat_0 + excluded.lat_0, lat_1 = h.lat_1 + excluded.lat_1, \
         lat_2 = h.lat_2 + excluded.lat_2, lat_3 = h.lat_3 + excluded.lat_3, \
         lat_4 = h.lat_4 + excluded.lat_4, lat_5 = h.lat_5 + excluded.lat_5, \
         lat_6 = h.lat_6 + excluded.lat_6, lat_7 = h.lat_7 + excluded.lat_7, \
         lat_8 = h.lat_8 + excluded.lat_8, lat_9 = h.lat_9 + excluded.lat_9, \
         rep_successes = CASE WHEN excluded.rep_at_ms >= h.rep_at_ms \
           THEN excluded.rep_successes ELSE h.rep_successes END, \
         rep_failures = CASE WHEN excluded.rep_at_ms >= h.rep_at_ms \
           THEN excluded.rep_failures ELSE h.rep_failures END, \
         rep_latency_ewma_ms = CASE WHEN excluded.rep_at_ms >= h.rep_at_ms \
           THEN excluded.rep_latency_ewma_ms ELSE h.rep_latency_ewma_ms END, \
         rep_latency_p95_ms = CASE WHEN excluded.rep_at_ms >= h.rep_at_ms \
           THEN excluded.rep_latency_p95_ms ELSE h.rep_latency_p95_ms END, \
         rep_at_ms = CASE WHEN excluded.rep_at_ms >= h.rep_at_ms \
           THEN excluded.rep_at_ms ELSE h.rep_at_ms END"
    };
}
pub(crate) use {service_hour_insert, service_hour_upsert};

/// Adds one agent's hour: `$1` agent, `$2` hour, `$3`..`$18` the counters in column order,
/// `$19` rep_at_ms, `$20`..`$23` the reputation. The same text on both backends.
pub(crate) const ADD_SERVICE_HOUR: &str = concat!(
    service_hour_insert!(),
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19, $20, $21, $22, $23)",
    service_hour_upsert!()
);

/// One of an owner's agents in one UTC hour: its attempts by outcome, fallbacks, successes'
/// latency buckets and its reputation at the hour's last write.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentServiceHour {
    pub agent_id: Uuid,
    pub hour: i64,
    pub attempts: i64,
    pub successes: i64,
    pub errors: i64,
    pub timeouts: i64,
    pub invalid: i64,
    pub fallbacks: i64,
    /// Successes per latency bucket (`LATENCY_BUCKETS_MS`, then above).
    pub latency_buckets: [i64; 10],
    /// `None` when no attempt of the hour had its reputation folded in.
    pub reputation: Option<ReputationStats>,
}

/// `owner`'s agents' service hours from `since` on, oldest first per agent. Scoped to the
/// owner in SQL.
pub async fn agent_service_hours(
    db: &DatabaseConnection,
    owner: UserId,
    since: DateTime<Utc>,
) -> Result<Vec<AgentServiceHour>, RegistryError> {
    let backend = db.get_database_backend();
    let sql = "SELECT h.agent_id, h.hour, h.attempts, h.successes, h.errors, h.timeouts, \
               h.invalid, h.fallbacks, h.lat_0, h.lat_1, h.lat_2, h.lat_3, h.lat_4, h.lat_5, \
               h.lat_6, h.lat_7, h.lat_8, h.lat_9, h.rep_at_ms, h.rep_successes, \
               h.rep_failures, h.rep_latency_ewma_ms, h.rep_latency_p95_ms \
               FROM agent_service_hours h JOIN agents a ON a.id = h.agent_id \
               WHERE a.owner_id = $1 AND h.hour >= $2 ORDER BY h.agent_id, h.hour";
    let values = [owner.0.into(), hour_of(since).into()];
    let rows = db.query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    let mut hours = Vec::with_capacity(rows.len());
    for row in rows {
        let count = |column: &str| row.try_get::<i64>("", column);
        let mut latency_buckets = [0; 10];
        for (i, bucket) in latency_buckets.iter_mut().enumerate() {
            *bucket = count(&format!("lat_{i}"))?;
        }
        let rep_at_ms: i64 = row.try_get("", "rep_at_ms")?;
        let reputation = if rep_at_ms < 0 {
            None
        } else {
            Some(ReputationStats {
                successes: row.try_get("", "rep_successes")?,
                failures: row.try_get("", "rep_failures")?,
                updated_at_ms: rep_at_ms,
                latency_ewma_ms: row.try_get("", "rep_latency_ewma_ms")?,
                latency_p95_ms: row.try_get("", "rep_latency_p95_ms")?,
                ..ReputationStats::default()
            })
        };
        hours.push(AgentServiceHour {
            agent_id: row.try_get("", "agent_id")?,
            hour: count("hour")?,
            attempts: count("attempts")?,
            successes: count("successes")?,
            errors: count("errors")?,
            timeouts: count("timeouts")?,
            invalid: count("invalid")?,
            fallbacks: count("fallbacks")?,
            latency_buckets,
            reputation,
        });
    }
    Ok(hours)
}

/// One of an owner's agents in one category and UTC day: the auctions it entered and won,
/// and over those it won, its bids and the prices it was to be paid (micro-credits summed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAuctionDay {
    pub agent_id: Uuid,
    pub category: String,
    pub day: NaiveDate,
    pub entered: i64,
    pub won: i64,
    pub won_bid: MicroCredits,
    pub won_price: MicroCredits,
}

/// `owner`'s agents' auctions per agent, category and UTC day from `since` on (whole days),
/// from `agent_auction_hours`; oldest first within each agent and category. Scoped to the
/// owner in SQL.
pub async fn agent_auction_days(
    db: &DatabaseConnection,
    owner: UserId,
    since: DateTime<Utc>,
) -> Result<Vec<AgentAuctionDay>, RegistryError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => {
            "SELECT h.agent_id, h.category, h.hour / 24 AS day, SUM(h.entered)::bigint AS entered, \
             SUM(h.won)::bigint AS won, SUM(h.won_bid)::bigint AS won_bid, \
             SUM(h.won_price)::bigint AS won_price \
             FROM agent_auction_hours h JOIN agents a ON a.id = h.agent_id \
             WHERE a.owner_id = $1 AND h.hour >= $2 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        }
        _ => {
            "SELECT h.agent_id, h.category, h.hour / 24 AS day, SUM(h.entered) AS entered, \
             SUM(h.won) AS won, SUM(h.won_bid) AS won_bid, SUM(h.won_price) AS won_price \
             FROM agent_auction_hours h JOIN agents a ON a.id = h.agent_id \
             WHERE a.owner_id = $1 AND h.hour >= $2 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        }
    };
    let first_hour = hour_of(since).div_euclid(24) * 24;
    let values = [owner.0.into(), first_hour.into()];
    let rows = db.query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    let mut days = Vec::with_capacity(rows.len());
    for row in rows {
        let day: i64 = row.try_get("", "day")?;
        days.push(AgentAuctionDay {
            agent_id: row.try_get("", "agent_id")?,
            category: row.try_get("", "category")?,
            day: day_of(day)?,
            entered: row.try_get("", "entered")?,
            won: row.try_get("", "won")?,
            won_bid: MicroCredits::from_micros(row.try_get("", "won_bid")?),
            won_price: MicroCredits::from_micros(row.try_get("", "won_price")?),
        });
    }
    Ok(days)
}

/// What a wallet spent and earned on jobs in one UTC day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyFlow {
    pub day: NaiveDate,
    /// Charges for the user's calls: the negative job entries of the wallet, as a positive sum.
    pub spent: MicroCredits,
    /// Payouts to the user's agents: the positive job entries of the wallet.
    pub earned: MicroCredits,
}

/// What a wallet spent and earned on jobs in one UTC hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HourlyFlow {
    /// The hour's first instant.
    pub hour: DateTime<Utc>,
    pub spent: MicroCredits,
    pub earned: MicroCredits,
}

/// The wallet's job entries (`capture` transfers) summed per UTC day, from the UTC day of
/// `since` on, oldest first; days without entries are absent.
pub async fn daily_flows(
    db: &DatabaseConnection,
    user: UserId,
    since: DateTime<Utc>,
) -> Result<Vec<DailyFlow>, RegistryError> {
    period_sums(db, user, hour_of(since).div_euclid(24) * 24, 24)
        .await?
        .into_iter()
        .map(|(day, spent, earned)| Ok(DailyFlow { day: day_of(day)?, spent, earned }))
        .collect()
}

/// The wallet's job entries summed per UTC hour, from the hour of `since` on, oldest first;
/// hours without entries are absent.
pub async fn hourly_flows(
    db: &DatabaseConnection,
    user: UserId,
    since: DateTime<Utc>,
) -> Result<Vec<HourlyFlow>, RegistryError> {
    period_sums(db, user, hour_of(since), 1)
        .await?
        .into_iter()
        .map(|(hour, spent, earned)| {
            let hour = DateTime::from_timestamp(hour.saturating_mul(3600), 0)
                .ok_or_else(|| RegistryError::Storage(format!("hour {hour} is out of range")))?;
            Ok(HourlyFlow { hour, spent, earned })
        })
        .collect()
}

/// The rollup's rows of `user` from `first_hour` on, summed per period of `hours` hours
/// (counted from the epoch): `(period, spent, earned)`, oldest first.
async fn period_sums(
    db: &DatabaseConnection,
    user: UserId,
    first_hour: i64,
    hours: i64,
) -> Result<Vec<(i64, MicroCredits, MicroCredits)>, RegistryError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => {
            "SELECT hour / $3 AS period, SUM(spent)::bigint AS spent, \
             SUM(earned)::bigint AS earned \
             FROM account_hourly_flows WHERE account_id = $1 AND hour >= $2 \
             GROUP BY 1 ORDER BY 1"
        }
        _ => {
            "SELECT hour / $3 AS period, SUM(spent) AS spent, SUM(earned) AS earned \
             FROM account_hourly_flows WHERE account_id = $1 AND hour >= $2 \
             GROUP BY 1 ORDER BY 1"
        }
    };
    let values = [user.0.into(), first_hour.into(), hours.into()];
    let rows = db.query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    let mut sums = Vec::with_capacity(rows.len());
    for row in rows {
        sums.push((
            row.try_get("", "period")?,
            MicroCredits::from_micros(row.try_get("", "spent")?),
            MicroCredits::from_micros(row.try_get("", "earned")?),
        ));
    }
    Ok(sums)
}

/// The whole market's money per UTC day: what wallets paid for jobs, and the platform's fees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarketDay {
    pub day: NaiveDate,
    /// What wallets paid for jobs: callers' charges, and owners' win fees net of what the
    /// same job paid them (every negative capture leg of a wallet).
    pub volume: MicroCredits,
    /// What the platform's revenue account was paid (call and win fees).
    pub fees: MicroCredits,
}

/// The market per UTC day from the UTC day of `since` on, oldest first, from the rollup (one
/// row per account and hour: read for the window, never the entries).
pub async fn market_days(
    db: &DatabaseConnection,
    since: DateTime<Utc>,
) -> Result<Vec<MarketDay>, RegistryError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => {
            "SELECT hour / 24 AS day, SUM(spent)::bigint AS volume, \
             SUM(CASE WHEN account_id = $2 THEN earned ELSE 0 END)::bigint AS fees \
             FROM account_hourly_flows WHERE hour >= $1 GROUP BY 1 ORDER BY 1"
        }
        _ => {
            "SELECT hour / 24 AS day, SUM(spent) AS volume, \
             SUM(CASE WHEN account_id = $2 THEN earned ELSE 0 END) AS fees \
             FROM account_hourly_flows WHERE hour >= $1 GROUP BY 1 ORDER BY 1"
        }
    };
    let first_hour = hour_of(since).div_euclid(24) * 24;
    let values = [first_hour.into(), crate::ledger::PLATFORM_REVENUE_ACCOUNT.into()];
    let rows = db.query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    let mut days = Vec::with_capacity(rows.len());
    for row in rows {
        days.push(MarketDay {
            day: day_of(row.try_get("", "day")?)?,
            volume: MicroCredits::from_micros(row.try_get("", "volume")?),
            fees: MicroCredits::from_micros(row.try_get("", "fees")?),
        });
    }
    Ok(days)
}

/// Jobs and auctions since a moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarketActivity {
    /// Jobs begun since, by status (`delivered`, `failed`, ...), in name order.
    pub jobs_by_status: Vec<(String, u64)>,
    /// Auctions run since.
    pub auctions: u64,
    /// Of those, auctions that found no winner (no agent eligible).
    pub no_fill: u64,
}

/// Jobs and auctions begun at or after `since`. Their ids are UUIDv7, whose first 48 bits are
/// the creation time in milliseconds, so "since" is a range of the primary key: the count
/// reads the window's rows only, with no index on a time column.
pub async fn market_activity(
    db: &DatabaseConnection,
    since: DateTime<Utc>,
) -> Result<MarketActivity, RegistryError> {
    let backend = db.get_database_backend();
    let millis = u64::try_from(since.timestamp_millis()).unwrap_or(0);
    let first_id = uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid();
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut activity = MarketActivity::default();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            "SELECT status, COUNT(*) AS n FROM jobs WHERE id >= $1 GROUP BY status ORDER BY status",
            [first_id.into()],
        ))
        .await?;
    for row in rows {
        activity.jobs_by_status.push((row.try_get("", "status")?, count(row.try_get("", "n")?)));
    }
    if let Some(row) = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            "SELECT COUNT(*) AS n, COUNT(winner_agent_id) AS won FROM auctions WHERE id >= $1",
            [first_id.into()],
        ))
        .await?
    {
        let (n, won): (i64, i64) = (row.try_get("", "n")?, row.try_get("", "won")?);
        activity.auctions = count(n);
        activity.no_fill = count(n - won);
    }
    Ok(activity)
}

/// Active agents per category, in name order (an agent counts in each of its categories).
pub async fn active_agents_by_category(
    db: &DatabaseConnection,
) -> Result<Vec<(String, u64)>, RegistryError> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT c.category, COUNT(*) AS n FROM agent_categories c \
             JOIN agents a ON a.id = c.agent_id WHERE a.status = 'active' \
             GROUP BY c.category ORDER BY c.category",
        ))
        .await?;
    let mut counts = Vec::with_capacity(rows.len());
    for row in rows {
        let n: i64 = row.try_get("", "n")?;
        counts.push((row.try_get("", "category")?, u64::try_from(n).unwrap_or(0)));
    }
    Ok(counts)
}

/// The date `day` days after the Unix epoch.
fn day_of(day: i64) -> Result<NaiveDate, RegistryError> {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|epoch| epoch.checked_add_signed(chrono::Duration::days(day)))
        .ok_or_else(|| RegistryError::Storage(format!("day {day} is out of range")))
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
