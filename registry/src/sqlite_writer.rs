//! The one writer of a SQLite file: a thread that owns a rusqlite connection and commits every
//! unit waiting for it in one transaction (group commit).
//!
//! A *unit* is everything one operation leaves behind: a finished job's row, its auction
//! record, its attempts, the reputation of the agents it tried and its transfer with the
//! balance changes; or a grant. The rollups the dashboard reads (`figures`) are summed over a
//! batch's committed units and written once, just before its `COMMIT`. When the thread is
//! idle a unit commits at once (no timer, so a lone job never waits for company); under load,
//! whatever queued while the last commit ran goes into the next one (up to [`MAX_BATCH`]), so
//! SQLite's write lock and its WAL append are paid once per batch rather than once per job.
//! A batch runs straight through; if a unit fails, the batch is rolled back and run again with
//! a savepoint per unit, so the failed unit is answered with its error and its neighbours
//! commit.
//!
//! After `COMMIT` the thread applies each committed unit's effect to the [`Book`] (balances,
//! holds freed), in commit order, and only then answers. So the book never shows money the
//! file does not have, and a load of an account (also a unit, read inside the same ordered
//! stream) can never count a commit twice. A crash before `COMMIT` loses the batch whole: no
//! caller was told it happened.
//!
//! Statements are prepared once and cached on the connection; values are bound, never joined
//! into SQL text. Column encodings match what sqlx writes (a UUID as 16 bytes, a time as
//! RFC 3339 text), since the pool reads these rows back.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use auction_engine::MicroCredits;
use auction_engine::reputation::ReputationStats;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::RegistryError;
use crate::agents::reputation_stats;
use crate::bank::{Book, Wallet};
use crate::entity::agent_reputation;
use crate::figures;
use crate::jobs::{AuctionEntry, JobOutcome, NewJob, ReputationUpdate};
use crate::ledger::{AccountKind, Applied, CAPTURE, GRANT_SOURCE_ACCOUNT};

/// The most units one transaction commits.
const MAX_BATCH: usize = 256;

/// One durable change, committed whole or not at all.
pub(crate) enum Unit {
    /// A finished job: its rows, and the money it moved.
    Job(Box<JobUnit>),
    /// This month's free grant, once per user and month.
    MonthlyGrant { user: Uuid, period: String, amount: i64, now: DateTime<Utc> },
    /// The operator's grant, once per `transfer_id`.
    AdminGrant { user: Uuid, amount: i64, transfer_id: Uuid, now: DateTime<Utc> },
    /// Brings an account the book has not seen (a user who signed up since the start) into it.
    Load { account: Uuid },
}

/// A finished job's whole durable footprint.
pub(crate) struct JobUnit {
    pub(crate) job: NewJob,
    /// The auction's columns; its JSON record is stored as `packed_record`, not as text.
    pub(crate) auction: AuctionEntry,
    /// The audit record, packed by the job's own task ([`crate::jobs::pack_record`]) so the
    /// one writer thread does not spend its time compressing.
    pub(crate) packed_record: Vec<u8>,
    pub(crate) outcome: JobOutcome,
    pub(crate) reputation: Vec<ReputationUpdate>,
    pub(crate) transfer: Option<TransferRows>,
    /// Holds freed once the unit commits: `(account, amount)`.
    pub(crate) releases: Vec<(Uuid, i64)>,
    /// A batch line whose share of its batch's reservation this job's hold drew: the line's
    /// `reserve_held` turns false in this unit, so a restart does not reserve it again.
    pub(crate) drawn_line: Option<Uuid>,
}

/// A transfer: legs that sum to zero, each also a change of its account's balance.
pub(crate) struct TransferRows {
    pub(crate) kind: &'static str,
    pub(crate) key: String,
    pub(crate) job_id: Option<Uuid>,
    pub(crate) memo: Option<String>,
    pub(crate) legs: Vec<(Uuid, i64)>,
    pub(crate) now: DateTime<Utc>,
}

