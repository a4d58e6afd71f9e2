//! The job writer of an instance on Postgres: one task that commits every job opening and
//! ending waiting for it in one transaction (group commit), each statement sent once per batch
//! with the batch's rows bound as arrays.
//!
//! Postgres stays the authority for money, shared by every instance. What changes is how a
//! job's writes reach it. One at a time, a job made two transactions of about twenty
//! statements, and concurrent jobs of one payer queued on that payer's row lock (and the
//! platform's) for the length of each (measured: 292 jobs/s at c=64). Here a batch of
//! openings and endings is one transaction of a dozen statements whatever its size, and an
//! instance's jobs never wait on each other's locks.
//!
//! **Refusals.** The batch locks the accounts it touches (`SELECT ... FOR UPDATE`) and reads
//! them, then takes the openings in batch order: one whose payer cannot cover its hold (after
//! the batch's own endings are counted) is refused with `InsufficientCredits` and writes
//! nothing; the others go on. The sums per account are then applied by one conditional update
//! (`balance - held` and `held` of a wallet stay non-negative), a last line that should never
//! miss. Anything else that goes wrong (a hold to settle that is no longer active, an owner
//! who cannot cover a win fee above the price, a second hold on one job, an unknown agent, a
//! database error) rolls the batch back whole: a large batch is split in two and each half
//! tried again, a small one is replayed unit by unit through the pooled path
//! (`jobs::open_job_with_hold`, `jobs::finish_job`), which names the refusal. So one bad unit
//! costs a few more transactions and never spoils its neighbours.
//!
//! **Lock order** is the pooled path's, so batches of two instances and pooled transactions
//! cannot deadlock: agents' reputation rows by id, then holds (one per job), then accounts,
//! wallets first and system accounts last, each in id order; each kind is locked by one
//! statement (`SELECT ... ORDER BY ... FOR UPDATE` for agents and accounts) before anything of
//! the next kind is touched.
//!
//! Durability: as on the pooled path, the batch commits with `synchronous_commit = off` (the
//! README says so): exact across any crash of Gavel; a crash of Postgres itself can lose the
//! last ~0.6 s of commits, whole batches, never part of one. Measured with `scripts/bench`
//! (one run each): `off` 1,919 jobs/s at c=64 and 2.9 ms at c=1; `on` 1,468 and 4.4 ms.
//!
//! The SQL is fixed text with bound arrays: no statement is assembled from values.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use auction_engine::MicroCredits;
use auction_engine::reputation::ReputationStats;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use sea_orm::sqlx::{self, Connection, PgConnection, Postgres, Row, Transaction};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::RegistryError;
use crate::agents::reputation_stats;
use crate::entity::agent_reputation;
use crate::figures;
use crate::jobs::{
    self, AuctionEntry, JobOutcome, JobStatus, NewJob, ReputationUpdate, Settlement,
};
use crate::ledger::{self, AccountKind, CAPTURE, HoldRequest, HoldStatus};
use crate::sqlite_writer::WriterCounters;

/// The most units one transaction commits.
const MAX_BATCH: usize = 256;

/// Units that may wait for the writer; a job beyond them waits to queue (backpressure).
const QUEUE: usize = 4_096;

/// A job's opening (its rows and its hold) or its ending (rows, reputation, settlement).
pub(crate) enum PgUnit {
    Open(Box<Open>),
    Finish(Box<Finish>),
}

pub(crate) struct Open {
    pub(crate) job: NewJob,
    pub(crate) auction: AuctionEntry,
    pub(crate) hold: Option<(HoldRequest, Uuid)>,
}

pub(crate) struct Finish {
    pub(crate) job_id: Uuid,
    pub(crate) outcome: JobOutcome,
    pub(crate) settlement: Settlement,
    pub(crate) reputation: Vec<ReputationUpdate>,
}

struct Request {
    unit: PgUnit,
    done: oneshot::Sender<Result<(), RegistryError>>,
}

/// The handle jobs write through.
pub(crate) struct PgWriter {
    queue: mpsc::Sender<Request>,
    pub(crate) counts: Arc<WriterCounters>,
}

impl PgWriter {
    /// Starts the writer task on the current runtime. It ends when the handle is dropped.
    pub(crate) fn start(db: DatabaseConnection) -> PgWriter {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let counts = Arc::new(WriterCounters::default());
        tokio::spawn(run(db, waiting, Arc::clone(&counts)));
        PgWriter { queue, counts }
    }

    /// Queues `unit` and waits for its commit (or its error).
    pub(crate) async fn write(&self, unit: PgUnit) -> Result<(), RegistryError> {
        let (done, answer) = oneshot::channel();
        if self.queue.send(Request { unit, done }).await.is_err() {
            return Err(RegistryError::Storage("the job writer has stopped".into()));
        }
        answer
            .await
            .map_err(|_| RegistryError::Storage("the job writer stopped during a write".into()))?
    }
}

