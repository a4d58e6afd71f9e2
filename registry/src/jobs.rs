//! Jobs and their records: the job row (opened before dispatch, closed after settlement), the
//! attempts at each agent, the auction's audit record, and the activity feed. Every read is
//! scoped in SQL to the user it is for.

use auction_engine::MicroCredits;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Set, Statement,
};
use uuid::Uuid;

use crate::database::{Durability, in_write_txn_with};
use crate::entity::{auctions, job_attempts, jobs};
use crate::ledger::{self, Capture, HoldRequest};
use crate::script::Script;

use crate::{RegistryError, UserId};

/// What kind of request a job came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/jobs`.
    Json,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Chat => "chat",
            JobKind::Json => "json",
        }
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    Delivered,
    Failed,
    /// `recommend` mode: the auction ran, nothing was executed.
    Recommended,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Delivered => "delivered",
            JobStatus::Failed => "failed",
            JobStatus::Recommended => "recommended",
        }
    }
}

/// A job about to be dispatched.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: Uuid,
    pub caller: UserId,
    pub kind: JobKind,
    pub category: String,
    pub requested_model: String,
    pub mode: String,
    pub auction_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// The instance running it: if that process dies, the next start (or a live instance)
    /// fails the job and releases its hold at once.
    pub instance: Option<Uuid>,
    /// The API key that authenticated the request (none for an access token or a browser
    /// session): per-key usage is summed from it (`api_key_hours`).
    pub api_key: Option<Uuid>,
    /// The batch line this job runs (`batch_lines.id`); the database keeps at most one
    /// delivered job per line, so a line is never charged twice.
    pub batch_line: Option<Uuid>,
}

/// An auction's audit record, as rendered JSON, and who bid in it.
#[derive(Clone, Debug)]
pub struct AuctionEntry {
    pub id: Uuid,
    pub category: String,
    pub winner: Option<Uuid>,
    pub clearing_price: Option<MicroCredits>,
    pub record: String,
    /// Every agent in the ranking (the record keeps the first 100 of them in full): the
    /// owners' win rates and bid-vs-price figures are summed from these
    /// (`agent_auction_hours`).
    pub entrants: Vec<Entrant>,
}

/// An agent that bid in an auction: its rank, its bid and the price it was to be paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entrant {
    pub agent_id: Uuid,
    /// 1 is the winner.
    pub rank: u32,
    pub bid: MicroCredits,
    pub price: MicroCredits,
}

/// One call to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub rank: u32,
    pub agent_id: Uuid,
    pub agent_slug: String,
    pub price: MicroCredits,
    /// `success`, `error`, `timeout`, `invalid_output`.
    pub outcome: String,
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub latency_ms: u64,
    pub started_at: DateTime<Utc>,
}

/// The agent that served a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub agent_id: Uuid,
    pub agent_slug: String,
    pub owner: UserId,
}

/// How a job ended.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    pub status: JobStatus,
    pub served: Option<Served>,
    pub clearing_price: Option<MicroCredits>,
    pub agent_cost: MicroCredits,
    pub call_fee: MicroCredits,
    pub win_fee: MicroCredits,
    pub total_cost: MicroCredits,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub latency_ms: Option<u64>,
    /// The delivered output, as JSON text.
    pub output: Option<String>,
    pub error: Option<String>,
    pub attempts: Vec<Attempt>,
    pub finished_at: DateTime<Utc>,
}

impl JobOutcome {
    /// A job that ended without delivering: nothing served, nothing charged.
    pub fn failed(error: String, attempts: Vec<Attempt>, finished_at: DateTime<Utc>) -> JobOutcome {
        JobOutcome {
            status: JobStatus::Failed,
            served: None,
            clearing_price: None,
            agent_cost: MicroCredits::ZERO,
            call_fee: MicroCredits::ZERO,
            win_fee: MicroCredits::ZERO,
            total_cost: MicroCredits::ZERO,
            input_tokens: None,
            output_tokens: None,
            latency_ms: None,
            output: None,
            error: Some(error),
            attempts,
            finished_at,
        }
    }
}

