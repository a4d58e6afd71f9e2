//! The auction itself: eligibility, bids, quality, scores, ranking and clearing prices.
//!
//! `run` is a pure function of an `AuctionInput`; see the crate docs for the formulas.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::MicroCredits;
use crate::inputs::{
    AgentId, AgentStatus, AuctionInput, Candidate, LiveBid, Mechanism, NoBidReason, Objective,
    OwnerId, Routing, SortBy,
};
use crate::pricing::sheet_price;
use crate::reputation::Posterior;

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
    /// The posterior mean: what every auction scores on, but for exploration.
    Mean,
    /// A Thompson draw from an unmeasured agent's posterior, in an exploration auction.
    ThompsonDraw,
}

/// The quality of one agent, component by component: the factor its bid is divided by.
#[derive(Clone, Debug, PartialEq)]
pub struct Quality {
    /// The success probability scored: the posterior mean, or a Thompson draw when exploring.
    pub reliability: f64,
    pub reliability_source: ReliabilitySource,
    /// The posterior mean, whatever was scored.
    pub reliability_mean: f64,
    /// The 5% lower bound of the agent's own evidence on the default prior: its public
    /// reputation score, what `min_reputation` is checked against, and the first tie-break.
    pub reliability_lower_bound: f64,
    /// The prior mean this agent's evidence is added to: the other owners' median success
    /// rate, lowered by its owner's record elsewhere in the category.
    pub prior_mean: f64,
    /// Decayed observations behind the estimate (successes plus failures).
    pub evidence: f64,
    /// Observed expected latency; `None` when the agent has never been observed.
    pub expected_latency_ms: Option<f64>,
    /// The latency scored: the observed one, or the median of the observed candidates.
    pub latency_ms: f64,
    /// `reliability ^ w_rel`.
    pub reliability_factor: f64,
    /// `1 / (1 + w_lat x min(1, latency / L_ref))`.
    pub latency_factor: f64,
    /// Callers' ratings (`Ratings::factor`); 1 when the objective is cost.
    pub rating_factor: f64,
    /// `reliability_factor x latency_factor x rating_factor`: the bid is divided by this.
    pub factor: f64,
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
    /// remaining agent of another owner: `runner_up_effective_price x factor`.
    /// (The runner-up is in the ranking: `Outcome::slug_of` names it. Not copying its name
    /// here saves a cache miss per rank on large auctions.)
    SecondScore { runner_up: AgentId, runner_up_effective_price: i64 },
    /// The reserve: lower than the second-score threshold, or, when no agent of another owner
    /// competes, the category's competitive reference price (never below the bid).
    Reserve { reserve: MicroCredits, runner_up: Option<AgentId> },
    /// The agent's own bid: first-price mechanism, routing modes, or a lone bidder with no
    /// competitive reference price.
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
    /// `bid / factor`, in micro-credits: what one unit of quality costs. Lowest ranks first.
    pub effective_price: i64,
    pub price: MicroCredits,
    pub price_basis: PriceBasis,
}

/// The result of an auction: the ranking (rank 1 is the winner; the rest are the fallback
/// order, each with its own price) and every excluded candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub ranking: Vec<Ranked>,
    pub exclusions: Vec<Exclusion>,
    /// Whether this auction scored unmeasured agents on Thompson draws.
    pub explored: bool,
    /// The category prior, for the record: the median success rate of the measured owners
    /// (each agent's own prior leaves its owner out: see `Quality::prior_mean`).
    pub category_prior: f64,
    /// The effective reserve: the caller's max price, in an exploration auction capped by
    /// `proven_price`.
    pub reserve: Option<MicroCredits>,
    /// In an exploration auction: what the measured agents alone would have cleared at. No
    /// exploration auction charges more.
    pub proven_price: Option<MicroCredits>,
}

impl Outcome {
    pub fn winner(&self) -> Option<&Ranked> {
        self.ranking.first()
    }