/// Below this many units a batch that missed is replayed unit by unit; above, it is split in
/// two and each half tried again, so one refusal among many costs a few more transactions,
/// not one per unit.
const REPLAY_BELOW: usize = 8;

async fn run(
    db: DatabaseConnection,
    mut waiting: mpsc::Receiver<Request>,
    counts: Arc<WriterCounters>,
) {
    // The writer's own connection, outside the pool: its session commits with
    // `synchronous_commit = off` (set once, at connect), which must not leak into pooled
    // transactions. Dropped after any database error and opened again for the next batch.
    // Its statements are planned at each run (`force_custom_plan`): a plan cached while
    // `jobs` and `holds` were young (before autovacuum's first ANALYZE) joins them by a
    // whole-table scan, which grows with every job; planned with the batch's own arrays and
    // the tables' current size, the join goes through the primary key.
    let options = db
        .get_postgres_connection_pool()
        .connect_options()
        .as_ref()
        .clone()
        .options([("synchronous_commit", "off"), ("plan_cache_mode", "force_custom_plan")]);
    let mut connection: Option<PgConnection> = None;
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![Some(first)];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(request) => batch.push(Some(request)),
                Err(_) => break,
            }
        }
        let mut ranges = vec![(0, batch.len())];
        while let Some((from, to)) = ranges.pop() {
            let units: Vec<&PgUnit> =
                batch[from..to].iter().flatten().map(|request| &request.unit).collect();
            let attempt = match connection.as_mut() {
                Some(conn) => commit(conn, &units).await,
                None => match PgConnection::connect_with(&options).await {
                    Ok(conn) => commit(connection.insert(conn), &units).await,
                    Err(err) => Err(Miss::Database(err)),
                },
            };
            if matches!(attempt, Err(Miss::Database(_))) {
                connection = None;
            }
            let miss = match attempt {
                Ok(answers) => {
                    let written = answers.iter().filter(|answer| answer.is_ok()).count();
                    counts.batches.fetch_add(1, Ordering::Relaxed);
                    counts.units.fetch_add(written as u64, Ordering::Relaxed);
                    let requests = batch[from..to].iter_mut().filter_map(Option::take);
                    for (request, answer) in requests.zip(answers) {
                        let _ = request.done.send(answer);
                    }
                    continue;
                }
                Err(miss) => miss,
            };
            tracing::debug!(units = to - from, %miss, "a job batch missed");
            counts.reruns.fetch_add(1, Ordering::Relaxed);
            if to - from >= REPLAY_BELOW {
                let middle = from + (to - from) / 2;
                ranges.push((middle, to));
                ranges.push((from, middle));
                continue;
            }
            for request in batch[from..to].iter_mut().filter_map(Option::take) {
                let answer = replay(&db, request.unit).await;
                if answer.is_ok() {
                    counts.batches.fetch_add(1, Ordering::Relaxed);
                    counts.units.fetch_add(1, Ordering::Relaxed);
                }
                let _ = request.done.send(answer);
            }
        }
    }
}

/// One unit on the pooled path, which decides and names its refusal (every refusal but a
/// payer short of credits, which the batch decides itself).
async fn replay(db: &DatabaseConnection, unit: PgUnit) -> Result<(), RegistryError> {
    match unit {
        PgUnit::Open(open) => {
            let Open { job, auction, hold } = *open;
            jobs::open_job_with_hold(db, job, auction, hold).await
        }
        PgUnit::Finish(finish) => {
            let Finish { job_id, outcome, settlement, reputation } = *finish;
            jobs::finish_job(db, job_id, outcome, settlement, reputation).await
        }
    }
}

/// Why a batch's fast path did not commit. Its units are replayed one by one.
#[derive(Debug, thiserror::Error)]
enum Miss {
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    #[error("a hold to settle is not active")]
    HoldGone,
    #[error("a settlement does not fit its hold")]
    Unfit,
    #[error("an account cannot cover the batch")]
    Uncovered,
    #[error("an agent has no reputation row")]
    UnknownAgent,
}

/// Each unit's answer, in batch order.
type Answers = Vec<Result<(), RegistryError>>;

/// The batch in one transaction, or a miss (nothing committed). An opening whose payer cannot
/// cover its hold is refused here and writes nothing; the rest commit.
async fn commit(conn: &mut PgConnection, units: &[&PgUnit]) -> Result<Answers, Miss> {
    let mut tx = conn.begin().await?;
    match write(&mut tx, units).await {
        Ok(answers) => {
            tx.commit().await?;
            Ok(answers)
        }
        Err(miss) => {
            // Rolled back now, not on the connection's next use: the replay that follows takes
            // the same rows' locks through the pool.
            tx.rollback().await?;
            Err(miss)
        }
    }
}

