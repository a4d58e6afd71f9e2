//! The auction itself: eligibility, bids, quality, scores, ranking and clearing prices.
//!
//! `run` is a pure function of an `AuctionInput`; see the crate docs for the formulas.

use std::cmp::Ordering;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::MicroCredits;
use crate::inputs::{
    AgentId, AgentStatus, AuctionInput, Candidate, LiveBid, Mechanism, NoBidReason, Objective,
    OwnerId, Routing, SortBy,
};
use crate::pricing::sheet_price;

/// Why a candidate did not compete. Listed in the order the checks run.
#[derive(Clone, Debug, PartialEq)]
pub enum ExclusionReason {
    Paused,
    CircuitOpen,
    WrongCategory,
    NotInOnlyList,
    IgnoredByCaller,
    MissingFeatures(Vec<String>),
    RegionNotServed,
    ContextTooSmall { needed: u64, context_length: u64 },
    TooSlow { expected_ms: u32, max_latency_ms: u32 },
    ReputationBelowMinimum { lower_bound: f64, minimum: f64 },
    NoPrice,
    NoBid(NoBidReason),
    LiveBidAboveSheet { bid: MicroCredits, sheet: MicroCredits },
    PriceAboveMax { bid: MicroCredits, max_price: MicroCredits },
    OwnerCannotPayWinFee,
}

impl ExclusionReason {
    /// A stable snake_case code for APIs and records.
    pub fn code(&self) -> &'static str {
        match self {
            ExclusionReason::Paused => "paused",
            ExclusionReason::CircuitOpen => "circuit_open",
            ExclusionReason::WrongCategory => "category",
            ExclusionReason::NotInOnlyList => "not_in_only",
            ExclusionReason::IgnoredByCaller => "ignored",
            ExclusionReason::MissingFeatures(_) => "missing_features",
            ExclusionReason::RegionNotServed => "region",
            ExclusionReason::ContextTooSmall { .. } => "context_length",
            ExclusionReason::TooSlow { .. } => "max_latency",
            ExclusionReason::ReputationBelowMinimum { .. } => "min_reputation",
            ExclusionReason::NoPrice => "no_price",
            ExclusionReason::NoBid(NoBidReason::Declined) => "no_bid_declined",
            ExclusionReason::NoBid(NoBidReason::Late) => "no_bid_late",
            ExclusionReason::NoBid(NoBidReason::Malformed) => "no_bid_malformed",
            ExclusionReason::NoBid(NoBidReason::Unreachable) => "no_bid_unreachable",
            ExclusionReason::LiveBidAboveSheet { .. } => "live_bid_above_sheet",
            ExclusionReason::PriceAboveMax { .. } => "max_price",
            ExclusionReason::OwnerCannotPayWinFee => "owner_cannot_pay_win_fee",
        }
    }

    /// A sentence for people.
    pub fn describe(&self) -> String {
        match self {
            ExclusionReason::Paused => "the agent is paused".into(),
            ExclusionReason::CircuitOpen => {
                "the agent's circuit breaker is open after repeated failures".into()
            }
            ExclusionReason::WrongCategory => "the agent does not serve this category".into(),
            ExclusionReason::NotInOnlyList => "the caller's `only` list does not name it".into(),
            ExclusionReason::IgnoredByCaller => "the caller's `ignore` list names it".into(),
            ExclusionReason::MissingFeatures(missing) => {
                format!("it lacks required features: {}", missing.join(", "))
            }
            ExclusionReason::RegionNotServed => "it serves none of the required regions".into(),
            ExclusionReason::ContextTooSmall { needed, context_length } => {
                format!("the job needs {needed} tokens of context, it has {context_length}")
            }
            ExclusionReason::TooSlow { expected_ms, max_latency_ms } => {
                format!(
                    "its expected latency {expected_ms} ms exceeds the maximum {max_latency_ms} ms"
                )
            }
            ExclusionReason::ReputationBelowMinimum { lower_bound, minimum } => {
                format!("its reputation {lower_bound:.3} is below the minimum {minimum:.3}")
            }
            ExclusionReason::NoPrice => "its price sheet gives no finite price for this job".into(),
            ExclusionReason::NoBid(reason) => format!("no live bid ({reason:?})").to_lowercase(),
            ExclusionReason::LiveBidAboveSheet { bid, sheet } => {
                format!("its live bid {bid} is above its sheet price {sheet}")
            }
            ExclusionReason::PriceAboveMax { bid, max_price } => {
                format!("its price {bid} is above the caller's max price {max_price}")
            }
            ExclusionReason::OwnerCannotPayWinFee => "its owner cannot pay the win fee".into(),
        }
    }

    /// How far down the checks this reason sits; the deepest reason that excluded anyone is
    /// the constraint that emptied the auction.
    fn stage(&self) -> u8 {
        match self {
            ExclusionReason::Paused | ExclusionReason::CircuitOpen => 0,
            ExclusionReason::WrongCategory => 1,
            ExclusionReason::NotInOnlyList | ExclusionReason::IgnoredByCaller => 2,
            ExclusionReason::MissingFeatures(_) => 3,
            ExclusionReason::RegionNotServed => 4,
            ExclusionReason::ContextTooSmall { .. } => 5,
            ExclusionReason::TooSlow { .. } => 6,
            ExclusionReason::ReputationBelowMinimum { .. } => 7,
            ExclusionReason::NoPrice
            | ExclusionReason::NoBid(_)
            | ExclusionReason::LiveBidAboveSheet { .. } => 8,
            ExclusionReason::PriceAboveMax { .. } => 9,
            ExclusionReason::OwnerCannotPayWinFee => 10,
        }
    }
}

