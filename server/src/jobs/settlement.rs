//! The money rules of a job, shared by the JSON path (`service`) and the streaming relay
//! (`stream`): what a delivered job costs, who is blamed for failed attempts, and how a job's
//! money ends (capture, release, nothing) in the same transaction as its record. Neither
//! caller decides any of this on its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use auction_engine::reputation::Outcome as AttemptOutcome;
use auction_engine::{MicroCredits, Ranked, settle_on_usage, sheet_price, split};
use chrono::{DateTime, Utc};
use registry::RegistryError;
use registry::agents::Agent;
use registry::jobs::{Attempt, JobOutcome, ReputationUpdate, Settlement};
use registry::ledger::{Capture, Payee, Payout};
use uuid::Uuid;

use crate::error::{ApiError, FailedAttempt};
use crate::jobs::dispatch::outcome_word;
use crate::jobs::request::JobRequest;
use crate::state::AppState;

/// The longest a relayed stream may last once started; its hold lives at least this long.
pub const MAX_STREAM: Duration = Duration::from_secs(3600);

/// A job whose auction has run and whose hold is placed: ready to dispatch.
#[derive(Debug)]
pub struct HeldJob {
    pub request: JobRequest,
    pub job_id: Uuid,
    /// When the job was received, in Unix seconds (OpenAI's `created`).
    pub created: i64,
    pub auction_id: Uuid,
    pub candidate_count: usize,
    /// The ranks that may serve, in order.
    pub serving: Vec<Ranked>,
    pub agents: HashMap<Uuid, Arc<Agent>>,
    pub hold_amount: MicroCredits,
    pub call_fee: MicroCredits,
    pub win_fee: MicroCredits,
    pub half_life_ms: i64,
    /// A batch line's slot of its winning agent, freed when the job ends.
    pub agent_slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Whether an agent's answer says the *request* was bad (400, 413, 415, 422) rather than the
/// agent: such a failure may be the caller's doing.
fn rejects_input(http_status: Option<u16>) -> bool {
    matches!(http_status, Some(400 | 413 | 415 | 422))
}

/// Who takes the blame for failed attempts. A failure that rejects the input is held back:
/// if another agent delivers the same input, the rejecting one was at fault and its breaker
/// and reputation take it; if every agent rejected it, the input was the caller's fault and no
/// agent pays for it. So no caller can knock an agent out with bad requests.
#[derive(Default)]
struct Verdicts {
    held: Vec<(Uuid, AttemptOutcome, u64)>,
    others: usize,
}

impl Verdicts {
    /// Records one attempt's outcome, or holds it back when it rejected the input.
    #[expect(clippy::too_many_arguments, reason = "one attempt's facts, passed as they are")]
    fn attempted(
        &mut self,
        state: &AppState,
        job: &HeldJob,
        agent: Uuid,
        outcome: AttemptOutcome,
        http_status: Option<u16>,
        latency_ms: u64,
        reputation: &mut Vec<ReputationUpdate>,
    ) {
        if outcome != AttemptOutcome::Success && rejects_input(http_status) {
            self.held.push((agent, outcome, latency_ms));
            return;
        }
        if outcome != AttemptOutcome::Success {
            self.others += 1;
        }
        state.breakers.record(agent, outcome == AttemptOutcome::Success, std::time::Instant::now());
        reputation.push(reputation_update(state, job, agent, outcome, latency_ms));
    }

    /// Another agent took the same input: the rejections were the agents' fault.
    fn someone_delivered(
        &mut self,
        state: &AppState,
        job: &HeldJob,
        reputation: &mut Vec<ReputationUpdate>,
    ) {
        for (agent, outcome, latency_ms) in self.held.drain(..) {
            state.breakers.record(agent, false, std::time::Instant::now());
            reputation.push(reputation_update(state, job, agent, outcome, latency_ms));
        }
    }

    /// Nobody delivered. Returns whether every attempt rejected the input (the caller's fault:
    /// nobody is blamed); otherwise the held rejections count like any failure.
    fn nobody_delivered(
        &mut self,
        state: &AppState,
        job: &HeldJob,
        reputation: &mut Vec<ReputationUpdate>,
    ) -> bool {
        if self.others == 0 && !self.held.is_empty() {
            self.held.clear();
            return true;
        }
        self.someone_delivered(state, job, reputation);
        false
    }
}

/// One attempt as it happened: which rank and agent, when it started and how long it took.
pub(crate) struct AttemptFacts<'a> {
    pub(crate) ranked: &'a Ranked,
    pub(crate) agent: &'a Agent,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) latency_ms: u64,
}

