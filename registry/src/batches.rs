//! The Batch API's durable state: uploaded files, batches and their lines.
//!
//! A batch is cut into lines at creation (`batch_lines`, one row per input line), and every
//! line is worked on its own: a worker *claims* a line with a lease (one conditional update,
//! so two workers, in one process or two, never hold the same line), runs it as an ordinary
//! job and records the response or the error. A worker renews its leases while it runs; a
//! lease that lapses (the worker died) lets any worker claim the line again.
//!
//! Exactly once, for money: a line's job names the line (`jobs.batch_line_id`), and the
//! database keeps at most one *delivered* job per line (a partial unique index), so a line
//! run again after a crash or a lapsed lease cannot be charged twice. A worker that claims a
//! line a second time first asks whether an earlier claim already delivered it
//! ([`delivered_job`]) and adopts that job instead of running the line again.
//!
//! One hold for the whole batch: creating a batch reserves the most its lines may cost
//! (each line's share on its row, `reserve`), and the share stays reserved (`reserve_held`)
//! until it moves into the line's job hold ([`draw_share`], in the transaction that places
//! that hold) or is freed because the line ended without one (cancelled, expired, or failed
//! before any hold). Each such change is one conditional update on the line, so a share is
//! drawn or freed exactly once. Where the database is the authority for money ([`HeldIn`]),
//! the wallet's `held` changes in the same transaction; on a SQLite file the bank changes its
//! book after the commit, from what these functions return.
//!
//! Absent on purpose: any ledger entry. Reading, listing, cancelling or expiring a batch
//! moves no credits; only the lines' jobs do, through the bank.

use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set,
};
use uuid::Uuid;

use auction_engine::MicroCredits;

use crate::database::begin_write;
use crate::entity::{batch_bids, batch_lines, batches, files, jobs};
use crate::jobs::JobStatus;
use crate::ledger;
use crate::{RegistryError, UserId};

/// Where a wallet's reservations are kept, so the functions that take or free a batch's
/// reservation know whether to change `accounts.held` themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldIn {
    /// In the database (Postgres, an in-memory SQLite): changed in the same transaction.
    Database,
    /// In the bank's book (a SQLite file): the bank applies what is returned.
    Book,
}

/// Reservations freed by a change: `(wallet, micro-credits)`, one entry per wallet.
pub type Freed = Vec<(UserId, i64)>;

/// The most lines a batch may have (OpenAI's limit).
pub const MAX_LINES: usize = 50_000;

/// A batch's status, as OpenAI names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchStatus {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Validating => "validating",
            BatchStatus::Failed => "failed",
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Finalizing => "finalizing",
            BatchStatus::Completed => "completed",
            BatchStatus::Expired => "expired",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Result<BatchStatus, RegistryError> {
        [
            BatchStatus::Validating,
            BatchStatus::Failed,
            BatchStatus::InProgress,
            BatchStatus::Finalizing,
            BatchStatus::Completed,
            BatchStatus::Expired,
            BatchStatus::Cancelling,
            BatchStatus::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
        .ok_or_else(|| RegistryError::Storage(format!("unknown batch status `{text}`")))
    }
}

/// Where a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineState {
    /// Waiting for a worker.
    Pending,
    /// Claimed by a worker whose lease runs until `lease_until`.
    Running,
    /// Answered: the response is in the output file (an agent delivered).
    Done,
    /// Ended without a delivery: the error is in the error file.
    Failed,
    /// The batch was cancelled before the line started.
    Cancelled,
    /// The batch expired before the line started (`batch_expired`).
    Expired,
}

impl LineState {
    pub fn as_str(self) -> &'static str {
        match self {
            LineState::Pending => "pending",
            LineState::Running => "running",
            LineState::Done => "done",
            LineState::Failed => "failed",
            LineState::Cancelled => "cancelled",
            LineState::Expired => "expired",
        }
    }
}

/// An uploaded file, without its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub id: Uuid,
    pub owner: UserId,
    pub purpose: String,
    pub filename: String,
    pub bytes: i64,
    pub lines: i64,
    pub created_at_ms: i64,
}

/// A file to store: `content` is JSONL already checked line by line.
#[derive(Clone, Debug)]
pub struct NewFile {
    pub id: Uuid,
    pub owner: UserId,
    pub filename: String,
    pub content: String,
    pub lines: i64,
    pub created_at_ms: i64,
}

/// Stores an uploaded batch input file.
pub async fn insert_file(
    db: &DatabaseConnection,
    file: NewFile,
) -> Result<FileInfo, RegistryError> {
    let bytes = i64::try_from(file.content.len()).map_err(|_| RegistryError::Overflow)?;
    let info = FileInfo {
        id: file.id,
        owner: file.owner,
        purpose: "batch".into(),
        filename: file.filename.clone(),
        bytes,
        lines: file.lines,
        created_at_ms: file.created_at_ms,
    };
    files::ActiveModel {
        id: Set(file.id),
        owner_id: Set(file.owner.0),
        purpose: Set(info.purpose.clone()),
        filename: Set(file.filename),
        bytes: Set(bytes),
        lines: Set(file.lines),
        content: Set(file.content),
        created_at: Set(file.created_at_ms),
    }
    .insert(db)
    .await?;
    Ok(info)
}

/// The owner's file, without its content.
pub async fn find_file(
    db: &DatabaseConnection,
    owner: UserId,
    id: Uuid,
) -> Result<Option<FileInfo>, RegistryError> {
    let row = files::Entity::find_by_id(id)
        .select_only()
        .columns([
            files::Column::Id,
            files::Column::OwnerId,
            files::Column::Purpose,
            files::Column::Filename,
            files::Column::Bytes,
            files::Column::Lines,
            files::Column::CreatedAt,
        ])
        .filter(files::Column::OwnerId.eq(owner.0))
        .into_tuple::<(Uuid, Uuid, String, String, i64, i64, i64)>()
        .one(db)
        .await?;
    Ok(row.map(|(id, owner, purpose, filename, bytes, lines, created_at_ms)| FileInfo {
        id,
        owner: UserId(owner),
        purpose,
        filename,
        bytes,
        lines,
        created_at_ms,
    }))
}

