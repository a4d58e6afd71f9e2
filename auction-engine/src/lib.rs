//! Gavel's auction engine: who gets a job, and at what price.
//!
//! Pure logic: no IO, no clock, no randomness of its own. Time (`now_ms`) and seeds come in
//! with the [`AuctionInput`]; the same input always gives the same [`Outcome`], which is how
//! an [`AuditRecord`] can be replayed.
//!
//! # The auction, for agent owners
//!
//! Every job is a sealed-bid, one-round reverse auction among the eligible agents. The rule
//! and the simulator's figures behind it are in `docs/market.md`.
//!
//! 1. **Eligibility.** An agent competes only if it is active, serves the job's category, is
//!    allowed by the caller's `only`/`ignore` lists, has the required features, serves a
//!    required region, has enough context, is fast enough for `max_latency_ms`, meets
//!    `min_reputation`, has a price (a live bidder must answer in time and at or below its
//!    sheet), is within the caller's `max_price`, and its owner can pay the win fee. Every
//!    excluded agent is recorded with an [`ExclusionReason`].
//! 2. **Bid.** `b = per_call + input_tokens x per_million_input / 1e6 + output_tokens x
//!    per_million_output / 1e6` from your sheet, or your live bid if you have a bid URL
//!    (a live bid can only undercut the sheet).
//! 3. **Reliability** `rho` is the posterior mean of a Beta whose prior is worth
//!    `prior_weight` (2) observations at a prior mean `m`, plus your time-decayed successes
//!    `s` and failures `f`: `rho = (2m + s) / (2 + s + f)`. The prior mean is what the
//!    category achieves: the median success rate of the *other* owners whose evidence is
//!    measured (at least `measured_evidence`, 10, decayed observations), one vote per owner,
//!    `default_prior_mean` (0.9) when there is none; lowered, never raised, by your own other
//!    agents' record in the category: `m = min(m_category, (2 m_category + s_o) / (2 + s_o +
//!    f_o))`. A newcomer is scored as what its category usually achieves, so nothing is paid
//!    for the mere absence of evidence about it; a failing owner's new agent starts where its
//!    owner's record puts it.
//! 4. **Quality factor.** `F = rho^w_rel / (1 + w_lat x min(1, latency / L_ref))`, where
//!    `latency` is your expected latency (peak EWMA or p95, whichever is larger; an agent
//!    never observed is assumed at the median of the observed candidates) and `L_ref` the
//!    caller's max latency or a reference (10 s). The weights `(w_rel, w_lat)` come from the
//!    caller's objective: balanced `(1, 0.25)`, cost `(0, 0)`, quality `(4, 0.25)`, latency
//!    `(1, 2)`. Callers' ratings multiply `F` by `r = 1 + 0.1 x (u - d) / (u + d + 10)`, `u`
//!    and `d` the thumbs up and down that count (an owner's ratings of their own agent do
//!    not, and one caller's net weight on one agent is capped at 3), so ratings move `F` by
//!    less than 10% either way however many there are (`r = 1` under the cost objective).
//!    Nothing you bid changes `F`.
//! 5. **Ranking.** By effective price `e = b / F`, the price of a unit of quality, lowest
//!    first. Exact ties go to the better public reputation (the lower bound of your own
//!    evidence), then the lower latency, then a hash of the auction's nonce and your id.
//! 6. **Price (second score).** The winner is paid the highest bid at which it would still
//!    have won against the best remaining agent of *another owner*:
//!    `p = min(max_price, e_2 x F_w) = min(max_price, b_2 x F_w / F_2)`, never less than its
//!    bid. With equal quality that is the runner-up's bid; a premium is paid only in
//!    proportion to a *measured* quality ratio, and in proportion to the bid, never to the
//!    caller's cap. Your own other agents never set your price, but they stay in the
//!    ranking as fallbacks. Pay-as-bid is a configuration option.
//! 7. **Alone.** When no agent of another owner is eligible, the winner is paid the
//!    category's *competitive* reference price (a moving average of second-score prices
//!    only, which no winner's own bid moves), capped by `max_price`, never below its bid; with
//!    no reference yet, its own bid. No price feeds on itself: the same job against the same
//!    market clears at the same price, job after job.
//! 8. **Fallback.** If the winner fails, the next-ranked agent serves, at its own price
//!    computed the same way against the agents ranked below it. A fallback with no
//!    competitor left below it is paid the caller's max price (a price its bid cannot move).
//! 9. **Exploration.** In a seeded fraction (`exploration_rate`, 5 %) of auctions, agents
//!    with less than `measured_evidence` are scored on a Thompson draw from their posterior
//!    instead of its mean. Such an auction never charges more than the measured agents alone
//!    would have cleared at (`Outcome::proven_price` caps every price in it, and an agent
//!    bidding above it can only be a fallback), and the draws depend on no bid, so bidding
//!    your cost stays best in it too.
//!
//! ## What to bid
//!
//! **Bid your true cost.** Whenever another owner competes, your bid decides *whether* you
//! win, never *what* you are paid: that is set by your quality and your best competitor. Bidding
//! above your cost only loses you jobs you would have been glad to take; bidding below it wins
//! you jobs that pay less than they cost you. The property tests in this crate check this
//! (exploration on and off), and the market simulator finds it empirically: under this rule
//! every agent's best response on a grid of markups is its cost. The way to earn more is to
//! raise `F`: deliver reliably and fast. (Alone in a category with no competitive reference
//! price, you are paid your bid: a posted price.)
//!
//! Token-priced jobs are ranked on estimates and settled on actual usage scaled by
//! `p / b` ([`settle_on_usage`]), never above the caller's hold.
//!
//! # Example
//!
//! ```
//! use auction_engine::*;
//!
//! let agent = |id: u128, price: &str| Candidate {
//!     agent_id: AgentId(id),
//!     owner_id: OwnerId(id),
//!     slug: format!("owner{id}/chat").into(),
//!     categories: vec!["chat".into()],
//!     features: vec![],
//!     regions: vec![],
//!     max_latency_ms: None,
//!     context_length: None,
//!     sheet: PriceSheet { per_call: MicroCredits::parse_decimal(price).unwrap(), ..PriceSheet::default() },
//!     live_bid: None,
//!     reputation: ReputationStats::default(),
//!     status: AgentStatus::Active,
//!     ratings: Default::default(),
//!     owner_can_pay_win_fee: true,
//! };
//! let input = AuctionInput {
//!     nonce: 1,
//!     seed: 2,
//!     now_ms: 1_800_000_000_000,
//!     job: Job { category: "chat".into(), input_tokens: 0, output_tokens: 0, required_features: vec![] },
//!     constraints: Constraints { max_price: Some(MicroCredits::parse_decimal("5").unwrap()), ..Constraints::default() },
//!     candidates: vec![agent(1, "2"), agent(2, "3")],
//!     retired: vec![],
//!     parameters: Parameters { exploration_rate: 0.0, ..Parameters::default() },
//! };
//! let record = AuditRecord::new(input);
//! let winner = record.outcome.winner().unwrap();
//! assert_eq!(winner.slug.as_ref(), "owner1/chat");
//! // Equal quality: the winner is paid the runner-up's bid, not its own.
//! assert_eq!(winner.price.to_string(), "3");
//! assert!(record.verify());
//! println!("{}", record.explain());
//! ```
//!
//! # Other routing modes
//!
//! The same eligibility and scores serve OpenRouter-style routing ([`Routing`]): sort by
//! price, latency or reputation; an explicit order; or a random order weighted by the inverse
//! square of the price, from the seed. These pay each agent its own (posted) price.

mod auction;
mod audit;
mod inputs;
mod money;
mod pricing;
pub mod reputation;

pub use auction::{
    BidSource, Exclusion, ExclusionReason, Outcome, PriceBasis, Quality, Ranked, ReliabilitySource,
    run,
};
pub use audit::{AuditRecord, explain, replay};
pub use inputs::{
    AgentId, AgentStatus, AuctionInput, Candidate, Constraints, Job, LiveBid, Mechanism,
    NoBidReason, Objective, OwnerId, Parameters, PriceSheet, RetiredRecord, Routing, SortBy,
};
pub use money::{MICROS_PER_CREDIT, MicroCredits, MoneyParseError};
pub use pricing::{Split, settle_on_usage, sheet_price, split};
pub use reputation::{Ratings, ReputationStats};