/// What a committed unit does to the book.
#[derive(Default)]
struct Effect {
    balances: Vec<(Uuid, i64)>,
    releases: Vec<(Uuid, i64)>,
    grant_period: Option<(Uuid, String)>,
    loaded: Option<(Uuid, Wallet)>,
}

struct Request {
    unit: Unit,
    done: oneshot::Sender<Result<Applied, RegistryError>>,
}

/// How the writer's commits went.
#[derive(Default)]
pub(crate) struct WriterCounters {
    pub(crate) units: AtomicU64,
    pub(crate) batches: AtomicU64,
    /// Batches in which a unit failed: rerun unit by unit (SQLite), or split and replayed
    /// (Postgres).
    pub(crate) reruns: AtomicU64,
}

/// The handle the rest of the process writes through.
pub(crate) struct SqliteWriter {
    queue: Mutex<mpsc::Sender<Request>>,
    pub(crate) counts: Arc<WriterCounters>,
}

impl SqliteWriter {
    /// Opens `file`, loads every account into `book` (each balance the sum of its entries) and
    /// starts the writer thread. Blocking: call from a blocking context.
    pub(crate) fn start(
        file: &Path,
        book: Arc<Mutex<Book>>,
    ) -> Result<SqliteWriter, RegistryError> {
        let conn = open(file)?;
        load_book(&conn, &book)?;
        let (queue, waiting) = mpsc::channel();
        let counts = Arc::new(WriterCounters::default());
        let thread_counts = Arc::clone(&counts);
        checkpoint_in_background(file, &conn, Arc::downgrade(&counts))?;
        std::thread::Builder::new()
            .name("gavel-sqlite-writer".into())
            .spawn(move || run(conn, waiting, book, thread_counts))
            .map_err(|err| RegistryError::Storage(format!("cannot start the writer: {err}")))?;
        Ok(SqliteWriter { queue: Mutex::new(queue), counts })
    }

    /// Queues `unit` and waits for its commit (or its error).
    pub(crate) async fn write(&self, unit: Unit) -> Result<Applied, RegistryError> {
        let (done, answer) = oneshot::channel();
        let sent = self
            .queue
            .lock()
            .map_err(|_| RegistryError::Storage("the writer queue is poisoned".into()))?
            .send(Request { unit, done });
        if sent.is_err() {
            return Err(RegistryError::Storage("the writer has stopped".into()));
        }
        answer
            .await
            .map_err(|_| RegistryError::Storage("the writer stopped during a write".into()))?
    }
}