impl AttemptFacts<'_> {
    fn row(
        &self,
        outcome: AttemptOutcome,
        http_status: Option<u16>,
        code: Option<String>,
    ) -> Attempt {
        Attempt {
            rank: self.ranked.rank as u32,
            agent_id: self.agent.id,
            agent_slug: self.agent.slug.clone(),
            price: self.ranked.price,
            outcome: outcome_word(outcome).to_owned(),
            http_status,
            error_code: code,
            latency_ms: self.latency_ms,
            started_at: self.started_at,
        }
    }
}

/// The one attempt recorder of both relays (JSON and streamed): each attempt's row, its
/// verdict (see [`Verdicts`]) and the reputation updates the job's end writes.
#[derive(Default)]
pub(crate) struct AttemptLog {
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) reputation: Vec<ReputationUpdate>,
    verdicts: Verdicts,
}

impl AttemptLog {
    /// An attempt that failed before delivering anything: judged, then recorded.
    pub(crate) fn failed(
        &mut self,
        state: &AppState,
        job: &HeldJob,
        facts: &AttemptFacts<'_>,
        (outcome, http_status, code): (AttemptOutcome, Option<u16>, String),
    ) {
        let agent = facts.agent.id;
        let reputation = &mut self.reputation;
        self.verdicts.attempted(
            state,
            job,
            agent,
            outcome,
            http_status,
            facts.latency_ms,
            reputation,
        );
        self.attempts.push(facts.row(outcome, http_status, Some(code)));
    }

    /// An attempt that delivered (a stream: started to). Rejections held back land on the
    /// agents that made them; the attempt's own outcome is judged when `judged` (a caller who
    /// left is not the agent's doing).
    pub(crate) fn delivered(
        &mut self,
        state: &AppState,
        job: &HeldJob,
        facts: &AttemptFacts<'_>,
        (outcome, code): (AttemptOutcome, Option<String>),
        judged: bool,
    ) {
        self.verdicts.someone_delivered(state, job, &mut self.reputation);
        if judged {
            let agent = facts.agent.id;
            let success = outcome == AttemptOutcome::Success;
            state.breakers.record(agent, success, std::time::Instant::now());
            self.reputation.push(reputation_update(state, job, agent, outcome, facts.latency_ms));
        }
        self.attempts.push(facts.row(outcome, None, code));
    }

    /// The caller left before the attempt delivered: recorded, nobody judged.
    pub(crate) fn caller_left(&mut self, facts: &AttemptFacts<'_>) {
        let row = facts.row(AttemptOutcome::Error, None, Some("caller_disconnected".into()));
        self.attempts.push(row);
    }

    /// Nobody delivered: whether every attempt rejected the input (see [`Verdicts`]).
    pub(crate) fn nobody_delivered(&mut self, state: &AppState, job: &HeldJob) -> bool {
        self.verdicts.nobody_delivered(state, job, &mut self.reputation)
    }
}

/// What the caller pays an agent that delivered: its price, scaled by the (validated) usage it
/// reported against the sheet's estimate (`settle_on_usage`), never above its own price for
/// this job: the hold covers the dearest rank, but no agent is paid another rank's price. A
/// flat-priced sheet costs the same at any usage, so its scaling is exactly 1.
pub(crate) fn delivered_cost(
    job: &HeldJob,
    agent: &Agent,
    ranked: &Ranked,
    usage: Option<(u64, u64)>,
) -> MicroCredits {
    let cap = serving_cap(job, ranked);
    match usage {
        Some((prompt, completion)) => {
            let actual =
                sheet_price(&agent.pricing, prompt, completion).unwrap_or(ranked.sheet_price);
            settle_on_usage(ranked.price, ranked.sheet_price, actual, cap)
        }
        None => ranked.price.min(cap),
    }
}

/// The most a job served by `ranked` may cost the caller before fees: that rank's own price,
/// within what the hold covers.
pub(crate) fn serving_cap(job: &HeldJob, ranked: &Ranked) -> MicroCredits {
    let held = job.hold_amount.checked_sub(job.call_fee).unwrap_or(MicroCredits::ZERO);
    ranked.price.min(held)
}

/// The attempts as the 502 body lists them.
pub(crate) fn attempts_summary(attempts: &[Attempt]) -> Vec<FailedAttempt> {
    attempts
        .iter()
        .map(|a| FailedAttempt {
            rank: a.rank,
            agent: a.agent_slug.clone(),
            outcome: a.outcome.clone(),
            http_status: a.http_status,
            error: a.error_code.clone(),
            latency_ms: a.latency_ms,
        })
        .collect()
}

