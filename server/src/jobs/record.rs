//! The auction's audit record as JSON: every input, every candidate with its bid, quality
//! components, score and rank or exclusion reason, the prices and how they were set, and the
//! explanation. This is what `GET /api/auctions/{id}` returns (with the attempts and the
//! settlement joined in at read time).

use std::collections::HashMap;
use std::sync::Arc;

use auction_engine::{
    AgentId, AuctionInput, AuditRecord, BidSource, Mechanism, Objective, PriceBasis, Ranked,
    ReliabilitySource, Routing, SortBy,
};
use registry::agents::Agent;
use serde_json::{Value, json};
use uuid::Uuid;

fn objective_word(objective: Objective) -> &'static str {
    match objective {
        Objective::Balanced => "balanced",
        Objective::Cost => "cost",
        Objective::Quality => "quality",
        Objective::Latency => "latency",
    }
}

fn routing_json(routing: &Routing) -> Value {
    match routing {
        Routing::Auction => json!({"kind": "auction"}),
        Routing::Sort(key) => json!({"kind": "sort", "by": match key {
            SortBy::Price => "price",
            SortBy::Latency => "latency",
            SortBy::Reputation => "reputation",
        }}),
        Routing::Order(order) => json!({"kind": "order", "order": order}),
        Routing::PriceWeightedRandom => json!({"kind": "price_weighted_random"}),
    }
}

/// Ranked agents' slugs by id, built once per record (the price basis names its runner-up by id).
type Slugs<'a> = HashMap<AgentId, &'a str>;

