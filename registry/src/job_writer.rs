//! The job path's writer: a job's two write transactions in as few round trips as the
//! database allows, and many jobs in one transaction when they arrive together.
//!
//! On a SQLite file the writer keeps one connection that nothing else uses, owned by one task
//! that commits **batches**: whatever jobs are waiting when it is free (up to 64) go into one
//! `BEGIN IMMEDIATE` transaction, whose statements are sent sealed (see `script`) in two
//! hand-offs to sqlx's worker thread: a read (the reputation and holds the finishing jobs
//! need) and the writes. Under load, SQLite's one write lock is taken once per batch instead of
//! twice per job. The transaction is a sea-orm `DatabaseTransaction`, which holds its
//! connection from `BEGIN` to `COMMIT` or `ROLLBACK`: the pool cannot recycle the connection
//! between the read and the writes (sqlx closes a connection past its lifetime when it is
//! returned, which would end the transaction and leave the writes to run outside it; a test
//! recycles it at every checkout).
//!
//! Anything short of a clean commit is rolled back. A failed batch is retried job by job; a
//! job that still cannot commit (a hold the payer cannot cover, a hold already settled, any
//! error) goes down the pooled path of `jobs`, which decides it and names the error. So the
//! paths cannot disagree: the sealed one only ever commits what the pooled one would have
//! committed without complaint. On Postgres, and on in-memory SQLite (a second connection
//! would see another database), the writer is the pooled path.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, FromQueryResult, QueryFilter, QueryTrait, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::RegistryError;
use crate::agents::{fold_reputation, reputation_rows_query};
use crate::database::{Backend, connect_with_lifetime, sqlite_write_gate};
use crate::entity::{agent_reputation, holds};
use crate::jobs::{
    self, AuctionEntry, JobOutcome, NewJob, ReputationUpdate, Settlement, add_close_job, add_job,
};
use crate::ledger::{self, HoldRequest};
use crate::script::Script;

/// The most jobs one batch commits.
const MAX_BATCH: usize = 64;

/// Writes jobs as they open and finish. Cheap to share behind the app state.
pub struct JobWriter {
    db: DatabaseConnection,
    /// SQLite files only: the queue of the task that owns the sealed path's connection.
    batches: Option<mpsc::UnboundedSender<Unit>>,
    counts: Arc<Counters>,
}

impl std::fmt::Debug for JobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWriter").field("sealed", &self.batches.is_some()).finish()
    }
}

#[derive(Default)]
struct Counters {
    sealed: AtomicU64,
    pooled: AtomicU64,
    batches: AtomicU64,
}

/// How a writer's transactions went: committed sealed, or through the pooled path (on
/// Postgres always; on SQLite after a refusal or an error); and how many sealed commits it
/// took (fewer than `sealed` when jobs shared a batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterCounts {
    pub sealed: u64,
    pub pooled: u64,
    pub batches: u64,
}

/// One job's write, queued for the batching task.
struct Unit {
    work: Work,
    /// `None`: committed. `Some`: not committed; the pooled path must take it.
    done: oneshot::Sender<Option<Work>>,
}

enum Work {
    Open {
        job: NewJob,
        auction: AuctionEntry,
        hold: Option<(HoldRequest, Uuid)>,
    },
    Finish {
        job_id: Uuid,
        outcome: JobOutcome,
        settlement: Settlement,
        reputation: Vec<ReputationUpdate>,
    },
}

impl JobWriter {
    /// A writer for `db`, which was opened from `url`. Call inside a Tokio runtime: on a
    /// SQLite file it spawns the batching task there.
    pub async fn new(db: DatabaseConnection, url: &str) -> Result<JobWriter, DbErr> {
        JobWriter::with_connection_lifetime(db, url, None).await
    }

