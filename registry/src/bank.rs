//! The bank: the one door credits go through while a server runs, whatever the database.
//!
//! **On a SQLite file the process is the authority for money.** The file has one server (the
//! data lock), so balances and holds live in memory, in the [`Book`], loaded from the ledger at
//! start (a wallet's balance is the sum of its entries). A hold is a reservation in the book:
//! checked and taken under one lock, never a database round trip, so no two jobs can spend
//! the same credit. A job's rows are written once, when it ends, as one unit through the
//! [`SqliteWriter`] (group commit); the book changes only after that commit, by the writer
//! thread. A crash before the commit means the job never happened for money; after it,
//! everything is on file. Every refusal (credits short, a wallet that cannot cover its share,
//! a hold that is gone) is decided here, in the book, and named in the error.
//!
//! **On Postgres (and an in-memory SQLite) the database is the authority**, shared by every
//! instance: a hold is a conditional update and a settlement one transaction (`ledger`,
//! `jobs`). On Postgres a job's opening and ending go through this instance's [`PgWriter`],
//! which commits whatever waits in one transaction with batched statements, refuses a payer
//! short of credits inside the batch, and replays the units of a batch that missed otherwise
//! through `jobs`, which names the refusal.
//!
//! **A batch holds once, for all its lines** ([`Bank::create_batch`]): the most it may cost is
//! reserved at creation, each line's share is kept on its row, and a line's job draws its
//! hold from that share first (`HoldRequest::from_line`), so spending elsewhere meanwhile can
//! never leave a line short. A share not drawn is freed when its line ends (cancelled,
//! expired, failed before any hold). On the database paths each move is in the transaction of
//! the change that causes it; on a SQLite file the book follows each commit, and a restart
//! reserves again exactly the shares the file says are still held.
//!
//! Absent on purpose: any write of money on a SQLite file that does not go through this
//! process's writer while the server runs (the CLI asks the running server instead).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use auction_engine::MicroCredits;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::batches::{
    self, Batch, ClaimedLine, Freed, HeldIn, LineEnd, LineRecorded, NewBatch, NewLine,
};
use crate::database::{Backend, sqlite_file};
use crate::jobs::{self, AuctionEntry, JobOutcome, NewJob, ReputationUpdate, Settlement};
use crate::ledger::{self, Applied, Balance, GrantPeriod, HoldRequest, Payee};
use crate::pg_writer::{Finish, Open, PgUnit, PgWriter};
use crate::sqlite_writer::{JobUnit, SqliteWriter, TransferRows, Unit};
use crate::{RegistryError, UserId};

/// How long a job without a hold may stay open before the reaper ends it.
const OPEN_JOB_LIFETIME: chrono::Duration = chrono::Duration::hours(1);

/// One account in memory.
#[derive(Clone, Debug)]
pub(crate) struct Wallet {
    pub(crate) balance: i64,
    pub(crate) held: i64,
    /// A user's wallet, which never goes below zero (system accounts may).
    pub(crate) wallet: bool,
    pub(crate) grant_period: Option<String>,
}

/// A job between its auction and its end: its rows wait here, its hold is reserved.
struct OpenJob {
    job: NewJob,
    auction: AuctionEntry,
    hold: Option<(Uuid, i64)>,
    /// The batch line whose share the hold drew, and the share.
    drawn: Option<(Uuid, i64)>,
    expires_at: DateTime<Utc>,
}

/// Balances, holds and open jobs of a SQLite node.
#[derive(Default)]
pub(crate) struct Book {
    wallets: HashMap<Uuid, Wallet>,
    open: HashMap<Uuid, OpenJob>,
}

/// Why a reservation was refused.
enum Short {
    UnknownAccount,
    Available(i64),
}

impl Book {
    pub(crate) fn load(&mut self, wallets: HashMap<Uuid, Wallet>) {
        self.wallets = wallets;
    }

    pub(crate) fn insert_if_absent(&mut self, account: Uuid, wallet: Wallet) {
        self.wallets.entry(account).or_insert(wallet);
    }

