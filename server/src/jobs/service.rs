//! One job, end to end: candidates from the index, the auction, the hold, dispatch down the
//! ranking, settlement, reputation and the records.
//!
//! Money: the hold covers the most any rank could cost (its price plus the call fee); only
//! the agent that delivers is paid; if none delivers the hold is released and nothing moves.
//! A `recommend` call is charged the call fee alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use auction_engine::reputation::Outcome as AttemptOutcome;
use auction_engine::{
    AgentId, AgentStatus, AuctionInput, AuditRecord, Candidate, Constraints, Job, LiveBid,
    MicroCredits, OwnerId, Ranked, RetiredRecord, sheet_price,
};
use rand::RngCore;
use registry::agents::{Agent, AgentKind, AgentState, Visibility};
use registry::jobs::{
    AuctionEntry, Entrant, JobKind, JobOutcome, JobStatus, NewJob, Served, Settlement,
};
use registry::ledger::{Capture, HoldRequest, LineShare, Payee, Payout};
use registry::{RegistryError, UserId};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::jobs::bids::{self, BidRequest};
use crate::jobs::breaker::Circuit;
use crate::jobs::dispatch::{Delivery, DispatchLimits, dispatch};
use crate::jobs::record::audit_document;
use crate::jobs::request::{JobRequest, Mode, Target};
use crate::jobs::settlement::{
    AttemptFacts, AttemptLog, Conclusion, HeldJob, MAX_STREAM, attempts_summary, conclude,
    delivered_cost, failed_outcome, failure_message,
};
use crate::state::AppState;

/// What a finished job hands back to the route that renders it.
#[derive(Debug)]
pub struct JobResult {
    pub job_id: Uuid,
    /// When the job was received, in Unix seconds (OpenAI's `created`).
    pub created: i64,
    pub auction_id: Uuid,
    pub candidates: usize,
    pub delivered: Option<DeliveredJob>,
    /// `recommend` mode: the shortlist.
    pub shortlist: Option<Vec<Shortlisted>>,
    /// What the caller was charged in total.
    pub total_cost: MicroCredits,
}

#[derive(Debug)]
pub struct DeliveredJob {
    pub agent: Arc<Agent>,
    pub output: Value,
    /// The agent's price for this job (before usage scaling).
    pub clearing_price: MicroCredits,
    pub agent_cost: MicroCredits,
    pub usage: Option<(u64, u64)>,
}

/// One agent of a `recommend` shortlist, best first; amounts are decimal strings of credits.
#[derive(Clone, Debug, Serialize, ToSchema, schemars::JsonSchema)]
pub struct Shortlisted {
    pub rank: usize,
    pub agent: String,
    pub bid: String,
    /// What the agent would be paid if it won.
    pub price: String,
    /// The bid divided by the quality factor: what the auction ranks by.
    pub effective_price: String,
    pub reliability: f64,
    pub reputation: f64,
    pub expected_latency_ms: Option<f64>,
}

/// After the auction: either a job to dispatch, or a finished recommendation.
#[derive(Debug)]
pub enum Prepared {
    Held(Box<HeldJob>),
    Recommended(JobResult),
}

/// Who runs a job: the user who pays, and the API key that authenticated the request (none
/// for an access token or a browser session), for per-key usage.
#[derive(Clone, Copy, Debug)]
pub struct Payer {
    pub user: UserId,
    pub api_key: Option<Uuid>,
}

/// Runs a job for `payer`, start to finish.
pub async fn run_job(
    state: &AppState,
    payer: Payer,
    request: JobRequest,
) -> Result<JobResult, ApiError> {
    match prepare(state, payer, request).await? {
        Prepared::Recommended(result) => Ok(result),
        Prepared::Held(job) => execute(state, *job).await,
    }
}