/// The batch's statements inside `tx`: each unit's answer, or a miss.
async fn write(tx: &mut Transaction<'_, Postgres>, units: &[&PgUnit]) -> Result<Answers, Miss> {
    let finishes: Vec<&Finish> = units
        .iter()
        .filter_map(|unit| match unit {
            PgUnit::Finish(finish) => Some(finish.as_ref()),
            PgUnit::Open(_) => None,
        })
        .collect();

    let reputation = fold_reputation(tx, &finishes).await?;
    let mut postings = Postings::default();
    let transfers = claim_holds(tx, &finishes, &mut postings).await?;
    let payers = units.iter().filter_map(|unit| match unit {
        PgUnit::Open(open) => open.hold.as_ref().map(|(request, _)| request.payer.0),
        PgUnit::Finish(_) => None,
    });
    let accounts = postings.lock(tx, payers).await?;

    // Openings in batch order, each against what its payer has left once the batch's endings
    // (which only free holds and move captured money) are counted.
    let mut available: HashMap<Uuid, i64> = accounts
        .iter()
        .map(|(id, account)| {
            let (balance, held) = postings.0.get(id).copied().unwrap_or_default();
            (*id, account.balance + balance - account.held - held)
        })
        .collect();
    let mut answers = Vec::with_capacity(units.len());
    let mut opens = Vec::new();
    for unit in units {
        let PgUnit::Open(open) = unit else {
            answers.push(Ok(()));
            continue;
        };
        if let Some((request, _)) = &open.hold {
            let amount = request.amount.micros();
            let payer = request.payer.0;
            let refusal = match (accounts.get(&payer), available.get_mut(&payer)) {
                _ if amount <= 0 => {
                    Some(RegistryError::invalid("amount", "a hold must be positive"))
                }
                (Some(account), Some(left)) if !account.wallet || *left >= amount => {
                    *left -= amount;
                    None
                }
                (Some(_), Some(left)) => Some(RegistryError::InsufficientCredits {
                    requested: request.amount,
                    available: MicroCredits::from_micros((*left).max(0)),
                }),
                _ => Some(RegistryError::NotFound { what: "account" }),
            };
            if let Some(refusal) = refusal {
                answers.push(Err(refusal));
                continue;
            }
            postings.add(payer, 0, amount);
        }
        answers.push(Ok(()));
        opens.push(open.as_ref());
    }
    move_money(tx, postings, &transfers).await?;
    insert_openings(tx, &opens).await?;
    close_jobs(tx, &finishes, &reputation).await?;
    Ok(answers)
}

/// An account as locked for the batch.
struct LockedAccount {
    wallet: bool,
    balance: i64,
    held: i64,
}

/// The balance and held changes of a batch, summed per account.
#[derive(Default)]
struct Postings(HashMap<Uuid, (i64, i64)>);

impl Postings {
    fn add(&mut self, account: Uuid, balance: i64, held: i64) {
        let entry = self.0.entry(account).or_default();
        entry.0 += balance;
        entry.1 += held;
    }

    /// Locks the accounts these postings and `others` touch, wallets first, then system
    /// accounts, each in id order, and reads them: until the commit nobody else changes them.
    async fn lock(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        others: impl Iterator<Item = Uuid>,
    ) -> Result<HashMap<Uuid, LockedAccount>, Miss> {
        let mut ids: Vec<Uuid> = self.0.keys().copied().chain(others).collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        ids.sort_unstable();
        ids.dedup();
        let rows = sqlx::query(
            "SELECT id, kind, balance, held FROM accounts WHERE id = ANY($1) \
             ORDER BY (kind <> $2), id FOR UPDATE",
        )
        .bind(&ids)
        .bind(AccountKind::UserWallet.as_str())
        .fetch_all(&mut **tx)
        .await?;
        let mut accounts = HashMap::with_capacity(rows.len());
        for row in rows {
            let kind: String = row.try_get(1)?;
            let account = LockedAccount {
                wallet: kind == AccountKind::UserWallet.as_str(),
                balance: row.try_get(2)?,
                held: row.try_get(3)?,
            };
            accounts.insert(row.try_get(0)?, account);
        }
        Ok(accounts)
    }
}