/// A candidate that did not compete, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Exclusion {
    pub agent_id: AgentId,
    pub owner_id: OwnerId,
    pub slug: Arc<str>,
    pub reason: ExclusionReason,
}

/// Where a reliability figure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReliabilitySource {
    LowerBound,
    ThompsonDraw,
}

/// The quality term of one agent, component by component.
#[derive(Clone, Debug, PartialEq)]
pub struct Quality {
    /// Success probability used (lower bound, or a Thompson draw when exploring).
    pub reliability: f64,
    pub reliability_source: ReliabilitySource,
    /// The posterior lower bound, whatever was used to score.
    pub reliability_lower_bound: f64,
    /// Expected latency used; `None` when the agent has never been observed.
    pub expected_latency_ms: Option<f64>,
    /// `w_rel x V x reliability`, in micro-credits.
    pub reliability_credit: i64,
    /// `w_lat x V x min(1, latency / L_ref)`, in micro-credits.
    pub latency_penalty: i64,
    /// `reliability_credit - latency_penalty`.
    pub total: i64,
}

/// Where a bid came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BidSource {
    Sheet,
    Live,
}

/// How a clearing price was set.
#[derive(Clone, Debug, PartialEq)]
pub enum PriceBasis {
    /// Second score: the highest bid at which this agent still beats `runner_up`, the best
    /// remaining agent of another owner (`Q_w - S_2`).
    SecondScore { runner_up: AgentId, runner_up_slug: Arc<str>, runner_up_score: i64 },
    /// The reserve, because it is lower than the second-score threshold or because no agent
    /// of another owner competes.
    Reserve { reserve: MicroCredits, runner_up: Option<AgentId> },
    /// The agent's own bid: first-price mechanism, routing modes, or a lone bidder with no
    /// reserve to pay instead.
    OwnBid,
}

/// One agent in the ranking, with the price it is paid if it is the one that delivers.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    /// 1-based.
    pub rank: usize,
    pub agent_id: AgentId,
    pub owner_id: OwnerId,
    pub slug: Arc<str>,
    pub sheet_price: MicroCredits,
    pub bid: MicroCredits,
    pub bid_source: BidSource,
    pub quality: Quality,
    /// `S = Q - b`, in micro-credits.
    pub score: i64,
    pub price: MicroCredits,
    pub price_basis: PriceBasis,
}

/// The result of an auction: the ranking (rank 1 is the winner; the rest are the fallback
/// order, each with its own price) and every excluded candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub ranking: Vec<Ranked>,
    pub exclusions: Vec<Exclusion>,
    /// Whether this auction scored on Thompson draws.
    pub explored: bool,
    /// `V`, the job value scaling the quality term.
    pub job_value: MicroCredits,
    /// The effective reserve (caller's max price, capped by the reference price).
    pub reserve: Option<MicroCredits>,
}

impl Outcome {
    pub fn winner(&self) -> Option<&Ranked> {
        self.ranking.first()
    }

    /// When nobody is eligible: the deepest check that excluded a candidate, i.e. the
    /// constraint that removed the last ones standing.
    pub fn binding_exclusion(&self) -> Option<&ExclusionReason> {
        self.exclusions.iter().map(|e| &e.reason).max_by_key(|reason| reason.stage())
    }
}