/// The owner's file's content.
pub async fn file_content(
    db: &DatabaseConnection,
    owner: UserId,
    id: Uuid,
) -> Result<Option<String>, RegistryError> {
    Ok(files::Entity::find_by_id(id)
        .select_only()
        .column(files::Column::Content)
        .filter(files::Column::OwnerId.eq(owner.0))
        .into_tuple::<String>()
        .one(db)
        .await?)
}

/// Deletes the owner's file; `false` if there was none. A batch made from it keeps its
/// lines (they were copied at creation).
pub async fn delete_file(
    db: &DatabaseConnection,
    owner: UserId,
    id: Uuid,
) -> Result<bool, RegistryError> {
    let deleted = files::Entity::delete_many()
        .filter(files::Column::Id.eq(id))
        .filter(files::Column::OwnerId.eq(owner.0))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected == 1)
}

/// One line of a new batch.
#[derive(Clone, Debug)]
pub struct NewLine {
    pub custom_id: String,
    /// The request body, as JSON text.
    pub body: String,
    /// The most the line may cost (its max price plus the call fee), in micro-credits: its
    /// share of the batch's reservation.
    pub reserve: i64,
}

/// A batch to store: `InProgress` with its lines, or `Failed` with its errors (and no lines).
#[derive(Clone, Debug)]
pub struct NewBatch {
    pub id: Uuid,
    pub owner: UserId,
    pub api_key: Option<Uuid>,
    pub input_file: Uuid,
    pub endpoint: String,
    pub metadata: Option<String>,
    pub status: BatchStatus,
    /// OpenAI's `errors` object, as JSON text, for a batch that failed validation.
    pub errors: Option<String>,
    pub total: i64,
    /// What the lines may cost at most, in micro-credits: the batch's reservation, the sum
    /// of its lines' shares.
    pub reserved: i64,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// A batch auction: every line's category, and the deadline for bids.
    pub auction: Option<(String, i64)>,
    /// A batch-wide cap per line, in micro-credits.
    pub max_price: Option<i64>,
}

/// Lines are inserted in chunks: one statement may bind at most 32,766 values on SQLite.
const LINES_PER_INSERT: usize = 1_000;

/// Stores a batch and its lines in one transaction: a batch is there whole or not at all.
/// A batch in progress reserves `reserved` of its owner's credits: with [`HeldIn::Database`]
/// in that same transaction (`InsufficientCredits` when the wallet cannot cover it, and
/// nothing is stored); with [`HeldIn::Book`] the bank has reserved it already.
pub async fn insert_batch(
    db: &DatabaseConnection,
    batch: NewBatch,
    lines: Vec<NewLine>,
    held_in: HeldIn,
) -> Result<(), RegistryError> {
    let (tx, _gate) = begin_write(db).await?;
    let now = batch.created_at_ms;
    let in_progress = batch.status == BatchStatus::InProgress;
    if in_progress && held_in == HeldIn::Database {
        match ledger::change_held(&tx, batch.owner.0, batch.reserved).await {
            Ok(()) => {}
            Err(RegistryError::AccountCannotCover { .. }) => {
                let available = ledger::balance(&tx, batch.owner).await?.available;
                tx.rollback().await?;
                return Err(RegistryError::InsufficientCredits {
                    requested: MicroCredits::from_micros(batch.reserved),
                    available,
                });
            }
            Err(err) => return Err(err),
        }
    }
    batches::ActiveModel {
        id: Set(batch.id),
        owner_id: Set(batch.owner.0),
        api_key_id: Set(batch.api_key),
        input_file_id: Set(batch.input_file),
        endpoint: Set(batch.endpoint),
        completion_window: Set("24h".into()),
        status: Set(batch.status.as_str().into()),
        metadata: Set(batch.metadata),
        errors: Set(batch.errors),
        total: Set(batch.total),
        reserved: Set(batch.reserved),
        created_at: Set(now),
        in_progress_at: Set(in_progress.then_some(now)),
        expires_at: Set(batch.expires_at_ms),
        finalizing_at: Set(None),
        completed_at: Set(None),
        failed_at: Set((batch.status == BatchStatus::Failed).then_some(now)),
        expired_at: Set(None),
        cancelling_at: Set(None),
        cancelled_at: Set(None),
        category: Set(batch.auction.as_ref().map(|(category, _)| category.clone())),
        bidding_until: Set(batch.auction.as_ref().map(|(_, until)| *until)),
        awarded_at: Set(None),
        award: Set(None),
        max_price: Set(batch.max_price),
    }
    .insert(&tx)
    .await?;
    let mut number = 0_i64;
    let mut lines = lines.into_iter().peekable();
    while lines.peek().is_some() {
        let chunk: Vec<batch_lines::ActiveModel> = lines
            .by_ref()
            .take(LINES_PER_INSERT)
            .map(|line| {
                number += 1;
                batch_lines::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    batch_id: Set(batch.id),
                    line: Set(number),
                    custom_id: Set(line.custom_id),
                    body: Set(line.body),
                    state: Set(LineState::Pending.as_str().into()),
                    lease_owner: Set(None),
                    lease_until: Set(None),
                    claims: Set(0),
                    job_id: Set(None),
                    status_code: Set(None),
                    response: Set(None),
                    error_code: Set(None),
                    error_message: Set(None),
                    finished_at: Set(None),
                    agent_id: Set(None),
                    reserve: Set(line.reserve),
                    reserve_held: Set(in_progress),
                }
            })
            .collect();
        batch_lines::Entity::insert_many(chunk).exec(&tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// How a batch's lines stand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub total: i64,
    /// Lines an agent answered.
    pub completed: i64,
    /// Lines that ended without an answer (failed or expired).
    pub failed: i64,
    /// Lines a cancel ended before they started (in neither OpenAI count).
    pub cancelled: i64,
}

/// A batch as stored, with its line counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub id: Uuid,
    pub owner: UserId,
    pub input_file: Uuid,
    pub endpoint: String,
    pub completion_window: String,
    pub status: BatchStatus,
    pub metadata: Option<String>,
    pub errors: Option<String>,
    pub reserved: i64,
    pub created_at_ms: i64,
    pub in_progress_at_ms: Option<i64>,
    pub expires_at_ms: i64,
    pub finalizing_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
    pub failed_at_ms: Option<i64>,
    pub expired_at_ms: Option<i64>,
    pub cancelling_at_ms: Option<i64>,
    pub cancelled_at_ms: Option<i64>,
    pub counts: RequestCounts,
    /// A batch auction's deadline for bids, when it was awarded, and the award's record.
    pub bidding_until_ms: Option<i64>,
    pub awarded_at_ms: Option<i64>,
    pub award: Option<String>,
    /// A batch-wide cap per line, in micro-credits.
    pub max_price: Option<i64>,
    /// Whether any line is in the output file, and any in the error file.
    pub has_output: bool,
    pub has_errors: bool,
}