/// Every agent's reputation after the batch's outcomes, folded in batch order from its row,
/// read (and locked, in id order) inside the transaction.
async fn fold_reputation(
    tx: &mut Transaction<'_, Postgres>,
    finishes: &[&Finish],
) -> Result<BTreeMap<Uuid, ReputationStats>, Miss> {
    let mut agents: Vec<Uuid> =
        finishes.iter().flat_map(|f| f.reputation.iter().map(|u| u.agent)).collect();
    if agents.is_empty() {
        return Ok(BTreeMap::new());
    }
    agents.sort_unstable();
    agents.dedup();
    let rows = sqlx::query(
        "SELECT agent_id, successes, failures, updated_at_ms, latency_ewma_ms, latency_p95_ms, \
         total_successes, total_errors, total_timeouts, total_invalid \
         FROM agent_reputation WHERE agent_id = ANY($1) ORDER BY agent_id FOR UPDATE",
    )
    .bind(&agents)
    .fetch_all(&mut **tx)
    .await?;
    let mut stats = BTreeMap::new();
    for row in rows {
        let model = agent_reputation::Model {
            agent_id: row.try_get(0)?,
            successes: row.try_get(1)?,
            failures: row.try_get(2)?,
            updated_at_ms: row.try_get(3)?,
            latency_ewma_ms: row.try_get(4)?,
            latency_p95_ms: row.try_get(5)?,
            total_successes: row.try_get(6)?,
            total_errors: row.try_get(7)?,
            total_timeouts: row.try_get(8)?,
            total_invalid: row.try_get(9)?,
        };
        stats.insert(model.agent_id, reputation_stats(model));
    }
    for update in finishes.iter().flat_map(|f| f.reputation.iter()) {
        let current = stats.get_mut(&update.agent).ok_or(Miss::UnknownAgent)?;
        *current =
            current.record(update.outcome, update.latency_ms, update.now_ms, update.half_life_ms);
    }
    Ok(stats)
}

/// A capture's transfer, ready to insert.
struct TransferRow {
    job_id: Uuid,
    memo: Option<String>,
    legs: Vec<(Uuid, i64)>,
    now: DateTime<Utc>,
}

/// Moves every settled job's hold from active to captured or released (one update, holds in
/// job order) and adds the money each ending moves to `postings`. Returns the captures'
/// transfers. A hold not active (settled already, reaped) or a charge above its hold is a miss.
async fn claim_holds(
    tx: &mut Transaction<'_, Postgres>,
    finishes: &[&Finish],
    postings: &mut Postings,
) -> Result<Vec<TransferRow>, Miss> {
    let mut claims: Vec<(Uuid, HoldStatus, DateTime<Utc>)> = finishes
        .iter()
        .filter_map(|finish| match &finish.settlement {
            Settlement::Capture(_) => {
                Some((finish.job_id, HoldStatus::Captured, finish.outcome.finished_at))
            }
            Settlement::Release => {
                Some((finish.job_id, HoldStatus::Released, finish.outcome.finished_at))
            }
            Settlement::Nothing => None,
        })
        .collect();
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    claims.sort_by_key(|(job, _, _)| *job);
    let job_ids: Vec<Uuid> = claims.iter().map(|(job, _, _)| *job).collect();
    let statuses: Vec<&str> = claims.iter().map(|(_, status, _)| status.as_str()).collect();
    let times: Vec<DateTime<Utc>> = claims.iter().map(|(_, _, time)| *time).collect();
    let rows = sqlx::query(
        "UPDATE holds AS h SET status = v.status, settled_at = v.settled_at \
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS v(job_id, status, settled_at) \
         WHERE h.job_id = v.job_id AND h.status = $4 \
         RETURNING h.job_id, h.account_id, h.amount",
    )
    .bind(&job_ids)
    .bind(&statuses)
    .bind(&times)
    .bind(HoldStatus::Active.as_str())
    .fetch_all(&mut **tx)
    .await?;
    if rows.len() != claims.len() {
        return Err(Miss::HoldGone);
    }
    let mut held: HashMap<Uuid, (Uuid, i64)> = HashMap::with_capacity(rows.len());
    for row in rows {
        held.insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
    }
    let mut transfers = Vec::new();
    for finish in finishes {
        let Some(&(payer, amount)) = held.get(&finish.job_id) else { continue };
        match &finish.settlement {
            Settlement::Release | Settlement::Nothing => postings.add(payer, 0, -amount),
            Settlement::Capture(capture) => {
                if ledger::check_capture(capture).is_err() || capture.charge.micros() > amount {
                    return Err(Miss::Unfit);
                }
                postings.add(payer, -capture.charge.micros(), -amount);
                let mut legs = vec![(payer, -capture.charge.micros())];
                for payout in &capture.payouts {
                    let account = payout.payee.account();
                    postings.add(account, payout.amount.micros(), 0);
                    legs.push((account, payout.amount.micros()));
                }
                transfers.push(TransferRow {
                    job_id: finish.job_id,
                    memo: capture.memo.clone(),
                    legs,
                    now: finish.outcome.finished_at,
                });
            }
        }
    }
    Ok(transfers)
}

