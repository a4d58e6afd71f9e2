//! What an auction is run on: the job, the caller's constraints, the candidates and the
//! marketplace's parameters. Plain data; every field is public because any value is valid
//! input (the engine reports, rather than rejects, candidates it cannot use).

use std::sync::Arc;

use crate::MicroCredits;
use crate::reputation::{Ratings, ReputationStats};

/// An agent's id (a UUID's 128 bits; the engine does not care how it was made).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentId(pub u128);

/// An agent owner's (a user's) id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerId(pub u128);

/// The job being auctioned.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub category: String,
    /// Estimated input tokens (0 for jobs not priced by tokens).
    pub input_tokens: u64,
    /// Expected output tokens (the caller's `max_tokens`, or an estimate).
    pub output_tokens: u64,
    pub required_features: Vec<String>,
}

/// What the caller optimises for. It sets the weights of the quality term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Objective {
    /// Reliability and latency both count, moderately.
    #[default]
    Balanced,
    /// Price alone: the lowest eligible bid wins.
    Cost,
    /// Reliability counts four times as much as in `Balanced`.
    Quality,
    /// Latency counts eight times as much as in `Balanced`.
    Latency,
}

/// OpenRouter-style ordering that replaces the auction's score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    Price,
    Latency,
    Reputation,
}

/// How the ranking and the price are decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mechanism {
    /// Rank by score, pay each winner the highest bid at which it would still have won.
    #[default]
    SecondScore,
    /// Rank by score, pay each winner its own bid.
    FirstPrice,
}

/// How candidates are put in order. Every mode uses the same eligibility rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Routing {
    /// The sealed-bid auction.
    #[default]
    Auction,
    /// Sort by one key; each agent is paid its own bid (a posted price).
    Sort(SortBy),
    /// The caller's explicit order of agent slugs first, then the rest by score. Posted prices.
    Order(Vec<String>),
    /// Random order weighted by the inverse square of the bid, from the seed. Posted prices.
    PriceWeightedRandom,
}

/// The caller's constraints. Empty lists and `None`s constrain nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Constraints {
    /// The most the caller will pay the agent for this job (fees excluded).
    pub max_price: Option<MicroCredits>,
    /// The agent must serve at least one of these regions.
    pub regions: Vec<String>,
    pub max_latency_ms: Option<u32>,
    /// Minimum reputation lower bound, 0.0 to 1.0.
    pub min_reputation: Option<f64>,
    /// Only these agent slugs may compete.
    pub only: Vec<String>,
    /// These agent slugs may not compete.
    pub ignore: Vec<String>,
    pub objective: Objective,
    pub routing: Routing,
}

/// An agent's standing price sheet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PriceSheet {
    pub per_call: MicroCredits,
    pub per_million_input_tokens: MicroCredits,
    pub per_million_output_tokens: MicroCredits,
}

/// What came back from an agent's live bid URL, if it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveBid {
    /// A price for this job; it can only undercut the sheet.
    Price(MicroCredits),
    /// No usable bid.
    NoBid(NoBidReason),
}

/// Why a live bidder has no bid in this auction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBidReason {
    /// The agent answered that it does not bid (204).
    Declined,
    /// The answer came after the deadline.
    Late,
    /// The answer was not a price.
    Malformed,
    /// The bid URL could not be reached or failed.
    Unreachable,
}

/// An agent's operational state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AgentStatus {
    #[default]
    Active,
    Paused,
    /// The circuit breaker is open after repeated failures.
    CircuitOpen,
}

/// One agent that might compete.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub agent_id: AgentId,
    pub owner_id: OwnerId,
    /// `handle/name`, the name `only` / `ignore` / `order` use.
    pub slug: Arc<str>,
    pub categories: Vec<String>,
    pub features: Vec<String>,
    /// Empty means "serves every region".
    pub regions: Vec<String>,
    /// The agent's declared latency ceiling, if any.
    pub max_latency_ms: Option<u32>,
    /// Largest input plus output the agent accepts, if declared.
    pub context_length: Option<u64>,
    pub sheet: PriceSheet,
    /// `None` for agents without a bid URL: they bid their sheet.
    pub live_bid: Option<LiveBid>,
    pub reputation: ReputationStats,
    /// Callers' ratings as they count; they move the quality factor a little (see `Ratings`).
    pub ratings: Ratings,
    pub status: AgentStatus,
    /// Whether the owner's wallet can cover the win fee.
    pub owner_can_pay_win_fee: bool,
}

/// The marketplace's settings for this auction.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameters {
    pub mechanism: Mechanism,
    /// Paid by the caller per auction call.
    pub call_fee: MicroCredits,
    /// Paid by the winner's owner per win.
    pub win_fee: MicroCredits,
    /// How many observations the prior is worth: a newcomer's first few results outweigh it.
    pub prior_weight: f64,
    /// The prior success probability when no candidate of the category is measured yet.
    pub default_prior_mean: f64,
    /// Decayed observations after which an agent counts as measured: it then informs the
    /// category prior and is no longer explored.
    pub measured_evidence: f64,
    /// Half-life of reputation evidence, in milliseconds.
    pub half_life_ms: i64,
    /// Probability (0.0 to 1.0) that an auction scores its unmeasured agents on Thompson draws
    /// instead of posterior means.
    pub exploration_rate: f64,
    /// Typical clearing price of this category in auctions where two or more owners competed,
    /// if known. The only source of a reserve besides the caller's max price.
    pub reference_price: Option<MicroCredits>,
    /// The reserve is at most `reference_multiplier x reference_price`.
    pub reference_multiplier: u32,
    /// The latency that costs a full latency weight, when the caller set no `max_latency_ms`.
    pub reference_latency_ms: u32,
}

impl Parameters {
    /// The prior of an agent with nothing else to go on, as Beta pseudo-counts (successes,
    /// failures): `default_prior_mean` worth `prior_weight` observations.
    pub fn default_prior(&self) -> (f64, f64) {
        (
            self.prior_weight * self.default_prior_mean,
            self.prior_weight * (1.0 - self.default_prior_mean),
        )
    }
}

impl Default for Parameters {
    fn default() -> Parameters {
        Parameters {
            mechanism: Mechanism::SecondScore,
            call_fee: MicroCredits::from_micros(1_000_000),
            win_fee: MicroCredits::from_micros(1_000_000),
            prior_weight: 2.0,
            default_prior_mean: 0.9,
            measured_evidence: 10.0,
            half_life_ms: 7 * 24 * 3600 * 1000,
            exploration_rate: 0.05,
            reference_price: None,
            reference_multiplier: 1,
            reference_latency_ms: 10_000,
        }
    }
}

/// Everything one auction is a function of. Running the same `AuctionInput` twice gives the
/// same `Outcome`: this is what makes an audit record replayable.
#[derive(Clone, Debug, PartialEq)]
pub struct AuctionInput {
    /// Unique per auction; breaks exact ties.
    pub nonce: u64,
    /// Seeds exploration and weighted-random routing.
    pub seed: u64,
    /// The auction's time, in Unix milliseconds; reputation decays to it.
    pub now_ms: i64,
    pub job: Job,
    pub constraints: Constraints,
    pub candidates: Vec<Candidate>,
    /// Records of the category's agents that are gone (deleted): they compete no more, but
    /// their evidence stays their owner's (the owner prior and the owner's vote read it).
    pub retired: Vec<RetiredRecord>,
    pub parameters: Parameters,
}

/// A deleted agent's record, still its owner's.
#[derive(Clone, Debug, PartialEq)]
pub struct RetiredRecord {
    pub owner_id: OwnerId,
    pub reputation: ReputationStats,
}