/// Runs the auction, records it, and places the hold.
pub async fn prepare(
    state: &AppState,
    payer: Payer,
    request: JobRequest,
) -> Result<Prepared, ApiError> {
    let caller = payer.user;
    let now = state.now();
    let now_ms = now.timestamp_millis();
    let auction_id = Uuid::now_v7();
    let (input, agents_by_id) = auction_input(state, caller, &request, auction_id, now_ms).await?;
    let candidate_count = input.candidates.len();
    let record = AuditRecord::new(input);
    let job_id = Uuid::now_v7();
    let audit = audit_document(auction_id, job_id, &record, &agents_by_id);
    let winner = record.outcome.winner();
    let new_job = NewJob {
        id: job_id,
        caller,
        kind: request.kind,
        category: request.category.clone(),
        requested_model: request.requested_model.clone(),
        mode: request.mode.as_str().to_owned(),
        auction_id,
        created_at: now,
        instance: Some(state.instance_id),
        api_key: payer.api_key,
        batch_line: request.batch_line.map(|line| line.id),
    };
    let auction_entry = AuctionEntry {
        id: auction_id,
        category: request.category.clone(),
        winner: winner.map(|w| Uuid::from_u128(w.agent_id.0)),
        clearing_price: winner.map(|w| w.price),
        record: serde_json::to_string(&audit).map_err(ApiError::internal)?,
        // A `recommend` auction is a quote: nobody runs the job or is paid, so it counts in
        // no agent's win rate.
        entrants: match request.mode {
            Mode::Execute => entrants(&record.outcome.ranking),
            Mode::Recommend => Vec::new(),
        },
    };

    let ranking = &record.outcome.ranking;
    if ranking.is_empty() {
        let (constraint, message) = match record.outcome.binding_exclusion() {
            Some(reason) => (
                reason.code(),
                format!(
                    "no eligible agent: the last candidates were excluded because {}",
                    reason.describe()
                ),
            ),
            None => ("category", format!("no agent serves `{}`", request.category)),
        };
        state.bank.open(new_job, auction_entry, None).await?;
        conclude(
            state,
            job_id,
            failed_outcome(state, &message, Vec::new()),
            Conclusion::Nothing,
            Vec::new(),
        )
        .await?;
        state.metrics.job_finished(request.kind.as_str(), "no_eligible_agent");
        return Err(ApiError::NoEligibleAgent {
            constraint: constraint_param(constraint),
            message,
        });
    }

    let call_fee = record.input.parameters.call_fee;
    let win_fee = record.input.parameters.win_fee;
    // Hold the most this job can cost: the dearest rank that may serve plus the call fee (a
    // recommendation costs the call fee alone).
    let serving: Vec<Ranked> =
        if request.allow_fallbacks { ranking.clone() } else { ranking[..1].to_vec() };
    let max_price = match request.mode {
        Mode::Recommend => MicroCredits::ZERO,
        Mode::Execute => serving.iter().map(|r| r.price).max().unwrap_or(MicroCredits::ZERO),
    };
    // A batch line waits for a slot of its winner before it holds anything, so the wait
    // never shortens the hold's life (`agent_slots`).
    let (agent_slot, now) = match (&request.batch_line, request.mode, serving.first()) {
        (Some(_), Mode::Execute, Some(first)) => {
            let winner = Uuid::from_u128(first.agent_id.0);
            (state.agent_slots.acquire(winner).await, state.now())
        }
        _ => (None, now),
    };
    let hold_amount = max_price
        .checked_add(call_fee)
        .ok_or_else(|| ApiError::internal(RegistryError::Overflow))?;
    let hold = (hold_amount > MicroCredits::ZERO).then(|| {
        let request = HoldRequest {
            job_id,
            payer: caller,
            amount: hold_amount,
            // Long enough for every attempt to time out in turn: a hold must never be reaped
            // while its job is still running.
            expires_at: now + hold_lifetime(state, serving.len(), request.stream),
            from_line: request
                .batch_line
                .and_then(|line| line.share.map(|amount| LineShare { line: line.id, amount })),
        };
        (request, Uuid::now_v7())
    });
    // The job, its auction record and its hold are written together.
    if let Err(err) = state.bank.open(new_job.clone(), auction_entry.clone(), hold).await {
        if matches!(err, RegistryError::InsufficientCredits { .. }) {
            state.bank.open(new_job, auction_entry, None).await?;
            conclude(
                state,
                job_id,
                failed_outcome(state, &err.to_string(), Vec::new()),
                Conclusion::Nothing,
                Vec::new(),
            )
            .await?;
            state.metrics.job_finished(request.kind.as_str(), "insufficient_credits");
        }
        return Err(err.into());
    }

    if request.mode == Mode::Recommend {
        let ids = (job_id, auction_id, now.timestamp());
        let result = recommend(state, &request, ids, candidate_count, ranking, call_fee).await?;
        return Ok(Prepared::Recommended(result));
    }
    let half_life_ms = record.input.parameters.half_life_ms;
    Ok(Prepared::Held(Box::new(HeldJob {
        request,
        job_id,
        created: now.timestamp(),
        auction_id,
        candidate_count,
        serving,
        agents: agents_by_id,
        hold_amount,
        call_fee,
        win_fee,
        half_life_ms,
        agent_slot,
    })))
}

