//! A seeded market simulator on the real auction engine and the real reputation updates.
//!
//! A [`Scenario`] is a set of agents with hidden true costs, reliabilities and latencies, that
//! arrive and depart, and a stream of callers with values and caps. [`simulate`] runs it under
//! one [`Rule`]: every job is a real `auction_engine::run`, the winner succeeds or fails by its
//! true reliability, failures fall back down the ranking, and every attempt goes on the agent's
//! record with `ReputationStats::record`, exactly as the server does.
//!
//! Agents are strategic: each bids `multiplier x cost`, and [`equilibrium`] finds, by rounds of
//! best responses over a grid of multipliers, what each agent bids under each rule. Under a
//! pay-as-bid rule that is a markup; under Gavel's it is (the check shows) the true cost. Costs
//! jitter from job to job, so no agent knows its rivals' exact bids.
//!
//! Pure and seeded: the same scenario, rule, multipliers and seed give the same numbers.

use auction_engine::reputation::Outcome as Attempt;
use auction_engine::{
    AgentId, AgentStatus, AuctionInput, Candidate, Constraints, Job, Mechanism, MicroCredits,
    Objective, OwnerId, Parameters, PriceBasis, PriceSheet, ReputationStats, RetiredRecord,
    Routing, SortBy, run,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How the market decides who serves and what it is paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Gavel's auction: price per unit of measured quality, second-score payment.
    Gavel,
    /// The lowest bid wins and is paid its bid (OpenRouter's `sort: price`).
    LowestPrice,
    /// A random agent, weighted by the inverse square of its bid, paid its bid (OpenRouter's
    /// default load balancing).
    InverseSquare,
    /// Gavel's ranking, but each winner is paid its own bid.
    FirstPrice,
}

impl Rule {
    pub const ALL: [Rule; 4] =
        [Rule::Gavel, Rule::LowestPrice, Rule::InverseSquare, Rule::FirstPrice];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Gavel => "Gavel (second score on quality)",
            Rule::LowestPrice => "lowest price, pay as bid",
            Rule::InverseSquare => "inverse-square price, pay as bid",
            Rule::FirstPrice => "Gavel ranking, first price",
        }
    }

    fn routing(self) -> (Routing, Mechanism) {
        match self {
            Rule::Gavel => (Routing::Auction, Mechanism::SecondScore),
            Rule::LowestPrice => (Routing::Sort(SortBy::Price), Mechanism::SecondScore),
            Rule::InverseSquare => (Routing::PriceWeightedRandom, Mechanism::SecondScore),
            Rule::FirstPrice => (Routing::Auction, Mechanism::FirstPrice),
        }
    }
}

/// One agent of a scenario: what only the simulator knows about it.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub name: &'static str,
    pub owner: u128,
    /// True cost of a job, in credits (before the per-job jitter).
    pub cost: f64,
    /// True probability of delivering.
    pub reliability: f64,
    pub latency_ms: f64,
    /// The auction it arrives at.
    pub arrives: usize,
    /// The auction it leaves at, if it does.
    pub departs: Option<usize>,
    /// Jobs it served before the run (its record when the run starts).
    pub history: u32,
    /// Registers again under the same owner whenever its record turns bad.
    pub whitewash: bool,
    /// The agent whose break-in the report follows.
    pub newcomer: bool,
}

impl AgentSpec {
    pub fn new(name: &'static str, owner: u128, cost: f64, reliability: f64) -> AgentSpec {
        AgentSpec {
            name,
            owner,
            cost,
            reliability,
            latency_ms: 300.0,
            arrives: 0,
            departs: None,
            history: 0,
            whitewash: false,
            newcomer: false,
        }
    }
}

/// A market to simulate.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub agents: Vec<AgentSpec>,
    pub auctions: usize,
    /// The caller's max price, in credits.
    pub cap: f64,
    /// The caller's value of a delivered job is uniform in this range (credits).
    pub value: (f64, f64),
    /// What a failed attempt costs the caller (delay, a retry), as a share of the job's value.
    pub failure_cost: f64,
    /// Each job's true cost is `cost x (1 + u)`, `u` uniform in `±cost_jitter`.
    pub cost_jitter: f64,
}

impl Scenario {
    /// The same market in `auctions` auctions, arrivals and departures at the same fractions
    /// of the run.
    pub fn shortened(&self, auctions: usize) -> Scenario {
        let auctions = auctions.min(self.auctions);
        let scale = |at: usize| at * auctions / self.auctions.max(1);
        let agents = self
            .agents
            .iter()
            .map(|a| AgentSpec {
                arrives: scale(a.arrives),
                departs: a.departs.map(scale),
                ..a.clone()
            })
            .collect();
        Scenario { auctions, agents, ..self.clone() }
    }
}