/// "all 2 agent(s) failed: a/x (http_500), b/y (timeout)".
pub(crate) fn failure_message(attempts: &[Attempt]) -> String {
    format!(
        "all {} agent(s) failed: {}",
        attempts.len(),
        attempts
            .iter()
            .map(|a| format!(
                "{} ({})",
                a.agent_slug,
                a.error_code.as_deref().unwrap_or(&a.outcome)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// One attempt's reputation update, written when the job concludes.
fn reputation_update(
    state: &AppState,
    job: &HeldJob,
    agent: Uuid,
    outcome: AttemptOutcome,
    latency_ms: u64,
) -> ReputationUpdate {
    ReputationUpdate {
        agent,
        outcome,
        latency_ms: latency_ms as f64,
        now_ms: state.now().timestamp_millis(),
        half_life_ms: job.half_life_ms,
    }
}

/// A failed job's outcome: nothing charged.
pub(crate) fn failed_outcome(
    state: &AppState,
    message: &str,
    attempts: Vec<Attempt>,
) -> JobOutcome {
    JobOutcome::failed(message.to_owned(), attempts, state.now())
}

/// How a job's money ends.
pub(crate) enum Conclusion<'a> {
    /// The agent delivered: charge `outcome.agent_cost` with `outcome.call_fee` and
    /// `outcome.win_fee`. `held` says whether a hold exists to capture from.
    Charge { agent: &'a Agent, held: bool },
    /// Nobody delivered: free the hold.
    Release,
    /// There is no hold.
    Nothing,
}

/// Ends a job: reputation, settlement and record in one transaction. A delivered job's caller
/// pays `agent_cost + call_fee`, the owner receives `agent_cost - win_fee`, the platform both
/// fees. Returns what the caller paid.
pub(crate) async fn conclude(
    state: &AppState,
    job_id: Uuid,
    mut outcome: JobOutcome,
    conclusion: Conclusion<'_>,
    reputation: Vec<ReputationUpdate>,
) -> Result<MicroCredits, ApiError> {
    let (agent, held) = match conclusion {
        Conclusion::Release => {
            state.bank.finish(job_id, outcome, Settlement::Release, reputation).await?;
            return Ok(MicroCredits::ZERO);
        }
        Conclusion::Nothing => {
            state.bank.finish(job_id, outcome, Settlement::Nothing, reputation).await?;
            return Ok(MicroCredits::ZERO);
        }
        Conclusion::Charge { agent, held } => (agent, held),
    };
    let parts = split(outcome.agent_cost, outcome.call_fee, outcome.win_fee)
        .ok_or_else(|| ApiError::internal(RegistryError::Overflow))?;
    outcome.total_cost = parts.caller_pays;
    if parts.caller_pays == MicroCredits::ZERO {
        let settlement = if held { Settlement::Release } else { Settlement::Nothing };
        state.bank.finish(job_id, outcome, settlement, reputation).await?;
        return Ok(MicroCredits::ZERO);
    }
    let capture = |owner_share: MicroCredits, note: &str| Capture {
        job_id,
        charge: parts.caller_pays,
        payouts: vec![
            Payout { payee: Payee::User(agent.owner_id), amount: owner_share },
            Payout {
                payee: Payee::PlatformRevenue,
                amount: parts.caller_pays.checked_sub(owner_share).unwrap_or(MicroCredits::ZERO),
            },
        ],
        memo: Some(format!("job served by {}{note}", agent.slug)),
    };
    let full = capture(parts.owner_receives, "");
    // Only a negative owner share (a win fee above the price) can fail for want of funds; any
    // other capture is covered by the hold, so the common path keeps no copy for a retry.
    if !parts.owner_receives.is_negative() {
        state.bank.finish(job_id, outcome, Settlement::Capture(full), reputation).await?;
        return Ok(parts.caller_pays);
    }
    match state
        .bank
        .finish(job_id, outcome.clone(), Settlement::Capture(full), reputation.clone())
        .await
    {
        Ok(()) => Ok(parts.caller_pays),
        // The owner's wallet fell short of the win fee between the auction and now: the fee is
        // waived down to what the price covers, so the caller still pays what it agreed.
        Err(RegistryError::AccountCannotCover { .. }) => {
            let reduced = capture(MicroCredits::ZERO, " (win fee reduced)");
            state.bank.finish(job_id, outcome, Settlement::Capture(reduced), reputation).await?;
            Ok(parts.caller_pays)
        }
        Err(err) => Err(err.into()),
    }
}