async fn counts_of(
    db: &DatabaseConnection,
    batch: &batches::Model,
) -> Result<(RequestCounts, bool, bool), RegistryError> {
    let by_state: Vec<(String, i64)> = batch_lines::Entity::find()
        .select_only()
        .column(batch_lines::Column::State)
        .column_as(batch_lines::Column::Id.count(), "n")
        .filter(batch_lines::Column::BatchId.eq(batch.id))
        .group_by(batch_lines::Column::State)
        .into_tuple()
        .all(db)
        .await?;
    let of = |state: LineState| {
        by_state.iter().find(|(s, _)| s == state.as_str()).map_or(0, |(_, n)| *n)
    };
    let errors = of(LineState::Failed) + of(LineState::Expired) + of(LineState::Cancelled);
    let counts = RequestCounts {
        total: batch.total,
        completed: of(LineState::Done),
        failed: of(LineState::Failed) + of(LineState::Expired),
        cancelled: of(LineState::Cancelled),
    };
    Ok((counts, counts.completed > 0, errors > 0))
}

async fn batch_of(db: &DatabaseConnection, row: batches::Model) -> Result<Batch, RegistryError> {
    let (counts, has_output, has_errors) = counts_of(db, &row).await?;
    Ok(Batch {
        id: row.id,
        owner: UserId(row.owner_id),
        input_file: row.input_file_id,
        endpoint: row.endpoint,
        completion_window: row.completion_window,
        status: BatchStatus::parse(&row.status)?,
        metadata: row.metadata,
        errors: row.errors,
        reserved: row.reserved,
        created_at_ms: row.created_at,
        in_progress_at_ms: row.in_progress_at,
        expires_at_ms: row.expires_at,
        finalizing_at_ms: row.finalizing_at,
        completed_at_ms: row.completed_at,
        failed_at_ms: row.failed_at,
        expired_at_ms: row.expired_at,
        cancelling_at_ms: row.cancelling_at,
        cancelled_at_ms: row.cancelled_at,
        counts,
        bidding_until_ms: row.bidding_until,
        awarded_at_ms: row.awarded_at,
        award: row.award,
        max_price: row.max_price,
        has_output,
        has_errors,
    })
}

/// The owner's batch.
pub async fn find_batch(
    db: &DatabaseConnection,
    owner: UserId,
    id: Uuid,
) -> Result<Option<Batch>, RegistryError> {
    let row = batches::Entity::find_by_id(id)
        .filter(batches::Column::OwnerId.eq(owner.0))
        .one(db)
        .await?;
    match row {
        Some(row) => Ok(Some(batch_of(db, row).await?)),
        None => Ok(None),
    }
}