/// One agent's results in a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentResult {
    /// Auctions won (ranked first).
    pub wins: usize,
    /// Jobs delivered (as winner or fallback).
    pub delivered: usize,
    /// Sum of (price - true cost) over its deliveries.
    pub profit: f64,
    /// Auctions it was present for before its first win.
    pub auctions_to_first_win: Option<usize>,
    /// Jobs won among the first 1,000 auctions after it arrived.
    pub wins_in_first_1000: usize,
    pub auctions_in_first_1000: usize,
    /// Jobs won among the first 500 auctions after it arrived.
    pub wins_in_first_500: usize,
    /// Times it registered (a whitewasher registers again when its record turns bad).
    pub registrations: usize,
}

/// A run's figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub jobs: usize,
    /// Mean price paid to the delivering agent (credits), over delivered jobs.
    pub mean_price: f64,
    /// Mean of the competitive price: the second-lowest true cost among the most reliable agents.
    pub mean_competitive: f64,
    /// Mean caller surplus per job: value - price - failure cost x failed attempts.
    pub caller_surplus: f64,
    /// Share of jobs whose winner was the best-value agent (lowest true cost per success).
    pub best_value_share: f64,
    /// Share of jobs whose first agent failed.
    pub winner_failed: f64,
    /// Share of jobs nobody delivered.
    pub undelivered: f64,
    /// Share of jobs that were exploration auctions.
    pub explored: f64,
    pub agents: Vec<AgentResult>,
    /// Per window of `WINDOW` auctions: (mean price paid, the newcomer's share of wins).
    pub timeline: Vec<(f64, f64)>,
}

impl Report {
    /// Mean price over the competitive price.
    pub fn price_ratio(&self) -> f64 {
        self.mean_price / self.mean_competitive.max(f64::MIN_POSITIVE)
    }

    /// The newcomer's result, if the scenario has one.
    pub fn newcomer<'a>(&'a self, scenario: &Scenario) -> Option<&'a AgentResult> {
        scenario.agents.iter().position(|a| a.newcomer).map(|idx| &self.agents[idx])
    }
}

/// The timeline's window, in auctions.
pub const WINDOW: usize = 100;

const START_MS: i64 = 1_800_000_000_000;
const HALF_LIFE_MS: i64 = 7 * 24 * 3600 * 1000;

/// One registered identity of an agent: a whitewasher has several, the earlier ones deleted.
struct Listing {
    spec: usize,
    id: u128,
    stats: ReputationStats,
    retired: bool,
}