/// The batch's money: the sums per account, applied by one conditional update (the rows are
/// locked already), and the captures' transfers with their entries, in one statement. An
/// account it could not change is a miss; so is a repeated transfer key (`capture:{job}`),
/// which the replay finds already captured.
async fn move_money(
    tx: &mut Transaction<'_, Postgres>,
    postings: Postings,
    transfers: &[TransferRow],
) -> Result<(), Miss> {
    let changed: Vec<(Uuid, (i64, i64))> =
        postings.0.into_iter().filter(|(_, (balance, held))| *balance != 0 || *held != 0).collect();
    if changed.is_empty() && transfers.is_empty() {
        return Ok(());
    }
    let transfer_ids: Vec<Uuid> = transfers.iter().map(|_| Uuid::now_v7()).collect();
    let mut entries = EntryRows::default();
    // The hourly rollup's rows, one per account and hour (a statement may not change a row
    // twice), in key order. Their accounts' rows are locked already, so two batches never
    // wait on each other here in opposite orders.
    let mut flows: BTreeMap<(Uuid, i64), (i64, i64)> = BTreeMap::new();
    for (id, transfer) in transfer_ids.iter().zip(transfers) {
        if transfer.legs.iter().map(|(_, amount)| *amount).sum::<i64>() != 0 {
            return Err(Miss::Unfit);
        }
        let hour = figures::hour_of(transfer.now);
        for (account, spent, earned) in figures::flows_of(&transfer.legs) {
            let flow = flows.entry((account, hour)).or_default();
            flow.0 = flow.0.checked_add(spent).ok_or(Miss::Unfit)?;
            flow.1 = flow.1.checked_add(earned).ok_or(Miss::Unfit)?;
        }
        for (account, amount) in transfer.legs.iter().filter(|(_, amount)| *amount != 0) {
            entries.transfer.push(*id);
            entries.account.push(*account);
            entries.amount.push(*amount);
            entries.job.push(transfer.job_id);
            entries.memo.push(transfer.memo.as_deref());
            entries.time.push(transfer.now);
        }
    }
    let row = sqlx::query(
        "WITH moved AS ( \
           UPDATE accounts AS a SET balance = a.balance + v.balance, held = a.held + v.held \
           FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS v(id, balance, held) \
           WHERE a.id = v.id AND (a.kind <> $4 \
             OR (a.balance + v.balance - a.held - v.held >= 0 AND a.held + v.held >= 0)) \
           RETURNING a.id \
         ), new_transfers AS ( \
           INSERT INTO transfers (id, kind, idempotency_key, job_id, memo, created_at) \
           SELECT id, $5, $5 || ':' || job_id::text, job_id, memo, created_at \
           FROM unnest($6::uuid[], $7::uuid[], $8::text[], $9::timestamptz[]) \
             AS v(id, job_id, memo, created_at) \
         ), new_entries AS ( \
           INSERT INTO ledger_entries (transfer_id, account_id, amount, kind, job_id, memo, \
             created_at) \
           SELECT transfer_id, account_id, amount, $5, job_id, memo, created_at \
           FROM unnest($10::uuid[], $11::uuid[], $12::bigint[], $13::uuid[], $14::text[], \
             $15::timestamptz[]) AS v(transfer_id, account_id, amount, job_id, memo, created_at) \
         ), new_flows AS ( \
           INSERT INTO account_hourly_flows AS f (account_id, hour, spent, earned) \
           SELECT * FROM unnest($16::uuid[], $17::bigint[], $18::bigint[], $19::bigint[]) \
           ON CONFLICT (account_id, hour) DO UPDATE \
             SET spent = f.spent + excluded.spent, earned = f.earned + excluded.earned \
         ) \
         SELECT count(*) FROM moved",
    )
    .bind(changed.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, (balance, _))| *balance).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, (_, held))| *held).collect::<Vec<_>>())
    .bind(AccountKind::UserWallet.as_str())
    .bind(CAPTURE)
    .bind(&transfer_ids)
    .bind(transfers.iter().map(|t| t.job_id).collect::<Vec<_>>())
    .bind(transfers.iter().map(|t| t.memo.as_deref()).collect::<Vec<_>>())
    .bind(transfers.iter().map(|t| t.now).collect::<Vec<_>>())
    .bind(&entries.transfer)
    .bind(&entries.account)
    .bind(&entries.amount)
    .bind(&entries.job)
    .bind(&entries.memo)
    .bind(&entries.time)
    .bind(flows.keys().map(|(account, _)| *account).collect::<Vec<_>>())
    .bind(flows.keys().map(|(_, hour)| *hour).collect::<Vec<_>>())
    .bind(flows.values().map(|(spent, _)| *spent).collect::<Vec<_>>())
    .bind(flows.values().map(|(_, earned)| *earned).collect::<Vec<_>>())
    .fetch_one(&mut **tx)
    .await?;
    let moved: i64 = row.try_get(0)?;
    if moved != changed.len() as i64 {
        return Err(Miss::Uncovered);
    }
    Ok(())
}

/// Ledger entries as columns.
#[derive(Default)]
struct EntryRows<'a> {
    transfer: Vec<Uuid>,
    account: Vec<Uuid>,
    amount: Vec<i64>,
    job: Vec<Uuid>,
    memo: Vec<Option<&'a str>>,
    time: Vec<DateTime<Utc>>,
}