fn open(file: &Path) -> Result<Connection, RegistryError> {
    let conn = Connection::open(file)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A savepoint keeps the pages it changes in a sub-journal: in memory, not in a temporary
    // file created, written and deleted for every unit (measured: most of a lone job's commit).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 16 MiB of pages (the default is 2 MiB): the right edges of the job tables' indexes stay
    // cached between commits.
    conn.pragma_update(None, "cache_size", -16_384)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// How often while the log grows fast (the last checkpoint found more than [`BUSY_FRAMES`]).
const CHECKPOINT_EVERY_WHEN_BUSY: std::time::Duration = std::time::Duration::from_millis(100);

/// Frames in the log at a checkpoint that mean writes are steady: about 20 lone jobs.
const BUSY_FRAMES: i64 = 512;

/// The WAL's length, in frames (pages), past which the checkpointer restarts it: 32 MiB.
const WAL_RESTART_FRAMES: i64 = 8_192;

/// Checkpoints the WAL from a thread of its own. A checkpoint copies pages and syncs the
/// database file, milliseconds of work: run by the writer (SQLite's automatic checkpoint, by
/// whichever connection commits past 1,000 WAL pages), it would stall every job queued behind
/// it. The writer's connection has automatic checkpoints off; this thread runs a `PASSIVE`
/// one (it never blocks the writer or a reader) every 200 ms after commits (every 100 ms while
/// the log grows fast), and stops with the writer (`alive` is the writer's). Checkpointing
/// more often bounds the log tighter but costs throughput: with 50 and 20 ms, c=64 settled
/// about 5,700 jobs/s against 6,100 (one `scripts/bench` run each).
///
/// A passive checkpoint alone lets the WAL grow without bound under steady load: SQLite
/// starts the log over only when a write begins with every frame already copied back, and
/// with a commit every millisecond that moment never comes (measured: 1.3 GB after 12 s of
/// sequential jobs). So once the log is past [`WAL_RESTART_FRAMES`], the thread follows the
/// passive checkpoint with a `RESTART` one: it waits for the writer's transaction to end,
/// copies the frames written since, syncs, and makes the next write start the log from its
/// beginning. The writer waits that long once per 32 MiB of log (measured in the test of
/// this bound: 5 to 7 ms typically, 186 ms at worst, when the sync met a busy disk).
fn checkpoint_in_background(
    file: &Path,
    writer: &Connection,
    alive: std::sync::Weak<WriterCounters>,
) -> Result<(), RegistryError> {
    writer.pragma_update(None, "wal_autocheckpoint", 0)?;
    let conn = open(file)?;
    std::thread::Builder::new()
        .name("gavel-sqlite-checkpoint".into())
        .spawn(move || {
            let (mut checkpointed, mut pause) = (0, CHECKPOINT_EVERY);
            loop {
                std::thread::sleep(pause);
                // The writer is gone: so is the reason to checkpoint.
                let Some(batches) = alive.upgrade().map(|c| c.batches.load(Ordering::Relaxed))
                else {
                    break;
                };
                // Only when something was committed since: a checkpoint syncs the file.
                if batches == checkpointed {
                    continue;
                }
                checkpointed = batches;
                pause = match checkpoint(&conn) {
                    Ok(frames) if frames > BUSY_FRAMES => CHECKPOINT_EVERY_WHEN_BUSY,
                    Ok(_) => CHECKPOINT_EVERY,
                    Err(err) => {
                        tracing::warn!(%err, "WAL checkpoint failed");
                        CHECKPOINT_EVERY
                    }
                };
            }
        })
        .map_err(|err| RegistryError::Storage(format!("cannot start the checkpointer: {err}")))?;
    Ok(())
}

/// One passive checkpoint, then a restart if the log has grown past its bound. Returns the
/// log's length, in frames, as the passive checkpoint found it.
fn checkpoint(conn: &Connection) -> Result<i64, rusqlite::Error> {
    // Its row: (busy, frames in the log, frames copied back).
    let frames =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1))?;
    if frames > WAL_RESTART_FRAMES {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(frames)
}

/// Fills the book from the file. This process is the only server on it (the data lock), so
/// any active hold in the table is a leftover of a crash under an older version: it is voided,
/// and wallets' `held` starts at the shares their batches' lines still hold (job holds live in
/// memory from here on; a job that was running at a crash never happened for money). A cached
/// balance that differs from the sum of the account's entries is corrected to that sum,
/// loudly.
fn load_book(conn: &Connection, book: &Mutex<Book>) -> Result<(), RegistryError> {
    let now = time_text(Utc::now());
    conn.execute(
        "UPDATE holds SET status = 'expired', settled_at = ?1 WHERE status = 'active'",
        params![now],
    )?;
    conn.execute("UPDATE accounts SET held = 0 WHERE held <> 0", [])?;
    let mut sums: HashMap<Uuid, i64> = HashMap::new();
    let mut statement = conn.prepare(
        "SELECT account_id, CAST(SUM(amount) AS INTEGER) FROM ledger_entries GROUP BY account_id",
    )?;
    let rows = statement.query_map([], |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get(1)?)))?;
    for row in rows {
        let (id, sum) = row?;
        sums.insert(uuid_of(&id)?, sum);
    }
    let mut statement = conn.prepare("SELECT id, kind, balance, grant_period FROM accounts")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, String>(1)?, row.get(2)?, row.get(3)?))
    })?;
    let mut wallets = HashMap::new();
    for row in rows {
        let (id, kind, cached, grant_period): (Vec<u8>, String, i64, Option<String>) = row?;
        let id = uuid_of(&id)?;
        let balance = sums.get(&id).copied().unwrap_or(0);
        if balance != cached {
            tracing::error!(account = %id, cached, entries = balance,
                "an account's cached balance differed from its entries; using the entries");
            conn.execute(
                "UPDATE accounts SET balance = ?2 WHERE id = ?1",
                params![id.as_bytes(), balance],
            )?;
        }
        let wallet = kind == AccountKind::UserWallet.as_str();
        wallets.insert(id, Wallet { balance, held: 0, wallet, grant_period });
    }
    let mut statement = conn.prepare(
        "SELECT b.owner_id, CAST(SUM(l.reserve) AS INTEGER) FROM batch_lines l \
         JOIN batches b ON b.id = l.batch_id WHERE l.reserve_held GROUP BY b.owner_id",
    )?;
    let rows = statement.query_map([], |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get(1)?)))?;
    for row in rows {
        let (owner, reserved): (Vec<u8>, i64) = row?;
        if let Some(wallet) = wallets.get_mut(&uuid_of(&owner)?) {
            wallet.held += reserved;
        }
    }
    book.lock().map_err(|_| poisoned())?.load(wallets);
    Ok(())
}