/// Weights of the quality term per objective: (reliability, latency).
fn weights(objective: Objective) -> (f64, f64) {
    match objective {
        Objective::Balanced => (1.0, 0.25),
        Objective::Cost => (0.0, 0.0),
        Objective::Quality => (4.0, 0.25),
        Objective::Latency => (1.0, 2.0),
    }
}

/// An eligible candidate before ranking.
struct Contender<'a> {
    candidate: &'a Candidate,
    sheet_price: MicroCredits,
    bid: MicroCredits,
    bid_source: BidSource,
    quality: Quality,
    score: i64,
    nonce: u64,
}

/// Runs one auction. Pure: the same input always gives the same outcome, whatever order the
/// candidates come in.
pub fn run(input: &AuctionInput) -> Outcome {
    let params = &input.parameters;
    let constraints = &input.constraints;
    let prior = (params.prior_successes, params.prior_failures);

    // Nothing below depends on the order candidates come in: the ranking's sort is total (it
    // ends on the agent id), exploration draws come from per-agent streams, and exclusions are
    // sorted by agent id at the end.

    let job_value =
        constraints.max_price.or(params.reference_price).unwrap_or(params.default_job_value);
    let reference_cap = params
        .reference_price
        .and_then(|p| i64::from(params.reference_multiplier).checked_mul(p.micros()))
        .map(MicroCredits::from_micros);
    let reserve = match (constraints.max_price, reference_cap) {
        (Some(max), Some(cap)) => Some(max.min(cap)),
        (Some(max), None) => Some(max),
        (None, cap) => cap,
    };

    let mut explore_rng = ChaCha8Rng::seed_from_u64(input.seed);
    let explored =
        params.exploration_rate > 0.0 && explore_rng.random::<f64>() < params.exploration_rate;

    let mut contenders = Vec::new();
    let mut exclusions = Vec::new();
    for candidate in &input.candidates {
        let posterior = candidate.reputation.posterior(input.now_ms, params.half_life_ms, prior);
        let lower_bound = posterior.lower_bound();
        match check_eligibility(input, candidate, lower_bound) {
            Err(reason) => exclusions.push(Exclusion {
                agent_id: candidate.agent_id,
                owner_id: candidate.owner_id,
                slug: candidate.slug.clone(),
                reason,
            }),
            Ok((sheet_price, bid, bid_source)) => {
                let (reliability, source) = if explored {
                    // Each agent's draw comes from its own stream, so it depends on neither the
                    // bids nor which other agents are eligible.
                    let mut rng = ChaCha8Rng::seed_from_u64(input.seed ^ mix(candidate.agent_id.0));
                    (posterior.sample(&mut rng), ReliabilitySource::ThompsonDraw)
                } else {
                    (lower_bound, ReliabilitySource::LowerBound)
                };
                let quality = quality(
                    constraints.objective,
                    job_value,
                    reliability,
                    source,
                    lower_bound,
                    candidate.reputation.expected_latency_ms(),
                    constraints.max_latency_ms.unwrap_or(params.reference_latency_ms),
                );
                let score = quality.total.saturating_sub(bid.micros());
                contenders.push(Contender {
                    candidate,
                    sheet_price,
                    bid,
                    bid_source,
                    quality,
                    score,
                    nonce: input.nonce,
                });
            }
        }
    }

    // Sort indices, not the (large) contenders themselves: it moves 8 bytes per swap.
    let mut order: Vec<usize> = (0..contenders.len()).collect();
    let at = |idx: &usize| &contenders[*idx];
    order.sort_unstable_by(|a, b| by_score(at(a), at(b)));
    let posted_price = match &constraints.routing {
        Routing::Auction => false,
        Routing::Sort(key) => {
            let key = *key;
            order.sort_by(|a, b| {
                by_sort_key(key, at(a), at(b)).then_with(|| by_score(at(a), at(b)))
            });
            true
        }
        Routing::Order(listed) => {
            // Listed agents first, in the caller's order; the rest keep their score order.
            let position = |idx: &usize| {
                listed
                    .iter()
                    .position(|slug| slug.as_str() == &*at(idx).candidate.slug)
                    .unwrap_or(usize::MAX)
            };
            order.sort_by_key(position);
            true
        }
        Routing::PriceWeightedRandom => {
            let keys: Vec<f64> = contenders
                .iter()
                .map(|c| {
                    let mut rng = ChaCha8Rng::seed_from_u64(
                        input.seed ^ mix(c.candidate.agent_id.0) ^ 0x5157,
                    );
                    let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
                    let price = c.bid.micros().max(1) as f64;
                    // Efraimidis–Spirakis: sorting by u^(1/w) with w = 1/price^2 samples an
                    // order weighted by w; ln(u) * price^2 is the same order, safely.
                    u.ln() * price * price
                })
                .collect();
            order
                .sort_by(|a, b| keys[*b].total_cmp(&keys[*a]).then_with(|| by_score(at(a), at(b))));
            true
        }
    };

    let mechanism = params.mechanism;
    let ranking = order
        .iter()
        .enumerate()
        .map(|(position, idx)| {
            let contender = at(idx);
            let (price, price_basis) = if posted_price || mechanism == Mechanism::FirstPrice {
                (contender.bid, PriceBasis::OwnBid)
            } else {
                let below = order[position + 1..].iter().map(at);
                second_score_price(contender, below, reserve)
            };
            Ranked {
                rank: position + 1,
                agent_id: contender.candidate.agent_id,
                owner_id: contender.candidate.owner_id,
                slug: contender.candidate.slug.clone(),
                sheet_price: contender.sheet_price,
                bid: contender.bid,
                bid_source: contender.bid_source,
                quality: contender.quality.clone(),
                score: contender.score,
                price,
                price_basis,
            }
        })
        .collect();

    exclusions.sort_by_key(|e| (e.agent_id, e.owner_id));
    Outcome { ranking, exclusions, explored, job_value, reserve }
}