/// The openings' job rows, auction records and holds, in one statement. A second hold on one
/// job breaks the unique key on `holds.job_id`: a miss, and the replay names it.
async fn insert_openings(tx: &mut Transaction<'_, Postgres>, opens: &[&Open]) -> Result<(), Miss> {
    if opens.is_empty() {
        return Ok(());
    }
    let jobs: Vec<&NewJob> = opens.iter().map(|open| &open.job).collect();
    let auctions: Vec<&AuctionEntry> = opens.iter().map(|open| &open.auction).collect();
    let holds: Vec<(&NewJob, &HoldRequest, Uuid)> = opens
        .iter()
        .filter_map(|open| open.hold.as_ref().map(|(request, id)| (&open.job, request, *id)))
        .collect();
    // The entrants, summed per agent, category and hour first (one statement may not update a
    // row twice), for `agent_auction_hours`.
    let mut auction_hours: BTreeMap<(Uuid, &str, i64), [i64; 4]> = BTreeMap::new();
    for open in opens {
        let hour = figures::hour_of(open.job.created_at);
        for (agent, entered, won, bid, price) in figures::entries_of(&open.auction.entrants) {
            let key = (agent, open.auction.category.as_str(), hour);
            let sum = auction_hours.entry(key).or_default();
            for (total, add) in sum.iter_mut().zip([entered, won, bid, price]) {
                *total = total.saturating_add(add);
            }
        }
    }
    let auction_column = |i: usize| auction_hours.values().map(|sum| sum[i]).collect::<Vec<i64>>();
    sqlx::query(
        "WITH new_jobs AS ( \
           INSERT INTO jobs (id, caller_id, kind, category, requested_model, mode, status, \
             auction_id, agent_cost, call_fee, win_fee, total_cost, created_at, instance_id, \
             api_key_id, batch_line_id) \
           SELECT id, caller_id, kind, category, requested_model, mode, $10, auction_id, \
             0, 0, 0, 0, created_at, instance_id, api_key_id, batch_line_id \
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::uuid[], $8::timestamptz[], $9::uuid[], $22::uuid[], $30::uuid[]) \
             AS v(id, caller_id, kind, category, requested_model, mode, auction_id, created_at, \
             instance_id, api_key_id, batch_line_id) \
         ), new_auctions AS ( \
           INSERT INTO auctions (id, job_id, caller_id, category, winner_agent_id, \
             clearing_price, record, created_at) \
           SELECT * FROM unnest($7::uuid[], $1::uuid[], $2::uuid[], $11::text[], $12::uuid[], \
             $13::bigint[], $14::text[], $8::timestamptz[]) \
         ), new_auction_hours AS ( \
           INSERT INTO agent_auction_hours AS h \
             (agent_id, category, hour, entered, won, won_bid, won_price) \
           SELECT * FROM unnest($23::uuid[], $24::text[], $25::bigint[], $26::bigint[], \
             $27::bigint[], $28::bigint[], $29::bigint[]) \
           ON CONFLICT (agent_id, category, hour) DO UPDATE SET \
             entered = h.entered + excluded.entered, won = h.won + excluded.won, \
             won_bid = h.won_bid + excluded.won_bid, won_price = h.won_price + excluded.won_price \
         ) \
         INSERT INTO holds (id, job_id, account_id, amount, status, expires_at_ms, created_at) \
         SELECT id, job_id, account_id, amount, $15, expires_at_ms, created_at \
         FROM unnest($16::uuid[], $17::uuid[], $18::uuid[], $19::bigint[], $20::bigint[], \
           $21::timestamptz[]) AS v(id, job_id, account_id, amount, expires_at_ms, created_at)",
    )
    .bind(jobs.iter().map(|j| j.id).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.caller.0).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.category.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.requested_model.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.mode.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.auction_id).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.created_at).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.instance).collect::<Vec<_>>())
    .bind(JobStatus::Running.as_str())
    .bind(auctions.iter().map(|a| a.category.as_str()).collect::<Vec<_>>())
    .bind(auctions.iter().map(|a| a.winner).collect::<Vec<_>>())
    .bind(auctions.iter().map(|a| a.clearing_price.map(MicroCredits::micros)).collect::<Vec<_>>())
    .bind(auctions.iter().map(|a| a.record.as_str()).collect::<Vec<_>>())
    .bind(HoldStatus::Active.as_str())
    .bind(holds.iter().map(|(_, _, id)| *id).collect::<Vec<_>>())
    .bind(holds.iter().map(|(_, request, _)| request.job_id).collect::<Vec<_>>())
    .bind(holds.iter().map(|(_, request, _)| request.payer.0).collect::<Vec<_>>())
    .bind(holds.iter().map(|(_, request, _)| request.amount.micros()).collect::<Vec<_>>())
    .bind(
        holds
            .iter()
            .map(|(_, request, _)| request.expires_at.timestamp_millis())
            .collect::<Vec<_>>(),
    )
    .bind(holds.iter().map(|(job, _, _)| job.created_at).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.api_key).collect::<Vec<_>>())
    .bind(auction_hours.keys().map(|(agent, _, _)| *agent).collect::<Vec<_>>())
    .bind(auction_hours.keys().map(|(_, category, _)| *category).collect::<Vec<_>>())
    .bind(auction_hours.keys().map(|(_, _, hour)| *hour).collect::<Vec<_>>())
    .bind(auction_column(0))
    .bind(auction_column(1))
    .bind(auction_column(2))
    .bind(auction_column(3))
    .bind(jobs.iter().map(|j| j.batch_line).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The ended jobs' rows, their attempts and the agents' reputation, in one statement.
async fn close_jobs(
    tx: &mut Transaction<'_, Postgres>,
    finishes: &[&Finish],
    reputation: &BTreeMap<Uuid, ReputationStats>,
) -> Result<(), Miss> {
    if finishes.is_empty() {
        return Ok(());
    }
    let count = |n: Option<u64>| n.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let total = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let outcomes: Vec<&JobOutcome> = finishes.iter().map(|f| &f.outcome).collect();
    let served: Vec<Option<&jobs::Served>> = outcomes.iter().map(|o| o.served.as_ref()).collect();
    let attempts: Vec<(Uuid, &jobs::Attempt)> = finishes
        .iter()
        .flat_map(|f| f.outcome.attempts.iter().map(move |attempt| (f.job_id, attempt)))
        .collect();
    let stats: Vec<(&Uuid, &ReputationStats)> = reputation.iter().collect();
    // The attempts, summed per agent and hour first (one statement may not update a row
    // twice), for `agent_service_hours`, with each agent's reputation as this batch leaves it.
    let mut service: BTreeMap<(Uuid, i64), figures::ServiceTally> = BTreeMap::new();
    for finish in finishes {
        for (key, tally) in figures::service_of(&finish.outcome, reputation) {
            service.entry(key).or_default().add(&tally);
        }
    }
    let service_count = |i: usize| service.values().map(|t| t.counts[i]).collect::<Vec<i64>>();
    let service_reputation: Vec<(i64, f64, f64, f64, f64)> =
        service.values().map(figures::ServiceTally::reputation_columns).collect();
    let usage: Vec<(i64, i64)> = outcomes.iter().map(|o| figures::usage_of(o)).collect();
    let mut query = sqlx::query(concat!(
        "WITH closed AS ( \
           UPDATE jobs AS j SET status = v.status, agent_id = v.agent_id, \
             agent_slug = v.agent_slug, owner_id = v.owner_id, \
             clearing_price = v.clearing_price, agent_cost = v.agent_cost, \
             call_fee = v.call_fee, win_fee = v.win_fee, total_cost = v.total_cost, \
             input_tokens = v.input_tokens, output_tokens = v.output_tokens, \
             latency_ms = v.latency_ms, output = v.output, error = v.error, \
             finished_at = v.finished_at \
           FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::uuid[], \
             $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], \
             $11::bigint[], $12::bigint[], $13::bigint[], $14::text[], $15::text[], \
             $16::timestamptz[]) \
             AS v(id, status, agent_id, agent_slug, owner_id, clearing_price, agent_cost, \
             call_fee, win_fee, total_cost, input_tokens, output_tokens, latency_ms, output, \
             error, finished_at) \
           WHERE j.id = v.id \
           RETURNING j.id, j.api_key_id \
         ), scored AS ( \
           UPDATE agent_reputation AS r SET successes = v.successes, failures = v.failures, \
             updated_at_ms = v.updated_at_ms, latency_ewma_ms = v.latency_ewma_ms, \
             latency_p95_ms = v.latency_p95_ms, total_successes = v.total_successes, \
             total_errors = v.total_errors, total_timeouts = v.total_timeouts, \
             total_invalid = v.total_invalid \
           FROM unnest($17::uuid[], $18::float8[], $19::float8[], $20::bigint[], \
             $21::float8[], $22::float8[], $23::bigint[], $24::bigint[], $25::bigint[], \
             $26::bigint[]) \
             AS v(agent_id, successes, failures, updated_at_ms, latency_ewma_ms, \
             latency_p95_ms, total_successes, total_errors, total_timeouts, total_invalid) \
           WHERE r.agent_id = v.agent_id \
         ), served_hours AS (",
        figures::service_hour_insert!(),
        "SELECT * FROM unnest($37::uuid[], $38::bigint[], $39::bigint[], $40::bigint[], \
           $41::bigint[], $42::bigint[], $43::bigint[], $44::bigint[], $45::bigint[], \
           $46::bigint[], $47::bigint[], $48::bigint[], $49::bigint[], $50::bigint[], \
           $51::bigint[], $52::bigint[], $53::bigint[], $54::bigint[], $55::bigint[], \
           $56::float8[], $57::float8[], $58::float8[], $59::float8[])",
        figures::service_hour_upsert!(),
        "), key_hours AS ( \
           INSERT INTO api_key_hours AS k (api_key_id, hour, jobs, delivered, spent) \
           SELECT c.api_key_id, v.hour, COUNT(*), SUM(v.delivered)::bigint, \
             SUM(v.spent)::bigint \
           FROM unnest($1::uuid[], $62::bigint[], $60::bigint[], $61::bigint[]) \
             AS v(job_id, hour, delivered, spent) \
           JOIN closed c ON c.id = v.job_id WHERE c.api_key_id IS NOT NULL GROUP BY 1, 2 \
           ON CONFLICT (api_key_id, hour) DO UPDATE SET jobs = k.jobs + excluded.jobs, \
             delivered = k.delivered + excluded.delivered, spent = k.spent + excluded.spent \
         ) \
         INSERT INTO job_attempts (job_id, rank, agent_id, agent_slug, price, outcome, \
           http_status, error_code, latency_ms, started_at) \
         SELECT * FROM unnest($27::uuid[], $28::integer[], $29::uuid[], $30::text[], \
           $31::bigint[], $32::text[], $33::integer[], $34::text[], $35::bigint[], \
           $36::timestamptz[])"
    ))
    .bind(finishes.iter().map(|f| f.job_id).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.status.as_str()).collect::<Vec<_>>())
    .bind(served.iter().map(|s| s.map(|s| s.agent_id)).collect::<Vec<_>>())
    .bind(served.iter().map(|s| s.map(|s| s.agent_slug.as_str())).collect::<Vec<_>>())
    .bind(served.iter().map(|s| s.map(|s| s.owner.0)).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.clearing_price.map(MicroCredits::micros)).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.agent_cost.micros()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.call_fee.micros()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.win_fee.micros()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.total_cost.micros()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| count(o.input_tokens)).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| count(o.output_tokens)).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| count(o.latency_ms)).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.output.as_deref()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.error.as_deref()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.finished_at).collect::<Vec<_>>())
    .bind(stats.iter().map(|(agent, _)| **agent).collect::<Vec<_>>())
    .bind(stats.iter().map(|(_, s)| s.successes).collect::<Vec<_>>())
    .bind(stats.iter().map(|(_, s)| s.failures).collect::<Vec<_>>())
    .bind(stats.iter().map(|(_, s)| s.updated_at_ms).collect::<Vec<_>>())
    .bind(stats.iter().map(|(_, s)| s.latency_ewma_ms).collect::<Vec<_>>())
    .bind(stats.iter().map(|(_, s)| s.latency_p95_ms).collect::<Vec<_>>())
    .bind(stats.iter().map(|(_, s)| total(s.total_successes)).collect::<Vec<_>>())
    .bind(stats.iter().map(|(_, s)| total(s.total_errors)).collect::<Vec<_>>())
    .bind(stats.iter().map(|(_, s)| total(s.total_timeouts)).collect::<Vec<_>>())
    .bind(stats.iter().map(|(_, s)| total(s.total_invalid)).collect::<Vec<_>>())
    .bind(attempts.iter().map(|(job, _)| *job).collect::<Vec<_>>())
    .bind(
        attempts.iter().map(|(_, a)| i32::try_from(a.rank).unwrap_or(i32::MAX)).collect::<Vec<_>>(),
    )
    .bind(attempts.iter().map(|(_, a)| a.agent_id).collect::<Vec<_>>())
    .bind(attempts.iter().map(|(_, a)| a.agent_slug.as_str()).collect::<Vec<_>>())
    .bind(attempts.iter().map(|(_, a)| a.price.micros()).collect::<Vec<_>>())
    .bind(attempts.iter().map(|(_, a)| a.outcome.as_str()).collect::<Vec<_>>())
    .bind(attempts.iter().map(|(_, a)| a.http_status.map(i32::from)).collect::<Vec<_>>())
    .bind(attempts.iter().map(|(_, a)| a.error_code.as_deref()).collect::<Vec<_>>())
    .bind(
        attempts
            .iter()
            .map(|(_, a)| i64::try_from(a.latency_ms).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(attempts.iter().map(|(_, a)| a.started_at).collect::<Vec<_>>())
    .bind(service.keys().map(|(agent, _)| *agent).collect::<Vec<_>>())
    .bind(service.keys().map(|(_, hour)| *hour).collect::<Vec<_>>());
    for i in 0..16 {
        query = query.bind(service_count(i));
    }
    query
        .bind(service_reputation.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(service_reputation.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(service_reputation.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(service_reputation.iter().map(|r| r.3).collect::<Vec<_>>())
        .bind(service_reputation.iter().map(|r| r.4).collect::<Vec<_>>())
        .bind(usage.iter().map(|(delivered, _)| *delivered).collect::<Vec<_>>())
        .bind(usage.iter().map(|(_, spent)| *spent).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|o| figures::hour_of(o.finished_at)).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