    /// The slug of a ranked agent.
    pub fn slug_of(&self, agent: AgentId) -> Option<&Arc<str>> {
        self.ranking.iter().find(|r| r.agent_id == agent).map(|r| &r.slug)
    }

    /// When nobody is eligible: the deepest check that excluded a candidate, i.e. the
    /// constraint that removed the last ones standing.
    pub fn binding_exclusion(&self) -> Option<&ExclusionReason> {
        self.exclusions.iter().map(|e| &e.reason).max_by_key(|reason| reason.stage())
    }
}

/// Weights of the quality factor per objective: (reliability exponent, latency weight).
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
    /// `bid / quality.factor`: ranks the auction.
    effective: f64,
    /// `bid / factor` on the posterior mean, whatever was scored: ranks the proven market.
    effective_on_mean: f64,
    /// The factor on the posterior mean.
    factor_on_mean: f64,
    /// The reliability factor on the posterior mean, for an exploration auction called off.
    reliability_factor_on_mean: f64,
    measured: bool,
    nonce: u64,
}

/// What the category's evidence says, before any candidate is scored. Depends on no bid.
struct Priors {
    /// One vote per owner whose pooled evidence is measured: (success rate, owner), sorted.
    owner_rates: Vec<(f64, OwnerId)>,
    /// Where each measured owner sits in `owner_rates`.
    owner_position: IdMap<OwnerId, usize>,
    /// Per owner: decayed (successes, failures) pooled over all its candidates, in fixed point.
    owners: IdMap<OwnerId, (u64, u64)>,
    /// Per candidate (in input order): its own decayed (successes, failures).
    evidence: Vec<(f64, f64)>,
    /// The prior mean when no other owner is measured.
    default_mean: f64,
    /// The latency assumed for an agent never observed: the median of the observed ones.
    unobserved_latency_ms: f64,
}

fn priors(input: &AuctionInput) -> Priors {
    let params = &input.parameters;
    let evidence: Vec<(f64, f64)> = input
        .candidates
        .iter()
        .map(|c| c.reputation.evidence(input.now_ms, params.half_life_ms))
        .collect();
    // Summed in fixed point, exactly, so the totals do not depend on the input order.
    let mut sums: IdMap<OwnerId, (u64, u64)> = IdMap::default();
    for (candidate, (s, f)) in input.candidates.iter().zip(&evidence) {
        let entry = sums.entry(candidate.owner_id).or_default();
        entry.0 = entry.0.saturating_add(to_fixed(*s));
        entry.1 = entry.1.saturating_add(to_fixed(*f));
    }
    for record in &input.retired {
        let (s, f) = record.reputation.evidence(input.now_ms, params.half_life_ms);
        let entry = sums.entry(record.owner_id).or_default();
        entry.0 = entry.0.saturating_add(to_fixed(s));
        entry.1 = entry.1.saturating_add(to_fixed(f));
    }
    let owners: IdMap<OwnerId, (u64, u64)> = sums;
    let measured = params.measured_evidence.max(f64::MIN_POSITIVE);
    let mut owner_rates: Vec<(f64, OwnerId)> = owners
        .iter()
        .map(|(owner, (s, f))| (from_fixed(*s), from_fixed(*f), *owner))
        .filter(|(s, f, _)| s + f >= measured)
        .map(|(s, f, owner)| (s / (s + f), owner))
        .collect();
    owner_rates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let owner_position = owner_rates.iter().enumerate().map(|(idx, (_, o))| (*o, idx)).collect();
    let mut latencies: Vec<f64> =
        input.candidates.iter().filter_map(|c| c.reputation.expected_latency_ms()).collect();
    let unobserved_latency_ms = median_of(&mut latencies).unwrap_or_else(|| {
        f64::from(input.constraints.max_latency_ms.unwrap_or(params.reference_latency_ms)) / 2.0
    });
    Priors {
        owner_rates,
        owner_position,
        owners,
        evidence,
        default_mean: params.default_prior_mean.clamp(0.0, 1.0),
        unobserved_latency_ms,
    }
}