/// A job as its caller (or, for activity, the serving agent's owner) sees it.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: Uuid,
    pub caller: UserId,
    pub kind: String,
    pub category: String,
    pub requested_model: String,
    pub mode: String,
    pub status: String,
    pub auction_id: Uuid,
    pub served: Option<Served>,
    pub clearing_price: Option<MicroCredits>,
    pub agent_cost: MicroCredits,
    pub call_fee: MicroCredits,
    pub win_fee: MicroCredits,
    pub total_cost: MicroCredits,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub latency_ms: Option<u64>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A stored audit record.
#[derive(Clone, Debug)]
pub struct AuctionAudit {
    pub id: Uuid,
    pub job_id: Uuid,
    pub category: String,
    pub record: String,
    pub created_at: DateTime<Utc>,
}

fn to_job(row: jobs::Model) -> Job {
    let micros = MicroCredits::from_micros;
    let count = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok());
    let served = match (row.agent_id, row.agent_slug, row.owner_id) {
        (Some(agent_id), Some(agent_slug), Some(owner)) => {
            Some(Served { agent_id, agent_slug, owner: UserId(owner) })
        }
        _ => None,
    };
    Job {
        id: row.id,
        caller: UserId(row.caller_id),
        kind: row.kind,
        category: row.category,
        requested_model: row.requested_model,
        mode: row.mode,
        status: row.status,
        auction_id: row.auction_id,
        served,
        clearing_price: row.clearing_price.map(micros),
        agent_cost: micros(row.agent_cost),
        call_fee: micros(row.call_fee),
        win_fee: micros(row.win_fee),
        total_cost: micros(row.total_cost),
        input_tokens: count(row.input_tokens),
        output_tokens: count(row.output_tokens),
        latency_ms: count(row.latency_ms),
        output: row.output,
        error: row.error,
        created_at: row.created_at,
        finished_at: row.finished_at,
    }
}

/// Opens a job, its auction record and (if any) its hold in one transaction: a job never
/// exists without its hold, nor a hold without its job. `InsufficientCredits` writes nothing.
pub async fn open_job_with_hold(
    db: &DatabaseConnection,
    job: NewJob,
    auction: AuctionEntry,
    hold: Option<(HoldRequest, Uuid)>,
) -> Result<(), RegistryError> {
    let now = job.created_at;
    in_write_txn_with(db, Durability::Relaxed, async |txn| {
        let mut script = Script::new(txn.get_database_backend());
        add_job(&mut script, job, auction);
        match &hold {
            Some((request, hold_id)) => {
                let drawn = match request.from_line {
                    Some(share) => crate::batches::draw_share(txn, share.line).await?,
                    None => 0,
                };
                let pending = ledger::add_hold(&mut script, request, *hold_id, now, drawn)?;
                let run = script.run(txn).await;
                ledger::verify_hold(txn, run, &pending).await
            }
            None => {
                script.run(txn).await?;
                Ok(())
            }
        }
    })
    .await
}

pub(crate) fn add_job(script: &mut Script, job: NewJob, auction: AuctionEntry) {
    script.push(
        &jobs::Entity::insert(jobs::ActiveModel {
            id: Set(job.id),
            caller_id: Set(job.caller.0),
            kind: Set(job.kind.as_str().to_owned()),
            category: Set(job.category.clone()),
            requested_model: Set(job.requested_model),
            mode: Set(job.mode),
            status: Set(JobStatus::Running.as_str().to_owned()),
            auction_id: Set(job.auction_id),
            agent_id: Set(None),
            agent_slug: Set(None),
            owner_id: Set(None),
            clearing_price: Set(None),
            agent_cost: Set(0),
            call_fee: Set(0),
            win_fee: Set(0),
            total_cost: Set(0),
            input_tokens: Set(None),
            output_tokens: Set(None),
            latency_ms: Set(None),
            output: Set(None),
            error: Set(None),
            created_at: Set(job.created_at),
            finished_at: Set(None),
            instance_id: Set(job.instance),
            api_key_id: Set(job.api_key),
            batch_line_id: Set(job.batch_line),
        })
        .into_query(),
    );
    script.push(
        &auctions::Entity::insert(auctions::ActiveModel {
            id: Set(auction.id),
            job_id: Set(job.id),
            caller_id: Set(job.caller.0),
            category: Set(auction.category.clone()),
            winner_agent_id: Set(auction.winner),
            clearing_price: Set(auction.clearing_price.map(MicroCredits::micros)),
            record: Set(auction.record),
            created_at: Set(job.created_at),
            record_lz4: Set(None),
        })
        .into_query(),
    );
    let hour = crate::figures::hour_of(job.created_at);
    for (agent, entered, won, bid, price) in crate::figures::entries_of(&auction.entrants) {
        script.push_built(Statement::from_sql_and_values(
            script.backend(),
            crate::figures::ADD_AUCTION_HOUR,
            [
                agent.into(),
                auction.category.clone().into(),
                hour.into(),
                entered.into(),
                won.into(),
                bid.into(),
                price.into(),
            ],
        ));
    }
}