    /// A committed change of balance. An account not in the book is skipped: it is read from
    /// the file, commit included, when first needed.
    pub(crate) fn credit(&mut self, account: Uuid, delta: i64) {
        if let Some(wallet) = self.wallets.get_mut(&account) {
            wallet.balance += delta;
        }
    }

    pub(crate) fn unreserve(&mut self, account: Uuid, amount: i64) {
        if let Some(wallet) = self.wallets.get_mut(&account) {
            wallet.held -= amount;
        }
    }

    pub(crate) fn set_grant_period(&mut self, account: Uuid, period: String) {
        if let Some(wallet) = self.wallets.get_mut(&account)
            && wallet.grant_period.as_deref() < Some(period.as_str())
        {
            wallet.grant_period = Some(period);
        }
    }

    /// Reserves `amount` of the account's available credits, or says why not.
    fn reserve(&mut self, account: Uuid, amount: i64) -> Result<(), Short> {
        let wallet = self.wallets.get_mut(&account).ok_or(Short::UnknownAccount)?;
        let available = wallet.balance - wallet.held;
        if wallet.wallet && available < amount {
            return Err(Short::Available(available));
        }
        wallet.held += amount;
        Ok(())
    }
}

/// How the bank's commits went: units committed, the transactions that carried them (fewer
/// than the units when jobs shared a commit), and the batches run again because one of their
/// units failed. Zero on an in-memory SQLite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BankCounts {
    pub units: u64,
    pub batches: u64,
    pub reruns: u64,
}

/// The one door credits go through. Cheap to share behind the app state.
pub struct Bank {
    authority: Option<Authority>,
    /// On Postgres: jobs' openings and endings, group-committed.
    jobs_writer: Option<PgWriter>,
    db: DatabaseConnection,
}

struct Authority {
    book: Arc<Mutex<Book>>,
    writer: SqliteWriter,
    file: PathBuf,
}

/// SQLite files with a live authority in this process. Across processes the server's data
/// lock keeps a file to one; this keeps it to one bank inside a process too (two books on one
/// file would each spend the same credits).
static AUTHORITIES: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Mutex::default);

impl Drop for Authority {
    fn drop(&mut self) {
        if let Ok(mut live) = AUTHORITIES.lock() {
            live.remove(&self.file);
        }
    }
}

impl std::fmt::Debug for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank").field("authority", &self.authority.is_some()).finish()
    }
}

impl Bank {
    /// The bank for `db`, opened from `url`: the in-memory authority on a SQLite file (the
    /// caller must hold the file's data lock), the database itself otherwise.
    pub async fn new(db: DatabaseConnection, url: &str) -> Result<Bank, RegistryError> {
        let file = match Backend::of_url(url) {
            Some(Backend::Sqlite) => sqlite_file(url),
            _ => None,
        };
        let Some(file) = file else {
            let jobs_writer = (Backend::of_url(url) == Some(Backend::Postgres))
                .then(|| PgWriter::start(db.clone()));
            return Ok(Bank { authority: None, jobs_writer, db });
        };
        let claimed = AUTHORITIES
            .lock()
            .map_err(|_| RegistryError::Storage("the authorities table is poisoned".into()))?
            .insert(file.clone());
        if !claimed {
            return Err(RegistryError::Storage(format!(
                "{} already has a bank in this process: a SQLite file takes one server",
                file.display()
            )));
        }
        let book = Arc::new(Mutex::new(Book::default()));
        let writer_book = Arc::clone(&book);
        let writer_file = file.clone();
        let started =
            tokio::task::spawn_blocking(move || SqliteWriter::start(&writer_file, writer_book))
                .await;
        let writer = match started {
            Ok(Ok(writer)) => writer,
            failed => {
                if let Ok(mut live) = AUTHORITIES.lock() {
                    live.remove(&file);
                }
                return Err(match failed {
                    Ok(Err(err)) => err,
                    _ => RegistryError::Storage("the writer did not start".into()),
                });
            }
        };
        Ok(Bank { authority: Some(Authority { book, writer, file }), jobs_writer: None, db })
    }

