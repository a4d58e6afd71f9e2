//! What the market must show, in the simulator on the real engine (issue "a market, not a
//! monopoly"): competition sets the price, newcomers break in, and Gavel's rule beats the
//! baselines when agents differ in reliability, with every agent bidding its best response.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use market_sim::{Rule, deviation_gains, equilibrium, scenarios, simulate};

const SEED: u64 = 7;
const TRUTHFUL_3: [f64; 3] = [1.0; 3];

#[test]
fn three_equal_agents_clear_near_the_runner_up_cost_not_the_cap() {
    let scenario = scenarios::three_equals(2_000);
    let report = simulate(&scenario, Rule::Gavel, &TRUTHFUL_3, SEED);
    assert!((report.mean_price - 1.2).abs() / 1.2 < 0.10, "mean price {}", report.mean_price);
    assert!(report.best_value_share > 0.95, "{}", report.best_value_share);
}

#[test]
fn under_gavels_rule_bidding_the_cost_is_what_pays() {
    let scenario = scenarios::three_equals(600);
    let grid = [0.8, 0.95, 1.0, 1.05, 1.2, 1.5];
    assert_eq!(equilibrium(&scenario, Rule::Gavel, &grid, 600, 2, SEED), vec![1.0; 3]);
    // Under pay-as-bid the cheapest agent marks up: the simulator finds it too.
    let first_price = equilibrium(&scenario, Rule::FirstPrice, &grid, 600, 2, SEED);
    assert!(first_price[0] > 1.0, "{first_price:?}");
    for (deviation, gain) in
        deviation_gains(&scenario, Rule::Gavel, &TRUTHFUL_3, &[-0.2, -0.05, 0.05, 0.2], SEED)
    {
        assert!(gain < 1.0, "deviating by {deviation} gains {gain} credits per 1,000 jobs");
    }
}

#[test]
fn a_cheaper_reliable_newcomer_breaks_in_against_a_proven_incumbent() {
    let scenario = scenarios::newcomer(1_000);
    let report = simulate(&scenario, Rule::Gavel, &TRUTHFUL_3, SEED);
    let newcomer = report.newcomer(&scenario).unwrap();
    let first = newcomer.auctions_to_first_win.expect("the newcomer wins a job");
    assert!(first <= 50, "first win after {first} auctions");
    assert!(newcomer.wins_in_first_500 > 250, "{} of its first 500", newcomer.wins_in_first_500);
    // It is paid about the incumbent's bid: the caller keeps the rest of its cap.
    assert!(report.mean_price < 1.1, "{}", report.mean_price);
}

#[test]
fn gavels_rule_beats_the_baselines_when_agents_differ_in_reliability() {
    let scenario = scenarios::mixed(1_500);
    let grid = [0.9, 1.0, 1.1, 1.35, 2.0];
    let agents = scenario.agents.len();
    let gavel = simulate(&scenario, Rule::Gavel, &vec![1.0; agents], SEED);
    for rule in [Rule::LowestPrice, Rule::InverseSquare, Rule::FirstPrice] {
        let bids = equilibrium(&scenario, rule, &grid, 1_000, 2, SEED);
        let baseline = simulate(&scenario, rule, &bids, SEED);
        assert!(
            gavel.caller_surplus > baseline.caller_surplus,
            "{rule:?}: surplus {} vs Gavel's {} (bids {bids:?})",
            baseline.caller_surplus,
            gavel.caller_surplus
        );
        assert!(
            gavel.winner_failed <= baseline.winner_failed,
            "{rule:?}: failed {} vs Gavel's {}",
            baseline.winner_failed,
            gavel.winner_failed
        );
    }
}

#[test]
fn a_failing_agent_gains_nothing_by_registering_again_under_its_owner() {
    let scenario = scenarios::mixed(1_500);
    let report = simulate(&scenario, Rule::Gavel, &vec![1.0; scenario.agents.len()], SEED);
    let whitewasher = &report.agents[scenario.agents.iter().position(|a| a.whitewash).unwrap()];
    // Its first listing earns a record of failures; the owner's record then follows every new
    // listing, which starts below the honest agents and so never earns enough evidence to be
    // worth replacing again.
    assert!(whitewasher.registrations <= 2, "registered {} times", whitewasher.registrations);
    // 10 with the owner's record as its prior; 16 when each new listing starts afresh.
    assert!(whitewasher.wins <= 12, "won {} of {} jobs", whitewasher.wins, report.jobs);
}

#[test]
fn the_simulation_is_deterministic() {
    let scenario = scenarios::mixed(300);
    let bids = vec![1.0; scenario.agents.len()];
    assert_eq!(
        simulate(&scenario, Rule::Gavel, &bids, 3),
        simulate(&scenario, Rule::Gavel, &bids, 3)
    );
}