    /// A writer whose own connection the pool replaces once it is older than `lifetime`
    /// (`None`: sqlx's default, 30 minutes). Tests pass a nanosecond to put a new connection
    /// under every checkout.
    #[doc(hidden)]
    pub async fn with_connection_lifetime(
        db: DatabaseConnection,
        url: &str,
        lifetime: Option<std::time::Duration>,
    ) -> Result<JobWriter, DbErr> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let counts = Arc::new(Counters::default());
        let batches = match Backend::of_url(url) {
            Some(Backend::Sqlite) if !in_memory => {
                let own = connect_with_lifetime(url, Some(1), lifetime).await?;
                let (queue, waiting) = mpsc::unbounded_channel();
                tokio::spawn(run_batches(own, waiting, Arc::clone(&counts)));
                Some(queue)
            }
            _ => None,
        };
        Ok(JobWriter { db, batches, counts })
    }

    /// How many transactions went each way so far.
    pub fn counts(&self) -> WriterCounts {
        WriterCounts {
            sealed: self.counts.sealed.load(Ordering::Relaxed),
            pooled: self.counts.pooled.load(Ordering::Relaxed),
            batches: self.counts.batches.load(Ordering::Relaxed),
        }
    }

    /// `jobs::open_job_with_hold`, sealed where it can be.
    pub async fn open(
        &self,
        job: NewJob,
        auction: AuctionEntry,
        hold: Option<(HoldRequest, Uuid)>,
    ) -> Result<(), RegistryError> {
        self.write(Work::Open { job, auction, hold }).await
    }

    /// `jobs::finish_job`, sealed where it can be.
    pub async fn finish(
        &self,
        job_id: Uuid,
        outcome: JobOutcome,
        settlement: Settlement,
        reputation: Vec<ReputationUpdate>,
    ) -> Result<(), RegistryError> {
        self.write(Work::Finish { job_id, outcome, settlement, reputation }).await
    }

    /// Commits `work` sealed, or else through the pooled path.
    async fn write(&self, work: Work) -> Result<(), RegistryError> {
        match self.sealed(work).await? {
            None => Ok(()),
            Some(Work::Open { job, auction, hold }) => {
                jobs::open_job_with_hold(&self.db, job, auction, hold).await
            }
            Some(Work::Finish { job_id, outcome, settlement, reputation }) => {
                jobs::finish_job(&self.db, job_id, outcome, settlement, reputation).await
            }
        }
    }

    /// Queues `work` for a sealed commit. `None` when it committed; otherwise the work comes
    /// back for the pooled path.
    async fn sealed(&self, work: Work) -> Result<Option<Work>, RegistryError> {
        let Some(queue) = &self.batches else {
            self.counts.pooled.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(work));
        };
        let (done, outcome) = oneshot::channel();
        if let Err(mpsc::error::SendError(unit)) = queue.send(Unit { work, done }) {
            self.counts.pooled.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(unit.work));
        }
        match outcome.await {
            Ok(None) => Ok(None),
            Ok(Some(work)) => {
                self.counts.pooled.fetch_add(1, Ordering::Relaxed);
                Ok(Some(work))
            }
            // The task answers every unit it takes, so this is its runtime shutting down in
            // the middle of a batch: whether the batch committed is unknown, so say so.
            Err(_) => Err(RegistryError::Database(DbErr::Custom(
                "the job writer stopped during a write".to_owned(),
            ))),
        }
    }
}

/// The batching task: takes whatever is waiting, commits it, answers every unit.
async fn run_batches(
    own: DatabaseConnection,
    mut waiting: mpsc::UnboundedReceiver<Unit>,
    counts: Arc<Counters>,
) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(unit) => batch.push(unit),
                Err(_) => break,
            }
        }
        let _gate = sqlite_write_gate().await;
        let committed = match commit(&own, &batch, &counts).await {
            Ok(committed) => committed,
            Err(err) => {
                tracing::debug!(%err, jobs = batch.len(), "sealed batch rolled back");
                // One by one, so that one refusal does not send its neighbours to the pool.
                let mut committed = Vec::with_capacity(batch.len());
                for unit in &batch {
                    let alone = std::slice::from_ref(unit);
                    match commit(&own, alone, &counts).await {
                        Ok(done) => committed.push(done.first().copied().unwrap_or(false)),
                        Err(err) => {
                            tracing::debug!(%err, "sealed job write fell back");
                            committed.push(false);
                        }
                    }
                }
                committed
            }
        };
        for (unit, committed) in batch.into_iter().zip(committed) {
            if committed {
                counts.sealed.fetch_add(1, Ordering::Relaxed);
            }
            let _ = unit.done.send(if committed { None } else { Some(unit.work) });
        }
    }
}