/// Runs `scenario` under `rule`, agent `i` bidding `multipliers[i] x` its cost of each job.
pub fn simulate(scenario: &Scenario, rule: Rule, multipliers: &[f64], seed: u64) -> Report {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (routing, mechanism) = rule.routing();
    let mut listings: Vec<Listing> = Vec::new();
    let mut next_id = 1_u128;
    for (spec_idx, spec) in scenario.agents.iter().enumerate() {
        let mut stats = ReputationStats::default();
        for job in 0..spec.history {
            let outcome = if rng.random::<f64>() < spec.reliability {
                Attempt::Success
            } else {
                Attempt::Error
            };
            let at = START_MS - i64::from(spec.history - job) * 1000;
            stats = stats.record(outcome, spec.latency_ms, at, HALF_LIFE_MS);
        }
        listings.push(Listing { spec: spec_idx, id: next_id, stats, retired: false });
        next_id += 1;
    }
    let mut results = vec![AgentResult::default(); scenario.agents.len()];
    let mut seen = vec![0_usize; scenario.agents.len()];
    let mut reference: Option<MicroCredits> = None;
    let (mut price_sum, mut competitive_sum, mut surplus_sum) = (0.0, 0.0, 0.0);
    let (mut delivered_jobs, mut best_value, mut winner_failed, mut undelivered, mut explored) =
        (0, 0, 0, 0, 0);
    let mut timeline = Vec::new();
    let (mut window_price, mut window_delivered, mut window_newcomer) = (0.0, 0, 0);
    let newcomer = scenario.agents.iter().position(|a| a.newcomer);

    for t in 0..scenario.auctions {
        // Common random numbers: auction `t`'s jitters, value, nonce and every agent's
        // success come from `(seed, t)` alone, so two runs that differ in one agent's bid
        // face the same jobs and the same luck.
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let luck: Vec<f64> = (0..scenario.agents.len()).map(|_| rng.random::<f64>()).collect();
        let now_ms = START_MS + t as i64 * 1000;
        let present = |spec: &AgentSpec| spec.arrives <= t && spec.departs.is_none_or(|d| t < d);
        // This job's true cost for each agent, and what each bids on it.
        let job_costs: Vec<f64> = scenario
            .agents
            .iter()
            .map(|a| a.cost * (1.0 + scenario.cost_jitter * (rng.random::<f64>() * 2.0 - 1.0)))
            .collect();
        let candidates: Vec<Candidate> = listings
            .iter()
            .filter(|l| present(&scenario.agents[l.spec]) && !l.retired)
            .map(|l| {
                let spec = &scenario.agents[l.spec];
                let bid = job_costs[l.spec] * multipliers.get(l.spec).copied().unwrap_or(1.0);
                Candidate {
                    agent_id: AgentId(l.id),
                    owner_id: OwnerId(spec.owner),
                    slug: format!("owner{}/{}-{}", spec.owner, spec.name, l.id).into(),
                    categories: vec!["chat".into()],
                    features: vec![],
                    regions: vec![],
                    max_latency_ms: None,
                    context_length: None,
                    sheet: PriceSheet { per_call: credits(bid), ..PriceSheet::default() },
                    live_bid: None,
                    reputation: l.stats,
                    status: AgentStatus::Active,
                    ratings: auction_engine::Ratings::default(),
                    owner_can_pay_win_fee: true,
                }
            })
            .collect();
        for (spec, count) in scenario.agents.iter().zip(seen.iter_mut()) {
            if present(spec) {
                *count += 1;
            }
        }
        let input = AuctionInput {
            nonce: rng.random(),
            seed: rng.random(),
            now_ms,
            job: Job {
                category: "chat".into(),
                input_tokens: 0,
                output_tokens: 0,
                required_features: vec![],
            },
            constraints: Constraints {
                max_price: Some(credits(scenario.cap)),
                objective: Objective::Balanced,
                routing: routing.clone(),
                ..Constraints::default()
            },
            candidates,
            retired: listings
                .iter()
                .filter(|l| l.retired)
                .map(|l| RetiredRecord {
                    owner_id: OwnerId(scenario.agents[l.spec].owner),
                    reputation: l.stats,
                })
                .collect(),
            parameters: Parameters {
                mechanism,
                reference_price: reference,
                ..Parameters::default()
            },
        };
        let outcome = run(&input);
        if outcome.explored {
            explored += 1;
        }
        let value = scenario.value.0 + (scenario.value.1 - scenario.value.0) * rng.random::<f64>();
        let failure_cost = scenario.failure_cost * value;

        // The market's yardsticks, from the truth the engine never sees.
        let active: Vec<usize> = (0..scenario.agents.len())
            .filter(|i| {
                present(&scenario.agents[*i]) && listings.iter().any(|l| l.spec == *i && !l.retired)
            })
            .collect();
        let top = active.iter().map(|i| scenario.agents[*i].reliability).fold(0.0, f64::max);
        let mut best_costs: Vec<f64> = active
            .iter()
            .filter(|i| scenario.agents[**i].reliability >= top - 0.02)
            .map(|i| job_costs[*i])
            .collect();
        best_costs.sort_by(f64::total_cmp);
        let competitive = best_costs.get(1).or(best_costs.first()).copied().unwrap_or(0.0);
        let best = active.iter().copied().min_by(|a, b| {
            (job_costs[*a] / scenario.agents[*a].reliability)
                .total_cmp(&(job_costs[*b] / scenario.agents[*b].reliability))
        });

        let spec_of = |id: AgentId| listings.iter().find(|l| l.id == id.0).map(|l| l.spec);
        if let Some(first) = outcome.winner().and_then(|w| spec_of(w.agent_id)) {
            results[first].wins += 1;
            if results[first].auctions_to_first_win.is_none() {
                results[first].auctions_to_first_win = Some(seen[first] - 1);
            }
            if best == Some(first) {
                best_value += 1;
            }
            if seen[first] <= 1000 {
                results[first].wins_in_first_1000 += 1;
            }
            if seen[first] <= 500 {
                results[first].wins_in_first_500 += 1;
            }
            if Some(first) == newcomer {
                window_newcomer += 1;
            }
        }
        let mut failures = 0;
        let mut paid = None;
        for ranked in &outcome.ranking {
            let Some(listing) = listings.iter_mut().find(|l| l.id == ranked.agent_id.0) else {
                continue;
            };
            let spec = &scenario.agents[listing.spec];
            let success = luck[listing.spec] < spec.reliability;
            let outcome = if success { Attempt::Success } else { Attempt::Error };
            listing.stats = listing.stats.record(outcome, spec.latency_ms, now_ms, HALF_LIFE_MS);
            if success {
                let price = ranked.price.micros() as f64 / 1e6;
                let result = &mut results[listing.spec];
                result.delivered += 1;
                result.profit += price - job_costs[listing.spec];
                paid = Some(price);
                if matches!(ranked.price_basis, PriceBasis::SecondScore { .. }) {
                    // As the server does: only competitive prices feed the reference.
                    reference = Some(match reference {
                        Some(old) => MicroCredits::from_micros(
                            (old.micros() * 4 + ranked.price.micros()) / 5,
                        ),
                        None => ranked.price,
                    });
                }
                break;
            }
            failures += 1;
        }
        if failures > 0 && !outcome.ranking.is_empty() {
            winner_failed += 1;
        }
        let surplus = match paid {
            Some(price) => {
                delivered_jobs += 1;
                price_sum += price;
                competitive_sum += competitive;
                window_price += price;
                window_delivered += 1;
                value - price
            }
            None => {
                undelivered += 1;
                0.0
            }
        };
        surplus_sum += surplus - failure_cost * f64::from(failures);

        // A whitewasher whose record turned bad deletes its listing and registers again under
        // the same owner; the deleted listing's record stays its owner's, as in the server.
        for idx in 0..listings.len() {
            let spec = &scenario.agents[listings[idx].spec];
            if !spec.whitewash || listings[idx].retired {
                continue;
            }
            let (s, f) = listings[idx].stats.evidence(now_ms, HALF_LIFE_MS);
            if s + f >= 5.0 && s / (s + f) < 0.6 {
                listings[idx].retired = true;
                listings.push(Listing {
                    spec: listings[idx].spec,
                    id: next_id,
                    stats: ReputationStats::default(),
                    retired: false,
                });
                next_id += 1;
            }
        }

        if (t + 1) % WINDOW == 0 {
            let mean =
                if window_delivered > 0 { window_price / window_delivered as f64 } else { 0.0 };
            timeline.push((mean, window_newcomer as f64 / WINDOW as f64));
            (window_price, window_delivered, window_newcomer) = (0.0, 0, 0);
        }
    }
    for (idx, result) in results.iter_mut().enumerate() {
        result.auctions_in_first_1000 = seen[idx].min(1000);
        result.registrations = listings.iter().filter(|l| l.spec == idx).count();
    }
    let jobs = scenario.auctions.max(1) as f64;
    let delivered = delivered_jobs.max(1) as f64;
    Report {
        jobs: scenario.auctions,
        mean_price: price_sum / delivered,
        mean_competitive: competitive_sum / delivered,
        caller_surplus: surplus_sum / jobs,
        best_value_share: best_value as f64 / jobs,
        winner_failed: winner_failed as f64 / jobs,
        undelivered: undelivered as f64 / jobs,
        explored: explored as f64 / jobs,
        agents: results,
        timeline,
    }
}