/// The owner's batches, newest first, after the batch `after` (ids are time-ordered), at most
/// `limit`.
pub async fn list_batches(
    db: &DatabaseConnection,
    owner: UserId,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Batch>, RegistryError> {
    let mut query = batches::Entity::find().filter(batches::Column::OwnerId.eq(owner.0));
    if let Some(after) = after {
        query = query.filter(batches::Column::Id.lt(after));
    }
    let rows = query.order_by_desc(batches::Column::Id).limit(limit).all(db).await?;
    let mut listed = Vec::with_capacity(rows.len());
    for row in rows {
        listed.push(batch_of(db, row).await?);
    }
    Ok(listed)
}

/// Cancels the owner's batch: unstarted lines are cancelled at once, running lines finish,
/// then the batch is `cancelled`. Cancelling a batch that has ended, or is being cancelled,
/// changes nothing. `None` if the owner has no such batch.
///
/// The shares of the lines it cancels are freed in the same transaction ([`HeldIn`]); the
/// freed reservations, this batch's and any another batch's expiry freed, are returned.
pub async fn cancel_batch(
    db: &DatabaseConnection,
    owner: UserId,
    id: Uuid,
    now_ms: i64,
    held_in: HeldIn,
) -> Result<(Option<Batch>, Freed), RegistryError> {
    let (tx, gate) = begin_write(db).await?;
    let mut freed = Freed::new();
    let moved = batches::Entity::update_many()
        .col_expr(batches::Column::Status, Expr::value(BatchStatus::Cancelling.as_str()))
        .col_expr(batches::Column::CancellingAt, Expr::value(now_ms))
        .filter(batches::Column::Id.eq(id))
        .filter(batches::Column::OwnerId.eq(owner.0))
        .filter(
            batches::Column::Status
                .is_in([BatchStatus::Validating.as_str(), BatchStatus::InProgress.as_str()]),
        )
        .exec(&tx)
        .await?;
    if moved.rows_affected == 1 {
        let cancel = batch_lines::Entity::update_many()
            .col_expr(batch_lines::Column::State, Expr::value(LineState::Cancelled.as_str()))
            .col_expr(batch_lines::Column::ErrorCode, Expr::value("batch_cancelled"))
            .col_expr(
                batch_lines::Column::ErrorMessage,
                Expr::value("the batch was cancelled before this line started"),
            )
            .col_expr(batch_lines::Column::FinishedAt, Expr::value(now_ms))
            .filter(batch_lines::Column::BatchId.eq(id))
            .filter(batch_lines::Column::State.eq(LineState::Pending.as_str()));
        let amount = end_unstarted(&tx, cancel).await?;
        free(&tx, held_in, &mut freed, owner, amount).await?;
    }
    tx.commit().await?;
    drop(gate);
    freed.extend(close_finished(db, now_ms, held_in).await?.1);
    Ok((find_batch(db, owner, id).await?, freed))
}

/// Ends unstarted lines with `update` (which sets their state) and frees their shares in the
/// same statement. A pending line's share is always still held (only a claimed line's job
/// draws it), so the shares returned are exactly what these lines held. Returns their sum
/// per batch.
async fn end_unstarted(
    tx: &sea_orm::DatabaseTransaction,
    update: sea_orm::UpdateMany<batch_lines::Entity>,
) -> Result<Vec<(Uuid, i64)>, RegistryError> {
    use sea_orm::ConnectionTrait;
    let mut statement =
        update.col_expr(batch_lines::Column::ReserveHeld, Expr::value(false)).into_query();
    statement.returning(
        Query::returning().columns([batch_lines::Column::BatchId, batch_lines::Column::Reserve]),
    );
    let rows = tx.query_all(&statement).await?;
    let mut sums: Vec<(Uuid, i64)> = Vec::new();
    for row in rows {
        let batch: Uuid = row.try_get("", "batch_id")?;
        let reserve: i64 = row.try_get("", "reserve")?;
        match sums.iter_mut().find(|(id, _)| *id == batch) {
            Some((_, sum)) => *sum += reserve,
            None => sums.push((batch, reserve)),
        }
    }
    Ok(sums)
}

/// Frees `amount` of `owner`'s reservation: in `accounts.held` now, or noted for the book.
async fn free(
    tx: &sea_orm::DatabaseTransaction,
    held_in: HeldIn,
    freed: &mut Freed,
    owner: UserId,
    amount: impl IntoIterator<Item = (Uuid, i64)>,
) -> Result<(), RegistryError> {
    let total: i64 = amount.into_iter().map(|(_, sum)| sum).sum();
    if total == 0 {
        return Ok(());
    }
    if held_in == HeldIn::Database {
        ledger::change_held(tx, owner.0, -total).await?;
    }
    match freed.iter_mut().find(|(who, _)| *who == owner) {
        Some((_, sum)) => *sum += total,
        None => freed.push((owner, total)),
    }
    Ok(())
}

/// Moves a line's share of its batch's reservation out, once: its size if it was still held
/// (it now belongs to the job hold being placed in `txn`), 0 if it was drawn or freed before.
pub(crate) async fn draw_share(
    txn: &sea_orm::DatabaseTransaction,
    line: Uuid,
) -> Result<i64, RegistryError> {
    use sea_orm::ConnectionTrait;
    let mut statement = batch_lines::Entity::update_many()
        .col_expr(batch_lines::Column::ReserveHeld, Expr::value(false))
        .filter(batch_lines::Column::Id.eq(line))
        .filter(batch_lines::Column::ReserveHeld.eq(true))
        .into_query();
    statement.returning_col(batch_lines::Column::Reserve);
    match txn.query_one(&statement).await? {
        Some(row) => Ok(row.try_get("", "reserve")?),
        None => Ok(0),
    }
}

/// A line a worker holds, with what it needs to run it.
#[derive(Clone, Debug)]
pub struct ClaimedLine {
    pub id: Uuid,
    pub batch_id: Uuid,
    pub owner: UserId,
    pub api_key: Option<Uuid>,
    pub endpoint: String,
    pub custom_id: String,
    pub body: String,
    /// In a batch auction, the agent the line was awarded to.
    pub agent: Option<Uuid>,
    /// How many times the line has been claimed, this claim included: above 1, an earlier
    /// claim may have delivered it already.
    pub claims: i64,
    /// The line's share of the batch's reservation, if it was still held when claimed.
    pub share: Option<MicroCredits>,
}

/// Lines that are free to claim: pending, or running under a lease that has lapsed, in a
/// batch in progress.
fn claimable(now_ms: i64) -> Condition {
    Condition::any().add(batch_lines::Column::State.eq(LineState::Pending.as_str())).add(
        Condition::all()
            .add(batch_lines::Column::State.eq(LineState::Running.as_str()))
            .add(batch_lines::Column::LeaseUntil.lt(now_ms)),
    )
}

/// Claims up to `limit` lines for `worker` until `now_ms + lease_ms`, shared fairly between
/// the batches that have lines free, and never so many that a batch would have more than
/// `per_batch` lines running under live leases. Each batch's claim is one conditional update:
/// a line another worker claimed in the meantime is not taken (on Postgres the update
/// re-checks each row it locks). Two instances claiming at the same moment may together
/// exceed `per_batch` by one claim's worth; never a line twice.
pub async fn claim_lines(
    db: &DatabaseConnection,
    worker: Uuid,
    now_ms: i64,
    lease_ms: i64,
    limit: u64,
    per_batch: u64,
) -> Result<Vec<ClaimedLine>, RegistryError> {
    // A batch auction's lines wait for the award.
    let active = Query::select()
        .column(batches::Column::Id)
        .from(batches::Entity)
        .and_where(batches::Column::Status.eq(BatchStatus::InProgress.as_str()))
        .cond_where(
            Condition::any()
                .add(batches::Column::BiddingUntil.is_null())
                .add(batches::Column::AwardedAt.is_not_null()),
        )
        .to_owned();
    let with_free: Vec<Uuid> = batch_lines::Entity::find()
        .select_only()
        .column(batch_lines::Column::BatchId)
        .distinct()
        .filter(claimable(now_ms))
        .filter(batch_lines::Column::BatchId.in_subquery(active))
        .into_tuple()
        .all(db)
        .await?;
    let mut claimed = Vec::new();
    let mut remaining = limit;
    let count = with_free.len() as u64;
    for (idx, batch) in with_free.into_iter().enumerate() {
        if remaining == 0 {
            break;
        }
        let running_now = batch_lines::Entity::find()
            .filter(batch_lines::Column::BatchId.eq(batch))
            .filter(batch_lines::Column::State.eq(LineState::Running.as_str()))
            .filter(batch_lines::Column::LeaseUntil.gte(now_ms));
        let running: u64 = PaginatorTrait::count(running_now, db).await?;
        let share = remaining.div_ceil(count - idx as u64);
        let take = std::cmp::min(share, per_batch.saturating_sub(running));
        if take == 0 {
            continue;
        }
        let mut free = Query::select()
            .column(batch_lines::Column::Id)
            .from(batch_lines::Entity)
            .cond_where(claimable(now_ms))
            .and_where(batch_lines::Column::BatchId.eq(batch))
            .limit(take)
            .to_owned();
        // On Postgres, workers claiming at once pass over each other's rows instead of all
        // picking the same first ones and coming back with fewer (the update's re-check keeps
        // them apart either way). A SQLite file has one writer at a time: nothing to skip.
        if db.get_database_backend() == sea_orm::DbBackend::Postgres {
            free.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let lines = batch_lines::Entity::update_many()
            .col_expr(batch_lines::Column::State, Expr::value(LineState::Running.as_str()))
            .col_expr(batch_lines::Column::LeaseOwner, Expr::value(worker))
            .col_expr(batch_lines::Column::LeaseUntil, Expr::value(now_ms.saturating_add(lease_ms)))
            .col_expr(batch_lines::Column::Claims, Expr::col(batch_lines::Column::Claims).add(1))
            .filter(batch_lines::Column::Id.in_subquery(free))
            .filter(claimable(now_ms))
            .exec_with_returning(db)
            .await?;
        remaining = remaining.saturating_sub(lines.len() as u64);
        claimed.extend(lines);
    }
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let mut batch_ids: Vec<Uuid> = claimed.iter().map(|line| line.batch_id).collect();
    batch_ids.sort_unstable();
    batch_ids.dedup();
    let owners: Vec<(Uuid, Uuid, Option<Uuid>, String)> = batches::Entity::find()
        .select_only()
        .columns([
            batches::Column::Id,
            batches::Column::OwnerId,
            batches::Column::ApiKeyId,
            batches::Column::Endpoint,
        ])
        .filter(batches::Column::Id.is_in(batch_ids))
        .into_tuple()
        .all(db)
        .await?;
    let mut lines = Vec::with_capacity(claimed.len());
    for line in claimed {
        let Some((_, owner, api_key, endpoint)) = owners.iter().find(|b| b.0 == line.batch_id)
        else {
            continue;
        };
        lines.push(ClaimedLine {
            id: line.id,
            batch_id: line.batch_id,
            owner: UserId(*owner),
            api_key: *api_key,
            endpoint: endpoint.clone(),
            custom_id: line.custom_id,
            body: line.body,
            agent: line.agent_id,
            claims: line.claims,
            share: line.reserve_held.then_some(MicroCredits::from_micros(line.reserve)),
        });
    }
    Ok(lines)
}

/// Extends every lease `worker` holds to `now_ms + lease_ms`: a live worker keeps its lines.
pub async fn renew_leases(
    db: &DatabaseConnection,
    worker: Uuid,
    now_ms: i64,
    lease_ms: i64,
) -> Result<u64, RegistryError> {
    let renewed = batch_lines::Entity::update_many()
        .col_expr(batch_lines::Column::LeaseUntil, Expr::value(now_ms.saturating_add(lease_ms)))
        .filter(batch_lines::Column::LeaseOwner.eq(worker))
        .filter(batch_lines::Column::State.eq(LineState::Running.as_str()))
        .exec(db)
        .await?;
    Ok(renewed.rows_affected)
}

/// Whether a job for the line is still open in the database: on Postgres, the job of a
/// claim whose worker died (or stalled past its lease), until the reaper ends it. Its hold
/// still holds the line's share. (On a SQLite file open jobs live in memory only.)
pub async fn line_has_open_job(db: &DatabaseConnection, line: Uuid) -> Result<bool, RegistryError> {
    let open = jobs::Entity::find()
        .filter(jobs::Column::BatchLineId.eq(line))
        .filter(jobs::Column::Status.eq(JobStatus::Running.as_str()))
        .count(db)
        .await?;
    Ok(open > 0)
}

/// Gives a claimed line back without recording an end: nobody holds it, and any worker may
/// claim it again from `retry_at_ms`. For a line whose earlier job is still open, so that the
/// line runs again only once that job has ended and its hold is freed.
pub async fn defer_line(
    db: &DatabaseConnection,
    worker: Uuid,
    line: Uuid,
    retry_at_ms: i64,
) -> Result<bool, RegistryError> {
    let deferred = batch_lines::Entity::update_many()
        .col_expr(batch_lines::Column::LeaseOwner, Expr::value(Option::<Uuid>::None))
        .col_expr(batch_lines::Column::LeaseUntil, Expr::value(retry_at_ms))
        .filter(batch_lines::Column::Id.eq(line))
        .filter(batch_lines::Column::LeaseOwner.eq(worker))
        .filter(batch_lines::Column::State.eq(LineState::Running.as_str()))
        .exec(db)
        .await?;
    Ok(deferred.rows_affected == 1)
}

/// The job that delivered a line, if one did: `(job id, the job's stored view)`.
pub async fn delivered_job(
    db: &DatabaseConnection,
    line: Uuid,
) -> Result<Option<Uuid>, RegistryError> {
    Ok(jobs::Entity::find()
        .select_only()
        .column(jobs::Column::Id)
        .filter(jobs::Column::BatchLineId.eq(line))
        .filter(jobs::Column::Status.eq(JobStatus::Delivered.as_str()))
        .into_tuple::<Uuid>()
        .one(db)
        .await?)
}

/// How a line ended.
#[derive(Clone, Debug)]
pub enum LineEnd {
    /// An agent answered: the response body (JSON text) for the output file.
    Answered { job_id: Uuid, body: String },
    /// No answer: the HTTP status and error the same request would have had on its own.
    Refused { job_id: Option<Uuid>, status_code: u16, code: String, message: String },
}

/// What recording a line's end did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineRecorded {
    /// `false` if the worker no longer held the line (its lease lapsed and another worker
    /// took it, which will record it): nothing changed.
    pub recorded: bool,
    /// The line's share of the reservation, freed now because no job hold drew it.
    pub freed: i64,
}

/// Records how a line ended, if `worker` still holds it, and frees the line's share of the
/// batch's reservation if its job never drew it (in the same transaction, [`HeldIn`]).
pub async fn finish_line(
    db: &DatabaseConnection,
    worker: Uuid,
    line: &ClaimedLine,
    end: LineEnd,
    now_ms: i64,
    held_in: HeldIn,
) -> Result<LineRecorded, RegistryError> {
    let (state, job_id, status_code, response, code, message) = match end {
        LineEnd::Answered { job_id, body } => {
            (LineState::Done, Some(job_id), 200_i64, Some(body), None, None)
        }
        LineEnd::Refused { job_id, status_code, code, message } => {
            (LineState::Failed, job_id, i64::from(status_code), None, Some(code), Some(message))
        }
    };
    use sea_orm::ConnectionTrait;
    // One statement records the end and frees the share if no job drew it: `reserve` keeps
    // what the end freed (0 when a job hold drew the share), and the statement returns it.
    let mut statement = batch_lines::Entity::update_many()
        .col_expr(batch_lines::Column::State, Expr::value(state.as_str()))
        .col_expr(batch_lines::Column::JobId, Expr::value(job_id))
        .col_expr(batch_lines::Column::StatusCode, Expr::value(status_code))
        .col_expr(batch_lines::Column::Response, Expr::value(response))
        .col_expr(batch_lines::Column::ErrorCode, Expr::value(code))
        .col_expr(batch_lines::Column::ErrorMessage, Expr::value(message))
        .col_expr(batch_lines::Column::FinishedAt, Expr::value(now_ms))
        .col_expr(batch_lines::Column::LeaseOwner, Expr::value(Option::<Uuid>::None))
        .col_expr(
            batch_lines::Column::Reserve,
            sea_orm::sea_query::CaseStatement::new()
                .case(
                    Expr::col(batch_lines::Column::ReserveHeld).eq(true),
                    Expr::col(batch_lines::Column::Reserve),
                )
                .finally(0)
                .into(),
        )
        .col_expr(batch_lines::Column::ReserveHeld, Expr::value(false))
        .filter(batch_lines::Column::Id.eq(line.id))
        .filter(batch_lines::Column::LeaseOwner.eq(worker))
        .filter(batch_lines::Column::State.eq(LineState::Running.as_str()))
        .into_query();
    statement.returning_col(batch_lines::Column::Reserve);
    let freed_of = |row: Option<sea_orm::QueryResult>| -> Result<Option<i64>, RegistryError> {
        row.map(|row| row.try_get::<i64>("", "reserve")).transpose().map_err(Into::into)
    };
    let Some(freed) = (match held_in {
        // The book follows after the commit: one statement, no transaction.
        HeldIn::Book => freed_of(db.query_one(&statement).await?)?,
        HeldIn::Database => {
            let (tx, _gate) = begin_write(db).await?;
            let Some(freed) = freed_of(tx.query_one(&statement).await?)? else {
                tx.rollback().await?;
                return Ok(LineRecorded { recorded: false, freed: 0 });
            };
            ledger::change_held(&tx, line.owner.0, -freed).await?;
            tx.commit().await?;
            Some(freed)
        }
    }) else {
        return Ok(LineRecorded { recorded: false, freed: 0 });
    };
    Ok(LineRecorded { recorded: true, freed })
}

/// Moves batches on: unstarted lines of batches past their 24 hours expire (`batch_expired`);
/// a batch with no line pending or running ends (`completed`, `cancelled` or `expired`).
/// Conditional updates: two workers doing this at once do it once. Returns the batches ended.
///
/// Expired lines' shares are freed in the same transaction ([`HeldIn`]) and returned.
pub async fn close_finished(
    db: &DatabaseConnection,
    now_ms: i64,
    held_in: HeldIn,
) -> Result<(u64, Freed), RegistryError> {
    let (tx, _gate) = begin_write(db).await?;
    let mut freed = Freed::new();
    let overdue = Query::select()
        .column(batches::Column::Id)
        .from(batches::Entity)
        .and_where(batches::Column::Status.eq(BatchStatus::InProgress.as_str()))
        .and_where(batches::Column::ExpiresAt.lte(now_ms))
        .to_owned();
    let expire = batch_lines::Entity::update_many()
        .col_expr(batch_lines::Column::State, Expr::value(LineState::Expired.as_str()))
        .col_expr(batch_lines::Column::ErrorCode, Expr::value("batch_expired"))
        .col_expr(
            batch_lines::Column::ErrorMessage,
            Expr::value("the batch expired (24 h) before this line ran"),
        )
        .col_expr(batch_lines::Column::FinishedAt, Expr::value(now_ms))
        .filter(batch_lines::Column::State.eq(LineState::Pending.as_str()))
        .filter(batch_lines::Column::BatchId.in_subquery(overdue));
    for (batch, amount) in end_unstarted(&tx, expire).await? {
        let owner: Option<Uuid> = batches::Entity::find_by_id(batch)
            .select_only()
            .column(batches::Column::OwnerId)
            .into_tuple()
            .one(&tx)
            .await?;
        if let Some(owner) = owner {
            free(&tx, held_in, &mut freed, UserId(owner), [(batch, amount)]).await?;
        }
    }
    let unfinished = Query::select()
        .column(batch_lines::Column::BatchId)
        .from(batch_lines::Entity)
        .and_where(
            batch_lines::Column::State
                .is_in([LineState::Pending.as_str(), LineState::Running.as_str()]),
        )
        .to_owned();
    let mut ended = 0;
    for (from, to, stamp) in [
        (BatchStatus::Cancelling, BatchStatus::Cancelled, batches::Column::CancelledAt),
        (BatchStatus::InProgress, BatchStatus::Expired, batches::Column::ExpiredAt),
        (BatchStatus::InProgress, BatchStatus::Completed, batches::Column::CompletedAt),
    ] {
        let mut update = batches::Entity::update_many()
            .col_expr(batches::Column::Status, Expr::value(to.as_str()))
            .col_expr(batches::Column::FinalizingAt, Expr::value(now_ms))
            .col_expr(stamp, Expr::value(now_ms))
            .filter(batches::Column::Status.eq(from.as_str()))
            .filter(batches::Column::Id.not_in_subquery(unfinished.clone()));
        if to == BatchStatus::Expired {
            update = update.filter(batches::Column::ExpiresAt.lte(now_ms));
        }
        ended += update.exec(&tx).await?.rows_affected;
    }
    tx.commit().await?;
    Ok((ended, freed))
}

/// One line of an output or error file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineResult {
    pub id: Uuid,
    pub line: i64,
    pub custom_id: String,
    pub job_id: Option<Uuid>,
    pub status_code: Option<i64>,
    pub response: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// Which of a batch's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchFile {
    /// The answered lines.
    Output,
    /// The lines that ended without an answer.
    Errors,
}