/// The auction's input for `request`: the pool (the category's agents, or the named ones, as
/// `caller` may see them), their circuits, live bids (or a batch auction's frozen bids), what
/// each owner can pay, the retired records; and the pool by id.
pub(crate) async fn auction_input(
    state: &AppState,
    caller: UserId,
    request: &JobRequest,
    auction_id: Uuid,
    now_ms: i64,
) -> Result<(AuctionInput, HashMap<Uuid, Arc<Agent>>), ApiError> {
    let snapshot = state.agent_index.snapshot(&state.db, now_ms).await?;

    // The pool: the category's agents, or the named ones. Private agents exist for their
    // owner only, so for anyone else they are not even candidates.
    let visible =
        |agent: &&Arc<Agent>| agent.visibility == Visibility::Public || agent.owner_id == caller;
    let pool: Vec<Arc<Agent>> = match &request.target {
        Target::Category => {
            snapshot.in_category(&request.category).iter().filter(visible).cloned().collect()
        }
        Target::Direct(slugs) => {
            let mut pool = Vec::new();
            for (idx, slug) in slugs.iter().enumerate() {
                match snapshot.by_slug(slug).filter(visible) {
                    Some(agent) => pool.push(Arc::clone(agent)),
                    None if idx == 0 => {
                        return Err(ApiError::validation(
                            "model",
                            format!("no agent named `{slug}`"),
                        ));
                    }
                    None => {
                        return Err(ApiError::validation(
                            "models",
                            format!("no agent named `{slug}`"),
                        ));
                    }
                }
            }
            pool
        }
    };

    let pool = chat_speakers(request, pool)?;

    let clock = std::time::Instant::now();
    let circuits: HashMap<Uuid, Circuit> =
        pool.iter().map(|a| (a.id, state.breakers.circuit(a.id, clock))).collect();
    // Live bids from the agents that could use them, under one deadline.
    let bidders: Vec<Arc<Agent>> = pool
        .iter()
        .filter(|a| {
            a.bid_url.is_some()
                && a.state == AgentState::Active
                && circuits.get(&a.id) != Some(&Circuit::Open)
        })
        .cloned()
        .collect();
    let live_bids = if let Some(frozen) = &request.batch_bids {
        // A batch auction's line: the bids frozen at its deadline, not asked again.
        frozen.iter().map(|(agent, price)| (*agent, LiveBid::Price(*price))).collect()
    } else if bidders.is_empty() {
        HashMap::new()
    } else {
        let request = BidRequest {
            auction_id,
            category: request.category.clone(),
            input_tokens: request.input_tokens,
            output_tokens: request.output_tokens,
            reserve: request.max_price,
        };
        let deadline = Duration::from_millis(state.settings.raw.dispatch.bid_deadline_ms);
        bids::collect(&state.agent_client, &bidders, &request, deadline).await
    };

    let params = state.auction_parameters_for(&request.category);
    let sheet_bids: Vec<MicroCredits> = pool
        .iter()
        .map(|agent| {
            sheet_price(&agent.pricing, request.input_tokens, request.output_tokens)
                .unwrap_or(MicroCredits::ZERO)
        })
        .collect();
    // Only an owner whose sheet bid is below the win fee may have to pay part of it from the
    // wallet: the others' funds cannot change the answer, so they are not read (on Postgres
    // that is a query per job saved in a market whose prices exceed the fee).
    let owners: Vec<Uuid> = pool
        .iter()
        .zip(&sheet_bids)
        .filter(|(_, bid)| **bid < params.win_fee)
        .map(|(agent, _)| agent.owner_id.0)
        .collect();
    let owner_funds = if owners.is_empty() {
        HashMap::new()
    } else {
        state.bank.available_balances(&owners).await?
    };
    let candidates: Vec<Candidate> = pool
        .iter()
        .zip(sheet_bids)
        .map(|(agent, sheet_bid)| {
            let funds = owner_funds.get(&agent.owner_id.0).copied().unwrap_or(MicroCredits::ZERO);
            // The owner pays the win fee out of the price first, then out of the wallet.
            let can_pay = funds.checked_add(sheet_bid).is_some_and(|total| total >= params.win_fee);
            Candidate {
                agent_id: AgentId(agent.id.as_u128()),
                owner_id: OwnerId(agent.owner_id.0.as_u128()),
                slug: agent.slug.as_str().into(),
                categories: agent.categories.clone(),
                features: agent.features.clone(),
                regions: agent.regions.clone(),
                max_latency_ms: agent.max_latency_ms,
                context_length: agent.context_length,
                sheet: agent.pricing,
                live_bid: live_bids.get(&agent.id).copied(),
                reputation: agent.reputation,
                status: match (agent.state, circuits.get(&agent.id)) {
                    (AgentState::Paused, _) => AgentStatus::Paused,
                    (AgentState::Active, Some(Circuit::Open)) => AgentStatus::CircuitOpen,
                    (AgentState::Active, _) => AgentStatus::Active,
                },
                ratings: agent.ratings,
                owner_can_pay_win_fee: can_pay,
            }
        })
        .collect();
    let agents_by_id: HashMap<Uuid, Arc<Agent>> =
        pool.iter().map(|a| (a.id, Arc::clone(a))).collect();

    // Drawn here and dropped at once: the thread's generator must not live across an await
    // (the job's future is `Send`, as the MCP tools need).
    let (nonce, seed) = {
        let mut rng = rand::rng();
        (rng.next_u64(), rng.next_u64())
    };
    let input = AuctionInput {
        nonce,
        seed,
        now_ms,
        job: Job {
            category: request.category.clone(),
            input_tokens: request.input_tokens,
            output_tokens: request.output_tokens,
            required_features: request.required_features.clone(),
        },
        constraints: Constraints {
            max_price: request.max_price,
            regions: request.regions.clone(),
            max_latency_ms: request.max_latency_ms,
            min_reputation: request.min_reputation,
            only: request.only.clone(),
            ignore: request.ignore.clone(),
            objective: request.objective,
            routing: request.routing.clone(),
        },
        candidates,
        // Records of deleted agents stay their owners': a failing owner does not start afresh
        // by deleting an agent and registering it again.
        retired: snapshot
            .retired_in(&request.category)
            .iter()
            .map(|(owner, reputation)| RetiredRecord {
                owner_id: OwnerId(owner.0.as_u128()),
                reputation: *reputation,
            })
            .collect(),
        parameters: params,
    };
    Ok((input, agents_by_id))
}