/// The thread: waits for a unit, takes whatever else is waiting, commits, applies, answers.
fn run(
    mut conn: Connection,
    waiting: mpsc::Receiver<Request>,
    book: Arc<Mutex<Book>>,
    counts: Arc<WriterCounters>,
) {
    while let Ok(first) = waiting.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let results = commit(&mut conn, &batch, &counts);
        let answers: Vec<Result<Applied, RegistryError>> = match results {
            Ok(results) => {
                counts.batches.fetch_add(1, Ordering::Relaxed);
                match book.lock() {
                    Ok(mut book) => results
                        .into_iter()
                        .map(|result| {
                            result.map(|(applied, effect)| {
                                counts.units.fetch_add(1, Ordering::Relaxed);
                                apply(&mut book, effect);
                                applied
                            })
                        })
                        .collect(),
                    Err(_) => batch.iter().map(|_| Err(poisoned())).collect(),
                }
            }
            Err(err) => {
                tracing::error!(%err, units = batch.len(), "a write batch did not commit");
                let message = err.to_string();
                batch.iter().map(|_| Err(RegistryError::Storage(message.clone()))).collect()
            }
        };
        for (request, answer) in batch.into_iter().zip(answers) {
            let _ = request.done.send(answer);
        }
    }
}

fn poisoned() -> RegistryError {
    RegistryError::Storage("the book's lock is poisoned".into())
}

fn apply(book: &mut Book, effect: Effect) {
    if let Some((account, wallet)) = effect.loaded {
        book.insert_if_absent(account, wallet);
    }
    for (account, delta) in effect.balances {
        book.credit(account, delta);
    }
    for (account, amount) in effect.releases {
        book.unreserve(account, amount);
    }
    if let Some((account, period)) = effect.grant_period {
        book.set_grant_period(account, period);
    }
}

type UnitResult = Result<(Applied, Effect), RegistryError>;

/// One transaction for the batch. `Err` when the transaction itself failed (nothing
/// committed); otherwise each unit's own result.
///
/// Units almost never fail (the book has already decided that each payer can pay), so the
/// batch first runs straight through, without a savepoint per unit: a savepoint copies every
/// page a unit changes into its journal before changing it, which was a third of the writer's
/// time at c=64 (copies and the allocator, measured with `perf`). If a unit does fail, that
/// transaction is rolled back whole, before anyone is answered, and the batch runs again with a
/// savepoint per unit, so the failed unit is rolled back alone and its neighbours commit.
fn commit(
    conn: &mut Connection,
    batch: &[Request],
    counts: &WriterCounters,
) -> Result<Vec<UnitResult>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut rollups = Rollups::default();
    let results: Vec<UnitResult> =
        batch.iter().map(|request| execute(&tx, &request.unit, &mut rollups)).collect();
    if results.iter().all(Result::is_ok) {
        rollups.write(&tx)?;
        tx.commit()?;
        return Ok(results);
    }
    // A lone unit's failure is the whole transaction's: rolling back is the same thing.
    if let [_] = batch {
        // Dropped uncommitted, the transaction rolls back.
        return Ok(results);
    }
    tx.rollback()?;
    counts.reruns.fetch_add(1, Ordering::Relaxed);
    commit_unit_by_unit(conn, batch)
}