fn credits(amount: f64) -> MicroCredits {
    MicroCredits::from_micros((amount.max(0.0) * 1e6).round() as i64)
}

/// The bid multipliers an agent may choose from.
pub const GRID: [f64; 11] = [0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0];

/// Rounds of best responses: each agent in turn picks the multiplier on `grid` that earns it
/// the most against the others' current ones (ties go to the one nearest its cost), over
/// `auctions` auctions on a fixed seed, so every candidate faces the same jobs.
pub fn equilibrium(
    scenario: &Scenario,
    rule: Rule,
    grid: &[f64],
    auctions: usize,
    rounds: usize,
    seed: u64,
) -> Vec<f64> {
    let mut multipliers = vec![1.0; scenario.agents.len()];
    let short = scenario.shortened(auctions);
    for _ in 0..rounds {
        let mut changed = false;
        for agent in 0..multipliers.len() {
            let mut best = (multipliers[agent], f64::NEG_INFINITY);
            for &m in grid {
                let mut trial = multipliers.clone();
                trial[agent] = m;
                let profit = simulate(&short, rule, &trial, seed).agents[agent].profit;
                // A gain below a thousandth of a credit per job is no reason to move: the
                // agent keeps the bid nearest its cost.
                let tolerance = 1e-3 * short.auctions as f64;
                let better = profit > best.1 + tolerance
                    || ((profit - best.1).abs() <= tolerance
                        && (m - 1.0).abs() < (best.0 - 1.0).abs());
                if better {
                    best = (m, profit);
                }
            }
            if best.0 != multipliers[agent] {
                changed = true;
                multipliers[agent] = best.0;
            }
        }
        if !changed {
            break;
        }
    }
    multipliers
}

