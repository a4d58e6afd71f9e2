//! The auction's audit record as JSON: every input, every candidate with its bid, quality
//! components, score and rank or exclusion reason, the prices and how they were set, and the
//! explanation. This is what `GET /api/auctions/{id}` returns (with the attempts and the
//! settlement joined in at read time).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use auction_engine::{
    AgentId, AuctionInput, AuditRecord, BidSource, Mechanism, Objective, PriceBasis, Ranked,
    ReliabilitySource, Routing, SortBy,
};
use registry::agents::Agent;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Serialize, Deserialize, ToSchema)]
pub enum AuctionObject {
    #[serde(rename = "auction")]
    Auction,
}

/// The stored audit record of one auction.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AuditDocument {
    pub id: Uuid,
    pub object: AuctionObject,
    pub job_id: Uuid,
    pub inputs: AuditInputs,
    /// The first 100 ranked and the first 100 excluded, in full.
    pub candidates: Vec<CandidateRecord>,
    /// Candidates past those 100, counted: `ranked`, or by exclusion reason. (Absent from
    /// records written before the count existed.)
    #[serde(default)]
    pub omitted_candidates: BTreeMap<String, usize>,
    pub outcome: OutcomeRecord,
}

/// Everything the auction was a function of: replaying these gives the same outcome.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AuditInputs {
    /// Decimal text (a u64 does not fit a JSON number exactly).
    pub nonce: String,
    pub seed: String,
    pub now_ms: i64,
    pub job: JobInputs,
    pub constraints: ConstraintsRecord,
    pub parameters: ParametersRecord,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct JobInputs {
    pub category: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub required_features: Vec<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ConstraintsRecord {
    pub max_price: Option<String>,
    pub regions: Vec<String>,
    pub max_latency_ms: Option<u32>,
    pub min_reputation: Option<f64>,
    pub only: Vec<String>,
    pub ignore: Vec<String>,
    /// `balanced`, `cost`, `quality` or `latency`.
    pub objective: String,
    pub routing: RoutingRecord,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoutingRecord {
    Auction,
    Sort {
        /// `price`, `latency` or `reputation`.
        by: String,
    },
    Order {
        order: Vec<String>,
    },
    PriceWeightedRandom,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ParametersRecord {
    /// `second_score` or `first_price`.
    pub mechanism: String,
    pub call_fee: String,
    pub win_fee: String,
    pub prior_weight: f64,
    pub default_prior_mean: f64,
    pub measured_evidence: f64,
    pub half_life_ms: i64,
    pub exploration_rate: f64,
    pub reference_price: Option<String>,
    pub reference_multiplier: u32,
    pub reference_latency_ms: u32,
}

/// One candidate: ranked with its bid, quality and price, or excluded with the reason.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CandidateRecord {
    Ranked(Box<RankedRecord>),
    Excluded(ExcludedRecord),
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RankedRecord {
    pub agent_id: Uuid,
    pub slug: String,
    pub owner_id: Uuid,
    pub rank: usize,
    pub price_version: Option<u32>,
    pub sheet_price: String,
    pub bid: String,
    /// `sheet` or `live`.
    pub bid_source: String,
    pub quality: QualityRecord,
    /// The bid divided by the quality factor: what the ranking compares.
    pub effective_price: String,
    /// What the agent is paid if it serves.
    pub price: String,
    pub price_basis: PriceBasisRecord,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct QualityRecord {
    pub reliability: f64,
    /// `posterior_mean`, or `thompson_draw` for an exploring newcomer.
    pub reliability_source: String,
    pub reliability_mean: f64,
    pub reliability_lower_bound: f64,
    pub prior_mean: f64,
    pub evidence: f64,
    pub expected_latency_ms: Option<f64>,
    pub latency_ms: f64,
    pub reliability_factor: f64,
    pub latency_factor: f64,
    /// Callers' ratings' share of the factor (1 with none, or under the cost objective).
    pub rating_factor: f64,
    pub factor: f64,
}

/// How the price was set.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum PriceBasisRecord {
    /// The runner-up's effective price times the winner's quality factor.
    SecondScore {
        runner_up: Uuid,
        runner_up_slug: Option<String>,
        runner_up_effective_price: String,
        formula: String,
    },
    /// A lone bidder: the reserve (the competitive reference price), or its own bid.
    Reserve {
        reserve: String,
        runner_up: Option<Uuid>,
    },
    OwnBid,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ExcludedRecord {
    pub agent_id: Uuid,
    pub slug: String,
    pub owner_id: Uuid,
    /// A stable code (`paused`, `over_max_price`, ...).
    pub reason: String,
    /// At most 300 characters.
    pub detail: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct OutcomeRecord {
    pub winner: Option<String>,
    pub clearing_price: Option<String>,
    pub explored: bool,
    pub category_prior: f64,
    pub proven_price: Option<String>,
    pub reserve: Option<String>,
    /// The exclusion that left no one, when no one was left.
    pub binding_exclusion: Option<String>,
    pub explanation: String,
}

fn objective_word(objective: Objective) -> &'static str {
    match objective {
        Objective::Balanced => "balanced",
        Objective::Cost => "cost",
        Objective::Quality => "quality",
        Objective::Latency => "latency",
    }
}

fn routing_record(routing: &Routing) -> RoutingRecord {
    match routing {
        Routing::Auction => RoutingRecord::Auction,
        Routing::Sort(key) => RoutingRecord::Sort {
            by: match key {
                SortBy::Price => "price",
                SortBy::Latency => "latency",
                SortBy::Reputation => "reputation",
            }
            .to_owned(),
        },
        Routing::Order(order) => RoutingRecord::Order { order: order.clone() },
        Routing::PriceWeightedRandom => RoutingRecord::PriceWeightedRandom,
    }
}

/// Ranked agents' slugs by id, built once per record (the price basis names its runner-up by id).
type Slugs<'a> = HashMap<AgentId, &'a str>;

fn basis_record(basis: &PriceBasis, slugs: &Slugs<'_>) -> PriceBasisRecord {
    let uuid_of = |id: AgentId| Uuid::from_u128(id.0);
    match basis {
        PriceBasis::SecondScore { runner_up, runner_up_effective_price } => {
            PriceBasisRecord::SecondScore {
                runner_up: uuid_of(*runner_up),
                runner_up_slug: slugs.get(runner_up).map(|s| (*s).to_owned()),
                runner_up_effective_price: micros(*runner_up_effective_price),
                formula: "price = runner_up_effective_price x quality.factor".to_owned(),
            }
        }
        PriceBasis::Reserve { reserve, runner_up } => PriceBasisRecord::Reserve {
            reserve: reserve.to_string(),
            runner_up: runner_up.map(uuid_of),
        },
        PriceBasis::OwnBid => PriceBasisRecord::OwnBid,
    }
}

/// Candidates recorded in full, ranked and excluded each: enough for any fallback chain and
/// any explanation; the rest are counted.
const MAX_RECORDED: usize = 100;

/// An exclusion's detail, at most 300 characters.
fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

fn micros(value: i64) -> String {
    auction_engine::MicroCredits::from_micros(value).to_string()
}

fn ranked_record(ranked: &Ranked, agent: Option<&Arc<Agent>>, slugs: &Slugs<'_>) -> RankedRecord {
    let quality = &ranked.quality;
    RankedRecord {
        agent_id: Uuid::from_u128(ranked.agent_id.0),
        slug: ranked.slug.to_string(),
        owner_id: Uuid::from_u128(ranked.owner_id.0),
        rank: ranked.rank,
        price_version: agent.map(|a| a.price_version),
        sheet_price: ranked.sheet_price.to_string(),
        bid: ranked.bid.to_string(),
        bid_source: match ranked.bid_source {
            BidSource::Sheet => "sheet",
            BidSource::Live => "live",
        }
        .to_owned(),
        quality: QualityRecord {
            reliability: quality.reliability,
            reliability_source: match quality.reliability_source {
                ReliabilitySource::Mean => "posterior_mean",
                ReliabilitySource::ThompsonDraw => "thompson_draw",
            }
            .to_owned(),
            reliability_mean: quality.reliability_mean,
            reliability_lower_bound: quality.reliability_lower_bound,
            prior_mean: quality.prior_mean,
            evidence: quality.evidence,
            expected_latency_ms: quality.expected_latency_ms,
            latency_ms: quality.latency_ms,
            reliability_factor: quality.reliability_factor,
            latency_factor: quality.latency_factor,
            rating_factor: quality.rating_factor,
            factor: quality.factor,
        },
        effective_price: micros(ranked.effective_price),
        price: ranked.price.to_string(),
        price_basis: basis_record(&ranked.price_basis, slugs),
    }
}

/// Builds an audit record.
pub fn audit_document(
    auction_id: Uuid,
    job_id: Uuid,
    record: &AuditRecord,
    agents: &HashMap<Uuid, Arc<Agent>>,
) -> AuditDocument {
    let input: &AuctionInput = &record.input;
    let outcome = &record.outcome;
    let slugs: Slugs<'_> = outcome.ranking.iter().map(|r| (r.agent_id, r.slug.as_ref())).collect();
    // A stored record has a bounded size whatever the market's: the first ranks in full (the
    // fallbacks that could serve), the first exclusions in full, the rest counted by reason.
    let mut candidates: Vec<CandidateRecord> = outcome
        .ranking
        .iter()
        .take(MAX_RECORDED)
        .map(|ranked| {
            let agent = agents.get(&Uuid::from_u128(ranked.agent_id.0));
            CandidateRecord::Ranked(Box::new(ranked_record(ranked, agent, &slugs)))
        })
        .collect();
    candidates.extend(outcome.exclusions.iter().take(MAX_RECORDED).map(|excluded| {
        CandidateRecord::Excluded(ExcludedRecord {
            agent_id: Uuid::from_u128(excluded.agent_id.0),
            slug: excluded.slug.to_string(),
            owner_id: Uuid::from_u128(excluded.owner_id.0),
            reason: excluded.reason.code().to_owned(),
            detail: short(&excluded.reason.describe()),
        })
    }));
    let mut omitted: BTreeMap<String, usize> = BTreeMap::new();
    if outcome.ranking.len() > MAX_RECORDED {
        omitted.insert("ranked".to_owned(), outcome.ranking.len() - MAX_RECORDED);
    }
    for excluded in outcome.exclusions.iter().skip(MAX_RECORDED) {
        *omitted.entry(excluded.reason.code().to_owned()).or_default() += 1;
    }
    let constraints = &input.constraints;
    let params = &input.parameters;
    AuditDocument {
        id: auction_id,
        object: AuctionObject::Auction,
        job_id,
        inputs: AuditInputs {
            nonce: input.nonce.to_string(),
            seed: input.seed.to_string(),
            now_ms: input.now_ms,
            job: JobInputs {
                category: input.job.category.clone(),
                input_tokens: input.job.input_tokens,
                output_tokens: input.job.output_tokens,
                required_features: input.job.required_features.clone(),
            },
            constraints: ConstraintsRecord {
                max_price: constraints.max_price.map(|p| p.to_string()),
                regions: constraints.regions.clone(),
                max_latency_ms: constraints.max_latency_ms,
                min_reputation: constraints.min_reputation,
                only: constraints.only.clone(),
                ignore: constraints.ignore.clone(),
                objective: objective_word(constraints.objective).to_owned(),
                routing: routing_record(&constraints.routing),
            },
            parameters: ParametersRecord {
                mechanism: match params.mechanism {
                    Mechanism::SecondScore => "second_score",
                    Mechanism::FirstPrice => "first_price",
                }
                .to_owned(),
                call_fee: params.call_fee.to_string(),
                win_fee: params.win_fee.to_string(),
                prior_weight: params.prior_weight,
                default_prior_mean: params.default_prior_mean,
                measured_evidence: params.measured_evidence,
                half_life_ms: params.half_life_ms,
                exploration_rate: params.exploration_rate,
                reference_price: params.reference_price.map(|p| p.to_string()),
                reference_multiplier: params.reference_multiplier,
                reference_latency_ms: params.reference_latency_ms,
            },
        },
        candidates,
        omitted_candidates: omitted,
        outcome: OutcomeRecord {
            winner: outcome.winner().map(|w| w.slug.to_string()),
            clearing_price: outcome.winner().map(|w| w.price.to_string()),
            explored: outcome.explored,
            category_prior: outcome.category_prior,
            proven_price: outcome.proven_price.map(|p| p.to_string()),
            reserve: outcome.reserve.map(|r| r.to_string()),
            binding_exclusion: outcome.binding_exclusion().map(|r| r.code().to_owned()),
            explanation: record.explain(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auction_engine::{
        AgentId, AgentStatus, Candidate, Constraints, Job, MicroCredits, OwnerId, Parameters,
        PriceSheet, ReputationStats,
    };
    use serde_json::json;

    #[test]
    fn a_record_stays_bounded_however_large_the_market() {
        let candidates = (0..250_u128)
            .map(|i| Candidate {
                agent_id: AgentId(i + 1),
                owner_id: OwnerId(i + 1),
                slug: format!("owner{i}/agent").into(),
                categories: vec!["chat".into()],
                features: vec![],
                regions: vec![],
                max_latency_ms: None,
                context_length: None,
                sheet: PriceSheet {
                    per_call: MicroCredits::from_micros(1_000 * i as i64),
                    ..PriceSheet::default()
                },
                live_bid: None,
                reputation: ReputationStats::default(),
                // Every other one paused: 125 ranked, 125 excluded.
                status: if i % 2 == 0 { AgentStatus::Active } else { AgentStatus::Paused },
                ratings: auction_engine::Ratings::default(),
                owner_can_pay_win_fee: true,
            })
            .collect();
        let input = AuctionInput {
            nonce: 1,
            seed: 2,
            now_ms: 1_800_000_000_000,
            job: Job {
                category: "chat".into(),
                input_tokens: 0,
                output_tokens: 0,
                required_features: vec![],
            },
            constraints: Constraints::default(),
            candidates,
            retired: vec![],
            parameters: Parameters::default(),
        };
        let record = AuditRecord::new(input);
        let json = serde_json::to_value(audit_document(
            Uuid::nil(),
            Uuid::nil(),
            &record,
            &HashMap::new(),
        ))
        .unwrap();
        assert_eq!(json["candidates"].as_array().unwrap().len(), 200);
        assert_eq!(json["omitted_candidates"], json!({"ranked": 25, "paused": 25}));
        assert!(json.to_string().len() < 400_000, "{} bytes", json.to_string().len());
    }
}