/// The median of `values` (reordered in place, in linear time); `None` for none.
fn median_of(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let (below, upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        return Some(upper);
    }
    let lower = below.iter().copied().max_by(f64::total_cmp).unwrap_or(upper);
    Some((lower + upper) / 2.0)
}

/// Evidence in fixed point (2^-20 of an observation), for exact, order-free sums. A u64
/// holds 2^44 observations this way; `as` saturates beyond.
fn to_fixed(count: f64) -> u64 {
    (count.max(0.0) * FIXED_ONE + 0.5) as u64
}

fn from_fixed(fixed: u64) -> f64 {
    fixed as f64 / FIXED_ONE
}

const FIXED_ONE: f64 = 1_048_576.0;

/// A map keyed by ids that are already random (UUIDs): a multiply-xor hash instead of
/// SipHash, which cost a third of a 1,000-candidate auction.
type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*byte)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u128(&mut self, value: u128) {
        let folded = (value as u64) ^ ((value >> 64) as u64).rotate_left(32);
        self.0 = (self.0 ^ folded).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Priors {
    /// The category's prior for `owner`'s agents: the median success rate of the *other*
    /// measured owners, one vote each, so no owner moves its own agents' start and no owner
    /// outvotes the rest by registering many agents.
    fn category_for(&self, owner: OwnerId) -> f64 {
        let skip = self.owner_position.get(&owner).copied();
        let remaining = self.owner_rates.len() - usize::from(skip.is_some());
        // The median of the sorted rates without `skip`, read in place: position `m` of the
        // remaining values is index `m` below the skipped one, `m + 1` from it on.
        let at = |m: usize| {
            let idx = match skip {
                Some(j) if m >= j => m + 1,
                _ => m,
            };
            self.owner_rates[idx].0
        };
        match remaining {
            0 => self.default_mean,
            n if n % 2 == 1 => at(n / 2),
            n => (at(n / 2 - 1) + at(n / 2)) / 2.0,
        }
    }

    /// The median over every measured owner, for the record.
    fn category(&self) -> f64 {
        let mut rates: Vec<f64> = self.owner_rates.iter().map(|(rate, _)| *rate).collect();
        median_of(&mut rates).unwrap_or(self.default_mean)
    }

    /// An agent's prior mean: the category's, lowered (never raised) by the failures its
    /// owner's other agents have shown, so a failing agent cannot start afresh by registering
    /// again under the same owner.
    fn prior_mean(&self, weight: f64, owner: OwnerId, own: (f64, f64)) -> f64 {
        let category = self.category_for(owner);
        let (s, f) = self.owners.get(&owner).copied().unwrap_or_default();
        let s = from_fixed(s.saturating_sub(to_fixed(own.0)));
        let f = from_fixed(f.saturating_sub(to_fixed(own.1)));
        let owner_mean = (weight * category + s) / (weight + s + f).max(f64::MIN_POSITIVE);
        category.min(owner_mean)
    }
}

/// Runs one auction. Pure: the same input always gives the same outcome, whatever order the
/// candidates come in.
pub fn run(input: &AuctionInput) -> Outcome {
    let params = &input.parameters;
    let constraints = &input.constraints;

    // Nothing below depends on the order candidates come in: the priors are order-free
    // aggregates, the ranking's sort is total (it ends on the agent id), exploration draws
    // come from per-agent streams, and exclusions are sorted by agent id at the end.

    let reference_cap = params
        .reference_price
        .and_then(|p| i64::from(params.reference_multiplier).checked_mul(p.micros()))
        .map(MicroCredits::from_micros);
    // The reference price is what a lone bidder is paid, never a cap on competitive prices:
    // capping a runner-up's threshold with it would let the runner-up raise its own future
    // price by raising the winner's (through the reference it feeds).
    let reserve = constraints.max_price;

    let mut explore_rng = ChaCha8Rng::seed_from_u64(input.seed);
    let explored =
        params.exploration_rate > 0.0 && explore_rng.random::<f64>() < params.exploration_rate;

    let priors = priors(input);
    let weight = params.prior_weight.max(f64::MIN_POSITIVE);
    // Sized once: grown by doubling, the 176-byte contenders were copied twice over on a
    // large auction.
    let mut contenders = Vec::with_capacity(input.candidates.len());
    let mut exclusions = Vec::new();
    for (candidate, &own) in input.candidates.iter().zip(&priors.evidence) {
        let prior_mean = priors.prior_mean(weight, candidate.owner_id, own);
        let posterior = Posterior {
            alpha: weight * prior_mean + own.0 + 1e-9,
            beta: weight * (1.0 - prior_mean) + own.1 + 1e-9,
        };
        // `min_reputation` and the public reputation score ask what the agent itself has
        // shown, so they read its evidence on the default prior, not the category's.
        let (prior_s, prior_f) = params.default_prior();
        let lower_bound =
            Posterior { alpha: prior_s.max(1e-6) + own.0, beta: prior_f.max(1e-6) + own.1 }
                .lower_bound();
        match check_eligibility(input, candidate, lower_bound) {
            Err(reason) => exclusions.push(Exclusion {
                agent_id: candidate.agent_id,
                owner_id: candidate.owner_id,
                slug: candidate.slug.clone(),
                reason,
            }),
            Ok((sheet_price, bid, bid_source)) => {
                let evidence = own.0 + own.1;
                let measured = evidence >= params.measured_evidence;
                let mean = posterior.mean();
                let (reliability, source) = if explored && !measured {
                    // Each agent's draw comes from its own stream, so it depends on neither the
                    // bids nor which other agents are eligible.
                    let mut rng = ChaCha8Rng::seed_from_u64(input.seed ^ mix(candidate.agent_id.0));
                    (posterior.sample(&mut rng), ReliabilitySource::ThompsonDraw)
                } else {
                    (mean, ReliabilitySource::Mean)
                };
                let latency = candidate.reputation.expected_latency_ms();
                let reference = f64::from(
                    constraints.max_latency_ms.unwrap_or(params.reference_latency_ms).max(1),
                );
                let scored = |reliability: f64| {
                    quality_factors(
                        constraints.objective,
                        reliability,
                        latency.unwrap_or(priors.unobserved_latency_ms),
                        reference,
                    )
                };
                let on_mean = scored(mean);
                let (reliability_factor, latency_factor) =
                    if source == ReliabilitySource::Mean { on_mean } else { scored(reliability) };
                // Ratings judge quality: an auction on cost alone ignores them, as it does
                // reliability.
                let rating_factor = if weights(constraints.objective).0 > 0.0 {
                    candidate.ratings.factor()
                } else {
                    1.0
                };
                let factor = (reliability_factor * latency_factor * rating_factor).max(MIN_FACTOR);
                let factor_on_mean = (on_mean.0 * on_mean.1 * rating_factor).max(MIN_FACTOR);
                let quality = Quality {
                    reliability,
                    reliability_source: source,
                    reliability_mean: mean,
                    reliability_lower_bound: lower_bound,
                    prior_mean,
                    evidence,
                    expected_latency_ms: latency,
                    latency_ms: latency.unwrap_or(priors.unobserved_latency_ms),
                    reliability_factor,
                    latency_factor,
                    rating_factor,
                    factor,
                };
                let bid_micros = bid.micros() as f64;
                let effective = bid_micros / factor;
                contenders.push(Contender {
                    candidate,
                    sheet_price,
                    bid,
                    bid_source,
                    quality,
                    effective,
                    // Scored on the mean, the two factors are the same expression: one
                    // division is enough.
                    effective_on_mean: if source == ReliabilitySource::Mean {
                        effective
                    } else {
                        bid_micros / factor_on_mean
                    },
                    factor_on_mean,
                    reliability_factor_on_mean: on_mean.0,
                    measured,
                    nonce: input.nonce,
                });
            }
        }
    }

    // An exploration auction never charges more than the measured agents alone would: their
    // clearing price, on posterior means, caps every price in it. It depends on no unmeasured
    // agent's bid, and a measured agent can only win it when it is the proven market's winner,
    // whose own price that is; so bidding the true cost stays best for everyone.
    let proven_price = if explored && matches!(constraints.routing, Routing::Auction) {
        proven_market_price(&contenders, reserve)
    } else {
        None
    };
    // Exploration is for breaking in against a measured market: without two measured owners
    // eligible there is none (a newcomer's prior already is the one measured owner's record),
    // so the auction scores on means like any other.
    let explored = explored && proven_price.is_some();
    if !explored {
        for contender in &mut contenders {
            if contender.quality.reliability_source == ReliabilitySource::ThompsonDraw {
                let quality = &mut contender.quality;
                quality.reliability = quality.reliability_mean;
                quality.reliability_source = ReliabilitySource::Mean;
                quality.reliability_factor = contender.reliability_factor_on_mean;
                quality.factor = contender.factor_on_mean;
                contender.effective = contender.effective_on_mean;
            }
        }
    }
    let cap = match (reserve, proven_price) {
        (Some(r), Some(p)) => Some(r.min(p)),
        (r, p) => r.or(p),
    };

    // Sort compact (score, index) keys, not the (large) contenders themselves: a comparison
    // reads the contender only on an exact tie of scores.
    let mut keyed: Vec<(f64, usize)> =
        contenders.iter().enumerate().map(|(idx, c)| (c.effective, idx)).collect();
    let at = |idx: &usize| &contenders[*idx];
    keyed.sort_unstable_by(|(a_score, a), (b_score, b)| {
        a_score.total_cmp(b_score).then_with(|| tie_break(at(a), at(b)))
    });
    let mut order: Vec<usize> = keyed.into_iter().map(|(_, idx)| idx).collect();
    if let Some(proven) = proven_price {
        // Above the proven market's price an agent cannot win an exploration auction; it
        // stays in the ranking as a fallback.
        order.sort_by_key(|idx| at(idx).bid > proven);
    }
    let posted_price = match &constraints.routing {
        Routing::Auction => false,
        Routing::Sort(key) => {
            let key = *key;
            order.sort_by(|a, b| {
                by_sort_key(key, at(a), at(b)).then_with(|| by_effective(at(a), at(b)))
            });
            true
        }
        Routing::Order(listed) => {
            // Listed agents first, in the caller's order; the rest keep their order.
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
            order.sort_by(|a, b| {
                keys[*b].total_cmp(&keys[*a]).then_with(|| by_effective(at(a), at(b)))
            });
            true
        }
    };

    // A lone winner (no agent of another owner below it) is paid the category's competitive
    // reference price when there is one, else its own bid: never a price fed by its own past.
    let lone_reserve = reference_cap.map(|reference| match cap {
        Some(cap) => reference.min(cap),
        None => reference,
    });
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
                // A fallback with no competitor left below it is paid the reserve, a price its
                // bid cannot move: paying it its bid would reward the last of the chain for
                // bidding high, and the runner-up price above it with it.
                let alone = if position == 0 { lone_reserve } else { cap.or(lone_reserve) };
                second_score_price(contender, below, cap, alone)
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
                effective_price: to_micros(contender.effective),
                price,
                price_basis,
            }
        })
        .collect();

    exclusions.sort_by_key(|e| (e.agent_id, e.owner_id));
    Outcome {
        ranking,
        exclusions,
        explored,
        category_prior: priors.category(),
        reserve: cap,
        proven_price,
    }
}