/// Adds a finished job's attempts to `agent_service_hours` (`figures::service_of`).
fn add_service_hours(
    script: &mut Script,
    outcome: &JobOutcome,
    after: &std::collections::BTreeMap<Uuid, auction_engine::reputation::ReputationStats>,
) {
    for ((agent, hour), tally) in crate::figures::service_of(outcome, after) {
        let (at, successes, failures, ewma, p95) = tally.reputation_columns();
        let mut values: Vec<sea_orm::Value> = vec![agent.into(), hour.into()];
        values.extend(tally.counts.iter().map(|count| sea_orm::Value::from(*count)));
        values.extend([at.into(), successes.into(), failures.into(), ewma.into(), p95.into()]);
        script.push_built(Statement::from_sql_and_values(
            script.backend(),
            crate::figures::ADD_SERVICE_HOUR,
            values,
        ));
    }
}

/// What happens to a job's hold when it ends.
#[derive(Clone, Debug)]
pub enum Settlement {
    Capture(Capture),
    Release,
    /// No hold was placed.
    Nothing,
}

/// One attempt's effect on an agent's reputation.
#[derive(Clone, Copy, Debug)]
pub struct ReputationUpdate {
    pub agent: Uuid,
    pub outcome: auction_engine::reputation::Outcome,
    pub latency_ms: f64,
    pub now_ms: i64,
    pub half_life_ms: i64,
}

/// Ends a job in one transaction: the reputation of every agent tried, the settlement of its
/// hold, and the job's record with its attempts. Either all of it is written or none.
///
/// Two reads (the agents' reputation, the hold's claim) and then one script of writes.
pub async fn finish_job(
    db: &DatabaseConnection,
    job_id: Uuid,
    outcome: JobOutcome,
    settlement: Settlement,
    reputation: Vec<ReputationUpdate>,
) -> Result<(), RegistryError> {
    in_write_txn_with(db, Durability::Relaxed, async |txn| {
        let mut script = Script::new(txn.get_database_backend());
        // Rows are locked in one order everywhere (agents by id, then the hold and accounts),
        // so concurrent finishes cannot deadlock on Postgres.
        let after = crate::agents::add_reputation_updates(txn, &mut script, &reputation).await?;
        add_service_hours(&mut script, &outcome, &after);
        let pending = match settlement {
            Settlement::Capture(capture) => {
                ledger::add_capture(txn, &mut script, capture, outcome.finished_at).await?
            }
            Settlement::Release => {
                ledger::add_release(txn, &mut script, job_id, outcome.finished_at).await?
            }
            Settlement::Nothing => None,
        };
        add_close_job(&mut script, job_id, &outcome);
        let run = script.run(txn).await?;
        ledger::verify_settlement(txn, &run, pending).await?;
        Ok(())
    })
    .await
}