/// `p = min(R, Q_w - S_2)` against the best remaining agent of another owner, never below the
/// agent's own bid.
fn second_score_price<'a, 'b: 'a>(
    winner: &Contender<'b>,
    mut below: impl Iterator<Item = &'a Contender<'b>>,
    reserve: Option<MicroCredits>,
) -> (MicroCredits, PriceBasis) {
    let runner_up = below.find(|c| c.candidate.owner_id != winner.candidate.owner_id);
    let threshold =
        runner_up.map(|r| MicroCredits::from_micros(winner.quality.total.saturating_sub(r.score)));
    let (price, basis) = match (threshold, runner_up, reserve) {
        (Some(threshold), Some(r), Some(reserve)) if reserve < threshold => {
            (reserve, PriceBasis::Reserve { reserve, runner_up: Some(r.candidate.agent_id) })
        }
        (Some(threshold), Some(r), _) => (
            threshold,
            PriceBasis::SecondScore {
                runner_up: r.candidate.agent_id,
                runner_up_slug: r.candidate.slug.clone(),
                runner_up_score: r.score,
            },
        ),
        (_, _, Some(reserve)) => (reserve, PriceBasis::Reserve { reserve, runner_up: None }),
        (_, _, None) => (winner.bid, PriceBasis::OwnBid),
    };
    // Individually rational: never below the bid (the reserve can be, when the reference cap
    // is lower than a lone agent's cost).
    if price < winner.bid { (winner.bid, PriceBasis::OwnBid) } else { (price, basis) }
}

fn by_score(a: &Contender<'_>, b: &Contender<'_>) -> Ordering {
    b.score
        .cmp(&a.score)
        .then_with(|| {
            b.quality.reliability_lower_bound.total_cmp(&a.quality.reliability_lower_bound)
        })
        .then_with(|| latency_key(a).total_cmp(&latency_key(b)))
        // Hashed only on an exact tie of everything above, which is rare: hashing every
        // candidate up front cost a quarter of the auction's time.
        .then_with(|| {
            tiebreak_hash(a.nonce, a.candidate.agent_id)
                .cmp(&tiebreak_hash(b.nonce, b.candidate.agent_id))
        })
        .then_with(|| a.candidate.agent_id.cmp(&b.candidate.agent_id))
}

fn by_sort_key(key: SortBy, a: &Contender<'_>, b: &Contender<'_>) -> Ordering {
    match key {
        SortBy::Price => a.bid.cmp(&b.bid),
        SortBy::Latency => latency_key(a).total_cmp(&latency_key(b)),
        SortBy::Reputation => {
            b.quality.reliability_lower_bound.total_cmp(&a.quality.reliability_lower_bound)
        }
    }
}

/// Unknown latency sorts last.
fn latency_key(c: &Contender<'_>) -> f64 {
    c.quality.expected_latency_ms.unwrap_or(f64::INFINITY)
}