/// The batch again, a savepoint per unit: a unit that fails is rolled back to where it began.
fn commit_unit_by_unit(
    conn: &mut Connection,
    batch: &[Request],
) -> Result<Vec<UnitResult>, rusqlite::Error> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut rollups = Rollups::default();
    for request in batch {
        let savepoint = tx.savepoint()?;
        // A unit's rollup rows count only if its savepoint does.
        let mut own = Rollups::default();
        let result = execute(&savepoint, &request.unit, &mut own);
        if result.is_ok() {
            savepoint.commit()?;
            rollups.merge(own);
        }
        // Dropped uncommitted, a savepoint rolls back to where it began and is released.
        results.push(result);
    }
    rollups.write(&tx)?;
    tx.commit()?;
    Ok(results)
}

/// The rollup rows of a batch's committed units (`figures`), summed per key and written once,
/// just before the batch commits: a batch of 64 jobs won by one agent in one hour adds to that
/// agent's hour once, not 64 times. In the same transaction as the rows they count.
#[derive(Default)]
struct Rollups {
    /// (account, hour) -> (spent, earned).
    flows: BTreeMap<(Uuid, i64), (i64, i64)>,
    /// (agent, category, hour) -> entered, won, won bid, won price.
    auctions: BTreeMap<(Uuid, String, i64), [i64; 4]>,
    service: BTreeMap<(Uuid, i64), figures::ServiceTally>,
    /// (key, hour) -> jobs, delivered, spent.
    keys: BTreeMap<(Uuid, i64), [i64; 3]>,
}

fn add_up<const N: usize>(into: &mut [i64; N], more: [i64; N]) {
    for (total, add) in into.iter_mut().zip(more) {
        *total = total.saturating_add(add);
    }
}

impl Rollups {
    fn merge(&mut self, other: Rollups) {
        for (key, (spent, earned)) in other.flows {
            let flow = self.flows.entry(key).or_default();
            *flow = (flow.0.saturating_add(spent), flow.1.saturating_add(earned));
        }
        for (key, sums) in other.auctions {
            add_up(self.auctions.entry(key).or_default(), sums);
        }
        for (key, tally) in other.service {
            self.service.entry(key).or_default().add(&tally);
        }
        for (key, sums) in other.keys {
            add_up(self.keys.entry(key).or_default(), sums);
        }
    }

    fn write(&self, tx: &Connection) -> Result<(), rusqlite::Error> {
        let mut flow = tx.prepare_cached(figures::ADD_HOURLY_FLOW)?;
        for ((account, hour), (spent, earned)) in &self.flows {
            flow.execute(params![account.as_bytes(), hour, spent, earned])?;
        }
        let mut auction = tx.prepare_cached(figures::ADD_AUCTION_HOUR)?;
        for ((agent, category, hour), [entered, won, bid, price]) in &self.auctions {
            auction.execute(params![agent.as_bytes(), category, hour, entered, won, bid, price])?;
        }
        let mut service = tx.prepare_cached(figures::ADD_SERVICE_HOUR)?;
        for ((agent, hour), tally) in &self.service {
            let (at, successes, failures, ewma, p95) = tally.reputation_columns();
            let c = &tally.counts;
            service.execute(params![
                agent.as_bytes(),
                hour,
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                c[6],
                c[7],
                c[8],
                c[9],
                c[10],
                c[11],
                c[12],
                c[13],
                c[14],
                c[15],
                at,
                successes,
                failures,
                ewma,
                p95
            ])?;
        }
        let mut key_hour = tx.prepare_cached(figures::ADD_KEY_HOUR)?;
        for ((key, hour), [jobs, delivered, spent]) in &self.keys {
            key_hour.execute(params![key.as_bytes(), hour, jobs, delivered, spent])?;
        }
        Ok(())
    }
}