/// A chat job only reaches `openai-chat` agents: a named JSON agent is refused by name, and
/// a category whose agents are all JSON agents is refused as a whole, before any auction or
/// hold, so nothing is charged. JSON agents in a mixed category are simply not candidates.
fn chat_speakers(request: &JobRequest, pool: Vec<Arc<Agent>>) -> Result<Vec<Arc<Agent>>, ApiError> {
    if request.kind != JobKind::Chat {
        return Ok(pool);
    }
    if let Target::Direct(_) = request.target
        && let Some((idx, agent)) =
            pool.iter().enumerate().find(|(_, a)| a.kind != AgentKind::OpenAiChat)
    {
        return Err(ApiError::NoEligibleAgent {
            constraint: if idx == 0 { "model" } else { "models" }.to_owned(),
            message: format!(
                "`{}` is a {} agent, not a chat agent: send its jobs to POST /v1/jobs",
                agent.slug,
                agent.kind.as_str()
            ),
        });
    }
    let before = pool.len();
    let speakers: Vec<Arc<Agent>> =
        pool.into_iter().filter(|a| a.kind == AgentKind::OpenAiChat).collect();
    if speakers.is_empty() && before > 0 {
        return Err(ApiError::NoEligibleAgent {
            constraint: "model".to_owned(),
            message: format!(
                "no agent of `{category}` takes chat completions (its {before} agent(s) are JSON agents): \
                 send the job to POST /v1/jobs with \"category\": \"{category}\"",
                category = request.category
            ),
        });
    }
    Ok(speakers)
}