/// A page of the owner's batch's output or error lines, in input order: up to `limit` lines
/// after line number `after` (0 for the first page); `None` if no such batch. A file is read
/// page by page, never whole: its lines may carry large answers.
pub async fn batch_file_page(
    db: &DatabaseConnection,
    owner: UserId,
    batch: Uuid,
    which: BatchFile,
    after: i64,
    limit: u64,
) -> Result<Option<Vec<LineResult>>, RegistryError> {
    let owned = batches::Entity::find_by_id(batch)
        .filter(batches::Column::OwnerId.eq(owner.0))
        .select_only()
        .column(batches::Column::Id)
        .into_tuple::<Uuid>()
        .one(db)
        .await?;
    if owned.is_none() {
        return Ok(None);
    }
    let states: Vec<&str> = match which {
        BatchFile::Output => vec![LineState::Done.as_str()],
        BatchFile::Errors => vec![
            LineState::Failed.as_str(),
            LineState::Expired.as_str(),
            LineState::Cancelled.as_str(),
        ],
    };
    let rows = batch_lines::Entity::find()
        .filter(batch_lines::Column::BatchId.eq(batch))
        .filter(batch_lines::Column::State.is_in(states))
        .filter(batch_lines::Column::Line.gt(after))
        .order_by_asc(batch_lines::Column::Line)
        .limit(limit)
        .all(db)
        .await?;
    Ok(Some(
        rows.into_iter()
            .map(|row| LineResult {
                id: row.id,
                line: row.line,
                custom_id: row.custom_id,
                job_id: row.job_id,
                status_code: row.status_code,
                response: row.response,
                error_code: row.error_code,
                error_message: row.error_message,
            })
            .collect(),
    ))
}