/// The empirical best-response check: for each deviation, the largest gain in profit, in
/// credits per 1,000 jobs, that any agent makes by scaling its bid by `1 + deviation` while
/// the others keep theirs.
pub fn deviation_gains(
    scenario: &Scenario,
    rule: Rule,
    multipliers: &[f64],
    deviations: &[f64],
    seed: u64,
) -> Vec<(f64, f64)> {
    let base = simulate(scenario, rule, multipliers, seed);
    deviations
        .iter()
        .map(|&deviation| {
            let gain = (0..multipliers.len())
                .map(|agent| {
                    let mut trial = multipliers.to_vec();
                    trial[agent] *= 1.0 + deviation;
                    let profit = simulate(scenario, rule, &trial, seed).agents[agent].profit;
                    (profit - base.agents[agent].profit) * 1000.0 / scenario.auctions.max(1) as f64
                })
                .fold(f64::NEG_INFINITY, f64::max);
            (deviation, gain)
        })
        .collect()
}

/// The scenarios `scripts/bench market` reports and the tests check.
pub mod scenarios {
    use super::{AgentSpec, Scenario};

    /// Three equally reliable agents of three owners bidding 1.0, 1.2 and 1.5; cap 3.
    pub fn three_equals(auctions: usize) -> Scenario {
        Scenario {
            name: "three equals",
            agents: vec![
                AgentSpec { history: 200, ..AgentSpec::new("a", 1, 1.0, 0.97) },
                AgentSpec { history: 200, ..AgentSpec::new("b", 2, 1.2, 0.97) },
                AgentSpec { history: 200, ..AgentSpec::new("c", 3, 1.5, 0.97) },
            ],
            auctions,
            cap: 3.0,
            value: (3.0, 3.0),
            failure_cost: 0.5,
            cost_jitter: 0.0,
        }
    }

    /// An incumbent with 1,000 jobs behind it, a dearer rival, and an equally reliable
    /// newcomer bidding a third less than the incumbent.
    pub fn newcomer(auctions: usize) -> Scenario {
        Scenario {
            name: "incumbent and newcomer",
            agents: vec![
                AgentSpec { history: 1000, ..AgentSpec::new("incumbent", 1, 1.0, 0.97) },
                AgentSpec { history: 300, ..AgentSpec::new("rival", 2, 1.5, 0.97) },
                AgentSpec { newcomer: true, ..AgentSpec::new("newcomer", 3, 2.0 / 3.0, 0.97) },
            ],
            auctions,
            cap: 3.0,
            value: (3.0, 3.0),
            failure_cost: 0.5,
            cost_jitter: 0.0,
        }
    }

    /// Agents that differ in reliability and latency, with jittered costs, an arrival, a
    /// departure, and a failing agent that registers again whenever its record turns bad.
    pub fn mixed(auctions: usize) -> Scenario {
        Scenario {
            name: "mixed reliability",
            agents: vec![
                AgentSpec { history: 300, ..AgentSpec::new("flaky-cheap", 1, 0.8, 0.7) },
                AgentSpec { history: 300, ..AgentSpec::new("solid", 2, 1.0, 0.96) },
                AgentSpec {
                    history: 300,
                    latency_ms: 900.0,
                    ..AgentSpec::new("premium", 3, 1.3, 0.995)
                },
                AgentSpec { whitewash: true, ..AgentSpec::new("whitewasher", 4, 0.6, 0.35) },
                AgentSpec {
                    arrives: auctions / 4,
                    newcomer: true,
                    ..AgentSpec::new("newcomer", 5, 0.9, 0.97)
                },
                AgentSpec {
                    history: 300,
                    departs: Some(auctions / 2),
                    ..AgentSpec::new("leaver", 6, 1.1, 0.95)
                },
            ],
            auctions,
            cap: 3.0,
            value: (2.0, 4.0),
            failure_cost: 0.5,
            cost_jitter: 0.1,
        }
    }
}