fn execute(tx: &Connection, unit: &Unit, rollups: &mut Rollups) -> UnitResult {
    match unit {
        Unit::Job(job) => {
            write_job(tx, job, rollups)?;
            let mut effect = Effect { releases: job.releases.clone(), ..Effect::default() };
            if let Some(transfer) = &job.transfer {
                write_transfer(tx, transfer, rollups)?;
                effect.balances = transfer.legs.clone();
            }
            Ok((Applied::Done, effect))
        }
        Unit::MonthlyGrant { user, period, amount, now } => {
            let claimed = tx
                .prepare_cached(
                    "UPDATE accounts SET grant_period = ?2 \
                     WHERE id = ?1 AND (grant_period IS NULL OR grant_period < ?2)",
                )?
                .execute(params![user.as_bytes(), period])?;
            let effect =
                Effect { grant_period: Some((*user, period.clone())), ..Effect::default() };
            if claimed == 0 || *amount == 0 {
                return Ok((Applied::AlreadyDone, effect));
            }
            let transfer = TransferRows {
                kind: "grant",
                key: format!("grant:{user}:{period}"),
                job_id: None,
                memo: Some(format!("free credits for {period}")),
                legs: vec![(*user, *amount), (GRANT_SOURCE_ACCOUNT, -amount)],
                now: *now,
            };
            match write_transfer(tx, &transfer, rollups) {
                Ok(()) => Ok((Applied::Done, Effect { balances: transfer.legs, ..effect })),
                // This month's grant exists although the account's marker said otherwise
                // (a restored backup, a manual edit): grant nothing.
                Err(RegistryError::Sqlite(err)) if is_unique_violation(&err) => {
                    Ok((Applied::AlreadyDone, effect))
                }
                Err(err) => Err(err),
            }
        }
        Unit::AdminGrant { user, amount, transfer_id, now } => {
            let transfer = TransferRows {
                kind: "admin_grant",
                key: format!("admin_grant:{transfer_id}"),
                job_id: None,
                memo: Some("granted by the operator".to_owned()),
                legs: vec![(*user, *amount), (GRANT_SOURCE_ACCOUNT, -amount)],
                now: *now,
            };
            match write_transfer(tx, &transfer, rollups) {
                Ok(()) => {
                    Ok((Applied::Done, Effect { balances: transfer.legs, ..Effect::default() }))
                }
                Err(RegistryError::Sqlite(err)) if is_unique_violation(&err) => {
                    Ok((Applied::AlreadyDone, Effect::default()))
                }
                Err(err) => Err(err),
            }
        }
        Unit::Load { account } => {
            let row = tx
                .prepare_cached("SELECT kind, balance, grant_period FROM accounts WHERE id = ?1")?
                .query_row(params![account.as_bytes()], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get(2)?))
                })
                .optional()?;
            let Some((kind, balance, grant_period)) = row else {
                return Err(RegistryError::NotFound { what: "account" });
            };
            let wallet = Wallet {
                balance,
                held: 0,
                wallet: kind == AccountKind::UserWallet.as_str(),
                grant_period,
            };
            Ok((Applied::Done, Effect { loaded: Some((*account, wallet)), ..Effect::default() }))
        }
    }
}

fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(err.sqlite_error_code(), Some(ErrorCode::ConstraintViolation))
}