/// One version of an agent's bid in a batch auction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchBid {
    pub agent: Uuid,
    pub owner: UserId,
    pub version: i64,
    /// Micro-credits per line.
    pub price: i64,
    pub capacity: Option<i64>,
    pub source: BidSource,
    pub at_ms: i64,
}

/// How a batch bid arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BidSource {
    /// The agent's answer to the request for quote.
    Rfq,
    /// A replacement sent before the deadline.
    Rebid,
}

impl BidSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BidSource::Rfq => "rfq",
            BidSource::Rebid => "rebid",
        }
    }
}

/// The batch a bid is for: its category, owner and deadline; `None` if no batch auction has
/// this id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenAuction {
    pub batch: Uuid,
    pub owner: UserId,
    pub category: String,
    pub bidding_until_ms: i64,
    pub awarded: bool,
    pub lines: i64,
}

/// A batch auction by id (any owner: agents bid on batches that are not theirs).
pub async fn batch_auction(
    db: &DatabaseConnection,
    batch: Uuid,
) -> Result<Option<OpenAuction>, RegistryError> {
    let row = batches::Entity::find_by_id(batch).one(db).await?;
    Ok(row.and_then(|row| {
        Some(OpenAuction {
            batch: row.id,
            owner: UserId(row.owner_id),
            category: row.category?,
            bidding_until_ms: row.bidding_until?,
            awarded: row.awarded_at.is_some(),
            lines: row.total,
        })
    }))
}