pub(crate) fn add_close_job(script: &mut Script, job_id: Uuid, outcome: &JobOutcome) {
    let to_i64 = |n: Option<u64>| n.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let closed = jobs::ActiveModel {
        status: Set(outcome.status.as_str().to_owned()),
        agent_id: Set(outcome.served.as_ref().map(|s| s.agent_id)),
        agent_slug: Set(outcome.served.as_ref().map(|s| s.agent_slug.clone())),
        owner_id: Set(outcome.served.as_ref().map(|s| s.owner.0)),
        clearing_price: Set(outcome.clearing_price.map(MicroCredits::micros)),
        agent_cost: Set(outcome.agent_cost.micros()),
        call_fee: Set(outcome.call_fee.micros()),
        win_fee: Set(outcome.win_fee.micros()),
        total_cost: Set(outcome.total_cost.micros()),
        input_tokens: Set(to_i64(outcome.input_tokens)),
        output_tokens: Set(to_i64(outcome.output_tokens)),
        latency_ms: Set(to_i64(outcome.latency_ms)),
        output: Set(outcome.output.clone()),
        error: Set(outcome.error.clone()),
        finished_at: Set(Some(outcome.finished_at)),
        ..Default::default()
    };
    script.push(
        &jobs::Entity::update_many().set(closed).filter(jobs::Column::Id.eq(job_id)).into_query(),
    );
    let (delivered, spent) = crate::figures::usage_of(outcome);
    script.push_built(Statement::from_sql_and_values(
        script.backend(),
        crate::figures::ADD_KEY_HOUR_OF_JOB,
        [
            job_id.into(),
            crate::figures::hour_of(outcome.finished_at).into(),
            delivered.into(),
            spent.into(),
        ],
    ));
    let rows: Vec<job_attempts::ActiveModel> = outcome
        .attempts
        .iter()
        .map(|attempt| job_attempts::ActiveModel {
            job_id: Set(job_id),
            rank: Set(attempt.rank as i32),
            agent_id: Set(attempt.agent_id),
            agent_slug: Set(attempt.agent_slug.clone()),
            price: Set(attempt.price.micros()),
            outcome: Set(attempt.outcome.clone()),
            http_status: Set(attempt.http_status.map(i32::from)),
            error_code: Set(attempt.error_code.clone()),
            latency_ms: Set(i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX)),
            started_at: Set(attempt.started_at),
            ..Default::default()
        })
        .collect();
    if !rows.is_empty() {
        script.push(&job_attempts::Entity::insert_many(rows).into_query());
    }
}

/// Marks jobs still `running` that were opened before `opened_before` as failed: a server
/// stopped in the middle of them (their holds expire and are voided by the ledger's reaper).
/// Returns how many it marked.
pub async fn fail_abandoned_jobs(
    db: &DatabaseConnection,
    opened_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, RegistryError> {
    let result = jobs::Entity::update_many()
        .col_expr(jobs::Column::Status, sea_orm::sea_query::Expr::value(JobStatus::Failed.as_str()))
        .col_expr(
            jobs::Column::Error,
            sea_orm::sea_query::Expr::value("abandoned: the server stopped during the job"),
        )
        .col_expr(jobs::Column::FinishedAt, sea_orm::sea_query::Expr::value(now))
        .filter(jobs::Column::Status.eq(JobStatus::Running.as_str()))
        .filter(jobs::Column::CreatedAt.lt(opened_before))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// The caller's job.
pub async fn find_job(
    db: &DatabaseConnection,
    caller: UserId,
    id: Uuid,
) -> Result<Option<Job>, RegistryError> {
    let row = jobs::Entity::find()
        .filter(jobs::Column::Id.eq(id))
        .filter(jobs::Column::CallerId.eq(caller.0))
        .one(db)
        .await?;
    Ok(row.map(to_job))
}

/// A job's attempts in order. Callers must have checked access to the job.
pub async fn job_attempts(
    db: &DatabaseConnection,
    job_id: Uuid,
) -> Result<Vec<Attempt>, RegistryError> {
    let rows = job_attempts::Entity::find()
        .filter(job_attempts::Column::JobId.eq(job_id))
        .order_by_asc(job_attempts::Column::Id)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| Attempt {
            rank: u32::try_from(row.rank).unwrap_or(0),
            agent_id: row.agent_id,
            agent_slug: row.agent_slug,
            price: MicroCredits::from_micros(row.price),
            outcome: row.outcome,
            http_status: row.http_status.and_then(|s| u16::try_from(s).ok()),
            error_code: row.error_code,
            latency_ms: u64::try_from(row.latency_ms).unwrap_or(0),
            started_at: row.started_at,
        })
        .collect())
}

