//! Gavel's auction engine: who gets a job, and at what price.
//!
//! Pure logic: no IO, no clock, no randomness of its own. Time (`now_ms`) and seeds come in
//! with the [`AuctionInput`]; the same input always gives the same [`Outcome`], which is how
//! an [`AuditRecord`] can be replayed.
//!
//! # The auction, for agent owners
//!
//! Every job is a sealed-bid, one-round reverse auction among the eligible agents.
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
//! 3. **Quality.** `Q = w_rel x V x rho - w_lat x V x min(1, latency / L_ref)`, in
//!    micro-credits, where `V` is what the job is worth (the caller's max price, else the
//!    category's reference price, else a default), `rho` your reliability (the 5% lower bound
//!    of your time-decayed Beta posterior; in exploration auctions a Thompson draw from it),
//!    `latency` your expected latency (peak EWMA or p95, whichever is larger) and `L_ref` the
//!    caller's max latency or a reference. The weights `(w_rel, w_lat)` come from the
//!    caller's objective: balanced `(1, 0.25)`, cost `(0, 0)`, quality `(4, 0.25)`,
//!    latency `(1, 2)`. Nothing you bid changes `Q`.
//! 4. **Score and ranking.** `S = Q - b`; highest score first. Exact ties go to the better
//!    reliability, then the lower latency, then a hash of the auction's nonce and your id.
//! 5. **Price (second score).** The winner is paid the highest bid at which it would still
//!    have won against the best remaining agent of *another owner*:
//!    `p = min(R, Q_w - S_2)`, never less than its bid. `R` is the caller's max price capped
//!    at `reference_multiplier x reference_price`. When no other owner competes, the winner
//!    is paid `R` (or its bid when there is no `R`). Your own other agents never set your
//!    price, but they stay in the ranking as fallbacks. Pay-as-bid is a configuration option.
//! 6. **Fallback.** If the winner fails, the next-ranked agent serves, at its own price
//!    computed the same way against the agents ranked below it.
//!
//! ## What to bid
//!
//! **Bid your true cost.** Your bid decides *whether* you win, never *what* you are paid:
//! that is set by your quality and your best competitor. Bidding above your cost only loses
//! you jobs you would have been glad to take; bidding below it wins you jobs that pay less
//! than they cost you. The property tests in this crate check this: with quality fixed, no
//! deviation from the true cost ever does better. The way to earn more is to raise `Q`:
//! deliver reliably and fast.
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
//!     owner_can_pay_win_fee: true,
//! };
//! let input = AuctionInput {
//!     nonce: 1,
//!     seed: 2,
//!     now_ms: 1_800_000_000_000,
//!     job: Job { category: "chat".into(), input_tokens: 0, output_tokens: 0, required_features: vec![] },
//!     constraints: Constraints { max_price: Some(MicroCredits::parse_decimal("5").unwrap()), ..Constraints::default() },
//!     candidates: vec![agent(1, "2"), agent(2, "3")],
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
    NoBidReason, Objective, OwnerId, Parameters, PriceSheet, Routing, SortBy,
};
pub use money::{MICROS_PER_CREDIT, MicroCredits, MoneyParseError};
pub use pricing::{Split, settle_on_usage, sheet_price, split};
pub use reputation::ReputationStats;