fn basis_json(basis: &PriceBasis, slugs: &Slugs<'_>) -> Value {
    let slug_of = |id: auction_engine::AgentId| Uuid::from_u128(id.0);
    match basis {
        PriceBasis::SecondScore { runner_up, runner_up_effective_price } => json!({
            "rule": "second_score",
            "runner_up": slug_of(*runner_up),
            "runner_up_slug": slugs.get(runner_up),
            "runner_up_effective_price": micros(*runner_up_effective_price),
            "formula": "price = runner_up_effective_price x quality.factor",
        }),
        PriceBasis::Reserve { reserve, runner_up } => json!({
            "rule": "reserve",
            "reserve": reserve.to_string(),
            "runner_up": runner_up.map(slug_of),
        }),
        PriceBasis::OwnBid => json!({"rule": "own_bid"}),
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

fn ranked_json(ranked: &Ranked, agent: Option<&Arc<Agent>>, slugs: &Slugs<'_>) -> Value {
    json!({
        "agent_id": Uuid::from_u128(ranked.agent_id.0),
        "slug": ranked.slug.as_ref(),
        "owner_id": Uuid::from_u128(ranked.owner_id.0),
        "status": "ranked",
        "rank": ranked.rank,
        "price_version": agent.map(|a| a.price_version),
        "sheet_price": ranked.sheet_price.to_string(),
        "bid": ranked.bid.to_string(),
        "bid_source": match ranked.bid_source { BidSource::Sheet => "sheet", BidSource::Live => "live" },
        "quality": {
            "reliability": ranked.quality.reliability,
            "reliability_source": match ranked.quality.reliability_source {
                ReliabilitySource::Mean => "posterior_mean",
                ReliabilitySource::ThompsonDraw => "thompson_draw",
            },
            "reliability_mean": ranked.quality.reliability_mean,
            "reliability_lower_bound": ranked.quality.reliability_lower_bound,
            "prior_mean": ranked.quality.prior_mean,
            "evidence": ranked.quality.evidence,
            "expected_latency_ms": ranked.quality.expected_latency_ms,
            "latency_ms": ranked.quality.latency_ms,
            "reliability_factor": ranked.quality.reliability_factor,
            "latency_factor": ranked.quality.latency_factor,
            "factor": ranked.quality.factor,
        },
        "effective_price": micros(ranked.effective_price),
        "price": ranked.price.to_string(),
        "price_basis": basis_json(&ranked.price_basis, slugs),
    })
}

/// Renders an audit record.
pub fn audit_json(
    auction_id: Uuid,
    job_id: Uuid,
    record: &AuditRecord,
    agents: &HashMap<Uuid, Arc<Agent>>,
) -> Value {
    let input: &AuctionInput = &record.input;
    let outcome = &record.outcome;
    let slugs: Slugs<'_> = outcome.ranking.iter().map(|r| (r.agent_id, r.slug.as_ref())).collect();
    // A stored record has a bounded size whatever the market's: the first ranks in full (the
    // fallbacks that could serve), the first exclusions in full, the rest counted by reason.
    let mut candidates: Vec<Value> = outcome
        .ranking
        .iter()
        .take(MAX_RECORDED)
        .map(|ranked| ranked_json(ranked, agents.get(&Uuid::from_u128(ranked.agent_id.0)), &slugs))
        .collect();
    candidates.extend(outcome.exclusions.iter().take(MAX_RECORDED).map(|excluded| {
        json!({
            "agent_id": Uuid::from_u128(excluded.agent_id.0),
            "slug": excluded.slug.as_ref(),
            "owner_id": Uuid::from_u128(excluded.owner_id.0),
            "status": "excluded",
            "reason": excluded.reason.code(),
            "detail": short(&excluded.reason.describe()),
        })
    }));
    let mut omitted: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    if outcome.ranking.len() > MAX_RECORDED {
        omitted.insert("ranked", outcome.ranking.len() - MAX_RECORDED);
    }
    for excluded in outcome.exclusions.iter().skip(MAX_RECORDED) {
        *omitted.entry(excluded.reason.code()).or_default() += 1;
    }
    let constraints = &input.constraints;
    let params = &input.parameters;
    json!({
        "id": auction_id,
        "object": "auction",
        "job_id": job_id,
        "inputs": {
            "nonce": input.nonce.to_string(),
            "seed": input.seed.to_string(),
            "now_ms": input.now_ms,
            "job": {
                "category": input.job.category,
                "input_tokens": input.job.input_tokens,
                "output_tokens": input.job.output_tokens,
                "required_features": input.job.required_features,
            },
            "constraints": {
                "max_price": constraints.max_price.map(|p| p.to_string()),
                "regions": constraints.regions,
                "max_latency_ms": constraints.max_latency_ms,
                "min_reputation": constraints.min_reputation,
                "only": constraints.only,
                "ignore": constraints.ignore,
                "objective": objective_word(constraints.objective),
                "routing": routing_json(&constraints.routing),
            },
            "parameters": {
                "mechanism": match params.mechanism { Mechanism::SecondScore => "second_score", Mechanism::FirstPrice => "first_price" },
                "call_fee": params.call_fee.to_string(),
                "win_fee": params.win_fee.to_string(),
                "prior_weight": params.prior_weight,
                "default_prior_mean": params.default_prior_mean,
                "measured_evidence": params.measured_evidence,
                "half_life_ms": params.half_life_ms,
                "exploration_rate": params.exploration_rate,
                "reference_price": params.reference_price.map(|p| p.to_string()),
                "reference_multiplier": params.reference_multiplier,
                "reference_latency_ms": params.reference_latency_ms,
            },
        },
        "candidates": candidates,
        "omitted_candidates": omitted,
        "outcome": {
            "winner": outcome.winner().map(|w| w.slug.as_ref()),
            "clearing_price": outcome.winner().map(|w| w.price.to_string()),
            "explored": outcome.explored,
            "category_prior": outcome.category_prior,
            "proven_price": outcome.proven_price.map(|p| p.to_string()),
            "reserve": outcome.reserve.map(|r| r.to_string()),
            "binding_exclusion": outcome.binding_exclusion().map(|r| r.code()),
            "explanation": record.explain(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use auction_engine::{
        AgentId, AgentStatus, Candidate, Constraints, Job, MicroCredits, OwnerId, Parameters,
        PriceSheet, ReputationStats,
    };

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
        let json = audit_json(Uuid::nil(), Uuid::nil(), &record, &HashMap::new());
        assert_eq!(json["candidates"].as_array().unwrap().len(), 200);
        assert_eq!(json["omitted_candidates"], json!({"ranked": 25, "paused": 25}));
        assert!(json.to_string().len() < 400_000, "{} bytes", json.to_string().len());
    }
}