/// Commits `batch` in one transaction: which of its units are in it. A unit left out (its
/// hold is not active, or it cannot be staged) must take the pooled path. On an error nothing
/// is committed: the transaction is rolled back.
async fn commit(
    own: &DatabaseConnection,
    batch: &[Unit],
    counts: &Counters,
) -> Result<Vec<bool>, RegistryError> {
    let immediate = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    };
    let txn = own.begin_with_options(immediate).await?;
    match stage_and_write(&txn, batch).await {
        Ok(included) if included.contains(&true) => {
            txn.commit().await?;
            counts.batches.fetch_add(1, Ordering::Relaxed);
            Ok(included)
        }
        Ok(included) => {
            txn.rollback().await?;
            Ok(included)
        }
        Err(err) => {
            // The error is the one to report; a failed rollback also ends the transaction
            // (the connection is closed).
            let _ = txn.rollback().await;
            Err(err)
        }
    }
}

/// Inside `txn`: reads what the batch needs, stages each unit that can be, and sends the
/// staged writes. Which units are in.
async fn stage_and_write(
    txn: &DatabaseTransaction,
    batch: &[Unit],
) -> Result<Vec<bool>, RegistryError> {
    // The read: the reputation of every agent tried and the hold of every finishing job.
    let mut updates: Vec<ReputationUpdate> = Vec::new();
    let mut finishing = BTreeSet::new();
    for unit in batch {
        if let Work::Finish { job_id, settlement, reputation, .. } = &unit.work {
            updates.extend_from_slice(reputation);
            if !matches!(settlement, Settlement::Nothing) {
                finishing.insert(*job_id);
            }
        }
    }
    let mut read = Script::new(DbBackend::Sqlite);
    if !updates.is_empty() {
        read.push(&reputation_rows_query(&updates).into_query());
    }
    if !finishing.is_empty() {
        read.push(
            &holds::Entity::find().filter(holds::Column::JobId.is_in(finishing)).into_query(),
        );
    }
    let mut reputation_rows = Vec::new();
    let mut holds_by_job = HashMap::new();
    let rows = if read.is_empty() { Vec::new() } else { txn.query_all_raw(read.joined()).await? };
    for row in rows {
        // Only a hold has a `job_id` column.
        if row.try_get::<Uuid>("", "job_id").is_ok() {
            let hold = holds::Model::from_query_result(&row, "")?;
            holds_by_job.insert(hold.job_id, hold);
        } else {
            reputation_rows.push(agent_reputation::Model::from_query_result(&row, "")?);
        }
    }

    // The writes.
    let mut script = Script::new(DbBackend::Sqlite);
    let mut included = Vec::with_capacity(batch.len());
    let mut folded = Vec::new();
    for unit in batch {
        // Each unit's statements join the batch only if all of them could be staged.
        let mut unit_script = Script::new(DbBackend::Sqlite);
        let staged = match &unit.work {
            Work::Open { job, auction, hold } => {
                add_job(&mut unit_script, job.clone(), auction.clone());
                match hold {
                    Some((request, hold_id)) => {
                        ledger::add_hold(&mut unit_script, request, *hold_id, job.created_at)
                            .is_ok()
                    }
                    None => true,
                }
            }
            Work::Finish { job_id, outcome, settlement, reputation } => {
                let active = holds_by_job.get(job_id).filter(|hold| ledger::hold_is_active(hold));
                let staged = match (settlement, active) {
                    (Settlement::Nothing, _) => true,
                    (Settlement::Capture(capture), Some(hold)) => {
                        ledger::add_capture_of_active_hold(
                            &mut unit_script,
                            hold,
                            capture.clone(),
                            outcome.finished_at,
                        )
                        .is_ok()
                    }
                    (Settlement::Release, Some(hold)) => {
                        ledger::add_release_of_active_hold(
                            &mut unit_script,
                            hold,
                            outcome.finished_at,
                        );
                        true
                    }
                    (Settlement::Capture(_) | Settlement::Release, None) => false,
                };
                if staged {
                    add_close_job(&mut unit_script, *job_id, outcome);
                    folded.extend_from_slice(reputation);
                }
                staged
            }
        };
        if staged {
            script.append(unit_script);
        }
        included.push(staged);
    }
    if included.contains(&true) {
        fold_reputation(&mut script, reputation_rows, &folded)?;
        txn.execute_raw(script.sealed(false)).await?;
    }
    Ok(included)
}