/// Dispatches a held job down its ranking until an agent delivers, then settles.
async fn execute(state: &AppState, job: HeldJob) -> Result<JobResult, ApiError> {
    let limits = DispatchLimits {
        timeout: Duration::from_millis(state.settings.raw.dispatch.timeout_ms),
        max_response_bytes: state.settings.raw.dispatch.max_response_bytes,
    };
    let mut log = AttemptLog::default();
    let idempotency_key = job.request.batch_line.map(|line| format!("batch_line_{}", line.id));
    for ranked in &job.serving {
        let agent_id = Uuid::from_u128(ranked.agent_id.0);
        let Some(agent) = job.agents.get(&agent_id) else { continue };
        let started_at = state.now();
        let (delivery, elapsed) = dispatch(
            &state.agent_client,
            agent,
            &job.request.payload,
            limits,
            idempotency_key.as_deref(),
        )
        .await;
        let latency_ms = elapsed.as_millis() as u64;
        let facts = AttemptFacts { ranked, agent, started_at, latency_ms };
        let (output, usage) = match delivery {
            Delivery::Failed { outcome, http_status, code } => {
                log.failed(state, &job, &facts, (outcome, http_status, code));
                continue;
            }
            Delivery::Delivered { output, usage } => (output, usage),
        };
        log.delivered(state, &job, &facts, (AttemptOutcome::Success, None), true);
        let usage = usage.map(|reported| job.request.validated_usage(reported));
        let agent_cost = delivered_cost(&job, agent, ranked, usage);
        let outcome = JobOutcome {
            status: JobStatus::Delivered,
            served: Some(Served {
                agent_id,
                agent_slug: agent.slug.clone(),
                owner: agent.owner_id,
            }),
            clearing_price: Some(ranked.price),
            agent_cost,
            call_fee: job.call_fee,
            win_fee: job.win_fee,
            total_cost: MicroCredits::ZERO,
            input_tokens: Some(usage.map_or(job.request.input_tokens, |u| u.0)),
            output_tokens: usage.map(|u| u.1),
            latency_ms: Some(latency_ms),
            output: Some(output.to_string()),
            error: None,
            attempts: log.attempts,
            finished_at: state.now(),
        };
        let charge = Conclusion::Charge { agent, held: job.hold_amount > MicroCredits::ZERO };
        let total_cost = conclude(state, job.job_id, outcome, charge, log.reputation).await?;
        state.observe_clearing_price(&job.request.category, ranked);
        state.metrics.job_finished(job.request.kind.as_str(), "delivered");
        return Ok(JobResult {
            job_id: job.job_id,
            created: job.created,
            auction_id: job.auction_id,
            candidates: job.candidate_count,
            delivered: Some(DeliveredJob {
                agent: Arc::clone(agent),
                output,
                clearing_price: ranked.price,
                agent_cost,
                usage,
            }),
            shortlist: None,
            total_cost,
        });
    }

    // Nobody delivered: nothing is charged.
    let summary = attempts_summary(&log.attempts);
    let message = failure_message(&log.attempts);
    let rejected = log.nobody_delivered(state, &job);
    let release = if job.hold_amount > MicroCredits::ZERO {
        Conclusion::Release
    } else {
        Conclusion::Nothing
    };
    let outcome = failed_outcome(state, &message, log.attempts);
    conclude(state, job.job_id, outcome, release, log.reputation).await?;
    state.metrics.job_finished(job.request.kind.as_str(), "all_failed");
    if rejected {
        return Err(ApiError::RejectedByAgents { message, attempts: summary });
    }
    Err(ApiError::UpstreamFailed { message, attempts: summary })
}