/// Records a bid (a new version of the agent's), if bidding is still open at `now_ms`, in
/// one transaction with that check: `Ok(None)` once the deadline has passed or the batch was
/// awarded, so a late bid never reaches the award.
pub async fn record_bid(
    db: &DatabaseConnection,
    batch: Uuid,
    bid: BatchBid,
) -> Result<Option<i64>, RegistryError> {
    let (tx, _gate) = begin_write(db).await?;
    let open = batches::Entity::find_by_id(batch)
        .filter(batches::Column::BiddingUntil.gt(bid.at_ms))
        .filter(batches::Column::AwardedAt.is_null())
        .filter(batches::Column::Status.eq(BatchStatus::InProgress.as_str()))
        .one(&tx)
        .await?;
    if open.is_none() {
        return Ok(None);
    }
    let last: Option<i64> = batch_bids::Entity::find()
        .select_only()
        .column_as(batch_bids::Column::Version.max(), "v")
        .filter(batch_bids::Column::BatchId.eq(batch))
        .filter(batch_bids::Column::AgentId.eq(bid.agent))
        .into_tuple::<Option<i64>>()
        .one(&tx)
        .await?
        .flatten();
    let version = last.unwrap_or(0) + 1;
    batch_bids::ActiveModel {
        batch_id: Set(batch),
        agent_id: Set(bid.agent),
        version: Set(version),
        owner_id: Set(bid.owner.0),
        price: Set(bid.price),
        capacity: Set(bid.capacity),
        source: Set(bid.source.as_str().into()),
        at: Set(bid.at_ms),
    }
    .insert(&tx)
    .await?;
    tx.commit().await?;
    Ok(Some(version))
}

/// Every bid of a batch auction, every version, in the order they arrived.
pub async fn batch_bids(
    db: &DatabaseConnection,
    batch: Uuid,
) -> Result<Vec<BatchBid>, RegistryError> {
    let rows = batch_bids::Entity::find()
        .filter(batch_bids::Column::BatchId.eq(batch))
        .order_by_asc(batch_bids::Column::At)
        .order_by_asc(batch_bids::Column::Version)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| BatchBid {
            agent: row.agent_id,
            owner: UserId(row.owner_id),
            version: row.version,
            price: row.price,
            capacity: row.capacity,
            source: if row.source == "rebid" { BidSource::Rebid } else { BidSource::Rfq },
            at_ms: row.at,
        })
        .collect())
}

/// Batch auctions whose deadline has passed and that nobody has awarded yet.
pub async fn due_awards(
    db: &DatabaseConnection,
    now_ms: i64,
) -> Result<Vec<OpenAuction>, RegistryError> {
    let rows = batches::Entity::find()
        .filter(batches::Column::Status.eq(BatchStatus::InProgress.as_str()))
        .filter(batches::Column::BiddingUntil.lte(now_ms))
        .filter(batches::Column::AwardedAt.is_null())
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some(OpenAuction {
                batch: row.id,
                owner: UserId(row.owner_id),
                category: row.category?,
                bidding_until_ms: row.bidding_until?,
                awarded: false,
                lines: row.total,
            })
        })
        .collect())
}