fn write_job(tx: &Connection, unit: &JobUnit, rollups: &mut Rollups) -> Result<(), RegistryError> {
    let (job, outcome) = (&unit.job, &unit.outcome);
    if let Some(line) = unit.drawn_line {
        tx.prepare_cached("UPDATE batch_lines SET reserve_held = 0 WHERE id = ?1")?
            .execute(params![line.as_bytes()])?;
    }
    let served = outcome.served.as_ref();
    let count = |n: Option<u64>| n.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    tx.prepare_cached(
        "INSERT INTO jobs (id, caller_id, kind, category, requested_model, mode, status, \
         auction_id, agent_id, agent_slug, owner_id, clearing_price, agent_cost, call_fee, \
         win_fee, total_cost, input_tokens, output_tokens, latency_ms, output, error, \
         created_at, finished_at, instance_id, api_key_id, batch_line_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
         ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
    )?
    .execute(params![
        job.id.as_bytes(),
        job.caller.0.as_bytes(),
        job.kind.as_str(),
        job.category,
        job.requested_model,
        job.mode,
        outcome.status.as_str(),
        job.auction_id.as_bytes(),
        served.map(|s| s.agent_id.as_bytes().to_vec()),
        served.map(|s| s.agent_slug.as_str()),
        served.map(|s| s.owner.0.as_bytes().to_vec()),
        outcome.clearing_price.map(MicroCredits::micros),
        outcome.agent_cost.micros(),
        outcome.call_fee.micros(),
        outcome.win_fee.micros(),
        outcome.total_cost.micros(),
        count(outcome.input_tokens),
        count(outcome.output_tokens),
        count(outcome.latency_ms),
        outcome.output,
        outcome.error,
        time_text(job.created_at),
        time_text(outcome.finished_at),
        job.instance.map(|id| id.as_bytes().to_vec()),
        job.api_key.map(|id| id.as_bytes().to_vec()),
        job.batch_line.map(|id| id.as_bytes().to_vec()),
    ])?;
    if let Some(key) = job.api_key {
        let (delivered, spent) = figures::usage_of(outcome);
        let hour = figures::hour_of(outcome.finished_at);
        add_up(rollups.keys.entry((key, hour)).or_default(), [1, delivered, spent]);
    }
    let auction = &unit.auction;
    tx.prepare_cached(
        "INSERT INTO auctions (id, job_id, caller_id, category, winner_agent_id, \
         clearing_price, record, record_lz4, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', ?7, ?8)",
    )?
    .execute(params![
        auction.id.as_bytes(),
        job.id.as_bytes(),
        job.caller.0.as_bytes(),
        auction.category,
        auction.winner.map(|id| id.as_bytes().to_vec()),
        auction.clearing_price.map(MicroCredits::micros),
        unit.packed_record,
        time_text(job.created_at),
    ])?;
    let hour = figures::hour_of(job.created_at);
    for (agent, entered, won, bid, price) in figures::entries_of(&auction.entrants) {
        let key = (agent, auction.category.clone(), hour);
        add_up(rollups.auctions.entry(key).or_default(), [entered, won, bid, price]);
    }
    let mut insert_attempt = tx.prepare_cached(
        "INSERT INTO job_attempts (job_id, rank, agent_id, agent_slug, price, outcome, \
         http_status, error_code, latency_ms, started_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for attempt in &outcome.attempts {
        insert_attempt.execute(params![
            job.id.as_bytes(),
            attempt.rank,
            attempt.agent_id.as_bytes(),
            attempt.agent_slug,
            attempt.price.micros(),
            attempt.outcome,
            attempt.http_status,
            attempt.error_code,
            i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX),
            time_text(attempt.started_at),
        ])?;
    }
    let after = write_reputation(tx, &unit.reputation)?;
    for (key, tally) in figures::service_of(outcome, &after) {
        rollups.service.entry(key).or_default().add(&tally);
    }
    Ok(())
}

/// Folds each attempt into its agent's evidence, read and written inside this transaction;
/// returns each agent's new stats.
fn write_reputation(
    tx: &Connection,
    updates: &[ReputationUpdate],
) -> Result<BTreeMap<Uuid, ReputationStats>, RegistryError> {
    let mut touched: BTreeMap<Uuid, ReputationStats> = BTreeMap::new();
    for update in updates {
        let current = match touched.get(&update.agent) {
            Some(stats) => *stats,
            None => read_reputation(tx, update.agent)?,
        };
        let next =
            current.record(update.outcome, update.latency_ms, update.now_ms, update.half_life_ms);
        touched.insert(update.agent, next);
    }
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut statement = tx.prepare_cached(
        "UPDATE agent_reputation SET successes = ?2, failures = ?3, updated_at_ms = ?4, \
         latency_ewma_ms = ?5, latency_p95_ms = ?6, total_successes = ?7, total_errors = ?8, \
         total_timeouts = ?9, total_invalid = ?10 WHERE agent_id = ?1",
    )?;
    for (agent, stats) in &touched {
        statement.execute(params![
            agent.as_bytes(),
            stats.successes,
            stats.failures,
            stats.updated_at_ms,
            stats.latency_ewma_ms,
            stats.latency_p95_ms,
            count(stats.total_successes),
            count(stats.total_errors),
            count(stats.total_timeouts),
            count(stats.total_invalid),
        ])?;
    }
    Ok(touched)
}