async fn recommend(
    state: &AppState,
    request: &JobRequest,
    (job_id, auction_id, created): (Uuid, Uuid, i64),
    candidate_count: usize,
    ranking: &[Ranked],
    call_fee: MicroCredits,
) -> Result<JobResult, ApiError> {
    let shortlist: Vec<Shortlisted> = ranking
        .iter()
        .take(request.top_k)
        .map(|r| Shortlisted {
            rank: r.rank,
            agent: r.slug.to_string(),
            bid: r.bid.to_string(),
            price: r.price.to_string(),
            effective_price: MicroCredits::from_micros(r.effective_price).to_string(),
            reliability: r.quality.reliability_mean,
            reputation: r.quality.reliability_lower_bound,
            expected_latency_ms: r.quality.expected_latency_ms,
        })
        .collect();
    let outcome = JobOutcome {
        status: JobStatus::Recommended,
        served: None,
        clearing_price: ranking.first().map(|r| r.price),
        agent_cost: MicroCredits::ZERO,
        call_fee,
        win_fee: MicroCredits::ZERO,
        total_cost: call_fee,
        input_tokens: Some(request.input_tokens),
        output_tokens: None,
        latency_ms: None,
        output: Some(serde_json::to_string(&shortlist).map_err(ApiError::internal)?),
        error: None,
        attempts: Vec::new(),
        finished_at: state.now(),
    };
    let settlement = if call_fee > MicroCredits::ZERO {
        Settlement::Capture(Capture {
            job_id,
            charge: call_fee,
            payouts: vec![Payout { payee: Payee::PlatformRevenue, amount: call_fee }],
            memo: Some("auction recommendation".into()),
        })
    } else {
        Settlement::Nothing
    };
    state.bank.finish(job_id, outcome, settlement, Vec::new()).await?;
    state.metrics.job_finished(request.kind.as_str(), "recommended");
    Ok(JobResult {
        job_id,
        created,
        auction_id,
        candidates: candidate_count,
        delivered: None,
        shortlist: Some(shortlist),
        total_cost: call_fee,
    })
}

/// How long a job's hold lives: the configured TTL, or longer when the fallback chain could
/// take longer than that.
/// The agents in an auction's ranking, for the owners' figures.
fn entrants(ranking: &[Ranked]) -> Vec<Entrant> {
    ranking
        .iter()
        .map(|r| Entrant {
            agent_id: Uuid::from_u128(r.agent_id.0),
            rank: u32::try_from(r.rank).unwrap_or(u32::MAX),
            bid: r.bid,
            price: r.price,
        })
        .collect()
}

fn hold_lifetime(state: &AppState, attempts: usize, stream: bool) -> chrono::Duration {
    let configured = state.settings.raw.credits.hold_ttl_secs.saturating_mul(1000);
    // A stream may run for up to `settlement::MAX_STREAM` once it has started.
    let streaming = if stream { MAX_STREAM.as_millis() as u64 } else { 0 };
    let worst_case = state
        .settings
        .raw
        .dispatch
        .timeout_ms
        .saturating_mul(attempts as u64)
        .saturating_add(streaming)
        .saturating_add(60_000);
    chrono::Duration::milliseconds(configured.max(worst_case).min(i64::MAX as u64) as i64)
}

/// The request field a caller would change to get past an exclusion; empty when no field of
/// the request is to blame.
fn constraint_param(code: &str) -> String {
    match code {
        "max_price" => "auction.max_price",
        "max_latency" => "auction.require.max_latency_ms",
        "min_reputation" => "auction.require.min_reputation",
        "region" => "auction.require.regions",
        "missing_features" => "auction.require.features",
        "not_in_only" => "provider.only",
        "ignored" => "provider.ignore",
        "context_length" => "max_tokens",
        "category" => "model",
        // Paused, circuit open, no bid, owner short of the win fee: nothing the caller sent.
        _ => "",
    }
    .to_owned()
}
