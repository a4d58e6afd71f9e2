//! The job path's writer: a job's two write transactions in as few round trips as the
//! database allows.
//!
//! On a SQLite file the writer keeps one connection that nothing else uses, and sends each
//! transaction sealed (see `script`): opening a job (its record, its auction, its hold) is one
//! hand-off to sqlx's worker thread, `BEGIN` to `COMMIT`; finishing one is two, a read (the
//! agents' reputation and the hold) and the writes. The pooled path takes six and five. The
//! connection being its own is what makes this safe: the `ROLLBACK` after a failed script
//! reaches the transaction the script began.
//!
//! Anything short of a clean commit (a hold the payer cannot cover, a hold already settled,
//! any error) is rolled back and the job goes down the pooled path of `jobs`, which decides it
//! and names the error. So the two paths cannot disagree: the sealed one only ever commits
//! what the pooled one would have committed without complaint. On Postgres, and on in-memory
//! SQLite (a second connection would see another database), the writer is the pooled path.

use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    FromQueryResult, QueryFilter, QueryTrait, Statement,
};
use uuid::Uuid;

use crate::RegistryError;
use crate::agents::{fold_reputation, reputation_rows_query};
use crate::database::{Backend, connect, sqlite_write_gate};
use crate::entity::{agent_reputation, holds};
use crate::jobs::{
    self, AuctionEntry, JobOutcome, NewJob, ReputationUpdate, Settlement, add_close_job, add_job,
};
use crate::ledger::{self, HoldRequest};
use crate::script::Script;

/// Writes jobs as they open and finish. Cheap to share behind the app state.
pub struct JobWriter {
    db: DatabaseConnection,
    /// SQLite files only: the one connection of the sealed path.
    own: Option<DatabaseConnection>,
    sealed: AtomicU64,
    pooled: AtomicU64,
}

/// How a writer's transactions went: committed sealed, or through the pooled path (on
/// Postgres always; on SQLite after a refusal or an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterCounts {
    pub sealed: u64,
    pub pooled: u64,
}

impl std::fmt::Debug for JobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWriter").field("sealed", &self.own.is_some()).finish()
    }
}

impl JobWriter {
    /// A writer for `db`, which was opened from `url`.
    pub async fn new(db: DatabaseConnection, url: &str) -> Result<JobWriter, DbErr> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let own = match Backend::of_url(url) {
            Some(Backend::Sqlite) if !in_memory => Some(connect(url, Some(1)).await?),
            _ => None,
        };
        Ok(JobWriter { db, own, sealed: AtomicU64::new(0), pooled: AtomicU64::new(0) })
    }

    /// How many transactions went each way so far.
    pub fn counts(&self) -> WriterCounts {
        WriterCounts {
            sealed: self.sealed.load(Ordering::Relaxed),
            pooled: self.pooled.load(Ordering::Relaxed),
        }
    }

    fn count(&self, sealed: bool) {
        let counter = if sealed { &self.sealed } else { &self.pooled };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `jobs::open_job_with_hold`, sealed where it can be.
    pub async fn open(
        &self,
        job: NewJob,
        auction: AuctionEntry,
        hold: Option<(HoldRequest, Uuid)>,
    ) -> Result<(), RegistryError> {
        if let Some(own) = &self.own {
            let _gate = sqlite_write_gate().await;
            let mut script = Script::new(DbBackend::Sqlite);
            script.push_statement(begin());
            add_job(&mut script, job.clone(), auction.clone());
            let staged = match &hold {
                Some((request, hold_id)) => {
                    ledger::add_hold(&mut script, request, *hold_id, job.created_at).is_ok()
                }
                None => true,
            };
            if staged {
                match own.execute_raw(script.sealed(true)).await {
                    Ok(_) => {
                        self.count(true);
                        return Ok(());
                    }
                    Err(err) => tracing::debug!(%err, "sealed job open fell back"),
                }
            }
            roll_back(own).await;
        }
        self.count(false);
        jobs::open_job_with_hold(&self.db, job, auction, hold).await
    }

    /// `jobs::finish_job`, sealed where it can be.
    pub async fn finish(
        &self,
        job_id: Uuid,
        outcome: JobOutcome,
        settlement: Settlement,
        reputation: Vec<ReputationUpdate>,
    ) -> Result<(), RegistryError> {
        if let Some(own) = &self.own {
            let _gate = sqlite_write_gate().await;
            match finish_sealed(own, job_id, &outcome, &settlement, &reputation).await {
                Ok(true) => {
                    self.count(true);
                    return Ok(());
                }
                Ok(false) => {}
                Err(err) => tracing::debug!(%err, "sealed job finish fell back"),
            }
            roll_back(own).await;
        }
        self.count(false);
        jobs::finish_job(&self.db, job_id, outcome, settlement, reputation).await
    }
}

/// Finishes a job on the writer's own connection. `Ok(false)`: nothing committed, and the
/// pooled path must decide (the hold is missing or already settled).
async fn finish_sealed(
    own: &DatabaseConnection,
    job_id: Uuid,
    outcome: &JobOutcome,
    settlement: &Settlement,
    reputation: &[ReputationUpdate],
) -> Result<bool, RegistryError> {
    let mut read = Script::new(DbBackend::Sqlite);
    read.push_statement(begin());
    if !reputation.is_empty() {
        read.push(&reputation_rows_query(reputation).into_query());
    }
    if !matches!(settlement, Settlement::Nothing) {
        read.push(&holds::Entity::find().filter(holds::Column::JobId.eq(job_id)).into_query());
    }
    let mut reputation_rows = Vec::new();
    let mut hold = None;
    for row in own.query_all_raw(read.joined()).await? {
        // Only the hold has a `job_id` column.
        if row.try_get::<Uuid>("", "job_id").is_ok() {
            hold = Some(holds::Model::from_query_result(&row, "")?);
        } else {
            reputation_rows.push(agent_reputation::Model::from_query_result(&row, "")?);
        }
    }
    let mut script = Script::new(DbBackend::Sqlite);
    fold_reputation(&mut script, reputation_rows, reputation)?;
    let active = hold.filter(ledger::hold_is_active);
    match (settlement, &active) {
        (Settlement::Nothing, _) => {}
        (Settlement::Capture(capture), Some(hold)) => {
            ledger::add_capture_of_active_hold(
                &mut script,
                hold,
                capture.clone(),
                outcome.finished_at,
            )?;
        }
        (Settlement::Release, Some(hold)) => {
            ledger::add_release_of_active_hold(&mut script, hold, outcome.finished_at);
        }
        (Settlement::Capture(_) | Settlement::Release, None) => return Ok(false),
    }
    add_close_job(&mut script, job_id, outcome);
    own.execute_raw(script.sealed(true)).await?;
    Ok(true)
}

fn begin() -> Statement {
    Statement::from_string(DbBackend::Sqlite, "BEGIN IMMEDIATE")
}

/// Ends whatever transaction a failed script left open on the writer's connection. There may
/// be none (the script failed at `BEGIN`), so an error here is expected and ignored.
async fn roll_back(own: &DatabaseConnection) {
    let _ = own.execute_unprepared("ROLLBACK").await;
}