fn read_reputation(tx: &Connection, agent: Uuid) -> Result<ReputationStats, RegistryError> {
    let row = tx
        .prepare_cached(
            "SELECT successes, failures, updated_at_ms, latency_ewma_ms, latency_p95_ms, \
             total_successes, total_errors, total_timeouts, total_invalid \
             FROM agent_reputation WHERE agent_id = ?1",
        )?
        .query_row(params![agent.as_bytes()], |row| {
            Ok(agent_reputation::Model {
                agent_id: agent,
                successes: row.get(0)?,
                failures: row.get(1)?,
                updated_at_ms: row.get(2)?,
                latency_ewma_ms: row.get(3)?,
                latency_p95_ms: row.get(4)?,
                total_successes: row.get(5)?,
                total_errors: row.get(6)?,
                total_timeouts: row.get(7)?,
                total_invalid: row.get(8)?,
            })
        })
        .optional()?;
    row.map(reputation_stats).ok_or(RegistryError::NotFound { what: "agent" })
}

/// The transfer, its entries and each leg's balance change. A wallet that would go below zero
/// is refused here too, as a last line: the book has already decided that it cannot.
fn write_transfer(
    tx: &Connection,
    transfer: &TransferRows,
    rollups: &mut Rollups,
) -> Result<(), RegistryError> {
    let mut total: i64 = 0;
    for (_, amount) in &transfer.legs {
        total = total.checked_add(*amount).ok_or(RegistryError::Overflow)?;
    }
    if total != 0 {
        return Err(RegistryError::Unbalanced(format!("{} legs sum to {total}", transfer.kind)));
    }
    let transfer_id = Uuid::now_v7();
    let now = time_text(transfer.now);
    let job_id = transfer.job_id.map(|id| id.as_bytes().to_vec());
    tx.prepare_cached(
        "INSERT INTO transfers (id, kind, idempotency_key, job_id, memo, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        transfer_id.as_bytes(),
        transfer.kind,
        transfer.key,
        job_id,
        transfer.memo,
        now
    ])?;
    let mut entry = tx.prepare_cached(
        "INSERT INTO ledger_entries (transfer_id, account_id, amount, kind, job_id, memo, \
         created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut balance = tx.prepare_cached(
        "UPDATE accounts SET balance = balance + ?2 \
         WHERE id = ?1 AND (kind <> 'user' OR balance + ?2 >= 0)",
    )?;
    for (account, amount) in transfer.legs.iter().filter(|(_, amount)| *amount != 0) {
        entry.execute(params![
            transfer_id.as_bytes(),
            account.as_bytes(),
            amount,
            transfer.kind,
            job_id,
            transfer.memo,
            now
        ])?;
        if balance.execute(params![account.as_bytes(), amount])? != 1 {
            return Err(RegistryError::AccountCannotCover {
                account: *account,
                amount: MicroCredits::from_micros(-amount),
            });
        }
    }
    if transfer.kind == CAPTURE {
        let hour = figures::hour_of(transfer.now);
        for (account, spent, earned) in figures::flows_of(&transfer.legs) {
            let flow = rollups.flows.entry((account, hour)).or_default();
            *flow = (flow.0.saturating_add(spent), flow.1.saturating_add(earned));
        }
    }
    Ok(())
}

/// A time as sqlx stores it in SQLite, so that the pool reads it back and compares it alike.
fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn uuid_of(bytes: &[u8]) -> Result<Uuid, RegistryError> {
    Uuid::from_slice(bytes).map_err(|err| RegistryError::Storage(format!("a stored id: {err}")))
}