/// The smallest quality factor: an agent that never succeeds is not divided by zero.
const MIN_FACTOR: f64 = 1e-6;

fn to_micros(value: f64) -> i64 {
    if value.is_finite() {
        value.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64
    } else {
        i64::MAX
    }
}

/// What the measured contenders alone would clear at, scored on posterior means: the
/// winner's second-score price against the best measured agent of another owner, capped by
/// the reserve. `None` unless two owners are measured.
fn proven_market_price(
    contenders: &[Contender<'_>],
    reserve: Option<MicroCredits>,
) -> Option<MicroCredits> {
    let mut measured: Vec<&Contender<'_>> = contenders.iter().filter(|c| c.measured).collect();
    measured.sort_by(|a, b| {
        a.effective_on_mean.total_cmp(&b.effective_on_mean).then_with(|| tie_break(a, b))
    });
    let winner = measured.first()?;
    // With one measured owner there is no proven price its own bid cannot move (alone, it
    // would be paid its bid), and nobody to break in against but that one, whose record is
    // already every newcomer's prior: no exploration.
    let runner_up =
        measured[1..].iter().find(|c| c.candidate.owner_id != winner.candidate.owner_id)?;
    let threshold =
        MicroCredits::from_micros(to_micros(runner_up.effective_on_mean * winner.factor_on_mean));
    let price = reserve.map_or(threshold, |reserve| reserve.min(threshold));
    Some(price.max(winner.bid))
}

/// The second-score price of `winner` against the best remaining agent of another owner:
/// `runner_up.effective x winner.factor = b_2 x f_w / f_2`, capped by `cap`, never below the
/// winner's bid. With no such agent: `lone_reserve` if there is one, else the bid.
fn second_score_price<'a, 'b: 'a>(
    winner: &Contender<'b>,
    mut below: impl Iterator<Item = &'a Contender<'b>>,
    cap: Option<MicroCredits>,
    lone_reserve: Option<MicroCredits>,
) -> (MicroCredits, PriceBasis) {
    let runner_up = below.find(|c| c.candidate.owner_id != winner.candidate.owner_id);
    let (price, basis) = match runner_up {
        Some(r) => {
            let threshold =
                MicroCredits::from_micros(to_micros(r.effective * winner.quality.factor));
            match cap {
                Some(cap) if cap < threshold => (
                    cap,
                    PriceBasis::Reserve { reserve: cap, runner_up: Some(r.candidate.agent_id) },
                ),
                _ => (
                    threshold,
                    PriceBasis::SecondScore {
                        runner_up: r.candidate.agent_id,
                        runner_up_effective_price: to_micros(r.effective),
                    },
                ),
            }
        }
        None => match lone_reserve {
            Some(reserve) => (reserve, PriceBasis::Reserve { reserve, runner_up: None }),
            None => (winner.bid, PriceBasis::OwnBid),
        },
    };
    // Individually rational: never below the bid (a reserve can be, when the reference price
    // is lower than this agent's cost).
    if price < winner.bid { (winner.bid, PriceBasis::OwnBid) } else { (price, basis) }
}