    /// Whether this process is the authority for money (a SQLite file).
    pub fn is_authority(&self) -> bool {
        self.authority.is_some()
    }

    pub fn counts(&self) -> BankCounts {
        let counts = match (&self.authority, &self.jobs_writer) {
            (Some(authority), _) => &authority.writer.counts,
            (None, Some(writer)) => &writer.counts,
            (None, None) => return BankCounts { units: 0, batches: 0, reruns: 0 },
        };
        BankCounts {
            units: counts.units.load(std::sync::atomic::Ordering::Relaxed),
            batches: counts.batches.load(std::sync::atomic::Ordering::Relaxed),
            reruns: counts.reruns.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// A job whose auction has run: reserves its hold, if any. `InsufficientCredits` when the
    /// payer cannot cover it, `HoldExists` for a second hold on one job; nothing is kept then.
    pub async fn open(
        &self,
        job: NewJob,
        auction: AuctionEntry,
        hold: Option<(HoldRequest, Uuid)>,
    ) -> Result<(), RegistryError> {
        let Some(authority) = &self.authority else {
            // A batch line's hold draws on its share in the same transaction: the one-job path.
            let from_line = hold.as_ref().is_some_and(|(request, _)| request.from_line.is_some());
            return match &self.jobs_writer {
                Some(writer) if !from_line => {
                    writer.write(PgUnit::Open(Box::new(Open { job, auction, hold }))).await
                }
                _ => jobs::open_job_with_hold(&self.db, job, auction, hold).await,
            };
        };
        if let Some((request, _)) = &hold {
            if request.amount.micros() <= 0 {
                return Err(RegistryError::invalid("amount", "a hold must be positive"));
            }
            authority.load(request.payer.0).await?;
        }
        let mut book = authority.lock()?;
        let hold_job = hold.as_ref().map_or(job.id, |(request, _)| request.job_id);
        if book.open.contains_key(&job.id) || book.open.contains_key(&hold_job) {
            return Err(RegistryError::HoldExists { job_id: hold_job });
        }
        let (held, drawn, expires_at) = match &hold {
            Some((request, _)) => {
                let amount = request.amount.micros();
                // The line's share is already in `held`: reserve only the rest (or free the
                // share's excess over the hold). This process runs a line once at a time, so
                // the share its claim saw held is still held.
                let drawn = request.from_line.map(|share| (share.line, share.amount.micros()));
                let drawn_amount = drawn.map_or(0, |(_, share)| share);
                match book.reserve(request.payer.0, amount - drawn_amount) {
                    Ok(()) => {}
                    Err(Short::UnknownAccount) => {
                        return Err(RegistryError::NotFound { what: "account" });
                    }
                    Err(Short::Available(available)) => {
                        return Err(RegistryError::InsufficientCredits {
                            requested: request.amount,
                            available: MicroCredits::from_micros(available),
                        });
                    }
                }
                (Some((request.payer.0, amount)), drawn, request.expires_at)
            }
            None => (None, None, job.created_at + OPEN_JOB_LIFETIME),
        };
        book.open.insert(job.id, OpenJob { job, auction, hold: held, drawn, expires_at });
        Ok(())
    }

    /// Ends a job: its rows, its reputation updates and its settlement, in one unit. A capture
    /// takes at most the hold; an owner whose share is negative (a win fee above the price)
    /// must cover it (`AccountCannotCover` otherwise, and the job stays open for another try).
    pub async fn finish(
        &self,
        job_id: Uuid,
        outcome: JobOutcome,
        settlement: Settlement,
        reputation: Vec<ReputationUpdate>,
    ) -> Result<(), RegistryError> {
        let Some(authority) = &self.authority else {
            return match &self.jobs_writer {
                Some(writer) => {
                    let finish = Finish { job_id, outcome, settlement, reputation };
                    writer.write(PgUnit::Finish(Box::new(finish))).await
                }
                None => jobs::finish_job(&self.db, job_id, outcome, settlement, reputation).await,
            };
        };
        // Owners who pay part of a win fee from their wallets must be in the book first.
        if let Settlement::Capture(capture) = &settlement {
            for payout in &capture.payouts {
                if let Payee::User(owner) = payout.payee
                    && payout.amount.is_negative()
                {
                    authority.load(owner.0).await?;
                }
            }
        }
        let (open, transfer, releases) = {
            let mut book = authority.lock()?;
            let open =
                book.open.remove(&job_id).ok_or(RegistryError::NotFound { what: "running job" })?;
            match settle(&mut book, &open, &settlement, outcome.finished_at) {
                Ok((transfer, releases)) => (open, transfer, releases),
                Err(err) => {
                    book.open.insert(job_id, open);
                    return Err(err);
                }
            }
        };
        let drawn = open.drawn;
        let mut auction = open.auction;
        let packed_record = crate::jobs::pack_record(&std::mem::take(&mut auction.record));
        let unit = JobUnit {
            job: open.job,
            auction,
            packed_record,
            outcome,
            reputation,
            transfer,
            releases: releases.clone(),
            drawn_line: drawn.map(|(line, _)| line),
        };
        match authority.writer.write(Unit::Job(Box::new(unit))).await {
            Ok(_) => Ok(()),
            Err(err) => {
                // Not committed: the job never happened for money. Free what it held, but
                // a share drawn from a batch line, which the file still says the line holds
                // (the line's end frees it).
                let mut book = authority.lock()?;
                for (account, amount) in releases {
                    book.unreserve(account, amount);
                }
                if let (Some((_, share)), Some((payer, _))) = (drawn, open.hold) {
                    book.unreserve(payer, -share);
                }
                Err(err)
            }
        }
    }

    /// Where this bank keeps reservations.
    fn held_in(&self) -> HeldIn {
        if self.authority.is_some() { HeldIn::Book } else { HeldIn::Database }
    }

    /// Stores a batch and, if it is in progress, reserves the most it may cost
    /// (`batch.reserved`) in one step: `InsufficientCredits` when the owner's available
    /// credits fall short, and nothing is stored.
    pub async fn create_batch(
        &self,
        batch: NewBatch,
        lines: Vec<NewLine>,
    ) -> Result<(), RegistryError> {
        let Some(authority) = &self.authority else {
            return batches::insert_batch(&self.db, batch, lines, HeldIn::Database).await;
        };
        let owner = batch.owner.0;
        let reserve = (batch.status == batches::BatchStatus::InProgress && batch.reserved > 0)
            .then_some(batch.reserved);
        if let Some(amount) = reserve {
            authority.load(owner).await?;
            match authority.lock()?.reserve(owner, amount) {
                Ok(()) => {}
                Err(Short::UnknownAccount) => {
                    return Err(RegistryError::NotFound { what: "account" });
                }
                Err(Short::Available(available)) => {
                    return Err(RegistryError::InsufficientCredits {
                        requested: MicroCredits::from_micros(amount),
                        available: MicroCredits::from_micros(available),
                    });
                }
            }
        }
        let stored = batches::insert_batch(&self.db, batch, lines, HeldIn::Book).await;
        if stored.is_err()
            && let Some(amount) = reserve
        {
            authority.lock()?.unreserve(owner, amount);
        }
        stored
    }

    /// Records how a batch line ended ([`batches::finish_line`]), freeing its share of the
    /// reservation if no job hold drew it.
    pub async fn finish_line(
        &self,
        worker: Uuid,
        line: &ClaimedLine,
        end: LineEnd,
        now_ms: i64,
    ) -> Result<LineRecorded, RegistryError> {
        let recorded =
            batches::finish_line(&self.db, worker, line, end, now_ms, self.held_in()).await?;
        self.follow(vec![(line.owner, recorded.freed)])?;
        Ok(recorded)
    }

    /// Cancels the owner's batch ([`batches::cancel_batch`]), freeing its unstarted lines'
    /// shares of the reservation.
    pub async fn cancel_batch(
        &self,
        owner: UserId,
        id: Uuid,
        now_ms: i64,
    ) -> Result<Option<Batch>, RegistryError> {
        let (batch, freed) =
            batches::cancel_batch(&self.db, owner, id, now_ms, self.held_in()).await?;
        self.follow(freed)?;
        Ok(batch)
    }

    /// Expires and closes batches ([`batches::close_finished`]), freeing expired lines'
    /// shares. Returns how many batches ended.
    pub async fn close_batches(&self, now_ms: i64) -> Result<u64, RegistryError> {
        let (ended, freed) = batches::close_finished(&self.db, now_ms, self.held_in()).await?;
        self.follow(freed)?;
        Ok(ended)
    }

    /// On a SQLite file, makes the book follow reservations a commit freed.
    fn follow(&self, freed: Freed) -> Result<(), RegistryError> {
        if let Some(authority) = &self.authority {
            let mut book = authority.lock()?;
            for (owner, amount) in freed {
                if amount != 0 {
                    book.unreserve(owner.0, amount);
                }
            }
        }
        Ok(())
    }

    /// A wallet's balance, held and available credits.
    pub async fn balance(&self, user: UserId) -> Result<Balance, RegistryError> {
        let Some(authority) = &self.authority else {
            return ledger::balance(&self.db, user).await;
        };
        authority.load(user.0).await?;
        let book = authority.lock()?;
        let wallet =
            book.wallets.get(&user.0).ok_or(RegistryError::NotFound { what: "account" })?;
        Ok(Balance {
            balance: MicroCredits::from_micros(wallet.balance),
            held: MicroCredits::from_micros(wallet.held),
            available: MicroCredits::from_micros(wallet.balance - wallet.held),
        })
    }

    /// Available credits of several wallets; unknown ids are absent.
    pub async fn available_balances(
        &self,
        accounts: &[Uuid],
    ) -> Result<HashMap<Uuid, MicroCredits>, RegistryError> {
        let Some(authority) = &self.authority else {
            return ledger::available_balances(&self.db, accounts).await;
        };
        let missing: Vec<Uuid> = {
            let book = authority.lock()?;
            accounts.iter().filter(|id| !book.wallets.contains_key(id)).copied().collect()
        };
        for account in missing {
            match authority.load(account).await {
                Ok(()) | Err(RegistryError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        let book = authority.lock()?;
        Ok(accounts
            .iter()
            .filter_map(|id| {
                book.wallets.get(id).map(|w| (*id, MicroCredits::from_micros(w.balance - w.held)))
            })
            .collect())
    }

    /// Grants `amount` once for the calendar month containing `now`. Safe to call on every
    /// request: only the first call of the month writes.
    pub async fn ensure_monthly_grant(
        &self,
        user: UserId,
        amount: MicroCredits,
        now: DateTime<Utc>,
    ) -> Result<Applied, RegistryError> {
        let Some(authority) = &self.authority else {
            return ledger::ensure_monthly_grant(&self.db, user, amount, now).await;
        };
        let period = GrantPeriod::containing(now);
        authority.load(user.0).await?;
        {
            let book = authority.lock()?;
            let wallet =
                book.wallets.get(&user.0).ok_or(RegistryError::NotFound { what: "account" })?;
            if wallet.grant_period.as_deref() >= Some(period.as_str()) {
                return Ok(Applied::AlreadyDone);
            }
        }
        let unit = Unit::MonthlyGrant {
            user: user.0,
            period: period.as_str().to_owned(),
            amount: amount.micros(),
            now,
        };
        authority.writer.write(unit).await
    }

    /// Credits a user from the grant source (the operator's grant). The same `transfer_id`
    /// twice grants once.
    pub async fn admin_grant(
        &self,
        user: UserId,
        amount: MicroCredits,
        transfer_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Applied, RegistryError> {
        let Some(authority) = &self.authority else {
            return ledger::admin_grant(&self.db, user, amount, transfer_id, now).await;
        };
        if amount.micros() <= 0 {
            return Err(RegistryError::invalid("credits", "must be positive"));
        }
        authority.load(user.0).await?;
        let unit = Unit::AdminGrant { user: user.0, amount: amount.micros(), transfer_id, now };
        authority.writer.write(unit).await
    }

    /// Ends jobs left open past their hold's expiry (a request that ended before its job, a
    /// bug): each is recorded as failed and its hold freed. On the pooled path, voids expired
    /// holds in the database. Returns how many it ended.
    pub async fn reap_expired(&self, now: DateTime<Utc>) -> Result<u64, RegistryError> {
        let Some(authority) = &self.authority else {
            return ledger::reap_expired_holds(&self.db, now, 1000).await;
        };
        let expired: Vec<Uuid> = {
            let book = authority.lock()?;
            book.open.iter().filter(|(_, open)| open.expires_at < now).map(|(id, _)| *id).collect()
        };
        let mut ended = 0;
        for job_id in expired {
            let outcome = abandoned(now);
            match self.finish(job_id, outcome, Settlement::Nothing, Vec::new()).await {
                Ok(()) => ended += 1,
                // Finished in the meantime.
                Err(RegistryError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(ended)
    }
}

impl Authority {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Book>, RegistryError> {
        self.book.lock().map_err(|_| RegistryError::Storage("the book's lock is poisoned".into()))
    }

    /// Makes sure the account is in the book, reading it through the writer (in order with
    /// its commits) the first time.
    async fn load(&self, account: Uuid) -> Result<(), RegistryError> {
        if self.lock()?.wallets.contains_key(&account) {
            return Ok(());
        }
        self.writer.write(Unit::Load { account }).await.map(|_| ())
    }
}

/// How a job ends for money: the transfer to write, and the reservations (`(account, amount)`)
/// freed once it is written.
type Ending = (Option<TransferRows>, Vec<(Uuid, i64)>);

/// What ending `open` under `settlement` writes and frees. Reserves an owner's negative share
/// in the book; on an error nothing is reserved.
fn settle(
    book: &mut Book,
    open: &OpenJob,
    settlement: &Settlement,
    now: DateTime<Utc>,
) -> Result<Ending, RegistryError> {
    let job_id = open.job.id;
    let capture = match settlement {
        Settlement::Nothing | Settlement::Release => {
            return Ok((None, open.hold.into_iter().collect()));
        }
        Settlement::Capture(capture) => capture,
    };
    let Some((payer, held)) = open.hold else {
        return Err(RegistryError::NotFound { what: "hold" });
    };
    ledger::check_capture(capture)?;
    if capture.charge.micros() > held {
        return Err(RegistryError::Unbalanced(format!(
            "charge {} exceeds the hold of {}",
            capture.charge,
            MicroCredits::from_micros(held)
        )));
    }
    let mut releases = vec![(payer, held)];
    let mut legs = vec![(payer, -capture.charge.micros())];
    for payout in &capture.payouts {
        let account = payout.payee.account();
        let amount = payout.amount.micros();
        if amount < 0 {
            match book.reserve(account, -amount) {
                Ok(()) => releases.push((account, -amount)),
                Err(_) => {
                    for (account, amount) in &releases[1..] {
                        book.unreserve(*account, *amount);
                    }
                    return Err(RegistryError::AccountCannotCover {
                        account,
                        amount: MicroCredits::from_micros(-amount),
                    });
                }
            }
        }
        legs.push((account, amount));
    }
    let transfer = TransferRows {
        kind: ledger::CAPTURE,
        key: format!("capture:{job_id}"),
        job_id: Some(job_id),
        memo: capture.memo.clone(),
        legs,
        now,
    };
    Ok((Some(transfer), releases))
}

/// The record of a job the reaper ended.
fn abandoned(now: DateTime<Utc>) -> JobOutcome {
    JobOutcome::failed(
        "abandoned: the job did not end before its hold expired".into(),
        Vec::new(),
        now,
    )
}
