//! The credits ledger: double-entry, append-only, integer micro-credits.
//!
//! # Model
//!
//! * An **account** is a user's wallet (id = the user's id), the platform's revenue account or
//!   the grant source. It caches `balance` (the sum of its entries) and `held` (the sum of its
//!   active holds); `available = balance - held`.
//! * A **transfer** is a set of **entries** that sum to zero, written in one transaction with
//!   the balance updates they imply, and unique by an idempotency key (`grant:{user}:{month}`,
//!   `capture:{job}`, ...). Entries are never updated or deleted.
//! * A **hold** reserves part of a wallet's available balance for one job. It is placed by one
//!   conditional update (`held += x WHERE balance - held >= x`), never check-then-write, and
//!   ends exactly once: **captured** (the charge becomes a transfer, the rest is freed),
//!   **released** (all of it is freed) or **expired** (voided by the reaper after a crash).
//!   Capture and release are idempotent per (job, kind): a repeat changes nothing.
//!
//! # Invariants
//!
//! * A wallet's `balance` equals the sum of its entries, and neither `balance - held` nor
//!   `held` of a wallet is ever negative. The grant source alone goes negative: it is where
//!   free credits come from.
//! * The sum of all entries is zero.
//! * Rows are locked wallets first, then system accounts, each in id order, so two concurrent
//!   transfers can never deadlock on Postgres.

use chrono::{DateTime, Datelike, Utc};
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set, Statement, UpdateMany,
};
use uuid::{Uuid, uuid};

use auction_engine::MicroCredits;

use crate::database::{begin_write, in_write_txn};
use crate::entity::{accounts, holds, ledger_entries, transfers};
use crate::figures;
use crate::script::{Check, Script, ScriptRun};
use crate::{RegistryError, UserId};

/// The kind (and key prefix) of a job's transfer: what the caller paid and the payees got.
pub(crate) const CAPTURE: &str = "capture";

/// The platform's revenue account: fees land here.
pub const PLATFORM_REVENUE_ACCOUNT: Uuid = uuid!("00000000-0000-0000-0000-000000000001");
/// Where free and admin grants come from; its balance is minus everything ever granted.
pub const GRANT_SOURCE_ACCOUNT: Uuid = uuid!("00000000-0000-0000-0000-000000000002");

/// What an account is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    UserWallet,
    PlatformRevenue,
    GrantSource,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::UserWallet => "user",
            AccountKind::PlatformRevenue => "platform_revenue",
            AccountKind::GrantSource => "grant_source",
        }
    }
}

/// A wallet's money: `available = balance - held`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    pub balance: MicroCredits,
    pub held: MicroCredits,
    pub available: MicroCredits,
}

/// A calendar month in UTC, `YYYY-MM`: the unit of the free grant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GrantPeriod(String);