/// The caller's auction record.
pub async fn find_auction(
    db: &DatabaseConnection,
    caller: UserId,
    id: Uuid,
) -> Result<Option<AuctionAudit>, RegistryError> {
    let row = auctions::Entity::find()
        .filter(auctions::Column::Id.eq(id))
        .filter(auctions::Column::CallerId.eq(caller.0))
        .one(db)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let record = match &row.record_lz4 {
        Some(packed) => unpack_record(packed).ok_or_else(|| {
            RegistryError::Storage(format!("the audit record of auction {} is unreadable", row.id))
        })?,
        None => row.record,
    };
    Ok(Some(AuctionAudit {
        id: row.id,
        job_id: row.job_id,
        category: row.category,
        record,
        created_at: row.created_at,
    }))
}

/// The most a stored record may expand to: far above any record Gavel writes (the record keeps
/// at most 100 candidates in full), so a damaged length prefix cannot make a read allocate
/// gigabytes.
const MAX_RECORD_BYTES: usize = 16 << 20;

/// A record as the SQLite writer stores it (`auctions.record_lz4`): lz4 with its length in
/// front. About 3.5 times smaller than the JSON, in about 5 us for a 10-agent auction's.
pub(crate) fn pack_record(record: &str) -> Vec<u8> {
    lz4_flex::compress_prepend_size(record.as_bytes())
}

/// The JSON text back from [`pack_record`]'s bytes; `None` if they are damaged.
fn unpack_record(packed: &[u8]) -> Option<String> {
    let (size, body) = lz4_flex::block::uncompressed_size(packed).ok()?;
    if size > MAX_RECORD_BYTES {
        return None;
    }
    String::from_utf8(lz4_flex::decompress(body, size).ok()?).ok()
}

/// Which side of a job the activity feed shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivityRole {
    /// Jobs the user called.
    Caller,
    /// Jobs the user's agents served.
    Owner,
}

/// Filters of the activity feed.
#[derive(Clone, Debug, Default)]
pub struct ActivityFilter {
    pub role: Option<ActivityRole>,
    pub status: Option<String>,
    pub category: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only jobs older than this one (cursor).
    pub before: Option<Uuid>,
    pub limit: u64,
}

/// The user's calls and their agents' wins, newest first.
///
/// Both sides at once are two queries, one per side, each walking its own index
/// (`caller_id, id` or `owner_id, id`) from the newest down and stopping at the limit, merged
/// here. One query with `caller_id = ? OR owner_id = ?` cannot stop early: it gathers every
/// job of the user and sorts them (measured: 217 ms a page for 100,000 jobs on SQLite).
pub async fn activity(
    db: &DatabaseConnection,
    user: UserId,
    filter: ActivityFilter,
) -> Result<Vec<Job>, RegistryError> {
    let limit = filter.limit.clamp(1, 1000);
    let rows = match filter.role {
        Some(role) => activity_side(db, user, role, &filter, limit).await?,
        None => {
            let mut rows = activity_side(db, user, ActivityRole::Caller, &filter, limit).await?;
            rows.extend(activity_side(db, user, ActivityRole::Owner, &filter, limit).await?);
            // A job the user called and their own agent served is on both sides.
            rows.sort_unstable_by_key(|row| std::cmp::Reverse(row.id));
            rows.dedup_by_key(|row| row.id);
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            rows
        }
    };
    Ok(rows.into_iter().map(to_job).collect())
}

/// One side of the activity feed, newest first, at most `limit` jobs.
async fn activity_side(
    db: &DatabaseConnection,
    user: UserId,
    role: ActivityRole,
    filter: &ActivityFilter,
    limit: u64,
) -> Result<Vec<jobs::Model>, RegistryError> {
    let mut query = jobs::Entity::find().filter(match role {
        ActivityRole::Caller => jobs::Column::CallerId.eq(user.0),
        ActivityRole::Owner => jobs::Column::OwnerId.eq(user.0),
    });
    if let Some(status) = &filter.status {
        query = query.filter(jobs::Column::Status.eq(status.as_str()));
    }
    if let Some(category) = &filter.category {
        query = query.filter(jobs::Column::Category.eq(category.as_str()));
    }
    if let Some(since) = filter.since {
        query = query.filter(jobs::Column::CreatedAt.gte(since));
    }
    if let Some(until) = filter.until {
        query = query.filter(jobs::Column::CreatedAt.lt(until));
    }
    if let Some(before) = filter.before {
        query = query.filter(jobs::Column::Id.lt(before));
    }
    Ok(query.order_by_desc(jobs::Column::Id).limit(limit).all(db).await?)
}