/// The quality term. See the crate docs for the formula.
fn quality(
    objective: Objective,
    job_value: MicroCredits,
    reliability: f64,
    reliability_source: ReliabilitySource,
    reliability_lower_bound: f64,
    expected_latency_ms: Option<f64>,
    reference_latency_ms: u32,
) -> Quality {
    let (w_rel, w_lat) = weights(objective);
    let value = job_value.micros().max(0) as f64;
    let reference = f64::from(reference_latency_ms.max(1));
    // An agent never observed is assumed to take half the reference latency.
    let latency = expected_latency_ms.unwrap_or(reference / 2.0);
    let reliability_credit = (w_rel * value * reliability).round() as i64;
    let latency_penalty = (w_lat * value * (latency / reference).min(1.0)).round() as i64;
    Quality {
        reliability,
        reliability_source,
        reliability_lower_bound,
        expected_latency_ms,
        reliability_credit,
        latency_penalty,
        total: reliability_credit.saturating_sub(latency_penalty),
    }
}

/// Checks one candidate; on success returns (sheet price, bid, bid source).
fn check_eligibility(
    input: &AuctionInput,
    candidate: &Candidate,
    lower_bound: f64,
) -> Result<(MicroCredits, MicroCredits, BidSource), ExclusionReason> {
    let job = &input.job;
    let constraints = &input.constraints;
    match candidate.status {
        AgentStatus::Active => {}
        AgentStatus::Paused => return Err(ExclusionReason::Paused),
        AgentStatus::CircuitOpen => return Err(ExclusionReason::CircuitOpen),
    }
    if !candidate.categories.contains(&job.category) {
        return Err(ExclusionReason::WrongCategory);
    }
    if !constraints.only.is_empty()
        && !constraints.only.iter().any(|slug| slug.as_str() == &*candidate.slug)
    {
        return Err(ExclusionReason::NotInOnlyList);
    }
    if constraints.ignore.iter().any(|slug| slug.as_str() == &*candidate.slug) {
        return Err(ExclusionReason::IgnoredByCaller);
    }
    let missing: Vec<String> =
        job.required_features.iter().filter(|f| !candidate.features.contains(f)).cloned().collect();
    if !missing.is_empty() {
        return Err(ExclusionReason::MissingFeatures(missing));
    }
    if !constraints.regions.is_empty()
        && !candidate.regions.is_empty()
        && !candidate.regions.iter().any(|r| constraints.regions.contains(r))
    {
        return Err(ExclusionReason::RegionNotServed);
    }
    if let Some(context_length) = candidate.context_length {
        let needed = job.input_tokens.saturating_add(job.output_tokens);
        if needed > context_length {
            return Err(ExclusionReason::ContextTooSmall { needed, context_length });
        }
    }
    if let Some(max_latency_ms) = constraints.max_latency_ms {
        let expected = candidate
            .reputation
            .expected_latency_ms()
            .map(|ms| ms.ceil().min(f64::from(u32::MAX)) as u32)
            .or(candidate.max_latency_ms);
        if let Some(expected_ms) = expected.filter(|ms| *ms > max_latency_ms) {
            return Err(ExclusionReason::TooSlow { expected_ms, max_latency_ms });
        }
    }
    if let Some(minimum) = constraints.min_reputation
        && lower_bound < minimum
    {
        return Err(ExclusionReason::ReputationBelowMinimum { lower_bound, minimum });
    }
    let sheet = sheet_price(&candidate.sheet, job.input_tokens, job.output_tokens)
        .ok_or(ExclusionReason::NoPrice)?;
    let (bid, source) = match candidate.live_bid {
        None => (sheet, BidSource::Sheet),
        Some(LiveBid::NoBid(reason)) => return Err(ExclusionReason::NoBid(reason)),
        Some(LiveBid::Price(bid)) if bid > sheet => {
            return Err(ExclusionReason::LiveBidAboveSheet { bid, sheet });
        }
        Some(LiveBid::Price(bid)) if bid.is_negative() => {
            return Err(ExclusionReason::NoBid(NoBidReason::Malformed));
        }
        Some(LiveBid::Price(bid)) => (bid, BidSource::Live),
    };
    if let Some(max_price) = constraints.max_price
        && bid > max_price
    {
        return Err(ExclusionReason::PriceAboveMax { bid, max_price });
    }
    if !candidate.owner_can_pay_win_fee {
        return Err(ExclusionReason::OwnerCannotPayWinFee);
    }
    Ok((sheet, bid, source))
}

/// FNV-1a over the nonce and the agent id: a stable, documented tie-break that no agent can
/// choose in advance (the nonce is fresh per auction).
fn tiebreak_hash(nonce: u64, agent: AgentId) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in nonce.to_le_bytes().into_iter().chain(agent.0.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Folds a 128-bit id into 64 bits for seeding.
fn mix(id: u128) -> u64 {
    (id as u64) ^ ((id >> 64) as u64).rotate_left(29)
}