impl GrantPeriod {
    pub fn containing(now: DateTime<Utc>) -> GrantPeriod {
        GrantPeriod(format!("{:04}-{:02}", now.year(), now.month()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether a call changed anything. Repeats of an idempotent operation are `AlreadyDone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    AlreadyDone,
}

/// A request to reserve `amount` of `payer`'s available credits for `job_id` until
/// `expires_at`.
#[derive(Clone, Debug)]
pub struct HoldRequest {
    pub job_id: Uuid,
    pub payer: UserId,
    pub amount: MicroCredits,
    pub expires_at: DateTime<Utc>,
    /// A batch line's job: the hold is drawn first from the line's share of its batch's
    /// reservation (`None` for any other job).
    pub from_line: Option<LineShare>,
}

/// A batch line's share of its batch's reservation, as the line's claim saw it still held.
/// A job for the line moves the share into its hold, so a batch that reserved enough can
/// never be refused a line for credits spent elsewhere meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineShare {
    pub line: Uuid,
    pub amount: MicroCredits,
}

/// Who receives part of a captured charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payee {
    User(UserId),
    PlatformRevenue,
}

impl Payee {
    /// The account the payout is credited to.
    pub fn account(self) -> Uuid {
        match self {
            Payee::User(user) => user.0,
            Payee::PlatformRevenue => PLATFORM_REVENUE_ACCOUNT,
        }
    }
}

/// One leg of a capture. `amount` may be negative: an owner whose win fee exceeds the price
/// pays the difference from the wallet.
#[derive(Clone, Debug)]
pub struct Payout {
    pub payee: Payee,
    pub amount: MicroCredits,
}

/// Settles a job's hold: the payer is charged `charge` (at most the hold), the payouts (which
/// must sum to `charge`) are credited, and the rest of the hold is freed.
#[derive(Clone, Debug)]
pub struct Capture {
    pub job_id: Uuid,
    pub charge: MicroCredits,
    pub payouts: Vec<Payout>,
    pub memo: Option<String>,
}

/// One ledger entry as a wallet's owner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub transfer_id: Uuid,
    pub kind: String,
    pub amount: MicroCredits,
    pub job_id: Option<Uuid>,
    pub memo: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A page of entries, newest first; `next_cursor` fetches the next (older) page.
#[derive(Clone, Debug)]
pub struct EntryPage {
    pub entries: Vec<LedgerEntry>,
    pub next_cursor: Option<i64>,
}

/// The result of checking every account against its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerAudit {
    pub accounts_checked: usize,
    /// `(account, cached balance, sum of entries)` for every account where they differ.
    pub mismatches: Vec<(Uuid, i64, i64)>,
    /// The sum of every entry ever written; zero in a healthy ledger.
    pub total: i64,
    /// Every hour of an account where the hourly rollup differs from the capture entries it
    /// summarises.
    pub flow_mismatches: Vec<figures::FlowMismatch>,
}

/// A change to one account inside a transaction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Posting {
    account: Uuid,
    balance_delta: i64,
    held_delta: i64,
}

/// Grants `amount` to the user once for the calendar month containing `now`. Safe to call on
/// every request: only the first call of the month writes.
pub async fn ensure_monthly_grant(
    db: &DatabaseConnection,
    user: UserId,
    amount: MicroCredits,
    now: DateTime<Utc>,
) -> Result<Applied, RegistryError> {
    let period = GrantPeriod::containing(now);
    // The common case, read-only: this month's grant is already in.
    let account = accounts::Entity::find_by_id(user.0).one(db).await?;
    let Some(account) = account else {
        return Err(RegistryError::NotFound { what: "account" });
    };
    if account.grant_period.as_deref() >= Some(period.as_str()) {
        return Ok(Applied::AlreadyDone);
    }
    if amount == MicroCredits::ZERO {
        return Ok(Applied::AlreadyDone);
    }

    let (txn, _gate) = begin_write(db).await?;
    // The conditional update is the once-per-month guard: of N concurrent first requests,
    // exactly one sees its row change.
    let result = accounts::Entity::update_many()
        .col_expr(
            accounts::Column::Balance,
            Expr::col(accounts::Column::Balance).add(amount.micros()),
        )
        .col_expr(accounts::Column::GrantPeriod, Expr::value(period.as_str()))
        .filter(accounts::Column::Id.eq(user.0))
        .filter(
            Condition::any()
                .add(accounts::Column::GrantPeriod.is_null())
                .add(accounts::Column::GrantPeriod.lt(period.as_str())),
        )
        .exec(&txn)
        .await?;
    if result.rows_affected == 0 {
        txn.rollback().await?;
        return Ok(Applied::AlreadyDone);
    }
    let source_debit = amount.checked_neg().ok_or(RegistryError::Overflow)?;
    let mut script = Script::new(txn.get_database_backend());
    let postings = add_postings(
        &mut script,
        vec![Posting {
            account: GRANT_SOURCE_ACCOUNT,
            balance_delta: source_debit.micros(),
            held_delta: 0,
        }],
    );
    let memo = format!("free credits for {}", period.as_str());
    add_transfer(
        &mut script,
        "grant",
        &format!("grant:{}:{}", user.0, period.as_str()),
        None,
        Some(memo),
        &[(user.0, amount.micros()), (GRANT_SOURCE_ACCOUNT, source_debit.micros())],
        now,
    )?;
    match script.run(&txn).await {
        Ok(run) => {
            if let Err(err) = verify_postings(&txn, &run, &postings).await {
                txn.rollback().await?;
                return Err(err);
            }
            txn.commit().await?;
            Ok(Applied::Done)
        }
        // The transfer's unique key is the second guard: this month's grant exists even though
        // the account's marker said otherwise (restored backup, manual edit). Grant nothing.
        Err(err)
            if matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) =>
        {
            txn.rollback().await?;
            Ok(Applied::AlreadyDone)
        }
        Err(err) => {
            txn.rollback().await?;
            Err(err.into())
        }
    }
}

/// Credits a user from the grant source (the operator's `gavel admin grant`). `transfer_id`
/// makes the grant idempotent: the same id twice grants once.
pub async fn admin_grant(
    db: &DatabaseConnection,
    user: UserId,
    amount: MicroCredits,
    transfer_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Applied, RegistryError> {
    if amount.micros() <= 0 {
        return Err(RegistryError::invalid("credits", "must be positive"));
    }
    let key = format!("admin_grant:{transfer_id}");
    in_write_txn(db, async |txn| {
        let exists = transfers::Entity::find()
            .filter(transfers::Column::IdempotencyKey.eq(key.as_str()))
            .one(txn)
            .await?
            .is_some();
        if exists {
            return Ok(Applied::AlreadyDone);
        }
        let debit = amount.checked_neg().ok_or(RegistryError::Overflow)?;
        let mut script = Script::new(txn.get_database_backend());
        let postings = add_postings(
            &mut script,
            vec![
                Posting { account: user.0, balance_delta: amount.micros(), held_delta: 0 },
                Posting {
                    account: GRANT_SOURCE_ACCOUNT,
                    balance_delta: debit.micros(),
                    held_delta: 0,
                },
            ],
        );
        add_transfer(
            &mut script,
            "admin_grant",
            &key,
            None,
            Some("granted by the operator".to_owned()),
            &[(user.0, amount.micros()), (GRANT_SOURCE_ACCOUNT, debit.micros())],
            now,
        )?;
        let run = script.run(txn).await?;
        verify_postings(txn, &run, &postings).await?;
        Ok(Applied::Done)
    })
    .await
}

/// Reserves credits for a job. Refused with `InsufficientCredits` (nothing written) when the
/// payer's available balance is short, and with `HoldExists` for a second hold on one job.
pub async fn place_hold(
    db: &DatabaseConnection,
    request: HoldRequest,
    hold_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    in_write_txn(db, async |txn| {
        let mut script = Script::new(txn.get_database_backend());
        let hold = add_hold(&mut script, &request, hold_id, now, 0)?;
        let run = script.run(txn).await;
        verify_hold(txn, run, &hold).await
    })
    .await
}

/// A hold's statements, added to a script and not yet checked: see [`verify_hold`].
pub(crate) struct PendingHold {
    job_id: Uuid,
    payer: UserId,
    amount: MicroCredits,
    postings: Vec<(Check, Posting)>,
}

/// Adds the statements that place a hold to `script`. Once it has run, [`verify_hold`] says
/// whether the hold took.
/// `drawn` is what the hold takes from a batch line's share, already counted in the wallet's
/// `held`: only the rest is reserved anew (or, when the share was larger, freed).
pub(crate) fn add_hold(
    script: &mut Script,
    request: &HoldRequest,
    hold_id: Uuid,
    now: DateTime<Utc>,
    drawn: i64,
) -> Result<PendingHold, RegistryError> {
    if request.amount.micros() <= 0 {
        return Err(RegistryError::invalid("amount", "a hold must be positive"));
    }
    let posting = Posting {
        account: request.payer.0,
        balance_delta: 0,
        held_delta: request.amount.micros() - drawn,
    };
    let postings = add_postings(script, vec![posting]);
    script.push(
        &holds::Entity::insert(holds::ActiveModel {
            id: Set(hold_id),
            job_id: Set(request.job_id),
            account_id: Set(request.payer.0),
            amount: Set(request.amount.micros()),
            status: Set(HoldStatus::Active.as_str().to_owned()),
            expires_at_ms: Set(request.expires_at.timestamp_millis()),
            created_at: Set(now),
            settled_at: Set(None),
        })
        .into_query(),
    );
    Ok(PendingHold {
        job_id: request.job_id,
        payer: request.payer,
        amount: request.amount,
        postings,
    })
}

/// Checks a run that placed a hold: a second hold on the job is `HoldExists`, a payer who
/// cannot cover it is `InsufficientCredits`. On an error the caller must roll back.
pub(crate) async fn verify_hold(
    txn: &DatabaseTransaction,
    run: Result<ScriptRun, DbErr>,
    hold: &PendingHold,
) -> Result<(), RegistryError> {
    let run = match run {
        Ok(run) => run,
        // The script's ids are fresh; the one unique key it can hit is one hold per job.
        Err(err) => {
            return Err(match err.sql_err() {
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                    RegistryError::HoldExists { job_id: hold.job_id }
                }
                _ => RegistryError::Database(err),
            });
        }
    };
    match verify_postings(txn, &run, &hold.postings).await {
        Err(RegistryError::AccountCannotCover { .. }) => {
            let available = balance(txn, hold.payer).await?.available;
            Err(RegistryError::InsufficientCredits { requested: hold.amount, available })
        }
        other => other,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HoldStatus {
    Active,
    Captured,
    Released,
    Expired,
}

impl HoldStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Active => "active",
            HoldStatus::Captured => "captured",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }
}

/// Postings added to a script whose run must still be checked with [`verify_settlement`].
/// `None` when there was nothing to do (an idempotent repeat).
pub(crate) type PendingSettlement = Option<Vec<(Check, Posting)>>;

/// Captures a job's hold. A repeat of a capture is `AlreadyDone`; capturing a hold that was
/// released or expired is `HoldNotActive`. An unbalanced capture is refused before any write.
pub async fn capture(
    db: &DatabaseConnection,
    capture: Capture,
    now: DateTime<Utc>,
) -> Result<Applied, RegistryError> {
    in_write_txn(db, async |txn| {
        let mut script = Script::new(txn.get_database_backend());
        let pending = add_capture(txn, &mut script, capture, now).await?;
        let run = script.run(txn).await?;
        verify_settlement(txn, &run, pending).await
    })
    .await
}

/// Claims the job's hold for capture (one statement, now) and adds the capture's postings and
/// transfer to `script`. On an error the caller must roll back.
pub(crate) async fn add_capture(
    txn: &DatabaseTransaction,
    script: &mut Script,
    capture: Capture,
    now: DateTime<Utc>,
) -> Result<PendingSettlement, RegistryError> {
    check_capture(&capture)?;
    let Some(hold) = claim_hold(txn, capture.job_id, HoldStatus::Captured, now).await? else {
        return Ok(None);
    };
    add_capture_postings(script, &hold, capture, now).map(Some)
}

/// A capture is refused before any write when its payouts do not sum to its charge or the
/// charge is negative.
pub(crate) fn check_capture(capture: &Capture) -> Result<(), RegistryError> {
    let mut payout_total = MicroCredits::ZERO;
    for payout in &capture.payouts {
        payout_total = payout_total.checked_add(payout.amount).ok_or(RegistryError::Overflow)?;
    }
    if payout_total != capture.charge {
        return Err(RegistryError::Unbalanced(format!(
            "payouts sum to {payout_total}, charge is {}",
            capture.charge
        )));
    }
    if capture.charge.is_negative() {
        return Err(RegistryError::Unbalanced("charge is negative".into()));
    }
    Ok(())
}

fn add_capture_postings(
    script: &mut Script,
    hold: &holds::Model,
    capture: Capture,
    now: DateTime<Utc>,
) -> Result<Vec<(Check, Posting)>, RegistryError> {
    if capture.charge.micros() > hold.amount {
        return Err(RegistryError::Unbalanced(format!(
            "charge {} exceeds the hold of {}",
            capture.charge,
            MicroCredits::from_micros(hold.amount)
        )));
    }
    let mut postings = vec![Posting {
        account: hold.account_id,
        balance_delta: -capture.charge.micros(),
        held_delta: -hold.amount,
    }];
    let mut legs = vec![(hold.account_id, -capture.charge.micros())];
    for payout in &capture.payouts {
        let account = payout.payee.account();
        postings.push(Posting { account, balance_delta: payout.amount.micros(), held_delta: 0 });
        legs.push((account, payout.amount.micros()));
    }
    let checks = add_postings(script, postings);
    add_transfer(
        script,
        CAPTURE,
        &format!("capture:{}", capture.job_id),
        Some(capture.job_id),
        capture.memo,
        &legs,
        now,
    )?;
    Ok(checks)
}

/// Frees a job's whole hold (no agent delivered). A repeat is `AlreadyDone`; releasing a
/// captured or expired hold is `HoldNotActive`.
pub async fn release(
    db: &DatabaseConnection,
    job_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Applied, RegistryError> {
    end_hold(db, job_id, HoldStatus::Released, now).await
}

/// Voids every active hold whose expiry is before `now` (left by a crash mid-job), at most
/// `limit` of them. Returns how many it voided.
pub async fn reap_expired_holds(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<u64, RegistryError> {
    let stale = holds::Entity::find()
        .filter(holds::Column::Status.eq(HoldStatus::Active.as_str()))
        .filter(holds::Column::ExpiresAtMs.lt(now.timestamp_millis()))
        .order_by_asc(holds::Column::ExpiresAtMs)
        .limit(limit)
        .all(db)
        .await?;
    let mut voided = 0;
    for hold in stale {
        // A hold settled between the scan and here is simply skipped.
        match end_hold(db, hold.job_id, HoldStatus::Expired, now).await {
            Ok(Applied::Done) => voided += 1,
            Ok(Applied::AlreadyDone) | Err(RegistryError::HoldNotActive { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(voided)
}

async fn end_hold(
    db: &DatabaseConnection,
    job_id: Uuid,
    status: HoldStatus,
    now: DateTime<Utc>,
) -> Result<Applied, RegistryError> {
    in_write_txn(db, async |txn| {
        let mut script = Script::new(txn.get_database_backend());
        let pending = add_end_hold(txn, &mut script, job_id, status, now).await?;
        let run = script.run(txn).await?;
        verify_settlement(txn, &run, pending).await
    })
    .await
}

/// Claims the job's hold for release (one statement, now) and adds the freeing of it to
/// `script`. On an error the caller must roll back.
pub(crate) async fn add_release(
    txn: &DatabaseTransaction,
    script: &mut Script,
    job_id: Uuid,
    now: DateTime<Utc>,
) -> Result<PendingSettlement, RegistryError> {
    add_end_hold(txn, script, job_id, HoldStatus::Released, now).await
}

async fn add_end_hold(
    txn: &DatabaseTransaction,
    script: &mut Script,
    job_id: Uuid,
    status: HoldStatus,
    now: DateTime<Utc>,
) -> Result<PendingSettlement, RegistryError> {
    let Some(hold) = claim_hold(txn, job_id, status, now).await? else {
        return Ok(None);
    };
    let posting = Posting { account: hold.account_id, balance_delta: 0, held_delta: -hold.amount };
    Ok(Some(add_postings(script, vec![posting])))
}

/// Checks a run that settled a hold. `AlreadyDone` when there was nothing to settle.
pub(crate) async fn verify_settlement(
    txn: &DatabaseTransaction,
    run: &ScriptRun,
    pending: PendingSettlement,
) -> Result<Applied, RegistryError> {
    match pending {
        None => Ok(Applied::AlreadyDone),
        Some(postings) => {
            verify_postings(txn, run, &postings).await?;
            Ok(Applied::Done)
        }
    }
}

/// Moves a job's hold from active to `to` with one conditional update that returns the hold.
/// `None` means it is already in `to` (an idempotent repeat); another final state is
/// `HoldNotActive`.
async fn claim_hold(
    txn: &DatabaseTransaction,
    job_id: Uuid,
    to: HoldStatus,
    now: DateTime<Utc>,
) -> Result<Option<holds::Model>, RegistryError> {
    let claimed = claim_update(job_id, to, now).exec_with_returning(txn).await?;
    if let Some(hold) = claimed.into_iter().next() {
        return Ok(Some(hold));
    }
    let hold = holds::Entity::find().filter(holds::Column::JobId.eq(job_id)).one(txn).await?;
    let Some(hold) = hold else {
        return Err(RegistryError::NotFound { what: "hold" });
    };
    if hold.status == to.as_str() {
        Ok(None)
    } else {
        Err(RegistryError::HoldNotActive { job_id, status: hold.status })
    }
}

/// The update that moves a job's active hold to `to`.
fn claim_update(job_id: Uuid, to: HoldStatus, now: DateTime<Utc>) -> UpdateMany<holds::Entity> {
    holds::Entity::update_many()
        .col_expr(holds::Column::Status, Expr::value(to.as_str()))
        .col_expr(holds::Column::SettledAt, Expr::value(now))
        .filter(holds::Column::JobId.eq(job_id))
        .filter(holds::Column::Status.eq(HoldStatus::Active.as_str()))
}

/// Adds balance and held changes to `script`, wallets first then system accounts, each in id
/// order. A wallet change that would make `balance - held` or `held` negative matches no row;
/// [`verify_postings`] then names it.
fn add_postings(script: &mut Script, mut postings: Vec<Posting>) -> Vec<(Check, Posting)> {
    postings.sort_by_key(|p| (is_system_account(p.account), p.account));
    let mut checks = Vec::with_capacity(postings.len());
    for posting in postings {
        if posting.balance_delta == 0 && posting.held_delta == 0 {
            continue;
        }
        checks.push((script.push_checked(posting_update(&posting)), posting));
    }
    checks
}

/// Changes a wallet's `held` by `delta` now, inside `txn`: a batch's reservation taken
/// (positive) or freed (negative). The same conditional update as any posting, so a wallet
/// never holds more than its balance; `AccountCannotCover` (or `NotFound`) otherwise, and the
/// caller must roll back.
pub(crate) async fn change_held(
    txn: &DatabaseTransaction,
    account: Uuid,
    delta: i64,
) -> Result<(), RegistryError> {
    if delta == 0 {
        return Ok(());
    }
    let posting = Posting { account, balance_delta: 0, held_delta: delta };
    let changed = txn.execute(&posting_update(&posting)).await?.rows_affected();
    if changed == 1 {
        return Ok(());
    }
    if accounts::Entity::find_by_id(account).one(txn).await?.is_none() {
        return Err(RegistryError::NotFound { what: "account" });
    }
    Err(RegistryError::AccountCannotCover {
        account,
        amount: MicroCredits::from_micros(Ord::max(delta, 0)),
    })
}

/// The conditional update that applies one posting: a wallet must keep `balance - held` and
/// `held` at zero or above, or no row matches.
fn posting_update(posting: &Posting) -> sea_orm::sea_query::UpdateStatement {
    let available_after = Expr::col(accounts::Column::Balance)
        .add(posting.balance_delta)
        .sub(Expr::col(accounts::Column::Held))
        .sub(posting.held_delta);
    let held_after = Expr::col(accounts::Column::Held).add(posting.held_delta);
    let covered = Condition::any()
        .add(accounts::Column::Kind.ne(AccountKind::UserWallet.as_str()))
        .add(Condition::all().add(available_after.gte(0)).add(held_after.gte(0)));
    accounts::Entity::update_many()
        .col_expr(
            accounts::Column::Balance,
            Expr::col(accounts::Column::Balance).add(posting.balance_delta),
        )
        .col_expr(accounts::Column::Held, Expr::col(accounts::Column::Held).add(posting.held_delta))
        .filter(accounts::Column::Id.eq(posting.account))
        .filter(covered)
        .into_query()
}

/// After the run: the first posting that changed no row is `NotFound` (no such account) or
/// `AccountCannotCover`. On an error the caller must roll back.
async fn verify_postings(
    txn: &DatabaseTransaction,
    run: &ScriptRun,
    checks: &[(Check, Posting)],
) -> Result<(), RegistryError> {
    let Some((_, posting)) = checks.iter().find(|(check, _)| !run.changed(*check)) else {
        return Ok(());
    };
    let exists = accounts::Entity::find_by_id(posting.account).one(txn).await?.is_some();
    if !exists {
        return Err(RegistryError::NotFound { what: "account" });
    }
    let debit = Ord::max(Ord::min(posting.balance_delta, 0).abs(), posting.held_delta);
    Err(RegistryError::AccountCannotCover {
        account: posting.account,
        amount: MicroCredits::from_micros(debit),
    })
}

fn is_system_account(account: Uuid) -> bool {
    account == PLATFORM_REVENUE_ACCOUNT || account == GRANT_SOURCE_ACCOUNT
}

/// Adds a transfer and its entries to `script`. The legs must sum to zero; zero legs are
/// skipped.
fn add_transfer(
    script: &mut Script,
    kind: &str,
    idempotency_key: &str,
    job_id: Option<Uuid>,
    memo: Option<String>,
    legs: &[(Uuid, i64)],
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    let mut total: i64 = 0;
    for (_, amount) in legs {
        total = total.checked_add(*amount).ok_or(RegistryError::Overflow)?;
    }
    if total != 0 {
        return Err(RegistryError::Unbalanced(format!("{kind} legs sum to {total}")));
    }
    let transfer_id = Uuid::now_v7();
    script.push(
        &transfers::Entity::insert(transfers::ActiveModel {
            id: Set(transfer_id),
            kind: Set(kind.to_owned()),
            idempotency_key: Set(idempotency_key.to_owned()),
            job_id: Set(job_id),
            memo: Set(memo.clone()),
            created_at: Set(now),
        })
        .into_query(),
    );
    let entries: Vec<ledger_entries::ActiveModel> = legs
        .iter()
        .filter(|(_, amount)| *amount != 0)
        .map(|(account, amount)| ledger_entries::ActiveModel {
            transfer_id: Set(transfer_id),
            account_id: Set(*account),
            amount: Set(*amount),
            kind: Set(kind.to_owned()),
            job_id: Set(job_id),
            memo: Set(memo.clone()),
            created_at: Set(now),
            ..Default::default()
        })
        .collect();
    if !entries.is_empty() {
        script.push(&ledger_entries::Entity::insert_many(entries).into_query());
    }
    if kind == CAPTURE {
        let hour = figures::hour_of(now);
        for (account, spent, earned) in figures::flows_of(legs) {
            script.push_built(Statement::from_sql_and_values(
                script.backend(),
                figures::ADD_HOURLY_FLOW,
                [account.into(), hour.into(), spent.into(), earned.into()],
            ));
        }
    }
    Ok(())
}

/// A wallet's balance, held and available amounts.
pub async fn balance(db: &impl ConnectionTrait, user: UserId) -> Result<Balance, RegistryError> {
    let account = accounts::Entity::find_by_id(user.0)
        .one(db)
        .await?
        .ok_or(RegistryError::NotFound { what: "account" })?;
    Ok(Balance {
        balance: MicroCredits::from_micros(account.balance),
        held: MicroCredits::from_micros(account.held),
        available: MicroCredits::from_micros(account.balance - account.held),
    })
}

/// Available balances (`balance - held`) of several wallets in one query; unknown ids are
/// absent from the map.
pub async fn available_balances(
    db: &impl ConnectionTrait,
    accounts_wanted: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, MicroCredits>, RegistryError> {
    if accounts_wanted.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    let rows = accounts::Entity::find()
        .filter(accounts::Column::Id.is_in(accounts_wanted.iter().copied()))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.id, MicroCredits::from_micros(row.balance - row.held)))
        .collect())
}

/// The balance of any account, system accounts included.
pub async fn account_balance(
    db: &impl ConnectionTrait,
    account: Uuid,
) -> Result<MicroCredits, RegistryError> {
    let row = accounts::Entity::find_by_id(account)
        .one(db)
        .await?
        .ok_or(RegistryError::NotFound { what: "account" })?;
    Ok(MicroCredits::from_micros(row.balance))
}

/// A page of the wallet's entries, newest first, strictly older than `before` when given.
/// `limit` is clamped to 1..=200.
pub async fn entries(
    db: &DatabaseConnection,
    user: UserId,
    before: Option<i64>,
    limit: u64,
) -> Result<EntryPage, RegistryError> {
    let limit = limit.clamp(1, 200);
    let mut query =
        ledger_entries::Entity::find().filter(ledger_entries::Column::AccountId.eq(user.0));
    if let Some(before) = before {
        query = query.filter(ledger_entries::Column::Id.lt(before));
    }
    let mut rows = query.order_by_desc(ledger_entries::Column::Id).limit(limit + 1).all(db).await?;
    let has_more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if has_more { rows.last().map(|row| row.id) } else { None };
    let entries = rows
        .into_iter()
        .map(|row| LedgerEntry {
            id: row.id,
            transfer_id: row.transfer_id,
            kind: row.kind,
            amount: MicroCredits::from_micros(row.amount),
            job_id: row.job_id,
            memo: row.memo,
            created_at: row.created_at,
        })
        .collect();
    Ok(EntryPage { entries, next_cursor })
}

/// Checks every account's cached balance against the sum of its entries, and the sum of all
/// entries against zero.
pub async fn audit_ledger(db: &DatabaseConnection) -> Result<LedgerAudit, RegistryError> {
    let sums: Vec<(Uuid, i64)> = ledger_entries::Entity::find()
        .select_only()
        .column(ledger_entries::Column::AccountId)
        .column_as(Expr::cust("CAST(SUM(amount) AS BIGINT)"), "total")
        .group_by(ledger_entries::Column::AccountId)
        .into_tuple()
        .all(db)
        .await?;
    let sums: std::collections::HashMap<Uuid, i64> = sums.into_iter().collect();
    let accounts = accounts::Entity::find().all(db).await?;
    let mut mismatches = Vec::new();
    for account in &accounts {
        let sum = sums.get(&account.id).copied().unwrap_or(0);
        if sum != account.balance {
            mismatches.push((account.id, account.balance, sum));
        }
    }
    let total = sums.values().sum();
    let flow_mismatches = figures::audit_hourly_flows(db).await?;
    Ok(LedgerAudit { accounts_checked: accounts.len(), mismatches, total, flow_mismatches })
}

/// How many transfers of `kind` (`capture`, `grant`, ...) the ledger holds.
pub async fn count_transfers(db: &DatabaseConnection, kind: &str) -> Result<u64, RegistryError> {
    use sea_orm::PaginatorTrait;
    Ok(transfers::Entity::find().filter(transfers::Column::Kind.eq(kind)).count(db).await?)
}