fn by_effective(a: &Contender<'_>, b: &Contender<'_>) -> Ordering {
    a.effective.total_cmp(&b.effective).then_with(|| tie_break(a, b))
}

/// Exact ties: the better-evidenced reliability, then the lower latency, then a hash of the
/// auction's nonce and the agent's id.
fn tie_break(a: &Contender<'_>, b: &Contender<'_>) -> Ordering {
    b.quality
        .reliability_lower_bound
        .total_cmp(&a.quality.reliability_lower_bound)
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
        SortBy::Reputation => b.quality.reliability_mean.total_cmp(&a.quality.reliability_mean),
    }
}

/// Unknown latency sorts last.
fn latency_key(c: &Contender<'_>) -> f64 {
    c.quality.expected_latency_ms.unwrap_or(f64::INFINITY)
}

/// The two quality factors (reliability, latency). See the crate docs for the formula.
fn quality_factors(
    objective: Objective,
    reliability: f64,
    latency_ms: f64,
    reference_ms: f64,
) -> (f64, f64) {
    let (w_rel, w_lat) = weights(objective);
    let r = reliability.clamp(0.0, 1.0);
    // The weights are the small integers above; `powf` was a tenth of the auction's time.
    let reliability_factor = match w_rel as u32 {
        0 => 1.0,
        1 => r,
        4 => (r * r) * (r * r),
        _ => r.powf(w_rel),
    };
    let latency_factor = 1.0 / (1.0 + w_lat * (latency_ms.max(0.0) / reference_ms).min(1.0));
    (reliability_factor, latency_factor)
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