/// Awards a batch auction once: `shares` gives, in rank order, each agent and how many lines
/// it takes (lines are handed out in input order); lines beyond every share stay unawarded
/// and run as real-time auctions. `false` if another worker awarded it first.
pub async fn award(
    db: &DatabaseConnection,
    batch: Uuid,
    shares: &[(Uuid, i64)],
    record: String,
    now_ms: i64,
) -> Result<bool, RegistryError> {
    let (tx, _gate) = begin_write(db).await?;
    let claimed = batches::Entity::update_many()
        .col_expr(batches::Column::AwardedAt, Expr::value(now_ms))
        .col_expr(batches::Column::Award, Expr::value(record))
        .filter(batches::Column::Id.eq(batch))
        .filter(batches::Column::AwardedAt.is_null())
        .exec(&tx)
        .await?;
    if claimed.rows_affected != 1 {
        return Ok(false);
    }
    let mut first = 1_i64;
    for (agent, lines) in shares {
        let last = first.saturating_add(*lines).saturating_sub(1);
        batch_lines::Entity::update_many()
            .col_expr(batch_lines::Column::AgentId, Expr::value(*agent))
            .filter(batch_lines::Column::BatchId.eq(batch))
            .filter(batch_lines::Column::Line.between(first, last))
            .exec(&tx)
            .await?;
        first = last.saturating_add(1);
    }
    tx.commit().await?;
    Ok(true)
}

/// The latest bid of each agent in a batch auction: what its lines are priced at.
pub async fn final_bids(
    db: &DatabaseConnection,
    batch: Uuid,
) -> Result<Vec<BatchBid>, RegistryError> {
    let mut latest: Vec<BatchBid> = Vec::new();
    for bid in batch_bids(db, batch).await? {
        match latest.iter_mut().find(|b| b.agent == bid.agent) {
            Some(kept) if kept.version < bid.version => *kept = bid,
            Some(_) => {}
            None => latest.push(bid),
        }
    }
    Ok(latest)
}

/// The body of a batch's first line (a batch auction's lines share a category).
pub async fn first_line_body(
    db: &DatabaseConnection,
    batch: Uuid,
) -> Result<Option<String>, RegistryError> {
    Ok(batch_lines::Entity::find()
        .select_only()
        .column(batch_lines::Column::Body)
        .filter(batch_lines::Column::BatchId.eq(batch))
        .filter(batch_lines::Column::Line.eq(1))
        .into_tuple::<String>()
        .one(db)
        .await?)
}

/// A batch's endpoint.
pub async fn endpoint_of(
    db: &DatabaseConnection,
    batch: Uuid,
) -> Result<Option<String>, RegistryError> {
    Ok(batches::Entity::find_by_id(batch)
        .select_only()
        .column(batches::Column::Endpoint)
        .into_tuple::<String>()
        .one(db)
        .await?)
}

/// Every output or error line of the owner's batch, in input order (for tests and small
/// batches; the HTTP file is streamed page by page).
pub async fn batch_file_lines(
    db: &DatabaseConnection,
    owner: UserId,
    batch: Uuid,
    which: BatchFile,
) -> Result<Option<Vec<LineResult>>, RegistryError> {
    let Some(mut lines) = batch_file_page(db, owner, batch, which, 0, FILE_PAGE).await? else {
        return Ok(None);
    };
    loop {
        let after = lines.last().map_or(0, |l| l.line);
        let page =
            batch_file_page(db, owner, batch, which, after, FILE_PAGE).await?.unwrap_or_default();
        if page.is_empty() {
            return Ok(Some(lines));
        }
        lines.extend(page);
    }
}

/// Lines per page of a batch's file.
pub const FILE_PAGE: u64 = 200;

/// Whether any batch is in progress or being cancelled: an idle worker asks this alone.
pub async fn has_open_batches(db: &DatabaseConnection) -> Result<bool, RegistryError> {
    let open = batches::Entity::find()
        .select_only()
        .column(batches::Column::Id)
        .filter(
            batches::Column::Status
                .is_in([BatchStatus::InProgress.as_str(), BatchStatus::Cancelling.as_str()]),
        )
        .into_tuple::<Uuid>()
        .one(db)
        .await?;
    Ok(open.is_some())
}

/// A batch's money as its owner's dashboard shows it, in micro-credits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchMoney {
    /// What the lines that delivered cost (their jobs' totals).
    pub spent: i64,
    /// The shares of the batch's reservation its lines still hold (lines not started, or
    /// whose job has not yet drawn its share).
    pub held: i64,
}

/// What the owner's batch has spent and still holds; `None` if the owner has no such batch.
pub async fn batch_money(
    db: &DatabaseConnection,
    owner: UserId,
    id: Uuid,
) -> Result<Option<BatchMoney>, RegistryError> {
    let mine = batches::Entity::find_by_id(id)
        .filter(batches::Column::OwnerId.eq(owner.0))
        .count(db)
        .await?;
    if mine == 0 {
        return Ok(None);
    }
    let lines = Query::select()
        .column(batch_lines::Column::Id)
        .from(batch_lines::Entity)
        .and_where(batch_lines::Column::BatchId.eq(id))
        .to_owned();
    let spent: Option<i64> = jobs::Entity::find()
        .select_only()
        .column_as(Expr::col(jobs::Column::TotalCost).sum().cast_as("BIGINT"), "spent")
        .filter(jobs::Column::BatchLineId.in_subquery(lines))
        .filter(jobs::Column::Status.eq(JobStatus::Delivered.as_str()))
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten();
    let held: Option<i64> = batch_lines::Entity::find()
        .select_only()
        .column_as(Expr::col(batch_lines::Column::Reserve).sum().cast_as("BIGINT"), "held")
        .filter(batch_lines::Column::BatchId.eq(id))
        .filter(batch_lines::Column::ReserveHeld.eq(true))
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten();
    Ok(Some(BatchMoney { spent: spent.unwrap_or(0), held: held.unwrap_or(0) }))
}
